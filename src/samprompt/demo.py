"""``samprompt demo``: the whole path (fit → threshold sweep → evaluate → report) on phantoms."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import attrs

from samprompt.config import FinetuneConfig
from samprompt.data.phantoms import make_phantoms
from samprompt.data.splits import train_val_test_split
from samprompt.embeddings import EmbeddingCache
from samprompt.errors import RandomWeightsWarning
from samprompt.evaluate import score_with_prior
from samprompt.finetune import Finetuner
from samprompt.model import load_sam
from samprompt.plugins import get_strategy
from samprompt.report import plot_learning_curve, plot_overlays, write_metrics

__all__ = ["run_demo"]

#: A random decoder on a short budget wants a large step; real checkpoints use the paper's 1e-5.
DEMO_LR = 1e-3


def run_demo(
    out: Path, *, epochs: int = 8, n_images: int = 40, progress: bool = True
) -> dict[str, float]:
    """Run the demo into ``out`` and return its headline numbers."""
    tick = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    print(
        "samprompt demo: synthetic chest phantoms, SAM 'tiny' with RANDOM weights (no real weights "
        "needed; the numbers show the pipeline works, not how good SAM is)"
    )
    data = make_phantoms(n_images, 128, seed=0)
    split = train_val_test_split(len(data), (0.6, 0.2, 0.2), seed=0)
    train, val, test = data.subset(split.train), data.subset(split.val), data.subset(split.test)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        model = load_sam("random:tiny")
    cache = EmbeddingCache(out / "cache", progress=progress)
    config = FinetuneConfig(epochs=epochs, lr=DEMO_LR, batch_size=8)
    tuner = Finetuner(
        model,
        get_strategy("mean-points"),
        config,
        cache=cache,
        out_dir=out / "model",
        progress=progress,
    )
    result = tuner.fit(train, val)
    scores, prior, metrics = score_with_prior(result.segmenter, train, test, "low")
    write_metrics(
        out,
        metrics,
        "samprompt demo (random weights, synthetic phantoms)",
        [
            "RANDOM WEIGHTS: these numbers are not meaningful about SAM",
            f"{len(train)} train / {len(val)} val / {len(test)} test phantoms, {epochs} epochs, lr {DEMO_LR}",
            f"threshold {result.threshold} chosen on validation; evaluated in the 256x256 low-res frame",
        ],
    )
    plot_learning_curve(
        [attrs.asdict(r) for r in result.history],
        out / "learning_curve.png",
        "Demo learning curve (mean-points prompts)",
    )
    ranked = sorted(zip(scores.per_image, test, strict=True), key=lambda pair: pair[0].f1)
    picks = ranked[:2] + ranked[-2:]
    masks = {i: m for i, m in result.segmenter.predict_masks(test)}
    plot_overlays(
        [(s.id, smp.image, smp.require_mask(), masks[s.id], s.f1) for s, smp in picks],
        out / "overlays.png",
        "Worst two and best two test phantoms",
    )
    seconds = time.perf_counter() - tick
    print(
        f"\ntest F1 {scores.f1_mean:.3f} ± {scores.f1_std:.3f} (mean-mask prior {prior.f1_mean:.3f}), "
        f"IoU {scores.iou_mean:.3f}; {seconds:.0f} s"
    )
    print(f"outputs in {out.resolve()}:")
    for name in (
        "summary.md",
        "metrics.json",
        "learning_curve.png",
        "overlays.png",
        "model/model.json",
        "model/decoder.safetensors",
    ):
        print(f"  {out / name}")
    return {"f1_mean": scores.f1_mean, "prior_f1_mean": prior.f1_mean, "seconds": seconds}
