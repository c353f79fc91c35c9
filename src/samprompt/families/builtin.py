"""The built-in model families, registered like any plugin's."""

from __future__ import annotations

from collections.abc import Sequence

from samprompt.families.base import ModelFamily
from samprompt.families.litemedsam import LiteMedSAMFamily
from samprompt.families.vit import ViTFamily
from samprompt.markers import hookimpl


@hookimpl
def samprompt_model_families() -> Sequence[ModelFamily]:
    """``vit`` (vit_b, vit_l, vit_h, tiny) and ``litemedsam``."""
    return [ViTFamily(), LiteMedSAMFamily()]
