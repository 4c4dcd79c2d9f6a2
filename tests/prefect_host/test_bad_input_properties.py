"""Property: every bad input ends in one clear refusal, through the real entry points.

Generated bad stack outputs (StackOutputs.from_mapping / from_file, and `prefect-host bootstrap --outputs`),
bad command-line flags (`prefect-host bootstrap|deploy|demo|bench ...`) and bad deploy parameters
(`--param`) each end with exit status 1 or 2 and one message line: no traceback, no input value longer than
SHOWN_LIMIT shown whole, no secret of the outputs, and no file written (the Prefect home and the working
directory are as before). The step after validation fails the test if bad input reaches it
(bad_input_support.run_cli). Deterministic (derandomize) and bounded, for CI.
"""

from __future__ import annotations

import json
import math
import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bad_input_support import (
    ENTRYPOINT,
    SECRETS,
    assert_one_clear_refusal,
    run_cli,
    sandbox,
    valid_outputs,
)
from prefect_host.console import SHOWN_LIMIT
from prefect_host.errors import OutputsError
from prefect_host.outputs import OUTPUT_FIELDS, SECRET_OUTPUTS, StackOutputs

PROPERTY = settings(
    max_examples=80, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow], database=None
)
REQUIRED = sorted(name for name, meta in OUTPUT_FIELDS.items() if meta["required"])
INDEX_TOKEN = "Idx-T0ken-Never-Shown-42"

# --- strings -----------------------------------------------------------------------------------------------
CONTROL = st.sampled_from(["\n", "\r", "\t", "\x00", "\x1b", "\x7f", "\x85", "\x0b", "\ud800"])
# What even sshPrivateKey (a multi-line key) may not hold.
NOT_IN_A_KEY = st.sampled_from(["\x00", "\x1b", "\x7f", "\x85", "\x0b", "\ud800"])
words = st.text(st.characters(codec="utf-8", exclude_categories=("Cc", "Cs")), max_size=12)
long_words = st.integers(SHOWN_LIMIT + 1, 6000).flatmap(lambda n: st.sampled_from("ax9é-").map(lambda c: c * n))


@st.composite
def with_control(draw, base=words, controls=CONTROL) -> str:
    """Text with a line break or another control character somewhere in it."""
    text = draw(base)
    at = draw(st.integers(0, len(text)))
    return text[:at] + draw(controls) + text[at:]


def _an_int(text: str, low: int | None = None, high: int | None = None) -> bool:
    """Whether int() takes `text` (as argparse's type=int does) and the number is in [low, high]."""
    try:
        value = int(text)
    except ValueError:
        return False
    return (low is None or value >= low) and (high is None or value <= high)


@st.composite
def bad_urls(draw) -> str:
    host = draw(st.sampled_from(["127.0.0.1", "10.77.0.1", "[::1]", "mirror.example"]))
    return draw(
        st.one_of(
            words.filter(lambda w: "://" not in w),
            st.sampled_from(["ftp", "file", "s3", "HTTP+x"]).map(lambda s: f"{s}://{host}/simple"),
            with_control(st.just(f"http://{host}/simple")),
            st.just(f"http://{host}:99999/x"),
            st.just("http://[::1/x"),
            st.just(f"https://ci:{INDEX_TOKEN}@{host}/ simple"),
            st.just(f"https://ci:{INDEX_TOKEN}@/simple"),
            long_words.map(lambda w: f"http://{w}/simple"),
            long_words.map(lambda w: f"http://{host}/{w * 11}"),  # longer than 2048 characters
        )
    )


def bad_versions() -> st.SearchStrategy[str]:
    return st.one_of(
        st.just("3.9.1\n"),
        st.just("3.9.1; reboot"),
        words.filter(lambda w: not re.fullmatch(r"\d+(\.\d+){1,3}((a|b|rc)\d+)?(\.post\d+)?", w) and w.strip()),
        long_words,
    )


