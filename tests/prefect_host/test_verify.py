"""The HTTP checks against servers that answer right and wrong (the e2e tests use a real one)."""

from __future__ import annotations

import base64
import json
import time

import httpx
import pytest

from prefect_host.errors import VerifyError
from prefect_host.verify import HealthTimeout, api_root, check_server, ensure_work_pool, wait_until_healthy

API = "http://203.0.113.7:4200/api"
AUTH = "admin:pw:with:colons"


class FakeServer:
    """Answers like a Prefect server; each attribute bends one answer the way a broken one would."""

    def __init__(self):
        self.enforce_auth = True
        self.version = "3.9.1"
        self.ui_api_url = API
        self.pools: dict[str, dict] = {}
        self.healthy_after = 0
        self.health_calls = 0
        self.posts: list[dict] = []
        self.requests: list[tuple[str, str, bool]] = []  # (method, path, with the right credentials)

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        authed = request.headers.get("authorization") == "Basic " + base64.b64encode(AUTH.encode()).decode()
        self.requests.append((request.method, path, authed))
        if path == "/api/health":
            self.health_calls += 1
            if self.health_calls <= self.healthy_after:
                raise httpx.ConnectError("connection refused")
            return httpx.Response(200, json=True)
        if path == "/ui-settings":
            return httpx.Response(200, json={"api_url": self.ui_api_url, "auth": "BASIC"})
        if self.enforce_auth and not authed:
            return httpx.Response(401, json={"exception_message": "Unauthorized"})
        if path == "/api/admin/version":
            return httpx.Response(200, json=self.version)
        if path.startswith("/api/work_pools/") and request.method == "GET":
            name = path.rsplit("/", 1)[-1]
            return httpx.Response(200, json=self.pools[name]) if name in self.pools else httpx.Response(404)
        if path == "/api/work_pools/" and request.method == "POST":
            body = json.loads(request.content)
            self.posts.append(body)
            if body["name"] in self.pools:
                return httpx.Response(409)
            self.pools[body["name"]] = body
            return httpx.Response(201, json=body)
        return httpx.Response(404)


@pytest.fixture
def fake():
    return FakeServer()


@pytest.fixture
def client(fake):
    with httpx.Client(transport=httpx.MockTransport(fake.handle)) as client:
        yield client


def test_api_root():
    assert api_root("http://h:4200/api") == "http://h:4200"
    assert api_root("http://h:4200/api/") == "http://h:4200"


def test_health_is_polled_until_true(fake, client):
    fake.healthy_after = 3
    wait_until_healthy(client, API, timeout=10, poll_every=0.01)
    assert fake.health_calls == 4


def test_health_times_out_with_the_last_error(fake, client):
    fake.healthy_after = 10**6
    started = time.monotonic()
    with pytest.raises(VerifyError, match=r"did not answer true within 0.3 s.*connection refused"):
        wait_until_healthy(client, API, timeout=0.3, poll_every=0.01)
    assert time.monotonic() - started < 2


def test_watch_can_stop_the_wait_early(fake, client):
    fake.healthy_after = 10**6

    def watch():
        raise VerifyError("the service crashed")

    with pytest.raises(VerifyError, match="crashed"):
        wait_until_healthy(client, API, timeout=30, watch=watch, watch_every=0.05, poll_every=0.01)


def test_correct_server_passes(fake, client):
    """It passes after asking all three questions: auth refused without credentials, the version with them,
    and where the UI calls the API."""
    assert check_server(client, api_url=API, auth_string=AUTH, prefect_version="3.9.1") is None
    assert fake.requests == [
        ("GET", "/api/admin/version", False),
        ("GET", "/api/admin/version", True),
        ("GET", "/ui-settings", False),
    ]


def test_server_without_auth_fails(fake, client):
    fake.enforce_auth = False
    with pytest.raises(VerifyError, match="not 401"):
        check_server(client, api_url=API, auth_string=AUTH, prefect_version="3.9.1")


def test_wrong_credentials_fail(client):
    with pytest.raises(VerifyError, match="HTTP 401"):
        check_server(client, api_url=API, auth_string="admin:other", prefect_version="3.9.1")


def test_other_version_fails(fake, client):
    fake.version = "3.8.3"
    with pytest.raises(VerifyError, match=r"'3.8.3', but prefectVersion is '3.9.1'"):
        check_server(client, api_url=API, auth_string=AUTH, prefect_version="3.9.1")


