"""Run the Pulumi program under Pulumi's mocks, the way the language host runs it, and return the graph.

`run_program(config)` executes `runpy.run_path(<repo>/infra, run_name="__main__")` inside
`pulumi.runtime.run_in_stack` with `pulumi.runtime.set_mocks` providers (mockstack.providers) that
answer like the real ones: ids, ARNs, IPs, auto-names, AMI lookups, real ED25519 keys, and secrets
that stay secrets. It returns every registered resource with its wire-format (camelCase) inputs,
the stack's exports and which of them are secret. An exception in the program propagates
(`record_program` instead returns it with whatever was registered before it).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import runpy
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import rpc, settings
from pulumi.runtime.proto import resource_pb2
from pulumi.runtime.stack import run_in_stack
from pulumi.runtime.sync_await import _sync_await

from mockstack.providers import ProviderMocks

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PROGRAM_DIR = REPO_ROOT / "infra"
STACK_TYPE = "pulumi:pulumi:Stack"


@dataclass(frozen=True)
class MockResource:
    """One registered resource as the engine (and a policy pack) sees it."""

    type: str
    name: str
    urn: str
    id: str  # the provider's id; "" for components
    inputs: dict[str, Any]  # wire (camelCase) property names, plain values
    outputs: dict[str, Any]  # custom resources: the mock provider's state; components: register_outputs
    parent: str | None  # the parent's URN; None for children of the stack
    custom: bool  # False for ComponentResources
    secret_inputs: frozenset[str]
    secret_outputs: frozenset[str]
    retain_on_delete: bool
    ignore_changes: tuple[str, ...]
    dependencies: frozenset[str] = frozenset()  # URNs the resource waits for (depends_on and its inputs' resources)


@dataclass(frozen=True)
class MockInvoke:
    token: str
    args: dict[str, Any]


@dataclass(frozen=True)
class StackRun:
    resources: list[MockResource]
    outputs: dict[str, Any]
    secret_outputs: frozenset[str]
    invokes: list[MockInvoke]
    error: BaseException | None = None  # what the program raised (record_program only)

    def of_type(self, type_: str) -> list[MockResource]:
        return [r for r in self.resources if r.type == type_]

    def one(self, type_: str) -> MockResource:
        found = self.of_type(type_)
        if len(found) != 1:
            raise LookupError(f"expected one {type_}, found {len(found)}: {[r.name for r in found]}")
        return found[0]

    def children_of(self, parent: MockResource) -> list[MockResource]:
        return [r for r in self.resources if r.parent == parent.urn]


def _plain(value: Any) -> Any:
    """Wire values without secret wrappers."""
    value = rpc.unwrap_rpc_secret(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _split_secrets(props: Mapping[str, Any]) -> tuple[dict[str, Any], frozenset[str]]:
    return ({k: _plain(v) for k, v in props.items()}, frozenset(k for k, v in props.items() if rpc.is_rpc_secret(v)))


def _with_thread_loop(method):
    """Run a monitor call (made from an executor thread) on an event loop of its own that is
    closed afterwards. Left to pulumi, every worker thread keeps an unclosed loop that the
    garbage collector later fails to close, which shows as noise in later runs."""

    @functools.wraps(method)
    def wrapper(self, request):
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            return method(self, request)
        finally:
            asyncio.set_event_loop(None)
            loop.close()

    return wrapper


class _RecordingMonitor(pulumi_mocks.MockMonitor):
    """The mock monitor, plus a record of every registration, its options, outputs and invokes.

    It also honours `additionalSecretOutputs` (as the engine does), so a provider's secret
    outputs, e.g. tls private keys and IAM secrets, reach the program as secrets.
    """

    def __init__(self, mocks: ProviderMocks):
        super().__init__(mocks)
        self.registrations: list[dict[str, Any]] = []
        self.registered_outputs: dict[str, dict[str, Any]] = {}
        self.invokes: list[MockInvoke] = []

    def make_urn(self, parent: str, type_: str, name: str) -> str:
        # As the engine does: children of the stack have no "pulumi:pulumi:Stack$" in their type chain.
        if parent and parent.split("::")[2] == STACK_TYPE:
            parent = ""
        return super().make_urn(parent, type_, name)

    @_with_thread_loop
    def RegisterResource(self, request):
        if request.type == STACK_TYPE:
            return super().RegisterResource(request)
        urn = self.make_urn(request.parent, request.type, request.name)
        inputs = rpc.deserialize_properties(request.object)
        args = pulumi_mocks.MockResourceArgs(
            typ=request.type,
            name=request.name,
            inputs=inputs,
            provider=request.provider,
            resource_id=request.importId,
            custom=request.custom or False,
        )
        id_, state = self.mocks.new_resource(args)
        state = {k: rpc.wrap_rpc_secret(v) if k in request.additionalSecretOutputs else v for k, v in state.items()}
        self.resources[urn] = pulumi_mocks.MockMonitor.ResourceRegistration(urn, id_, state)
        self.registrations.append(
            {
                "type": request.type,
                "name": request.name,
                "urn": urn,
                "id": id_ or "",
                "inputs": inputs,
                "state": state,
                "parent": request.parent or None,
                "custom": bool(request.custom),
                "retain_on_delete": bool(request.retainOnDelete),
                "ignore_changes": tuple(request.ignoreChanges),
                "dependencies": frozenset(request.dependencies),
            }
        )
        obj_proto = _sync_await(rpc.serialize_properties(state, {}))
        return resource_pb2.RegisterResourceResponse(urn=urn, id=id_, object=obj_proto)

    @_with_thread_loop
    def RegisterResourceOutputs(self, request):
        outputs = rpc.deserialize_properties(request.outputs)
        # Merged: set_mocks registers a placeholder stack with no outputs under the same URN.
        self.registered_outputs.setdefault(request.urn, {}).update(outputs)
        return super().RegisterResourceOutputs(request)

    @_with_thread_loop
    def Invoke(self, request):
        self.invokes.append(MockInvoke(request.tok, _plain(rpc.deserialize_properties(request.args))))
        return super().Invoke(request)


def config_text(value: object) -> str:
    """A config value as the language host receives it: strings as they are, anything else as JSON
    (what structured config and `pulumi config set --path` store)."""
    return value if isinstance(value, str) else json.dumps(value)


def record_program(
    config: Mapping[str, object],
    *,
    stack: str = "dev",
    project: str = "prefect-host",
    program_dir: str | Path = DEFAULT_PROGRAM_DIR,
) -> StackRun:
    """Run the program with `config` (full keys, e.g. "prefect-host:cloud", "aws:region") and record
    what it registered, also when it fails: then StackRun.error holds the exception it raised."""
    wire_config = {key: config_text(value) for key, value in config.items()}
    mocks = ProviderMocks(wire_config, project=project, stack=stack)
    monitor = _RecordingMonitor(mocks)
    # As the language host does: asyncio's complaints about futures left behind by a failed program are noise.
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    error: BaseException | None = None
    try:
        settings.ROOT.set(None)
        pulumi.runtime.set_all_config(wire_config, [])
        pulumi.runtime.set_mocks(mocks, project=project, stack=stack, preview=False, monitor=monitor)
        # set_mocks installs a placeholder root stack; the language host makes the real one in run_in_stack.
        settings.ROOT.set(None)
        loop.run_until_complete(run_in_stack(lambda: runpy.run_path(str(program_dir), run_name="__main__")))
    except Exception as exc:  # noqa: BLE001 - handed to the caller in StackRun.error
        error = exc
    finally:
        _close(loop)

    stack_urn = f"urn:pulumi:{stack}::{project}::{STACK_TYPE}::{project}-{stack}"
    resources = []
    for registration in monitor.registrations:
        inputs, secret_inputs = _split_secrets(registration["inputs"])
        outputs, secret_outputs = _split_secrets(
            registration["state"] if registration["custom"] else monitor.registered_outputs.get(registration["urn"], {})
        )
        parent = registration["parent"]
        resources.append(
            MockResource(
                type=registration["type"],
                name=registration["name"],
                urn=registration["urn"],
                id=registration["id"],
                inputs=inputs,
                outputs=outputs,
                parent=None if parent == stack_urn else parent,
                custom=registration["custom"],
                secret_inputs=secret_inputs,
                secret_outputs=secret_outputs,
                retain_on_delete=registration["retain_on_delete"],
                ignore_changes=registration["ignore_changes"],
                dependencies=registration["dependencies"],
            )
        )
    exports, secret_exports = _split_secrets(monitor.registered_outputs.get(stack_urn, {}))
    return StackRun(
        resources=resources, outputs=exports, secret_outputs=secret_exports, invokes=monitor.invokes, error=error
    )


def run_program(
    config: Mapping[str, object],
    *,
    stack: str = "dev",
    project: str = "prefect-host",
    program_dir: str | Path = DEFAULT_PROGRAM_DIR,
) -> StackRun:
    """Run the program with `config`; an exception in the program propagates unchanged."""
    run = record_program(config, stack=stack, project=project, program_dir=program_dir)
    if run.error is not None:
        raise run.error
    return run


def _close(loop: asyncio.AbstractEventLoop) -> None:
    """Leave the runtime as a fresh process would find it, so the next run starts clean."""
    pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
    for task in pending:
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    loop.close()
    asyncio.set_event_loop(None)
    settings.ROOT.set(None)
    settings.SETTINGS.outputs.clear()
    pulumi.runtime.set_all_config({}, [])
