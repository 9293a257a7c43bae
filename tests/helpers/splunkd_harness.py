"""Run the app's modular inputs the way splunkd does (splunk-notes §3).

* The app is the package ``make splunk-app`` builds (``splunk_app/build.py``),
  unpacked: ``bin/<scheme>.py`` and ``lib/`` holding ``nvparser``, the
  ``nvsiem_splunk`` modules and the splunklib 3.x modules the scripts
  import, so they import exactly what they will in Splunk.
* Introspection: ``<python> bin/<scheme>.py --scheme``.
* Validation: ``--validate-arguments`` with ``<items>...<item name=..>`` on stdin.
* Streaming: no argument, ``<input>...<configuration><stanza>`` on stdin
  (then EOF); stdout is parsed as it arrives with ``XMLPullParser`` (the
  ``<stream>`` only closes when the input exits); every stderr line must
  carry a splunkd level prefix. Stopping = SIGTERM, as splunkd does.
"""
import os
import queue
import re
import shutil
import signal
import subprocess
import tarfile
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, List, Optional

from helpers.splunk_package import build_package



def find_python(version: str) -> str:
    """An interpreter of ``version`` (Splunk 9 bundles 3.9, Splunk 10 3.13), or "" when none is here.

    pyenv's versions first (``$PYENV_ROOT``, default ``~/.pyenv``; newest
    patch release), then ``pythonX.Y`` on the PATH. pyenv's shims are passed
    over: they only run the version pyenv has selected.
    """
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates = sorted(root.glob("versions/%s.*/bin/python3" % version),
                        key=lambda p: [int(x) for x in re.findall(r"\d+", p.parts[-3])], reverse=True)
    if candidates:
        return str(candidates[0])
    found = shutil.which("python" + version) or ""
    return "" if "/shims/" in found else found


#: Splunk's Pythons: version -> interpreter path ("" where it is not installed).
PYTHONS = {version: find_python(version) for version in ("3.9", "3.13")}
LEVEL_LINE = re.compile(r"^(DEBUG|INFO|WARN|ERROR|FATAL) ")
SERVER = {"server_host": "nv-search-head", "server_uri": "https://127.0.0.1:8089",
          "session_key": "harness-session-key"}


def build_app(dest: Path) -> Path:
    """The app package ``make splunk-app`` ships (splunklib 3.x vendored), unpacked in ``dest``."""
    with tarfile.open(build_package(dest / "dist")) as package:
        package.extractall(dest / "apps")
    return dest / "apps" / "neuvector_siem"


def _env() -> dict:
    # splunkd gives its own environment, not the test's venv: nothing leaks in.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"   # no .pyc in the app (AppInspect)
    return env


def scheme(python: str, app: Path, name: str) -> ET.Element:
    proc = subprocess.run([python, str(app / "bin" / (name + ".py")), "--scheme"], capture_output=True,
                          timeout=30, env=_env())
    assert proc.returncode == 0, proc.stderr.decode()
    return ET.fromstring(proc.stdout)


def validate(python: str, app: Path, name: str, params: Dict[str, str], checkpoint_dir: Path):
    """(exit status, the message Splunk would show) for ``--validate-arguments``."""
    root = ET.Element("items")
    _metadata(root, checkpoint_dir)
    item = ET.SubElement(root, "item", name="test")
    for key, value in params.items():
        ET.SubElement(item, "param", name=key).text = value
    proc = subprocess.run([python, str(app / "bin" / (name + ".py")), "--validate-arguments"],
                          input=ET.tostring(root), capture_output=True, timeout=30, env=_env())
    check_stderr(proc.stderr.decode())
    message = None
    if proc.stdout.strip():
        message = ET.fromstring(proc.stdout).findtext("message")
    return proc.returncode, message


def check_stderr(text: str) -> List[str]:
    lines = [line for line in text.splitlines() if line]
    for line in lines:
        assert LEVEL_LINE.match(line), "stderr line without a splunkd level: %r" % line
    return lines


