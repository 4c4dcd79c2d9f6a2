"""The profile step as a child process (`python -m prefect_host.profile`): it imports Prefect once
and answers the bootstrap's requests, one JSON line each."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict

from prefect_host.errors import PrefectHostError, ProfileError
from prefect_host.profile.blocks import register_storage_blocks
from prefect_host.profile.ca import store_ca
from prefect_host.profile.check import write_and_check
from prefect_host.profile.write import check_profiles_file

ANSWER_PREFIX = "prefect-host-answer "
_OPERATIONS = {
    "store_ca": lambda request: store_ca(**request),
    "profile": lambda request: asdict(write_and_check(**request)),
    "register_storage_blocks": lambda request: register_storage_blocks(**request),
}


def serve() -> int:
    """`python -m prefect_host.profile`: import Prefect at once, then answer requests, one JSON
    object per stdin line ({"op": ..., arguments}; the auth string and keys must not be on a command
    line), each with one stdout line: ANSWER_PREFIX and {"result": ...} or {"error": ...}. Ends at
    the end of stdin. With an unreadable or invalid profiles file (on which Prefect's import fails) every
    answer is that error."""
    try:
        check_profiles_file()
        unusable = None
    except PrefectHostError as exc:
        unusable = str(exc)
    if unusable is None:
        import prefect.client.orchestration  # noqa: F401  the slow part, done while the parent works

    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        operation = _OPERATIONS[request.pop("op")]
        try:
            if unusable is not None:
                raise ProfileError(unusable)
            answer = {"result": operation(request)}
        except PrefectHostError as exc:
            answer = {"error": str(exc)}
        print(ANSWER_PREFIX + json.dumps(answer), flush=True)
    return 0
