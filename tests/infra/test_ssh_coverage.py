"""sshAllowedCidrs is judged by what it covers: ranges summing to more than a /8 of IPv4 or a /32 of IPv6
(overlaps merged) open SSH as surely as 0.0.0.0/0, and need allowPublicSsh like it."""

import json

import pytest

import mockstack
from infra_test_configs import AWS, GCP
from stack_config import StackConfigError, address_counts, parse_stack_config

KEY = "prefect-host:sshAllowedCidrs"
BASE = {"aws:region": "eu-west-1"}

TOO_WIDE = [
    (["0.0.0.0/1", "128.0.0.0/1"], "4294967296 IPv4 addresses"),
    (["128.0.0.0/1"], "2147483648 IPv4 addresses"),
    (["10.0.0.0/9", "10.128.0.0/9", "11.0.0.0/9"], "25165824 IPv4 addresses"),
    (["10.0.0.0/7"], "33554432 IPv4 addresses"),
    (["203.0.113.0/24", "::/1", "8000::/1"], "IPv6 addresses"),
    (["2001:db8::/31"], "IPv6 addresses"),
]


@pytest.mark.parametrize("base", [AWS, GCP], ids=["aws", "gcp"])
@pytest.mark.parametrize("cidrs, covered", TOO_WIDE, ids=[" ".join(c) for c, _ in TOO_WIDE])
def test_ranges_covering_more_than_a_slash_8_stop_the_program_before_any_resource(base, cidrs, covered):
    run = mockstack.record_program({**base, KEY: cidrs})
    assert isinstance(run.error, StackConfigError), run.error
    message = str(run.error)
    assert message.startswith(f"Config {KEY} = {json.dumps(cidrs)} opens SSH to ") and covered in message
    assert "at most a /8 of IPv4" in message and "a /32 of IPv6" in message and "allowPublicSsh true" in message
    assert run.resources == [] and run.outputs == {}


@pytest.mark.parametrize(
    "cidrs",
    [
        ["10.0.0.0/8"],  # exactly a /8
        ["10.0.0.0/9", "10.128.0.0/9"],  # two halves of one
        ["10.0.0.0/8", "10.1.0.0/16", "10.0.0.0/9"],  # overlaps count once
        ["203.0.113.7/32", "2001:db8::/32"],
        ["2001:db8::/33", "2001:db8:8000::/33"],
    ],
)
def test_ranges_covering_at_most_a_slash_8_and_a_slash_32_are_accepted(cidrs):
    config = parse_stack_config({**BASE, KEY: json.dumps(cidrs)}, project="prefect-host", stack="dev")
    assert list(config.ssh_allowed_cidrs) == cidrs


def test_allow_public_ssh_accepts_any_coverage():
    values = {**BASE, KEY: '["0.0.0.0/1", "128.0.0.0/1"]', "prefect-host:allowPublicSsh": "true"}
    config = parse_stack_config(values, project="prefect-host", stack="dev")
    assert config.ssh_allowed_cidrs == ("0.0.0.0/1", "128.0.0.0/1") and config.allow_public_ssh


def test_a_long_list_is_cut_in_the_message():
    cidrs = [f"{a}.0.0.0/8" for a in range(1, 120)]
    with pytest.raises(StackConfigError) as raised:
        parse_stack_config({**BASE, KEY: json.dumps(cidrs)}, project="prefect-host", stack="dev")
    assert "1996488704 IPv4 addresses" in str(raised.value) and json.dumps(cidrs) not in str(raised.value)
    assert len(str(raised.value)) < 600


def test_address_counts_merge_overlaps():
    assert address_counts(("10.0.0.0/8", "10.0.0.0/9", "2001:db8::/127")) == {4: 2**24, 6: 2}
