"""The ``nvsiem`` command line: one subcommand per module in nvsiem.commands.

Each module has a docstring (the subcommand's description), ``HELP`` (its
one-line summary) and ``add_arguments(parser)``, which sets ``run`` as the
function called with the parsed arguments; ``run`` returns the exit status.
Exit status: 0 all frames became records, 1 some were dead-lettered, 2 usage
errors (argparse's own convention).
"""
import argparse
import importlib
import sys

COMMANDS = ("parse", "replay", "capture", "listen")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nvsiem", description="NeuVector SIEM pack")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        module = importlib.import_module("nvsiem.commands." + name)
        command = sub.add_parser(name, help=module.HELP, description=module.__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(command)
        command.set_defaults(usage_error=command.error)
    return parser


def main(argv=None) -> int:
    args, unknown = build_parser().parse_known_args(argv)
    if unknown:  # said by the subcommand, with its usage, not the top level's
        args.usage_error("unrecognized arguments: %s" % " ".join(unknown))
    try:
        return args.run(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # stdout closed early (nvsiem parse … | head): not an error of ours.
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
