"""neuvector+https://: the controller's REST rings read back into the records syslog gives.

A REST list element is the syslog JSON body's struct marshalled another
way (the REST reference, §5.2): keys sorted, no ``notification``, some
empty lists as ``[]`` that syslog leaves out, threats with ``cap_len``.
Each reference JSON-mode sample, rewritten that way by hand here, must
give its reference record, without the syslog header.
"""
import argparse
import gc
import json
import os
from collections import Counter

import pytest
import trustme

from helpers.nvsamples import assert_same_records, expected_records, load_samples
from nvparser import json_dumps

from nvsiem.collector import Collector
from nvsiem.config import resolve
from nvsiem.sources import open_source
from nvsiem.sources import rest
from nvsiem.sources.rest import _cyclic_gc_paused, record_of

JSON_SAMPLES = [s for s in load_samples() if s.mode == "json"]
#: Lists REST writes as [] when empty, where syslog leaves the key out (§5.2).
REST_EMPTY_LISTS = {"audit": ("critical_vuls", "high_vuls", "medium_vuls"), "incident": ("file_name",)}


def rest_form(line: bytes):
    body = json.loads(line[line.index(b"{"):])
    notification = body.pop("notification")
    for key in REST_EMPTY_LISTS.get(notification, ()):
        body.setdefault(key, [])
    if notification == "threat":
        body["cap_len"] = 140
    return notification, dict(sorted(body.items()))


@pytest.mark.parametrize("sample", JSON_SAMPLES, ids=[s.id for s in JSON_SAMPLES])
def test_a_rest_element_gives_the_record_syslog_gives(sample):
    notification, element = rest_form(sample.lines[0])
    event = record_of(notification, element)
    want = [{k: v for k, v in r.items() if k != "syslog"} for r in expected_records(sample.id)]
    assert_same_records([event.data], want)
    assert list(event.data)[:2] == list(want[0])[:2]  # in struct order again, notification first


def test_keys_a_newer_neuvector_adds_are_kept_after_the_known_ones():
    event = record_of("event", {"level": "Info", "name": "Container.Start", "reported_timestamp": 5,
                                "zz_new_field": "x"})
    assert event.data["zz_new_field"] == "x" and list(event.data)[-1] == "zz_new_field"


@pytest.fixture
def collector(tmp_path):
    return Collector(resolve(argparse.Namespace(spool=str(tmp_path / "spool")), environ={}))


@pytest.mark.parametrize("query, error", [
    ("", "give apikey_file=FILE (name:secret), or username=U and password_file=FILE"),
    ("apikey=only-a-secret", "the API key must be name:secret"),
    ("username=u", "username= needs password_file=FILE"),
    ("apikey=a:b&username=u&password=p", "give apikey_file=FILE"),
    ("apikey=a:b&allow=10.0.0.0/8", "allow= is for sources that are sent to"),
    ("apikey=a:b&ca=/nonexistent/ca.pem", "cannot load ca=/nonexistent/ca.pem: No such file or directory"),
])
def test_a_wrong_url_is_refused_with_what_to_give(collector, query, error):
    with pytest.raises(ValueError, match="neuvector\\+https://nv:10443.*" + error.replace("(", "\\(").replace(
            ")", "\\)").replace("+", "\\+")):
        open_source("neuvector+https://nv:10443?" + query, collector)


def test_with_ca_that_ca_alone_is_trusted(collector, tmp_path):
    ca_file = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(ca_file))
    with_ca = open_source("neuvector+https://nv:10443?apikey=a:b&ca=%s" % ca_file, collector)
    assert len(with_ca.tls.get_ca_certs()) == 1
    assert with_ca.tls.minimum_version.name == "TLSv1_3"


def spooled_after_taking(collector, payload: bytes) -> list:
    """What a source spools from one /v1/log/security reply."""
    source = open_source("neuvector+https://nv:10443?apikey=a:b", collector)
    reader = collector.spool.reader("check")
    assert source._take_reply({"threats": "threat", "violations": "violation"}, {}, rest._lists(payload),
                              Counter())
    return reader.read(10_000, timeout=0)


def test_a_reply_is_decoded_a_piece_at_a_time_or_whole_to_the_same_records(collector, tmp_path, monkeypatch):
    """Cut into its elements (nvparser's accelerator) or decoded whole: the same records, in the same order."""
    forms = [rest_form(sample.lines[0]) for sample in JSON_SAMPLES]
    threats = [element for kind, element in forms if kind == "threat"]
    violations = [element for kind, element in forms if kind == "violation"]
    assert threats and violations
    # Copies told apart, more than one piece of each list.
    threats = [dict(t, id="t%d" % n) for n in range(700) for t in threats][:2500]
    violations = [dict(v, id="v%d" % n, reported_timestamp=n) for n in range(1200) for v in violations][:1200]
    payload = json_dumps({"threats": threats, "violations": violations})
    lists = rest._lists(payload)
    if os.environ.get("NVSIEM_REQUIRE_SPEEDUPS") or type(lists["threats"][0]) is bytes:
        assert all(type(e) is bytes for e in lists["threats"] + lists["violations"])
    cut = spooled_after_taking(collector, payload)
    monkeypatch.setattr(rest, "json_lists", lambda payload: None)
    assert rest._lists(payload) == {"threats": threats, "violations": violations}
    other = Collector(resolve(argparse.Namespace(spool=str(tmp_path / "spool-whole")), environ={}))
    assert spooled_after_taking(other, payload) == cut and len(cut) == len(threats) + len(violations)


def test_list_elements_that_are_not_objects_are_dead_letters_and_the_rest_is_spooled(collector):
    threat = next(element for kind, element in map(rest_form, (s.lines[0] for s in JSON_SAMPLES)) if kind == "threat")
    payload = json_dumps({"threats": [5, threat, "x"], "violations": [[1]]})
    spooled = spooled_after_taking(collector, payload)
    assert [json.loads(line)["notification"] for line in spooled] == ["threat"]
    assert collector.metrics.dead_letters.labels("neuvector+https://nv:10443")._value.get() == 3


def test_the_pause_of_the_cyclic_gc_nests_and_always_ends():
    assert gc.isenabled()
    with _cyclic_gc_paused():
        with _cyclic_gc_paused():  # two sources at once
            assert not gc.isenabled()
        assert not gc.isenabled()  # the other one is still at it
    assert gc.isenabled()
    with pytest.raises(ValueError):
        with _cyclic_gc_paused():
            raise ValueError("a reply that is not JSON")
    assert gc.isenabled()
