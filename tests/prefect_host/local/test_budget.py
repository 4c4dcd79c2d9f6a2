"""The benchmarks' time budget stops them by itself."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest

from prefect_host.local.budget import BudgetSpent, end_budget, start_budget


@pytest.fixture(autouse=True)
def handlers() -> Iterator[None]:
    saved = {number: signal.getsignal(number) for number in (signal.SIGALRM, signal.SIGTERM)}
    yield
    signal.alarm(0)
    for number, handler in saved.items():
        signal.signal(number, handler)


def test_a_spent_budget_stops_even_a_loop_that_swallows_errors() -> None:
    start_budget(1)
    deadline = time.monotonic() + 10
    with pytest.raises(BudgetSpent, match="time budget"):
        while time.monotonic() < deadline:
            try:
                time.sleep(0.05)
            except Exception:  # noqa: BLE001  what a request loop does with its errors
                continue
    assert time.monotonic() < deadline


def test_sigterm_ends_the_run_as_ctrl_c_does() -> None:
    start_budget(60)
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)


def test_an_ended_budget_raises_nothing_later() -> None:
    start_budget(1)
    end_budget()
    time.sleep(1.3)
