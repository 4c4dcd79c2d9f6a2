"""The security review's cases (issue 10, "validation that never lets a bad value through or crashes"), one
test each: whole-string matches, no traceback, no overlong or secret value in a message, private keys in
PKCS#8, finite timeouts, an index URL's credentials off every command line and message."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from bad_input_support import ENTRYPOINT, assert_one_clear_refusal, run_cli, sandbox, valid_outputs
from prefect_host.bootstrap import resolve_inputs
from prefect_host.cli.deploy import parse_request
from prefect_host.console import MASK, Console, clip_values, redact_url, shown, url_password
from prefect_host.deploy import DeployError
from prefect_host.errors import OutputsError, PrefectHostError, ProfileError, UsageError
from prefect_host.host.facts import HostFacts
from prefect_host.host.model import PackageSource
from prefect_host.host.packages import venv_install_steps
from prefect_host.outputs import StackOutputs
from prefect_host.profile import store_ca, write_and_check
from prefect_host.services.python_env import prefect_venv
from prefect_host.ssh_keys import load_private_key, load_private_key_file

REPO = Path(__file__).resolve().parents[2]
TOKEN = "Index-T0ken-9b8c7d6e"


@pytest.fixture
def box(tmp_path):
    with sandbox(tmp_path) as box:
        yield box


def _resolve(box, **flags):
    return resolve_inputs(outputs_file=str(box.work / "outputs.json"), stack=None, **flags)


# --- 1. whole-string matches: a trailing newline is a bad value ----------------------------------------------
def test_a_profile_name_with_a_trailing_newline_is_refused_and_nothing_is_written(box):
    ran = run_cli(["bootstrap", "--outputs", "outputs.json", "--profile", "dev\n"], box)
    assert "--profile 'dev\\n': use 1-128 letters" in assert_one_clear_refusal(ran)
    assert not box.home.exists()


def test_a_prefect_version_with_a_newline_is_refused_before_any_shell_line(box):
    box.write_outputs(valid_outputs(prefectVersion="3.9.1\n"))
    with pytest.raises(OutputsError, match=r"output prefectVersion \('3.9.1\\n'\) contains a line break"):
        _resolve(box)


def test_every_pin_reaching_the_install_shell_line_is_quoted():
    """Even a version no check refused could not run a command: each requirement is one quoted word."""
    venv = prefect_venv("3.9.1; reboot", PackageSource(index_url="https://mirror.example/simple"))
    steps, _ = venv_install_steps(HostFacts(login_user="admin", sudo_ok=True), venv)
    install = steps[-1].commands[0].script
    assert "'prefect==3.9.1; reboot' prefect-aws==" in install and " reboot " not in install


def test_a_deployment_name_with_a_trailing_newline_is_refused(tmp_path):
    (tmp_path / "flows.py").write_text("")
    with pytest.raises(DeployError, match=r"--name 'flows\\n'"):
        parse_request([ENTRYPOINT, "--name", "flows\n"], cwd=tmp_path)


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"domain": "prefect.example.com\n"}, "output domain ('prefect.example.com\\n') contains a line break"),
        ({"acmeCa": "https://acme.example/dir\n"}, "output acmeCa ('https://acme.example/dir\\n') contains"),
        ({"hostPublicKey": "ssh-ed25519 AAAA\x00"}, "output hostPublicKey"),
        ({"cloud": "\ud800"}, "output cloud ('\\ud800') contains"),
    ],
)
def test_outputs_are_one_line_of_text(changes, words):
    with pytest.raises(OutputsError) as raised:
        StackOutputs.from_mapping(valid_outputs(**changes))
    assert words in str(raised.value)


def test_apt_source_with_a_trailing_newline_is_refused(box):
    with pytest.raises(UsageError) as raised:
        _resolve(box, apt_source="deb http://10.77.0.1:8000/ ./\n")
    assert str(raised.value).startswith("--apt-source 'deb http://10.77.0.1:8000/ ./\\n': one apt source line")


# --- 2. no traceback, no overlong value --------------------------------------------------------------------
def test_a_non_utf8_outputs_file_is_one_clear_error(box):
    box.write_outputs(b'{"cloud": "aws\xff"}')
    message = assert_one_clear_refusal(run_cli(["bootstrap", "--outputs", "outputs.json"], box))
    assert message.endswith(
        "outputs.json: not UTF-8 text (byte 14); expected the JSON of `pulumi stack output --json --show-secrets`."
    )


def test_a_ui_url_with_a_newline_is_one_clear_error(box):
    box.write_outputs(valid_outputs(uiUrl="http://127.0.0.1:4200\nX-Injected: 1"))
    message = assert_one_clear_refusal(run_cli(["bootstrap", "--outputs", "outputs.json"], box))
    assert "output uiUrl ('http://127.0.0.1:4200\\nX-Injected: 1') contains a line break" in message


@pytest.mark.parametrize("url", ["http://[::1/", "http://127.0.0.1:99999/", "http://host name/", "javascript:x"])
def test_a_ui_url_that_is_no_url_is_refused(box, url):
    box.write_outputs(valid_outputs(uiUrl=url))
    message = assert_one_clear_refusal(run_cli(["bootstrap", "--outputs", "outputs.json"], box))
    assert "uiUrl" in message


def test_long_values_are_shown_cut_with_an_ellipsis():
    assert shown("x" * 10) == "'xxxxxxxxxx'"
    cut = shown("y" * 5_000_000)
    assert len(cut) == 200 and cut.startswith("'yyy") and cut.endswith("...")
    assert shown("a\nb") == "'a\\nb'"
    assert clip_values(f"got {'z' * 300!r} and {'z' * 300}", ["z" * 300]).count("...") == 2


@pytest.mark.parametrize(
    "flag, value, words",
    [
        ("--workers", "9" * 5000, "argument --workers: invalid int value: '999"),
        ("--connect-timeout", "x" * 5000, "argument --connect-timeout: invalid float value: 'xxx"),
        ("--host", "h" * 5000, "--host 'hhh"),
        ("--index-url", "http://" + "a" * 5000, "--index-url 'http://aaa"),
    ],
)
def test_flag_values_are_never_echoed_whole(box, flag, value, words):
    message = assert_one_clear_refusal(run_cli(["bootstrap", "--outputs", "outputs.json", f"{flag}={value}"], box))
    assert words in message and "..." in message


def test_an_unknown_command_of_5_mb_is_shown_cut(box):
    message = assert_one_clear_refusal(run_cli(["c" * 5_000_000], box))
    assert "invalid choice: 'ccc" in message and "(choose from 'bootstrap'" in message


def test_a_param_is_named_by_its_key_never_its_value(box):
    ran = run_cli(["deploy", ENTRYPOINT, "--param", "api-token=sk-live-0123456789abcdef"], box)
    message = assert_one_clear_refusal(ran, secrets=("sk-live-0123456789abcdef",))
    assert message == "deploy failed: --param 'api-token'=...: KEY must be a parameter name (a Python identifier)."


# --- 2. PKCS#8 identity keys ------------------------------------------------------------------------------
def _pem(key, fmt) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())


@pytest.mark.parametrize(
    "key, key_class",
    [
        (ed25519.Ed25519PrivateKey.generate(), paramiko.Ed25519Key),
        (ec.generate_private_key(ec.SECP256R1()), paramiko.ECDSAKey),
        (ec.generate_private_key(ec.SECP384R1()), paramiko.ECDSAKey),
        (rsa.generate_private_key(public_exponent=65537, key_size=2048), paramiko.RSAKey),
    ],
    ids=["ed25519", "ecdsa-p256", "ecdsa-p384", "rsa"],
)
def test_pkcs8_identity_keys_load_as_the_same_key(tmp_path, key, key_class):
    """A PKCS#8 key (-----BEGIN PRIVATE KEY-----) was reported as "SSH session broke"."""
    path = tmp_path / "id"
    path.write_bytes(_pem(key, serialization.PrivateFormat.PKCS8))
    loaded = load_private_key_file(path)
    reference = load_private_key(_pem(key, serialization.PrivateFormat.OpenSSH), source="--identity ref")
    assert isinstance(loaded, key_class) and loaded.asbytes() == reference.asbytes()


