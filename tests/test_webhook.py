"""Webhook bodies: the format is told from the body, the type from the keys."""
import json

import pytest

from nvparser import DeadLetter, Record, parse_webhook

EVENT_KV = ("name=Container.Start,level=Info,reported_timestamp=1741939083,reported_at=2025-03-14T07:58:03Z,"
            "cluster_name=prod,host_id=,host_name=,enforcer_id=,enforcer_name=,controller_id=,controller_name=,"
            "workload_id=w,workload_name=web,workload_domain=shop,workload_image=nginx,workload_service=web.shop,"
            "category=WORKLOAD,user=,user_roles=map[],user_addr=,user_session=,message=Container.Start")


def test_key_value_body_with_comment_holding_commas():
    body = "level=INFORMATIONAL,cluster=prod,comment=page SOC, then ticket," + EVENT_KV
    event = parse_webhook(body.encode(), "text/plain; charset=us-ascii")
    assert type(event) is Record
    # Container lifecycle events are 'activity' on syslog; webhooks call them event.
    assert event.data["notification"] == "activity"
    assert event.data["webhook"] == {"format": "kv", "cluster": "prod", "comment": "page SOC, then ticket",
                                     "level": "INFORMATIONAL"}
    assert event.data["level"] == "Info" and event.data["user_roles"] is None


def test_json_body_with_an_unescaped_quote_in_the_comment():
    record = '"name":"User.Login","level":"Info","category":"AUTH","user":"admin","message":"ok"}'
    body = '{"cluster":"prod","comment":"say "hi" \\o/",' + record
    with pytest.raises(ValueError):
        json.loads(body)  # what NeuVector sends is not valid JSON...
    event = parse_webhook(body.encode(), "application/json")
    assert type(event) is Record  # ...and is still read whole
    assert event.data["webhook"] == {"format": "json", "cluster": "prod", "comment": 'say "hi" \\o/'}
    assert event.data["notification"] == "event" and event.data["user"] == "admin"


def test_old_versions_sent_key_value_bodies_as_application_json():
    body = "level=INFORMATIONAL,cluster=prod," + EVENT_KV
    event = parse_webhook(body.encode(), "application/json")
    assert type(event) is Record and event.data["webhook"]["format"] == "kv"


@pytest.mark.parametrize("body,reason", [
    (b"", "empty"),
    (b"hello", "must start 'level=<LEVEL>,cluster=<name>,'"),
    (b"level=INFO,cluster=x,foo=bar", "must start"),
    (b"level=INFO,cluster=x,name=y,level=Info", "cannot tell the notification type"),
    (b'{"text": "no kv here", "username": "NeuVector - c"}', "without the 'notification=' text"),
    (b'{"cluster":"c","level":"Info", "bad json"', "invalid JSON"),
    (b"{\"a\": 1}", "neither"),
])
def test_bad_bodies_are_dead_letters(body, reason):
    event = parse_webhook(body)
    assert type(event) is DeadLetter and reason in event.reason
    assert event.raw == body


@pytest.mark.parametrize("comment", ["raise to level=HIGH, then page", "x,level=Info,y", "see ,name=a,level=b"])
def test_a_comment_holding_name_or_level_keys_stays_whole(comment):
    # The record starts where NeuVector's key order does: [name,] level, reported_timestamp.
    kv = parse_webhook(("level=INFORMATIONAL,cluster=prod,comment=%s,%s" % (comment, EVENT_KV)).encode())
    assert type(kv) is Record and kv.data["webhook"]["comment"] == comment
    assert kv.data["name"] == "Container.Start" and kv.data["reported_timestamp"] == 1741939083
    record = ('"name":"User.Login","level":"Info","reported_timestamp":1741939212,"reported_at":"2025-03-14T07:60:12Z",'
              '"cluster_name":"prod","category":"AUTH","user":"admin","message":"ok"}')
    comment = comment.replace(",", '","').replace("=", '":"')  # the same trap in JSON's form
    js = parse_webhook(('{"cluster":"prod","comment":"%s",%s' % (comment, record)).encode())
    assert type(js) is Record and js.data["webhook"]["comment"] == comment
    assert js.data["name"] == "User.Login" and js.data["user"] == "admin"
