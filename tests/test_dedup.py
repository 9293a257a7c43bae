"""nvsiem.dedup: one copy of each event, by the identities NeuVector's records carry.

The identities are the REST reference's (§5.1): ``id`` for threats,
incidents and violations; the fields the source sets for events,
activities and audits, counted (two real events can be equal within a
second); one scan report stands for its per-CVE syslog copies.
"""
from nvsiem.dedup import FILE, Dedup, identity

THREAT = {"notification": "threat", "name": "SQL.Injection", "level": "Critical", "reported_timestamp": 100,
          "id": "2b9c3a10-73c5-11f1-8000-0242ac110004", "threat_id": 2022, "count": 1}
EVENT = {"notification": "event", "name": "Container.Privilege.Escalation", "level": "Warning",
         "reported_timestamp": 200, "host_id": "h1", "enforcer_id": "e1", "controller_id": "", "workload_id": "w1",
         "category": "WORKLOAD", "user": "", "user_addr": "", "user_session": "", "message": "escalated",
         "host_name": "node-1", "enforcer_name": "enforcer-a", "cluster_name": "c"}
SCAN = {"notification": "audit", "name": "Container.Scan.Report", "level": "Critical", "reported_timestamp": 300,
        "workload_id": "w1", "image_id": "sha256:1", "cvedb_version": "3.950", "critical_vul_cnt": 2,
        "high_vul_cnt": 0, "medium_vul_cnt": 0, "critical_vuls": ["CVE-1", "CVE-2"]}


def taken(keys):
    return [k is not None for k in keys]


def test_an_id_already_spooled_is_a_copy_from_any_source(tmp_path):
    d = Dedup(str(tmp_path))
    first = d.admit([THREAT], replayed=False)
    d.commit(first)
    assert taken(d.admit([THREAT], replayed=True)) == [False]  # REST brings it again
    assert taken(d.admit([THREAT], replayed=False)) == [False]  # NeuVector re-sent it after a reconnect
    other = dict(THREAT, id="2b9c3a10-73c5-11f1-8000-0242ac110005", count=3)  # an aggregated repeat: new record
    assert taken(d.admit([other], replayed=True)) == [True]


def test_events_are_counted_not_set(tmp_path):
    d = Dedup(str(tmp_path))
    d.commit(d.admit([EVENT], replayed=False))
    d.commit(d.admit([EVENT], replayed=False))  # two real events, equal on every field within a second
    # REST holds the same two, and one syslog lost: only the third comes in.
    assert taken(d.admit([EVENT, EVENT, EVENT], replayed=True)) == [False, False, True]
    assert taken(d.admit([EVENT, EVENT, EVENT], replayed=True)) == [False, False, False]  # the next poll


def test_a_reply_admitted_in_pieces_is_counted_as_one_reply(tmp_path):
    d = Dedup(str(tmp_path))
    d.commit(d.admit([EVENT, EVENT], replayed=False))  # syslog brought two equal events
    reply: dict = {}
    # REST holds three, handed over one at a time: the first two are the two syslog brought.
    pieces = [d.admit([EVENT], replayed=True, seen_in_reply=reply) for _ in range(3)]
    assert [taken(p) for p in pieces] == [[False], [False], [True]]
    # Without the reply's count each piece would look like the first of its reply: all three dropped.
    assert taken(d.admit([EVENT], replayed=True)) == [False]


def test_names_each_controller_looks_up_do_not_make_a_new_event(tmp_path):
    d = Dedup(str(tmp_path))
    d.commit(d.admit([EVENT], replayed=False))
    renamed = dict(EVENT, host_name="node-1.internal", enforcer_name="enforcer-b", cluster_name="prod")
    assert taken(d.admit([renamed], replayed=True)) == [False]
    other = dict(EVENT, message="escalated again")
    assert taken(d.admit([other], replayed=True)) == [True]


def test_a_scan_report_stands_for_its_per_cve_syslog_copies(tmp_path):
    d = Dedup(str(tmp_path))
    per_cve = [dict(SCAN, critical_vul_cnt=1, critical_vuls=[cve], package_ver="1.0") for cve in ("CVE-1", "CVE-2")]
    d.commit(d.admit(per_cve, replayed=False))  # "single CVE per syslog": both kept
    rest_report = dict(SCAN, high_vuls=[], medium_vuls=[])  # REST writes [] where syslog leaves the key out
    assert taken(d.admit([rest_report], replayed=True)) == [False]
    newer_scan = dict(SCAN, reported_timestamp=400)
    assert taken(d.admit([newer_scan], replayed=True)) == [True]


def test_an_empty_list_and_an_absent_one_are_the_same_identity():
    compliance = {"notification": "audit", "name": "Compliance.Container.Violation", "reported_timestamp": 5,
                  "workload_id": "w"}
    assert identity(compliance) == identity(dict(compliance, items=[]))
    assert identity(compliance) != identity(dict(compliance, items=["D.5.4 WARN - x"]))


def test_a_violation_without_id_falls_back_to_its_connection():
    base = {"notification": "violation", "id": "", "client_id": "a", "server_id": "b", "server_port": 443,
            "ip_proto": 6, "policy_id": 0, "reported_timestamp": 7, "sessions": 3}
    assert identity(base) == identity(dict(base, sessions=4, client_name="renamed"))
    assert identity(base) != identity(dict(base, server_port=80))


def test_the_window_survives_a_kill_and_a_torn_last_line(tmp_path):
    d = Dedup(str(tmp_path))
    d.commit(d.admit([THREAT, EVENT], replayed=False))
    del d  # no close: as after kill -9, the log holds what was written
    with open(tmp_path / FILE, "ab") as f:
        f.write(b"0123456789abcdef01234567 1 0")  # a line cut by the kill: no newline
    again = Dedup(str(tmp_path))
    assert taken(again.admit([THREAT, EVENT], replayed=True)) == [False, False]


def test_records_the_spool_refused_were_never_seen(tmp_path):
    d = Dedup(str(tmp_path))
    keys = d.admit([THREAT, EVENT], replayed=False)
    d.release(keys, replayed=False)
    assert taken(d.admit([THREAT, EVENT], replayed=True)) == [True, True]


def test_the_window_is_bounded_and_compacted(tmp_path):
    d = Dedup(str(tmp_path), capacity=100)
    for n in range(1000):
        d.commit(d.admit([dict(THREAT, id="t-%d" % n)], replayed=False))
    assert len(d._seen) == 100
    assert sum(1 for _ in open(tmp_path / FILE, "rb")) <= 2 * 100 + 1
    again = Dedup(str(tmp_path), capacity=100)
    assert taken(again.admit([dict(THREAT, id="t-999"), dict(THREAT, id="t-0")], replayed=True)) == [False, True]


def test_syslog_after_rest_is_a_copy_but_a_scan_reports_per_cve_records_are_kept(tmp_path):
    d = Dedup(str(tmp_path))
    d.commit(d.admit([EVENT, SCAN], replayed=True))  # the REST poll came first
    assert taken(d.admit([EVENT], replayed=False)) == [False]  # syslog's copy of that event
    assert taken(d.admit([EVENT], replayed=False)) == [True]  # a second real one
    assert taken(d.admit([SCAN], replayed=False)) == [False]  # syslog's copy of the whole report
    per_cve = [dict(SCAN, critical_vul_cnt=1, critical_vuls=[cve], package_ver="1.0") for cve in ("CVE-1", "CVE-2")]
    assert taken(d.admit(per_cve, replayed=False)) == [True, True]