@pytest.mark.parametrize(
    "data, words",
    [
        (b"-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n", "not a private key"),
        (_pem(ec.generate_private_key(ec.SECP256K1()), serialization.PrivateFormat.PKCS8), "a key SSH cannot use"),
    ],
)
def test_unusable_identity_keys_name_the_flag_and_the_formats(tmp_path, data, words):
    path = tmp_path / "id"
    path.write_bytes(data)
    with pytest.raises(UsageError) as raised:
        load_private_key_file(path)
    message = str(raised.value)
    assert message.startswith(f"--identity {path}: {words}") and "OpenSSH format" in message and "PKCS#8" in message


# --- 2. finite timeouts ------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e999"])
def test_connect_timeout_must_be_finite(box, value):
    message = assert_one_clear_refusal(
        run_cli(["bootstrap", "--outputs", "outputs.json", f"--connect-timeout={value}"], box)
    )
    assert message.startswith("error: --connect-timeout ") and "must be a number of seconds > 0, and finite" in message


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e999"])
def test_deploy_timeout_must_be_finite(box, value):
    message = assert_one_clear_refusal(run_cli(["deploy", ENTRYPOINT, f"--timeout={value}"], box))
    assert message.startswith("deploy failed: --timeout ") and "must be > 0 seconds, and finite" in message


