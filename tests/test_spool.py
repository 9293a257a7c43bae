"""The spool, the file sink and the sink registry, without sockets."""
import argparse
import errno
import json
import os
import threading
import time

import pytest

from nvparser import json_dumps
from nvsiem import config
from nvsiem.sinks import open_sink, sink_id, split_collector_options
from nvsiem.sinks.file import FileSink
from nvsiem.spool import Spool
from nvsiem.statefile import load_state, save_state
from helpers.loopback import wait_until


def rec(i, notification="event"):
    return json.dumps({"notification": notification, "i": i}, separators=(",", ":")).encode()


def drain(reader, max_records=1000):
    """Everything the reader can see now, committing as it goes."""
    out = []
    while True:
        batch = reader.read(max_records, timeout=0)
        if not batch and not reader.has_pending:
            return out
        out.extend(batch)
        reader.commit()


def test_records_come_back_in_order_across_segments(tmp_path):
    spool = Spool(str(tmp_path), quota_bytes=1 << 20, segment_bytes=200, fsync_interval=0)
    reader = spool.reader("a")
    for i in range(100):
        assert spool.append([rec(i)])
    assert [json.loads(x)["i"] for x in drain(reader, 7)] == list(range(100))
    # Every segment but the active one was passed by the only reader, so it is gone.
    assert len([n for n in os.listdir(tmp_path) if n.startswith("segment-")]) == 1
    spool.close()


def test_restart_resumes_at_the_cursor(tmp_path):
    spool = Spool(str(tmp_path), fsync_interval=0)
    reader = spool.reader("a")
    spool.append([rec(i) for i in range(10)])
    first = reader.read(4, timeout=0)
    reader.commit()
    unconfirmed = reader.read(3, timeout=0)  # read but never committed: a crash before the sink confirmed
    assert len(first) == 4 and len(unconfirmed) == 3
    spool.append([rec(i) for i in range(10, 15)])
    # No close(): the process dies here, and the kernel releases its lock on the directory.
    spool._owner.close()
    again = Spool(str(tmp_path), fsync_interval=0)
    reader = again.reader("a")
    assert [json.loads(x)["i"] for x in drain(reader)] == list(range(4, 15))
    again.close()


def test_one_spool_directory_one_collector(tmp_path):
    spool = Spool(str(tmp_path), fsync_interval=0)
    try:
        Spool(str(tmp_path), fsync_interval=0)
        raise AssertionError("a second spool on the same directory must be refused")
    except OSError as exc:
        assert "in use by another nvsiem listen (pid %d)" % os.getpid() in str(exc)
    spool.close()
    Spool(str(tmp_path), fsync_interval=0).close()  # free again once the first is closed


def test_append_after_close_is_refused_and_opens_no_segment(tmp_path):
    spool = Spool(str(tmp_path), quota_bytes=1000, fsync_interval=0)
    reader = spool.reader("a")
    spool.append([rec(0)])
    assert len(drain(reader)) == 1  # caught up: an append over the quota would roll to a new segment
    before = sorted(os.listdir(tmp_path))
    spool.close()
    assert not spool.append([b"x" * 990], timeout=0)
    assert sorted(os.listdir(tmp_path)) == before


def test_lagging_reader_keeps_segments_and_sees_everything(tmp_path):
    spool = Spool(str(tmp_path), segment_bytes=100, fsync_interval=0)
    fast, slow = spool.reader("fast"), spool.reader("slow")
    for i in range(50):
        spool.append([rec(i)])
    assert len(drain(fast)) == 50
    assert len([n for n in os.listdir(tmp_path) if n.startswith("segment-")]) > 5
    assert slow.backlog_bytes == spool.used_bytes
    assert [json.loads(x)["i"] for x in drain(slow)] == list(range(50))
    assert slow.backlog_bytes == 0
    spool.close()


def _segment_inodes(directory):
    return {os.stat(os.path.join(directory, n)).st_ino for n in os.listdir(directory) if n.startswith("segment-")}


