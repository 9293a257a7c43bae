"""``key=value`` extensions (CEF) and attributes (LEEF), built fast.

A record's keys repeat from one record to the next (NeuVector sends its
fields in struct order), so the work of deciding each key, label and
conversion is done once per key sequence and value-type sequence (a
*form*) and a record costs one ``%`` format of its values plus one pass
per escaped character over the result.

The form's template marks the ``=`` after each key with ``\\x00``, the
separator between pairs with ``\\x01`` and the one between a custom slot's
label and its value with ``\\x02``: values are then escaped in one pass over
the whole text without touching a key, pairs whose value is empty are cut
out by one regular expression, and the marks become ``=`` and the
separator last. A record whose values hold those control characters
(rare: JSON writes them as ``\\u0000``...) takes the slow path, which
escapes each value on its own; both give the same text.
"""
import operator
import re
import time
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

from nvparser import json_dumps

from .rfc5424 import LAST_SECOND

#: (key, label, converter or None) for a field whose value has a type; None: the field is not in the pairs.
KeyFor = Callable[[str, str, type], Optional[Tuple[str, str, Optional[Callable]]]]

_EQ, _SEP, _LABEL_SEP = "\x00", "\x01", "\x02"
_WORD = re.compile(r"[A-Za-z0-9_]+")
#: Seconds -> milliseconds (CEF's rt), as a bound C method (see _CONVERT).
to_milliseconds = (1000).__mul__


def dev_time_can_say(seconds: float) -> bool:
    """LEEF's devTime format has room for the years 1970 to 9999."""
    return 0 <= seconds <= LAST_SECOND


def dev_time(seconds: float) -> str:
    """Seconds -> LEEF's devTime; "" (the attribute left out) where ``dev_time_can_say`` says no."""
    if not dev_time_can_say(seconds):
        return ""
    whole = int(seconds // 1)
    return "%s.%03d+0000" % (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)), int((seconds - whole) * 1000))


_MAX_PLANS = 4096
_EMPTY = re.compile(r"(?:^|\x01)(?:[A-Za-z0-9_]+\x00[A-Za-z0-9_]+\x02)?[A-Za-z0-9_]+\x00(?=\x01|\Z)")


def _json(value) -> str:
    return json_dumps(value).decode("utf-8")


def _nothing(value) -> str:
    return ""


#: How a value of each JSON type is written, where ``%s`` would not do (str and int print as they are).
#: Bound C methods where one does the job: a Python function call costs as much as the rest of a value.
_CONVERT = {bool: {True: "true", False: "false"}.__getitem__, float: repr, list: _json, dict: _json,
            type(None): _nothing}


class Form(NamedTuple):
    template: str
    #: (position, converter) for the values ``%s`` would not print as the format wants.
    converts: Tuple[Tuple[int, Callable], ...]
    #: (key, label) per position; label is "" but for custom slots.
    keys: Tuple[Tuple[str, str], ...]


class _Plan:
    """The fields of one key sequence that go into the pairs, and a form per value-type sequence."""

    def __init__(self, fields: Sequence[str]):
        self.fields = tuple(fields)
        if len(self.fields) > 1:
            self.values = operator.itemgetter(*self.fields)
        elif self.fields:
            only = self.fields[0]
            self.values = lambda record: (record[only],)
        else:
            self.values = lambda record: ()
        self.forms: Dict[tuple, Form] = {}


