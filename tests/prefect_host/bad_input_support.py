"""Bad input through the real entry points, in this process: `prefect_host.cli.main([...])` with a Prefect
home and a working directory of the call's own, stdout and stderr captured, and the step after validation
(the bootstrap's `run`, deploy's `deploy`; demo's and bench's, which would boot guests) replaced by a
failure: bad input must be refused before it."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from prefect_host import cli
from prefect_host.console import SHOWN_LIMIT

AUTH = "admin:Hyp0thesis-Auth-Secret-7f3a9c"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYPROPERTYKEY"
PRIVATE_KEY = (
    ed25519.Ed25519PrivateKey.generate()
    .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
    .decode()
)
# What no message may show: the outputs' secrets, and each line of the private key's body.
SECRETS = (AUTH, AUTH.split(":", 1)[1], AWS_SECRET, *PRIVATE_KEY.splitlines()[1:-1])
FLOW = "from prefect import flow\n\n\n@flow\ndef train(n: int = 1) -> int:\n    return n\n"
ENTRYPOINT = "flows.py:train"
# A message line: the bootstrap's "error: ...", argparse's "prog: error: ...", deploy's "deploy failed: ...".
_MESSAGE = re.compile(r"^(error: |\S.*?: error: |deploy failed: )")
# deploy prints any exception it did not expect as "<type>: <text>": bad input must be our own error.
_FOREIGN = re.compile(r"^deploy failed: [A-Za-z_][\w.]*(Error|Exception|Warning|Interrupt): ")


def valid_outputs(**changes) -> dict:
    """Outputs resolve_inputs accepts (plain HTTP on 127.0.0.1), with the secrets above."""
    data = {
        "cloud": "aws",
        "publicIp": "127.0.0.1",
        "sshUser": "admin",
        "hostPublicKey": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKeyHostKeyHostKeyHostKeyHostKey",
        "apiUrl": "http://127.0.0.1:4200/api",
        "uiUrl": "http://127.0.0.1:4200",
        "prefectVersion": "3.9.1",
        "prefectAuthString": AUTH,
        "bucketName": "prefect-host-dev-1a2b3c4d",
        "bucketRegion": "eu-west-1",
        "iamGroupName": "S3-FullAccess",
        "iamUserName": "prefect-host-dev",
        "awsAccessKeyId": "AKIAEXAMPLEPROPERTY",
        "awsSecretAccessKey": AWS_SECRET,
        "sshPrivateKey": PRIVATE_KEY,
        "tlsMode": "off",
    }
    data.update(changes)
    return {k: v for k, v in data.items() if v is not None}


@dataclass(frozen=True)
class Ran:
    status: int
    out: str
    err: str


@dataclass(frozen=True)
class Sandbox:
    """A working directory (holding outputs.json and a flow project) and a Prefect home that does not
    exist: nothing may create it."""

    root: Path

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def home(self) -> Path:
        return self.root / "prefect-home"

    def write_outputs(self, content: dict | list | str | bytes | int | None) -> str:
        path = self.work / "outputs.json"
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content if isinstance(content, str) else json.dumps(content))
        return str(path)

    def files(self) -> dict[str, bytes]:
        return {str(p.relative_to(self.root)): p.read_bytes() for p in sorted(self.root.rglob("*")) if p.is_file()}


@contextlib.contextmanager
def sandbox(root: Path) -> Iterator[Sandbox]:
    box = Sandbox(root)
    box.work.mkdir(parents=True)
    (box.work / "flows.py").write_text(FLOW)
    box.write_outputs(valid_outputs())
    yield box


def run_cli(argv: list[str], box: Sandbox, *, past_validation: BaseException | None = None) -> Ran:
    """`prefect-host ARGV` in this process, in the sandbox; its exit status, stdout and stderr. What gets
    past validation raises `past_validation` (default: an AssertionError, failing the test)."""
    stop = past_validation or AssertionError("bad input reached run")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "AWS_", "UV_"))}
    env["PREFECT_HOME"] = str(box.home)
    out, err = io.StringIO(), io.StringIO()
    cwd = Path.cwd()
    with (
        mock.patch.dict(os.environ, env, clear=True),
        mock.patch("prefect_host.cli.bootstrap.run", side_effect=stop),
        mock.patch("prefect_host.cli.deploy.deploy", side_effect=AssertionError("bad input reached deploy")),
        mock.patch("prefect_host.local.demo.up", side_effect=AssertionError("bad input reached demo up")),
        mock.patch("prefect_host.local.demo.down", side_effect=AssertionError("bad input reached demo down")),
        mock.patch("prefect_host.local.bench.run_bench", side_effect=AssertionError("bad input reached the bench")),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        os.chdir(box.work)
        try:
            status = cli.main(argv)
        except SystemExit as exit_:  # argparse's refusal
            status = exit_.code
        finally:
            os.chdir(cwd)
    return Ran(status, out.getvalue(), err.getvalue())


def assert_one_clear_refusal(ran: Ran, *, values: Iterable[object] = (), secrets: Iterable[str] = SECRETS) -> str:
    """Exit status 1 or 2, nothing on stdout, one message line on stderr (no traceback, no exception of
    someone else's), no value of the input longer than SHOWN_LIMIT shown whole, no secret. Returns the
    message line."""
    assert ran.status in (1, 2), ran
    assert ran.out == "", ran
    printed = ran.out + ran.err
    assert "Traceback" not in printed, printed
    messages = [line for line in ran.err.splitlines() if _MESSAGE.match(line)]
    assert len(messages) == 1, ran.err
    assert not _FOREIGN.match(messages[0]), messages[0]
    assert len(ran.err) < 2500, ran.err[:3000]
    for value in values:
        if isinstance(value, str) and len(value) > SHOWN_LIMIT:
            assert value[: SHOWN_LIMIT + 1] not in printed, printed[:3000]
    for secret in secrets:
        assert secret not in printed, printed
    return messages[0]