# --- 2. an unreadable or invalid profiles.toml ---------------------------------------------------------------
PROFILE_FILES = {
    "invalid-toml": (b'active = "x"\n[profiles.x\n', "invalid TOML: Expected ']'"),
    "not-utf8": (b'active = "\xff"\n', "not UTF-8 text, byte 10"),
    "a-directory": (None, "Is a directory"),
    "not-tables": (b"profiles = 3\n", "each profile must be a table of settings"),
}


def _profiles_home(tmp_path: Path, case: str) -> tuple[Path, Path]:
    home = tmp_path / "prefect-home"
    home.mkdir()
    content, _ = PROFILE_FILES[case]
    path = home / "profiles.toml"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    return home, path


def _tree(home: Path) -> dict[str, bytes | None]:
    return {str(p): (p.read_bytes() if p.is_file() else None) for p in sorted(home.rglob("*"))}


@pytest.mark.parametrize("case", list(PROFILE_FILES))
@pytest.mark.parametrize("client_only", [True, False], ids=["client-only", "full"])
def test_an_unusable_profiles_file_is_one_error_before_anything_runs(tmp_path, case, client_only):
    """scripts/bootstrap.py as users run it: a traceback from Prefect's import before; now one message,
    before the host or the profiles file is touched (127.0.0.1 has no sshd: the full bootstrap would
    fail to connect instead, after --connect-timeout)."""
    home, path = _profiles_home(tmp_path, case)
    before = _tree(home)
    outputs = tmp_path / "outputs.json"
    outputs.write_text(json.dumps(valid_outputs()))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")} | {"PREFECT_HOME": str(home)}
    flags = ["--client-only"] if client_only else ["--connect-timeout", "1"]
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bootstrap.py"), "--outputs", str(outputs), *flags],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode == 1 and "Traceback" not in result.stderr and len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: The Prefect profiles file {path} cannot be read ({PROFILE_FILES[case][1]}")
    assert lines[0].endswith("fix or move it, then run the bootstrap again.")
    assert result.stdout == "" and _tree(home) == before


