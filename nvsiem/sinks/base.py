"""The sink interface every destination implements.

The collector drains its on-disk spool into each sink from one thread per
sink. A sink sees batches of records already serialised as compact UTF-8
JSON (one record per item, no trailing newline): the file sink writes them
as they are, network sinks decode what they need.
"""
import abc
from typing import ClassVar, Sequence
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

#: Query parameters whose name holds one of these are secrets: masked in logs, read from files or env.
SECRET_WORDS = ("token", "key", "secret", "password")


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

    #: URL schemes this sink serves.
    schemes: ClassVar[Sequence[str]] = ()
    #: Largest batch the collector hands to ``send``: records, and bytes.
    max_batch: int = 1000
    max_batch_bytes: int = 4 << 20

    def __init__(self, url: str) -> None:
        self.url = url

    @abc.abstractmethod
    def send(self, batch: Sequence[bytes]) -> None:
        """Deliver ``batch`` and return only once the destination confirmed all of it.

        Raise ``SinkError`` otherwise. The spool advances past the batch only
        when this returns, so a record is delivered at least once.
        """

    def close(self) -> None:
        """Release connections and files. Called once, after the last ``send``."""

    def describe(self) -> str:
        """The URL with secrets removed, for logs and metrics labels."""
        return redact_url(self.url)


def redact_url(url: str) -> str:
    """Drop userinfo and secret-looking query values from a URL."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    query = [
        (k, "***" if any(s in k.lower() for s in SECRET_WORDS) else v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
    ]
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(query, safe="/,:*"), ""))
