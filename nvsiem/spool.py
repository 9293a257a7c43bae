"""The on-disk spool: where a record becomes *accepted*.

Layout of the spool directory::

    segment-0000000000000007.jsonl   records, one compact JSON object a line
    cursor-<sink id>.json            how far one sink got: {"segment": 7, "offset": 1048576}
    dead-letters.jsonl               frames that could not be decoded (written by the collector)

Writers append whole batches with one ``write()`` each, so a batch reaches
the page cache in one piece: a process crash (``kill -9``) loses nothing the
spool accepted. ``fsync`` runs every ``fsync_interval`` seconds in the
background, for the active segment and any closed since the last tick, and
at shutdown (``fsync_interval=0`` syncs every batch before ``append``
returns), so a power loss can lose at most the last interval. Appends never
wait for the disk: a 16 MiB segment's fsync can take a second.

Each sink reads through a ``SpoolReader`` at its own pace and moves its
cursor (replaced atomically with ``os.replace``) only past batches its
destination confirmed. A segment is deleted once every cursor has passed
it. Each start of the process begins a new segment, so only the newest
segment is ever written and a torn tail (power loss) is cut at the last
complete line on recovery.

The quota bounds the bytes on disk. When appending would exceed it,
``append`` waits for space (TCP and file tails stop reading: back-pressure;
UDP datagrams wait in the receiver's raw files) or gives up after
``timeout`` and returns False (the webhook answers 500 so NeuVector
retries): never silently, see ``on_full``.
"""
import fcntl
import logging
import os
import re
import threading
import time
from typing import Callable, Iterable, List, Optional, Sequence, Tuple

from nvparser import json_loads

from .rotating import cut_torn_tail, join_lines
from .statefile import load_state, save_state

log = logging.getLogger("nvsiem.spool")

_SEGMENT = re.compile(r"^segment-(\d{16})\.jsonl$")
_CURSOR = re.compile(r"^cursor-(.+)\.json$")
DEAD_LETTERS = "dead-letters.jsonl"


def _segment_name(number: int) -> str:
    return "segment-%016d.jsonl" % number


