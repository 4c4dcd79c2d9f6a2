"""--param: KEY=VALUE pairs from the command line, and their check against the flow's signature."""

from __future__ import annotations

import json
import logging
from typing import Any

from prefect_host.console import shown
from prefect_host.deploy.request import DeployError


def parse_params(items: list[str]) -> dict[str, Any]:
    """The --param values: JSON when they parse, else the string as given. A message names the KEY, never
    the VALUE (which may be long, or a secret)."""
    parameters: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise DeployError(f"--param {shown(item, 60)}: expected KEY=VALUE with KEY a parameter name.")
        if not key.isidentifier():
            raise DeployError(f"--param {shown(key, 60)}=...: KEY must be a parameter name (a Python identifier).")
        if key in parameters:
            raise DeployError(f"--param {key}: given twice.")
        try:
            parameters[key] = json.loads(raw)
        except (ValueError, RecursionError):  # not JSON, or JSON Python will not hold (5000 digits, 10000 levels)
            parameters[key] = raw
    return parameters


def check_parameters(flow, parameters: dict[str, Any]) -> None:
    """Prefect's own validation (pydantic against the annotations), before anything is written."""
    import inspect

    from prefect.exceptions import ParameterTypeError

    signature = inspect.signature(flow.fn)
    known = ", ".join(f"{p.name}: {_annotation(p)}" for p in signature.parameters.values()) or "none"
    unknown = sorted(set(parameters) - set(signature.parameters))
    if unknown:
        raise DeployError(
            f"--param {', '.join(unknown)}: flow {flow.name!r} has no such parameter; "
            f"its parameters are {known}. Nothing was uploaded or deployed."
        )
    flow_logger = logging.getLogger("prefect.flows")
    flow_logger.disabled = True  # Prefect logs the failure too; the error below says it once
    try:
        flow.validate_parameters(parameters)
    except ParameterTypeError as exc:
        problems = "; ".join(line.strip(" -") for line in str(exc).splitlines()[1:]) or str(exc)
        raise DeployError(
            f"--param: flow {flow.name!r} refuses these parameters: {_clip(problems, 500)} (given "
            f"{_clip(json.dumps(parameters), 200)}; its parameters are {known}). Nothing was uploaded "
            "or deployed."
        ) from None
    finally:
        flow_logger.disabled = False


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def _annotation(parameter) -> str:
    import inspect

    if parameter.annotation is inspect.Parameter.empty:
        return "any"
    text = getattr(parameter.annotation, "__name__", None) or str(parameter.annotation)
    return text if parameter.default is inspect.Parameter.empty else f"{text} = {parameter.default!r}"
