"""Errors the user can act on, one type per kind of fix.

Every message is one line that names the setting to change or the action to take, and never holds a secret.
The command line prints `str(error)` and exits non-zero; anything that is not a `PipelineError` is a bug.
"""


class PipelineError(Exception):
    """A failure with a one-line, secret-free message meant for the person running the job."""


class ConfigurationError(PipelineError):
    """A setting is missing or malformed: fix `.dlt/config.toml`, `.dlt/secrets.toml` or the environment."""


class AuthenticationError(PipelineError):
    """The API refused the credentials or the account: fix the API key or account settings."""


class ApiRequestError(PipelineError):
    """The API refused the request as sent (400, 404, 409...): a setting or an id is wrong."""


class ApiUnavailableError(PipelineError):
    """The API kept failing (429, 5xx, timeouts, dropped connections) after every retry: try again later."""


class ApiResponseError(PipelineError):
    """The API answered with a body we cannot read faithfully: nothing from it is loaded."""


class ConcurrentRunError(PipelineError):
    """Another run of the same pipeline holds its lock: wait for it (two runs would share one state)."""


class DestinationBusyError(PipelineError):
    """Another process holds the destination (a DuckDB file open in a notebook): close it there and rerun."""
