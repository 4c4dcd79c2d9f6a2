"""The Prefect server's basic-auth credentials (PREFECT_SERVER_API_AUTH_STRING on the server)."""

from __future__ import annotations

import pulumi
import pulumi_random as random

AUTH_USER = "admin"


class ServerCredentials(pulumi.ComponentResource):
    auth_string: pulumi.Output[str]

    def __init__(self, name: str, *, opts: pulumi.ResourceOptions | None = None):
        super().__init__("prefect-host:server_credentials:ServerCredentials", name, None, opts)
        # 32 letters and digits (~190 bits): no character needs quoting in a URL, a shell or an
        # EnvironmentFile, and the user:password split stays unambiguous.
        password = random.RandomPassword(
            f"{name}-password", length=32, special=False, opts=pulumi.ResourceOptions(parent=self)
        )
        self.auth_string = pulumi.Output.secret(password.result.apply(lambda pw: f"{AUTH_USER}:{pw}"))
        self.register_outputs({"authString": self.auth_string})
