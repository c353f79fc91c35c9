"""Write a prompt strategy and use it by name, like a built-in.

For a package other projects install, put the class in a module and declare it under the
``samprompt`` entry-point group of its ``pyproject.toml``; ``plugins/samprompt-grid`` is a
complete example. In a notebook or script, ``register_plugin`` does the same at run time.
"""

import numpy as np

from samprompt import BaseStrategy, Prompt, Sample, get_strategy, list_strategies
from samprompt.data import low_res_target, make_phantoms
from samprompt.hookspecs import hookimpl
from samprompt.plugins import register_plugin


class CentroidPoint(BaseStrategy):
    """One foreground point at the centroid of the training mean mask (never reads test masks)."""

    name = "centroid-point"
    needs_mask_at_inference = False

    def __init__(self) -> None:
        self.unit_xy: list[float] | None = None

    def fit(self, train):  # type: ignore[no-untyped-def]
        # Masks of any size, resampled to one 64x64 grid, so mixed image sizes average fine.
        masks = [low_res_target(s.require_mask(), 64) for s in train]
        ys, xs = np.nonzero(np.mean(masks, axis=0) >= 0.5)
        self.unit_xy = [(xs.mean() + 0.5) / 64, (ys.mean() + 0.5) / 64]

    def inference_prompt(self, sample: Sample) -> Prompt:
        h, w = sample.size
        x, y = self.unit_xy[0] * w - 0.5, self.unit_xy[1] * h - 0.5  # type: ignore[index]
        return Prompt((h, w), points=[[x, y]], point_labels=[1])

    def fitted_state(self):  # type: ignore[no-untyped-def]
        return {"unit_xy": self.unit_xy}

    def load_fitted(self, fitted):  # type: ignore[no-untyped-def]
        self.unit_xy = fitted.get("unit_xy")


class Plugin:
    @hookimpl
    def samprompt_prompt_strategies(self):  # type: ignore[no-untyped-def]
        return [CentroidPoint]


register_plugin(Plugin(), source="examples/custom_plugin.py")
print("installed strategies:", ", ".join(list_strategies()))
strategy = get_strategy("centroid-point")
small, large = make_phantoms(4, 96, seed=0), make_phantoms(4, (128, 112), seed=1)
data = [*small, *(Sample(f"{s.id}-large", s.image, s.mask) for s in large)]  # mixed sizes
strategy.fit(data[:6])
print("prompt for a test image:", strategy.inference_prompt(data[7]).points.round(1).tolist())
