"""Read and write Splunk .conf files by Splunk's own rules.

Used by the generator (``gen_conf.py``) to merge hand-written and
generated stanzas, and by the tests to read what the app ships. The rules:
``#`` starts a comment only at the start of a line; ``[name]`` opens a
stanza; ``key = value`` splits at the first ``=`` with the spaces around
both trimmed; a line ending in ``\\`` continues on the next one (the
newline stays in the value, as in a multi-line search); keys before the
first stanza belong to ``default``. Anything else is an error here, where
Splunk would skip it silently.
"""
from typing import Dict, List

Conf = Dict[str, Dict[str, str]]


class ConfError(ValueError):
    """A line Splunk would not understand, or a key set twice in a stanza."""


def parse(text: str, source: str = "<conf>") -> Conf:
    conf: Conf = {}
    stanza = conf.setdefault("default", {})
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        number, line = i + 1, lines[i].rstrip("\r")
        i += 1
        while line.endswith("\\") and i < len(lines):
            line = line[:-1] + "\n" + lines[i].rstrip("\r")
            i += 1
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("[") and stripped.endswith("]"):
            stanza = conf.setdefault(stripped[1:-1], {})
            continue
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfError(f"{source}:{number}: not a [stanza] or key = value: {line!r}")
        if key in stanza:
            raise ConfError(f"{source}:{number}: {key} set twice in its stanza")
        stanza[key] = value.strip()
    if not conf["default"]:
        del conf["default"]
    return conf


def dump(conf: Conf, header: str = "") -> str:
    """The text of ``conf``; multi-line values get Splunk's ``\\`` continuation."""
    out: List[str] = [header.rstrip("\n") + "\n"] if header else []
    for name, keys in conf.items():
        if out:
            out.append("")
        out.append(f"[{name}]")
        for key, value in keys.items():
            out.append(f"{key} = " + value.replace("\n", "\\\n"))
    return "\n".join(out) + "\n"


def merge(*confs: Conf) -> Conf:
    """Stanzas of all ``confs`` in order of first appearance; a key set twice is an error."""
    merged: Conf = {}
    for conf in confs:
        for name, keys in conf.items():
            target = merged.setdefault(name, {})
            for key, value in keys.items():
                if key in target:
                    raise ConfError(f"[{name}] {key} is set by both the template and the generator")
                target[key] = value
    return merged
