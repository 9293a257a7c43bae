"""Splunk AppInspect on the built package: the pre-certification run and the
Splunk Cloud run report no failure, error, future failure or skipped check,
and only warnings that ask for nothing (an allow-list, each with the message
that makes it informational).

splunk-appinspect runs from its own virtualenv (.venv-appinspect; it pins
old versions of common libraries) and needs libmagic1 from apt.
"""
import json
import subprocess

import pytest

from helpers.splunk_package import appinspect, build_package

# check -> text its message must contain to count as informational
INFORMATIONAL = {
    "check_for_modular_inputs": "No action required",
    # "Update these Python scripts to be cross-compatible with Python 2 and 3
    # for Splunk Enterprise 8.0": said of any app with Python files.
    "check_for_python_script_existence": "Python files found",
    # precert only: default/inputs.conf (the modular inputs' defaults) is not
    # pushed to Victoria indexers, where no input of this app runs.
    "check_for_indexer_synced_configs": "will not be synced to indexers",
    # Says "detected ... No action required" for a current SDK, "outdated" for an old one.
    "check_python_sdk_version": "No action required",
}


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    return build_package(tmp_path_factory.mktemp("dist"))


@pytest.mark.parametrize("run", [["--mode", "precert"], ["--included-tags", "cloud"]], ids=["precert", "cloud"])
def test_appinspect_passes(package, tmp_path, run):
    report_file = tmp_path / "report.json"
    subprocess.run([str(appinspect()), "inspect", str(package), *run, "--skip-trusted-libraries-update",
                    "--max-messages", "all", "--data-format", "json", "--output-file", str(report_file)],
                   check=True, capture_output=True, timeout=300)
    report = json.loads(report_file.read_text())
    findings = [(check["result"], check["name"], " | ".join(m["message"] for m in check["messages"]))
                for r in report["reports"] for group in r["groups"] for check in group["checks"]
                if check["result"] not in ("success", "not_applicable")]
    problems = [f for f in findings if f[0] != "warning"]
    assert problems == [], problems
    assert report["summary"]["failure"] == report["summary"]["error"] == 0
    assert report["summary"]["future_failure"] == report["summary"]["skipped"] == 0
    for _, name, message in findings:
        assert name in INFORMATIONAL and INFORMATIONAL[name] in message, (name, message)
    assert report["summary"]["success"] > 100  # the checks did run
