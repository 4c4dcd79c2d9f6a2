"""Deploy a flow from the laptop: upload its project to the stack's bucket, create or update the
deployment on the server's work pool, optionally run it once and wait.

How it finds the bucket (nothing but the Prefect profile is needed):
  profile PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK = "s3-bucket/<slug>-results"   (set by the bootstrap)
    -> that S3Bucket block: bucket_name, and its AwsCredentials block "<slug>" (key, region, endpoint)
    -> code goes to s3://<bucket>/flows/<deployment>/ through an S3Bucket block
       "<slug>-flows-<deployment>" (bucket_folder flows/<deployment>), which the deployment's pull step
       names, so a worker downloads the code with the same credentials.

Order: everything that can be checked is checked (profile, flow, parameters, schedule, pool, blocks)
before the first write; then upload, code block, deployment. Each write happens only when
something differs: files are compared by MD5 with the objects' ETags, blocks field by field, the
deployment by version (a hash of the uploaded files), entrypoint, pool, pull step, parameters and
schedule. A re-run with nothing changed writes nothing and the deployment keeps its id, version
and schedule (re-applying would recreate the schedule and its scheduled runs).

Prefect is imported inside the functions: `--profile` must be in PREFECT_PROFILE before Prefect's
first import, which reads it once.

The modules, each importing only those listed before it:
  request.py     the request and DeployError
  parameters.py  --param: parsing, and the check against the flow's signature
  upload.py      which files are uploaded, their version, and the sync to the bucket
  server.py      the profile, the results block and the work pool, read before any write
  deployment.py  the schedule, the code block, the deployment itself and --run-now
  steps.py       the steps in order (`deploy`)
The command line and its exit status are prefect_host/cli/deploy.py.
"""

from prefect_host.deploy.deployment import PULL_STEP
from prefect_host.deploy.request import DEPLOYMENT_NAME, DeployError, DeployRequest
from prefect_host.deploy.steps import deploy
from prefect_host.deploy.upload import DEFAULT_EXCLUDES

__all__ = [
    "DEFAULT_EXCLUDES",
    "DEPLOYMENT_NAME",
    "PULL_STEP",
    "DeployError",
    "DeployRequest",
    "deploy",
]
