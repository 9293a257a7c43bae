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
import os
from typing import Sequence
from urllib.parse import parse_qs, unquote, urlsplit

from ..config import parse_bool, parse_size
from ..spool import cut_torn_tail, join_lines
from .base import Sink, SinkError


class RotatingFile:
    """An append-only file that rotates by size; writes whole batches."""

    def __init__(self, path: str, max_bytes: int = 100 << 20, backups: int = 5, fsync: bool = False) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self.fsync = fsync
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        self._file = open(path, "ab", buffering=0)
        self._size = cut_torn_tail(path, self._file.tell())

    def write_lines(self, lines: Sequence[bytes]) -> None:
        data = join_lines(lines)
        if self.max_bytes and self._size and self._size + len(data) > self.max_bytes:
            self._rotate()
        view = memoryview(data)
        while view:
            view = view[self._file.write(view):]
        self._size += len(data)
        if self.fsync:
            os.fsync(self._file.fileno())

    def _rotate(self) -> None:
        os.fsync(self._file.fileno())
        self._file.close()
        if self.backups > 0:
            for n in range(self.backups - 1, 0, -1):
                if os.path.exists("%s.%d" % (self.path, n)):
                    os.replace("%s.%d" % (self.path, n), "%s.%d" % (self.path, n + 1))
            os.replace(self.path, self.path + ".1")
        else:
            os.unlink(self.path)
        self._file = open(self.path, "ab", buffering=0)
        self._size = 0

    def close(self) -> None:
        if not self._file.closed:
            os.fsync(self._file.fileno())
            self._file.close()


def path_of(url: str) -> str:
    """The filesystem path a ``file://`` URL names (``file://rel/x`` is relative)."""
    parts = urlsplit(url)
    return unquote(parts.netloc + parts.path)


class FileSink(Sink):
    schemes = ("file",)
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
