"""Fixtures the test modules share; the helpers they import are in ``helpers/``."""
import pytest

from helpers.listen_harness import ControlledSink


@pytest.fixture
def controlled(monkeypatch):
    """``test://`` URLs open a ``ControlledSink``; the collectors appended to the list are stopped after the test."""
    from nvsiem.sinks import SINKS

    monkeypatch.setitem(SINKS, "test", "helpers.listen_harness:ControlledSink")
    ControlledSink.instances.clear()
    made = []
    yield made
    for sink in ControlledSink.instances:
        sink.set_mode("ok")
    for c in made:
        c.stop()


@pytest.fixture
def peers():
    """Peers a test starts (daemons, collector processes) go in this list and are stopped afterwards, passed or failed."""
    started = []
    yield started
    for peer in reversed(started):
        peer.stop()
