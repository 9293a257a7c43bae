"""The files in fluentd/: Kubernetes manifests, Fluentd configs, Dockerfile.

Fluentd and a Kubernetes API server are not available here, so:
- manifests are validated offline against the OpenAPI schemas that
  kubernetes-validate ships, and cross-checked against each other;
- Fluentd configs are read by a small parser of Fluentd's config syntax
  (directives ``<name arg>...</name>``, ``key value`` parameters, ``#``
  comments, quoted strings). It proves structure and the settings that
  matter, not that Fluentd would accept every value: that needs a real
  Fluentd (``fluentd --dry-run -c fluentd/aggregator/fluent.conf``).
"""
import re
import socket
from pathlib import Path
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from nvsiem.config import split_list
from nvsiem_fluentd.config import parse_url

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "fluentd" / "k8s"
MANIFESTS = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def documents():
    return [doc for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text()) if doc]


def by_kind(kind):
    (found,) = [d for d in documents() if d["kind"] == kind]
    return found


@pytest.fixture
def no_network(monkeypatch):
    """Any connection attempt fails: schema validation must work offline."""
    def refuse(self, address):
        raise OSError(f"network access attempted during an offline test: {address}")
    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.mark.parametrize("version", ["1.29.0", "1.33.0"])
def test_manifests_validate_offline_against_kubernetes_schemas(no_network, version):
    docs = documents()
    assert {d["kind"] for d in docs} == {"ConfigMap", "PersistentVolumeClaim", "Deployment", "Service"}
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)  # raises on any schema error


