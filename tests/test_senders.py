"""nvparser.senders: the allow-list and the refusal log every listener of the pack uses."""
import pytest

from nvparser import senders
from nvparser.senders import AllowList, RefusalLog


def test_allow_list_takes_networks_single_addresses_and_ipv4_mapped_ipv6():
    allow = AllowList("10.0.0.0/8, 192.0.2.7,fd00::/8", "tcp://x")
    assert "10.200.3.4" in allow and "192.0.2.7" in allow and "fd12::1" in allow
    assert "::ffff:10.1.2.3" in allow  # a dual-stack socket's view of 10.1.2.3
    assert "192.0.2.8" not in allow and "11.0.0.1" not in allow and "fe80::1%eth0" not in allow
    assert "::ffff:11.0.0.1" not in allow and "not-an-address" not in allow


@pytest.mark.parametrize("spec, wrong", [("10.0.0.0/33", "10.0.0.0/33"), ("10.0.0.1,host.example", "host.example"),
                                         (",", "empty")])
def test_a_bad_allow_list_is_refused_at_start_naming_the_item(spec, wrong):
    with pytest.raises(ValueError) as error:
        AllowList(spec, "tcp://0.0.0.0:514")
    assert wrong in str(error.value) and "tcp://0.0.0.0:514" in str(error.value)


def test_the_first_refusal_per_peer_and_reason_each_minute_is_logged(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(senders.time, "monotonic", lambda: now[0])
    refusals = RefusalLog()
    assert refusals.worth_logging("10.0.0.1", "not_allowed")
    assert not refusals.worth_logging("10.0.0.1", "not_allowed")
    assert refusals.worth_logging("10.0.0.1", "connection_limit")  # another reason
    assert refusals.worth_logging("10.0.0.2", "not_allowed")  # another peer
    now[0] += senders.LOG_EVERY + 1
    assert refusals.worth_logging("10.0.0.1", "not_allowed")


def test_memory_stays_bounded_whatever_the_peers(monkeypatch):
    monkeypatch.setattr(senders, "REMEMBERED", 100)
    refusals, allow = RefusalLog(), AllowList("10.0.0.0/8", "udp://x")
    for n in range(1000):
        host = "10.0.%d.%d" % divmod(n, 256)
        assert refusals.worth_logging(host, "not_allowed")
        assert host in allow
    assert len(refusals._logged) <= 100 and len(allow._verdicts) <= 100
