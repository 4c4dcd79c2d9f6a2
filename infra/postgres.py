"""What the managed PostgreSQL databases of both clouds share: names, port, password and the URL Prefect uses.

Prefect's server connects with SQLAlchemy's asyncpg driver. SQLAlchemy hands the URL's query parameters to
`asyncpg.connect` as keyword arguments, so TLS is `ssl=require` (asyncpg's keyword; `sslmode=` would be refused),
and Prefect's own LISTEN/NOTIFY connection rewrites that `ssl` parameter to libpq's `sslmode`
(prefect/server/utilities/postgres_listener.py), so both of its connections encrypt. `require` encrypts without
verifying the server's certificate; both databases refuse connections without TLS on their side too (RDS's
rds.force_ssl, Cloud SQL's ENCRYPTED_ONLY).
"""

from __future__ import annotations

import urllib.parse

import pulumi
import pulumi_random as random

ENGINE_MAJOR_VERSION = 17
DB_NAME = "prefect"
DB_USER = "prefect"
PORT = 5432


def new_password(name: str, parent: pulumi.Resource) -> random.RandomPassword:
    """32 letters and digits (~190 bits): nothing in it needs quoting in a URL, an env file or a shell, and
    neither RDS (no /, @, " or space) nor Cloud SQL refuses any of them."""
    return random.RandomPassword(
        f"{name}-db-password", length=32, special=False, opts=pulumi.ResourceOptions(parent=parent)
    )


def database_url(password: str, host: str) -> str:
    """postgresql+asyncpg://prefect:<password>@<host>:5432/prefect?ssl=require (the password quoted, though a
    new_password() needs none)."""
    return f"postgresql+asyncpg://{DB_USER}:{urllib.parse.quote(password, safe='')}@{host}:{PORT}/{DB_NAME}?ssl=require"


def secret_url(password: pulumi.Output[str], host: pulumi.Input[str]) -> pulumi.Output[str]:
    return pulumi.Output.secret(pulumi.Output.all(password, host).apply(lambda values: database_url(*values)))
