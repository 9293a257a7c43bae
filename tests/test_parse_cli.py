"""`nvsiem parse`: inputs of every kind, outputs, dead letters and exit status."""
import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.nvsamples import load_samples

REPO = Path(__file__).resolve().parents[1]
SYSLOG = [s for s in load_samples() if s.mode in ("text", "json", "podlog")]


def nvsiem(*args, stdin=b""):
    return subprocess.run([sys.executable, "-m", "nvsiem", *args], input=stdin, capture_output=True,
                          cwd=REPO, timeout=60)


def records(stdout: bytes):
    return [json.loads(line) for line in stdout.splitlines()]


def test_stdin_of_every_reference_frame_gives_every_record_and_exit_0():
    stream = b"".join(s.stream for s in SYSLOG)
    done = nvsiem("parse", stdin=stream)
    assert done.returncode == 0, done.stderr
    got = records(done.stdout)
    # incident-text-5 is one record over two lines, tcp-stream-1 two records
    expected = sum(2 if s.id == "tcp-stream-1" else 1 for s in SYSLOG)
    assert len(got) == expected
    assert {r["notification"] for r in got} == {"violation", "threat", "incident", "event", "activity", "audit"}
    summary = done.stderr.decode()
    assert "%d records" % expected in summary and "0 dead letters" in summary


def test_dead_letters_go_to_their_file_with_exact_bytes_and_exit_1(tmp_path):
    bad = b"<134>1 2025-03-14T09:26:47Z h /usr/local/bin/controller 13 neuvector - {\"notification\": \"event\", \xff"
    good = SYSLOG[0].lines[0]
    source = tmp_path / "in.log"
    source.write_bytes(good + b"\n" + bad + b"\n")
    letters = tmp_path / "dead.jsonl"
    done = nvsiem("parse", str(source), "--dead-letter", str(letters), "--out", str(tmp_path / "out.jsonl"))
    assert done.returncode == 1
    assert len(records((tmp_path / "out.jsonl").read_bytes())) == 1
    (letter,) = records(letters.read_bytes())
    assert base64.b64decode(letter["raw_base64"]) == bad
    assert letter["offset"] == len(good) + 1 and letter["source"] == str(source)
    assert letter["reason"].startswith("invalid JSON body")
    assert "\\xff" in letter["text"]


def test_dead_letters_default_to_stderr_as_json_lines():
    done = nvsiem("parse", stdin=b"not syslog at all\n")
    assert done.returncode == 1
    first = done.stderr.decode().splitlines()[0]
    assert json.loads(first)["reason"].startswith("no NeuVector body")


def test_hex_dumps_are_detected_and_give_the_same_records_as_the_frames():
    dump = nvsiem("parse", str(REPO / "examples" / "syslog-dump.hex"))
    assert dump.returncode == 0, dump.stderr
    got = records(dump.stdout)
    assert len(got) == 32
    forced = nvsiem("parse", "--input", "syslog", str(REPO / "examples" / "syslog-dump.hex"))
    assert forced.returncode == 1  # read as syslog text, a dump is all dead letters


def test_controller_log_lines_in_a_pod_log_are_skipped_not_errors():
    pod_log = (b"2025-03-14T08:00:12.345|INFO|CTL|main: controller started\n"
               + SYSLOG[0].lines[0].split(b" - ", 1)[1] + b"\n")
    done = nvsiem("parse", stdin=pod_log)
    assert done.returncode == 0
    assert len(records(done.stdout)) == 1
    assert "1 skipped" in done.stderr.decode()


@pytest.mark.parametrize("args", [
    ["parse", "/nonexistent/file"], ["parse", "--input", "xml"], ["parse", "--max-frame", "x"],
    ["parse", "--max-frame", "0"], ["replay", "--max-frame", "-5", "x.hex"], ["frobnicate"],
    ["parse", "--out", "/proc/nope/out.jsonl", "/dev/null"], ["parse", "--dead-letter", "/proc/nope/d", "/dev/null"],
    ["replay", "--out", "/proc/nope/out.jsonl", "examples/syslog-dump.hex"],
])
def test_usage_errors_exit_2(args):
    done = nvsiem(*args)
    assert done.returncode == 2
    assert done.stderr and b"Traceback" not in done.stderr
    if "/proc/nope" in " ".join(args):
        assert b"cannot write /proc/nope/" in done.stderr


def test_a_pipe_gives_its_records_as_they_come():
    """``kubectl logs -f | nvsiem parse``: a record is out before the pipe closes, or 64 KiB arrive."""
    import threading

    frame = SYSLOG[0].lines[0] + b"\n"
    proc = subprocess.Popen([sys.executable, "-m", "nvsiem", "parse", "--quiet"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, cwd=REPO)
    try:
        proc.stdin.write(frame)
        proc.stdin.flush()
        line = []
        reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(20)  # the held last line is released after half a second of quiet
        assert line and line[0], "no record before the pipe closed"
        assert json.loads(line[0]) == records(nvsiem("parse", "--quiet", stdin=frame).stdout)[0]
    finally:
        proc.stdin.close()
        proc.wait(20)


def test_max_frame_dead_letters_longer_frames():
    frame = SYSLOG[0].lines[0]
    done = nvsiem("parse", "--max-frame", str(len(frame) - 1), stdin=frame + b"\n")
    assert done.returncode == 1
    assert "max_frame" in done.stderr.decode()


def test_the_summary_counts_in_words():
    threat = next(s for s in SYSLOG if s.mode == "text" and s.lines[0].count(b"notification=threat"))
    # the bad line first: after a record, a line without a header continues its last value
    done = nvsiem("parse", stdin=b"not neuvector\n" + threat.lines[0] + b"\n")
    assert done.returncode == 1
    assert done.stderr.decode().splitlines()[-1].endswith(
        "nvsiem parse: 1 record (threat 1), 1 dead letter, 0 skipped")


def test_the_readmes_parse_examples_run_as_shown(tmp_path):
    # Pasted as a user pastes them, from a clone: in a directory holding the clone's examples/ and tests/.
    for name in ("examples", "tests"):
        (tmp_path / name).symlink_to(REPO / name)
    readme = (REPO / "README.md").read_text()
    commands = [line for line in readme.splitlines() if ".venv/bin/nvsiem parse" in line]
    assert len(commands) >= 2
    for command in commands:
        shell = command.replace(".venv/bin/nvsiem", "%s -m nvsiem" % sys.executable)
        done = subprocess.run(shell, shell=True, cwd=tmp_path, capture_output=True, timeout=60,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
        assert done.returncode == 0, (command, done.stderr)
        assert b", 0 dead letters" in done.stderr and b"0 records" not in done.stderr
    assert len((tmp_path / "records.jsonl").read_bytes().splitlines()) == 32  # the bundled capture's records