def _open_in(directory):
    """How many of this process's descriptors point into directory: other tests' sockets and
    threads may close theirs at any moment, so the process-wide count is not a measure."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed since the listing (the listing's own descriptor among them)
            continue
        count += target.startswith(f"{directory}/")
    return count


def _spy_fsync(monkeypatch):
    """[(inode, thread name)] of every fsync from now on."""
    synced = []
    real = os.fsync

    def fsync(fd):
        synced.append((os.fstat(fd).st_ino, threading.current_thread().name))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return synced


def test_closed_segments_are_synced_by_the_syncer_not_by_append(tmp_path, monkeypatch):
    synced = _spy_fsync(monkeypatch)
    spool = Spool(str(tmp_path), segment_bytes=100, fsync_interval=0.05)
    spool.reader("keeps-every-segment")
    fds = _open_in(tmp_path)
    for i in range(20):
        spool.append([rec(i)])
    segments = _segment_inodes(tmp_path)
    assert len(segments) > 5
    wait_until(lambda: segments <= {ino for ino, _ in synced}, 10, "the syncer to sync every segment")
    assert {thread for _, thread in synced} == {"spool-fsync"}  # appends never wait for the disk
    wait_until(lambda: _open_in(tmp_path) <= fds, 10, "the synced segments' descriptors to close")
    spool.close()


def test_sync_and_close_sync_the_segments_closed_since_the_last_tick(tmp_path, monkeypatch):
    synced = _spy_fsync(monkeypatch)
    spool = Spool(str(tmp_path), segment_bytes=100, fsync_interval=3600)  # no tick during the test
    spool.reader("keeps-every-segment")
    fds = _open_in(tmp_path)
    for i in range(20):
        spool.append([rec(i)])
    assert synced == []
    spool.sync()  # what the collector's stop does before draining
    assert _segment_inodes(tmp_path) <= {ino for ino, _ in synced}
    assert _open_in(tmp_path) == fds  # the duplicates are closed
    for i in range(20, 40):
        spool.append([rec(i)])
    spool.close()
    assert _segment_inodes(tmp_path) <= {ino for ino, _ in synced}
    assert _open_in(tmp_path) < fds  # the active segment closed too


def test_sync_waits_for_the_segments_the_syncer_is_syncing(tmp_path, monkeypatch):
    in_syncer, release = threading.Event(), threading.Event()
    real = os.fsync

    def fsync(fd):
        if threading.current_thread().name == "spool-fsync":
            in_syncer.set()
            release.wait(10)
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    spool = Spool(str(tmp_path), segment_bytes=100, fsync_interval=0.05)
    for i in range(20):
        spool.append([rec(i)])
    assert in_syncer.wait(10)  # the syncer has taken the closed segments and is inside fsync
    stop = threading.Thread(target=spool.sync)
    stop.start()
    stop.join(0.3)
    assert stop.is_alive()  # the collector's stop must not go on before they are on disk
    release.set()
    stop.join(10)
    assert not stop.is_alive()
    spool.close()


def test_quota_refuses_then_recovers(tmp_path):
    changes = []
    line = rec(0)
    quota = (len(line) + 1) * 10
    spool = Spool(str(tmp_path), quota_bytes=quota, segment_bytes=quota // 2, fsync_interval=0, on_full=changes.append)
    reader = spool.reader("a")
    accepted = sum(spool.append([line], timeout=0) for _ in range(20))
    assert accepted == 10 and spool.full and changes == [True]
    assert spool.used_bytes <= quota
    drain(reader)
    assert spool.append([line], timeout=0)
    assert not spool.full and changes == [True, False]
    spool.close()


def test_an_append_larger_than_the_quota_goes_in_once_the_spool_is_empty(tmp_path):
    # A batch of records (one parser feed) can outgrow a small quota; waiting would never make room.
    big = [rec(i) for i in range(5)]
    spool = Spool(str(tmp_path), quota_bytes=len(rec(0)) * 2, segment_bytes=64, fsync_interval=0)
    reader = spool.reader("a")
    assert spool.append(big, timeout=0)
    assert not spool.append(big, timeout=0)  # the first is not delivered yet: the quota holds
    results = []
    writer = threading.Thread(target=lambda: results.append(spool.append(big, timeout=5)))
    writer.start()
    got, deadline = [], time.monotonic() + 10
    while len(got) < 10 and time.monotonic() < deadline:
        got += drain(reader)  # a sink delivering: the spool empties, the second batch goes in
        time.sleep(0.01)
    writer.join(10)
    assert results == [True]
    assert [json.loads(x)["i"] for x in got] == [0, 1, 2, 3, 4] * 2
    spool.close()


def test_torn_tail_is_cut_on_recovery(tmp_path):
    spool = Spool(str(tmp_path), fsync_interval=0)
    spool.append([rec(1), rec(2)])
    spool.close()
    (segment,) = [p for p in tmp_path.iterdir() if p.name.startswith("segment-")]
    with open(segment, "ab") as f:
        f.write(b'{"notification":"ev')  # half a line, as a power loss can leave
    again = Spool(str(tmp_path), fsync_interval=0)
    assert [json.loads(x)["i"] for x in drain(again.reader("a"))] == [1, 2]
    again.close()


def test_type_filter(tmp_path):
    spool = Spool(str(tmp_path), fsync_interval=0)
    threats = spool.reader("t", types={"threat", "violation"})
    spool.append([rec(0, "event"), rec(1, "threat"), rec(2, "audit"), rec(3, "violation"),
                  b'{"i":4,"notification":"threat"}'])
    assert [json.loads(x)["i"] for x in drain(threats)] == [1, 3, 4]
    spool.close()


def test_file_sink_cuts_a_line_a_kill_left_torn_before_writing_again(tmp_path, caplog):
    out = tmp_path / "out.jsonl"
    out.write_bytes(rec(0) + b"\n" + rec(1)[:7])  # killed in the middle of writing rec(1)
    sink = FileSink("file://%s" % out)
    sink.send([rec(1), rec(2)])  # the unconfirmed batch, sent again
    sink.close()
    assert [json.loads(x)["i"] for x in out.read_bytes().splitlines()] == [0, 1, 2]
    assert "torn write" in caplog.text


def test_file_sink_rotates_by_size(tmp_path):
    path = tmp_path / "out.jsonl"
    sink = open_sink("file://%s?max_bytes=100&backups=2" % path)
    assert isinstance(sink, FileSink)
    for i in range(30):
        sink.send([rec(i)])
    sink.close()
    files = [path, tmp_path / "out.jsonl.1", tmp_path / "out.jsonl.2"]
    assert not (tmp_path / "out.jsonl.3").exists()
    assert all(f.stat().st_size <= 100 for f in files)
    kept = [json.loads(x)["i"] for f in reversed(files) for x in f.read_bytes().splitlines()]
    assert kept == list(range(30 - len(kept), 30))  # the newest records, in order


def test_collector_options_and_secrets(tmp_path, monkeypatch):
    url, types = split_collector_options("splunk-hec://h:8088?types=violation,threat&index=nv")
    assert url == "splunk-hec://h:8088?index=nv" and types == {"violation", "threat"}
    token = tmp_path / "token"
    token.write_text("s3cr3t\n")
    monkeypatch.setenv("SHARED", "k3y")
    from nvsiem.options import resolve_secrets
    resolved = resolve_secrets("x://h?token_file=%s&shared_key_env=SHARED&tag=a" % token)
    assert resolved == "x://h?token=s3cr3t%0A&shared_key=k3y&tag=a"  # verbatim: the sink decides
    # A rotated token keeps the same cursor; another filter is another sink.
    assert sink_id("x://h?token=a") == sink_id("x://h?token=b") != sink_id("x://h?token=a&types=event")


def test_config_precedence(tmp_path):
    cfg = tmp_path / "nvsiem.json"
    cfg.write_text(json.dumps({"spool": "/from-file", "spool_quota": "2G", "to": ["stdout://"]}))
    parser = argparse.ArgumentParser()
    config.add_arguments(parser)
    args = parser.parse_args(["--config", str(cfg), "--spool", "/from-flag"])
    env = {"NVSIEM_SPOOL": "/from-env", "NVSIEM_TO": "file:///a.jsonl?types=violation,threat, stdout://",
           "NVSIEM_FSYNC_INTERVAL": "0"}
    c = config.resolve(args, env)
    assert c.spool == "/from-flag"
    assert c.to == ["file:///a.jsonl?types=violation,threat", "stdout://"]
    assert c.spool_quota == 2 << 30 and c.fsync_interval == 0.0
    assert c.listen == ["tcp://0.0.0.0:10514", "udp://0.0.0.0:10514"]


def test_stdout_sink_writes_json_lines(capsysbinary):
    sink = open_sink("stdout://")
    sink.send([rec(1), rec(2)])
    assert capsysbinary.readouterr().out == rec(1) + b"\n" + rec(2) + b"\n"
    assert sink.describe() == "stdout://"


def test_config_file_in_toml(tmp_path):
    cfg = tmp_path / "nvsiem.toml"
    cfg.write_text('listen = ["udp://0.0.0.0:514"]\nspool_quota = "512M"\nfsync_interval = 0.5\n')
    c = config.resolve(argparse.Namespace(config=str(cfg)), environ={})
    assert c.listen == ["udp://0.0.0.0:514"] and c.spool_quota == 512 << 20 and c.fsync_interval == 0.5
    cfg.write_text('spool_qota = "1G"\n')
    try:
        config.resolve(argparse.Namespace(config=str(cfg)), environ={})
    except ValueError as exc:
        assert "spool_qota" in str(exc)
    else:
        raise AssertionError("a misspelt setting must be an error")


class FillingDisk:
    """The active segment's file on a disk that fills up: ``room`` more bytes, then ENOSPC."""

    def __init__(self, spool, room):
        self.spool, self.room, self.real = spool, room, spool._file
        spool._file = self

    def write(self, data):
        if self.room <= 0:
            raise OSError(28, "No space left on device")
        n = self.real.write(bytes(data[:self.room]))
        self.room -= n
        return n

    def free(self):
        self.spool._file = self.real

    def __getattr__(self, name):
        return getattr(self.real, name)


