"""``python -m validation <command>``.

Each command is one module defining ``HELP``, ``configure(parser)`` and ``main(args) -> int``. Exit status: 0 done,
2 a user error (argparse's, or a :class:`validation.harness.cli.UsageError` raised later: one line on stderr, no
traceback); any other failure is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from validation.harness.cli import UsageError

# command name -> module; add a command by adding a module with the same three names.
COMMANDS: dict[str, str] = {
    "advise": "validation.advise",
    "bench": "validation.bench",
    "demo": "validation.demo",
    "g1d": "validation.tasks.g1d",
    "nested-spheres": "validation.tasks.nested_spheres",
    "sines": "validation.tasks.sines",
    "images": "validation.tasks.images",
    "ornstein-uhlenbeck": "validation.tasks.ornstein_uhlenbeck",
    "toy-gradient": "validation.tasks.toy_gradient",
    "report": "validation.report",
    "reproduce": "validation.reproduction",
}


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one subparser per command."""
    parser = argparse.ArgumentParser(prog="python -m validation", description="Validate gq: benchmarks and the demo.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        sub = commands.add_parser(name, help=module.HELP, description=module.HELP)
        module.configure(sub)
        sub.set_defaults(handler=module.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except UsageError as error:
        print(f"{parser.prog} {args.command}: error: {error}", file=sys.stderr)
        return UsageError.exit_status


if __name__ == "__main__":
    sys.exit(main())
