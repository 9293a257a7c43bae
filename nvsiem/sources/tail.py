"""``file:///var/log/containers/neuvector-controller-…log``: follow a pod log.

For NeuVector's "write notifications to controller pod logs" option: the
file is read as a stream (CRI prefixes and the controller's own log lines
are handled by the parser; those lines count as skipped). Rotation is
followed: when the path names a new file (kubelet renames and recreates)
the old one is read to its end first; when the file shrinks (copytruncate)
reading restarts at 0.

The read position is kept in ``tail-<id>.json`` in the spool directory,
written whenever the parser holds nothing back (the file has been quiet
for ``idle_flush`` seconds, or on rotation and stop); a line still being
written (no LF yet) is left for the next start to read whole. A restart resumes
there, even if the file was rotated meanwhile (the old file is found in its
directory by inode). After a crash, the lines read since the last quiet
moment are read again: duplicates, never gaps. So are lines the spool
refuses at stop (it is full): the position stays at the last quiet moment.
"""
import hashlib
import os
import time

from ..options import path_of
from ..statefile import load_state, save_state
from .base import Source, log

# Fed to the parser as read: ~60 records live at once stay in the CPU cache
# from parsing to serialising (1 MiB reads made both 1.5-2x slower).
_READ = 64 << 10


class TailSource(Source):
    def __init__(self, url: str, collector) -> None:
        super().__init__(url, collector)
        self.path = path_of(url)
        key = hashlib.sha256(os.path.abspath(self.path).encode()).hexdigest()[:12]
        self.state_path = os.path.join(collector.spool.directory, "tail-%s.json" % key)

    def start(self) -> None:
        self.up = True
        self.spawn(self._follow, "tail-" + os.path.basename(self.path))

    def _open_resumed(self):
        """(file, inode, position) to start from, per the saved state."""
        state = load_state(self.state_path, {"inode": None, "offset": 0})
        candidates = [self.path] + [os.path.join(os.path.dirname(self.path) or ".", n)
                                    for n in sorted(os.listdir(os.path.dirname(self.path) or "."))]
        for candidate in candidates:
            try:
                if os.stat(candidate).st_ino == state["inode"]:
                    f = open(candidate, "rb")
                    f.seek(state["offset"])
                    if candidate != self.path:
                        log.info("%s: resuming in rotated file %s", self.label, candidate)
                    return f, state["inode"], state["offset"]
            except OSError:
                continue
        f = open(self.path, "rb")  # FileNotFoundError: the caller waits for it
        return f, os.fstat(f.fileno()).st_ino, 0

    def _save(self, inode: int, offset: int) -> None:
        save_state(self.state_path, {"path": self.path, "inode": inode, "offset": offset})

    def _follow(self) -> None:
        f = None
        warned = False
        while f is None and not self._stopping.is_set():
            try:
                f, inode, pos = self._open_resumed()
            except FileNotFoundError:
                if not warned:
                    log.warning("%s: %s does not exist yet; waiting for it", self.label, self.path)
                    warned = True
                self._stopping.wait(0.5)
        if f is None:
            return
        parser, held, quiet_since = self.parser(), False, time.monotonic()
        partial = 0  # bytes after the last LF read: a line still being written
        refused = False  # by the spool at stop: keep the saved position, read it again next start
        rotated = False  # the path names a new file: read the old one to its end, then switch
        try:
            while True:
                data = f.read(_READ)
                if data:
                    self.received(len(data))
                    if not self.spool(parser.feed(data)):
                        refused = True
                        break
                    pos += len(data)
                    nl = data.rfind(b"\n")
                    partial = partial + len(data) if nl < 0 else len(data) - nl - 1
                    held, quiet_since = True, time.monotonic()
                    continue
                if rotated:
                    if not self.spool(self.finish(parser, partial == 0)):
                        refused = True
                        break
                    f.close()
                    f = open(self.path, "rb")
                    inode, pos, held, partial = os.fstat(f.fileno()).st_ino, 0, False, 0
                    parser, rotated = self.parser(), False
                    self._save(inode, pos)
                    log.info("%s: following the new %s (rotated)", self.label, self.path)
                    continue
                if self._stopping.is_set():
                    break
                if held and time.monotonic() - quiet_since >= self.config.idle_flush:
                    if not self.spool(parser.flush()):
                        refused = True
                        break
                    held = False
                    self._save(inode, pos - partial)
                try:
                    st = os.stat(self.path)
                except FileNotFoundError:
                    st = None
                if st is not None and st.st_ino != inode:
                    rotated = True  # what was written before the rename is read first, 64 KiB at a time
                elif st is not None and st.st_size < pos:
                    if not self.spool(self.finish(parser, partial == 0)):
                        refused = True
                        break
                    parser, held, partial = self.parser(), False, 0
                    f.seek(0)
                    pos = 0
                    self._save(inode, pos)
                    log.info("%s: %s was truncated; reading it from the start", self.label, self.path)
                else:
                    self._stopping.wait(0.2)
        finally:
            # A line still being written is read again, whole, on the next start.
            if not refused and self.spool(parser.flush()):
                self._save(inode, pos - partial)
            f.close()
