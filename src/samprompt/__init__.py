"""samprompt: fine-tune only the mask decoder of Segment Anything (SAM) for binary medical
image segmentation, with prompt strategies as plugins.

>>> from samprompt import Finetuner, FinetuneConfig, Evaluator, get_strategy, load_sam

The names below are imported on first use (PEP 562), so ``import samprompt`` and the command
line's ``--help`` do not pay for PyTorch, segment_anything and MONAI until something needs them.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING, Any

from samprompt._version import __version__

if TYPE_CHECKING:
    from samprompt.allocator import keep_freed_memory
    from samprompt.config import FinetuneConfig
    from samprompt.data.sample import Dataset, Sample
    from samprompt.embeddings import EmbeddingCache
    from samprompt.errors import (
        CheckpointError,
        CheckpointMismatchError,
        ConfigError,
        DatasetError,
        PluginError,
        PromptError,
        RandomWeightsWarning,
        RunFolderError,
        SampromptError,
        TrainingDivergedError,
    )
    from samprompt.evaluate import EvalResult, Evaluator, SweepResult
    from samprompt.finetune import EpochRecord, Finetuner, FitResult
    from samprompt.model import LoadedSam, load_sam
    from samprompt.plugins import get_strategy, list_strategies
    from samprompt.prompts.prompt import Prompt
    from samprompt.prompts.strategy import BaseStrategy, PromptStrategy
    from samprompt.segmenter import MeanMaskPrior, SamSegmenter, Segmenter

#: Public name -> the module that defines it.
_EXPORTS = {
    "FinetuneConfig": "samprompt.config",
    "Dataset": "samprompt.data.sample",
    "Sample": "samprompt.data.sample",
    "EmbeddingCache": "samprompt.embeddings",
    "CheckpointError": "samprompt.errors",
    "CheckpointMismatchError": "samprompt.errors",
    "ConfigError": "samprompt.errors",
    "DatasetError": "samprompt.errors",
    "PluginError": "samprompt.errors",
    "PromptError": "samprompt.errors",
    "RandomWeightsWarning": "samprompt.errors",
    "RunFolderError": "samprompt.errors",
    "SampromptError": "samprompt.errors",
    "TrainingDivergedError": "samprompt.errors",
    "EvalResult": "samprompt.evaluate",
    "Evaluator": "samprompt.evaluate",
    "SweepResult": "samprompt.evaluate",
    "EpochRecord": "samprompt.finetune",
    "Finetuner": "samprompt.finetune",
    "FitResult": "samprompt.finetune",
    "LoadedSam": "samprompt.model",
    "load_sam": "samprompt.model",
    "get_strategy": "samprompt.plugins",
    "list_strategies": "samprompt.plugins",
    "Prompt": "samprompt.prompts.prompt",
    "BaseStrategy": "samprompt.prompts.strategy",
    "PromptStrategy": "samprompt.prompts.strategy",
    "MeanMaskPrior": "samprompt.segmenter",
    "SamSegmenter": "samprompt.segmenter",
    "Segmenter": "samprompt.segmenter",
    "keep_freed_memory": "samprompt.allocator",
}

__all__ = [
    "BaseStrategy",
    "CheckpointError",
    "CheckpointMismatchError",
    "ConfigError",
    "Dataset",
    "DatasetError",
    "EmbeddingCache",
    "EpochRecord",
    "EvalResult",
    "Evaluator",
    "FinetuneConfig",
    "Finetuner",
    "FitResult",
    "LoadedSam",
    "MeanMaskPrior",
    "PluginError",
    "Prompt",
    "PromptError",
    "PromptStrategy",
    "RandomWeightsWarning",
    "RunFolderError",
    "SamSegmenter",
    "Sample",
    "SampromptError",
    "Segmenter",
    "SweepResult",
    "TrainingDivergedError",
    "__version__",
    "get_strategy",
    "keep_freed_memory",
    "list_strategies",
    "load_sam",
]


def _submodules() -> set[str]:
    """The package's modules and subpackages, by name (``data``, ``training`` ...)."""
    return {m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is not None:
        value = getattr(importlib.import_module(module), name)
    elif name in _submodules():  # samprompt.data, samprompt.protocols ... as with scipy
        value = importlib.import_module(f"samprompt.{name}")
    else:
        raise AttributeError(f"module 'samprompt' has no attribute {name!r}")
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS, *_submodules()})
