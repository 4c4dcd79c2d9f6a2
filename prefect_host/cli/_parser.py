"""The commands' argument parser (no command of its own): argparse, whose error messages quote no value
longer than SHOWN_LIMIT characters and no line break.

argparse echoes what it refuses whole (`invalid float value: '<5 MB>'`, `unrecognized arguments: ...`,
`invalid choice: ...`); here each given value that is too long or not printable is shown cut and quoted
(prefect_host.console.shown) instead. The exit status stays argparse's: 2, after the usage line.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from prefect_host.console import clip_values


class ArgumentParser(argparse.ArgumentParser):
    _given: tuple[str, ...] = ()

    def parse_known_args(self, args: Sequence[str] | None = None, namespace=None):
        self._given = tuple(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def error(self, message: str):
        # Each argument, and the value of an `--option=value` one, as argparse may quote it.
        values = [*self._given, *(arg.split("=", 1)[1] for arg in self._given if arg.startswith("-") and "=" in arg)]
        super().error(clip_values(message, values))