def bad_hosts() -> st.SearchStrategy[str]:
    return st.one_of(
        words.map(lambda w: f"{w} host"),
        words.map(lambda w: f"h{w}/x!"),
        long_words,
        with_control(st.just("127.0.0.1")),
    )


def bad_users() -> st.SearchStrategy[str]:
    return st.one_of(st.just("Admin"), st.just("9admin"), st.just("root;rm"), st.just("a" * 33), long_words)


# --- outputs -----------------------------------------------------------------------------------------------
NOT_STRINGS = st.one_of(st.integers(), st.floats(allow_nan=False), st.booleans(), st.lists(st.integers(), max_size=3))
FIELD_VALUES = {
    "cloud": words.filter(lambda w: w not in ("aws", "gcp", "local") and w.strip()),
    "tlsMode": words.filter(lambda w: w not in ("acme", "internal", "off") and w.strip()),
    "apiUrl": st.one_of(bad_urls(), st.just("http://127.0.0.1:4200/"), long_words.map(lambda w: f"http://{w}/api")),
    "uiUrl": bad_urls(),
    "s3EndpointUrl": bad_urls(),
    "prefectVersion": bad_versions(),
    "prefectAuthString": words.filter(lambda w: ":" not in w and w.strip()),
    "publicIp": bad_hosts(),
    "sshUser": bad_users(),
    "acmeCa": st.just("https://acme.example/directory"),  # only for tlsMode acme, which these outputs are not
}


@st.composite
def bad_outputs(draw) -> tuple[object, list[object]]:
    """Outputs the bootstrap must refuse, and the values put in them."""
    data = valid_outputs()
    kind = draw(st.sampled_from(["drop", "type", "blank", "control", "masked", "field", "document"]))
    name = draw(st.sampled_from(sorted(OUTPUT_FIELDS)))
    if kind == "drop":
        name = draw(st.sampled_from(REQUIRED))
        del data[name]
        return data, []
    if kind == "type":
        data[name] = value = draw(NOT_STRINGS)
    elif kind == "blank":
        data[name] = value = draw(st.sampled_from(["", " ", "\t\n"]))
    elif kind == "control":
        controls = NOT_IN_A_KEY if name == "sshPrivateKey" else CONTROL
        data[name] = value = draw(with_control(st.one_of(words, long_words), controls))
    elif kind == "masked":
        data[draw(st.sampled_from(sorted(SECRET_OUTPUTS)))] = value = "[secret]"
    elif kind == "field":
        name = draw(st.sampled_from(sorted(FIELD_VALUES)))
        data[name] = value = draw(FIELD_VALUES[name])
    else:
        return draw(
            st.one_of(
                st.lists(st.integers(), max_size=3),
                st.integers(),
                st.just("[" * 100_000),
                st.just('{"apiUrl": ' + "9" * 5000 + "}"),
                st.just("{not json"),
                st.just(b'{"cloud": "\xff"}'),
                st.just(json.dumps(data).encode("utf-16")),
            )
        ), []
    return data, [value]


@PROPERTY
@given(case=bad_outputs())
def test_bad_outputs_are_refused_by_the_bootstrap_in_one_clear_message(case):
    data, values = case
    with tempfile.TemporaryDirectory() as root, sandbox(Path(root)) as box:
        path = box.write_outputs(data)
        before = box.files()
        ran = run_cli(["bootstrap", "--outputs", path], box)
        assert_one_clear_refusal(ran, values=values)
        assert ran.status == 1 and box.files() == before and not box.home.exists()


@PROPERTY
@given(case=bad_outputs().filter(lambda case: isinstance(case[0], dict)))
def test_stack_outputs_refuse_or_accept_without_crashing_or_echoing(case):
    """from_mapping raises only OutputsError; what it accepts, resolve_inputs refuses (the test above)."""
    data, values = case
    try:
        StackOutputs.from_mapping(data, source="--outputs o.json")
    except OutputsError as exc:
        message = str(exc)
        assert message.startswith("--outputs o.json: ") and "\n" not in message
        assert not any(secret in message for secret in SECRETS)
        for value in values:
            assert not (isinstance(value, str) and len(value) > SHOWN_LIMIT and value[: SHOWN_LIMIT + 1] in message)


