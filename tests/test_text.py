"""Text mode: cutting values at real keys, and typing them like JSON mode does."""

from hypothesis import given
from hypothesis import strategies as st

from nvparser import parse_frame
from nvparser._text import parse_pairs
from nvparser.schema import FIELDS

from helpers.nvsamples import load_samples


def record(body: str):
    event = parse_frame(body.encode())
    assert type(event).__name__ == "Record", event
    return event


COMMON = "level=Warning,reported_timestamp=1741944405,reported_at=2025-03-14T09:26:45Z,cluster_name=c,host_id=,host_name=,enforcer_id=,enforcer_name="


def test_fake_key_inside_the_last_value_stays_in_it():
    # message is the threat's last key; ', application=2001' sits inside it
    body = ("notification=threat,name=SQL.Injection," + COMMON + ",id=x,threat_id=2022,client_workload_id=a,"
            "client_workload_name=a,server_workload_id=b,server_workload_name=b,severity=Critical,action=deny,count=1,"
            "ether_type=2048,client_port=1,server_port=3306,server_conn_port=3306,icmp_code=0,icmp_type=0,ip_proto=6,"
            "client_ip=1.1.1.1,server_ip=2.2.2.2,application=MySQL,sensor=,group=,target=server,monitor=false,"
            "message=SQL Injection, application=2001")
    data = record(body).data
    assert data["application"] == "MySQL"
    assert data["message"] == "SQL Injection, application=2001"
    assert data["threat_id"] == 2022 and data["monitor"] is False


def test_fake_key_in_a_middle_value_loses_to_the_real_one_later():
    # audit: message comes before user and count; the message quotes both
    body = ("notification=audit,name=Admission.Control.Denied," + COMMON + ",workload_domain=default,"
            "workload_image=nginx, redis,critical_vul_cnt=0,high_vul_cnt=0,medium_vul_cnt=0,"
            "message=denied because criteria: (user=bob, count=5),user=alice,count=3")
    data = record(body).data
    assert data["message"] == "denied because criteria: (user=bob, count=5)"
    assert data["user"] == "alice"
    assert data["count"] == 3
    assert data["workload_image"] == "nginx, redis"


def test_unknown_key_from_a_newer_version_is_kept_and_noted():
    body = ("notification=violation," + COMMON + ",id=,client_id=a,client_name=a,server_id=b,server_name=b,"
            "server_port=80,ip_proto=6,applications=[HTTP],servers=[],sessions=1,policy_action=violate,"
            "policy_id=0,client_ip=1.1.1.1,server_ip=2.2.2.2,fqdn=,xff=false,nbe=false,zone=eu-west-1")
    event = record(body)
    assert event.data["zone"] == "eu-west-1"
    assert event.data["nbe"] is False
    assert event.notes == ("unknown key 'zone'",)


def test_unknown_key_inside_free_text_stays_in_the_value():
    body = ("notification=incident,name=Process.Profile.Violation," + COMMON + ",id=x,proc_name=sh,proc_path=/bin/sh,"
            "proc_cmd=curl http://h/x?limit=50,offset=100,action=violate,rule_id=r,message=m")
    event = record(body)
    assert event.data["proc_cmd"] == "curl http://h/x?limit=50,offset=100"
    assert "offset" not in event.data and event.notes == ()


def test_values_that_do_not_fit_their_type_are_kept_and_noted():
    body = ("notification=violation," + COMMON + ",id=,client_id=a,client_name=a,server_id=b,server_name=b,"
            "server_port=http,ip_proto=6,applications=HTTP,servers=[],sessions=1,policy_action=violate,"
            "policy_id=0,client_ip=,server_ip=,fqdn=,xff=maybe,nbe=false")
    event = record(body)
    assert event.data["server_port"] == "http"
    assert event.data["applications"] == "HTTP"
    assert event.data["xff"] == "maybe"
    assert len(event.notes) == 3


def test_float_fields_are_floats_in_both_modes():
    text = ("notification=audit,name=Container.Scan.Report," + COMMON + ",critical_vul_cnt=1,high_vul_cnt=0,"
            "medium_vul_cnt=0,message=,score=7.5,score_v3=10")
    data = record(text).data
    assert data["score_v3"] == 10.0 and type(data["score_v3"]) is float
    assert data["score"] == 7.5
    json_body = '{"notification": "audit", "name":"x","level":"Info","critical_vul_cnt":1,"high_vul_cnt":0,"medium_vul_cnt":0,"message":"","score_v3":10}'
    assert type(record(json_body).data["score_v3"]) is float


def test_unknown_notification_type_is_kept_as_text():
    event = record("notification=posture,name=x,score=5")
    assert event.data == {"notification": "posture", "name": "x", "score": "5"}
    assert "unknown notification type" in event.notes[0]


def test_a_frame_full_of_fake_keys_parses():
    body = "notification=event,name=x,level=Info,message=" + ",a=1" * 20000
    data = record(body).data
    assert data["message"] == ",a=1" * 20000


