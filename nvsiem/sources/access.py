"""Who may send: ``?allow=`` address lists, and refusals counted and logged sparingly.

A peer outside the list is refused before any of its bytes is read. Each
refusal is counted (``nvsiem_refused_total{source, reason}``) and logged
once per peer and reason per minute, never per packet: a flood must not
turn into a flood of log lines. The rules themselves are
``nvparser.senders``, which the Splunk app's inputs use too.
"""
import logging
from typing import Optional

from nvparser.senders import AllowList, RefusalLog

log = logging.getLogger("nvsiem.sources")

__all__ = ["AllowList", "Gate"]


class Gate:
    """One source's door: the allow-list, and the count and log of what it turns away."""

    def __init__(self, label: str, allow: Optional[str], counter=None) -> None:
        """``counter``: the ``nvsiem_refused`` metric, or None where the caller counts (the UDP receiver)."""
        self.label = label
        self.allow = AllowList(allow, label) if allow is not None else None
        self._counter = counter
        self._log = RefusalLog()

    def admits(self, host: str) -> bool:
        if self.allow is None or host in self.allow:
            return True
        self.refuse(host, "not_allowed", "not in allow=%s" % self.allow.spec)
        return False

    def refuse(self, host: str, reason: str, why: str, count: int = 1) -> None:
        """Count ``count`` refusals of ``host``; log the first of each minute."""
        if self._counter is not None:
            self._counter.labels(self.label, reason).inc(count)
        if self._log.worth_logging(host, reason):
            log.warning("%s: refused %s: %s (counted in nvsiem_refused_total; logged once a minute per peer)",
                        self.label, host, why)
