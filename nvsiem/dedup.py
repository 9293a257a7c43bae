"""One copy of each NeuVector event, between the sources and the spool.

The same event can reach the collector twice: from syslog and again from
the controller's REST API (``sources/rest.py``), or from NeuVector's own
re-sends after a reconnect. What identifies an event depends on its type:

* threats, incidents and violations carry an ``id`` the enforcer made for
  that one report (aggregated repeats are new reports with new ids): equal
  ids are the same event, wherever it came from;
* events, activities, audits (and violations without an id) have none:
  they are keyed on the fields their source sets (``identity``), leaving
  out the names each controller looks up itself. Two real events can be
  equal on all of them within one second, so keys are counted, not kept in
  a set, per way in: pushed (syslog, webhooks) and replayed (REST). A REST
  reply brings only the occurrences beyond what was pushed, and a pushed
  record is taken while no more were pushed than replayed. One REST scan
  report stands for the per-CVE (and per-layer) syslog records of the same
  scan, which share its key: those are always kept, and the report is
  taken as seen.

Records only probably the same are never merged away. The window is
bounded (the newest ``capacity`` keys) and kept in ``dedup.log`` in the
spool directory, appended as records are spooled, so it survives a
``kill -9``; a record spooled just before a kill may come once more
(at-least-once), none is lost.
"""
import hashlib
import os
import threading
from collections import OrderedDict
from typing import List, Optional, Sequence, Tuple

from nvparser import json_dumps

#: Six rings of 4,096 on the controller, twice over: what one REST read can bring back.
CAPACITY = 6 * 4096 * 2
FILE = "dedup.log"

_IDS = frozenset(("threat", "incident", "violation"))
_EVENT_FIELDS = ("name", "category", "level", "reported_timestamp", "host_id", "enforcer_id", "controller_id",
                 "workload_id", "user", "user_addr", "user_session", "rest_method", "rest_request", "rest_body",
                 "message")
_VIOLATION_FIELDS = ("client_id", "server_id", "server_port", "ip_proto", "policy_id", "reported_timestamp")
_SCAN_FIELDS = ("name", "reported_timestamp", "workload_id", "host_id", "image_id", "registry", "repository", "tag",
                "cvedb_version")
_COMPLIANCE_FIELDS = ("name", "reported_timestamp", "workload_id", "host_id", "image_id", "items")
_ADMISSION_FIELDS = ("name", "reported_timestamp", "user", "workload_domain", "workload_image", "message", "count",
                     "aggregation_from")
#: Keys only syslog's per-CVE ("single CVE per syslog") and per-layer ("CVE in layers") copies of a scan carry.
_COPY_KEYS = ("package_ver", "fixed_ver", "packages", "image_layer_digest")
_LAMBDA_FIELDS = ("name", "reported_timestamp", "workload_id", "region", "project_name")


def identity(record: dict) -> Tuple[str, tuple]:
    """(how the record is told apart, the fields that tell it).

    ``id``: an id; ``fields``: the fields its source sets; ``copies``: a
    per-CVE or per-layer syslog copy of a scan report, keyed as the report.
    """
    notification = record.get("notification")
    if notification in _IDS and record.get("id"):
        return "id", (notification, record["id"])
    kind = "fields"
    if notification == "violation":
        fields = _VIOLATION_FIELDS
    elif notification == "audit":
        fields = _audit_fields(record.get("name") or "")
        if fields is _SCAN_FIELDS and any(k in record for k in _COPY_KEYS):
            kind = "copies"
    else:
        fields = _EVENT_FIELDS
    values = (notification, *map(record.get, fields))
    if list in map(type, values):
        # An absent list and an empty one are the same (REST writes [] where syslog leaves the key out).
        values = tuple(map(_normal, values))
    return kind, values


def _audit_fields(name: str) -> Sequence[str]:
    if name.endswith(".Scan.Report"):
        return _SCAN_FIELDS
    if name.startswith("Admission.Control."):
        return _ADMISSION_FIELDS
    if name.startswith("AwsLambda."):
        return _LAMBDA_FIELDS
    return _COMPLIANCE_FIELDS


def _normal(value):
    if isinstance(value, list):
        return tuple(value) or None
    return value


