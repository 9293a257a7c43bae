"""Append-only JSON-lines files: whole-batch writes, torn-tail repair, rotation by size.

The spool's segments, the file sink's output and the dead-letter file are
all such files: each batch reaches the file in one ``write()``, and a torn
last line (a kill or power loss mid-write) is cut when the file is opened
again, since nothing in it was confirmed yet.
"""
import logging
import os
import tempfile
from itertools import chain
from typing import Sequence

log = logging.getLogger("nvsiem.files")


def join_lines(lines: Sequence[bytes]) -> bytes:
    """``lines`` as one LF-terminated block.

    The empty last item gives the final LF: ``join(...) + b"\\n"`` would copy
    the whole block a second time.
    """
    return b"\n".join(chain(lines, (b"",)))


def cut_torn_tail(path: str, size: int) -> int:
    """Truncate JSON-lines file ``path`` after its last newline; return the new size.

    A kill or power loss in the middle of a write leaves a torn last line;
    what it held was not confirmed yet, so it is written again, whole.
    """
    if size == 0:
        return 0
    with open(path, "rb+") as f:
        pos = size
        while pos > 0:
            step = min(65536, pos)
            f.seek(pos - step)
            chunk = f.read(step)
            nl = chunk.rfind(b"\n")
            if nl >= 0:
                pos = pos - step + nl + 1
                break
            pos -= step
        if pos != size:
            log.warning("%s ended with a torn write (a kill or power loss): cut %d bytes", path, size - pos)
            f.truncate(pos)
        return pos


def check_writable(path: str) -> None:
    """OSError unless ``path`` can be appended to, or created; nothing is left changed.

    Tried, not judged from permission bits: root passes every access check,
    yet cannot create files under /proc or on a read-only mount.
    """
    target = os.path.abspath(path)
    if os.path.exists(target):
        open(target, "ab").close()
        return
    directory = os.path.dirname(target)
    while not os.path.exists(directory):  # the nearest existing ancestor must take new entries
        directory = os.path.dirname(directory)
    try:
        tempfile.TemporaryFile(dir=directory).close()
    except OSError as exc:
        raise OSError(exc.errno, "cannot create %s: %s: %s" % (path, directory, exc.strerror)) from None


class RotatingFile:
    """An append-only file that rotates by size; writes whole batches.

    The file (and its directory) is created at the first write, so a
    collector that fails to start leaves nothing behind; whether it can be
    is checked at once.
    """

    def __init__(self, path: str, max_bytes: int = 100 << 20, backups: int = 5, fsync: bool = False) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self.fsync = fsync
        check_writable(path)
        self._file = None
        self._size = 0

    def _open(self) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        self._file = open(self.path, "ab", buffering=0)
        self._size = cut_torn_tail(self.path, self._file.tell())

    def write_lines(self, lines: Sequence[bytes]) -> None:
        if self._file is None:
            self._open()
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
        if self._file is not None and not self._file.closed:
            os.fsync(self._file.fileno())
            self._file.close()
