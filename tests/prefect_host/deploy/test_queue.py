"""deploy --queue: the work queue of the pool a deployment's runs go to (the worker hosts' workers poll
one each). Checked before any network call; a deployment on another queue is not current, so a redeploy
that only changes the queue updates it. Without a server: Prefect's client and Flow stood in for."""

from __future__ import annotations

import shutil
import types
from pathlib import Path

import pytest

from prefect_host.cli import deploy as deploy_cli
from prefect_host.cli.deploy import parse_request
from prefect_host.deploy.deployment import PULL_STEP, _is_current, apply_deployment, schedule_of
from prefect_host.deploy.request import DeployError

REPO = Path(__file__).resolve().parents[3]
ENTRYPOINT = "duration_model.py:train_duration_model"
VERSION = "v1"
BLOCK = "code-block"
PULL_STEPS = [{PULL_STEP: {"block_type_slug": "s3-bucket", "block_document_name": BLOCK}}]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return Path(shutil.copytree(REPO / "examples" / "flows", tmp_path / "flows"))


# --- the option ------------------------------------------------------------------------------------
def test_queue_reaches_the_request_and_defaults_to_none(project):
    request, _ = parse_request([ENTRYPOINT, "--queue", "gpu"], cwd=project)
    assert request.queue == "gpu" and request.pool == "default"
    assert parse_request([ENTRYPOINT, "--queue", "Team_A.v2-1", "--pool", "other"], cwd=project)[0].queue == (
        "Team_A.v2-1"
    )
    assert parse_request([ENTRYPOINT], cwd=project)[0].queue is None


@pytest.mark.parametrize("queue", ["", "-gpu", ".gpu", "a b", "gpu/x", "gpu\n", "q" * 65, "gpu;id", "émile"])
def test_a_bad_queue_name_is_refused_naming_queue(project, queue):
    with pytest.raises(DeployError) as refused:
        parse_request([ENTRYPOINT, f"--queue={queue}"], cwd=project)  # '-gpu' alone would read as an option
    assert str(refused.value).startswith(f"--queue {queue!r}: use 1-64 letters, digits")


def test_the_longest_queue_name_passes(project):
    assert parse_request([ENTRYPOINT, "--queue", "q" * 64], cwd=project)[0].queue == "q" * 64


def test_a_bad_queue_is_one_paragraph_before_any_deploy(project, monkeypatch, capsys):
    monkeypatch.chdir(project)
    monkeypatch.setattr(deploy_cli, "deploy", lambda *a, **k: pytest.fail("bad input reached deploy"))
    assert deploy_cli.main([ENTRYPOINT, "--queue", "a b"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("deploy failed: --queue 'a b': ") and err.count("\n") == 1


# --- is the deployment on the server the one asked for ---------------------------------------------
def request(project: Path, *args: str):
    return parse_request([ENTRYPOINT, *args], cwd=project)[0]


def existing(req, *, work_queue_name: str = "default", **changes):
    """A deployment as the server returns it, matching `req` but for `changes`."""
    values = {
        "id": "dep-1",
        "version": VERSION,
        "entrypoint": req.entrypoint,
        "work_pool_name": req.pool,
        "work_queue_name": work_queue_name,
        "pull_steps": PULL_STEPS,
        "parameters": req.parameters,
        "enforce_parameter_schema": True,
        "schedules": [types.SimpleNamespace(active=True, schedule=schedule_of(req))],
    }
    return types.SimpleNamespace(**(values | changes))


@pytest.mark.parametrize(
    "args, on_server, current",
    [
        ((), "default", True),  # no --queue: the pool's default queue
        ((), "gpu", False),  # was pinned to a queue, now asked for the default one
        (("--queue", "gpu"), "default", False),
        (("--queue", "gpu"), "gpu", True),
        (("--queue", "gpu"), "gpu2", False),
        (("--queue", "default"), "default", True),
    ],
)
def test_the_queue_is_part_of_what_makes_a_deployment_current(project, args, on_server, current):
    req = request(project, *args)
    deployed = existing(req, work_queue_name=on_server)
    assert _is_current(deployed, req, VERSION, PULL_STEPS, schedule_of(req)) is current


def test_everything_else_equal_a_current_deployment_still_needs_its_pool(project):
    """The queue check is one more condition, not a replacement of the pool's."""
    req = request(project, "--queue", "gpu")
    assert not _is_current(
        existing(req, work_queue_name="gpu", work_pool_name="other"), req, VERSION, PULL_STEPS, schedule_of(req)
    )


# --- the deploy call -------------------------------------------------------------------------------
class FakeClient:
    def __init__(self, deployed):
        self.deployed = deployed

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def read_deployment_by_name(self, name):
        return self.deployed


@pytest.fixture
def deploys(monkeypatch):
    """Stands in for Prefect's client (returning `deployed`) and Flow.from_source; the kwargs of each deploy."""
    import prefect
    import prefect.client.orchestration

    calls: list[dict] = []

    class Remote:
        def deploy(self, **kwargs):
            calls.append(kwargs)
            return "dep-2"

    def install(deployed):
        monkeypatch.setattr(prefect.client.orchestration, "get_client", lambda sync_client: FakeClient(deployed))
        monkeypatch.setattr(prefect.Flow, "from_source", staticmethod(lambda source, entrypoint: Remote()))
        return calls

    return install


def run_apply(req, deployed, deploys):
    calls = deploys(deployed)
    code_block = types.SimpleNamespace(_block_document_name=BLOCK)
    flow = types.SimpleNamespace(name="train-duration-model")
    outcome = apply_deployment(flow, code_block, req, "prod", VERSION, schedule_of(req))
    return outcome, calls


def test_a_redeploy_that_only_changes_the_queue_updates_the_deployment(project, deploys):
    req = request(project, "--queue", "gpu")
    outcome, calls = run_apply(req, existing(req, work_queue_name="default"), deploys)
    assert outcome == ("dep-2", "updated", None)
    assert [(c["work_pool_name"], c["work_queue_name"], c["name"]) for c in calls] == [("default", "gpu", "prod")]


def test_a_deployment_on_its_queue_is_left_unchanged(project, deploys):
    req = request(project, "--queue", "gpu")
    outcome, calls = run_apply(req, existing(req, work_queue_name="gpu"), deploys)
    assert outcome == ("dep-1", "unchanged", None) and calls == []


def test_without_queue_prefect_picks_the_pools_default(project, deploys):
    req = request(project)
    outcome, calls = run_apply(req, existing(req, work_queue_name="gpu"), deploys)
    assert outcome[1] == "updated" and calls[0]["work_queue_name"] is None