def test_integers_go_never_prints_are_kept_as_text_and_noted():
    # Go prints integers in decimal (§3.2): int()'s "_", spaces, "+" and
    # non-ASCII digits are not integers NeuVector sent.
    from nvparser._decode import _parse
    from nvparser._fast import fast_record

    head = "<134>1 2025-03-14T09:26:47Z h /usr/local/bin/controller 13 neuvector - "
    body = ("notification=violation," + COMMON + ",id=,client_id=a,client_name=a,server_id=b,server_name=b,"
            "server_port=%s,ip_proto=6,applications=[HTTP],servers=[],sessions=1,policy_action=violate,"
            "policy_id=0,client_ip=,server_ip=,fqdn=,xff=false,nbe=false")
    for value in ("4_43", " 443", "+443", "\u0664\u0664\u0663", "443 ", "--443", "-"):
        frame = (head + body % value).encode()
        assert fast_record(frame, 0) is None, value  # the fast path leaves it to the general one
        event = record(head + body % value)
        assert event.data["server_port"] == value
        assert event.notes == ("server_port is not an integer: %r" % value,)
    for value, number in (("443", 443), ("-1", -1)):
        frame = (head + body % value).encode()
        assert fast_record(frame, 0) == _parse(frame, 0)
        assert record(head + body % value).data["server_port"] == number


def test_floats_go_never_prints_are_kept_as_text_and_noted():
    # Go's %v prints a float32 as 10, 7.5 or 1e+06 (§3.2): float()'s "_",
    # spaces, "nan" and non-ASCII digits are not numbers NeuVector sent.
    from nvparser._decode import _parse
    from nvparser._fast import fast_record
    from helpers.nvsamples import load_samples

    (line,) = [s.lines[0] for s in load_samples() if b"score_v3=10," in s.lines[0]]
    for value in ("1_0", " 7.5", "nan", "\u0667.\u0665", "7.5 ", "+7.5", "5.", ".5"):
        frame = line.replace(b"score_v3=10,", b"score_v3=" + value.encode() + b",")
        assert fast_record(frame, 0) is None, value  # the fast path leaves it to the general one
        event = parse_frame(frame)
        assert event.data["score_v3"] == value
        assert event.notes == ("score_v3 is not a number: %r" % value,)
    for value, number in (("7.5", 7.5), ("10", 10.0), ("-0.5", -0.5), ("1e+06", 1e6)):
        frame = line.replace(b"score_v3=10,", b"score_v3=" + value.encode() + b",")
        assert parse_frame(frame).data["score_v3"] == number and not parse_frame(frame).notes
        assert (fast_record(frame, 0) or _parse(frame, 0)) == _parse(frame, 0)


# -- a key that appears twice: the first is the key, no byte is lost ---------

def test_a_value_holding_its_own_key_stays_whole():
    data = record("notification=event,name=Container.Start,level=Info,reported_timestamp=1,reported_at=x,"
                  "cluster_name=shop, EU,cluster_name= (prod),host_id=h").data
    assert data["reported_at"] == "x" and data["cluster_name"] == "shop, EU,cluster_name= (prod)"
    assert data["host_id"] == "h"


def test_a_later_value_holding_an_earlier_key_stays_whole():
    data = record("notification=violation,level=Warning,reported_timestamp=1,reported_at=x,cluster_name=c,"
                  "client_id=abc,client_name=Wo,client_name=xrkload,client_domain=d").data
    assert data["client_id"] == "abc" and data["client_name"] == "Wo,client_name=xrkload"
    assert data["client_domain"] == "d"


TEXT_BODIES = [line[line.index(b"notification="):].decode() for s in load_samples() if s.mode == "text"
               for line in s.lines[:1] if b"notification=" in line]


@given(st.sampled_from(TEXT_BODIES), st.data())
def test_every_byte_of_a_body_lands_in_a_key_or_a_value(body, data):
    # Into one value, the ",K=" of a key that came before it (or its own), as a
    # value copied from elsewhere can hold it: every key is read where it was,
    # and the pairs rejoined give the body back.
    notification = body.split(",", 1)[0].split("=", 1)[1]
    pairs, _ = parse_pairs(body, notification)
    types = {f.name: f.type for f in FIELDS[notification]}
    # Only a string can hold it: NeuVector prints a number, a bool, a list or a map as such.
    at = data.draw(st.sampled_from([i for i, (key, _) in enumerate(pairs) if types.get(key) == "str"]), label="value")
    earlier = data.draw(st.sampled_from([key for key, _ in pairs[1:at + 1]] or ["notification"]), label="key")
    tail = data.draw(st.text(alphabet=" ,=()-", max_size=6), label="tail")  # no ",word=": a newer key
    key, value = pairs[at]
    pairs[at] = (key, value + "," + earlier + "=" + tail)
    changed = ",".join("%s=%s" % pair for pair in pairs)
    got, _ = parse_pairs(changed, notification)
    assert ",".join("%s=%s" % pair for pair in got) == changed
    assert got == pairs  # the first occurrence stays the key; the copy stays in the value that holds it
