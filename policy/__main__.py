"""Entry point of the policy pack, run by `pulumi preview --policy-pack policy`.

The CLI's Python analyzer runs this directory with runpy from inside it, so `rules` is a top-level module
here (elsewhere it is `policy.rules`). PolicyPack starts the gRPC server and blocks: nothing else belongs here.
"""

from pulumi_policy import EnforcementLevel, PolicyPack

import rules

PolicyPack(name="prefect-host-security", enforcement_level=EnforcementLevel.MANDATORY, policies=rules.ALL)