def _digest(by_id: bool, fields: tuple) -> str:
    if by_id:  # (notification, id): the common case, hashed without an encoder
        data = ("%s\0%s" % fields).encode("utf-8", "surrogatepass")
    else:
        data = json_dumps(fields)
    return hashlib.blake2b(data, digest_size=12, person=b"id" if by_id else b"fields").hexdigest()


class Dedup:
    """The window of keys seen, with a count each; thread-safe."""

    def __init__(self, directory: str, capacity: int = CAPACITY) -> None:
        self.path = os.path.join(directory, FILE)
        self.capacity = capacity
        self._seen: "OrderedDict[str, List[int]]" = OrderedDict()  # key -> [pushed, replayed]
        self._lock = threading.Lock()
        self._lines = 0
        self._load()
        self._file = open(self.path, "ab", buffering=0)

    def admit(self, records: Sequence[dict], replayed: bool, seen_in_reply: Optional[dict] = None
              ) -> List[Optional[str]]:
        """For each record its key to ``commit`` once it is spooled, or None: a copy, to be dropped.

        ``replayed``: the records are a REST reply, which holds again what
        syslog already brought; otherwise they are pushed (syslog, webhooks),
        where only a repeated ``id`` is a copy. A reply admitted in pieces
        passes the same ``seen_in_reply`` (a dict, empty at first) with each.
        """
        keys: List[Optional[str]] = []
        in_reply = {} if seen_in_reply is None else seen_in_reply
        seen = self._seen
        with self._lock:
            for record in records:
                kind, fields = identity(record)
                key = _digest(kind == "id", fields)  # a copy is keyed as its report
                counts = seen.get(key)
                if counts is None:
                    counts = seen[key] = [0, 0]
                else:
                    seen.move_to_end(key)
                pushed, replays = counts
                if kind == "id":
                    take = not (pushed or replays)
                    counts[1 if replayed else 0] += take
                elif replayed:  # the n-th in this reply: new beyond what either way brought
                    nth = in_reply[key] = in_reply.get(key, 0) + 1
                    take = nth > max(pushed, replays)
                    counts[1] = max(replays, nth)
                else:  # pushed: new once more were pushed than replayed
                    counts[0] += 1
                    take = kind == "copies" or counts[0] > replays
                keys.append(key if take else None)
        return keys

    def commit(self, keys: Sequence[Optional[str]]) -> None:
        """Persist the window after the records of ``keys`` were spooled."""
        taken = [k for k in keys if k is not None]
        if not taken:
            return
        with self._lock:
            lines = b"".join(b"%s %d %d\n" % ((k.encode(),) + tuple(self._seen.get(k, (1, 0)))) for k in taken)
            self._file.write(lines)
            self._lines += len(taken)
            while len(self._seen) > self.capacity:
                self._seen.popitem(last=False)
            if self._lines > 2 * self.capacity:
                self._compact()

    def release(self, keys: Sequence[Optional[str]], replayed: bool) -> None:
        """The records of ``keys`` (as ``admit`` took them) were not spooled (refused): they were never seen."""
        with self._lock:
            for key in keys:
                counts = self._seen.get(key)
                if counts is not None:
                    counts[1 if replayed else 0] -= 1
                    if counts[0] <= 0 and counts[1] <= 0:
                        del self._seen[key]

    def close(self) -> None:
        self._file.close()

    def _load(self) -> None:
        try:
            with open(self.path, "rb") as f:
                for line in f:
                    parts = line.split()
                    if not line.endswith(b"\n") or len(parts) != 3 or not (parts[1] + parts[2]).isdigit():
                        continue  # a line a kill cut short: that record may come once more
                    k, old = parts[0].decode(), self._seen.get(parts[0].decode(), [0, 0])
                    self._seen[k] = [max(old[0], int(parts[1])), max(old[1], int(parts[2]))]
                    self._seen.move_to_end(k)
                    self._lines += 1
        except FileNotFoundError:
            return
        while len(self._seen) > self.capacity:
            self._seen.popitem(last=False)

    def _compact(self) -> None:
        """Rewrite the log as the window holds it now (atomically: a crash leaves the old or the new)."""
        tmp = self.path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(b"".join(b"%s %d %d\n" % (k.encode(), pushed, replays) for k, (pushed, replays) in self._seen.items()))
            f.flush()
            os.fsync(f.fileno())
        self._file.close()
        os.replace(tmp, self.path)
        self._file = open(self.path, "ab", buffering=0)
        self._lines = len(self._seen)
