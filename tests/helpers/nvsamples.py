"""The NeuVector reference test vectors, and how the tests compare records.

``tests/fixtures/neuvector-samples.txt`` holds the 41 vectors of NeuVector's
wire-format reference (its own documentation's three lines among them), and
``tests/fixtures/samples_expected/`` the record each must give, written from
the same reference.

File layout (documented at the top of the file itself)::

    ### <id> | <provenance> | transport=<...> | mode=<...> | lines=<n>
    # zero or more comment lines
    <exactly n raw lines: frame bytes without the trailing LF>

Lines are read as bytes so that what a test feeds is exactly what the
reference shows, byte for byte.
"""
import json
import re
from pathlib import Path
from typing import List, NamedTuple, Optional

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SAMPLES_FILE = FIXTURES / "neuvector-samples.txt"
EXPECTED_DIR = FIXTURES / "samples_expected"

_HEADER = re.compile(
    rb"^### (?P<id>[^|]+?) \| (?P<prov>[^|]+?) \| transport=(?P<transport>[^|]+?)"
    rb" \| mode=(?P<mode>[a-z]+) \| lines=(?P<n>\d+)$"
)


class Sample(NamedTuple):
    id: str
    provenance: str
    transport: str
    mode: str  # text | json | podlog | http
    lines: List[bytes]  # raw lines, without the LF that ends each frame

    @property
    def is_datagram(self) -> bool:
        """One UDP datagram per line (every other transport is a byte stream)."""
        return self.transport.startswith("UDP")

    @property
    def content_type(self) -> Optional[str]:
        """The Content-Type a webhook sample was sent with (``mode=http``)."""
        _, sep, value = self.transport.partition("Content-Type: ")
        return value if sep else None

    @property
    def stream(self) -> bytes:
        """The sample as one byte stream: every line ends with the LF framing."""
        return b"".join(line + b"\n" for line in self.lines)


def load_samples(path: Optional[Path] = None) -> List[Sample]:
    """Every sample in file order; raises ValueError if the layout is broken."""
    path = path or SAMPLES_FILE
    raw_lines = path.read_bytes().split(b"\n")
    samples: List[Sample] = []
    i = 0
    while i < len(raw_lines):
        m = _HEADER.match(raw_lines[i])
        i += 1
        if not m:
            if raw_lines[i - 1].startswith(b"###"):
                raise ValueError(f"{path}:{i}: malformed sample header")
            continue  # commentary or blank line between samples
        while i < len(raw_lines) and raw_lines[i].startswith(b"#"):
            i += 1  # the sample's own comment lines
        n = int(m["n"])
        body = raw_lines[i:i + n]
        if len(body) != n or any(line.startswith(b"#") for line in body):
            raise ValueError(f"{path}:{i}: sample {m['id'].decode()} lacks its {n} raw lines")
        i += n
        samples.append(Sample(
            id=m["id"].decode(),
            provenance=m["prov"].decode(),
            transport=m["transport"].decode(),
            mode=m["mode"].decode(),
            lines=body,
        ))
    ids = [s.id for s in samples]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: duplicate sample ids")
    return samples


def expected_records(sample_id: str) -> list:
    """The records a sample must produce, as a list (one-record files hold an object)."""
    data = json.loads((EXPECTED_DIR / f"{sample_id}.json").read_text(encoding="utf-8"))
    return data if isinstance(data, list) else [data]


def _typed(value):
    """``value`` with every scalar tagged by its JSON type.

    Python's ``==`` says ``10 == 10.0`` and ``False == 0``; a record that
    gives ``score_v3`` as an int or ``xff`` as 0 is wrong, so comparisons go
    through this.
    """
    if isinstance(value, dict):
        return {k: _typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_typed(v) for v in value]
    return (type(value).__name__, value)


def _differences(got: dict, expected: dict) -> str:
    keys = [k for k in {**expected, **got} if _typed(got.get(k, KeyError)) != _typed(expected.get(k, KeyError))]
    return "; ".join(f"{k}: expected {expected.get(k, '<absent>')!r}, got {got.get(k, '<absent>')!r}" for k in keys)


def assert_same_records(got: list, expected: list) -> None:
    """Equal records, with equal JSON types for every value.

    The message names the fields that differ, so a failure reads at a glance
    even for a large record.
    """
    assert len(got) == len(expected), f"{len(got)} records, expected {len(expected)}: {got!r}"
    for i, (g, e) in enumerate(zip(got, expected)):
        assert _typed(g) == _typed(e), f"record {i}: {_differences(g, e)}"