class PairEncoder:
    """``encode(record)``: the record's pairs, escaped, joined by ``separator``.

    ``key_for(notification, field, value_type)`` says where a field goes
    (None: not in the pairs); ``escapes`` are (character, replacement) in
    the order they apply, the escape character itself first; a label goes
    as ``<key><label_suffix>=<label>`` before its value.
    """

    def __init__(self, key_for: KeyFor, separator: str, escapes: Sequence[Tuple[str, str]],
                 label_suffix: str = "Label"):
        self._key_for = key_for
        self._separator = separator
        self._escapes = tuple(escapes)
        self._label_suffix = label_suffix
        self._plans: Dict[tuple, _Plan] = {}

    def encode(self, record: dict, plain: bool = False) -> str:
        """``plain``: the caller knows no value holds ``\\x00``, ``\\x01`` or ``\\x02`` (the fast path)."""
        plan, values, form = self._form_for(record)
        if form.converts:
            values = list(values)
            for position, convert in form.converts:
                values[position] = convert(values[position])
        if not plain:
            return self._slowly(form, values)
        text = form.template % tuple(values)
        if "\x00\x01" in text or text.endswith("\x00"):
            text = _EMPTY.sub("", text).lstrip(_SEP)
        text = self._escape(text)
        return text.replace(_EQ, "=").replace(_LABEL_SEP, self._separator).replace(_SEP, self._separator)

    def _form_for(self, record: dict) -> Tuple[_Plan, tuple, Form]:
        """The plan of the record's keys, its values in the pairs, and the form of their types."""
        notification = record.get("notification")
        plan_key = (notification, *record)
        plan = self._plans.get(plan_key)
        if plan is None:
            if len(self._plans) >= _MAX_PLANS:  # a stream of ever new key sets: start afresh rather than grow
                self._plans.clear()
            plan = self._plans[plan_key] = self._plan(notification, record)
        values = plan.values(record)
        types = tuple(map(type, values))
        form = plan.forms.get(types)
        if form is None:
            form = plan.forms[types] = self._form(notification, plan.fields, types)
        return plan, values, form

    def native_form(self, record: dict, actions) -> Optional[tuple]:
        """The form ``_speedups.messages`` fills in for records with this one's keys and value types.

        Per key of the record, in its order: None (not in the pairs, or
        null: left out), or the action's byte followed by ``key=`` (with any
        label pair before it), paired with the converter for ``CALL``. None
        for the whole record where
        only this module writes the same text: keys or labels that are not
        one word (the empty-pair rule above holds for words only), or a
        conversion C does not know.
        """
        plan, _, form = self._form_for(record)
        where = {field: i for i, field in enumerate(plan.fields)}
        converts = dict(form.converts)
        entries = []
        for field, value in record.items():
            i = where.get(field)
            if i is None or value is None:
                entries.append(None)
                continue
            key, label = form.keys[i]
            if not _WORD.fullmatch(key) or (label and not _WORD.fullmatch(label)):
                return None
            prefix = ("%s%s=%s%s" % (key, self._label_suffix, label, self._separator) if label else "") + key + "="
            convert, kind = converts.get(i), type(value)
            if convert is None and kind in (str, int):
                action = actions.STR if kind is str else actions.RAW  # %s prints them as JSON has them
            elif (convert is _json and kind in (list, dict)) or (convert is _CONVERT[bool] and kind is bool):
                action = actions.RAW  # the JSON text as the spool holds it; true, false
            elif convert is to_milliseconds and kind is int:
                action = actions.MS
            elif convert is dev_time and kind is int:
                action = actions.DEV_TIME
            elif kind in (str, int, float):
                action = actions.CALL
            else:
                return None
            spec = bytes((action,)) + prefix.encode("ascii")
            entries.append((spec, convert) if action == actions.CALL else spec)
        return tuple(entries)

    def _escape(self, text: str) -> str:
        for char, replacement in self._escapes:
            if char in text:
                text = text.replace(char, replacement)
        return text

    def _slowly(self, form: Form, values: Sequence) -> str:
        pairs: List[str] = []
        for (key, label), value in zip(form.keys, values):
            text = str(value)
            if not text:
                continue
            if label:
                pairs.append("%s%s=%s" % (key, self._label_suffix, label))
            pairs.append("%s=%s" % (key, self._escape(text)))
        return self._separator.join(pairs)

    def _plan(self, notification: str, record: dict) -> _Plan:
        return _Plan([field for field in record if self._key_for(notification, field, str) is not None])

    def _form(self, notification: str, fields: Sequence[str], types: Sequence[type]) -> Form:
        pieces, converts, keys, used = [], [], [], set()
        for position, (field, value_type) in enumerate(zip(fields, types)):
            key, label, convert = self._key_for(notification, field, value_type)
            key = _unique(key, used)
            convert = convert or _CONVERT.get(value_type)
            if convert is not None:
                converts.append((position, convert))
            labelled = "%s%s%s%s%s" % (key, self._label_suffix, _EQ, label, _LABEL_SEP) if label else ""
            pieces.append("%s%s%s%%s" % (labelled, key, _EQ))
            keys.append((key, label))
        return Form(_SEP.join(pieces), tuple(converts), tuple(keys))


def _unique(key: str, used: set) -> str:
    """``key``, or ``key2``, ``key3``... when two fields would share it (sanitised unknown names)."""
    candidate, n = key, 1
    while candidate in used:
        n += 1
        candidate = "%s%d" % (key, n)
    used.add(candidate)
    return candidate


class PairBody:
    """A CEF or LEEF body: the format's header (``around``, by the subclass), then the record's pairs."""

    def __init__(self, encoder: PairEncoder) -> None:
        self.encoder = encoder

    def body(self, record: dict, plain: bool = False) -> str:
        """``plain``: no value holds the control characters ``\\x00``-``\\x02`` (see ``PairEncoder``)."""
        return self.finish(record, self.encoder.encode(record, plain))

    def finish(self, record: dict, pairs: str) -> str:
        """The body around the record's pairs, however they were written."""
        prefix, joiner = self.around(record)
        return prefix + joiner + pairs if pairs else prefix

    def around(self, record: dict) -> Tuple[str, str]:
        """(what comes before the pairs, what joins them on when there are any)."""
        raise NotImplementedError