# --- command-line flags ------------------------------------------------------------------------------------
def _not_a_timeout(text: str) -> bool:
    try:
        value = float(text)
    except ValueError:
        return True
    return not (math.isfinite(value) and value > 0)


TIMEOUTS = st.one_of(
    st.sampled_from(["nan", "NaN", "inf", "-inf", "1e400", "0", "-0", "-1", "", "abc", "9" * 5000]),
    st.floats().map(repr).filter(_not_a_timeout),
    words.filter(_not_a_timeout),
)
BOOTSTRAP_FLAGS = st.one_of(
    TIMEOUTS.map(lambda v: [f"--connect-timeout={v}"]),
    st.one_of(st.integers().filter(lambda n: not 0 <= n <= 16).map(str), words, long_words)
    .filter(lambda v: not _an_int(v, 0, 16))
    .map(lambda v: [f"--workers={v}"]),
    st.one_of(
        st.just("dev\n"),
        st.just(".hidden"),
        st.just("my profile"),
        st.just("p" * 129),
        long_words.map(lambda w: "-" + w),
        with_control(st.just("dev")),
    ).map(lambda v: [f"--profile={v}"]),
    bad_users().map(lambda v: [f"--user={v}"]),
    bad_hosts().map(lambda v: [f"--host={v}"]),
    st.tuples(st.sampled_from(["--index-url", "--find-links", "--s3-endpoint-url"]), bad_urls()).map(
        lambda p: [f"{p[0]}={p[1]}"]
    ),
    st.one_of(with_control(st.just("deb http://10.77.0.1:8000/ ./")), words, long_words).map(
        lambda v: [f"--apt-source={v}"]
    ),
    st.sampled_from(["--ca-file", "--acme-ca-root"]).map(lambda f: [f"{f}=flows.py"]),
    st.sampled_from(["--ca-file", "--acme-ca-root"]).map(lambda f: [f"{f}=no-such-file.pem"]),
    st.one_of(words, long_words).map(lambda w: [f"--zz{w}"]),
    st.just(["--index-url", "https://a.example/simple", "--find-links", "https://b.example/"]),
    st.just(["--no-storage", "--s3-endpoint-url", "http://127.0.0.1:9000"]),
)
COMMANDS = st.one_of(
    st.one_of(words, long_words, with_control(st.just("bootstrap")))
    .filter(lambda w: w not in ("bootstrap", "deploy", "plan", "demo", "bench", "-h", "--help") and w[:1] != "-")
    .map(lambda w: [w]),
    st.one_of(words, long_words).filter(lambda w: w not in ("up", "down") and w[:1] != "-").map(lambda w: ["demo", w]),
    st.one_of(words, long_words).filter(lambda w: not _an_int(w)).map(lambda w: ["bench", f"--repeat={w}"]),
)


@PROPERTY
@given(flags=BOOTSTRAP_FLAGS)
def test_bad_bootstrap_flags_are_refused_in_one_clear_message(flags):
    with tempfile.TemporaryDirectory() as root, sandbox(Path(root)) as box:
        before = box.files()
        ran = run_cli(["bootstrap", "--outputs", "outputs.json", *flags], box)
        message = assert_one_clear_refusal(ran, values=flags, secrets=(*SECRETS, INDEX_TOKEN))
        assert box.files() == before and not box.home.exists()
        if ran.status == 1:  # ours, not argparse's: it names the flag
            named = flags[0].split("=", 1)[0].replace("--", "", 1)
            assert named in message or "tlsMode" in message, message


@PROPERTY
@given(argv=COMMANDS)
def test_bad_commands_are_refused_in_one_clear_message(argv):
    with tempfile.TemporaryDirectory() as root, sandbox(Path(root)) as box:
        before = box.files()
        ran = run_cli(argv, box)
        assert_one_clear_refusal(ran, values=argv)
        assert ran.status == 2 and box.files() == before and not box.home.exists()


