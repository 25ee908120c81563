"""Exceptions shared by the service, the worker and the command line."""


class TrainhookError(Exception):
    """Base class of errors that carry a message meant for a person."""


class ConfigError(TrainhookError):
    """Settings or the repositories file are wrong; the message names what and where.

    `problems` holds each problem on its own (one line each), so that errors found in
    several places can be reported together."""

    def __init__(self, message: str, *, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems: list[str] = list(problems) if problems else [message]


class DatabaseUnavailable(TrainhookError):
    """The database could not be reached; callers answer 503 and store nothing."""


class StageFailed(TrainhookError):
    """A pipeline stage failed for a reason that retrying will not fix."""
