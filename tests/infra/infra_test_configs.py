"""Base stack configs for the infra tests (full keys, plain values as `pulumi config set --path` gives)."""

SSH_FROM = "203.0.113.0/24"
AWS = {"aws:region": "eu-west-1", "prefect-host:sshAllowedCidrs": [SSH_FROM]}
GCP = {
    "prefect-host:cloud": "gcp",
    "aws:region": "eu-west-1",
    "gcp:project": "my-project-123",
    "gcp:zone": "europe-west1-b",
    "prefect-host:sshAllowedCidrs": [SSH_FROM],
}


# The resources both clouds create besides the host: the S3 bucket and its locks, the IAM group and user, the
# auth string.
STORAGE_ACCESS_AND_CREDENTIALS = {
    "prefect-host:bucket_storage:BucketStorage": 1,
    "random:index/randomId:RandomId": 1,
    "aws:s3/bucket:Bucket": 1,
    "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock": 1,
    "aws:s3/bucketOwnershipControls:BucketOwnershipControls": 1,
    "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration": 1,
    "aws:s3/bucketVersioning:BucketVersioning": 1,
    "aws:s3/bucketPolicy:BucketPolicy": 1,
    "prefect-host:bucket_access:BucketAccess": 1,
    "aws:iam/group:Group": 1,
    "aws:iam/groupPolicy:GroupPolicy": 1,
    "aws:iam/user:User": 1,
    "aws:iam/userGroupMembership:UserGroupMembership": 1,
    "aws:iam/accessKey:AccessKey": 1,
    "prefect-host:server_credentials:ServerCredentials": 1,
    "random:index/randomPassword:RandomPassword": 1,
}