def test_ui_pointing_elsewhere_fails(fake, client):
    fake.ui_api_url = "http://0.0.0.0:4200/api"
    with pytest.raises(VerifyError, match=r"0.0.0.0"):
        check_server(client, api_url=API, auth_string=AUTH, prefect_version="3.9.1")


@pytest.mark.parametrize(
    "ui_api_url, ok",
    [
        ("/api", True),
        (API, True),
        (API + "/", True),
        ("/other/api", False),
        ("", False),
        (None, False),
    ],
)
def test_the_ui_may_call_the_api_on_its_own_origin(fake, client, ui_api_url, ok):
    """ "/api" is what the bootstrap sets: the browser resolves it against the UI's address."""
    fake.ui_api_url = ui_api_url
    if ok:
        check_server(client, api_url=API, auth_string=AUTH, prefect_version="3.9.1")
    else:
        with pytest.raises(VerifyError, match="The UI is configured to call"):
            check_server(client, api_url=API, auth_string=AUTH, prefect_version="3.9.1")


def test_work_pool_is_created_once(fake, client):
    template = {"job_configuration": {"command": "{{ command }}"}, "variables": {"properties": {}}}
    assert (
        ensure_work_pool(
            client,
            api_url=API,
            auth_string=AUTH,
            name="default",
            pool_type="process",
            base_job_template=lambda: template,
        )
        is True
    )
    assert fake.posts == [{"name": "default", "type": "process", "base_job_template": template}]

    def never():
        raise AssertionError("the template is only built when the pool must be created")

    assert (
        ensure_work_pool(
            client, api_url=API, auth_string=AUTH, name="default", pool_type="process", base_job_template=never
        )
        is False
    )
    assert len(fake.posts) == 1


def test_work_pool_of_another_type_is_an_error(fake, client):
    fake.pools["default"] = {"name": "default", "type": "kubernetes"}
    with pytest.raises(VerifyError, match="type 'kubernetes', not 'process'"):
        ensure_work_pool(
            client, api_url=API, auth_string=AUTH, name="default", pool_type="process", base_job_template=dict
        )


# --- ready=True: the scale-out mode's API, on PostgreSQL ---------------------------------------------
class ReadyServer:
    """Answers /api/ready 503 (database unreachable) `unready` times, then 200 with `body`."""

    def __init__(self, unready: int, body: bytes = b'{"message": "OK"}'):
        self.unready, self.body, self.paths = unready, body, []

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        if request.url.path != "/api/ready":
            return httpx.Response(404)
        if len(self.paths) <= self.unready:
            return httpx.Response(503, json={"message": "Database is not available"})
        return httpx.Response(200, content=self.body)


@pytest.mark.parametrize("body", [b'{"message": "OK"}', b"", b"not json", b"false"])
def test_ready_is_polled_until_200_whatever_the_body(body):
    server = ReadyServer(unready=2, body=body)
    with httpx.Client(transport=httpx.MockTransport(server.handle)) as client:
        wait_until_healthy(client, API + "/", timeout=10, poll_every=0.01, ready=True)
    assert server.paths == ["/api/ready"] * 3


def test_ready_never_200_times_out_naming_the_503():
    server = ReadyServer(unready=10**6)
    with (
        httpx.Client(transport=httpx.MockTransport(server.handle)) as client,
        pytest.raises(HealthTimeout, match=r"GET http://203\.0\.113\.7:4200/api/ready did not answer 200 .*HTTP 503"),
    ):
        wait_until_healthy(client, API, timeout=0.2, poll_every=0.01, ready=True)
    assert set(server.paths) == {"/api/ready"} and len(server.paths) > 1


def test_health_still_needs_true_where_ready_needs_only_200():
    """Without ready, a 200 that is not `true` is not healthy (the sqlite mode's check is unchanged)."""

    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"message": "OK"})

    with httpx.Client(transport=httpx.MockTransport(handle)) as client:
        with pytest.raises(HealthTimeout, match=r"/api/health did not answer true"):
            wait_until_healthy(client, API, timeout=0.1, poll_every=0.01)
        wait_until_healthy(client, API, timeout=0.1, poll_every=0.01, ready=True)
