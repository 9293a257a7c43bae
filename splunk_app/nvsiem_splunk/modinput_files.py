"""``neuvector_capture://<name>``: index capture files dropped in a directory.

Takes netcat-traditional hex dumps (``nc -l -p 8514 -o dump.hex``, the
capture NeuVector's docs describe), controller pod logs and syslog files,
told apart by their first bytes, and follows them as they grow.

Nothing is indexed twice, nothing is skipped: a checkpoint per file (in
splunkd's ``checkpoint_dir``) holds a *safe offset*, where the decoders
were empty, and how many events the file produced after it that were
already written. After a restart the input decodes again from the safe
offset and writes only what comes after those. A file is brought to a safe
offset once it stops growing and ends with a complete line, so a file
caught half-written finishes on a later poll, or run.
"""
import asyncio
import fnmatch
import hashlib
import json
import os
import re
import sys
import time
from typing import Dict, List

from nvparser import DeadLetter, Parser
from nvparser import HexChunk, HexDumpDecoder
from splunklib.modularinput import Argument, EventWriter

from .modinput import Emitter, NeuVectorScript, int_param

# Fed to the parser as read, as every input of the pack feeds it: fewer records alive
# at once stay in the CPU cache (1 MiB feeds were 1.5-2x slower).
CHUNK = 64 << 10
FINGERPRINT = 256           # first bytes hashed to tell a reused inode from the file we knew
_HEXDUMP_LINE = re.compile(rb"[<>] [0-9a-f]{8} ")


class NeuVectorCaptureInput(NeuVectorScript):
    title = "NeuVector capture files"
    description = ("Indexes NeuVector syslog captures dropped in a directory: nc -o hex dumps, "
                   "controller pod logs, syslog files. Checkpointed: nothing is indexed twice.")
    arguments = (
        Argument("path", title="Directory", description="Directory to watch for capture files",
                 required_on_create=True),
        Argument("pattern", title="File name pattern",
                 description="Shell pattern of the files to read (default *; names starting with . "
                             "are never read)", required_on_create=False),
        Argument("poll_interval", title="Poll interval (seconds)",
                 description="How often the directory is scanned (default 5)",
                 data_type=Argument.data_type_number, required_on_create=False),
        Argument("partial_timeout", title="Partial line timeout (seconds)",
                 description="A file that stopped growing in the middle of a line is read to its end "
                             "after this long (default 300)",
                 data_type=Argument.data_type_number, required_on_create=False),
    )

    def settings(self, params: dict) -> dict:
        path = params.get("path") or ""
        if not path:
            raise ValueError("path is required")
        if not os.path.isdir(path):
            raise ValueError("path %r is not a directory splunkd can read" % path)
        return {
            **super().settings(params),
            "path": path,
            "pattern": params.get("pattern") or "*",
            "poll_interval": int_param(params, "poll_interval", 5, 1, 3600),
            "partial_timeout": int_param(params, "partial_timeout", 300, 1, 86400),
        }

    async def serve(self, stanza, config, emitter, metadata, stop):
        await _Watcher(stanza, config, emitter, metadata["checkpoint_dir"]).run(stop)


class _Reader:
    """One file's decoders since its safe offset: bytes in, the events not written yet out."""

    def __init__(self, kind: str, config: dict, start: int, skip: int):
        self.kind, self.config = kind, config
        self.start = self.position = start
        self.skip = skip          # events after ``start`` already written before a restart
        self.produced = 0         # events after ``start`` so far
        self.tail = b""           # last byte handed to the parser: b"\n" = no partial frame
        self.raw_tail = b""       # last byte of the file read: b"\n" = no partial dump line
        self.safe = False         # decoders hold nothing: the checkpoint can move to ``position``
        self.last_growth = time.monotonic()
        self._parser = Parser(config["framing"], config["max_frame"])
        self._dump = HexDumpDecoder(config["max_frame"]) if kind == "hexdump" else None

    def feed(self, data: bytes) -> List:
        self.position += len(data)
        if data:
            self.raw_tail = data[-1:]
        self.last_growth = time.monotonic()
        self.safe = False
        events = self._from_dump(self._dump.feed(data)) if self._dump else self._to_parser(data)
        return self._unwritten(events)

    def idle(self) -> List:
        """The file stopped growing: release what is held; reach a safe offset if the data allows."""
        given_up = time.monotonic() - self.last_growth >= self.config["partial_timeout"]
        events: List = []
        dump_clear = self._dump is None
        # A dump caught in the middle of one of its lines waits for the rest, as a text line does.
        if self._dump and (self.raw_tail in (b"", b"\n") or given_up):
            events = self._from_dump(self._dump.close())
            self._dump = HexDumpDecoder(self.config["max_frame"])
            self.raw_tail, dump_clear = b"\n", True
        events += self._parser.flush()
        if self.tail != b"\n" and given_up:
            events += self._parser.close()   # the rest of that line is not coming
            self.tail = b"\n"
        self.safe = self.tail == b"\n" and dump_clear
        return self._unwritten(events)

    def _to_parser(self, data: bytes) -> List:
        if data:
            self.tail = data[-1:]
        return self._parser.feed(data)

    def _from_dump(self, dump_events) -> List:
        out: List = []
        for item in dump_events:
            if isinstance(item, HexChunk):
                if item.direction == "<":     # what nc received; ">" is what it sent back
                    out += self._to_parser(item.data)
            else:
                out.append(DeadLetter(item.raw, "nc hex dump line %d: %s" % (item.line, item.reason),
                                      self.position))
        return out

    def _unwritten(self, events: List) -> List:
        out = []
        for event in events:
            self.produced += 1
            if self.produced > self.skip:
                out.append(event)
        return out


