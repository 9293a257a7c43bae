"""The wiring of ``nvsiem listen``: sources -> spool -> one worker per sink.

Reception never waits for a sink. A source parses what it received and
hands the events to ``Collector.accept``: records are serialised and
appended to the spool in one write (the acceptance point), dead letters go
to ``dead-letters.jsonl`` in the spool directory with their raw bytes and
reason, skipped lines are only counted. Each sink has a ``SinkWorker``
thread that reads the spool at the sink's pace and moves its cursor only
past batches the sink confirmed.

Duplicates: a sink receives a record twice only when a batch was sent but
its confirmation or cursor update was lost: after a crash of the collector
(at most the one batch in flight per sink, ``max_batch`` records) or when
the destination stored part of a batch it then failed (that batch is
retried whole).
"""
import logging
import os
import shutil
import threading
import time
from collections import Counter, deque
from typing import Deque, Iterable, List, Optional, Tuple

from nvparser import DeadLetter, Record, json_dumps

from .config import Config
from .dedup import Dedup
from .metrics import Metrics
from .output import dead_letter_json
from .options import redact_url
from .rotating import RotatingFile
from .sinks import open_sink, sink_id, split_collector_options
from .sinks.api import Sink, SinkError
from .spool import DEAD_LETTERS, Spool, notification_of

log = logging.getLogger("nvsiem.collector")

_GATHER = 0.02  # seconds a sink worker lets records gather after a small batch


def record_line(data: dict) -> bytes:
    """A record as spooled: compact JSON with ``notification`` first (see ``spool.notification_of``)."""
    if next(iter(data), None) != "notification" and "notification" in data:
        data = {"notification": data["notification"], **data}
    return json_dumps(data)


def _pieces(lines: List[bytes], max_bytes: int):
    """Split ``lines`` into runs of at most ``max_bytes`` (one line at least)."""
    if sum(map(len, lines)) + len(lines) <= max_bytes:  # the usual case, summed in C
        yield lines
        return
    start, size = 0, 0
    for i, line in enumerate(lines):
        if size and size + len(line) + 1 > max_bytes:
            yield lines[start:i]
            start, size = i, 0
        size += len(line) + 1
    if start < len(lines):
        yield lines[start:]


