"""The apply loop over a session that records what would run: lanes run concurrently within their
order constraints, the first failure stops them all, and the hooks run where the bootstrap needs them."""

from __future__ import annotations

import io
import threading
import time

import pytest

from prefect_host.console import Console
from prefect_host.errors import CommandFailed, VerifyError
from prefect_host.host.apply import Hooks, apply, run_step
from prefect_host.host.model import Command, Service, Step, Units
from prefect_host.host.planner import Lane
from tests.prefect_host.host.host_samples import RecordingSession

WAIT = 5.0  # seconds a test waits for another lane before it gives up (a failure, not a hang)


def step(name: str, *, starts: str | None = None, stops: tuple[str, ...] = ()) -> Step:
    """A step of one command labelled like the step, so the session's record reads as the steps."""
    return Step(name, (Command(f": {name}", name),), starts=starts, stops=stops)


def lane(name: str, prepare: tuple[Step, ...] = (), start: tuple[Step, ...] = (), **service_changes) -> Lane:
    units = Units((f"{name}.service",), applied=f"/etc/{name}.applied", display=name)
    return Lane(Service(name, units=units, **service_changes), prepare, start)


def quiet_console() -> Console:
    return Console(io.StringIO(), io.StringIO())


def printed(console: Console) -> str:
    return console.out.getvalue()


def test_one_lane_runs_its_steps_in_order_as_root_with_their_stdin_and_timeout():
    secret = Step("write /etc/a.env", (Command("cat > /etc/a.env", "write /etc/a.env", stdin=b"pw", timeout=33.0),))
    session, console = RecordingSession(), quiet_console()
    count = apply([lane("a", (secret,), (step("start a"),)), lane("idle")], session, console)
    assert count == 2 and session.labels == ["write /etc/a.env", "start a"]
    first = session.ran[0]
    assert (first.script, first.sudo, first.stdin, first.timeout) == ("cat > /etc/a.env", True, b"pw", 33.0)
    assert "[changed]  write /etc/a.env" in printed(console) and "[changed]  start a" in printed(console)


def test_a_lane_prepares_meanwhile_but_starts_only_after_the_lanes_it_waits_for():
    b_prepared = threading.Event()
    session = RecordingSession(
        on_run={
            # a's first step finishes only once b has prepared: b's prepare steps do not wait for a.
            "a1": lambda: None if b_prepared.wait(WAIT) else pytest.fail("b did not prepare while a ran"),
            "b1": lambda: b_prepared.set(),
            "a2": lambda: time.sleep(0.2),  # time enough for b to start too early, if it would
        }
    )
    lanes = [lane("a", (step("a1"),), (step("a2"),)), lane("b", (step("b1"),), (step("b2"),), start_after=("a",))]
    assert apply(lanes, session, quiet_console()) == 4
    assert session.labels.index("b2") > session.labels.index("a2")
    assert {ran.thread for ran in session.ran} == {"lane-a", "lane-b"}  # concurrent: a thread per lane


def test_a_lane_after_another_takes_no_step_before_that_one_finished():
    session = RecordingSession(on_run={"a2": lambda: time.sleep(0.2)})
    lanes = [lane("a", (step("a1"),), (step("a2"),)), lane("c", (step("c1"),), (step("c2"),), after=("a",))]
    apply(lanes, session, quiet_console())
    assert session.labels.index("c1") > session.labels.index("a2")


def test_a_failure_stops_every_lane_before_its_next_step_and_is_raised():
    lane_a: list[threading.Thread] = []
    b_running = threading.Event()

    def fail_a1_while_b1_runs() -> None:
        lane_a.append(threading.current_thread())
        b_running.wait(WAIT)
        raise CommandFailed("a1", 1, "boom")

    def hold_b1_until_a_stopped() -> None:
        b_running.set()
        deadline = time.monotonic() + WAIT
        while not lane_a and time.monotonic() < deadline:
            time.sleep(0.01)
        lane_a[0].join(WAIT)  # lane a's thread ends after it has flagged the failure

    session = RecordingSession(on_run={"a1": fail_a1_while_b1_runs, "b1": hold_b1_until_a_stopped})
    console = quiet_console()
    lanes = [
        lane("a", (step("a1"), step("a2"))),
        lane("b", (step("b1"), step("b2"))),
        lane("c", (), (step("c1"),), start_after=("a",)),
    ]
    with pytest.raises(CommandFailed, match="a1"):
        apply(lanes, session, console)
    assert sorted(session.labels) == ["a1", "b1"]  # neither a2, b2 nor c1 (waiting for a)
    assert "[failed]   a1" in printed(console)


