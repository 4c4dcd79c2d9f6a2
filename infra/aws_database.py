"""Prefect's database on AWS (prefect-host:database postgres): RDS for PostgreSQL 17 in the VM's VPC.

Encrypted storage, no public address, reachable on 5432 only from the VM's security group, TLS enforced by its
parameter group (rds.force_ssl), automated backups; with retainData deletion protection, a final snapshot and the
automated backups kept after a deletion.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_random as random

import postgres


@dataclass(frozen=True)
class AwsDatabaseArgs:
    """What AwsDatabase uses: validated settings and the VM's VPC and security group from AwsHost."""

    stack: str
    instance_class: str
    backup_retention_days: int
    retain_data: bool
    vpc_id: pulumi.Input[str]
    host_security_group_id: pulumi.Input[str]


class AwsDatabase(pulumi.ComponentResource):
    url: pulumi.Output[str]  # secret: databaseUrl
    host: pulumi.Output[str]

    def __init__(self, name: str, args: AwsDatabaseArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("prefect-host:aws_database:AwsDatabase", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        tags = {"Name": f"{name}-db", "prefect-host:stack": args.stack}

        # Every subnet of the VM's VPC (the default VPC has one per availability zone; RDS wants two zones or more).
        subnets = aws.ec2.get_subnets_output(filters=[{"name": "vpc-id", "values": [args.vpc_id]}])
        subnet_group = aws.rds.SubnetGroup(
            f"{name}-db-subnets",
            subnet_ids=subnets.ids,
            description=f"prefect-host {args.stack}: the VM's VPC",
            tags=tags,
            opts=child,
        )
        # No egress rules (the provider removes AWS's default one): the database opens no connection.
        group = aws.ec2.SecurityGroup(
            f"{name}-db-sg",
            vpc_id=args.vpc_id,
            description=f"prefect-host {args.stack}: PostgreSQL from the VM only",
            tags=tags,
            opts=child,
        )
        aws.vpc.SecurityGroupIngressRule(
            f"{name}-db-tcp-{postgres.PORT}-from-vm",
            security_group_id=group.id,
            referenced_security_group_id=args.host_security_group_id,
            ip_protocol="tcp",
            from_port=postgres.PORT,
            to_port=postgres.PORT,
            description="PostgreSQL from the Prefect VM",
            opts=child,
        )
        # PostgreSQL 15+ defaults rds.force_ssl to 1 already; declared, so it is visible and the policy pack sees it.
        parameters = aws.rds.ParameterGroup(
            f"{name}-db-params",
            family=f"postgres{postgres.ENGINE_MAJOR_VERSION}",
            description=f"prefect-host {args.stack}: TLS only",
            parameters=[{"name": "rds.force_ssl", "value": "1"}],
            tags=tags,
            opts=child,
        )
        password = postgres.new_password(name, self)
        # Snapshot names are unique in the account and outlive the stack: a stack made again gets a new suffix.
        snapshot_suffix = random.RandomId(f"{name}-db-snapshot-suffix", byte_length=4, opts=child)

        instance = aws.rds.Instance(
            f"{name}-db",
            engine="postgres",
            # A major version: with auto_minor_version_upgrade RDS takes the newest 17.x and keeps it current.
            engine_version=str(postgres.ENGINE_MAJOR_VERSION),
            auto_minor_version_upgrade=True,
            instance_class=args.instance_class,
            allocated_storage=20,
            max_allocated_storage=100,
            storage_type="gp3",
            storage_encrypted=True,
            publicly_accessible=False,
            db_subnet_group_name=subnet_group.name,
            vpc_security_group_ids=[group.id],
            parameter_group_name=parameters.name,
            port=postgres.PORT,
            db_name=postgres.DB_NAME,
            username=postgres.DB_USER,
            password=password.result,
            backup_retention_period=args.backup_retention_days,
            copy_tags_to_snapshot=True,
            # retainData: `pulumi destroy` stops at the database (set retainData false and `pulumi up` first); a
            # deletion anyway leaves a final snapshot and the automated backups.
            deletion_protection=args.retain_data,
            skip_final_snapshot=not args.retain_data,
            final_snapshot_identifier=snapshot_suffix.hex.apply(lambda suffix: f"{name}-db-final-{suffix}"),
            delete_automated_backups=not args.retain_data,
            tags=tags,
            opts=child,
        )

        self.host = instance.address
        self.url = postgres.secret_url(password.result, instance.address)
        self.register_outputs(
            {
                "host": self.host,
                "url": self.url,
                "securityGroupId": group.id,
                "parameterGroup": parameters.name,
                "subnetGroup": subnet_group.name,
            }
        )
