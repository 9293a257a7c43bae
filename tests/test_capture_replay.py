"""nvsiem capture and nvsiem replay against real netcat-traditional captures.

The frames are the reference samples sent as NeuVector sends them; what
replay gives is compared with the hand-written expected records of those
samples, and what capture writes with what nc.traditional writes.
"""
import contextlib
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from helpers.nc_capture import WAIT, Listener, nc_capture, needs_nc, nc_listener, syslog_frames
from nvparser._hexdump import HexChunk, format_hexdump, read_hexdump
from helpers.nvsamples import assert_same_records, expected_records, load_samples
from nvsiem.captures import CaptureReader
from nvsiem.cli import main

SAMPLES = [s for s in load_samples() if syslog_frames([s])]
FRAMES = syslog_frames(SAMPLES)
NC_READ = 8192


def expected(samples):
    return [record for sample in samples for record in expected_records(sample.id)]


def short_samples():
    """Samples whose frames nc.traditional can take as UDP datagrams whole."""
    return [s for s in SAMPLES if all(len(f) <= NC_READ for f in syslog_frames([s]))]


def replay(tmp_path, dump, *options):
    """Run nvsiem replay in this process: (status, records, dead letters)."""
    out, dead = tmp_path / "records.jsonl", tmp_path / "dead.jsonl"
    status = main(["replay", str(dump), "--out", str(out), "--dead-letter", str(dead), *options])
    records = [json.loads(line) for line in out.read_bytes().splitlines()] if out.exists() else []
    letters = [json.loads(line) for line in dead.read_bytes().splitlines()] if dead.exists() else []
    return status, records, letters


def capture_listener(tmp_path, dump, udp=False, *options):
    argv = [sys.executable, "-m", "nvsiem", "capture", "--listen",
            ("udp" if udp else "tcp") + "://127.0.0.1:PORT", "--out", str(dump), *options]
    return Listener(argv, dump, udp=udp, stdout_path=tmp_path / (dump.name + ".stdout"))


@needs_nc
@pytest.mark.parametrize("udp", [False, True], ids=["tcp", "udp"])
def test_replay_of_an_nc_capture_gives_the_records_sent(tmp_path, udp):
    samples = short_samples() if udp else SAMPLES
    dump = tmp_path / "nc.hex"
    nc_capture(dump, syslog_frames(samples), udp)
    for transport in ("auto", "udp" if udp else "tcp"):
        status, records, letters = replay(tmp_path, dump, "--transport", transport)
        assert (status, letters) == (0, [])
        assert_same_records(records, expected(samples))


@needs_nc
def test_udp_datagrams_merged_in_the_dump_still_give_one_record_each(tmp_path):
    # JSON-mode frames padded with spaces inside the object to a multiple of
    # 16 bytes: nc's dump then shows no boundary between the datagrams.
    samples = [s for s in short_samples() if s.mode == "json"]
    frames = []
    for frame in syslog_frames(samples):
        frames.append(frame[:-2] + b" " * (-len(frame) % 16) + b"}\n")
    dump = tmp_path / "udp16.hex"
    nc_capture(dump, frames, udp=True)
    with open(dump, "rb") as text:
        assert len(list(read_hexdump(text))) == 1  # one chunk: the boundaries are gone
    status, records, letters = replay(tmp_path, dump, "--transport", "udp")
    assert (status, letters) == (0, [])
    assert_same_records(records, expected(samples))