class Collector:
    """Owns the spool, the dead-letter file, the sink workers and the sources."""

    def __init__(self, config: Config, metrics: Optional[Metrics] = None) -> None:
        self.config = config
        self.metrics = metrics or Metrics()
        #: Removed again by ``abandon`` when the start fails: a failed start leaves nothing behind.
        self._made_spool = not os.path.exists(config.spool)
        try:
            self.spool = Spool(config.spool, quota_bytes=config.spool_quota, segment_bytes=config.spool_segment,
                               fsync_interval=config.fsync_interval)
        except OSError as exc:
            raise OSError("--spool %s: %s" % (config.spool, exc.strerror or exc)) from None
        # The spool's segment size: lowered for a small quota, so dead letters stay small with it.
        self._dead = RotatingFile(self.spool.directory + "/" + DEAD_LETTERS, max_bytes=self.spool.segment_bytes * 4)
        self._dead_lock = threading.Lock()
        self._drop_logged = {}
        self.workers: List[SinkWorker] = []
        self.sources: list = []
        #: One copy of each event (``dedup.Dedup``), on once a source brings events again (REST).
        self.dedup: Optional[Dedup] = None

    def enable_dedup(self) -> Dedup:
        if self.dedup is None:
            self.dedup = Dedup(self.spool.directory)
        return self.dedup

    # -- acceptance --------------------------------------------------------

    def accept(self, events: Iterable, source: str, timeout: Optional[float] = None, overflow: bool = False,
               replayed: bool = False, taken: Optional[Counter] = None, seen_in_reply: Optional[dict] = None) -> bool:
        """Spool ``events`` from ``source``; wait up to ``timeout`` for room (None: until there is room or we stop).

        False: some records were refused (spool full or failing); they are
        counted as dropped and logged. Records go to the spool in pieces of
        at most 1/32 of the quota, so even a large batch fits once sinks catch
        up, and a stream waits for room only when the spool is nearly full.
        With ``timeout`` None a failing spool (a full disk) is waited for too,
        until we stop. ``overflow``: see ``Spool.append``. With de-duplication
        on, copies of events already spooled are dropped (``replayed``: the
        events are a REST reply, see ``Dedup.admit``, and ``seen_in_reply``
        the same dict for each piece of one reply); ``taken`` counts the
        records spooled, by notification type.
        """
        keys = None
        if self.dedup is not None:
            events, keys = self._first_copies(events, source, replayed, seen_in_reply)
        # The hot loop of the collector: kept to plain appends, counted in C afterwards.
        lines, kinds, others, notes = [], [], [], []
        line, kind, other = lines.append, kinds.append, others.append
        for event in events:
            if type(event) is Record:
                data = event.data
                line(record_line(data))
                kind(data.get("notification"))
                if event.notes:
                    notes.extend(event.notes)
            else:
                other(event)
        if notes:
            self.noted(source, notes)
        kinds_in_order, kinds = kinds, Counter(kinds)
        dead = [dead_letter_json(e, source) for e in others if type(e) is DeadLetter]
        skipped = len(others) - len(dead)
        m = self.metrics
        m.received_frames.labels(source).inc(len(lines) + len(dead) + skipped)
        if dead:
            with self._dead_lock:
                self._dead.write_lines(dead)
            m.dead_letters.labels(source).inc(len(dead))
        if skipped:
            m.skipped.labels(source).inc(skipped)
        refused = spooled = 0
        for piece in _pieces(lines, self.spool.quota_bytes // 32):
            if refused:
                refused += len(piece)
                continue
            appended, reason = self._append(piece, timeout, overflow)
            if appended:
                spooled += len(piece)
            else:
                refused = len(piece)
        if spooled < len(lines):  # some pieces refused: count those spooled, in order
            kinds = Counter(kinds_in_order[:spooled])
        if keys is not None:
            self.dedup.commit(keys[:spooled])
            self.dedup.release(keys[spooled:], replayed)
        if taken is not None:
            taken.update(kinds)
        for kind, n in kinds.items():
            m.parsed.labels(source, kind or "unknown").inc(n)
        if refused:
            self.refused(source, refused, reason)
            return False
        return True

    def _first_copies(self, events: Iterable, source: str, replayed: bool, seen_in_reply: Optional[dict]):
        """(``events`` without copies of records already spooled, the keys of the records kept)."""
        events = list(events)
        records = [e for e in events if type(e) is Record]
        keys = self.dedup.admit([r.data for r in records], replayed, seen_in_reply)
        copies = {id(r) for r, key in zip(records, keys) if key is None}
        if not copies:
            return events, keys
        dropped = Counter(r.data.get("notification") for r, key in zip(records, keys) if key is None)
        for kind, n in dropped.items():
            self.metrics.duplicates.labels(source, kind or "unknown").inc(n)
        return [e for e in events if id(e) not in copies], [k for k in keys if k is not None]

    def _append(self, piece: list, timeout: Optional[float], overflow: bool):
        """(appended, why not): a failing spool is retried each second for a stream (``timeout`` None)."""
        while True:
            try:
                return self.spool.append(piece, timeout, overflow), "spool_full"
            except OSError as exc:
                now = time.monotonic()
                if now - self._drop_logged.get("spool_error", -60.0) >= 60.0:
                    self._drop_logged["spool_error"] = now
                    log.error("spool append failed: %s%s", exc, " (stream input waits)" if timeout is None else "")
                if timeout is not None or self.spool.stopping:
                    return False, "spool_error"
                time.sleep(1.0)

    def noted(self, source: str, notes: list) -> None:
        """Records kept as sent but not as the schema expects (keys from a newer NeuVector, odd values)."""
        self.metrics.record_notes.labels(source).inc(len(notes))
        now = time.monotonic()
        if now - self._drop_logged.get((source, "notes"), -60.0) >= 60.0:  # once a minute per source
            self._drop_logged[(source, "notes")] = now
            log.warning("records from %s do not match NeuVector's schema, kept as sent: %s "
                        "(counted in nvsiem_record_notes_total)", source, "; ".join(sorted(set(notes))[:5]))

    def refused(self, source: str, count: int, reason: str) -> None:
        self.metrics.dropped.labels(source, reason).inc(count)
        now = time.monotonic()
        if now - self._drop_logged.get((source, reason), -60.0) >= 60.0:  # once a minute per cause
            self._drop_logged[(source, reason)] = now
            log.error("refusing input from %s: %s (%d frames this time; counted in nvsiem_dropped_frames_total)",
                      source, reason.replace("_", " "), count)

    # -- lifecycle ---------------------------------------------------------

    def open_sinks(self, urls: Iterable[str]) -> None:
        """A worker per ``--to`` URL, each reading the spool through its own cursor (``sink_id``).

        Two URLs naming one cursor (the same URL twice, or URLs differing only
        in a secret) are a ValueError, raised before any sink or reader is
        made: the second reader of a cursor would never move, and the spool
        would keep every segment from then on.
        """

        given = {}
        for url in urls:
            name = sink_id(url)
            if name in given:
                raise ValueError("sink given twice: --to %s and --to %s (URLs that differ only in secrets are one "
                                 "sink)" % (redact_url(given[name]), redact_url(url)))
            given[name] = url
        existing = set(self.spool.cursor_names())
        wanted = {}
        try:
            for name, url in given.items():
                _, types = split_collector_options(url)
                try:
                    sink = open_sink(url)
                except OSError as exc:
                    raise OSError("%s: %s" % (redact_url(url), exc.strerror or exc)) from None
                reader = self.spool.reader(name, types, sink.describe())
                wanted[name] = SinkWorker(sink, reader, self.metrics, self.config.retry_max)
        except BaseException:
            for worker in wanted.values():
                worker.close()
            raise
        forgotten = sorted(existing - set(wanted))
        for name in forgotten:
            lost = self.spool.forget_cursor(name)
            log.warning("sink %s is no longer configured: its cursor is removed (%d bytes it had not confirmed)",
                        name, lost)
        for name, worker in wanted.items():
            if forgotten and name not in existing and worker.reader.backlog_bytes:
                # A changed URL without name= is a new sink: it starts at the oldest record kept.
                log.warning("sink %s is new to this spool: it starts at the oldest spooled record and sends all "
                            "%d bytes kept; if it is %s under a new URL, give the sink ?name= in both to keep "
                            "its place", worker.label, worker.reader.backlog_bytes, " or ".join(forgotten))
        self.workers = list(wanted.values())
        for worker in self.workers:
            worker.start()

    def start_sources(self, sources: list) -> None:
        for source in sources:
            try:
                source.start()
            except OSError as exc:
                raise OSError("%s: cannot listen: %s" % (
                    source.label, os.strerror(exc.errno) if exc.errno else exc)) from None
            self.sources.append(source)

    def abandon(self) -> None:
        """Undo a start that failed: stop what started, and remove a spool this start created."""
        for source in self.sources:
            source.stop()
        for worker in self.workers:
            worker.drain(time.monotonic())
        for worker in self.workers:
            worker.join(5.0)
            worker.close()
        self._dead.close()
        if self.dedup is not None:
            self.dedup.close()
        self.spool.close()
        if self._made_spool:
            shutil.rmtree(self.config.spool, ignore_errors=True)

    def health(self):
        sources = {s.label: s.up for s in self.sources}
        sinks = {w.label: {"up": w.last_error is None, "error": w.last_error, "backlog_bytes": w.reader.backlog_bytes}
                 for w in self.workers}
        spool = {"bytes": self.spool.used_bytes, "quota": self.spool.quota_bytes,
                 "full": self.spool.full, "error": self.spool.error}
        ok = all(sources.values()) and not spool["full"] and not spool["error"]
        return ok, {"status": "ok" if ok else "unavailable", "sources": sources, "spool": spool, "sinks": sinks}

    def stop(self) -> None:
        """Stop receiving, make the spool durable, let sinks drain until ``drain_timeout``."""
        deadline = time.monotonic() + self.config.drain_timeout
        self.spool.stop_waiting()  # a source waiting for room must not hold up the stop
        for source in self.sources:
            source.stop()
        self.spool.sync()
        for worker in self.workers:
            worker.drain(deadline)
        for worker in self.workers:
            worker.join(max(0.0, deadline - time.monotonic()) + 5.0)
        left = {w.label: w.reader.backlog_bytes for w in self.workers if w.reader.backlog_bytes}
        if left:
            log.warning("stopped with undelivered records kept in the spool (delivered on next start): %s", left)
        for worker in self.workers:
            if worker.is_alive():
                # Still inside send(): closing the sink would wait for it (an ack timeout
                # can be longer than the drain). Its batch is not confirmed: it stays spooled.
                log.warning("sink %s was still sending at the drain deadline; its batch is sent again "
                            "on the next start", worker.label)
                continue
            worker.close()
        self._dead.close()
        if self.dedup is not None:
            self.dedup.close()
        self.spool.close()


class SinkWorker(threading.Thread):
    """Delivers one sink's share of the spool, in order, retrying with backoff."""

    def __init__(self, sink: Sink, reader, metrics: Metrics, retry_max: float) -> None:
        super().__init__(name="sink-" + reader.name, daemon=True)
        self.sink = sink
        self.reader = reader
        self.label = sink.describe()
        self.metrics = metrics
        self.retry_max = retry_max
        self.last_error: Optional[str] = None
        self._wake = threading.Event()
        self._draining = False
        self._deadline = float("inf")

    def drain(self, deadline: float) -> None:
        """Deliver what is spooled, then stop; give up at ``deadline``."""
        self._deadline = deadline
        self._draining = True
        self._wake.set()

    def run(self) -> None:
        delay = 0.0
        # Batches handed to the sink and not yet confirmed, oldest first: (end position, records).
        # Batches the sink's type filter emptied ride along, so the cursor passes them in order.
        self._window: Deque[Tuple[tuple, list]] = deque()
        while time.monotonic() < self._deadline:
            handed = 0
            if sum(1 for _, batch in self._window if batch) < self.sink.window:
                before = self.reader.position
                try:
                    batch = self.reader.read(self.sink.max_batch, self.sink.max_batch_bytes,
                                             timeout=0.0 if self._draining or self._window else 0.5)
                except OSError as exc:  # the spool volume failing: keep trying, loudly
                    self.last_error = "reading the spool: %s" % exc
                    log.error("sink %s: %s", self.label, self.last_error)
                    self._wake.wait(1.0)
                    continue
                if self.reader.position != before:
                    try:
                        if batch:
                            self.sink.submit(batch)
                    except Exception as exc:  # a sink bug must not stop delivery for good either
                        delay = self._retry(exc, delay)
                        continue
                    self._window.append((self.reader.position, batch))
                    handed = len(batch)
            if not self._window:
                if self._draining:
                    return
                continue
            try:
                done = self.sink.confirmed(0.0 if handed and len(self._window) < self.sink.window else 0.5)
            except Exception as exc:
                delay = self._retry(exc, delay)
                continue
            if not self._confirm(done):
                return
            if done:
                delay = 0.0
                if self.last_error is not None:
                    log.info("sink %s recovered", self.label)
                    self.last_error = None
            if self.sink.window == 1:
                self._gather(handed)

    def _confirm(self, done: int) -> bool:
        """Move the cursor past the ``done`` oldest batches confirmed (and the empty ones between)."""
        position = None
        while self._window and (done or not self._window[0][1]):
            position, batch = self._window.popleft()
            if batch:
                done -= 1
                for kind, n in Counter(map(notification_of, batch)).items():
                    self.metrics.delivered.labels(self.label, kind or "unknown").inc(n)
        return position is None or self._commit(position)

    def _retry(self, exc: Exception, delay: float) -> float:
        """The sink forgot what it had not confirmed: read it again from the cursor, after a pause."""
        self._window.clear()
        self.reader.rewind()
        delay = self._failed(exc, delay)
        self._wake.wait(min(delay, max(0.0, self._deadline - time.monotonic())))
        self._wake.clear()  # drain() wakes a waiting worker once
        return delay

    def _commit(self, position: tuple) -> bool:
        """Move the cursor to ``position``; False when the drain deadline passed first.

        Saving the cursor needs a little disk: on a full disk it is retried,
        the sink thread never dies of it (a batch sent again would be a duplicate, not a loss).
        """
        while True:
            try:
                self.reader.commit(position)
                return True
            except OSError as exc:
                message = "saving the cursor: %s" % exc
                if message != self.last_error:
                    log.error("sink %s: %s (retrying)", self.label, message)
                self.last_error = message
                if time.monotonic() >= self._deadline:
                    return False
                self._wake.wait(min(1.0, max(0.0, self._deadline - time.monotonic())))
                self._wake.clear()

    def _gather(self, delivered: int) -> None:
        """After a small batch, let records gather for a moment before the next read.

        Sources append every 64 KiB or so; read at once, each batch of a few
        dozen records would cost a cursor replace (a file create and rename)
        and a round trip to the sink, and under load that alone kept the sink
        behind. Records wait at most ``_GATHER`` seconds longer.
        """
        if delivered < self.sink.max_batch // 4 and not self._draining:
            self._wake.wait(_GATHER)

    def _failed(self, exc: Exception, delay: float) -> float:
        permanent = isinstance(exc, SinkError) and exc.permanent
        kind = "permanent" if permanent else ("transient" if isinstance(exc, SinkError) else "bug")
        self.metrics.sink_errors.labels(self.label, kind).inc()
        message = "%s: %s" % (type(exc).__name__, exc)
        # Permanent errors need a person to fix the configuration: retry slowly, keep everything.
        delay = self.retry_max if permanent else min(self.retry_max, max(0.2, delay * 2))
        if message != self.last_error:
            if permanent:
                log.error("sink %s refuses the batch until its configuration is fixed; the backlog stays spooled "
                          "and is tried again every %g s: %s", self.label, delay, message)
            else:
                log.error("sink %s failed (%s); the backlog stays spooled and is tried again with backoff: %s",
                          self.label, "a bug in the sink" if kind == "bug" else kind, message, exc_info=kind == "bug")
        self.last_error = message
        return delay

    def close(self) -> None:
        try:
            self.sink.close()
        except Exception as exc:
            log.warning("closing sink %s: %s", self.label, exc)
        self.reader.close()
