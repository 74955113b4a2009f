"""What a flag's value may be (argparse `type` callables), and how ``--help`` shows it."""

from __future__ import annotations

import argparse
from collections.abc import Callable

__all__ = ["HelpFormatter", "at_least", "at_least_float", "percent", "strtobool"]


def strtobool(value: str) -> bool:
    """KServe's boolean flag values: true/false, yes/no, on/off, 1/0."""
    lowered = value.strip().lower()
    if lowered in ("y", "yes", "t", "true", "on", "1"):
        return True
    if lowered in ("n", "no", "f", "false", "off", "0"):
        return False
    raise argparse.ArgumentTypeError(f"not a boolean: {value!r}")


def at_least(minimum: int) -> Callable[[str], int]:
    """An argparse `type`: an integer of at least `minimum`."""

    def parse(value: str) -> int:
        number = int(value)
        if number < minimum:
            raise argparse.ArgumentTypeError(f"must be {minimum} or more, not {number}")
        return number

    parse.__name__ = "int"  # argparse names the type in its "invalid int value" error
    return parse


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Each flag's default said once: appended unless its help already says it, and left out
    when there is none (None: the help says what happens without the flag)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "default" in text or action.default in (None, argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)


def at_least_float(minimum: float) -> Callable[[str], float]:
    """An argparse `type`: a number of at least `minimum`."""

    def parse(value: str) -> float:
        number = float(value)
        if not number >= minimum:
            raise argparse.ArgumentTypeError(f"must be {minimum:g} or more, not {value}")
        return number

    parse.__name__ = "float"
    return parse


def percent(value: str) -> float:
    """An argparse `type`: a share from 0 to 100."""
    number = float(value)
    if not 0 <= number <= 100:
        raise argparse.ArgumentTypeError(f"must be from 0 to 100, not {value}")
    return number
