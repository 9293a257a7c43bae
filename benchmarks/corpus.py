"""A benchmark corpus of NeuVector frames: text mode, JSON mode, and text
mode as a relay forwards it (``rfc3164``: rsyslog's RFC 3164 header).

Every single-line syslog frame of the reference samples (all notification
types, ~1 KB on average; the rare 10 KB scan report is left out) is cycled with a numbered ``reported_timestamp``;
the JSON-mode twin of each record is rendered by the tests' Go-format
oracle, so both corpora hold the same events.
"""
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from helpers import goformat  # noqa: E402
from nvparser import parse_frame, schema  # noqa: E402
from helpers.nvsamples import load_samples  # noqa: E402


def templates():
    """(text frame, JSON frame) pairs for every one-line syslog sample."""
    pairs = []
    for sample in load_samples():
        if (sample.mode != "text" or len(sample.lines) != 1 or not sample.lines[0].startswith(b"<")
                or len(sample.lines[0]) > 4096):  # scan reports with hundreds of CVEs are the rare kind
            continue
        line = sample.lines[0]
        record = parse_frame(line).data
        header = line[:line.index(b" - ") + 3]
        notification = record["notification"]
        body = goformat.to_json(notification, record, schema.FIELDS[notification]).encode()
        pairs.append((line, header + body))
    return pairs


_RFC5424_HEAD = re.compile(rb"<(\d+)>1 \S+ (\S+) \S+ \S+ \S+ - ")


def write(path: Path, records: int, mode: str) -> int:
    """Write ``records`` LF-terminated frames; returns the file's size."""
    pairs = templates()
    if mode == "rfc3164":
        pairs = [(_RFC5424_HEAD.sub(rb"<\1>Mar 14 09:26:47 \2 neuvector: ", text, 1), None) for text, _ in pairs]
    column = 1 if mode == "json" else 0
    with open(path, "wb", buffering=1 << 20) as out:
        for i in range(records):
            frame = pairs[i % len(pairs)][column]
            out.write(frame.replace(b"1741", b"%04d" % (1741 + i % 9), 1) + b"\n")
    return path.stat().st_size
