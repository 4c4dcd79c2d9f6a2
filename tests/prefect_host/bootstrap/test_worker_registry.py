"""Workers of worker hosts that left the stack: deleted from the pool by their host name (kept in a Prefect
variable between runs), and nothing else: not a laptop's worker, not a name that merely starts alike,
nothing at all while a host's name is unknown. Against a stand-in API (httpx.MockTransport)."""

from __future__ import annotations

import base64
import io
import json
import ssl
import types
import urllib.parse

import httpx
import pytest

from prefect_host.bootstrap import worker_registry
from prefect_host.bootstrap.worker_host_inputs import WorkerHostInputs
from prefect_host.bootstrap.worker_hosts import HostResult
from prefect_host.console import Console, parse_step_lines
from prefect_host.errors import PrefectHostError
from prefect_host.local.pebble_tls import make_tls_ca_and_certificate
from prefect_host.tls import load_ca_certificate
from tests.prefect_host.bootstrap.bootstrap_samples import sample_inputs

API = "http://203.0.113.7:4200/api"
AUTH = "admin:Registry-Secret-7"
VARIABLE_PATH = f"/api/variables/name/{worker_registry.VARIABLE}"
WORKERS_PATH = "/api/work_pools/default/workers"
A = WorkerHostInputs("a", "198.51.100.11", "ssh-ed25519 AAAAa", 2)
B = WorkerHostInputs("b", "198.51.100.12", "ssh-ed25519 AAAAb", 2)


class FakeApi:
    """The variable (None: never saved), the pool's workers, and every request as (method, path, body)."""

    def __init__(self, variable: object = None, workers: tuple[str, ...] = ()):
        self.variable = variable
        self.workers = list(workers)
        self.requests: list[tuple[str, str, object]] = []
        self.deleted: list[str] = []  # the workers a DELETE removed
        self.clients: list[dict] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        expected = "Basic " + base64.b64encode(AUTH.encode()).decode()
        assert request.headers.get("authorization") == expected, request
        body = json.loads(request.content) if request.content else None
        path = urllib.parse.unquote(request.url.path)
        self.requests.append((request.method, path, body))
        if (request.method, path) == ("GET", VARIABLE_PATH):
            if self.variable is None:
                return httpx.Response(404, json={"detail": "Variable not found."})
            return httpx.Response(200, json={"name": worker_registry.VARIABLE, "value": self.variable})
        if (request.method, path) == ("POST", f"{WORKERS_PATH}/filter"):
            return httpx.Response(200, json=[{"name": name, "status": "OFFLINE"} for name in self.workers])
        if request.method == "DELETE" and path.startswith(f"{WORKERS_PATH}/"):
            name = path.removeprefix(f"{WORKERS_PATH}/")
            if name not in self.workers:
                return httpx.Response(404, json={"detail": "not found"})
            self.workers.remove(name)
            self.deleted.append(name)
            return httpx.Response(204)
        if (request.method, path) == ("PATCH", VARIABLE_PATH):
            self.variable = body["value"]
            return httpx.Response(204)
        if (request.method, path) == ("POST", "/api/variables/"):
            self.variable = body["value"]
            return httpx.Response(201, json=body)
        return httpx.Response(500, json={"detail": f"unexpected {request.method} {path}"})

    def client(self, **options) -> httpx.Client:
        self.clients.append(options)
        return httpx.Client(transport=httpx.MockTransport(self.handle), **options)

    @property
    def calls(self) -> list[tuple[str, str]]:
        return [(method, path) for method, path, _ in self.requests]


@pytest.fixture
def api(monkeypatch):
    def install(**options) -> FakeApi:
        fake = FakeApi(**options)
        monkeypatch.setattr(worker_registry, "httpx", types.SimpleNamespace(Client=fake.client))
        return fake

    return install


def result(name: str, hostname: str | None, error: str | None = None) -> HostResult:
    return HostResult(name, "198.51.100.1", hostname=hostname, error=error)