@needs_nc
@pytest.mark.parametrize("transport", ["udp", "auto"])
def test_a_datagram_nc_truncated_at_8192_bytes_is_a_dead_letter(tmp_path, transport):
    # 8192 is a multiple of 16: the dump shows no boundary before the next
    # datagram, which then looks like the cut one's continuation in a stream.
    (long_sample,) = [s for s in SAMPLES if s not in short_samples()]
    before, after = short_samples()[:2]
    dump = tmp_path / "udp-long.hex"
    nc = nc_listener(dump, udp=True)
    nc.send(syslog_frames([before])[0])
    nc.send(syslog_frames([long_sample])[0], logged=NC_READ)
    nc.send(syslog_frames([after])[0])
    nc.stop()
    status, records, letters = replay(tmp_path, dump, "--transport", transport)
    assert status == 1
    assert_same_records(records, expected([before, after]))
    (letter,) = letters
    assert "8192" in letter["reason"] and "nc.traditional" in letter["reason"]
    assert letter["text"].encode() == syslog_frames([long_sample])[0][:NC_READ]


@needs_nc
@pytest.mark.parametrize("udp", [False, True], ids=["tcp", "udp"])
def test_capture_writes_what_nc_writes_byte_for_byte(tmp_path, udp):
    frames = [f for f in FRAMES if not udp or len(f) <= NC_READ] + [b"\x00\x01binary\xff\x7f", b"x" * 16]
    dumps = []
    for name, start in (("nc", lambda d: nc_listener(d, udp=udp, stdout_path=tmp_path / "nc.hex.stdout")),
                        ("capture", lambda d: capture_listener(tmp_path, d, udp))):
        dump = tmp_path / (name + ".hex")
        listener = start(dump)
        for frame in frames:
            listener.send(frame)
        listener.stop()
        dumps.append(dump)
    nc_dump, our_dump = (d.read_bytes() for d in dumps)
    assert our_dump == nc_dump
    # Both copy what they receive to stdout, too.
    assert (tmp_path / "capture.hex.stdout").read_bytes() == (tmp_path / "nc.hex.stdout").read_bytes() \
        == b"".join(frames)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_capture_stops_on_a_signal_with_the_dump_complete(tmp_path, signum):
    dump = tmp_path / "sig.hex"
    capture = capture_listener(tmp_path, dump, True, "--quiet")
    for frame in FRAMES[:5]:
        capture.send(frame)
    capture.process.send_signal(signum)
    assert capture.process.wait(timeout=WAIT) == 0
    capture.stop()
    with open(dump, "rb") as text:
        assert [c.data for c in read_hexdump(text)] == FRAMES[:5]
    assert (tmp_path / "sig.hex.stdout").read_bytes() == b""


def test_capture_keep_open_takes_connections_in_turn_and_replay_restarts_the_stream(tmp_path):
    dump = tmp_path / "keep.hex"
    capture = capture_listener(tmp_path, dump, False, "--keep-open", "--quiet")
    for frame in FRAMES[:2]:
        capture.send(frame)
    cut = FRAMES[2][:40]  # the sender goes away in the middle of a frame
    capture.send(cut)
    capture.sock.close()
    capture.sock = socket.create_connection(("127.0.0.1", capture.port), timeout=WAIT)
    for frame in FRAMES[3:5]:
        capture.send(frame)
    capture.process.send_signal(signal.SIGTERM)
    capture.stop()
    with open(dump, "rb") as text:
        offsets = [c.offset for c in read_hexdump(text)]
    assert offsets == [0, len(FRAMES[0]), len(FRAMES[0]) + len(FRAMES[1]), 0, len(FRAMES[3])]
    status, records, letters = replay(tmp_path, dump)
    assert status == 1
    assert_same_records(records, expected(SAMPLES[:2]) + expected(SAMPLES[3:5]))
    (letter,) = letters
    assert letter["text"].encode() == cut and "connection ended" in letter["reason"]


