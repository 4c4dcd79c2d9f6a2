"""A benchmark's time budget, so that it stops by itself: `start_budget(seconds)` makes SIGALRM after
`seconds` raise BudgetSpent (a BaseException: no request loop's `except Exception` takes it for an
error and goes on) and SIGTERM end the run as Ctrl-C does (the benches clean their guests up then)."""

from __future__ import annotations

import signal


class BudgetSpent(BaseException):
    """The benchmark's --budget seconds have passed."""


def _interrupted(signum: int, _frame: object) -> None:
    if signum == signal.SIGALRM:
        raise BudgetSpent("the time budget is spent")
    raise KeyboardInterrupt


def start_budget(seconds: int) -> None:
    signal.signal(signal.SIGTERM, _interrupted)
    signal.signal(signal.SIGALRM, _interrupted)
    signal.alarm(seconds)


def end_budget() -> None:
    signal.alarm(0)
