"""Parse NeuVector syslog into JSON lines.

Reads FILEs (or stdin): syslog as received (text or JSON mode, any header
form, LF or octet-counted), controller pod logs (kubectl logs or CRI files)
and netcat-traditional hex dumps (nc -o), told apart automatically.
Writes one JSON object per record to stdout and dead letters (raw bytes
and the reason) to --dead-letter (default: stderr), then a summary on
stderr.

Exit status: 0 every frame parsed, 1 some frames were dead-lettered,
2 usage errors (bad option, unreadable file).
"""
import sys

from nvparser import MAX_FRAME

from nvsiem.inputs import INPUT_KINDS, read_events
from nvsiem.output import EventWriter, max_frame_option, open_outputs

HELP = "parse syslog, pod logs or nc hex dumps into JSON lines"


def add_arguments(parser):
    parser.add_argument("files", nargs="*", metavar="FILE", help="input files (default: stdin; '-' is stdin)")
    parser.add_argument("--input", choices=INPUT_KINDS, default="auto",
                        help="input kind (default: auto-detect from the first bytes)")
    parser.add_argument("--out", metavar="FILE", help="write records here instead of stdout")
    parser.add_argument("--dead-letter", metavar="FILE", help="write dead letters here (JSON lines) instead of stderr")
    parser.add_argument("--max-frame", type=max_frame_option, default=MAX_FRAME, metavar="BYTES",
                        help="longest frame kept; longer ones are dead-lettered (default: %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="no summary on stderr")
    parser.set_defaults(run=run)


def run(args) -> int:
    paths = args.files or ["-"]
    streams = []
    for path in paths:
        if path == "-":
            streams.append((path, sys.stdin.buffer))
            continue
        try:
            streams.append((path, open(path, "rb")))
        except OSError as exc:
            print("nvsiem parse: cannot read %s: %s" % (path, exc.strerror), file=sys.stderr)
            return 2
    try:
        records, dead = open_outputs(args.out, args.dead_letter)
    except OSError as exc:
        print("nvsiem parse: cannot write %s: %s" % (exc.filename, exc.strerror), file=sys.stderr)
        return 2
    writer = None
    tally = None
    for path, stream in streams:
        writer = EventWriter(records, dead, source=path)
        if tally is not None:
            writer.tally = tally
        tally = writer.tally
        with stream:
            for events in read_events(stream, args.input, args.max_frame):
                writer.write(events)
    records.flush()
    dead.flush()
    if not args.quiet:
        print("nvsiem parse: " + tally.summary(), file=sys.stderr)
    return tally.exit_status()