def _metadata(root: ET.Element, checkpoint_dir: Path) -> None:
    for key, value in SERVER.items():
        ET.SubElement(root, key).text = value
    ET.SubElement(root, "checkpoint_dir").text = str(checkpoint_dir)


class RunningInput:
    """A streaming modular input, as splunkd runs it."""

    def __init__(self, python: str, app: Path, name: str, stanza: str, params: Dict[str, str],
                 checkpoint_dir: Path):
        root = ET.Element("input")
        _metadata(root, checkpoint_dir)
        conf = ET.SubElement(root, "configuration")
        st = ET.SubElement(conf, "stanza", name="%s://%s" % (name, stanza), app=app.name)
        # splunkd passes the settings it owns along with the input's own.
        for key, value in {"disabled": "0", "host": "nv-search-head", "index": "default",
                           "python.version": "python3", "python.required": "3.9,3.13", **params}.items():
            ET.SubElement(st, "param", name=key).text = value
        self.proc = subprocess.Popen([python, str(app / "bin" / (name + ".py"))], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env())
        self.proc.stdin.write(ET.tostring(root))
        self.proc.stdin.close()
        self.events: "queue.Queue[dict]" = queue.Queue()
        self.stderr_lines: List[str] = []
        self.stream_closed = False
        self.parse_error: Optional[Exception] = None
        self._readers = [threading.Thread(target=self._read_stdout, daemon=True),
                         threading.Thread(target=self._read_stderr, daemon=True)]
        for thread in self._readers:
            thread.start()

    def _read_stdout(self) -> None:
        parser = ET.XMLPullParser(events=("start", "end"))
        depth = 0
        try:
            while True:
                chunk = self.proc.stdout.read1(65536)
                if not chunk:
                    break
                parser.feed(chunk)
                for kind, elem in parser.read_events():
                    depth += 1 if kind == "start" else -1
                    if kind == "end" and elem.tag == "event":
                        self.events.put(_event_dict(elem))
                        elem.clear()
                    elif kind == "end" and elem.tag == "stream" and depth == 0:
                        self.stream_closed = True
            if self.stream_closed or depth:
                parser.close()
        except ET.ParseError as exc:
            self.parse_error = exc

    def _read_stderr(self) -> None:
        for line in self.proc.stderr:
            self.stderr_lines.append(line.decode("utf-8", "replace").rstrip("\n"))

    def wait_log(self, pattern: str, timeout: float = 20, count: int = 1) -> str:
        """The ``count``-th log line matching ``pattern``; fails if it does not come."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            matching = [line for line in list(self.stderr_lines) if re.search(pattern, line)]
            if len(matching) >= count:
                return matching[count - 1]
            assert self.proc.poll() is None, "input exited: %s" % self.stderr_lines
            time.sleep(0.02)
        raise AssertionError("no log line matching %r in %s" % (pattern, self.stderr_lines))

    def take(self, count: int, timeout: float = 20) -> List[dict]:
        """The next ``count`` events; fails if they do not come."""
        out, deadline = [], time.monotonic() + timeout
        while len(out) < count:
            assert self.parse_error is None, "stdout is not well-formed XML: %s" % self.parse_error
            try:
                out.append(self.events.get(timeout=max(0.0, min(0.2, deadline - time.monotonic()))))
            except queue.Empty:
                assert time.monotonic() < deadline, "got %d of %d events; stderr: %s" % (
                    len(out), count, self.stderr_lines)
        return out

    def stop(self, timeout: float = 20) -> List[dict]:
        """SIGTERM, as splunkd stops an input; returns the events written until it exited."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout)
        for thread in self._readers:
            thread.join(timeout)
        assert self.parse_error is None, "stdout is not well-formed XML: %s" % self.parse_error
        check_stderr("\n".join(self.stderr_lines))
        rest = []
        while not self.events.empty():
            rest.append(self.events.get())
        return rest


def _event_dict(elem: ET.Element) -> dict:
    out = dict(elem.attrib)
    for child in elem:
        out[child.tag] = child.text if child.tag != "done" else True
    return out
