"""Where a deployment's code lives: its folder in the bucket and the name of the S3Bucket block its pull step
names, both keyed by the flow's name AND the deployment's name.

The key is `<flow slug>-<deployment slug>-<hash>`: the slugs (lowercase letters, digits and dashes, each cut
at SLUG_MAX characters) are for people, the hash (the first HASH_LENGTH hex digits of SHA-256 over the two
names, JSON-encoded) tells apart what the slugs merge: `etl.v1`, `etl-v1` and `ETL_v1` share a slug, not a
key; two flows deployed as `prod` share neither. Should two pairs of names ever share a key, the manifest in
the folder names its owner and the sync refuses to touch another deployment's folder (upload.py).
"""

from __future__ import annotations

import hashlib
import json
import re

from prefect_host.storage import FLOWS_FOLDER

SLUG_MAX = 30
HASH_LENGTH = 10


def slug(text: str) -> str:
    """Lowercase letters and digits, any run of other characters as one dash; "x" when nothing is left."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:SLUG_MAX].strip("-") or "x"


def code_key(flow_name: str, deployment_name: str) -> str:
    digest = hashlib.sha256(json.dumps([flow_name, deployment_name]).encode()).hexdigest()[:HASH_LENGTH]
    return f"{slug(flow_name)}-{slug(deployment_name)}-{digest}"


def code_prefix(flow_name: str, deployment_name: str) -> str:
    """The deployment's folder in the bucket, without the trailing slash: flows/<key>."""
    return f"{FLOWS_FOLDER}/{code_key(flow_name, deployment_name)}"


def code_block_name(credentials_block_name: str, flow_name: str, deployment_name: str) -> str:
    """The code block's name: <credentials block>-flows-<key> (Prefect's rule: lowercase, digits, dashes)."""
    return f"{credentials_block_name}-flows-{code_key(flow_name, deployment_name)}"
