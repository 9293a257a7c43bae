"""``udp://HOST:PORT``: one syslog frame per datagram.

A blocking ``recvfrom`` thread does nothing but move datagrams from the
socket into a queue, with ``SO_RCVBUF`` raised (8 MiB asked by default) so
bursts wait in the kernel rather than being dropped; a second thread parses
and spools them in batches. asyncio's default datagram transport reads one
datagram per loop iteration and loses a large share at 50,000/s, so it is
not used. If the spool refuses a batch (quota reached) the datagrams are
counted as dropped and logged: UDP has no way to push back.
"""
import collections
import socket
import time

from .base import Source, log

_BATCH = 2000
_QUEUE_MAX = 200_000  # datagrams received but not parsed yet (about 200 MB of 1 KB records)


class UdpSource(Source):
    def start(self) -> None:
        host, port = self.address()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        wanted = self.config.udp_rcvbuf
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, wanted)
        got = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        if got < wanted:  # Linux reports twice what it grants
            log.warning("%s: SO_RCVBUF is %d bytes, not the %d asked: raise net.core.rmem_max "
                        "(sysctl -w net.core.rmem_max=%d) or bursts will be dropped by the kernel",
                        self.label, got, wanted, wanted)
        self.sock.bind((host, port))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self._queue = collections.deque()
        self._receiving_done = False
        self.up = True
        self.spawn(self._receive, "udp-recv-%d" % self.port)
        self.spawn(self._parse, "udp-parse-%d" % self.port)

    def _receive(self) -> None:
        recv, queue, put = self.sock.recv, self._queue, self._queue.append
        while not self._stopping.is_set():
            try:
                datagram = recv(65536)
                if len(queue) < _QUEUE_MAX:
                    put(datagram)
                else:  # the parser fell this far behind: bound memory, count the loss
                    self.collector.refused(self.label, 1, "parser_behind")
            except socket.timeout:
                continue
            except OSError as exc:
                if self._stopping.is_set():
                    break
                log.error("%s: receive failed: %s", self.label, exc)
                time.sleep(0.1)
        self._receiving_done = True

    def _parse(self) -> None:
        parser, queue = self.parser(), self._queue
        while True:
            if not queue:
                if self._receiving_done:
                    break
                time.sleep(0.005)
                continue
            datagrams = [queue.popleft() for _ in range(min(_BATCH, len(queue)))]
            events = []
            for datagram in datagrams:
                events += parser.feed_datagram(datagram)
            self.received(sum(map(len, datagrams)))
            self.collector.accept(events, self.label, timeout=0)

    def stop(self) -> None:
        super().stop()
        self.sock.close()
