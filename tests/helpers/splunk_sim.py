"""What Splunk does with the app's props/transforms, for the tests.

Splunk cannot be installed here, so this applies the app's own .conf text
the way splunkd does, following the props.conf / transforms.conf specs:

* index time: ``LINE_BREAKER`` (the first group is the break, the text
  around it becomes two events), ``TIME_PREFIX`` + ``TIME_FORMAT = %s``,
  ``TRANSFORMS-`` rewriting ``MetaData:Sourcetype`` / ``MetaData:Host``;
* search time, in Splunk's order: ``EXTRACT-`` (named groups), ``REPORT-``
  (transforms in the listed order; ``SOURCE_KEY``, ``FORMAT = $1::$2``,
  ``KEEP_EMPTY_VALS``, ``MV_ADD``; the regex applied repeatedly, a field
  found again discarded), ``FIELDALIAS-``, then every ``EVAL-`` computed
  from the fields as they were before any EVAL ran, then ``LOOKUP-``.

Regexes run on PCRE2 (the ``pcre2`` package), Splunk's engine. ``EVAL-``
expressions are read by a small interpreter for the SPL functions the
generated extractions use; an expression using anything else raises
``Unsupported`` so a test can tell "not modelled" from "wrong".
A field value is a list of strings (one item unless multivalue) or None.
"""
import csv
import json
import re
from pathlib import Path
from typing import Dict, List, Optional

import pcre2

from helpers.splunk_package import splunk_script

splunkconf = splunk_script("splunkconf")

Value = Optional[List[str]]


class Unsupported(Exception):
    """An EVAL expression uses SPL this interpreter does not model."""


