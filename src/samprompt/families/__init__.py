"""Model families: each builds its SAM, recognises its checkpoints and owns its preprocessing.

Built in: ``vit`` (official SAM vit_b/l/h and a CPU-sized ``tiny``) and ``litemedsam``. Plugins
add more through the ``samprompt_model_families`` hook (see :mod:`samprompt.hookspecs`).
"""

from samprompt.families.base import ModelFamily, NamedCheckpoint, Preprocessing, sam_with_encoder
from samprompt.families.litemedsam import LiteMedSAMFamily
from samprompt.families.vit import ViTFamily

__all__ = [
    "LiteMedSAMFamily",
    "ModelFamily",
    "NamedCheckpoint",
    "Preprocessing",
    "ViTFamily",
    "sam_with_encoder",
]
