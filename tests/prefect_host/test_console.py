"""Step lines, progress display and redaction."""

from __future__ import annotations

import io
import re
import time

import pytest

from prefect_host.console import MASK, Console, parse_step_lines


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_secrets_are_masked_whole_and_in_parts():
    out, err = io.StringIO(), io.StringIO()
    console = Console(out, err)
    console.add_secret("admin:c0rrect-h0rse")
    key = (
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAE\n"
        "bm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n-----END OPENSSH PRIVATE KEY-----\n"
    )
    console.add_secret(key)
    console.add_secret("abc")  # too short to mask without masking ordinary words
    console.line("auth admin:c0rrect-h0rse and again c0rrect-h0rse; abc stays")
    console.error(f"key was {key}")
    console.block("journal:", "line with bm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW inside")
    printed = out.getvalue() + err.getvalue()
    assert "c0rrect-h0rse" not in printed and "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAE" not in printed
    assert "bm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW" not in printed
    assert f"auth {MASK} and again {MASK}; abc stays" in printed


def test_step_lines_carry_tag_and_duration():
    out = io.StringIO()
    console = Console(out)
    with console.step("read facts"):
        pass
    with console.step("install uv", changed=True):
        time.sleep(0.1)
    with console.step("work pool") as status:
        status.changed = True
    with pytest.raises(RuntimeError), console.step("start server", changed=True):
        raise RuntimeError("boom")
    lines = out.getvalue().splitlines()
    assert [line.split()[0] for line in lines] == ["[ok]", "[changed]", "[changed]", "[failed]"]
    assert all(re.search(r"\d+\.\d s$", line) for line in lines)
    assert float(lines[1].split()[-2]) >= 0.1


def test_progress_lines_when_not_a_terminal():
    out = io.StringIO()
    console = Console(out, progress_interval=0.05)
    with console.step("install prefect 3.9.1", changed=True):
        time.sleep(0.3)
    lines = out.getvalue().splitlines()
    assert len([line for line in lines if line.startswith("  [...]") and "so far" in line]) >= 2
    assert lines[-1].startswith("  [changed]") and "\r" not in out.getvalue()


def test_spinner_on_a_terminal():
    out = _Tty()
    console = Console(out)
    with console.step("start the Prefect server"):
        time.sleep(0.35)
    text = out.getvalue()
    assert "\r\033[K" in text and any(f"[{c}]" in text for c in "|/-\\")
    assert text.endswith("s\n") and "[ok]" in text.rsplit("\r", 1)[-1]


def test_step_lines_read_back_what_console_step_printed():
    out = io.StringIO()
    console = Console(out, io.StringIO())
    with console.step("write /etc/prefect-host/server.env", changed=True):
        pass
    with console.step("verify the server (health, auth, version, UI)"):
        pass
    with pytest.raises(RuntimeError), console.step("start the Prefect server"):
        raise RuntimeError("boom")
    lines = parse_step_lines(out.getvalue() + "  [...]      start the Prefect server    10 s so far\n")
    assert [(line.tag, line.name) for line in lines] == [
        ("changed", "write /etc/prefect-host/server.env"),
        ("ok", "verify the server (health, auth, version, UI)"),
        ("failed", "start the Prefect server"),
    ]
    assert all(0 <= line.seconds < 5 for line in lines)
