"""What `make demo` shows at its end: the results read back from the bucket with the stack's own key
(proof they landed), and where everything is, in a few lines."""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping
from pathlib import Path

from prefect_host.local.demo_state import DemoError
from prefect_host.local.product import EXAMPLE_ENTRYPOINT

SCHEDULE_SECONDS = 300  # the example deployment's schedule: the tutorial's 5 minutes


def deployed_result_key(deploy_output: str, bucket: str) -> str | None:
    """The object key of the result that `deploy.py --run-now` reports ("... result at s3://B/KEY")."""
    match = re.search(rf"result at s3://{re.escape(bucket)}/(\S+)", deploy_output)
    return match.group(1) if match else None


def summary_lines(
    *,
    ui_url: str,
    api_url: str,
    state_dir: Path,
    profile: str,
    profiles_path: str,
    prefect_cli: str,
    flow_run_url: str,
    results: Mapping[str, tuple[str, int]],
    bucket: str,
    s3_endpoint_url: str,
    ssh_command: str,
    seconds: float,
) -> list[str]:
    outputs = relative_to_cwd(state_dir / "outputs.json")
    read_auth = f'import json; print(json.load(open("{outputs}"))["prefectAuthString"])'
    host = urllib.parse.urlsplit(ui_url).hostname
    lines = [
        f"demo: ready in {seconds:.0f} s; it all keeps running until `make demo-down`.",
        f"  Prefect UI    {ui_url}   (API {api_url})",
        f"  sign in with  the auth string, prefectAuthString in {outputs}:",
        f"                  python3 -c '{read_auth}'",
        "  reach it      on this machine: open the URL. From another computer: `ssh -D 1080 <you>@<this machine>`",
        f"                and set the browser's SOCKS proxy to localhost:1080 (the UI calls the API at {host},",
        "                so a plain `ssh -L` port forward is not enough).",
        f"  profile       {profile} in {profiles_path} (your Prefect home; not activated):",
        f"                  PREFECT_PROFILE={profile} {prefect_cli} flow-run ls",
        f"                  {prefect_cli} profile use {profile}      # to make it your default",
        f"  flow run      {flow_run_url}",
        f"  schedule      {EXAMPLE_ENTRYPOINT} (examples/flows) every {SCHEDULE_SECONDS // 60} minutes, "
        "run by the worker on the host",
    ]
    if results:
        lines.append(f"  results       in bucket {bucket} at {s3_endpoint_url} (moto: kept in memory):")
        lines += [
            f"                  s3://{bucket}/{key}  ({size} bytes, {what})" for what, (key, size) in results.items()
        ]
    lines += [f"  host shell    {ssh_command}", "  stop it all   make demo-down"]
    return lines


def relative_to_cwd(path: Path) -> str:
    """`path` as typed from the current directory, when it is below it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def check_results(services: Mapping[str, str], keys: Mapping[str, str]) -> dict[str, tuple[str, int]]:
    """(key, size) of each result object, read back with the stack's own key: proof they landed."""
    import boto3
    from botocore.exceptions import ClientError

    client = boto3.client(
        "s3",
        endpoint_url=services["s3_endpoint_url"],
        region_name=services["region"],
        aws_access_key_id=services["access_key_id"],
        aws_secret_access_key=services["secret_access_key"],
    )
    found = {}
    for what, key in keys.items():
        try:
            found[what] = (key, client.head_object(Bucket=services["bucket"], Key=key)["ContentLength"])
        except ClientError as exc:
            raise DemoError(
                f"The result of {what} is not in the bucket: HEAD s3://{services['bucket']}/{key} "
                f"answered {exc.response['Error']['Code']}."
            ) from None
    return found