class _Watcher:
    def __init__(self, stanza: str, config: dict, emitter: Emitter, checkpoint_dir: str):
        self.stanza, self.config, self.emitter = stanza, config, emitter
        self.log = emitter.writer.log
        self.checkpoint = os.path.join(checkpoint_dir, re.sub(r"[^A-Za-z0-9_.-]", "_", stanza) + ".json")
        self.files: Dict[str, dict] = self._load()
        self.readers: Dict[str, _Reader] = {}

    async def run(self, stop: asyncio.Event) -> None:
        self.log(EventWriter.INFO, "%s: watching %s for %s (%d files checkpointed)"
                 % (self.stanza, self.config["path"], self.config["pattern"], len(self.files)))
        while not stop.is_set():
            await self._poll(stop)
            try:
                await asyncio.wait_for(stop.wait(), self.config["poll_interval"])
            except asyncio.TimeoutError:
                pass
        self._save()
        self.log(EventWriter.INFO, "%s: stopped: %s" % (self.stanza, self.emitter.summary()))

    async def _poll(self, stop: asyncio.Event) -> None:
        try:
            entries = sorted(os.scandir(self.config["path"]), key=lambda e: e.name)
        except OSError as exc:
            self.log(EventWriter.ERROR, "%s: cannot list %s: %s" % (self.stanza, self.config["path"], exc.strerror))
            return
        present = set()
        for entry in entries:
            if entry.name.startswith(".") or not fnmatch.fnmatchcase(entry.name, self.config["pattern"]):
                continue
            try:
                if not entry.is_file():
                    continue
                st = entry.stat()
                key = "%d:%d" % (st.st_dev, st.st_ino)
                present.add(key)
                await self._read(entry.path, key, st.st_size, stop)
            except OSError as exc:
                self.log(EventWriter.ERROR, "%s: cannot read %s: %s" % (self.stanza, entry.path, exc.strerror))
            if stop.is_set():
                return
        for key in set(self.files) - present:   # deleted or rotated away
            del self.files[key]
            self.readers.pop(key, None)
        self._save()

    async def _read(self, path: str, key: str, size: int, stop: asyncio.Event) -> None:
        with open(path, "rb") as f:
            state = self._known(f, path, key, size)
            reader = self.readers.get(key)
            if reader is None:
                if size <= state["offset"] and not state["skip"]:
                    return
                reader = self.readers[key] = _Reader(state["kind"], self.config, state["offset"], state["skip"])
            f.seek(reader.position)
            grew = False
            while not stop.is_set():
                data = f.read(CHUNK)
                if not data:
                    break
                grew = True
                self.emitter.write(reader.feed(data), source=path)
                self._mark(state, reader)
                await asyncio.sleep(0)   # let a SIGTERM in between chunks
        if not grew and not stop.is_set():
            self.emitter.write(reader.idle(), source=path)
            self._mark(state, reader)
            if reader.safe:
                del self.readers[key]

    def _known(self, f, path: str, key: str, size: int) -> dict:
        """This file's checkpoint, new if the inode now holds another file or the file shrank."""
        state = self.files.get(key)
        if state is not None:
            head = f.read(state["fingerprint_len"])
            if size < state["offset"] or _digest(head) != state["fingerprint"]:
                self.log(EventWriter.WARN, "%s: %s was replaced or truncated: reading it from the start"
                         % (self.stanza, path))
                self.readers.pop(key, None)
                state = None
        if state is None:
            f.seek(0)
            head = f.read(FINGERPRINT)
            state = self.files[key] = {
                "path": path, "offset": 0, "skip": 0,
                "kind": "hexdump" if _HEXDUMP_LINE.match(head) else "syslog",
                "fingerprint": _digest(head), "fingerprint_len": len(head)}
        elif state["fingerprint_len"] < FINGERPRINT and size > state["fingerprint_len"]:
            f.seek(0)   # the file grew past what was fingerprinted: fingerprint more of it
            head = f.read(FINGERPRINT)
            state.update(fingerprint=_digest(head), fingerprint_len=len(head))
        state["path"] = path
        return state

    def _mark(self, state: dict, reader: _Reader) -> None:
        if reader.safe:
            state["offset"], state["skip"] = reader.position, 0
            reader.start, reader.skip, reader.produced = reader.position, 0, 0
        else:
            state["offset"], state["skip"] = reader.start, max(reader.produced, reader.skip)
        self._save()

    def _load(self) -> Dict[str, dict]:
        try:
            with open(self.checkpoint, encoding="utf-8") as f:
                return json.load(f)["files"]
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            self.log(EventWriter.ERROR, "%s: checkpoint %s unreadable (%s): files will be read again"
                     % (self.stanza, self.checkpoint, exc))
            return {}

    def _save(self) -> None:
        tmp = self.checkpoint + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"version": 1, "files": self.files}, f)
        os.replace(tmp, self.checkpoint)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def main() -> int:
    return NeuVectorCaptureInput().run(sys.argv)
