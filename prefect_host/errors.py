"""User-facing errors: one clear paragraph, never a traceback."""


class PrefectHostError(Exception):
    """An error the user can act on. The message names the setting and what is allowed."""


class OutputsError(PrefectHostError):
    """The stack outputs are missing, malformed or incomplete."""