def _tcp_receiver(count: int):
    """A TCP server on 127.0.0.1 keeping what ``count`` connections sent: (arrival time, bytes) per read."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(WAIT)
    connections = []

    def serve():
        with server:
            for _ in range(count):
                conn, _ = server.accept()
                reads = []
                connections.append(reads)
                with conn:
                    conn.settimeout(WAIT)
                    for data in iter(lambda: conn.recv(65536), b""):
                        reads.append((time.monotonic(), data))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return server.getsockname()[1], thread, connections


def _received(reads) -> bytes:
    return b"".join(data for _, data in reads)


@contextlib.contextmanager
def _udp_receiver():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        receiver.bind(("127.0.0.1", 0))
        receiver.settimeout(WAIT)
        yield receiver


def test_replay_send_tcp_delivers_the_original_bytes_per_connection(tmp_path):
    streams = [b"".join(FRAMES[:3]), b"".join(FRAMES[3:])]
    dump = tmp_path / "two.hex"
    # Two connections, in reads of any sizes (the 5000-byte cut is mid-frame).
    text = ""
    for stream in streams:
        text += "".join(format_hexdump("<", i, stream[i:i + 5000]) for i in range(0, len(stream), 5000))
    dump.write_text(text)
    port, thread, connections = _tcp_receiver(2)
    status, records, _ = replay(tmp_path, dump, "--send", "tcp://127.0.0.1:%d" % port)
    thread.join(WAIT)
    assert status == 0
    assert [_received(c) for c in connections] == streams
    assert_same_records(records, expected(SAMPLES))


def test_replay_of_a_tcp_capture_sends_udp_one_frame_a_datagram(tmp_path):
    stream = b"".join(FRAMES)
    dump = tmp_path / "tcp.hex"
    dump.write_text("".join(format_hexdump("<", i, stream[i:i + 5000]) for i in range(0, len(stream), 5000)))
    with _udp_receiver() as receiver:
        status, records, _ = replay(tmp_path, dump, "--transport", "tcp",
                                    "--send", "udp://127.0.0.1:%d" % receiver.getsockname()[1])
        got = [receiver.recv(65536) for _ in FRAMES]
    assert status == 0
    assert got == FRAMES  # continuation lines stay with their frame


def test_replay_rate_paces_frames_of_a_tcp_capture(tmp_path):
    frames = FRAMES[:6]
    dump = tmp_path / "tcp.hex"
    dump.write_text(format_hexdump("<", 0, b"".join(frames)))  # one read holding all six
    port, thread, connections = _tcp_receiver(1)
    status, _, _ = replay(tmp_path, dump, "--send", "tcp://127.0.0.1:%d" % port, "--rate", "10")
    thread.join(WAIT)
    (arrivals,) = connections
    assert status == 0 and _received(arrivals) == b"".join(frames)
    # 6 frames at 10 a second: the last leaves half a second after the first, not with it.
    assert arrivals[-1][0] - arrivals[0][0] >= 0.4


@needs_nc
def test_replay_send_udp_keeps_datagram_boundaries(tmp_path):
    samples = short_samples()
    frames = syslog_frames(samples)
    dump = tmp_path / "udp.hex"
    nc_capture(dump, frames, udp=True)
    with _udp_receiver() as receiver:
        status, records, _ = replay(tmp_path, dump, "--transport", "udp",
                                    "--send", "udp://127.0.0.1:%d" % receiver.getsockname()[1])
        got = [receiver.recv(65536) for _ in frames]
    assert status == 0
    assert got == frames


def test_a_corrupt_line_is_a_dead_letter_and_the_frame_it_cut_is_not_a_record(tmp_path):
    stream = b"".join(FRAMES[:3])
    lines = format_hexdump("<", 0, stream).splitlines(keepends=True)
    broken = len(FRAMES[0]) // 16 + 3  # a line inside the second frame
    lines[broken] = lines[broken][:-2] + "!\n"  # the ascii column no longer matches
    dump = tmp_path / "corrupt.hex"
    dump.write_text("".join(lines))
    status, records, letters = replay(tmp_path, dump)
    assert status == 1
    assert_same_records(records, expected([SAMPLES[0], SAMPLES[2]]))
    assert [letter["reason"] for letter in letters] == [
        "frame cut short by a hole in the capture",
        "hex dump line %d: ascii column does not match the hex bytes" % (broken + 1),
        "frame begins in a hole in the capture: its start is missing"]
    assert letters[1]["text"] == lines[broken][:-1]
    # The two pieces of the frame around the hole are its bytes but the 16 lost.
    cut, rest = (letters[i]["text"].encode() for i in (0, 2))
    assert cut + rest == FRAMES[1][:len(cut)] + FRAMES[1][len(cut) + 16:-1]
    # Offsets are where the bytes were in the stream, after the hole too.
    assert letters[0]["offset"] == len(FRAMES[0]) and letters[2]["offset"] == (broken + 1) * 16


def test_syslog_given_to_replay_is_dead_lettered_line_by_line_with_a_hint(tmp_path, capsys):
    text = tmp_path / "syslog.log"
    text.write_bytes(b"".join(FRAMES[:2]))
    status, records, letters = replay(tmp_path, text)
    assert status == 1 and records == []
    assert [letter["text"].encode() + b"\n" for letter in letters] == FRAMES[:2]
    assert all("not an nc hex dump line" in letter["reason"] for letter in letters)
    assert "nothing to detect: no line of data nc received; for syslog itself, use nvsiem parse" \
        in capsys.readouterr().err


def test_usage_errors_exit_2(tmp_path, capsys):
    assert main(["replay", str(tmp_path / "missing.hex")]) == 2
    assert "cannot read" in capsys.readouterr().err
    (tmp_path / "d.hex").write_text(format_hexdump("<", 0, FRAMES[0]))
    assert main(["replay", str(tmp_path / "d.hex"), "--send", "http://x:1"]) == 2
    assert "udp|tcp://HOST:PORT" in capsys.readouterr().err
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    assert main(["replay", str(tmp_path / "d.hex"), "--send", "tcp://127.0.0.1:%d" % port]) == 2
    assert "refused" in capsys.readouterr().err


def test_replay_memory_does_not_grow_with_the_dump(tmp_path):
    # The example capture, and 200 copies of it joined with cat (~45 MB; each
    # copy restarts at offset 0, a new connection). Peak memory of a replay
    # must not grow with the size of the dump.
    example = (Path(__file__).resolve().parents[1] / "examples" / "syslog-dump.hex").read_bytes()
    peaks = {}
    for copies in (1, 200):
        dump = tmp_path / ("x%d.hex" % copies)
        with open(dump, "wb") as out:
            for _ in range(copies):
                out.write(example)
        child = subprocess.run(
            [sys.executable, "-c", "import resource, sys; from nvsiem.cli import main; status = main(sys.argv[1:]);"
             " print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(status)",
             "replay", str(dump), "--out", str(tmp_path / "records.jsonl"), "--quiet"],
            capture_output=True, check=True, timeout=300)
        peaks[copies] = int(child.stdout) * 1024  # ru_maxrss is in KiB on Linux
        assert (tmp_path / "records.jsonl").read_bytes().count(b"\n") == copies * len(FRAMES)
    assert peaks[200] < peaks[1] + 8 * 2 ** 20, peaks


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=80), st.sampled_from(
           [format_hexdump("<", 0, FRAMES[0][:40]), format_hexdump("<", 40, FRAMES[0][40:]),
            format_hexdump(">", 0, b"reply"), format_hexdump("<", 0, b"x" * 16)]).map(str.encode)),
           max_size=8),
       st.sampled_from(["auto", "tcp", "udp"]))
def test_any_dump_gives_events_and_never_raises(parts, transport):
    reader = CaptureReader(transport)
    units = list(reader.units(parts))
    assert reader.transport in ("tcp", "udp")
    resent = b"".join(unit.data for unit in units)
    # What would be resent is exactly what the '<' lines hold, in order.
    decoded = b"".join(e.data for e in read_hexdump(parts) if isinstance(e, HexChunk) and e.direction == "<")
    assert resent == decoded
