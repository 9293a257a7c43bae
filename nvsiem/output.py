"""How records, dead letters and run summaries are written, for every command.

Records are JSON lines. A dead letter is a JSON line with the exact bytes
(``raw_base64``), a readable rendering (``text``), the ``reason``, the
``source`` and the byte ``offset`` in it, so it can be inspected, fixed and
replayed.
"""
import argparse
import base64
import collections
import os
import sys
from typing import IO, Optional

from nvparser import DeadLetter, Record, json_dumps


def dead_letter_json(letter: DeadLetter, source: str) -> bytes:
    return json_dumps({
        "reason": letter.reason,
        "source": source,
        "offset": letter.offset,
        "text": letter.raw.decode("utf-8", "backslashreplace"),
        "raw_base64": base64.b64encode(letter.raw).decode("ascii"),
    })


def counted(n: int, noun: str) -> str:
    """"1 record", "5000 records"."""
    return "%d %s%s" % (n, noun, "" if n == 1 else "s")


class Tally:
    """Counts what a run produced, for the summary line and the exit status."""

    def __init__(self):
        self.by_type = collections.Counter()
        self.dead_letters = 0
        self.skipped = 0
        self.notes = collections.Counter()

    def count(self, event) -> None:
        if type(event) is Record:
            self.by_type[event.data.get("notification", "?")] += 1
            for note in event.notes:
                self.notes[note] += 1
        elif type(event) is DeadLetter:
            self.dead_letters += 1
        else:
            self.skipped += 1

    @property
    def records(self) -> int:
        return sum(self.by_type.values())

    def summary(self) -> str:
        types = ", ".join("%s %d" % kv for kv in sorted(self.by_type.items()))
        line = "%s (%s), %s, %d skipped" % (
            counted(self.records, "record"), types or "none", counted(self.dead_letters, "dead letter"), self.skipped)
        for note, n in self.notes.most_common(5):
            line += "\n  note: %s (%s)" % (note, counted(n, "record"))
        return line

    def exit_status(self) -> int:
        return 1 if self.dead_letters else 0


class EventWriter:
    """Writes each event where it belongs and counts it."""

    def __init__(self, records: IO[bytes], dead_letters: IO[bytes], source: str = "-"):
        self.records = records
        self.dead_letters = dead_letters
        self.source = source
        self.tally = Tally()

    def write(self, events) -> None:
        records, count = self.records, self.tally.count
        for event in events:
            count(event)
            if type(event) is Record:
                records.write(json_dumps(event.data) + b"\n")
            elif type(event) is DeadLetter:
                self.dead_letters.write(dead_letter_json(event, self.source) + b"\n")
            # Skipped frames are only counted: blank lines, controller log lines.


def max_frame_option(text: str) -> int:
    """``--max-frame``: a whole number of bytes above 0 (an argparse type)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError("must be a whole number of bytes above 0")
    return value


def open_outputs(out: Optional[str], dead_letter: Optional[str]):
    """(records, dead letters) streams for ``--out`` / ``--dead-letter``; OSError names the file."""
    return open_output(out, sys.stdout.buffer), open_output(dead_letter, sys.stderr.buffer)


def open_output(path: Optional[str], default: IO[bytes]) -> IO[bytes]:
    """``None`` or ``-`` means the default stream; parent folders are created."""
    if path is None or path == "-":
        return default
    try:
        folder = os.path.dirname(path)
        if folder:
            os.makedirs(folder, exist_ok=True)
        return open(path, "wb", buffering=1 << 20)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, path) from None  # the file asked for, not its folder

