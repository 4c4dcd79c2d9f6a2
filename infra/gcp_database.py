"""Prefect's database on GCP (prefect-host:database postgres): Cloud SQL for PostgreSQL 17 on the stack's own network.

A private IP only: Cloud SQL lives in Google's service producer network, reached from the stack's VPC (GcpHost's own
network, not `default`) through private services access: an internal range reserved on the network for VPC peering
and the Service Networking connection that peers it. TLS only (ENCRYPTED_ONLY), daily backups with point-in-time
recovery; with retainData deletion protection (in Pulumi and in Cloud SQL itself) and backups kept after a deletion.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

import postgres

SERVICE_NETWORKING = "servicenetworking.googleapis.com"
SQL_ADMIN = "sqladmin.googleapis.com"
# Google's recommended size for a private services access range; the stack's network has nothing else to peer.
PEERING_PREFIX_LENGTH = 16
# Enterprise edition keeps transaction logs (point-in-time recovery) for at most 7 days, Enterprise Plus 35.
LOG_RETENTION_DAYS = {"ENTERPRISE": 7, "ENTERPRISE_PLUS": 35}


@dataclass(frozen=True)
class GcpDatabaseArgs:
    """What GcpDatabase uses: validated settings (region and zone from gcp:zone) and GcpHost's network."""

    stack: str
    region: str
    zone: str
    tier: str
    backup_retention_days: int
    retain_data: bool
    network_id: pulumi.Input[str]


def backup_retention(days: int, tier_edition: str) -> tuple[int, int]:
    """(daily backups kept, days of transaction logs for point-in-time recovery) for dbBackupRetentionDays.

    Point-in-time recovery over the days asked for, up to the edition's limit; Cloud SQL refuses a log retention
    that is not shorter than the backups kept ("backup retention should be > transaction log retention"), so one
    more daily backup is kept where needed."""
    log_days = min(days, LOG_RETENTION_DAYS[tier_edition])
    return max(days, log_days + 1), log_days


def edition(tier: str) -> str:
    """Without an edition PostgreSQL 16+ gets Enterprise Plus, which takes only its db-perf-optimized-N-* tiers;
    every other tier (shared-core, db-custom-*) needs Enterprise."""
    return "ENTERPRISE_PLUS" if tier.startswith("db-perf-optimized-") else "ENTERPRISE"


class GcpDatabase(pulumi.ComponentResource):
    url: pulumi.Output[str]  # secret: databaseUrl
    host: pulumi.Output[str]

    def __init__(self, name: str, args: GcpDatabaseArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("prefect-host:gcp_database:GcpDatabase", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        # The APIs Cloud SQL with a private IP needs; left enabled on destroy (other stacks may use them).
        apis = {
            api: gcp.projects.Service(
                f"{name}-api-{api.split('.')[0]}", service=api, disable_on_destroy=False, opts=child
            )
            for api in (SERVICE_NETWORKING, SQL_ADMIN)
        }
        peering_range = gcp.compute.GlobalAddress(
            f"{name}-db-range",
            purpose="VPC_PEERING",
            address_type="INTERNAL",
            prefix_length=PEERING_PREFIX_LENGTH,
            network=args.network_id,
            description=f"prefect-host {args.stack}: private services access (Cloud SQL)",
            opts=child,
        )
        connection = gcp.servicenetworking.Connection(
            f"{name}-db-peering",
            network=args.network_id,
            service=SERVICE_NETWORKING,
            reserved_peering_ranges=[peering_range.name],
            # Google keeps a deleted Cloud SQL instance's producer resources for a while, so deleting the connection
            # is refused right after it; the peering is removed instead, which lets the network go.
            deletion_policy="REMOVE_PEERING",
            opts=pulumi.ResourceOptions(parent=self, depends_on=[apis[SERVICE_NETWORKING]]),
        )

        tier_edition = edition(args.tier)
        retained_backups, log_days = backup_retention(args.backup_retention_days, tier_edition)
        instance = gcp.sql.DatabaseInstance(
            f"{name}-db",
            database_version=f"POSTGRES_{postgres.ENGINE_MAJOR_VERSION}",
            region=args.region,
            # Pulumi's own guard (the provider defaults it to true): only a retainData stack keeps it.
            deletion_protection=args.retain_data,
            settings={
                "tier": args.tier,
                "edition": tier_edition,
                "availability_type": "ZONAL",
                "location_preference": {"zone": args.zone},
                # 10 GB to start (the default; a declared size would undo the automatic growth on the next update).
                "disk_type": "PD_SSD",
                "disk_autoresize": True,
                # Cloud SQL's own guard against deletion from any client (console, gcloud, API).
                "deletion_protection_enabled": args.retain_data,
                "retain_backups_on_delete": args.retain_data,
                "ip_configuration": {
                    "ipv4_enabled": False,
                    "private_network": args.network_id,
                    "ssl_mode": "ENCRYPTED_ONLY",
                },
                "backup_configuration": {
                    "enabled": True,
                    "point_in_time_recovery_enabled": True,
                    "transaction_log_retention_days": log_days,
                    # One automated backup a day.
                    "backup_retention_settings": {"retained_backups": retained_backups, "retention_unit": "COUNT"},
                },
            },
            # The private IP needs the peering in place.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[connection, apis[SQL_ADMIN]]),
        )
        # ABANDON: PostgreSQL refuses to drop a database or a role that still owns objects (Prefect's tables); they
        # go with the instance.
        gcp.sql.Database(
            f"{name}-db-prefect", name=postgres.DB_NAME, instance=instance.name, deletion_policy="ABANDON", opts=child
        )
        password = postgres.new_password(name, self)
        gcp.sql.User(
            f"{name}-db-user",
            name=postgres.DB_USER,
            instance=instance.name,
            password=password.result,
            deletion_policy="ABANDON",
            opts=child,
        )

        self.host = instance.private_ip_address
        self.url = postgres.secret_url(password.result, instance.private_ip_address)
        self.register_outputs(
            {
                "host": self.host,
                "url": self.url,
                "instanceName": instance.name,
                "connectionName": instance.connection_name,
            }
        )
