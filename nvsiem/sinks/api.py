"""The public sink API: what a sink plugin implements and may use.

A sink is a class named by a URL scheme through the ``nvsiem.sinks`` entry
point group (see ``nvsiem.sinks``); it imports only this module and the
parser's public API.

The collector drains its on-disk spool into each sink from one thread per
sink. A sink sees batches of records already serialised as compact UTF-8
JSON (one record per item, no trailing newline): the file sink writes them
as they are, network sinks decode what they need.
"""
import abc
import ssl
from typing import Optional, Sequence

from nvparser import json_loads

from ..options import parse_bool, parse_size, redact_url, resolve_secrets

__all__ = ["Sink", "SinkError", "decode_record", "parse_bool", "parse_size", "redact_url", "resolve_secrets",
           "tls_client_context", "unparsed_record"]


class SinkError(Exception):
    """A batch was not confirmed by the destination.

    ``permanent`` marks errors that retrying as-is cannot fix (a bad token,
    an unknown index, a wrong shared key): the collector keeps the backlog on
    disk, logs the reason loudly and retries slowly, so fixing the
    configuration and restarting loses nothing.
    """

    def __init__(self, message: str, permanent: bool = False):
        super().__init__(message)
        self.permanent = permanent


class Sink(abc.ABC):
    """A destination named by a URL (``file:///var/log/nv.jsonl``, ``fluentd://host:24224`` ...)."""

    #: Largest batch the collector hands to ``send``: records, and bytes.
    max_batch: int = 1000
    max_batch_bytes: int = 4 << 20
    #: Batches the collector hands over before the first is confirmed. A sink
    #: whose destination confirms late (indexer acknowledgement) sets more and
    #: implements ``submit`` and ``confirmed``; the others just ``send``.
    window: int = 1

    def __init__(self, url: str) -> None:
        self.url = url
        self._sent = 0

    @abc.abstractmethod
    def send(self, batch: Sequence[bytes]) -> None:
        """Deliver ``batch`` and return only once the destination confirmed all of it.

        Raise ``SinkError`` otherwise. The spool advances past the batch only
        when this returns, so a record is delivered at least once.
        """

    def submit(self, batch: Sequence[bytes]) -> None:
        """Take ``batch`` for delivery; with ``window`` > 1, return before it is confirmed.

        Raise ``SinkError`` when nothing more can be taken: the sink then
        forgets every batch it has not confirmed, and the collector hands
        them over again.
        """
        self.send(batch)
        self._sent += 1

    def confirmed(self, wait: float) -> int:
        """How many of the oldest batches taken are now confirmed, in order (waiting up to ``wait``).

        Raise ``SinkError`` as ``submit`` does. The spool advances past each
        batch counted, never past one that is not.
        """
        done, self._sent = self._sent, 0
        return done

    def close(self) -> None:
        """Release connections and files. Called once, after the last ``send``."""

    def describe(self) -> str:
        """The URL with secrets removed, for logs and metrics labels."""
        return redact_url(self.url)


def decode_record(item: bytes) -> dict:
    """The record a spooled item holds; one that is not a JSON object becomes an ``unparsed`` record.

    Not the sink's to judge: forwarding the bytes visibly, with the reason,
    keeps the spool moving and loses nothing.
    """
    try:
        record = json_loads(item)
    except ValueError as exc:
        error = "not valid JSON: %s" % exc
    else:
        if isinstance(record, dict):
            return record
        error = "not a JSON object"
    return unparsed_record(item, error)


def unparsed_record(item: bytes, error: str) -> dict:
    """A spooled item a sink cannot send as it is, as a record it can: the bytes shown, and why."""
    return {"notification": "unparsed", "message": bytes(item).decode("utf-8", "replace"), "error": error}


def tls_client_context(ca: Optional[str], cert: Optional[str], key: Optional[str], verify: bool) -> ssl.SSLContext:
    """A client context: the system's CAs or ``ca``, a client certificate if given; ``verify=False`` checks nothing.

    Raises ``ValueError`` naming the option whose files cannot be loaded.
    """
    try:
        context = ssl.create_default_context(cafile=ca)
        if not verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if cert:
            context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError("cannot load %s: %s" % ("cert=/key=" if cert else "ca=", exc)) from None
    return context