class App:
    def __init__(self, app_dir: Path):
        self.dir = app_dir
        self.props = self._conf("props.conf")
        self.transforms = self._conf("transforms.conf")
        self._regex: Dict[str, object] = {}
        self._lookups: Dict[str, List[dict]] = {}

    def _conf(self, name: str) -> splunkconf.Conf:
        path = self.dir / "default" / name
        return splunkconf.parse(path.read_text(encoding="utf-8"), str(path))

    def regex(self, pattern: str):
        compiled = self._regex.get(pattern)
        if compiled is None:
            compiled = self._regex[pattern] = pcre2.compile(pattern)
        return compiled

    # -- index time -------------------------------------------------------
    def break_events(self, sourcetype: str, stream: str) -> List[str]:
        breaker = self.regex(self.props[sourcetype]["LINE_BREAKER"])
        events, start = [], 0
        for m in breaker.finditer(stream):
            events.append(stream[start:m.start(1)])
            start = m.end(1)
        events.append(stream[start:])
        # A stream's last line has no next record to break before; splunkd
        # does not keep the line ending of an event's last line.
        return [e.rstrip("\r\n") for e in events if e.rstrip("\r\n")]

    def event_time(self, sourcetype: str, raw: str) -> Optional[int]:
        props = self.props[sourcetype]
        assert props["TIME_FORMAT"] == "%s"
        m = self.regex(props["TIME_PREFIX"]).search(raw)
        if m is None:
            return None
        digits = re.match(r"\d+", raw[m.end():m.end() + int(props["MAX_TIMESTAMP_LOOKAHEAD"])])
        return int(digits.group()) if digits else None

    def index_time_metadata(self, sourcetype: str, raw: str) -> Dict[str, str]:
        """sourcetype and host after the sourcetype's ``TRANSFORMS-``."""
        meta = {"sourcetype": sourcetype, "host": None}
        for key, value in sorted(self.props[sourcetype].items()):
            if not key.startswith("TRANSFORMS-"):
                continue
            for name in _names(value):
                t = self.transforms[name]
                m = self.regex(t["REGEX"]).search(raw)
                if m is None:
                    continue
                target, _, template = t["FORMAT"].partition("::")
                meta[target] = re.sub(r"\$(\d)", lambda g: m.group(int(g.group(1))), template)
        return meta

    # -- search time ------------------------------------------------------
    def search_fields(self, sourcetype: str, raw: str, eval_targets=None, lookups=None) -> Dict[str, Value]:
        """Fields of one event. ``eval_targets`` / ``lookups`` limit which EVAL-
        and LOOKUP- classes run (None: all of them)."""
        props = self.props[sourcetype]
        fields: Dict[str, Value] = {"_raw": [raw], "sourcetype": [sourcetype]}
        for key in sorted(k for k in props if k.startswith("EXTRACT-")):
            m = self.regex(props[key]).search(raw)
            if m:
                for name, value in m.groupdict().items():
                    if value is not None and value != "" and name not in fields:
                        fields[name] = [value]
        for key in sorted(k for k in props if k.startswith("REPORT-")):
            for name in _names(props[key]):
                self._report(self.transforms[name], fields)
        for key in sorted(k for k in props if k.startswith("FIELDALIAS-")):
            for source, mode, target in re.findall(r"(\S+)\s+(AS|ASNEW)\s+(\S+)", props[key]):
                if fields.get(source) is not None and (mode == "AS" or fields.get(target) is None):
                    fields[target] = list(fields[source])
        before = dict(fields)
        for key, expression in props.items():
            target = key[5:]
            if key.startswith("EVAL-") and (eval_targets is None or target in eval_targets):
                fields[target] = Eval(expression).value(before)
        for key in sorted(k for k in props if k.startswith("LOOKUP-")):
            if lookups is None or key[7:] in lookups:
                self._lookup(props[key], fields)
        return {k: v for k, v in fields.items() if v is not None}

    def _report(self, transform: Dict[str, str], fields: Dict[str, Value]) -> None:
        source = fields.get(transform.get("SOURCE_KEY", "_raw"))
        if not source:
            return
        keep_empty = transform.get("KEEP_EMPTY_VALS", "false") == "true"
        mv_add = transform.get("MV_ADD", "false") == "true"
        fmt = transform.get("FORMAT")
        for m in self.regex(transform["REGEX"]).finditer(source[0]):
            if fmt == "$1::$2":
                found = [(m.group(1), m.group(2))]
            else:
                assert fmt is None, "FORMAT %r not modelled" % fmt
                found = [(k, v) for k, v in m.groupdict().items() if v is not None]
            for name, value in found:
                if value == "" and not keep_empty:
                    continue
                if name not in fields or fields[name] is None:
                    fields[name] = [value]
                elif mv_add:
                    fields[name].append(value)

    def lookup_rows(self, name: str) -> List[dict]:
        rows = self._lookups.get(name)
        if rows is None:
            path = self.dir / "lookups" / self.transforms[name]["filename"]
            with path.open(newline="", encoding="utf-8") as f:
                rows = self._lookups[name] = list(csv.DictReader(f))
        return rows

    def _lookup(self, spec: str, fields: Dict[str, Value]) -> None:
        m = re.match(r"(\S+)\s+(.*?)\s+(OUTPUTNEW|OUTPUT)\s+(.*)$", spec)
        table, inputs, mode, outputs = m.groups()
        keys = _pairs(inputs)
        values = {}
        for column, field in keys:
            value = fields.get(field)
            if value is None:
                return
            values[column] = value[0]
        rows = [r for r in self.lookup_rows(table) if all(r[c] == v for c, v in values.items())]
        for column, field in _pairs(outputs):
            if mode == "OUTPUTNEW" and fields.get(field) is not None:
                continue
            fields[field] = [rows[0][column]] if rows and rows[0][column] != "" else None


def _names(value: str) -> List[str]:
    return [n.strip() for n in value.split(",") if n.strip()]


def _pairs(text: str):
    """``a AS b c`` -> [(a, b), (c, c)]: lookup column, event field."""
    words, out, i = text.split(), [], 0
    while i < len(words):
        if i + 2 < len(words) and words[i + 1] == "AS":
            out.append((words[i], words[i + 2]))
            i += 3
        else:
            out.append((words[i], words[i]))
            i += 1
    return out


