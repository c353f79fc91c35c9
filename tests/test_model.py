from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from segment_anything import sam_model_registry

from samprompt import CheckpointError, load_sam
from samprompt.model import build_sam, detect_variant, load_decoder_weights, save_decoder_weights


def _trainable(sam: torch.nn.Module) -> set[str]:
    return {n for n, p in sam.named_parameters() if p.requires_grad}


def test_official_vit_b_state_dict_loads_and_is_detected(tmp_path: Path) -> None:
    torch.manual_seed(0)
    official = sam_model_registry["vit_b"]()
    path = tmp_path / "weights_without_a_telling_name.pth"
    torch.save(official.state_dict(), path)
    loaded = load_sam(path)
    assert loaded.variant == "vit_b"
    assert len(loaded.sha256) == 64 and not loaded.is_random
    for name, tensor in official.state_dict().items():
        assert torch.equal(loaded.sam.state_dict()[name], tensor), name
    assert _trainable(loaded.sam) == {
        f"mask_decoder.{n}" for n, _ in loaded.sam.mask_decoder.named_parameters()
    }


@pytest.mark.parametrize("wrap", ["model", "state_dict", "module", "model+module"])
def test_medsam_style_files_load(tmp_path: Path, wrap: str) -> None:
    sam = build_sam("tiny")
    state = sam.state_dict()
    if "module" in wrap:
        state = {f"module.{k}": v for k, v in state.items()}
    if wrap.startswith("model"):
        state = {"model": state, "epoch": 3}
    elif wrap == "state_dict":
        state = {"state_dict": state}
    path = tmp_path / "medsam.pth"
    torch.save(state, path)
    loaded = load_sam(path)
    assert loaded.variant == "tiny"
    assert torch.equal(loaded.sam.mask_decoder.iou_token.weight, sam.mask_decoder.iou_token.weight)


def test_random_spec_is_seeded_and_only_decoder_trains() -> None:
    a, b, c = load_sam("random:tiny"), load_sam("random:tiny"), load_sam("random:tiny", seed=1)
    assert a.sha256 == b.sha256 != c.sha256
    assert a.is_random
    assert all(p.requires_grad for p in a.sam.mask_decoder.parameters())
    assert not any(p.requires_grad for p in a.sam.image_encoder.parameters())
    assert not any(p.requires_grad for p in a.sam.prompt_encoder.parameters())
    assert (a.img_size, a.embedding_size, a.low_res_size) == (256, (64, 64), 256)


def test_decoder_weights_round_trip_bit_exact(tmp_path: Path) -> None:
    source, target = load_sam("random:tiny", seed=1), load_sam("random:tiny", seed=2)
    path = save_decoder_weights(source.sam, tmp_path / "decoder.safetensors")
    load_decoder_weights(target.sam, path)
    for (name, a), b in zip(
        source.sam.mask_decoder.state_dict().items(),
        target.sam.mask_decoder.state_dict().values(),
        strict=True,
    ):
        assert torch.equal(a, b), name
    assert not torch.equal(
        source.sam.image_encoder.patch_embed.proj.weight,
        target.sam.image_encoder.patch_embed.proj.weight,
    )


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"nothing\.pth: checkpoint file not found"):
        load_sam(tmp_path / "nothing.pth")


def test_truncated_file(tmp_path: Path) -> None:
    path = tmp_path / "cut.pth"
    torch.save(build_sam("tiny").state_dict(), path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"cut\.pth: truncated or corrupt"):
        load_sam(path)


class Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("this must never run",))


# torch warns about the pickle protocol of the file it is about to refuse
@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickle_refused_by_weights_only(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    with open(path, "wb") as handle:
        pickle.dump({"model": Evil()}, handle)
    with pytest.raises(
        CheckpointError, match=r"evil\.pth: refused: not a PyTorch state dict.*can never run code"
    ):
        load_sam(path)


def test_other_architecture(tmp_path: Path) -> None:
    path = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, path)
    with pytest.raises(CheckpointError, match=r"resnet\.pth: not a SAM state dict"):
        load_sam(path)
    state = build_sam("tiny").state_dict()
    state["image_encoder.patch_embed.proj.weight"] = torch.zeros(100, 3, 4, 4)
    with pytest.raises(CheckpointError, match=r"odd\.pth: .* matches no SAM ViT variant"):
        detect_variant(state, "odd.pth")
    state = build_sam("tiny").state_dict()
    state["mask_decoder.iou_token.weight"] = torch.zeros(1, 128)
    path = tmp_path / "odd.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"odd\.pth"):
        load_sam(path)


def test_random_base_trained_with_a_seed_reloads_with_that_seed(tmp_path: Path) -> None:
    from samprompt import EmbeddingCache, FinetuneConfig, Finetuner, get_strategy
    from samprompt.data import make_phantoms

    data = make_phantoms(5, 64, seed=2)
    model = load_sam("random:tiny", seed=1)
    cache = EmbeddingCache(tmp_path / "cache", progress=False)
    tuner = Finetuner(model, get_strategy("mean-points"), FinetuneConfig(epochs=1),
                      cache=cache, out_dir=tmp_path / "run", progress=False)  # fmt: skip
    tuner.fit(data[:3], data[3:])
    reloaded = Finetuner.load(tmp_path / "run", cache=cache)
    assert reloaded.model.seed == 1 and reloaded.model.sha256 == model.sha256
