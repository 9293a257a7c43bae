"""Build the Splunk app package: dist/neuvector_siem-<version>.tgz.

    python splunk_app/build.py [--out dist] [--sdk-wheel splunk_sdk-3.0.1-py3-none-any.whl]

``make splunk-app`` passes the splunk-sdk 3.0.1 wheel (PyPI only offers it to
Python >= 3.13, but its splunklib core runs on Splunk's 3.9 too; AppInspect
calls 2.x outdated); without ``--sdk-wheel`` splunklib comes from the
splunk-sdk installed in the Python running the build. The package holds:

* ``splunk_app/neuvector_siem/`` as it is in the source tree (no ``local/``,
  no ``local.meta``, no caches or dotfiles);
* ``lib/nvparser``: the parser's Python modules (not its optional C
  accelerator: the app must run wherever Splunk does, and the pure-Python
  path gives the same records);
* ``lib/nvsiem_splunk``: what runs inside Splunk, the modular inputs and
  what they share, whole (the collector's HEC sink is its own package,
  ``nvsiem_splunk_hec``, and is not part of the app);
* ``lib/splunklib``: splunk-sdk's package but its ``searchcommands/`` (the
  app has no search command, and AppInspect flags their threads);
* from a wheel, splunk-sdk's dist-info (``METADATA``, ``WHEEL``, licence):
  splunklib 3.x reads its own version from it on every REST call.

Everything is 0644 except the scripts in ``bin/`` (0755); entries are sorted
and dated ``SOURCE_DATE_EPOCH`` (default 1980-01-01), owned by root, so the
same tree always gives the same bytes. The build stops if the generated
props/transforms are out of date or the versions in app.conf and
app.manifest disagree.
"""
import argparse
import gzip
import io
import json
import os
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Dict, List, Set, Tuple

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
APP_ID = "neuvector_siem"
APP_DIR = HERE / APP_ID
EPOCH_1980 = 315532800
SKIP_DIRS = {"local", "__pycache__"}
SKIP_FILES = {"local.meta"}
#: splunklib's custom search commands: the app has none, and AppInspect flags their threads.
SPLUNKLIB_SKIP = {"searchcommands"}

sys.path.insert(0, str(HERE))
import gen_conf  # noqa: E402
import splunkconf  # noqa: E402


class BuildError(Exception):
    pass


def package_roots(sdk_dir: Path = None) -> Dict[str, Path]:
    """Top-level packages the app vendors into lib/, and where their source is."""
    if sdk_dir is None:
        import splunklib  # the splunk-sdk of the Python running the build
        sdk_dir = Path(splunklib.__file__).resolve().parent.parent
    return {
        "nvparser": ROOT / "parser" / "nvparser",
        "nvsiem_splunk": HERE / "nvsiem_splunk",
        "splunklib": sdk_dir / "splunklib",
    }


def _sdk_metadata(sdk_dir: Path) -> Dict[str, Path]:
    """lib/ path -> file, for the dist-info a splunk-sdk wheel carries (not its RECORD of hashes)."""
    out = {}
    for info in sdk_dir.glob("splunk_sdk-*.dist-info"):
        for path in sorted(info.rglob("*")):
            if path.is_file() and path.name != "RECORD":
                out[path.relative_to(sdk_dir).as_posix()] = path
    return out


def app_version() -> str:
    conf = splunkconf.parse((APP_DIR / "default" / "app.conf").read_text(encoding="utf-8"), "app.conf")
    manifest = json.loads((APP_DIR / "app.manifest").read_text(encoding="utf-8"))
    versions = {
        "app.conf [id] version": conf["id"]["version"],
        "app.conf [launcher] version": conf["launcher"]["version"],
        "app.manifest info.id.version": manifest["info"]["id"]["version"],
    }
    if len(set(versions.values())) != 1:
        raise BuildError("versions disagree: %s" % versions)
    if conf["package"]["id"] != APP_ID or conf["id"]["name"] != APP_ID:
        raise BuildError("app.conf ids must be %s" % APP_ID)
    return conf["id"]["version"]


def check_generated() -> None:
    for name, text in gen_conf.generate().items():
        path = APP_DIR / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            raise BuildError("%s is out of date: run python splunk_app/gen_conf.py" % path.relative_to(ROOT))


def package_files(sdk_dir: Path = None) -> List[Tuple[str, Path]]:
    """(path inside the tarball, source file), sorted. ``sdk_dir``: an unpacked splunk-sdk wheel."""
    files: Dict[str, Path] = {}
    for path in sorted(APP_DIR.rglob("*")):
        rel = path.relative_to(APP_DIR)
        if path.is_dir() or any(p in SKIP_DIRS or p.startswith(".") for p in rel.parts):
            continue
        if rel.name in SKIP_FILES or rel.suffix in (".pyc", ".pyo"):
            continue
        files["%s/%s" % (APP_ID, rel.as_posix())] = path
    for top, root in package_roots(sdk_dir).items():
        for path in sorted(root.rglob("*.py")):
            rel = path.relative_to(root)
            if "__pycache__" not in rel.parts and not (top == "splunklib" and rel.parts[0] in SPLUNKLIB_SKIP):
                files["%s/lib/%s/%s" % (APP_ID, top, rel.as_posix())] = path
    if sdk_dir is not None:
        for rel, path in _sdk_metadata(sdk_dir).items():
            files["%s/lib/%s" % (APP_ID, rel)] = path
    return sorted(files.items())


def _info(name: str, size: int, mode: int, mtime: int, directory: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.size, info.mode, info.mtime = size, mode, mtime
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def build(out_dir: Path, sdk_wheel: Path = None) -> Path:
    if sdk_wheel is None:
        return _build(out_dir, None)
    with tempfile.TemporaryDirectory() as unpacked:
        with zipfile.ZipFile(sdk_wheel) as wheel:
            wheel.extractall(unpacked)
        return _build(out_dir, Path(unpacked))


def _build(out_dir: Path, sdk_dir) -> Path:
    version = app_version()
    check_generated()
    mtime = int(os.environ.get("SOURCE_DATE_EPOCH", EPOCH_1980))
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / ("%s-%s.tgz" % (APP_ID, version))
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        directories: Set[str] = set()
        for name, source in package_files(sdk_dir):
            parts = name.split("/")
            for i in range(1, len(parts)):
                directory = "/".join(parts[:i])
                if directory not in directories:
                    directories.add(directory)
                    tar.addfile(_info(directory, 0, 0o755, mtime, directory=True))
            data = source.read_bytes()
            executable = parts[1] == "bin" and name.endswith(".py")
            tar.addfile(_info(name, len(data), 0o755 if executable else 0o644, mtime), io.BytesIO(data))
    with open(target, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz:
        gz.write(buffer.getvalue())
    return target


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "dist", help="output directory (default: dist/)")
    parser.add_argument("--sdk-wheel", type=Path, help="vendor splunklib from this splunk-sdk wheel")
    args = parser.parse_args(argv)
    try:
        target = build(args.out, args.sdk_wheel)
    except BuildError as e:
        print("build.py: %s" % e, file=sys.stderr)
        return 1
    print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
