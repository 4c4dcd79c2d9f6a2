"""host_tool.py's Litestream operations, run here as the host runs them (`python3 - ARGS` with the
file on stdin, as root) against a real Litestream and a real S3 API (moto with IAM auth) on
loopback: restore, refusals, point in time, position, list. Nothing mocked."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from prefect_host.local.s3 import S3Server
from prefect_host.services import litestream
from prefect_host.services.systemd import env_file_text

LITESTREAM = str(Path(sys.executable).with_name("litestream"))
TOOL = Path(litestream.__file__).resolve().parents[1] / "host_tool.py"
BUCKET = "host-tool-tests"
# A value with every character the env file quotes: read back exactly, or the key is wrong.
SECRET_SUFFIX = "'q\"$`\\"


@dataclass
class Replicated:
    s3: S3Server
    work: Path
    db: Path
    config: Path
    env_file: Path
    socket: Path
    between: str  # a time after the first row and before the second
    daemon: subprocess.Popen

    def tool(
        self,
        command: str,
        *options: str,
        db: Path | None = None,
        env_file: Path | None = None,
        config: Path | None = None,
    ):
        args = [command, "--litestream", LITESTREAM, "--config", str(config or self.config)]
        args += ["--env-file", str(env_file or self.env_file), "--db", str(self.db), "--owner", "root"]
        args += ["--output", str(db)] if db else []
        args += ["--socket", str(self.socket), *options]
        return subprocess.run(
            [sys.executable, "-", *args], input=TOOL.read_text(), capture_output=True, text=True, timeout=120
        )


def write_config(work: Path, s3: S3Server, db: Path, socket: Path) -> Path:
    replica = litestream.Replica(BUCKET, s3.region, "unused", "unused", endpoint_url=s3.endpoint_url)
    config = work / "litestream.yml"
    config.write_text(litestream.config_text(replica, db_path=str(db), socket=str(socket)))
    return config


@pytest.fixture(scope="module")
def replicated(tmp_path_factory) -> Iterator[Replicated]:
    """A WAL database with two rows a few seconds apart, replicated by a running Litestream."""
    work = tmp_path_factory.mktemp("host-tool")
    with S3Server("127.0.0.1") as s3:
        creds = s3.provision(BUCKET, user="host-tool")
        env_file = work / "litestream.env"
        env_file.write_text(
            env_file_text(
                {
                    "LITESTREAM_ACCESS_KEY_ID": creds.access_key_id,
                    "LITESTREAM_SECRET_ACCESS_KEY": creds.secret_access_key,
                }
            )
        )
        db, socket = work / "prefect.db", work / "ls.sock"
        config = write_config(work, s3, db, socket)
        connection = sqlite3.connect(db)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("CREATE TABLE runs (name TEXT)")
        connection.commit()
        env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"} | {
            "LITESTREAM_ACCESS_KEY_ID": creds.access_key_id,
            "LITESTREAM_SECRET_ACCESS_KEY": creds.secret_access_key,
        }
        log = open(work / "litestream.log", "w")  # noqa: SIM115 (closed below)
        daemon = subprocess.Popen(
            [LITESTREAM, "replicate", "-no-expand-env", "-config", str(config)], env=env, stdout=log, stderr=log
        )
        try:
            rows = Replicated(s3, work, db, config, env_file, socket, "", daemon)
            connection.execute("INSERT INTO runs VALUES ('first')")
            connection.commit()
            time.sleep(2.5)
            rows.between = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            time.sleep(2.5)
            connection.execute("INSERT INTO runs VALUES ('second')")
            connection.commit()
            position = rows.tool("position")
            assert position.returncode == 0, position.stderr
            yield rows
        finally:
            daemon.terminate()
            daemon.wait(timeout=30)
            log.close()


def names(db: Path) -> list[str]:
    return [row[0] for row in sqlite3.connect(db).execute("SELECT name FROM runs ORDER BY rowid")]


def test_position_waits_until_the_bucket_has_the_newest_transaction(replicated):
    done = replicated.tool("position")
    assert done.returncode == 0, done.stderr
    position = json.loads(done.stdout)
    assert position["replica_txid"] == position["txid"] >= 2 and position["last_sync_at"]


def test_restore_brings_back_the_newest_rows_owned_by_the_user_and_private(replicated, tmp_path):
    target = tmp_path / "prefect.db"
    done = replicated.tool("restore", db=target)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("restored transaction ") and "integrity check passed" in done.stdout
    assert names(target) == ["first", "second"]
    assert oct(target.stat().st_mode & 0o777) == "0o600" and not Path(f"{target}.restoring").exists()


def test_a_point_in_time_has_the_first_row_and_not_the_second(replicated, tmp_path):
    target = tmp_path / "prefect.db"
    done = replicated.tool("restore", "--timestamp", replicated.between, db=target)
    assert done.returncode == 0, done.stderr
    assert names(target) == ["first"]


def test_an_existing_database_is_never_overwritten_and_replace_keeps_it(replicated, tmp_path):
    target = tmp_path / "prefect.db"
    target.write_bytes(b"not a database, but ours")
    refused = replicated.tool("restore", db=target)
    assert refused.returncode == 1 and "never overwrites" in refused.stderr
    assert target.read_bytes() == b"not a database, but ours"
    replaced = replicated.tool("restore", "--replace", db=target)
    assert replaced.returncode == 0, replaced.stderr
    [kept] = tmp_path.glob("prefect.db.before-restore-*")
    assert kept.read_bytes() == b"not a database, but ours" and names(target) == ["first", "second"]


def test_nothing_before_the_first_write_is_an_error_not_an_empty_database(replicated, tmp_path):
    target = tmp_path / "prefect.db"
    done = replicated.tool("restore", "--timestamp", "2020-01-01T00:00:00Z", db=target)
    assert done.returncode == 1 and "nothing was replicated at or before 2020-01-01T00:00:00Z" in done.stderr
    assert not target.exists()


def test_a_refused_key_stops_the_restore_with_the_reason_and_no_secret(replicated, tmp_path):
    wrong = tmp_path / "wrong.env"
    text = replicated.env_file.read_text()
    secret_line = next(line for line in text.splitlines() if line.startswith("LITESTREAM_SECRET_ACCESS_KEY="))
    wrong.write_text(text.replace(secret_line, "LITESTREAM_SECRET_ACCESS_KEY='Wrong-Secret-Key-0042'"))
    target = tmp_path / "prefect.db"
    done = replicated.tool("restore", db=target, env_file=wrong)
    assert (
        done.returncode == 1
        and "the bucket refused the stack's key (403)" in done.stderr
        and "--no-restore" in done.stderr
    )
    assert "Wrong-Secret-Key-0042" not in done.stderr + done.stdout and not target.exists()


def test_an_empty_replica_starts_empty(replicated, tmp_path):
    config = write_config(tmp_path, replicated.s3, replicated.db, tmp_path / "s.sock")
    config.write_text(config.read_text().replace(litestream.REPLICA_PATH, "backups/nothing-here"))
    done = replicated.tool("restore", db=tmp_path / "other.db", config=config)
    # (the config names the same database, replicated elsewhere: an empty replica)
    assert done.returncode == 0 and "no replica in the bucket yet" in done.stdout
    assert not (tmp_path / "other.db").exists()


def test_list_sums_the_replica_per_level(replicated):
    done = replicated.tool("list")
    assert done.returncode == 0, done.stderr
    levels = json.loads(done.stdout)
    assert levels[0]["level"] == 0 and levels[0]["files"] >= 2 and levels[0]["max_txid"] >= 2
    assert any(level["level"] == 9 for level in levels)  # the snapshot


def test_the_env_file_is_read_back_exactly_as_systemd_would(tmp_path):
    import runpy

    tool = runpy.run_path(str(TOOL))
    values = {"A": "plain", "B": f"with {SECRET_SUFFIX}", "C": "it's"}
    path = tmp_path / "x.env"
    path.write_text(env_file_text(values))
    assert tool["read_env_file"](str(path)) == values


def test_no_restore_over_an_existing_replica_is_warned_about(replicated):
    """The bootstrap's warning, against the same bucket: a replica there, --no-restore, no database."""
    import io

    from prefect_host.bootstrap.backup_checks import warn_before_an_empty_start
    from prefect_host.bootstrap.backup_inputs import BackupSettings
    from prefect_host.bootstrap.upgrade import DB_FACT
    from prefect_host.console import Console
    from prefect_host.host.facts import parse_facts
    from tests.prefect_host.bootstrap.bootstrap_samples import sample_inputs
    from tests.prefect_host.host.host_samples import END, HOST

    env = dict(line.split("=", 1) for line in replicated.env_file.read_text().splitlines() if "=" in line)
    replica = litestream.Replica(
        BUCKET,
        replicated.s3.region,
        env["LITESTREAM_ACCESS_KEY_ID"].strip("'"),
        env["LITESTREAM_SECRET_ACCESS_KEY"].strip("'"),
        endpoint_url=replicated.s3.endpoint_url,
    )
    warned = []
    for restore, database in ((False, False), (True, False), (False, True)):
        inputs = sample_inputs(backup=BackupSettings(replica=replica, restore=restore))
        facts = parse_facts(HOST + (f"{DB_FACT}=1\n" if database else "") + END)
        err = io.StringIO()
        warn_before_an_empty_start(inputs, facts, Console(io.StringIO(), err))
        warned.append(err.getvalue())
    assert "holds a replica of an earlier database" in warned[0] and warned[1:] == ["", ""]