# -- EVAL ---------------------------------------------------------------------
_TOKEN = re.compile(r'\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<num>\d+(?:\.\d+)?)'
                    r"|(?P<op>==|!=|>=|<=|[(),.<>=])|(?P<field>'[^']+')|(?P<name>[A-Za-z_][A-Za-z0-9_]*))")
_COMPARISONS = ("==", "!=", ">=", "<=", ">", "<", "=")


class Eval:
    """One SPL eval expression: literals, fields, function calls, ``.``,
    comparisons, ``AND`` / ``OR`` (lowest first: OR, AND, comparison, ``.``)."""

    def __init__(self, text: str):
        self.tokens = []
        pos = 0
        text = text.strip()
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if not m or m.end() == pos:
                raise Unsupported("cannot read %r" % text[pos:pos + 20])
            kind = m.lastgroup
            self.tokens.append((kind, m.group(kind)))
            pos = m.end()
        self.text = text

    def value(self, fields: Dict[str, Value]) -> Value:
        self.fields, self.i = fields, 0
        result = self._or()
        if self.i != len(self.tokens):
            raise Unsupported("trailing tokens in %r" % self.text)
        return result

    def _peek(self):
        return self.tokens[self.i] if self.i < len(self.tokens) else (None, None)

    def _take(self, expected=None):
        token = self._peek()
        if expected is not None and token[1] != expected:
            raise Unsupported("expected %r in %r" % (expected, self.text))
        self.i += 1
        return token

    def _keyword(self, word: str) -> bool:
        kind, text = self._peek()
        if kind == "name" and text == word:
            self.i += 1
            return True
        return False

    def _or(self):
        return self._chain("OR", self._and, any)

    def _and(self):
        return self._chain("AND", self._comparison, all)

    def _chain(self, word: str, operand, combine):
        left = operand()
        while self._keyword(word):
            right = operand()
            left = _bool(combine((_truth(left), _truth(right))))
        return left

    def _comparison(self):
        left = self._concat()
        op = self._peek()[1]
        if op in _COMPARISONS:
            self._take()
            right = self._concat()
            if left is None or right is None:
                return None
            a, b = _number(left[0]), _number(right[0])
            if a is None or b is None:
                a, b = left[0], right[0]
            return _bool({"==": a == b, "=": a == b, "!=": a != b, ">=": a >= b,
                          "<=": a <= b, ">": a > b, "<": a < b}[op])
        return left

    def _concat(self):
        left = self._atom()
        while self._peek()[1] == ".":
            self._take()
            right = self._atom()
            left = None if left is None or right is None else [left[0] + right[0]]
        return left

    def _atom(self):
        kind, text = self._take()
        if kind == "str":
            return [re.sub(r"\\([\\\"])", r"\1", text[1:-1])]
        if kind == "num":
            return [text]
        if kind == "field":
            return self.fields.get(text[1:-1])
        if text == "(":
            inner = self._or()
            self._take(")")
            return inner
        if kind == "name":
            if self._peek()[1] == "(":
                return self._call(text)
            return self.fields.get(text)
        raise Unsupported("unexpected %r in %r" % (text, self.text))

    def _args(self):
        self._take("(")
        args = []
        while self._peek()[1] != ")":
            args.append(self._or())
            if self._peek()[1] == ",":
                self._take()
        self._take(")")
        return args

    def _call(self, name: str):
        args = self._args()
        function = _FUNCTIONS.get(name)
        if function is None:
            raise Unsupported("function %s()" % name)
        return function(*args)


def _number(text: str):
    try:
        return float(text)
    except ValueError:
        return None


def _bool(value: bool) -> List[str]:
    return ["true" if value else "false"]


