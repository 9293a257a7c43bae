"""Build the Splunk app package for the tests, as ``make splunk-app`` does.

The splunk-sdk 3.0.1 wheel the package vendors splunklib from, and the
``.venv-appinspect`` virtualenv with splunk-appinspect, are fetched from PyPI
on first use and kept (``.cache/wheels``, ``.venv-appinspect``) so later runs
work offline.
"""
import importlib
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SDK_VERSION = "3.0.1"
APPINSPECT_VERSION = "4.3.1"
WHEEL_DIR = ROOT / ".cache" / "wheels"
APPINSPECT_VENV = ROOT / ".venv-appinspect"


def splunk_script(name: str):
    """One of the app's build scripts (``gen_conf``, ``splunkconf``) as a module.

    They are scripts, run by path (``python splunk_app/build.py``) beside each
    other, not an installed package: imported the same way here.
    """
    scripts = str(ROOT / "splunk_app")
    if scripts not in sys.path:
        sys.path.append(scripts)
    return importlib.import_module(name)


def sdk_wheel() -> Path:
    wheel = WHEEL_DIR / ("splunk_sdk-%s-py3-none-any.whl" % SDK_VERSION)
    if not wheel.exists():
        # PyPI offers 3.x only to Python >= 3.13; the wheel itself is pure Python.
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                        "--python-version", "3.13", "-d", str(WHEEL_DIR), "splunk-sdk==%s" % SDK_VERSION],
                       check=True, timeout=300)
    return wheel


def build_package(out_dir: Path) -> Path:
    """Run splunk_app/build.py with the 3.0.1 wheel; returns the .tgz."""
    done = subprocess.run([sys.executable, str(ROOT / "splunk_app" / "build.py"), "--out", str(out_dir),
                           "--sdk-wheel", str(sdk_wheel())],
                          check=True, capture_output=True, text=True, timeout=120)
    return Path(done.stdout.strip())


def appinspect() -> Path:
    """The splunk-appinspect command, installed into .venv-appinspect if missing."""
    command = APPINSPECT_VENV / "bin" / "splunk-appinspect"
    if not command.exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(APPINSPECT_VENV)], check=True, timeout=120)
        subprocess.run([str(APPINSPECT_VENV / "bin" / "pip"), "install", "-q",
                        "splunk-appinspect==%s" % APPINSPECT_VERSION], check=True, timeout=600)
    return command
