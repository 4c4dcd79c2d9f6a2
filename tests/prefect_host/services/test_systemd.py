"""Text the services' systemd files share: quoted environment values and the sandbox block."""

from __future__ import annotations

import pytest

from prefect_host.services.systemd import HEADER, env_file_text, env_value, sandbox_block
from tests.prefect_host.services.service_samples import unit_directives


@pytest.mark.parametrize(
    "value, quoted",
    [
        ("plain", "'plain'"),
        ('a$b"c\\d`e #f', "'a$b\"c\\d`e #f'"),  # literal inside single quotes
        ("it's", '"it\'s"'),  # a single quote: double quotes instead
        ('it\'s $5 "x" \\ `y`', '"it\'s \\$5 \\"x\\" \\\\ \\`y\\`"'),
    ],
)
def test_env_values_are_quoted_for_systemd(value, quoted):
    assert env_value(value) == quoted


def test_env_values_reject_line_breaks():
    for bad in ("a\nb", "a\rb", "a\0b"):
        with pytest.raises(ValueError):
            env_value(bad)


def test_env_file_is_the_header_then_one_quoted_setting_a_line():
    assert env_file_text({"A": "1", "B": "it's"}) == f"{HEADER}\nA='1'\nB=\"it's\"\n"


def test_sandbox_knobs_loosen_only_what_they_name():
    strict = unit_directives(sandbox_block())
    assert strict["ProcSubset"] == ["pid"] and strict["RemoveIPC"] == ["yes"] and "InaccessiblePaths" not in strict
    assert strict["SystemCallFilter"] == ["@system-service", "~@privileged @resources"]
    loose = unit_directives(
        sandbox_block(
            inaccessible=("/var/lib/prefect", "/etc/prefect-host"),
            proc_subset=False,
            remove_ipc=False,
            address_families="AF_INET AF_NETLINK",
            denied_calls="@privileged",
        )
    )
    assert loose["InaccessiblePaths"] == ["-/var/lib/prefect -/etc/prefect-host"]
    assert "ProcSubset" not in loose and "RemoveIPC" not in loose
    assert loose["RestrictAddressFamilies"] == ["AF_INET AF_NETLINK"]
    assert loose["SystemCallFilter"] == ["@system-service", "~@privileged"]
    knobs = {"InaccessiblePaths", "ProcSubset", "RemoveIPC", "RestrictAddressFamilies", "SystemCallFilter"}
    assert {key: value for key, value in loose.items() if key not in knobs} == {
        key: value for key, value in strict.items() if key not in knobs
    }
