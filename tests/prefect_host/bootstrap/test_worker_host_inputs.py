"""Where the workers run once the stack has worker hosts (output workerHosts): the counts and their
defaults, --queue [HOST=]QUEUE, the usage errors naming the flag, the summary's lines for the hosts, and
the exit status of a bootstrap whose worker host failed."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from prefect_host.bootstrap import Summary, resolve_inputs
from prefect_host.bootstrap.worker_host_inputs import (
    DEFAULT_QUEUE,
    MAX_WORKERS,
    QUEUE_NAME,
    WorkerHostInputs,
    resolve_workers,
    summary_lines,
)
from prefect_host.cli import bootstrap as bootstrap_cli
from prefect_host.console import Console
from prefect_host.errors import UsageError
from prefect_host.outputs import StackOutputs
from tests.prefect_host.bootstrap.bootstrap_samples import outputs_mapping

WORKER_HOSTS = [
    {"name": "w1", "publicIp": "198.51.100.11", "hostPublicKey": "ssh-ed25519 AAAAw1"},
    {"name": "w2", "publicIp": "198.51.100.12", "hostPublicKey": "ssh-ed25519 AAAAw2"},
    {"name": "gpu-a", "publicIp": "198.51.100.13", "hostPublicKey": "ssh-ed25519 AAAAgpu"},
]
WITH_HOSTS = StackOutputs.from_mapping(outputs_mapping(workerHosts=WORKER_HOSTS))
WITHOUT_HOSTS = StackOutputs.from_mapping(outputs_mapping())


@pytest.fixture
def outputs_file(tmp_path):
    def write(**changes) -> str:
        path = tmp_path / "outputs.json"
        path.write_text(json.dumps(outputs_mapping(**changes)))
        return str(path)

    return write


def resolve(outputs: StackOutputs = WITH_HOSTS, *, workers=None, server_workers=None, queues=()):
    return resolve_workers(outputs, workers=workers, server_workers=server_workers, queues=tuple(queues))


def queues_of(hosts) -> dict[str, str]:
    return {host.name: host.queue for host in hosts}


# --- the counts ------------------------------------------------------------------------------------
def test_without_worker_hosts_the_workers_are_the_servers_and_there_are_no_hosts():
    assert resolve(WITHOUT_HOSTS) == (1, ())
    assert resolve(WITHOUT_HOSTS, workers=0) == (0, ())
    assert resolve(WITHOUT_HOSTS, workers=MAX_WORKERS) == (MAX_WORKERS, ())


def test_with_worker_hosts_the_server_runs_none_and_each_host_two_by_default():
    server, hosts = resolve()
    assert server == 0
    # Each polls the pool's default queue, not every queue: runs pinned to another queue stay there.
    assert DEFAULT_QUEUE == "default"
    assert hosts == (
        WorkerHostInputs("w1", "198.51.100.11", "ssh-ed25519 AAAAw1", 2, "default"),
        WorkerHostInputs("w2", "198.51.100.12", "ssh-ed25519 AAAAw2", 2, "default"),
        WorkerHostInputs("gpu-a", "198.51.100.13", "ssh-ed25519 AAAAgpu", 2, "default"),
    )


def test_workers_is_per_worker_host_and_server_workers_the_servers():
    server, hosts = resolve(workers=5, server_workers=1)
    assert server == 1 and [host.workers for host in hosts] == [5, 5, 5]
    server, hosts = resolve(workers=0)
    assert server == 0 and [host.workers for host in hosts] == [0, 0, 0]
    server, hosts = resolve(server_workers=3)
    assert server == 3 and [host.workers for host in hosts] == [2, 2, 2]


@pytest.mark.parametrize("value", [-1, MAX_WORKERS + 1, True, 1.5, "2"])
@pytest.mark.parametrize("flag", ["--workers", "--server-workers"])
def test_a_count_out_of_range_is_a_usage_error_naming_its_flag(flag, value):
    keyword = {"--workers": "workers", "--server-workers": "server_workers"}[flag]
    with pytest.raises(UsageError) as refused:
        resolve(**{keyword: value})
    message = str(refused.value)
    assert message.startswith(f"{flag} {value!r}: must be a whole number from 0 to {MAX_WORKERS}")


def test_without_worker_hosts_a_bad_workers_count_names_workers():
    with pytest.raises(UsageError, match=rf"^--workers {MAX_WORKERS + 1}: must be a whole number"):
        resolve(WITHOUT_HOSTS, workers=MAX_WORKERS + 1)


@pytest.mark.parametrize(
    "changes, flag",
    [
        ({"server_workers": 0}, "--server-workers"),
        ({"server_workers": 2}, "--server-workers"),
        ({"queues": ["a"]}, "--queue"),
    ],
)
def test_host_flags_without_worker_hosts_are_usage_errors_naming_the_flag(changes, flag):
    with pytest.raises(UsageError) as refused:
        resolve(WITHOUT_HOSTS, **changes)
    message = str(refused.value)
    assert message.startswith(f"{flag}: this stack has no worker hosts (output workerHosts)")
    assert "--workers N" in message


# --- the queues ------------------------------------------------------------------------------------
def test_a_plain_queue_is_every_hosts_and_host_equals_queue_one_hosts():
    assert queues_of(resolve(queues=["gpu"])[1]) == {"w1": "gpu", "w2": "gpu", "gpu-a": "gpu"}
    assert queues_of(resolve(queues=["gpu-a=gpu"])[1]) == {"w1": "default", "w2": "default", "gpu-a": "gpu"}
    # One host's own queue wins over the one for all the others, in either order.
    for given in (["gpu-a=gpu", "batch"], ["batch", "gpu-a=gpu"]):
        assert queues_of(resolve(queues=given)[1]) == {"w1": "batch", "w2": "batch", "gpu-a": "gpu"}
    assert queues_of(resolve(queues=["w1=a", "w2=b"])[1]) == {"w1": "a", "w2": "b", "gpu-a": "default"}


def test_queue_names_as_the_unit_and_the_url_take_them():
    longest = "q" * 64
    assert queues_of(resolve(queues=[longest])[1])["w1"] == longest
    assert queues_of(resolve(queues=["w1=Team_A.v2-1"])[1])["w1"] == "Team_A.v2-1"
    assert QUEUE_NAME.fullmatch("0day") and not QUEUE_NAME.fullmatch("q" * 65)


@pytest.mark.parametrize(
    "value",
    ["", "w1=", "-q", ".q", "q" * 65, "a queue", "q;rm", "q\n", "q/x", "q%2f", "émile", "w1=a b"],
)
def test_a_bad_queue_name_is_a_usage_error_naming_queue(value):
    with pytest.raises(UsageError) as refused:
        resolve(queues=[value])
    message = str(refused.value)
    assert message.startswith(f"--queue {value!r}: QUEUE or HOST=QUEUE, the queue 1-64 letters")


def test_host_equals_queue_for_an_unknown_host_lists_the_stacks_hosts():
    with pytest.raises(UsageError) as refused:
        resolve(queues=["w9=gpu"])
    assert str(refused.value) == "--queue 'w9=gpu': no worker host 'w9'; the stack's are w1, w2, gpu-a."
    # Hosts are named by their stack name, not by their address.
    with pytest.raises(UsageError, match=r"no worker host '198\.51\.100\.11'"):
        resolve(queues=["198.51.100.11=gpu"])


@pytest.mark.parametrize(
    "given, what",
    [
        (["a", "b"], "all hosts"),
        (["a", "a"], "all hosts"),
        (["w1=a", "w1=b"], "that host"),
        (["w1=a", "w1=a"], "that host"),
    ],
)
def test_a_queue_given_twice_for_the_same_hosts_is_a_usage_error(given, what):
    with pytest.raises(UsageError) as refused:
        resolve(queues=given)
    assert str(refused.value) == f"--queue {given[1]!r}: {what} already got a queue."


# --- resolve_inputs --------------------------------------------------------------------------------
def test_resolve_inputs_carries_the_worker_hosts_and_the_servers_count(outputs_file):
    path = outputs_file(workerHosts=WORKER_HOSTS)
    inputs = resolve_inputs(outputs_file=path, stack=None)
    assert inputs.workers == 0 and [host.workers for host in inputs.worker_hosts] == [2, 2, 2]
    assert [(host.name, host.address, host.host_key) for host in inputs.worker_hosts] == [
        ("w1", "198.51.100.11", "ssh-ed25519 AAAAw1"),
        ("w2", "198.51.100.12", "ssh-ed25519 AAAAw2"),
        ("gpu-a", "198.51.100.13", "ssh-ed25519 AAAAgpu"),
    ]
    # The server stays the server: its own address and key.
    assert (inputs.host, inputs.host_key) == ("203.0.113.7", "ssh-ed25519 AAAAfromoutputs")
    flags = resolve_inputs(outputs_file=path, stack=None, workers=4, server_workers=1, queues=("w2=gpu", "batch"))
    assert flags.workers == 1 and [host.workers for host in flags.worker_hosts] == [4, 4, 4]
    assert queues_of(flags.worker_hosts) == {"w1": "batch", "w2": "gpu", "gpu-a": "batch"}


def test_resolve_inputs_without_worker_hosts_keeps_the_servers_default(outputs_file):
    inputs = resolve_inputs(outputs_file=outputs_file(), stack=None)
    assert inputs.workers == 1 and inputs.worker_hosts == ()
    assert resolve_inputs(outputs_file=outputs_file(), stack=None, workers=3).workers == 3
    # An explicit empty list is no worker hosts too.
    assert resolve_inputs(outputs_file=outputs_file(workerHosts=[]), stack=None).worker_hosts == ()


@pytest.mark.parametrize(
    "flags, message",
    [
        ({"server_workers": 1}, r"^--server-workers: this stack has no worker hosts"),
        ({"queues": ("gpu",)}, r"^--queue: this stack has no worker hosts"),
        ({"workers": 17}, r"^--workers 17: must be a whole number from 0 to 16"),
    ],
)
def test_resolve_inputs_refuses_host_flags_without_worker_hosts(outputs_file, flags, message):
    with pytest.raises(UsageError, match=message):
        resolve_inputs(outputs_file=outputs_file(), stack=None, **flags)


@pytest.mark.parametrize(
    "flags, message",
    [
        ({"queues": ("w9=gpu",)}, r"^--queue 'w9=gpu': no worker host 'w9'"),
        ({"queues": ("bad queue",)}, r"^--queue 'bad queue': QUEUE or HOST=QUEUE"),
        ({"queues": ("a", "b")}, r"^--queue 'b': all hosts already got a queue"),
        ({"server_workers": 17}, r"^--server-workers 17: must be a whole number"),
        ({"workers": -1}, r"^--workers -1: must be a whole number"),
    ],
)
def test_resolve_inputs_refuses_bad_host_flags_with_worker_hosts(outputs_file, flags, message):
    with pytest.raises(UsageError, match=message):
        resolve_inputs(outputs_file=outputs_file(workerHosts=WORKER_HOSTS), stack=None, **flags)


# --- the command line ------------------------------------------------------------------------------
def test_the_bootstrap_command_line_passes_the_host_flags_through(outputs_file, monkeypatch, tmp_path):
    seen = {}

    def fake_run(inputs, console):
        seen["inputs"] = inputs
        return summary()

    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(bootstrap_cli, "run", fake_run)
    argv = ["--outputs", outputs_file(workerHosts=WORKER_HOSTS), "--workers", "3", "--server-workers", "1"]
    assert bootstrap_cli.main([*argv, "--queue", "w1=gpu", "--queue", "batch"]) == 0
    inputs = seen["inputs"]
    assert inputs.workers == 1 and [host.workers for host in inputs.worker_hosts] == [3, 3, 3]
    assert queues_of(inputs.worker_hosts) == {"w1": "gpu", "w2": "batch", "gpu-a": "batch"}


def test_the_bootstrap_command_line_refuses_queue_without_worker_hosts(outputs_file, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(bootstrap_cli, "run", lambda inputs, console: pytest.fail("bad input reached run"))
    assert bootstrap_cli.main(["--outputs", outputs_file(), "--queue", "gpu"]) == 1
    printed = capsys.readouterr()
    assert printed.out == "" and printed.err.startswith("error: --queue: this stack has no worker hosts")


# --- the summary -----------------------------------------------------------------------------------
@dataclass
class Result:  # worker_hosts.HostResult's fields that summary_lines reads
    name: str
    error: str | None
    seconds: float


def test_summary_lines_give_each_hosts_workers_and_time_or_why_it_failed():
    counts = {"w1": 2, "w2": 5}
    lines = summary_lines([Result("w1", None, 12.34), Result("w2", "boom: no route", 3.0)], counts.__getitem__)
    assert lines == [
        "worker host w1: ok, 2 worker(s), 12.3 s",
        "worker host w2: FAILED after 3.0 s: boom: no route",
    ]
    assert summary_lines([], counts.__getitem__) == []


def summary(**changes) -> Summary:
    values = {
        "seconds": 42.0,
        "ui_url": "http://203.0.113.7:4200",
        "api_url": "http://203.0.113.7:4200/api",
        "profile_name": "p",
        "profile_path": Path("/home/u/.prefect/profiles.toml"),
        "profile_active": True,
        "server_version": "3.9.1",
        "workers": 0,
        "results_block": None,
        "results_url": None,
    }
    return Summary(**(values | changes))


def test_print_summary_prints_a_line_per_worker_host_after_the_servers_workers():
    out = io.StringIO()
    lines = ["worker host w1: ok, 2 worker(s), 12.3 s", "worker host w2: FAILED after 3.0 s: boom"]
    bootstrap_cli.print_summary(summary(worker_hosts=lines), Console(out, io.StringIO()))
    printed = out.getvalue().splitlines()
    at = printed.index("  workers: 0 on the VM, polling work pool 'default'")
    assert printed[at + 1 : at + 3] == [f"  {line}" for line in lines]
    out = io.StringIO()
    bootstrap_cli.print_summary(summary(), Console(out, io.StringIO()))
    assert "worker host" not in out.getvalue()


def test_a_failed_worker_host_makes_the_bootstrap_exit_1_naming_it(outputs_file, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "home"))
    path = outputs_file(workerHosts=WORKER_HOSTS)
    failed = summary(
        worker_hosts=["worker host w1: ok, 2 worker(s), 1.0 s", "worker host w2: FAILED after 1.0 s: x"],
        failed_hosts=["w2", "gpu-a"],
    )
    monkeypatch.setattr(bootstrap_cli, "run", lambda inputs, console: failed)
    assert bootstrap_cli.main(["--outputs", path]) == 1
    printed = capsys.readouterr()
    assert "  worker host w2: FAILED after 1.0 s: x" in printed.out.splitlines()  # the summary is printed first
    errors = [line for line in printed.err.splitlines() if line.startswith("error: ")]
    assert errors == [
        "error: worker host(s) w2, gpu-a failed (their steps and the reason are above); the server and the other "
        "hosts are converged. Run the bootstrap again once the cause is fixed."
    ]
    monkeypatch.setattr(bootstrap_cli, "run", lambda inputs, console: summary(worker_hosts=["worker host w1: ok"]))
    assert bootstrap_cli.main(["--outputs", path]) == 0
    assert "error:" not in capsys.readouterr().err
