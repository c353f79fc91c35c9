"""Exceptions raised by samprompt.

Every error a user can cause derives from :class:`SampromptError`, so callers can catch one type.
Messages name the offending file, sample or value and say what was expected.
"""

from __future__ import annotations


class SampromptError(Exception):
    """Base class of every error samprompt raises on purpose."""


class CheckpointError(SampromptError):
    """A SAM checkpoint or saved model could not be loaded (missing, corrupt, wrong architecture)."""


class CheckpointMismatchError(CheckpointError):
    """A saved decoder was trained on another base checkpoint than the one given."""


class DatasetError(SampromptError):
    """A dataset folder holds unreadable, mismatched or non-binary files."""


class PromptError(SampromptError):
    """A prompt is malformed, or a strategy cannot build one for a sample."""


class PluginError(SampromptError):
    """A prompt-strategy plugin is unknown, duplicated or failed to load."""


class ConfigError(SampromptError, ValueError):
    """A configuration value is out of range or inconsistent."""


class RandomWeightsWarning(UserWarning):
    """Warns that a SAM model has random weights, so its results mean nothing about SAM."""
