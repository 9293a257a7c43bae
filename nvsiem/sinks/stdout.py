"""``stdout://``: records as JSON lines on standard output, flushed per batch."""
import sys
from typing import Sequence

from .api import Sink, SinkError


class StdoutSink(Sink):
    max_batch = 1000

    def send(self, batch: Sequence[bytes]) -> None:
        out = sys.stdout.buffer
        try:
            out.write(b"\n".join(batch) + b"\n")
            out.flush()
        except (OSError, ValueError) as exc:
            raise SinkError("cannot write to stdout: %s" % exc) from exc

    def describe(self) -> str:
        return "stdout://"
