"""The browser's side of the UI: Debian's Chromium, headless and driven over the DevTools protocol, opens
Prefect's UI (3.9.1 sends / to the v2 UI at /v2) through real Caddy (the rendered Caddyfile, internal mode, on
loopback) in front of a real Prefect server with an auth string, logs in, and shows the flow runs and
deployments pages, and a completed flow run's page with its run graph. With the Content-Security-Policy
Caddy sends, no request leaves the server's origin (Prefect's UI asks a third party for an analytics
configuration: the browser must refuse) and no CSP violation concerns the app's own resources. Marked
e2e, though it boots no guest: it needs the system's `chromium`, which scripts/install-system-deps.sh
installs for `make test` (`make test-fast` leaves it out); without it the test fails, it never skips."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

from e2e_support import clean_env
from prefect_host.caddy import SECURITY_HEADERS, CaddySettings
from prefect_host.local.pebble import free_port
from tests.prefect_host.fixtures_server import PREFECT, stop_process, wait_for_server
from tests.prefect_host.internal_ca_support import make_ca
from tests.prefect_host.test_caddy import CaddyProcess, caddy_data, tool

pytestmark = pytest.mark.e2e

LOOPBACK = "127.0.0.1"
AUTH = "admin:browser-test-password"
CDP_TIMEOUT_S = 30.0
DETACHED = {"stdin": subprocess.DEVNULL, "stderr": subprocess.STDOUT, "start_new_session": True}
# Generous: the UI's bundle is parsed and run on a 2-core machine while another test module's guests
# boot and converge beside it (make test runs two at once); a page that loads shows in seconds.
PAGE_TIMEOUT_S = 150.0
# Headless, on loopback, nothing of its own in the background; the test's own Caddy CA is in no store it reads.
CHROMIUM_FLAGS = (
    "--headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking "
    "--disable-component-update --disable-sync --remote-debugging-port=0 --ignore-certificate-errors"
)
# Prefect 3.9.1 opens its v2 UI by default (the one that asks amplitude for its configuration).
UI_BASE = "/v2"
RUN_NAME = "browser-graph-run"
# A flow of three task runs, one fed by another: the run graph has nodes and an edge to draw.
GRAPH_FLOW = f"""\
from prefect import flow, task
number = task(name="number")(lambda x: x)
flow(name="browser-graph", flow_run_name={RUN_NAME!r})(lambda: number(number(1) + 1) + number(3))()
"""


@dataclass(frozen=True)
class Site:
    origin: str
    caddy: CaddyProcess


@pytest.fixture(scope="module")
def ui_server(tmp_path_factory) -> Iterator[int]:
    """`prefect server start` with its UIs, an auth string and analytics off, as the host runs it."""
    home = tmp_path_factory.mktemp("prefect-ui-server")
    port = free_port(LOOPBACK)
    log_path = home / "server.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [PREFECT, "server", "start", "--host", LOOPBACK, "--port", str(port), "--analytics-off"],
            env=clean_env(
                PREFECT_HOME=str(home),
                PREFECT_SERVER_API_AUTH_STRING=AUTH,
                PREFECT_SERVER_UI_API_URL="/api",
                PREFECT_SERVER_ANALYTICS_ENABLED="false",
                PREFECT_SERVER_UI_STATIC_DIRECTORY=str(home / "ui"),
            ),
            cwd=home,
            stdout=log,
            **DETACHED,
        )
        try:
            wait_for_server(f"http://{LOOPBACK}:{port}/api", process, log_path)
            yield port
        finally:
            stop_process(process)


@pytest.fixture(scope="module")
def site(ui_server: int, tmp_path_factory) -> Iterator[Site]:
    """Caddy with the rendered Caddyfile (internal mode) for https://127.0.0.1:<port> on loopback."""
    tmp_path = tmp_path_factory.mktemp("caddy-ui")
    made = make_ca(tmp_path / "internal-ca", LOOPBACK, caddy_data=caddy_data(tmp_path))
    https_port, alt_port, http_port = free_port(LOOPBACK), free_port(LOOPBACK), free_port(LOOPBACK)
    settings = CaddySettings(
        "internal",
        LOOPBACK,
        ui_server,
        https_ports=(https_port, alt_port),
        http_port=http_port,
        bind_address=LOOPBACK,
        admin_socket=str(tmp_path / "admin.sock"),
        internal_ca_dir=str(made.ca),
    )
    caddy = CaddyProcess(tool("caddy"), tmp_path, settings)
    try:
        origin = f"https://{LOOPBACK}:{https_port}"

        def serving() -> bool:
            try:
                return httpx.get(f"{origin}/api/health", verify=False, timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        caddy.wait_for(serving, "proxying to Prefect")
        yield Site(origin=origin, caddy=caddy)
    finally:
        caddy.stop()


@pytest.fixture(scope="module")
def completed_run(ui_server: int, tmp_path_factory) -> str:
    """A flow run with task runs, completed on the UI's server (straight to its port, not through Caddy); its id."""
    api = f"http://{LOOPBACK}:{ui_server}/api"
    home = tmp_path_factory.mktemp("flow-run-client")
    env = clean_env(PREFECT_HOME=str(home), PREFECT_API_URL=api, PREFECT_API_AUTH_STRING=AUTH)
    done = subprocess.run(
        [sys.executable, "-c", GRAPH_FLOW], env=env, cwd=home, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stdout + done.stderr
    query = {"flow_runs": {"name": {"any_": [RUN_NAME]}}}
    found = httpx.post(f"{api}/flow_runs/filter", json=query, auth=tuple(AUTH.split(":")))
    [run] = found.json()
    assert run["state_type"] == "COMPLETED", run
    return run["id"]


@dataclass
class Page:
    """One page target over CDP: commands answered in order, every event kept."""

    ws: object
    events: list[dict] = field(default_factory=list)
    next_id: int = 0

    def send(self, method: str, **params) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        deadline = time.monotonic() + CDP_TIMEOUT_S
        while True:
            message = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def pump(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                self.events.append(json.loads(self.ws.recv(timeout=left)))
            except TimeoutError:
                return

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return result.get("result", {}).get("value")

    def wait_until(self, expression: str, what: str, timeout: float = PAGE_TIMEOUT_S) -> None:
        started = time.monotonic()
        deadline, reloaded = started + timeout, False
        while not self.evaluate(expression):
            # A load that Chromium dropped (ERR_NETWORK_CHANGED while another module's guest adds its veth)
            # leaves a blank page for good: one reload, then the same wait.
            blank = not self.evaluate("document.body ? document.body.innerText.trim().length : 0")
            if blank and not reloaded and time.monotonic() - started > timeout / 3:
                self.send("Page.reload")
                reloaded = True
            if time.monotonic() > deadline:
                text = self.evaluate("document.body ? document.body.innerText.slice(0, 2000) : ''")
                raise AssertionError(
                    f"{what} not within {timeout:.0f} s; the page shows:\n{text}\nCSP: {csp_messages(self)}\n"
                    f"requests: {list(requests(self).values())}\nlogs: {logs(self)}"
                )
            self.pump(0.5)

    def navigate(self, url: str) -> None:
        self.send("Page.navigate", url=url)


@pytest.fixture
def chromium(tmp_path: Path) -> Iterator[Page]:
    """Headless Chromium on loopback with a profile of its own; the page target's DevTools session."""
    binary = shutil.which("chromium")
    if binary is None:
        pytest.fail("`chromium` is missing: run scripts/install-system-deps.sh as root (make test does).")
    profile = tmp_path / "chromium-profile"
    log_path = tmp_path / "chromium.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [
                binary,
                *CHROMIUM_FLAGS.split(),
                f"--user-data-dir={profile}",
                f"--remote-debugging-address={LOOPBACK}",
                "about:blank",
            ],
            stdout=log,
            **DETACHED,
        )
    try:
        active = profile / "DevToolsActivePort"
        deadline = time.monotonic() + CDP_TIMEOUT_S
        while not (active.exists() and len(active.read_text().split()) >= 2):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"chromium did not open its DevTools port; see {log_path}")
            time.sleep(0.1)
        port = int(active.read_text().split()[0])
        pages: list[dict] = []
        while not pages:
            targets = httpx.get(f"http://{LOOPBACK}:{port}/json/list", timeout=5).json()
            pages = [t for t in targets if t["type"] == "page"]
            if not pages and time.monotonic() > deadline:
                pytest.fail(f"chromium has no page target; see {log_path}")
            time.sleep(0.1)
        with connect(pages[0]["webSocketDebuggerUrl"], max_size=None, open_timeout=CDP_TIMEOUT_S) as ws:
            page = Page(ws)
            for domain in ("Page", "Network", "Runtime", "Log"):
                page.send(f"{domain}.enable")
            page.send("Network.setCacheDisabled", cacheDisabled=True)
            yield page
    finally:
        stop_process(process)


