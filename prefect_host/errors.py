"""User-facing errors: one clear paragraph, never a traceback."""


class PrefectHostError(Exception):
    """An error the user can act on. The message names the setting and what is allowed."""


class OutputsError(PrefectHostError):
    """The stack outputs are missing, malformed or incomplete."""


class UsageError(PrefectHostError):
    """A command-line flag has a value that is not allowed."""


class ConnectError(PrefectHostError):
    """The host did not accept an SSH session within the connect timeout."""


class HostKeyMismatch(PrefectHostError):
    """The host offered a different key than the pinned one; nothing was sent to it."""


class SudoError(PrefectHostError):
    """The SSH user cannot run commands through `sudo -n` (passwordless sudo)."""


class HostUnsupported(PrefectHostError):
    """The host lacks something the bootstrap needs (for example python3)."""


class CommandFailed(PrefectHostError):
    """A command on the host exited non-zero (or ran out of time)."""

    def __init__(self, label: str, exit_status: int | None, stderr_tail: str):
        self.label = label
        self.exit_status = exit_status
        self.stderr_tail = stderr_tail
        how = "ran out of time" if exit_status is None else f"exited with status {exit_status}"
        detail = f"; its last error output:\n{stderr_tail}" if stderr_tail.strip() else "."
        super().__init__(f"On the host, `{label}` {how}{detail}")


class VerifyError(PrefectHostError):
    """The server did not answer as a correctly configured one must."""


class ProfileError(PrefectHostError):
    """The laptop's Prefect profile could not be written or used."""