@pytest.mark.parametrize("other_lanes", [(), (lane("other", (step("other1"),)),)], ids=["alone", "concurrent"])
def test_the_started_hook_runs_inside_the_step_that_starts_its_service(other_lanes):
    console = quiet_console()
    session = RecordingSession()
    seen: list[tuple[list[str], str]] = []
    hooks = Hooks(started={"a": lambda: seen.append((session.labels, printed(console)))})
    lanes = [lane("a", (step("a1"),), (step("restart a", starts="a"), step("a3"))), *other_lanes]
    apply(lanes, session, console, hooks)
    ((labels_then, printed_then),) = seen  # once: only the step that starts `a` runs it
    assert "restart a" in labels_then and "a3" not in labels_then  # after the step's commands, before the next step
    assert "restart a" not in printed_then and "[changed]  restart a" in printed(console)  # before its line


def test_a_failing_started_hook_fails_its_step_and_prints_the_service_journal():
    def not_healthy() -> None:
        raise VerifyError("a did not answer")

    console = quiet_console()
    session = RecordingSession(on_run={"journalctl": lambda: "a[42]: address already in use\n"})
    with pytest.raises(VerifyError, match="did not answer"):
        apply([lane("a", (), (step("start a", starts="a"),))], session, console, Hooks(started={"a": not_healthy}))
    assert session.labels == ["start a", "journalctl"]
    assert "journalctl -u a.service" in session.ran[1].script
    assert "[failed]   start a" in printed(console) and "address already in use" in console.err.getvalue()


def test_a_failed_step_that_starts_nothing_prints_no_journal():
    def fail() -> None:
        raise CommandFailed("write /etc/a.conf", 1, "disk full")

    session = RecordingSession(on_run={"write /etc/a.conf": fail})
    with pytest.raises(CommandFailed):
        apply([lane("a", (step("write /etc/a.conf"),))], session, quiet_console())
    assert session.labels == ["write /etc/a.conf"]


def test_the_stopped_hook_gets_the_units_a_step_stopped_inside_that_step():
    console = quiet_console()
    stopped: list[tuple[tuple[str, ...], str]] = []
    gone = ("w@2.service", "w@3.service")
    hooks = Hooks(stopped=lambda units: stopped.append((units, printed(console))))
    apply(
        [lane("w", (), (step("stop and disable w@{2,3}", stops=gone), step("start w@1")))],
        RecordingSession(),
        console,
        hooks,
    )
    assert [units for units, _ in stopped] == [gone]  # once: only that step stopped units
    assert "w@{2,3}" not in stopped[0][1] and "[changed]  stop and disable w@{2,3}" in printed(console)
    run_step(step("stop w@4", stops=("w@4.service",)), RecordingSession(), console)  # no hook: nothing to call


def test_a_reporting_command_shows_what_it_printed_after_its_step_line():
    restore = Step("restore the database", (Command("restore", "restore", reports=True), Command("quiet", "quiet")))
    session = RecordingSession(on_run={"restore": lambda: "restored transaction 7\n", "quiet": lambda: "noise\n"})
    console = quiet_console()
    run_step(restore, session, console)
    lines = printed(console).splitlines()
    assert "restore the database" in lines[0] and lines[1:] == ["    restored transaction 7"]


def test_the_starting_hook_runs_before_the_step_that_starts_the_service():
    session, console, seen = RecordingSession(), quiet_console(), []
    hooks = Hooks(starting={"a": lambda: seen.append(list(session.labels))}, started={"a": lambda: seen.append("up")})
    run_step(step("restart a", starts="a"), session, console, hooks=hooks)
    run_step(step("restart b", starts="b"), session, console, hooks=hooks)
    assert seen == [[], "up"] and session.labels == ["restart a", "restart b"]