def forget(worker_hosts=(A,), results=(), ca=None) -> str:
    out = io.StringIO()
    inputs = sample_inputs(api_url=API, auth_string=AUTH, worker_hosts=tuple(worker_hosts))
    worker_registry.forget_removed_hosts(inputs, ca, list(results), Console(out, io.StringIO()))
    return out.getvalue()


def test_no_worker_hosts_and_no_variable_ask_only_for_the_variable(api):
    fake = api(workers=("ph-7-1", "my-laptop"))
    assert forget(worker_hosts=(), results=()) == ""
    assert fake.calls == [("GET", VARIABLE_PATH)]
    assert fake.variable is None and fake.workers == ["ph-7-1", "my-laptop"]


def test_the_first_run_with_worker_hosts_saves_their_names_and_deletes_nothing(api):
    fake = api(workers=("a-vm-1", "a-vm-2", "ph-7-1"))
    printed = forget(worker_hosts=(A, B), results=(result("b", "b-vm"), result("a", "a-vm")))
    assert ("POST", "/api/variables/", {"name": worker_registry.VARIABLE, "value": ["a-vm", "b-vm"]}) in fake.requests
    assert not [call for call in fake.calls if call[0] in ("DELETE", "PATCH")]
    assert fake.variable == ["a-vm", "b-vm"] and fake.workers == ["a-vm-1", "a-vm-2", "ph-7-1"]
    assert [(s.tag, s.name) for s in parse_step_lines(printed)] == [
        ("changed", "forget the workers of removed worker hosts (none)")
    ]


def test_a_removed_host_has_exactly_its_numbered_workers_deleted(api):
    workers = ("a-1", "a-2", "b-1", "b-12", "b-x", "bb-1", "b-1-2", "xb-1", "b-", "b", "my-laptop", "ph-7-1")
    fake = api(variable=["a", "b"], workers=workers)
    printed = forget(worker_hosts=(A,), results=(result("a", "a"),))
    assert sorted(fake.deleted) == ["b-1", "b-12"]
    assert fake.workers == ["a-1", "a-2", "b-x", "bb-1", "b-1-2", "xb-1", "b-", "b", "my-laptop", "ph-7-1"]
    # Then the variable holds the hosts of this run.
    assert fake.requests[-1] == ("PATCH", VARIABLE_PATH, {"name": worker_registry.VARIABLE, "value": ["a"]})
    assert fake.calls.index(("DELETE", f"{WORKERS_PATH}/b-12")) < len(fake.calls) - 1
    assert [(s.tag, s.name) for s in parse_step_lines(printed)] == [
        ("changed", "forget the workers of removed worker hosts (b)")
    ]


def test_a_host_name_is_matched_as_text_not_as_a_pattern(api):
    fake = api(variable=["w.x", "a"], workers=("w.x-1", "wAx-1", "w-x-1"))
    forget(worker_hosts=(A,), results=(result("a", "a"),))
    assert fake.workers == ["wAx-1", "w-x-1"]


def test_every_host_removed_deletes_all_their_workers_and_saves_an_empty_list(api):
    fake = api(variable=["a", "b"], workers=("a-1", "b-2", "ph-7-1"))
    forget(worker_hosts=(), results=())
    assert fake.workers == ["ph-7-1"] and fake.variable == []


def test_nothing_changed_asks_only_for_the_variable(api):
    fake = api(variable=["a-vm", "b-vm"], workers=("a-vm-1",))
    assert forget(worker_hosts=(A, B), results=(result("a", "a-vm"), result("b", "b-vm"))) == ""
    assert fake.calls == [("GET", VARIABLE_PATH)]


def test_a_host_that_failed_before_its_name_was_read_stops_everything(api):
    fake = api(variable=["a-vm", "b-vm"], workers=("a-vm-1", "b-vm-1"))
    assert forget(worker_hosts=(A, B), results=(result("a", "a-vm"), result("b", None, "no route"))) == ""
    assert fake.requests == [] and fake.variable == ["a-vm", "b-vm"]
    # One that failed after: its name is known, and kept.
    forget(worker_hosts=(A, B), results=(result("a", "a-vm"), result("b", "b-vm", "workers did not check in")))
    assert fake.workers == ["a-vm-1", "b-vm-1"] and fake.variable == ["a-vm", "b-vm"]