def _spath(document: Value, path: Value) -> Value:
    if document is None:
        return None
    try:
        node = json.loads(document[0], parse_float=str, parse_int=str)
    except ValueError:
        return None
    for part in path[0].split("."):
        multi = part.endswith("{}")
        node = node.get(part[:-2] if multi else part) if isinstance(node, dict) else None
        if node is None:
            return None
        if multi:
            return [_spath_text(v) for v in node] if isinstance(node, list) and node else None
    return [_spath_text(node)]


def _spath_text(node) -> str:
    if isinstance(node, bool):
        return "true" if node else "false"
    if isinstance(node, (dict, list)):
        return json.dumps(node, separators=(",", ":"), ensure_ascii=False)
    return str(node)


def _replace(value: Value, pattern: Value, replacement: Value) -> Value:
    if value is None:
        return None
    regex = pcre2.compile(pattern[0])
    template = replacement[0]

    def substitute(m):
        return re.sub(r"\\(\d)", lambda g: m.group(int(g.group(1))) or "", template)
    return [_sub(regex, substitute, v) for v in value]


def _sub(regex, substitute, text: str) -> str:
    out, last = [], 0
    for m in regex.finditer(text):
        out.append(text[last:m.start()])
        out.append(substitute(m))
        last = m.end()
    out.append(text[last:])
    return "".join(out)


def _truth(value: Value) -> bool:
    return value == ["true"]


def _case(*args) -> Value:
    for condition, value in zip(args[::2], args[1::2]):
        if _truth(condition):
            return value
    return None


def _match(value: Value, pattern: Value) -> Value:
    return None if value is None else _bool(pcre2.compile(pattern[0]).search(value[0]) is not None)


def _mvappend(*args) -> Value:
    values = [v for a in args if a is not None for v in a]
    return values or None


_FUNCTIONS = {
    "case": _case,
    "match": _match,
    "mvappend": _mvappend,
    "mvjoin": lambda value, sep: None if value is None else [sep[0].join(value)],
    "isnotnull": lambda value: _bool(value is not None),
    "true": lambda: ["true"],
    "coalesce": lambda *args: next((a for a in args if a is not None), None),
    "spath": _spath,
    "if": lambda cond, a, b: a if _truth(cond) else b,
    "isnull": lambda value: _bool(value is None),
    "null": lambda: None,
    "nullif": lambda a, b: None if a is not None and b is not None and a == b else a,
    "split": lambda value, sep: None if value is None else value[0].split(sep[0]),
    "replace": _replace,
}


# -- search filters (eventtypes) ------------------------------------------------
_SEARCH_TOKEN = re.compile(r'\s*(?:(?P<paren>[()])|(?P<term>[A-Za-z_][\w.]*=(?:"[^"]*"|[^\s()]+))|(?P<word>\S+))')


def matches(search: str, fields: Dict[str, Value]) -> bool:
    """Whether an event's fields satisfy a search filter of ``field=value``
    terms (wildcards ``*``; values case-insensitive, as Splunk compares them)
    combined with implicit AND, ``OR``, ``NOT`` and parentheses."""
    tokens = [(m.lastgroup, m.group(m.lastgroup)) for m in _SEARCH_TOKEN.finditer(search)]
    position = [0]

    def peek():
        return tokens[position[0]] if position[0] < len(tokens) else (None, None)

    def take():
        position[0] += 1
        return tokens[position[0] - 1]

    def disjunction():
        result = conjunction()
        while peek()[1] == "OR":
            take()
            result = conjunction() or result
        return result

    def conjunction():
        result = True
        while peek()[0] is not None and peek()[1] not in ("OR", ")"):
            if peek()[1] == "AND":
                take()
            result = negation() and result
        return result

    def negation():
        if peek()[1] == "NOT":
            take()
            return not negation()
        kind, text = take()
        if text == "(":
            result = disjunction()
            take()
            return result
        if kind != "term":
            raise Unsupported("search word %r" % text)
        name, _, value = text.partition("=")
        pattern = re.compile(re.escape(value.strip('"')).replace(r"\*", ".*") + r"\Z", re.I | re.S)
        return any(pattern.match(v) for v in fields.get(name) or [])

    return disjunction()