# --- deploy flags and parameters ---------------------------------------------------------------------------
SECRET_VALUE = "sk-live-Param-Secret-0123456789"
PARAMS = st.one_of(
    st.one_of(words, long_words).filter(lambda w: "=" not in w).map(lambda w: [w]),
    st.tuples(
        st.one_of(words, long_words).filter(lambda k: not k.isidentifier() and "=" not in k),
        st.one_of(words, long_words, st.just(SECRET_VALUE)),
    ).map(lambda p: [f"{p[0]}={p[1]}"]),
    st.tuples(st.sampled_from(["n", "rows", "x_1"]), st.one_of(words, long_words)).map(
        lambda p: [f"{p[0]}=1", f"{p[0]}={p[1]}"]
    ),
)
DEPLOY_FLAGS = st.one_of(
    PARAMS.map(lambda items: [arg for item in items for arg in ("--param", item)]),
    TIMEOUTS.map(lambda v: [f"--timeout={v}"]),
    st.one_of(st.integers(max_value=0), st.integers(min_value=86_400 * 999_999_999 + 1)).map(
        lambda n: [f"--interval={n}"]
    ),
    st.one_of(words, long_words).filter(lambda w: not _an_int(w)).map(lambda w: [f"--interval={w}"]),
    st.one_of(
        st.just("flows\n"),
        st.just("a/b"),
        st.just("n" * 64),
        long_words,
        with_control(st.just("flows")),
        st.just("-dash"),
    ).map(lambda v: [f"--name={v}"]),
)
ENTRYPOINTS = st.one_of(
    words.filter(lambda w: ":" not in w),
    st.just("flows.py"),
    st.just("missing.py:train"),
    st.just("../outside.py:train"),
    st.just("flows.py:not-a-name"),
    long_words.map(lambda w: f"{w}.py:train"),
    with_control(st.just("flows")).map(lambda w: f"{w}.py:train"),
).filter(lambda e: not e.startswith("-"))


@PROPERTY
@given(flags=DEPLOY_FLAGS)
def test_bad_deploy_flags_and_parameters_are_refused_in_one_clear_message(flags):
    with tempfile.TemporaryDirectory() as root, sandbox(Path(root)) as box:
        before = box.files()
        ran = run_cli(["deploy", ENTRYPOINT, *flags], box)
        assert_one_clear_refusal(ran, values=flags + [f.split("=", 1)[-1] for f in flags], secrets=(SECRET_VALUE,))
        assert box.files() == before and not box.home.exists()


@PROPERTY
@given(entrypoint=ENTRYPOINTS)
def test_bad_deploy_entrypoints_are_refused_in_one_clear_message(entrypoint):
    with tempfile.TemporaryDirectory() as root, sandbox(Path(root)) as box:
        before = box.files()
        ran = run_cli(["deploy", entrypoint], box)
        assert_one_clear_refusal(ran, values=[entrypoint])
        assert ran.status == 1 and box.files() == before and not box.home.exists()


def test_a_five_megabyte_api_url_is_refused_with_a_short_message(tmp_path):
    """The review's case: a 5 MB apiUrl was echoed whole to stderr."""
    with sandbox(tmp_path) as box:
        api_url = "http://" + "a" * 5_000_000 + "/api"
        box.write_outputs(valid_outputs(apiUrl=api_url))
        ran = run_cli(["bootstrap", "--outputs", "outputs.json"], box)
        message = assert_one_clear_refusal(ran, values=[api_url])
        assert message.startswith("error: apiUrl 'http://aaaa") and "..." in message and len(message) < 400


@pytest.mark.parametrize("content", ["[" * 100_000, '{"a": ' + "9" * 5000 + "}", b"\xff\xfe{}"])
def test_outputs_files_python_cannot_hold_are_refused(tmp_path, content):
    with sandbox(tmp_path) as box:
        box.write_outputs(content)
        assert_one_clear_refusal(run_cli(["bootstrap", "--outputs", "outputs.json"], box))