def test_a_new_host_besides_the_others_is_added_without_deleting(api):
    fake = api(variable=["a-vm"], workers=("a-vm-1",))
    forget(worker_hosts=(A, B), results=(result("a", "a-vm"), result("b", "b-vm")))
    assert fake.variable == ["a-vm", "b-vm"] and fake.workers == ["a-vm-1"]
    assert ("PATCH", VARIABLE_PATH) in fake.calls and ("POST", "/api/variables/") not in fake.calls


@pytest.mark.parametrize("junk", [{"not": "a list"}, "a-vm", [1, None, {"x": 1}]])
def test_a_variable_of_another_shape_deletes_nothing_and_is_rewritten(api, junk):
    fake = api(variable=junk, workers=("a-vm-1", "1-1"))
    forget(worker_hosts=(A,), results=(result("a", "a-vm"),))
    assert fake.workers == ["a-vm-1", "1-1"] and fake.variable == ["a-vm"]
    assert ("PATCH", VARIABLE_PATH) in fake.calls


def test_the_client_verifies_against_the_pinned_ca(api, tmp_path):
    ca_path, _, _ = make_tls_ca_and_certificate(tmp_path, "203.0.113.7")
    ca = load_ca_certificate(ca_path.read_text(), source="test")
    fake = api(variable=["a-vm"])
    forget(worker_hosts=(A,), results=(result("a", "a-vm"),), ca=ca)
    assert isinstance(fake.clients[0]["verify"], ssl.SSLContext)
    assert fake.clients[0]["verify"].get_ca_certs()[0]["subject"] == (
        (("commonName", "prefect-host test Pebble TLS CA"),),
    )
    forget(worker_hosts=(A,), results=(result("a", "a-vm"),))  # acme: the system's trust store, verifying
    system = fake.clients[1]["verify"]
    assert isinstance(system, ssl.SSLContext) and system.verify_mode == ssl.CERT_REQUIRED and system.check_hostname
    assert system.get_ca_certs() == ssl.create_default_context().get_ca_certs()


def test_a_pool_that_answers_500_is_an_error_of_the_bootstrap(api, monkeypatch):
    fake = api(variable=["a", "b"], workers=("b-1",))
    handle = fake.handle

    def refusing(request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/api/work_pools/"):
            return httpx.Response(500, json={"exception_message": "Internal Server Error"})
        return handle(request)

    monkeypatch.setattr(fake, "handle", refusing)
    with pytest.raises(PrefectHostError, match="HTTP 500"):
        forget(worker_hosts=(A,), results=(result("a", "a"),))


def test_a_refused_save_of_the_variable_is_an_error(api, monkeypatch):
    fake = api(variable=None)
    handle = fake.handle

    def refusing(request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path == "/api/variables/":
            return httpx.Response(422, json={"detail": "invalid"})
        return handle(request)

    monkeypatch.setattr(fake, "handle", refusing)
    with pytest.raises(PrefectHostError, match="HTTP 422"):
        forget(worker_hosts=(A,), results=(result("a", "a"),))


def test_a_removed_hosts_workers_past_the_first_page_are_deleted_too(api, monkeypatch):
    online = tuple(f"w{i:02d}-vm-{n}" for i in range(13) for n in range(1, 17))  # 208 with newer heartbeats
    fake = api(variable=["gone", "w00-vm"], workers=(*online, "gone-1"))
    handle = fake.handle

    def paged(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/workers/filter"):
            body = json.loads(request.content or b"{}")
            limit, offset = body.get("limit") or 200, body.get("offset") or 0
            fake.requests.append((request.method, request.url.path, body))
            return httpx.Response(200, json=[{"name": name} for name in fake.workers[offset : offset + limit]])
        return handle(request)

    monkeypatch.setattr(fake, "handle", paged)
    forget(worker_hosts=(A,), results=(result("a", "w00-vm"),))
    assert "gone-1" not in fake.workers
