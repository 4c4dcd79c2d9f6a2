"""The bootstrap's backup flags: what they turn on and off, and the bad combinations refused before
anything runs."""

from __future__ import annotations

import datetime as dt

import pytest

from prefect_host.bootstrap.backup_inputs import backup_settings, restore_timestamp
from prefect_host.errors import UsageError
from prefect_host.outputs import StackOutputs
from prefect_host.services.litestream import DEFAULT_RETENTION
from tests.prefect_host.bootstrap.bootstrap_samples import outputs_mapping

OUTPUTS = outputs_mapping()


def storage(**changes) -> StackOutputs:
    return StackOutputs.from_mapping({**OUTPUTS, **changes})


@pytest.mark.parametrize(
    "given, wanted",
    [
        ("2026-12-06T05:25:45Z", "2026-12-06T05:25:45Z"),
        ("2026-12-06T06:25:45+01:00", "2026-12-06T05:25:45Z"),
        ("2026-12-06T05:25:45.250Z", "2026-12-06T05:25:45Z"),
    ],
)
def test_restore_times_are_taken_in_utc(given, wanted):
    assert restore_timestamp(given) == wanted


@pytest.mark.parametrize(
    "bad", ["yesterday", "2026-12-06 05:25:45", "2026-12-06T05:25:45", "", " 2026-12-06T05:25:45Z"]
)
def test_a_time_without_a_zone_or_not_a_time_is_refused(bad):
    with pytest.raises(UsageError, match=r"--restore-at .*UTC time such as"):
        restore_timestamp(bad)


def test_a_time_in_the_future_is_refused():
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    with pytest.raises(UsageError, match="in the future"):
        restore_timestamp(later)


def test_backups_follow_the_bucket_with_its_key_and_retention():
    settings = backup_settings(storage(backupRetention="30d"), no_backup=False, no_restore=False, restore_at=None)
    replica = settings.replica
    assert replica.bucket == OUTPUTS["bucketName"] and replica.retention == "30d" and settings.restore
    assert replica.secret_access_key == OUTPUTS["awsSecretAccessKey"]
    older = backup_settings(storage(), no_backup=False, no_restore=True, restore_at=None)
    assert older.replica.retention == DEFAULT_RETENTION and not older.restore


@pytest.mark.parametrize(
    "has_storage, no_backup, no_restore, message",
    [
        (False, False, False, "--restore-at and --no-storage"),
        (True, True, False, "--restore-at and --no-backup"),
        (True, False, True, "--restore-at and --no-restore"),
    ],
)
def test_a_restore_time_needs_the_replica(has_storage, no_backup, no_restore, message):
    with pytest.raises(UsageError, match=message):
        backup_settings(
            storage() if has_storage else None,
            no_backup=no_backup,
            no_restore=no_restore,
            restore_at="2026-12-06T05:25:45Z",
        )


def test_no_bucket_or_no_backup_means_no_replica():
    assert backup_settings(None, no_backup=False, no_restore=False, restore_at=None).replica is None
    off = backup_settings(storage(), no_backup=True, no_restore=False, restore_at=None)
    assert off.replica is None and off.off_reason == "--no-backup"