def log_in(page: Page, origin: str) -> None:
    """Opens the UI, types the auth string into its login form and submits it; waits until in."""
    page.navigate(f"{origin}/")
    page.wait_until("!!document.querySelector('input[type=password], input')", "the login form")
    page.evaluate("(document.querySelector('input[type=password]') || document.querySelector('input')).focus()")
    page.send("Input.insertText", text=AUTH)
    page.evaluate(
        "(() => { const b = document.querySelector('button[type=submit]') || [...document.querySelectorAll('button')]"
        ".find(b => /log ?in|sign ?in|submit/i.test(b.innerText)); if (b) { b.click(); return true; }"
        " document.querySelector('form').requestSubmit(); return true; })()"
    )
    page.wait_until(
        f"location.pathname.startsWith('{UI_BASE}/') && !document.querySelector('input[type=password]')", "logged in"
    )


def csp_messages(page: Page, start: int = 0) -> list[str]:
    return [text for text in logs(page, start) if re.search("Content.Security.Policy", text)]


def logs(page: Page, start: int = 0) -> list[str]:
    """The console's messages, the browser's own log entries and uncaught exceptions, from event `start` on."""
    texts = []
    for event in page.events[start:]:
        method, params = event.get("method"), event.get("params", {})
        if method == "Log.entryAdded":
            texts.append(params["entry"].get("text", ""))
        elif method == "Runtime.consoleAPICalled":
            texts.append(" ".join(str(arg.get("value", arg.get("description", ""))) for arg in params["args"]))
        elif method == "Runtime.exceptionThrown":
            texts.append(json.dumps(params["exceptionDetails"]))
    return texts


