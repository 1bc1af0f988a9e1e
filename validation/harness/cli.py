"""Command-line plumbing shared by the commands: user errors, argument types, explicit flags, output folders.

A mistake the user must fix (a bad value, an unusable folder, a checkpoint that is missing, corrupt or from another
configuration) raises :class:`UsageError`; ``python -m validation`` prints it as one line after the usage and exits
with status 2, like argparse's own errors. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

SEED_MAX = 2**32 - 1  # numpy's and torch's seeds take it; derived seeds (seed·100003 + epoch) stay far below 2**63
EXPLICIT = "_explicit"  # the namespace attribute listing the flags given on the command line
PARSER_DEFAULTS = "_parser_defaults"  # the namespace attribute holding every flag's default


class UsageError(SystemExit):
    """A user error: the message names the argument, the value and what was expected.

    A SystemExit, so that a caller that does not catch it stops without a traceback; ``code`` is the message (as for
    ``SystemExit("...")``), and ``python -m validation`` turns it into exit status 2.
    """

    exit_status = 2


# --- argparse types ------------------------------------------------------------------------------------------------


def positive_float(text: str) -> float:
    """A finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def float_in(low: float, high: float, *, low_open: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number in [low, high] (or (low, high] with ``low_open``)."""
    what = f"a number in {'(' if low_open else '['}{low:g}, {high:g}]"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        below = value <= low if low_open else value < low
        if not math.isfinite(value) or below or value > high:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


def integer_in(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer in [minimum, maximum], else a usage error saying so."""
    if maximum is not None:
        what = f"an integer in [{minimum}, {maximum}]"
    else:
        what = "a positive integer" if minimum == 1 else f"an integer ≥ {minimum}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


def integer_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer ≥ ``minimum``."""
    return integer_in(minimum)


positive_int = integer_in(1)
seed_int = integer_in(0, SEED_MAX)


# --- explicit flags ------------------------------------------------------------------------------------------------


_TRACKED: dict[type, type] = {}


def _tracked_class(cls: type) -> type:
    """A subclass of the argparse action ``cls`` that also records its dest as given explicitly."""
    if cls not in _TRACKED:
        def __call__(self, parser, namespace, values, option_string=None):
            explicit = set(getattr(namespace, EXPLICIT, ()))
            explicit.add(self.dest)
            setattr(namespace, EXPLICIT, frozenset(explicit))
            cls.__call__(self, parser, namespace, values, option_string)

        _TRACKED[cls] = type(f"Explicit{cls.__name__}", (cls,), {"__call__": __call__})
    return _TRACKED[cls]


def track_explicit(parser: argparse.ArgumentParser) -> None:
    """Make ``parser`` record which flags the command line gave (``explicit_flags(args)``), so that presets such as
    ``--quick`` change only the others: a default equal to the preset's value is no evidence either way."""
    for action in parser._actions:
        if action.option_strings and not isinstance(action, argparse._HelpAction):
            action.__class__ = _tracked_class(type(action))
    defaults = {a.dest: a.default for a in parser._actions
                if a.option_strings and argparse.SUPPRESS not in (a.dest, a.default)}
    parser.set_defaults(**{EXPLICIT: frozenset(), PARSER_DEFAULTS: defaults})


def explicit_flags(args: argparse.Namespace) -> frozenset[str]:
    """The dests given on the command line (empty for a namespace built without :func:`track_explicit`)."""
    return frozenset(getattr(args, EXPLICIT, ()))


def parser_defaults(args: argparse.Namespace) -> dict | None:
    """Every flag's default as the parser declared it (None for a namespace built without :func:`track_explicit`)."""
    return getattr(args, PARSER_DEFAULTS, None)


def apply_preset(args: argparse.Namespace, preset: dict) -> None:
    """Set each ``preset`` value whose flag was not given explicitly: explicit flags win."""
    given = explicit_flags(args)
    for key, value in preset.items():
        if key not in given:
            setattr(args, key, value)


# --- output folders ------------------------------------------------------------------------------------------------


def check_writable_dir(folder: Path, flag: str, given: Path | str | None = None) -> None:
    """Make sure ``folder`` is, or can be made, a folder this process can write files into; UsageError if not.

    Creates it (as the run would) and writes and deletes a probe file: permission bits alone do not tell (root,
    read-only mounts, ACLs). ``given`` is the flag's value when ``folder`` is a subfolder of it.
    """
    from validation.harness.atomic import make_dirs

    folder = Path(folder)
    where = f"{flag} {folder}" if given is None else f"{flag} {given}: {folder}"
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{where} is a file; expected a folder (or a path where one can be made)")
    try:
        make_dirs(folder)
    except OSError as error:
        raise UsageError(f"{where}: cannot create the folder ({error.strerror or error}); expected a writable "
                         f"folder") from None
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-probe.", suffix=".tmp")
    except OSError as error:
        raise UsageError(f"{where}: the folder is not writable ({error.strerror or error}); expected a writable "
                         f"folder") from None
    os.close(fd)
    os.unlink(probe)
