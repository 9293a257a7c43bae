"""A real Fluentd for the tests: found, started with a config on loopback, stopped.

Which Fluentd: ``NVSIEM_FLUENTD`` (a command line, e.g. the wrapper
``.ci/fluentd-peer`` writes, or ``ruby /src/fluentd/bin/fluentd``), else
``fluentd`` on the PATH. Without one the tests skip with one line; with
``NVSIEM_REQUIRE_FLUENTD=1`` (CI) they fail instead.

``forward_config`` is the receiving end most tests use: ``in_forward`` on
127.0.0.1 (optionally with ``<transport tls>`` / ``<security>``), every
record written by ``out_file`` as a JSON line with its tag and event time
injected, through a file buffer (so what Fluentd acknowledged survives its
``kill -9``) flushed at once. ``records_in`` reads those lines back.
"""
import glob
import json
import os
import shlex
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Dict, Iterable, List, Optional

import pytest

from helpers.loopback import free_port
from helpers.peer_daemon import PeerDaemon

#: What forward_config injects into every record it writes.
TAG_KEY, TIME_KEY = "fluentd_tag", "fluentd_time"


def fluentd_command() -> Optional[List[str]]:
    configured = os.environ.get("NVSIEM_FLUENTD", "").strip()
    if configured:
        return shlex.split(configured)
    found = shutil.which("fluentd")
    return [found] if found else None


def require_fluentd() -> List[str]:
    """The Fluentd command, or skip (fail under ``NVSIEM_REQUIRE_FLUENTD=1``) saying how to get one."""
    command = fluentd_command()
    if command:
        return command
    reason = ("no Fluentd: set NVSIEM_FLUENTD to a fluentd command or put fluentd on the PATH "
              "(gem install fluentd -v 1.16.11, or .ci/fluentd-peer)")
    if os.environ.get("NVSIEM_REQUIRE_FLUENTD") == "1":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


class Fluentd(PeerDaemon):
    """One Fluentd (supervisor and worker) with ``config`` written into ``workdir``."""

    def __init__(self, workdir: Path, config: str, port: int, env: Optional[Dict[str, str]] = None,
                 name: str = "fluentd"):
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir, self.port = workdir, port
        self.config_path = workdir / "fluent.conf"
        self.config_path.write_text(config)
        super().__init__(name, [*require_fluentd(), "-c", str(self.config_path)], workdir / "fluentd.log",
                         {**os.environ, **(env or {})})

    def start(self, timeout: float = 60.0) -> "Fluentd":
        super().start([self.port], timeout)
        return self

    def flush(self) -> None:
        """SIGUSR1: the supervisor has every buffer flushed now (an interval buffer may wait much longer)."""
        self.signal(signal.SIGUSR1)


def dry_run(config_path: Path, env: Optional[Dict[str, str]] = None) -> str:
    """``fluentd --dry-run``: loads and checks a config without starting; raises with Fluentd's output."""
    done = subprocess.run([*require_fluentd(), "--dry-run", "-c", str(config_path)], capture_output=True,
                          text=True, timeout=120, env={**os.environ, **(env or {})})
    output = done.stdout + done.stderr
    assert done.returncode == 0 and "finished dry run mode" in output, output
    return output


def forward_config(port: int, out_dir: Path, transport: str = "", security: str = "") -> str:
    """in_forward on 127.0.0.1:``port`` -> JSON lines under ``out_dir`` (see the module's docstring)."""
    return f"""
<source>
  @type forward
  bind 127.0.0.1
  port {port}
  {transport}
  {security}
</source>

# Fluentd's own log events stay out of the output.
<label @FLUENT_LOG>
  <match **>
    @type null
  </match>
</label>

<match **>
  @type file
  path {out_dir}/records
  append true
  <format>
    @type json
  </format>
  <inject>
    tag_key {TAG_KEY}
    time_key {TIME_KEY}
    time_type unixtime
  </inject>
  <buffer>
    @type file
    path {out_dir}/buffer
    flush_mode immediate
    retry_wait 0.2s
  </buffer>
</match>
"""


def forward_fluentd(workdir: Path, transport: str = "", security: str = "", name: str = "fluentd") -> Fluentd:
    """A Fluentd with ``forward_config`` on a free port, not yet started."""
    port = free_port()
    return Fluentd(workdir, forward_config(port, workdir / "out", transport, security), port, name=name)


def records_in(out_dir: Path) -> List[dict]:
    """Every record ``forward_config``'s out_file wrote under ``out_dir``."""
    return json_lines(glob.glob(str(out_dir / "records*")))


def json_lines(paths: Iterable) -> List[dict]:
    """The complete JSON lines of ``paths`` in name order (a last line a kill cut short is left out)."""
    records = []
    for path in sorted(map(str, paths)):
        with open(path, "rb") as f:
            records += [json.loads(line) for line in f if line.endswith(b"\n") and line.strip()]
    return records