def test_a_full_disk_leaves_no_torn_record_and_the_spool_goes_on_once_there_is_room(tmp_path):
    spool = Spool(str(tmp_path), segment_bytes=1 << 20, fsync_interval=0)
    reader = spool.reader("a")
    assert spool.append([rec(0), rec(1)])
    disk = FillingDisk(spool, room=10)  # the next write gets 10 bytes on disk, then fails
    try:
        spool.append([rec(2), rec(3)])
        raise AssertionError("a failed write must raise")
    except OSError as exc:
        assert exc.errno == 28
    assert "No space left" in spool.error
    disk.free()
    assert spool.append([rec(4)])
    assert [json.loads(x)["i"] for x in drain(reader)] == [0, 1, 4]  # no torn half of rec(2) glued to rec(4)
    spool.close()


def test_a_full_disk_frees_the_segments_every_sink_has_confirmed(tmp_path):
    spool = Spool(str(tmp_path), segment_bytes=1 << 20, fsync_interval=0)
    reader = spool.reader("a")
    spool.append([rec(i) for i in range(50)])
    drain(reader)  # all delivered, but the active segment is not full: nothing rolled yet
    (first,) = [n for n in os.listdir(str(tmp_path)) if n.startswith("segment-")]
    disk = FillingDisk(spool, room=0)
    try:
        spool.append([rec(50)])
    except OSError:
        pass
    assert spool._file is not disk  # a fresh segment was started...
    drain(reader)  # ...so the sink's next look moves past the old one,
    assert first not in os.listdir(str(tmp_path))  # which is deleted: its space is free for the retry
    assert spool.append([rec(50)])
    assert [json.loads(x)["i"] for x in drain(reader)] == [50]
    spool.close()


