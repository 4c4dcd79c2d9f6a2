"""prefect-host: a VM for a Prefect 3 server on AWS or GCP, an S3 bucket and an IAM user, with
`database: postgres` a managed PostgreSQL (RDS or Cloud SQL) for several API processes, and with `workerHosts`
worker VMs that run the flows.

The exports are the bootstrap's input contract (prefect_host/outputs.py).
"""

import pulumi

import component_args
from aws_database import AwsDatabase
from aws_host import AwsHost, describe_instance_type, find_debian_ami
from aws_worker_hosts import AwsWorkerHosts
from bucket_access import BucketAccess
from bucket_storage import BucketStorage
from gcp_database import GcpDatabase
from gcp_host import GcpHost, machine_vcpus
from gcp_worker_hosts import GcpWorkerHosts
from host_keys import SSH_USER, HostKeys
from server_credentials import ServerCredentials
from stack_config import NAMESPACE, check_api_workers, load_stack_config

# Everything that can reject the configuration (the provider's lookups of the instance type and the AMI too) runs
# before the first resource is registered.
config = load_stack_config()
if config.cloud == "aws":
    instance_type = describe_instance_type(config.instance_type)
    ami = find_debian_ami(instance_type, config.image)
    check_api_workers(config, instance_type.vcpus)
    worker_ami = ami
    if config.worker_hosts and config.worker_instance_type != config.instance_type:
        # Looked up like the server's: another type may be of another architecture, so another AMI.
        worker_ami = find_debian_ami(
            describe_instance_type(config.worker_instance_type), config.image, f"{NAMESPACE}:workerInstanceType"
        )
elif config.database == "postgres" and config.gcp_zone is not None:
    # With SQLite apiWorkers is 1, which any machine type serves: no lookup needed.
    check_api_workers(config, machine_vcpus(config.instance_type, config.gcp_zone))

name = config.resource_prefix
keys = HostKeys(name, component_args.host_keys_args(config))
database: AwsDatabase | GcpDatabase | None = None
workers: AwsWorkerHosts | GcpWorkerHosts | None = None
if config.cloud == "aws":
    host = AwsHost(name, component_args.aws_host_args(config, ami, keys))
    if config.database == "postgres":
        database = AwsDatabase(name, component_args.aws_database_args(config, host))
    if config.worker_hosts:
        workers = AwsWorkerHosts(name, component_args.aws_worker_hosts_args(config, worker_ami, keys, host))
else:
    host = GcpHost(name, component_args.gcp_host_args(config, keys))
    if config.database == "postgres":
        database = GcpDatabase(name, component_args.gcp_database_args(config, host))
    if config.worker_hosts:
        workers = GcpWorkerHosts(name, component_args.gcp_worker_hosts_args(config, keys, host))
storage = BucketStorage(name, component_args.bucket_storage_args(config))
access = BucketAccess(name, component_args.bucket_access_args(config, storage))
credentials = ServerCredentials(name)

pulumi.export("cloud", config.cloud)
pulumi.export("publicIp", host.public_ip)
pulumi.export("sshUser", SSH_USER)
if keys.operator_private_key is not None:
    pulumi.export("sshPrivateKey", keys.operator_private_key)
pulumi.export("hostPublicKey", keys.host_public_key)
pulumi.export("apiUrl", host.public_ip.apply(lambda ip: f"{config.server_url(ip)}/api"))
pulumi.export("uiUrl", host.public_ip.apply(config.server_url))
pulumi.export("tlsMode", config.tls_mode)
# Exported only when they apply, so the bootstrap's Caddyfile follows the outputs alone.
if config.domain is not None:
    pulumi.export("domain", config.domain)
if config.tls_mode == "acme":
    pulumi.export("acmeCa", config.acme_ca)
    if config.acme_email is not None:
        pulumi.export("acmeEmail", config.acme_email)
pulumi.export("prefectVersion", config.prefect_version)
# Litestream's settings for the continuous backup of the Prefect database (bucket prefix backups/prefect-db/).
pulumi.export("backupRetention", config.backup_retention)
pulumi.export("backupSnapshotInterval", config.backup_snapshot_interval)
# Prefect's database and how many API processes share it; the URL (a secret) only with postgres.
pulumi.export("database", config.database)
pulumi.export("apiWorkers", str(config.api_workers))
if database is not None:
    pulumi.export("databaseUrl", database.url)
# The worker VMs, {name, publicIp, hostPublicKey} each; always exported, an empty list without workerHosts.
pulumi.export("workerHosts", [] if workers is None else [vm.output() for vm in workers.hosts])
pulumi.export("prefectAuthString", credentials.auth_string)
pulumi.export("bucketName", storage.bucket_name)
pulumi.export("bucketRegion", config.aws_region)
pulumi.export("iamGroupName", access.group_name)
pulumi.export("iamUserName", access.user_name)
pulumi.export("awsAccessKeyId", access.access_key_id)
pulumi.export("awsSecretAccessKey", access.secret_access_key)
