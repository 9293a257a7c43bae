"""``file://PATH``: records as JSON lines, with size-based rotation.

Options (URL query): ``max_bytes`` (rotate before a write would pass it;
``100M`` by default, 0 never rotates), ``backups`` (rotated files kept:
PATH.1 is the newest, 5 by default) and ``fsync`` (``true``: fsync each
batch before confirming it, so a confirmed batch survives power loss; by
default a batch is confirmed once the OS has it, which survives a crash of
the collector but not of the machine, and the file is synced on rotation
and close).

``file:///var/log/nv.jsonl`` is absolute, ``file://out/nv.jsonl`` relative
to the working directory.
"""
from typing import Sequence
from urllib.parse import parse_qs, urlsplit

from ..options import path_of
from ..rotating import RotatingFile
from .api import Sink, SinkError, parse_bool, parse_size


class FileSink(Sink):
    max_batch = 5000

    def __init__(self, url: str) -> None:
        super().__init__(url)
        query = {k: v[-1] for k, v in parse_qs(urlsplit(url).query).items()}
        unknown = set(query) - {"max_bytes", "backups", "fsync"}
        if unknown:
            raise ValueError("file sink: unknown option(s) %s (known: max_bytes, backups, fsync)" % ", ".join(sorted(unknown)))
        path = path_of(url)
        if not path:
            raise ValueError("file sink needs a path: file:///var/log/neuvector.jsonl")
        self._file = RotatingFile(
            path,
            max_bytes=parse_size(query.get("max_bytes", "100M")),
            backups=int(query.get("backups", "5")),
            fsync=parse_bool(query.get("fsync", "false")),
        )

    def send(self, batch: Sequence[bytes]) -> None:
        try:
            self._file.write_lines(batch)
        except OSError as exc:
            raise SinkError("cannot write %s: %s" % (self._file.path, exc)) from exc

    def close(self) -> None:
        self._file.close()
