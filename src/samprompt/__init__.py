"""samprompt: fine-tune only the mask decoder of Segment Anything (SAM) for binary medical
image segmentation, with prompt strategies as plugins.

>>> from samprompt import Finetuner, FinetuneConfig, Evaluator, get_strategy, load_sam
"""

from samprompt._version import __version__
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
    "list_strategies",
    "load_sam",
]
