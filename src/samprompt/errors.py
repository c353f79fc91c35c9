"""Exceptions raised by samprompt.

Every error a user can cause derives from :class:`SampromptError`, so callers can catch one type.
Messages name the offending file, sample or value and say what was expected.
"""

from __future__ import annotations


class SampromptError(Exception):
    """Base class of every error samprompt raises on purpose.

    Examples
    --------
    >>> from samprompt import SampromptError, load_sam
    >>> try:
    ...     load_sam("no-such-file.pth")
    ... except SampromptError as error:
    ...     print(str(error).split(":")[0])
    no-such-file.pth
    """


class CheckpointError(SampromptError):
    """A SAM checkpoint or saved model could not be loaded (missing, corrupt, wrong architecture).

    Examples
    --------
    >>> from samprompt import CheckpointError, load_sam
    >>> try:
    ...     load_sam("random:vit_z")
    ... except CheckpointError as error:
    ...     print(error)
    unknown SAM variant 'vit_z'; expected one of ['litemedsam', 'tiny', 'vit_b', 'vit_h', 'vit_l']
    """


class CheckpointMismatchError(CheckpointError):
    """A saved decoder was trained on another base checkpoint than the one given.

    Examples
    --------
    >>> from samprompt import CheckpointError, CheckpointMismatchError
    >>> issubclass(CheckpointMismatchError, CheckpointError)
    True
    """


class DatasetError(SampromptError):
    """A dataset folder holds unreadable, mismatched or non-binary files.

    Examples
    --------
    >>> from samprompt.data import FolderDataset
    >>> try:
    ...     FolderDataset("missing-folder")
    ... except DatasetError as error:
    ...     print(error)
    missing-folder/images: folder not found
    """


class PromptError(SampromptError):
    """A prompt is malformed, or a strategy cannot build one for a sample.

    Examples
    --------
    >>> from samprompt import Prompt
    >>> try:
    ...     Prompt((10, 10), boxes=[[0, 0, 20, 5]])
    ... except PromptError as error:
    ...     print(error)
    boxes not inside the 10x10 image or not XYXY: [[0.0, 0.0, 20.0, 5.0]]
    """


class PluginError(SampromptError):
    """A prompt-strategy plugin is unknown, duplicated or failed to load.

    Examples
    --------
    >>> from samprompt import get_strategy
    >>> try:
    ...     get_strategy("no-such-strategy")
    ... except PluginError as error:
    ...     print(str(error).split(";")[0])
    unknown prompt strategy 'no-such-strategy'
    """


class ConfigError(SampromptError, ValueError):
    """A configuration value is out of range or inconsistent.

    Examples
    --------
    >>> from samprompt import FinetuneConfig
    >>> try:
    ...     FinetuneConfig(batch_size=0)
    ... except ConfigError as error:
    ...     print(error)
    batch_size must be > 0, got 0
    """


class RunFolderError(SampromptError):
    """An output folder cannot be used: it is a file, not writable, or holds another run.

    Examples
    --------
    >>> issubclass(RunFolderError, SampromptError)
    True
    """


class TrainingDivergedError(SampromptError):
    """Training produced a non-finite loss or non-finite weights; nothing was saved from it.

    Examples
    --------
    >>> issubclass(TrainingDivergedError, SampromptError)
    True
    """


class RandomWeightsWarning(UserWarning):
    """Warns that a SAM model has random weights, so its results mean nothing about SAM.

    Examples
    --------
    >>> import warnings
    >>> from samprompt import load_sam
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     _ = load_sam("random:tiny")
    >>> any(issubclass(w.category, RandomWeightsWarning) for w in caught)
    True
    """
