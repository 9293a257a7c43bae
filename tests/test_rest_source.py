"""neuvector+https://: the controller's REST rings read back into the records syslog gives.

A REST list element is the syslog JSON body's struct marshalled another
way (the REST reference, §5.2): keys sorted, no ``notification``, some
empty lists as ``[]`` that syslog leaves out, threats with ``cap_len``.
Each reference JSON-mode sample, rewritten that way by hand here, must
give its reference record, without the syslog header.
"""
import json

import pytest

from helpers.nvsamples import assert_same_records, expected_records, load_samples

from nvsiem.sources.rest import record_of

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