def _lock_directory(directory: str):
    """Hold ``directory/lock`` for as long as the returned file is open: one collector per spool.

    A second one would delete segments the first still writes.
    """
    f = open(os.path.join(directory, "lock"), "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "?"
        f.close()
        raise OSError("spool %s is in use by another nvsiem listen (pid %s): give each its own --spool"
                      % (directory, holder)) from None
    f.truncate(0)
    f.write("%d\n" % os.getpid())
    f.flush()
    return f


class Spool:
    """Append-only segment files plus one cursor per reader."""

    def __init__(
        self,
        directory: str,
        quota_bytes: int = 1 << 30,
        segment_bytes: int = 16 << 20,
        fsync_interval: float = 1.0,
        on_full: Optional[Callable[[bool], None]] = None,
    ) -> None:
        if quota_bytes < 2 * segment_bytes:
            # The active segment cannot be deleted while written: leave room for one more.
            segment_bytes = max(1, quota_bytes // 2)
        self.directory = directory
        self.quota_bytes = quota_bytes
        self.segment_bytes = segment_bytes
        self.fsync_interval = fsync_interval
        self._on_full = on_full
        self._lock = threading.Condition()
        self._readers: List["SpoolReader"] = []
        self._closed = False
        self._stopped = threading.Event()
        self._no_wait = False
        self._full = False
        self._full_logged = -60.0
        self._dirty = False
        self._closed_unsynced: List[int] = []  # dup'ed fds of closed segments, for the syncer
        self._syncing = threading.Lock()
        self._last_error: Optional[str] = None
        os.makedirs(directory, exist_ok=True)
        self._owner = _lock_directory(directory)
        self._sizes = self._recover()  # segment number -> bytes, ascending
        self._active = (max(self._sizes) + 1) if self._sizes else 1
        self._sizes[self._active] = 0
        self._file = open(self._path(self._active), "ab", buffering=0)
        self._syncer = None
        if fsync_interval > 0:
            self._syncer = threading.Thread(target=self._sync_loop, name="spool-fsync", daemon=True)
            self._syncer.start()

    # -- writing ---------------------------------------------------------

    def append(self, lines: Sequence[bytes], timeout: Optional[float] = None, overflow: bool = False) -> bool:
        """Append records (compact JSON, no newline) as one write.

        Returns True once they are accepted. When the quota is reached,
        waits up to ``timeout`` seconds (None: until space or close) and
        returns False if there still is no room. Once ``stop_waiting`` was
        called, ``overflow`` records are written past the quota instead:
        input already taken from a socket, that no one can send again.

        A failed write (a full disk) leaves the segment as it was, and raises.
        """
        if not lines:
            return True
        data = join_lines(lines)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            # Checked before each _has_room: a closed spool must not roll a new segment into being.
            while not self._closed and not self._has_room(len(data)):
                self._set_full(True)
                remaining = None if deadline is None else deadline - time.monotonic()
                if self._no_wait and overflow:
                    break
                if self._no_wait or (remaining is not None and remaining <= 0):
                    return False
                self._lock.wait(remaining if remaining is not None else 1.0)
            if self._closed:
                return False
            if self._full and self.used_bytes_locked() + len(data) <= self.quota_bytes * 0.9:
                self._set_full(False)  # hysteresis: no flapping while small appends still fit
            if self._sizes[self._active] and self._sizes[self._active] + len(data) > self.segment_bytes:
                self._roll()
            try:
                self._write(data)
            except OSError:
                if self._caught_up():  # a full disk: free what every sink has confirmed
                    self._roll()
                raise
            self._sizes[self._active] += len(data)
            self._dirty = True
            if self.fsync_interval <= 0:
                self._fsync()
            self._lock.notify_all()
            return True

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[self._file.write(view):]
            self._last_error = None
        except OSError as exc:
            self._last_error = "spool write failed: %s" % exc
            # No torn record in the middle of the segment: cut back what part of it was written.
            try:
                os.ftruncate(self._file.fileno(), self._sizes[self._active])
            except OSError:
                pass
            raise

    def _has_room(self, size: int) -> bool:
        if self.used_bytes_locked() + size <= self.quota_bytes:
            return True
        # Everything written may already be delivered: start a new segment so the old one can go.
        if self._caught_up():
            self._roll()
        # An append larger than the whole quota goes in once the spool is empty: waiting could never make room.
        used = self.used_bytes_locked()
        return used + size <= self.quota_bytes or used == 0

    def _caught_up(self) -> bool:
        """Every reader has confirmed the whole active segment (and it is not empty)."""
        return bool(self._sizes[self._active]) and all(
            r._segment >= self._active and r._offset >= self._sizes[self._active] for r in self._readers)

    def _set_full(self, full: bool) -> None:
        if full == self._full:
            return
        # Under sustained back-pressure the state flips often: say it loudly once a minute at most.
        loud = time.monotonic() - self._full_logged >= 60.0
        if full:
            if loud:
                self._full_logged = time.monotonic()
            log.log(logging.WARNING if loud else logging.DEBUG,
                    "spool quota reached: %d of %d bytes in %s; TCP and file input wait, UDP input waits in raw "
                    "files, webhooks get 500, until a sink catches up",
                    self.used_bytes_locked(), self.quota_bytes, self.directory)
        else:
            log.log(logging.INFO if loud else logging.DEBUG, "spool has room again: %d of %d bytes",
                    self.used_bytes_locked(), self.quota_bytes)
        self._full = full  # after the log line: whoever sees the new state finds it logged
        if self._on_full:
            self._on_full(full)

    def _roll(self) -> None:
        if self._dirty:
            # Synced by the syncer, outside the lock (with fsync_interval=0 it is clean here).
            self._closed_unsynced.append(os.dup(self._file.fileno()))
            self._dirty = False
        new = open(self._path(self._active + 1), "ab", buffering=0)  # first: a failure leaves all as it was
        self._file.close()
        self._active += 1
        self._sizes[self._active] = 0
        self._file = new
        self._delete_passed()

    def _fsync(self) -> None:
        if self._dirty:
            os.fsync(self._file.fileno())
            self._dirty = False

    def _sync_loop(self) -> None:
        # Its own clock, not the condition appends notify.
        while not self._stopped.wait(self.fsync_interval):
            if self._closed:
                return
            self._sync_pending()

    def _sync_pending(self) -> None:
        """fsync what was appended and not synced yet, outside the spool lock: appends never wait for the disk.

        One caller at a time (``_syncing``), so when ``sync()`` returns, what
        the syncer had already taken is synced too.
        """
        with self._syncing:
            with self._lock:
                fds, self._closed_unsynced = self._closed_unsynced, []
                if self._dirty and not self._closed:
                    fds.append(os.dup(self._file.fileno()))
                    self._dirty = False
            for fd in fds:
                try:
                    os.fsync(fd)
                except OSError as exc:
                    self._last_error = "spool fsync failed: %s" % exc
                    log.error(self._last_error)
                finally:
                    os.close(fd)

    @property
    def stopping(self) -> bool:
        return self._no_wait

    def stop_waiting(self) -> None:
        """Make appends waiting for room (and later ones) give up at once: the collector is stopping."""
        with self._lock:
            self._no_wait = True
            self._lock.notify_all()

    def sync(self) -> None:
        """Make every record appended so far durable, closed segments included."""
        self._sync_pending()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._fsync()
            self._file.close()
            self._lock.notify_all()
        self._stopped.set()
        if self._syncer:
            self._syncer.join()
        self._sync_pending()  # segments closed since the syncer's last tick
        self._owner.close()  # releases the directory's lock

    # -- state -------------------------------------------------------------

    @property
    def full(self) -> bool:
        return self._full

    @property
    def error(self) -> Optional[str]:
        """Why the spool cannot accept records right now, or None."""
        return self._last_error

    def used_bytes_locked(self) -> int:
        return sum(self._sizes.values())

    @property
    def used_bytes(self) -> int:
        with self._lock:
            return self.used_bytes_locked()

    def _path(self, number: int) -> str:
        return os.path.join(self.directory, _segment_name(number))

    def _recover(self) -> dict:
        """Find the segments left by an earlier run; cut a torn last line."""
        sizes = {}
        for name in os.listdir(self.directory):
            m = _SEGMENT.match(name)
            if m:
                sizes[int(m.group(1))] = os.path.getsize(os.path.join(self.directory, name))
        if sizes:
            last = max(sizes)
            sizes[last] = cut_torn_tail(self._path(last), sizes[last])
        return dict(sorted(sizes.items()))

    # -- reading -----------------------------------------------------------

    def reader(self, name: str, types: Optional[Iterable[str]] = None, label: str = "") -> "SpoolReader":
        """The reader for sink ``name`` (a stable id), resuming from its cursor file."""
        with self._lock:
            reader = SpoolReader(self, name, types, label)
            self._readers.append(reader)
            return reader

    def cursor_names(self) -> List[str]:
        return sorted(m.group(1) for m in map(_CURSOR.match, os.listdir(self.directory)) if m)

    def forget_cursor(self, name: str) -> int:
        """Remove the cursor of a sink no longer configured; return the backlog it had."""
        path = os.path.join(self.directory, "cursor-%s.json" % name)
        segment, offset = _load_cursor(path)
        with self._lock:
            backlog = self._bytes_after(segment, offset)
        os.unlink(path)
        return backlog

    def _bytes_after(self, segment: int, offset: int) -> int:
        return sum(size for number, size in self._sizes.items() if number >= segment) - (
            offset if segment in self._sizes else 0)

    def _delete_passed(self) -> None:
        """Delete segments every reader has passed (called with the lock held)."""
        if not self._readers:
            return
        oldest_needed = min(r._segment for r in self._readers)
        for number in [n for n in self._sizes if n < oldest_needed and n != self._active]:
            try:
                os.unlink(self._path(number))
            except FileNotFoundError:
                pass
            del self._sizes[number]
            self._lock.notify_all()
        if self._full and self.used_bytes_locked() <= self.quota_bytes * 0.9:
            self._set_full(False)

    def _end_of(self, segment: int) -> Tuple[int, Optional[int]]:
        """(bytes readable in ``segment``, next segment number or None)."""
        with self._lock:
            size = self._sizes.get(segment, 0)
            later = [n for n in self._sizes if n > segment]
            return size, (min(later) if later else None)


def _load_cursor(path: str) -> Tuple[int, int]:
    state = load_state(path, {"segment": 0, "offset": 0})
    return int(state["segment"]), int(state["offset"])


def notification_of(line: bytes) -> Optional[str]:
    """The notification type of a spooled record.

    The collector writes ``notification`` first, so this is a prefix check;
    other lines fall back to decoding the JSON.
    """
    prefix = b'{"notification":"'
    if line.startswith(prefix):
        end = line.find(b'"', len(prefix))
        return line[len(prefix):end].decode()
    value = json_loads(line).get("notification")
    return value if isinstance(value, str) else None


class SpoolReader:
    """One sink's view of the spool: read a batch, deliver it, then ``commit``."""

    def __init__(self, spool: Spool, name: str, types: Optional[Iterable[str]], label: str) -> None:
        self.spool = spool
        self.name = name
        self.label = label or name
        self.types = frozenset(types) if types else None
        self._cursor_path = os.path.join(spool.directory, "cursor-%s.json" % name)
        segment, offset = _load_cursor(self._cursor_path)
        first = min(spool._sizes)
        if segment < first or segment not in spool._sizes:
            # New sink, or its segment is gone: start at the oldest record still kept.
            segment, offset = first, 0
        self._segment, self._offset = segment, offset  # the cursor: confirmed up to here
        self._pending = (segment, offset)  # read up to here
        self._file = None
        self._file_segment = None

    def read(self, max_records: int, max_bytes: int = 4 << 20, timeout: float = 1.0) -> List[bytes]:
        """The next records (up to ``max_records``) for this reader.

        Waits up to ``timeout`` for new records. An empty list with
        ``pending`` set means records were read but none matched the filter:
        commit anyway.
        """
        deadline = time.monotonic() + timeout
        while True:
            start = self._pending
            batch, position = self._read_from(start[0], start[1], max_records, max_bytes)
            self._pending = position
            if batch or position != start:
                return batch
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            with self.spool._lock:
                if self.spool._sizes.get(start[0], 0) <= start[1] and not self.spool._closed:
                    self.spool._lock.wait(min(remaining, 0.5))

    @property
    def has_pending(self) -> bool:
        return self._pending != (self._segment, self._offset)

    def _read_from(self, segment: int, offset: int, max_records: int, max_bytes: int):
        while True:
            end, later = self.spool._end_of(segment)
            if offset < end:
                break
            if later is None:
                return [], (segment, offset)
            segment, offset = later, 0  # this segment is done: move on
        f = self._open(segment)
        f.seek(offset)
        data = f.read(min(max_bytes, end - offset))
        cut = data.rfind(b"\n") + 1
        if cut == 0:  # one line longer than max_bytes
            data += f.readline()
            cut = len(data)
        lines = data[:cut].split(b"\n")
        lines.pop()  # after the last newline
        if len(lines) > max_records:
            lines = lines[:max_records]
            cut = sum(map(len, lines)) + len(lines)
        if self.types is not None:
            lines = [line for line in lines if notification_of(line) in self.types]
        return lines, (segment, offset + cut)

    def _open(self, segment: int):
        if self._file_segment != segment:
            if self._file:
                self._file.close()
            self._file = open(self.spool._path(segment), "rb")
            self._file_segment = segment
        return self._file

    @property
    def position(self) -> tuple:
        """Where the last ``read`` ended: what ``commit(position)`` confirms up to."""
        return self._pending

    def rewind(self) -> None:
        """Read again from the cursor: what was read since was not confirmed."""
        self._pending = (self._segment, self._offset)

    def commit(self, position: Optional[tuple] = None) -> None:
        """Move the cursor to ``position`` (default: past the batch returned by the last ``read``)."""
        position = self._pending if position is None else position
        if position == (self._segment, self._offset):
            return
        self._segment, self._offset = position
        save_state(self._cursor_path, {"segment": self._segment, "offset": self._offset, "sink": self.label})
        with self.spool._lock:
            self.spool._delete_passed()
            self.spool._lock.notify_all()  # an append waiting for room may now roll past what was confirmed

    @property
    def backlog_bytes(self) -> int:
        """Spooled bytes this reader has not committed yet (before filtering)."""
        with self.spool._lock:
            return self.spool._bytes_after(self._segment, self._offset)

    def close(self) -> None:
        if self._file:
            self._file.close()
            self._file = None
        with self.spool._lock:
            if self in self.spool._readers:
                self.spool._readers.remove(self)