def test_validation_does_reject_a_broken_manifest(no_network):
    broken = by_kind("Deployment")
    broken["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "syslog"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, "1.33.0", strict=True)


def test_kustomization_lists_every_manifest():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(p.name for p in MANIFESTS)


def pod():
    return by_kind("Deployment")["spec"]["template"]


def config_map(name):
    return next(d for d in documents() if d["kind"] == "ConfigMap" and d["metadata"]["name"] == name)["data"]


def collector_env():
    """The collector's environment as Kubernetes builds it: the ConfigMap, then ``env`` over it."""
    (collector,) = pod()["spec"]["containers"]
    env = dict(config_map("nvsiem-collector"))
    env.update({e["name"]: e.get("value", e.get("valueFrom")) for e in collector.get("env", ())})
    return env


def test_metrics_listen_on_the_pod_ip_from_the_downward_api():
    env = collector_env()
    assert env["POD_IP"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert urlsplit(env["NVSIEM_METRICS"]).netloc.startswith("$(POD_IP):")  # Kubernetes expands it


def test_fluentd_is_a_native_sidecar_and_the_collector_waits_for_it():
    spec = pod()["spec"]
    (sidecar,) = spec["initContainers"]
    assert sidecar["restartPolicy"] == "Always"  # native sidecar: starts first, stops last
    (source,) = [s for s in sidecar_conf().children if s.name == "source"]
    bind, port = source.params["bind"], source.params["port"]
    for probe in (sidecar["startupProbe"], sidecar["livenessProbe"]):
        # A tcpSocket probe dials the pod IP: it can only reach an input bound to all addresses.
        if "tcpSocket" in probe:
            assert bind == "0.0.0.0" and str(probe["tcpSocket"]["port"]) == port
        else:
            assert f"TCPSocket.new('{bind}', {port})" in probe["exec"]["command"][-1]
    (collector,) = spec["containers"]
    assert collector["args"] == ["listen"]


def test_collector_probes_use_the_metrics_port_and_only_readiness_asks_healthz():
    (collector,) = pod()["spec"]["containers"]
    port_numbers = {p["name"]: p["containerPort"] for p in collector["ports"]}
    metrics_port = urlsplit(collector_env()["NVSIEM_METRICS"]).port
    ready = collector["readinessProbe"]["httpGet"]
    assert ready["path"] == "/healthz" and port_numbers[ready["port"]] == metrics_port
    # /healthz is 503 while the spool is full: that takes the pod out of the Service,
    # and must not get it restarted (liveness), which would not empty the spool.
    live = collector["livenessProbe"]
    assert "httpGet" not in live and port_numbers[live["tcpSocket"]["port"]] == metrics_port


def test_spool_is_on_the_persistent_volume_claim():
    spec = pod()["spec"]
    claim = by_kind("PersistentVolumeClaim")["metadata"]["name"]
    (volume,) = [v for v in spec["volumes"] if v.get("persistentVolumeClaim", {}).get("claimName") == claim]
    (collector,) = spec["containers"]
    mounts = {m["mountPath"]: m for m in collector["volumeMounts"] if m["name"] == volume["name"]}
    assert collector_env()["NVSIEM_SPOOL"] in mounts
    (sidecar,) = spec["initContainers"]
    buffer_mounts = [m["mountPath"] for m in sidecar["volumeMounts"] if m["name"] == volume["name"]]
    assert buffer_mounts == ["/fluentd/buffer"]
    # the sidecar's file buffer lives on that mount, so its acks survive a restart
    buffers = [s for s in sections(sidecar_conf()) if s.name == "buffer"]
    assert buffers and all(b.params["@type"] == "file" and b.params["path"].startswith("/fluentd/buffer/")
                           for b in buffers)


def test_service_ports_match_the_collector_listen_urls():
    service = by_kind("Service")
    (collector,) = pod()["spec"]["containers"]
    listen = [urlsplit(u) for u in split_list(collector_env()["NVSIEM_LISTEN"])]
    assert {u.scheme for u in listen} == {"tcp", "tls"}  # no UDP: it loses events
    container_ports = {p["name"]: (p["containerPort"], p["protocol"]) for p in collector["ports"]}
    exposed = {(p["port"], p["protocol"]) for p in service["spec"]["ports"]}
    assert exposed == {(u.port, "TCP") for u in listen}
    for port in service["spec"]["ports"]:
        assert container_ports[port["targetPort"]] == (port["port"], port["protocol"])
    labels = pod()["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()


def test_the_collector_sends_to_the_sidecars_forward_input():
    settings = parse_url(collector_env()["NVSIEM_TO"])
    ((host, port),) = [(s.host, s.port) for s in settings.servers]
    (forward_in,) = [s for s in sections(sidecar_conf()) if s.name == "source"]
    assert forward_in.params["@type"] == "forward"
    assert (host, port) == (forward_in.params["bind"], int(forward_in.params["port"]))
    assert settings.tag_prefix == "neuvector"


# -- Fluentd config syntax ---------------------------------------------------

class Section:
    def __init__(self, name, arg, parent):
        self.name, self.arg, self.parent = name, arg, parent
        self.params, self.children = {}, []


_OPEN = re.compile(r"<([a-zA-Z_][\w-]*)(?:\s+([^>]*))?>\Z")
_CLOSE = re.compile(r"</([a-zA-Z_][\w-]*)>\Z")
_PARAM = re.compile(r"(@?[a-zA-Z_][\w.-]*)(?:\s+(.*))?\Z")
TOP_LEVEL = {"system", "source", "match", "filter", "label", "worker"}


def parse_fluentd_conf(text):
    """A tree of Sections; raises ValueError with the line number on bad syntax."""
    root = current = Section("ROOT", "", None)
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if _CLOSE.match(line):
            name = _CLOSE.match(line).group(1)
            if current is root or name != current.name:
                raise ValueError(f"line {number}: </{name}> does not close <{current.name}>")
            current = current.parent
        elif _OPEN.match(line):
            name, arg = _OPEN.match(line).groups()
            if current is root and name not in TOP_LEVEL:
                raise ValueError(f"line {number}: <{name}> is not a top-level directive")
            section = Section(name, (arg or "").strip(), current)
            current.children.append(section)
            current = section
        else:
            match = _PARAM.match(line)
            if not match or current is root:
                raise ValueError(f"line {number}: not a parameter inside a section: {line!r}")
            key, value = match.group(1), _value(match.group(2) or "", number)
            if key in current.params:
                raise ValueError(f"line {number}: {key} set twice in <{current.name}>")
            current.params[key] = value
    if current is not root:
        raise ValueError(f"<{current.name}> is never closed")
    return root


def _value(text, number):
    if text.startswith('"'):
        if not (len(text) > 1 and text.endswith('"')) or re.search(r'(?<!\\)"', text[1:-1]):
            raise ValueError(f"line {number}: unbalanced double-quoted string {text!r}")
        return text[1:-1]
    return text.split(" #")[0].strip()


def sections(root):
    for child in root.children:
        yield child
        yield from sections(child)


def sidecar_conf():
    return parse_fluentd_conf(config_map("nvsiem-fluentd")["fluent.conf"])


def aggregator_conf():
    return parse_fluentd_conf((ROOT / "fluentd" / "aggregator" / "fluent.conf").read_text())


@pytest.mark.parametrize("bad", [
    "<source>\n@type forward\n",
    "<source>\n@type forward\n</match>",
    "<source>\n@type forward\nport 1\nport 2\n</source>",
    "<transport tls>\n</transport>",
    '<source>\nshared_key "abc\n</source>',
])
def test_the_small_config_parser_rejects_broken_syntax(bad):
    with pytest.raises(ValueError):
        parse_fluentd_conf(bad)


def test_every_source_match_and_buffer_names_its_plugin():
    for conf in (aggregator_conf(), sidecar_conf()):
        for section in sections(conf):
            if section.name in ("source", "match", "store", "buffer", "format"):
                assert section.params.get("@type"), f"<{section.name} {section.arg}> has no @type"


def test_aggregator_receives_with_tls_and_shared_key_and_buffers_on_disk():
    conf = aggregator_conf()
    (source,) = [s for s in conf.children if s.name == "source"]
    assert source.params["@type"] == "forward" and source.params["port"] == "24224"
    children = {c.name: c for c in source.children}
    assert children["transport"].arg == "tls" and children["transport"].params["cert_path"]
    assert children["security"].params["shared_key"] == "#{ENV['FLUENTD_SHARED_KEY']}"
    (route,) = [s for s in conf.children if s.name == "match" and s.arg == "neuvector.**"]
    buffers = [s for s in sections(route) if s.name == "buffer"]
    assert buffers and all(b.params["@type"] == "file" for b in buffers)
    # neuvector.** comes before the catch-all, or the catch-all would swallow it
    assert [s.arg for s in conf.children if s.name == "match"] == ["neuvector.**", "**"]


def required_time_placeholders(timekey: str) -> set:
    """What out_file's path must hold for a timekey: every unit down to it."""
    seconds = int(timekey[:-1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[timekey[-1]] if timekey[-1].isalpha() \
        else int(timekey)
    needed = {"%Y", "%m", "%d"}
    if seconds % 86400:
        needed.add("%H")
    if seconds % 3600:
        needed.add("%M")
    if seconds % 60:
        needed.add("%S")
    return needed


def test_file_outputs_hold_a_time_placeholder_for_their_timekey():
    """Fluentd refuses to start otherwise ("insufficient timestamp placeholders in path")."""
    assert required_time_placeholders("1h") == {"%Y", "%m", "%d", "%H"}
    assert required_time_placeholders("86400") == {"%Y", "%m", "%d"}
    outputs = [s for conf in (aggregator_conf(), sidecar_conf()) for s in sections(conf)
               if s.params.get("@type") == "file" and "path" in s.params and s.name in ("match", "store")]
    assert outputs
    for output in outputs:
        buffer = {c.name: c for c in output.children}["buffer"]
        if "time" in buffer.arg.split(","):
            missing = required_time_placeholders(buffer.params["timekey"]) - set(re.findall(r"%[A-Za-z]", output.params["path"]))
            assert not missing, f"{output.params['path']}: timekey {buffer.params['timekey']} needs {sorted(missing)}"


def test_sidecar_forwards_with_acks_tls_and_shared_key():
    (out,) = [s for s in sidecar_conf().children if s.name == "match" and s.arg == "neuvector.**"]
    assert out.params["@type"] == "forward"
    assert out.params["require_ack_response"] == "true" and out.params["transport"] == "tls"
    assert "shared_key" in {c.name: c for c in out.children}["security"].params


def test_dockerfile_copies_paths_that_exist():
    dockerfile = (ROOT / "fluentd" / "Dockerfile").read_text()
    copies = [line.split()[1:-1] for line in dockerfile.splitlines() if line.startswith("COPY ") and "--from" not in line]
    assert copies
    for sources in copies:
        for source in sources:
            assert (ROOT / source).exists(), source
    # everything pip needs to build the package, its C accelerator included
    assert {"setup.cfg", "setup.py", "pyproject.toml", "parser/nvparser"} <= {s for c in copies for s in c}
    assert 'ENTRYPOINT ["nvsiem"]' in dockerfile