@pytest.fixture
def fill_disk(monkeypatch):
    """Call to leave no block for a new file (``.tmp``), as on a volume filled to its last block."""
    import builtins

    from nvsiem import statefile as module

    def full_open(path, mode="r", *args, **kwargs):
        if str(path).endswith(".tmp") and "w" in mode:
            raise OSError(errno.ENOSPC, "No space left on device")
        return builtins.open(path, mode, *args, **kwargs)

    return lambda: monkeypatch.setattr(module, "open", full_open, raising=False)


def test_a_cursor_is_saved_in_place_when_the_disk_is_full(tmp_path, fill_disk):
    # Saving the cursor is what frees delivered segments: it must not wait for room.
    spool = Spool(str(tmp_path), quota_bytes=1 << 20, segment_bytes=100, fsync_interval=0)
    reader = spool.reader("a")
    spool.append([rec(0)])
    assert len(drain(reader)) == 1  # a cursor file exists
    fill_disk()
    spool.append([rec(i) for i in range(1, 4)])
    spool.append([rec(i) for i in range(4, 7)])
    assert len(spool._sizes) == 3
    assert [json.loads(x)["i"] for x in drain(reader)] == list(range(1, 7))
    assert len(spool._sizes) == 1  # the delivered segments went
    assert not list(tmp_path.glob("*.tmp"))
    spool.close()
    again = Spool(str(tmp_path), fsync_interval=0)
    assert drain(again.reader("a")) == []  # the cursor saved in place is read back
    again.close()


def test_state_saved_in_place_reads_back_however_long_it_was(tmp_path, fill_disk):
    path = str(tmp_path / "state")
    with open(path, "wb") as f:
        f.write(json_dumps({"segment": 123456789, "offset": 987654321, "sink": "a-long-sink-name"}))
    fill_disk()
    save_state(path, {"segment": 2, "offset": 5})
    assert load_state(path, {}) == {"segment": 2, "offset": 5}
    with pytest.raises(OSError):
        save_state(str(tmp_path / "new"), {"segment": 1})  # nothing to overwrite: the error stands


def test_a_state_file_cut_by_a_crash_starts_from_the_beginning(tmp_path, caplog):
    path = tmp_path / "cursor"
    path.write_bytes(b'{"segment": 3, "off')
    assert load_state(str(path), {"segment": 0, "offset": 0}) == {"segment": 0, "offset": 0}
    assert "cannot be read" in caplog.text
