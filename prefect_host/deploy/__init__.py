"""Deploy a flow from the laptop: upload its project to the stack's bucket, create or update the
deployment on the server's work pool, optionally run it once and wait.

How it finds the bucket (nothing but the Prefect profile is needed):
  profile PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK = "s3-bucket/<slug>-results"   (set by the bootstrap)
    -> that S3Bucket block: bucket_name, and its AwsCredentials block "<slug>" (key, region, endpoint)
    -> code goes to s3://<bucket>/flows/<key>/ through an S3Bucket block "<slug>-flows-<key>"
       (bucket_folder flows/<key>/), which the deployment's pull step names, so a worker downloads the
       code with the same credentials. <key> is <flow slug>-<deployment slug>-<hash of both names>
       (location.py): one folder and one block per flow AND deployment name, never shared.

What is uploaded (files.py): the project minus the built-in excludes, .prefectignore and secret-looking
files (SECRET_EXCLUDES, uploaded only when an --include pattern names them); a symlink leaving the project
is skipped with a warning. The folder's manifest lists what the deploy put there, and a sync deletes only
what the previous manifest listed (upload.py). --dry-run stops after the checks and lists the files.

A deployment made before this layout (code in flows/<deployment>/, block "<slug>-flows-<deployment>") is
moved by its next deploy: the code goes to the new folder, the deployment's pull step to the new block, and
the old folder and block are left as they are (other flows' deployments of that name may still use them);
the deployment line says so.

Order: everything that can be checked is checked (profile, flow, parameters, schedule, pool, blocks,
files, the folder's manifest) before the first write; then upload, code block, deployment. Each write
happens only when something differs: files are compared by MD5 with the objects' ETags, blocks field by
field, the deployment by version (a hash of the uploaded files), entrypoint, pool, pull step, parameters
and schedule. A re-run with nothing changed writes nothing and the deployment keeps its id, version
and schedule (re-applying would recreate the schedule and its scheduled runs).

Prefect is imported inside the functions: `--profile` must be in PREFECT_PROFILE before Prefect's
first import, which reads it once.

The modules, each importing only those listed before it:
  request.py     the request and DeployError
  location.py    the deployment's folder and code block name
  files.py       which files are uploaded, and why the others are not
  parameters.py  --param: parsing, and the check against the flow's signature
  upload.py      the version of the files, and the sync of the folder with its manifest
  server.py      the profile, the results block and the work pool, read before any write
  deployment.py  the schedule, the code block, the deployment itself and --run-now
  steps.py       the steps in order (`deploy`)
The command line and its exit status are prefect_host/cli/deploy.py.
"""

from prefect_host.deploy.deployment import PULL_STEP
from prefect_host.deploy.files import DEFAULT_EXCLUDES, SECRET_EXCLUDES
from prefect_host.deploy.request import DEPLOYMENT_NAME, DeployError, DeployRequest
from prefect_host.deploy.steps import deploy

__all__ = [
    "DEFAULT_EXCLUDES",
    "DEPLOYMENT_NAME",
    "PULL_STEP",
    "SECRET_EXCLUDES",
    "DeployError",
    "DeployRequest",
    "deploy",
]
