"""The ModelforgeError tree: every error a user can act on is one of these.

The CLI prints ``str(error)`` as a single line and exits with code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class ModelforgeError(Exception):
    """Base class: the message says what went wrong, where, and how to fix it."""


class ConfigError(ModelforgeError):
    """A recipe, an override or a model keyword is invalid."""


class RegistryError(ModelforgeError):
    """An unknown or duplicate registry name, or a keyword the builder does not take."""


class DataError(ModelforgeError):
    """A dataset, file or input cannot be read or is malformed."""


class MissingDependencyError(ModelforgeError):
    """An embedded dataset or optional system tool is not installed; the message names the install command."""


class ArtifactError(ModelforgeError):
    """A run directory, checkpoint or model artifact is missing, truncated or corrupt."""


class TrainingError(ModelforgeError):
    """Training cannot continue (e.g. the loss diverged)."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (or its type name): what a one-line error quotes from a library."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__
