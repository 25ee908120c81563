"""Exceptions shared by the service, the worker and the command line."""


class TrainhookError(Exception):
    """Base class of errors that carry a message meant for a person."""


class ConfigError(TrainhookError):
    """Settings or the repositories file are wrong; the message names what and where."""


class DatabaseUnavailable(TrainhookError):
    """The database could not be reached; callers answer 503 and store nothing."""


class StageFailed(TrainhookError):
    """A pipeline stage failed for a reason that retrying will not fix."""