def test_the_profile_child_answers_every_request_with_the_profiles_file_error(tmp_path):
    """The full bootstrap's child process (prefect_host.profile.serve), whose Prefect import would fail."""
    home, path = _profiles_home(tmp_path, "invalid-toml")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")} | {"PREFECT_HOME": str(home)}
    request = json.dumps({"op": "store_ca", "name": "p", "pem": "x"}) + "\n"
    done = subprocess.run(
        [sys.executable, "-m", "prefect_host.profile"],
        input=request * 2,
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=60,
    )
    answers = [json.loads(line.split(" ", 1)[1]) for line in done.stdout.splitlines()]
    assert done.returncode == 0 and len(answers) == 2 and "Traceback" not in done.stderr
    assert all(answer["error"].startswith(f"The Prefect profiles file {path} cannot be read") for answer in answers)


@pytest.mark.parametrize("case", ["invalid-toml", "a-directory"])
def test_the_profile_functions_refuse_an_unusable_profiles_file_before_importing_prefect(tmp_path, monkeypatch, case):
    home, path = _profiles_home(tmp_path, case)
    monkeypatch.setenv("PREFECT_HOME", str(home))
    monkeypatch.delenv("PREFECT_PROFILES_PATH", raising=False)
    monkeypatch.chdir(tmp_path)
    before = _tree(home)
    for call in (
        lambda: write_and_check("p", api_url="http://127.0.0.1:9/api", auth_string="a:b", activate=False),
        lambda: store_ca("p", "-----BEGIN CERTIFICATE-----"),
    ):
        with pytest.raises(ProfileError, match=f"^The Prefect profiles file {re.escape(str(path))} cannot be read"):
            call()
    assert _tree(home) == before


# --- 5. an index URL's credentials -------------------------------------------------------------------------
def test_url_credentials_are_found_and_redacted():
    assert url_password(f"https://ci:{TOKEN}@mirror.example/simple") == TOKEN
    assert url_password(f"https://{TOKEN}@mirror.example/simple") == TOKEN
    assert url_password("https://mirror.example/simple") is None and url_password("http://[::1/") is None
    assert redact_url(f"https://ci:{TOKEN}@mirror.example:8443/simple") == f"https://{MASK}@mirror.example:8443/simple"


def test_a_bad_index_url_with_credentials_is_refused_without_them(box):
    ran = run_cli(["bootstrap", "--outputs", "outputs.json", f"--index-url=https://ci:{TOKEN}@mirror example/"], box)
    message = assert_one_clear_refusal(ran, secrets=(TOKEN,))
    assert message.startswith(f"error: --index-url 'https://{MASK}@mirror example/': must be an http://")


def test_a_plain_http_index_is_a_warning_and_its_token_is_masked(box):
    """The bootstrap goes on to `run` (stopped there): http:// is a warning, not an error."""
    url = f"http://ci:{TOKEN}@10.77.0.1:8000/simple"
    stop = PrefectHostError("stopped after validation")
    ran = run_cli(["bootstrap", "--outputs", "outputs.json", f"--index-url={url}"], box, past_validation=stop)
    assert ran.status == 1 and ran.err.endswith("error: stopped after validation\n")
    warnings = [line for line in ran.err.splitlines() if line.startswith("warning: --index-url")]
    assert warnings == [
        f"warning: --index-url 'http://{MASK}@10.77.0.1:8000/simple' is plain http://: the host installs uv and "
        "Prefect from it unencrypted, and its credentials cross the network in clear text."
    ]
    assert TOKEN not in ran.out + ran.err


def test_the_console_masks_the_index_token_once_registered():
    err = io.StringIO()
    console = Console(io.StringIO(), err)
    console.add_secret(url_password(f"https://ci:{TOKEN}@mirror.example/simple"))
    console.error(f"uv: failed to fetch https://ci:{TOKEN}@mirror.example/simple/prefect/")
    assert TOKEN not in err.getvalue() and MASK in err.getvalue()
