"""Every benchmark still imports and reads its options (``--help``), so ``make bench`` cannot rot unseen.

Timing itself is never tested; this runs none of the measurements.
"""
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = sorted((Path(__file__).resolve().parents[1] / "benchmarks").glob("bench_*.py"))


def test_run_all_runs_every_benchmark():
    run_all = (BENCHMARKS[0].parent / "run_all.py").read_text()
    assert all('"%s"' % path.name in run_all for path in BENCHMARKS)


@pytest.mark.parametrize("path", BENCHMARKS, ids=lambda p: p.name)
def test_the_benchmark_imports_and_shows_its_options(path):
    done = subprocess.run([sys.executable, str(path), "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout
