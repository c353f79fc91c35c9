"""``learned`` and ``refine``: prompts a deployment can make from the image alone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from scipy import ndimage

from samprompt import (
    EmbeddingCache,
    FinetuneConfig,
    Finetuner,
    LoadedSam,
    Sample,
    get_strategy,
    load_sam,
)
from samprompt.cli import main
from samprompt.data import SampleList, make_phantoms
from samprompt.decoder import decode_low_res
from samprompt.errors import CheckpointError, ConfigError
from samprompt.interop import PromptedPredictor
from samprompt.onnx_export import export_onnx
from samprompt.passes import decode_passes
from samprompt.prompts.refine import boxes_from_logits
from samprompt.saved import save_sam_model
from samprompt.segmenter import SamSegmenter
from tests.conftest import load_example


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2 * (a & b).sum() / total)


def _blind(samples: SampleList, junk: bool) -> SampleList:
    """The same images with no mask, or with a mask that has nothing to do with the target."""
    out = []
    for s in samples:
        mask = np.zeros(s.size, bool)
        if junk:
            mask[: s.size[0] // 3, : s.size[1] // 4] = True
        out.append(Sample(s.id, s.image, mask if junk else None))
    return SampleList(out)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two short runs on phantoms: learned (with a mask prior), and refine over learned."""
    root = tmp_path_factory.mktemp("learned")
    data = make_phantoms(14, 96, seed=4)
    cache = EmbeddingCache(root / "cache", progress=False)
    runs = {}
    for name, params in (
        ("learned", {"mask_prior": True, "extra_tokens": 1}),
        ("refine", {"passes": 1}),
    ):
        config = FinetuneConfig(epochs=2, lr=1e-3, batch_size=4, thresholds=(0.5,))
        tuner = Finetuner(
            load_sam("random:tiny"), get_strategy(name, **params), config, cache=cache,
            out_dir=root / name, progress=False,
        )  # fmt: skip
        tuner.fit(data[:9], data[9:11])
        runs[name] = root / name
    runs["cache"] = root / "cache"
    return runs


def test_gradients_reach_the_learned_prompt_and_the_decoder_only(tiny: LoadedSam) -> None:
    strategy = get_strategy("learned", mask_prior=True, extra_tokens=2)
    data = make_phantoms(3, 64, seed=1)
    strategy.fit(data)
    tokens = strategy.prompt_tokens(tiny.sam)
    prompts = [strategy.inference_prompt(s) for s in data]
    logits = decode_passes(tiny.sam, torch.randn(3, 256, 64, 64), data, prompts, strategy,
                           tokens=tokens)[-1]  # fmt: skip
    logits.sum().backward()
    assert tokens.sparse.grad is not None and tokens.sparse.grad.abs().sum() > 0
    assert tokens.mask_logits is not None and tokens.mask_logits.grad is not None
    assert tokens.mask_logits.grad.abs().sum() > 0
    assert any(p.grad is not None for p in tiny.sam.mask_decoder.parameters())
    frozen = [*tiny.sam.image_encoder.parameters(), *tiny.sam.prompt_encoder.parameters()]
    assert all(p.grad is None for p in frozen)


def test_fine_tuning_moves_the_prompt_with_the_decoder_and_nothing_else(tmp_path: Path) -> None:
    model = load_sam("random:tiny")
    before = {k: v.clone() for k, v in model.sam.state_dict().items()}
    strategy = get_strategy("learned")
    data = make_phantoms(10, 64, seed=2)
    tuner = Finetuner(model, strategy, FinetuneConfig(epochs=1, lr=1e-3, batch_size=4),
                      cache=EmbeddingCache(tmp_path / "c", progress=False), progress=False)  # fmt: skip
    strategy.fit(data[:7])
    initial = strategy.prompt_tokens(model.sam).sparse.detach().clone()
    tuner.fit(data[:7], data[7:])
    after = model.sam.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("mask_decoder.") for k in changed)
    assert not torch.equal(strategy.prompt_tokens(model.sam).sparse.detach(), initial)


def test_learned_prompt_round_trips_through_save_load_and_pth_export(
    trained: dict[str, Path], tmp_path: Path
) -> None:
    cache = EmbeddingCache(trained["cache"], progress=False)
    meta = json.loads((trained["learned"] / "model.json").read_text())
    assert "prompt_weights_sha256" in meta
    saved = load_file(trained["learned"] / "prompt.safetensors")
    assert set(saved) == {"sparse", "mask_logits"} and saved["sparse"].shape == (3, 256)
    images = make_phantoms(3, 96, seed=8)
    loaded = Finetuner.load(trained["learned"], cache=cache)
    expected = dict(loaded.predict_masks(_blind(images, junk=False)))
    assert any(m.any() for m in expected.values())
    out = tmp_path / "model.pth"
    assert main(["export", "--model", str(trained["learned"]), "--out", str(out)]) == 0
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["prompts"] is None and len(side["learned_prompt"]["sparse_embeddings"]) == 3
    tokens = torch.tensor(side["learned_prompt"]["sparse_embeddings"])
    assert torch.equal(tokens, saved["sparse"])
    predictor = PromptedPredictor(loaded)
    for sample in images:
        predictor.set_image(sample.image)
        assert _dice(predictor.predict(), expected[sample.id]) >= 0.999


def test_a_changed_prompt_file_is_refused(trained: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(trained["learned"], copy)
    tensors = load_file(copy / "prompt.safetensors")
    tensors["sparse"] = tensors["sparse"] + 1
    from safetensors.torch import save_file

    save_file(tensors, copy / "prompt.safetensors")
    with pytest.raises(CheckpointError, match=r"prompt\.safetensors: is not the file"):
        Finetuner.load(copy)


def test_learned_onnx_decoder_takes_only_the_image(
    trained: dict[str, Path], tmp_path: Path
) -> None:
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    out = tmp_path / "onnx"
    assert main(["export", "--format", "onnx", "--model", str(trained["learned"]), "--out",
                 str(out)]) == 0  # fmt: skip
    session = ort.InferenceSession(str(out / "decoder.onnx"))
    assert [i.name for i in session.get_inputs()] == ["image_embeddings", "orig_size"]
    meta = json.loads((out / "export.json").read_text())
    assert meta["decoder_inputs"] == ["image_embeddings", "orig_size"]
    cache = EmbeddingCache(trained["cache"], progress=False)
    segmenter = Finetuner.load(trained["learned"], cache=cache)
    images = make_phantoms(2, (96, 80), seed=9)
    index = cache.embed(segmenter.model, images)
    for position, (sample, (_, expected)) in enumerate(
        zip(images, segmenter.predict_masks(images), strict=True)
    ):
        embedding = index.load([position], "cpu").numpy()
        _, mask = session.run(None, {"image_embeddings": embedding,
                                     "orig_size": np.array(sample.size, np.int64)})  # fmt: skip
        assert _dice(mask, expected) >= 0.999


def test_refine_with_no_passes_is_its_first_strategy(trained: dict[str, Path]) -> None:
    cache = EmbeddingCache(trained["cache"], progress=False)
    refined = Finetuner.load(trained["refine"], cache=cache)
    images = make_phantoms(3, 96, seed=10)
    first = SamSegmenter(refined.model, refined.strategy.inner, cache)  # type: ignore[attr-defined]
    refined.passes = 0
    for a, b in zip(refined.predict_proba(images), first.predict_proba(images), strict=True):
        assert np.array_equal(a, b)
    refined.passes = None
    later = list(refined.predict_proba(images))
    earlier = list(first.predict_proba(images))
    assert any(not np.array_equal(a, b) for a, b in zip(later, earlier, strict=True))


def test_refine_strategy_with_zero_passes_equals_mean_points(
    tiny: LoadedSam, tmp_path: Path
) -> None:
    data = make_phantoms(6, 64, seed=3)
    cache = EmbeddingCache(tmp_path, progress=False)
    refine = get_strategy("refine", first="mean-points", passes=0)
    points = get_strategy("mean-points")
    refine.fit(data[:4])
    points.fit(data[:4])
    a = list(SamSegmenter(tiny, refine, cache).predict_proba(data[4:]))
    b = list(SamSegmenter(tiny, points, cache).predict_proba(data[4:]))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("name", ["learned", "refine"])
def test_no_inference_path_reads_a_mask(trained: dict[str, Path], name: str) -> None:
    """Predictions are the same with no mask and with a junk mask: nothing reads one."""
    segmenter = Finetuner.load(
        trained[name], cache=EmbeddingCache(trained["cache"], progress=False)
    )
    assert not segmenter.strategy.needs_mask_at_inference
    images = make_phantoms(3, 96, seed=11)
    none = list(segmenter.predict_proba(_blind(images, junk=False), resolution="original"))
    junk = list(segmenter.predict_proba(_blind(images, junk=True), resolution="original"))
    assert all(np.array_equal(a, b) for a, b in zip(none, junk, strict=True))


def test_refinement_boxes_come_back_in_the_image_frame() -> None:
    logits = np.full((256, 256), -5.0, np.float32)
    logits[32:64, 16:48] = 5.0  # a 512 x 256 image: low-res pixel = 2 image pixels
    logits[100:110, 100:104] = 5.0
    boxes = boxes_from_logits(logits, (512, 256), max_boxes=1, min_fraction=0.0)
    np.testing.assert_allclose(boxes, [[32.0, 64.0, 95.0, 127.0]])
    logits[:, 128:] = 5.0  # outside the 256-pixel-wide image: ignored
    assert len(boxes_from_logits(logits, (512, 256), 3, 0.0)) == 2
    assert boxes_from_logits(np.full((256, 256), -1.0), (64, 64), 3, 0.0).shape == (0, 4)


def test_bad_learned_and_refine_parameters_are_one_line() -> None:
    with pytest.raises(ConfigError, match="extra_tokens"):
        get_strategy("learned", extra_tokens=-1)
    with pytest.raises(ConfigError, match="reads the ground-truth mask"):
        get_strategy("refine", first="perturbed-box")
    with pytest.raises(ConfigError, match="passes"):
        get_strategy("refine", passes=-1)
    with pytest.raises(ConfigError, match="not fitted"):
        get_strategy("learned").prompt_tokens(load_sam("random:tiny").sam)


def _refine_over_mean_points(root: Path) -> Path:
    """A refine model over mean-points without the mask input (decoder nudged off the base)."""
    model = load_sam("random:tiny")
    strategy = get_strategy("refine", first="mean-points", passes=2, use_mask=False)
    strategy.fit(make_phantoms(6, 96, seed=2))
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.sam.mask_decoder.parameters():
            p.add_(0.01 * torch.randn_like(p))
    save_sam_model(root / "refine_points", model, strategy, threshold=0.5, config={})
    return root / "refine_points"


@pytest.mark.parametrize("variant", ["learned+mask", "mean-points"])
def test_refine_onnx_export_runs_the_passes_like_predict(
    variant: str, trained: dict[str, Path], tmp_path: Path
) -> None:
    """decoder.onnx + refine.onnx + the example's pass loop (numpy/scipy, no samprompt) give
    predict's masks, every pass included."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    run = trained["refine"] if variant == "learned+mask" else _refine_over_mean_points(tmp_path)
    export_onnx(run, tmp_path / "onnx", image_sizes=[(96, 96), (96, 80)])
    meta = json.loads((tmp_path / "onnx" / "export.json").read_text())
    assert set(meta["files"]) == {"decoder.onnx", "refine.onnx", "encoder.onnx"}
    assert meta["decoder_outputs"] == ["logits", "mask", "low_res"]
    assert ("mask_input" in meta["refine"]["inputs"]) == (variant == "learned+mask")
    outside = load_example("onnx_runtime").OnnxSegmenter(tmp_path / "onnx")
    cache = EmbeddingCache(trained["cache"], progress=False)
    segmenter = Finetuner.load(run, cache=cache)
    narrow = [
        Sample(f"narrow_{s.id}", s.image, s.mask) for s in make_phantoms(2, (96, 80), seed=13)
    ]
    images = [*make_phantoms(3, 96, seed=12), *narrow]
    first = SamSegmenter(segmenter.model, segmenter.strategy.inner, cache)  # type: ignore[attr-defined]
    changed = 0
    for sample, (_, expected), (_, first_mask) in zip(
        images, segmenter.predict_masks(images), first.predict_masks(images), strict=True
    ):
        _, mask = outside.segment(sample.image)
        assert _dice(mask, expected) >= 0.999, sample.id
        changed += int(_dice(first_mask, expected) < 0.999)
    assert changed > 0  # the passes changed some masks, so the loop was tested


def test_refine_onnx_pass_with_nothing_found_takes_the_first_prompt(
    trained: dict[str, Path], tmp_path: Path
) -> None:
    """Where the previous pass found nothing, refine.onnx gets the learned first prompt (no
    points: a (1, 0, 2) input) and the mask input, as samprompt's own pass does."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    export_onnx(trained["refine"], tmp_path / "onnx", encoder=False)
    session = ort.InferenceSession(str(tmp_path / "onnx" / "refine.onnx"))
    segmenter = Finetuner.load(trained["refine"])
    sam, tokens = segmenter.model.sam, segmenter.tokens
    sample = make_phantoms(1, 96, seed=14)[0]
    embeddings = torch.randn(1, 256, 64, 64)
    previous = np.full((1, 1, 256, 256), -3.0, np.float32)
    prompt = segmenter.strategy.refine_prompt(sample, previous[0, 0])  # type: ignore[attr-defined]
    assert prompt.boxes is None and prompt.points is None
    with torch.no_grad():
        expected = decode_low_res(sam, embeddings, [prompt], tokens=tokens).numpy()
    _, _, low_res = session.run(None, {
        "image_embeddings": embeddings.numpy(), "point_coords": np.zeros((1, 0, 2), np.float32),
        "point_labels": np.zeros((1, 0), np.float32), "orig_size": np.array([96, 96], np.int64),
        "mask_input": previous,
    })  # fmt: skip
    np.testing.assert_allclose(low_res, expected, atol=1e-4)


def test_refine_onnx_example_boxes_are_samprompts() -> None:
    """The example's numpy box recipe equals samprompt's boxes_from_logits."""
    rng = np.random.default_rng(3)
    for size in [(96, 96), (512, 256), (100, 300)]:
        logits = rng.normal(size=(256, 256)).astype(np.float32)
        logits = ndimage.uniform_filter(logits, 25) * 10
        for max_boxes, fraction in [(1, 0.0), (3, 0.05), (8, 0.2)]:
            ours = boxes_from_logits(logits, size, max_boxes, fraction)
            theirs = load_example("onnx_runtime").predicted_boxes(logits, size, max_boxes, fraction)
            assert len(ours) > 0
            np.testing.assert_allclose(theirs, ours)


def test_the_sidecar_recipe_reproduces_predict_with_official_modules(
    trained: dict[str, Path], tmp_path: Path
) -> None:
    """What the sidecar's learned_prompt.use says, done with segment_anything's own modules on the
    exported .pth, gives the masks of samprompt predict."""
    from segment_anything import SamPredictor

    from samprompt.model import build_sam

    out = tmp_path / "model.pth"
    assert main(["export", "--model", str(trained["learned"]), "--out", str(out)]) == 0
    side = json.loads(out.with_suffix(".json").read_text())
    sam = build_sam("tiny")
    sam.load_state_dict(torch.load(out, weights_only=True))
    sam.eval()
    learned = side["learned_prompt"]
    sparse = torch.tensor(learned["sparse_embeddings"])[None]
    mask_logits = torch.tensor(learned["mask_logits"])[None, None]
    segmenter = Finetuner.load(trained["learned"], cache=EmbeddingCache(trained["cache"]))
    images = make_phantoms(2, (96, 72), seed=12)
    predictor = SamPredictor(sam)
    for sample, (_, expected) in zip(images, segmenter.predict_masks(images), strict=True):
        predictor.set_image(np.repeat(sample.image[..., None], 3, axis=2))
        with torch.no_grad():
            dense = sam.prompt_encoder.mask_downscaling(mask_logits)
            low_res, _ = sam.mask_decoder(predictor.features, sam.prompt_encoder.get_dense_pe(),
                                          sparse, dense, multimask_output=False)  # fmt: skip
            logits = sam.postprocess_masks(low_res, predictor.input_size, predictor.original_size)
        mask = logits[0, 0].numpy() >= side["threshold"]["logit"]
        assert expected.any() and _dice(mask, expected) >= 0.999
