"""prefect_host.deploy.files: secret-looking files stay out of the bucket unless --include names them, a
symlink never takes the upload out of the project, and --dry-run lists it all and writes nothing. The first
tests call select_files directly; the others go through scripts/deploy.py against the servers."""

from __future__ import annotations

from pathlib import Path

import pytest
from deploy_support import (
    MANIFEST,
    assert_ok,
    bucket_state,
    code_location,
    code_objects,
    read_deployment,
    run_deploy,
    server_state,
)

from fixtures_server import UPLOADED
from prefect_host.deploy import DeployError
from prefect_host.deploy.files import select_files

SECRETS = (
    "outputs.json",
    "id_ed25519",
    "deploy.pem",
    ".env.prod",
    ".demo/outputs.json",
    "Pulumi.dev.yaml",
    "conf/.aws/credentials",
    ".netrc",
)


def add_secrets_and_links(project: Path, outside: Path) -> Path:
    """SECRETS, a file and a directory outside the project linked from it, and a link inside it."""
    for path in SECRETS:
        (project / path).parent.mkdir(parents=True, exist_ok=True)
        (project / path).write_text("SECRET=Kq2-not-for-the-bucket\n")
    outside.mkdir()
    (outside / "shared.py").write_text("SHARED = 'outside the project'\n")
    (project / "shared.py").symlink_to(outside / "shared.py")
    (project / "vendor").symlink_to(outside, target_is_directory=True)
    (project / "alias.py").symlink_to("trips.py")
    return project


@pytest.fixture
def secretive(project, tmp_path) -> Path:
    return add_secrets_and_links(project, tmp_path / "outside")


def test_secret_looking_files_and_links_out_of_the_project_are_left_out(secretive):
    selection = select_files(secretive)
    assert sorted(selection.files) == sorted([*UPLOADED, "alias.py"])
    assert selection.files["alias.py"] == secretive / "trips.py"  # a link inside: its target's content
    why = dict(selection.left_out)
    assert all(why[path].startswith("secret-looking") for path in [*SECRETS, ".env"])  # .env: the fixture's
    assert selection.secret_count == len(SECRETS) + 1
    assert why["shared.py"].startswith("symlink leaving the project") and why["vendor/"].startswith("symlink leaving")
    assert [warning.split(":")[0] for warning in selection.warnings] == ["vendor", "shared.py"]


def test_a_link_to_a_secret_is_left_out_and_include_brings_it_back(secretive):
    (secretive / "notes.txt").symlink_to("id_ed25519")
    assert "notes.txt" not in select_files(secretive).files
    included = select_files(secretive, ["id_ed25519"]).files
    assert sorted(included) == sorted([*UPLOADED, "alias.py", "id_ed25519", "notes.txt"])


def test_other_links_are_not_followed(project):
    (project / "sub").mkdir()
    (project / "loop").symlink_to(".", target_is_directory=True)
    (project / "sub" / "up").symlink_to("..", target_is_directory=True)
    (project / "dangling.py").symlink_to("nowhere.py")
    selection = select_files(project)
    assert sorted(selection.files) == sorted(UPLOADED)
    assert {"loop/", "sub/up/", "dangling.py"} <= dict(selection.left_out).keys()
    assert [warning.split(":")[0] for warning in selection.warnings] == ["dangling.py"]


def test_the_manifest_name_is_reserved(project):
    (project / MANIFEST).write_text("{}")
    assert dict(select_files(project).left_out)[MANIFEST].startswith("reserved")


def test_an_include_that_brings_nothing_back_is_refused(secretive):
    with pytest.raises(DeployError, match=r"--include 'trips\.py': brings back no file"):
        select_files(secretive, ["*.pem", "trips.py"])
    with pytest.raises(DeployError, match=r"--include 'data/trips\.csv'"):
        select_files(secretive, ["data/trips.csv"])  # .prefectignore still applies


def test_a_deploy_uploads_no_secret_and_nothing_from_outside(work_pool, laptop, secretive, stack_outputs, s3_server):
    result = run_deploy(laptop, secretive, "--name", "secretive")
    lines = assert_ok(result)
    assert f"{len(SECRETS) + 1} secret-looking left out" in lines[2]
    assert "warning: shared.py: symlink leaving the project" in result.stderr
    assert "warning: vendor: symlink leaving the project" in result.stderr
    _, folder = code_location(stack_outputs, "secretive")
    assert sorted(code_objects(s3_server, stack_outputs, folder)) == sorted([*UPLOADED, "alias.py", MANIFEST])
    objects = bucket_state(s3_server, stack_outputs)
    assert not [key for key in objects if key.rsplit("/", 1)[-1] in {"shared.py", "id_ed25519", "outputs.json"}]


def test_include_uploads_the_one_secret_it_names(work_pool, laptop, secretive, stack_outputs, s3_server):
    assert_ok(run_deploy(laptop, secretive, "--name", "with-pem", "--include", "*.pem"))
    _, folder = code_location(stack_outputs, "with-pem")
    assert sorted(code_objects(s3_server, stack_outputs, folder)) == sorted(
        [*UPLOADED, "alias.py", "deploy.pem", MANIFEST]
    )


def test_dry_run_lists_the_files_and_writes_nothing(work_pool, laptop, secretive, stack_outputs, s3_server):
    before = bucket_state(s3_server, stack_outputs), server_state(stack_outputs)
    result = run_deploy(laptop, secretive, "--name", "dry", "--dry-run")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split(":")[0] for line in lines[:4]] == ["profile", "flow", "storage", "dry run"]
    assert "would get 3 upload(s) (0 unchanged) and 0 removal(s)" in lines[3] and "nothing was written" in lines[3]
    assert {"  upload   alias.py", "  upload   duration_model.py", "  upload   trips.py"} <= set(lines)
    assert "  exclude  outputs.json: secret-looking ('outputs.json'); --include 'outputs.json' uploads it" in lines
    assert "  exclude  data/trips.csv: .prefectignore 'data/'" in lines
    assert any(line.startswith("  exclude  shared.py: symlink leaving the project") for line in lines)
    assert read_deployment(stack_outputs, "dry") is None
    assert (bucket_state(s3_server, stack_outputs), server_state(stack_outputs)) == before


def test_dry_run_of_a_deployed_project_shows_what_the_sync_would_do(
    work_pool, laptop, project, stack_outputs, s3_server
):
    (project / "extra.py").write_text("VALUE = 1\n")
    assert_ok(run_deploy(laptop, project, "--name", "dry-again"))
    (project / "extra.py").unlink()
    before = bucket_state(s3_server, stack_outputs), server_state(stack_outputs)
    result = run_deploy(laptop, project, "--name", "dry-again", "--dry-run")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "would get 0 upload(s) (2 unchanged) and 1 removal(s)" in lines[3]
    assert "  upload   trips.py (unchanged)" in lines
    assert "  remove   extra.py (uploaded by the last deploy, no longer in the project)" in lines
    assert (bucket_state(s3_server, stack_outputs), server_state(stack_outputs)) == before
