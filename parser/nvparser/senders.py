"""Who may send, shared by every listener of the pack (the collector's sources, the Splunk inputs).

``AllowList("10.0.0.0/8,fd00::/8")`` holds networks and single
addresses, IPv4 and IPv6; ``host in allow`` is the verdict for a peer
address as a socket reports it. ``RefusalLog`` decides which refusals are
worth a log line: the first per peer and reason each minute, so a flood
does not become a flood of log lines. Both keep their memory bounded
whatever the peers do. Pure logic on address strings: no I/O.
"""
import ipaddress
import time
from collections import OrderedDict

__all__ = ["AllowList", "RefusalLog"]

#: Peers remembered (verdicts, last log line); the oldest are forgotten first.
REMEMBERED = 4096
LOG_EVERY = 60.0


class AllowList:
    def __init__(self, spec: str, where: str) -> None:
        """ValueError naming ``where`` (the source or input) and the item that is not an address."""
        self.spec = spec
        self._verdicts = {}  # a UDP sender sends many datagrams from one address
        self.networks = []
        for item in filter(None, (part.strip() for part in spec.split(","))):
            try:
                self.networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise ValueError("%s: allow=%s: %r is not an address or a network (give networks such "
                                 "as 10.0.0.0/8 or fd00::/8, or single addresses)" % (where, spec, item)) from None
        if not self.networks:
            raise ValueError("%s: allow= is empty: give the addresses or networks that may send" % where)

    def __contains__(self, host: str) -> bool:
        verdict = self._verdicts.get(host)
        if verdict is None:
            if len(self._verdicts) >= REMEMBERED:
                self._verdicts.clear()
            verdict = self._verdicts[host] = self._allows(host)
        return verdict

    def _allows(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])  # fe80::1%eth0: the zone is not part of it
        except ValueError:
            return False
        # A dual-stack socket reports an IPv4 peer as ::ffff:10.1.2.3: it is 10.1.2.3.
        mapped = getattr(address, "ipv4_mapped", None)
        if mapped is not None:
            address = mapped
        return any(address in network for network in self.networks)


class RefusalLog:
    def __init__(self) -> None:
        self._logged: "OrderedDict[tuple, float]" = OrderedDict()

    def worth_logging(self, host: str, reason: str) -> bool:
        """True for the first refusal of ``host`` for ``reason`` in a minute."""
        key, now = (host, reason), time.monotonic()
        last = self._logged.get(key)
        if last is not None and now - last < LOG_EVERY:
            return False
        self._logged[key] = now
        self._logged.move_to_end(key)
        while len(self._logged) > REMEMBERED:
            self._logged.popitem(last=False)
        return True