RESPONSES = ("Network.responseReceived", "Network.webSocketHandshakeResponseReceived")


def requests(page: Page, start: int = 0) -> dict[str, dict]:
    """requestId -> {url, status, blocked} for every request the page made (WebSockets included),
    from event `start` on."""
    seen: dict[str, dict] = {}
    for event in page.events[start:]:
        method, params = event.get("method"), event.get("params", {})
        if method == "Network.requestWillBeSent":
            seen.setdefault(params["requestId"], {"url": params["request"]["url"], "status": None, "blocked": None})
        elif method == "Network.webSocketCreated":
            seen.setdefault(params["requestId"], {"url": params["url"], "status": None, "blocked": None})
        elif method in RESPONSES and params["requestId"] in seen:
            seen[params["requestId"]]["status"] = params["response"]["status"]
        elif method == "Network.loadingFailed" and params["requestId"] in seen:
            seen[params["requestId"]]["blocked"] = params.get("blockedReason") or params.get("errorText")
    return seen


def test_ui_logs_in_and_stays_on_its_own_origin(site: Site, chromium: Page):
    page, origin = chromium, site.origin
    for path in ("/", "/api/health"):
        response = httpx.get(f"{origin}{path}", verify=False, timeout=10)
        assert response.status_code == 200
        for name, value in SECURITY_HEADERS.items():
            assert response.headers[name] == value

    log_in(page, origin)
    for path, api in (("/runs", "/api/flow_runs/paginate"), ("/deployments", "/api/deployments/")):
        page.pump(1)
        start = len(page.events)
        page.navigate(f"{origin}{UI_BASE}{path}")
        page.wait_until(
            f"location.pathname.startsWith({json.dumps(UI_BASE + path)}) && "
            "!document.querySelector('input[type=password]') && document.body.innerText.length > 50",
            f"the {path} page",
        )
        page.pump(3)
        # Logged in: the page's own API calls, made after it opened, are answered.
        called = [r for r in requests(page, start).values() if r["url"].startswith(origin + api)]
        assert called and all(r["status"] == 200 for r in called), (path, called)

    attempted = assert_only_other_origins_refused(page, origin)
    # Prefect's UI did try its analytics service, and the browser blocked it.
    assert any("amplitude.com" in url for url in attempted), csp_messages(page)


def assert_only_other_origins_refused(page: Page, origin: str, start: int = 0) -> set[str]:
    """Since event `start`: every request that went out was to Caddy, and what the policy refused was
    another origin's, never the app's own (its scripts, workers, styles, images, eval); the URLs refused."""
    own = (origin + "/", "data:", "blob:")
    elsewhere = [r for r in requests(page, start).values() if not r["url"].startswith(own)]
    # Any request to another origin was refused: no response.
    assert all(r["status"] is None and r["blocked"] for r in elsewhere), elsewhere
    # The browser sends no request for what the policy refuses: every violation names a URL, none of them
    # on the server's origin (a blob: worker's URL names it too; 'unsafe-eval' names none).
    violations = csp_messages(page, start)
    own_violations = [m for m in violations if not re.search(r"https?://", m) or origin in m]
    assert not own_violations, own_violations
    assert all("blocked" in m or "Refused" in m for m in violations), violations
    return {url for message in violations for url in re.findall(r"https?://[^\s'\"]+", message)}


def test_a_completed_runs_page_draws_its_graph_under_the_policy(site: Site, chromium: Page, completed_run: str):
    """A flow run's page: its state, and its task runs' graph (pixi.js, a canvas and a layout worker)."""
    page, origin = chromium, site.origin
    log_in(page, origin)
    page.pump(1)
    start = len(page.events)
    page.navigate(f"{origin}{UI_BASE}/runs/flow-run/{completed_run}")
    page.wait_until(
        f"document.body.innerText.includes({json.dumps(RUN_NAME)}) && document.body.innerText.includes('Completed')",
        "the flow run's name and state",
    )
    # The graph: pixi.js's canvas (its renderer refuses to start without 'unsafe-eval').
    page.wait_until("[...document.querySelectorAll('canvas')].some(c => c.width && c.height)", "the graph's canvas")
    page.pump(5)
    called = [r for r in requests(page, start).values() if r["url"].startswith(f"{origin}/api/")]
    assert called and all(r["status"] == 200 for r in called), called
    attempted = assert_only_other_origins_refused(page, origin, start)
    assert all("amplitude.com" in url for url in attempted), csp_messages(page, start)
    # No error thrown either (what pixi.js does instead of a violation where eval is refused).
    thrown = [e["params"] for e in page.events[start:] if e.get("method") == "Runtime.exceptionThrown"]
    assert not thrown, thrown
