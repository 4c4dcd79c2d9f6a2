"""Bad input to the local-host harness fails clearly before anything is built, and the package
index serves its directory (on loopback here; on a guest's gateway in the e2e tests)."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest

from prefect_host.local import LocalHost, LocalHostError, PackageIndex, build_image, ensure_wheelhouse
from prefect_host.local.image import image_recipe


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch) -> Path:
    """Nothing here may touch the real cache: a validation slip would show up as files in tmp_path."""
    monkeypatch.setenv("PREFECT_HOST_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.mark.parametrize(
    "suite, extras, named",
    [
        ("Trixie!", (), "suite='Trixie!'"),
        ("trixie", "python3-venv", "extra_packages='python3-venv'"),
        ("trixie", ("python3-venv", "rm -rf /"), "'rm -rf /'"),
    ],
)
def test_build_image_rejects_bad_input_before_building(suite, extras, named, private_cache: Path):
    with pytest.raises(LocalHostError) as caught:
        build_image(suite, extras)
    assert named in str(caught.value)
    assert not (private_cache / "images").exists()


def test_image_recipe_names_a_new_image_only_when_the_packages_change():
    base = image_recipe("trixie")
    assert image_recipe("trixie", ["python3-venv", "python3-pip"]) == image_recipe(
        "trixie", ("python3-pip", "python3-venv")
    )
    assert image_recipe("trixie", ["python3-venv"]) != base
    assert image_recipe("bookworm") != base
    assert {"openssh-server", "python3", "sudo", "curl"} <= set(base["packages"])
    assert not {"python3-venv", "python3-pip"} & set(base["packages"])


@pytest.mark.parametrize(
    "requirements, python_version, named",
    [
        ("prefect==3.9.1", "3.13", "requirements='prefect==3.9.1'"),
        ([], "3.13", "requirements=[]"),
        (["prefect==3.9.1", "--index-url=http://elsewhere/"], "3.13", "--index-url"),
        (["prefect == 3.9.1"], "3.13", "'prefect == 3.9.1'"),
        (["prefect==3.9.1"], "3", "python_version='3'"),
    ],
)
def test_ensure_wheelhouse_rejects_bad_input_before_downloading(
    requirements, python_version, named, private_cache: Path
):
    with pytest.raises(LocalHostError) as caught:
        ensure_wheelhouse(requirements, python_version)
    assert named in str(caught.value)
    assert not (private_cache / "wheels").exists()


def test_package_index_serves_its_directory_until_closed(tmp_path: Path):
    (tmp_path / "wheels").mkdir()
    (tmp_path / "wheels/demo-1.0-py3-none-any.whl").write_bytes(b"wheel bytes")
    with PackageIndex(tmp_path / "wheels", "127.0.0.1") as index:
        assert index.url.startswith("http://127.0.0.1:")
        page = urllib.request.urlopen(index.url, timeout=5).read().decode()
        assert 'href="demo-1.0-py3-none-any.whl"' in page
        assert urllib.request.urlopen(index.url + "demo-1.0-py3-none-any.whl", timeout=5).read() == b"wheel bytes"
    with pytest.raises(OSError):
        urllib.request.urlopen(index.url, timeout=5)


def test_package_index_refuses_a_missing_directory_or_an_address_not_on_this_machine(tmp_path: Path):
    with pytest.raises(LocalHostError, match="does not exist"):
        PackageIndex(tmp_path / "missing", "127.0.0.1")
    # An address no interface here has (TEST-NET-2): binding fails without sending anything.
    with pytest.raises(LocalHostError, match=r"198.51.100.77"):
        PackageIndex(tmp_path, "198.51.100.77")


def test_from_state_explains_a_missing_or_foreign_state_file(tmp_path: Path):
    with pytest.raises(LocalHostError, match="nothing was left running"):
        LocalHost.from_state(tmp_path / "absent.json")
    (tmp_path / "other.json").write_text('{"version": 1, "slot": 999}')
    with pytest.raises(LocalHostError, match="not a local host state file"):
        LocalHost.from_state(tmp_path / "other.json")


def test_suites_packages_and_versions_are_matched_whole():
    for bad in ({"suite": "trixie\n"}, {"extra_packages": ["caddy\n"]}):
        with pytest.raises(LocalHostError):
            image_recipe(**bad)
    with pytest.raises(LocalHostError, match="python_version"):
        ensure_wheelhouse(["uv==0.13.8"], python_version="3.13\n")
