"""``samprompt export --format onnx``: code that imports only onnxruntime, numpy and PIL
reproduces ``samprompt predict``; the graph's prompt encoding is SAM's own."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from samprompt import EmbeddingCache, Finetuner, Sample, get_strategy, load_sam
from samprompt.cli import main
from samprompt.data import make_phantoms
from samprompt.errors import SampromptError
from samprompt.onnx_export import ONNX_OPSET, PromptedDecoder, export_onnx, prompt_arrays
from samprompt.prompts.prompt import Prompt
from samprompt.saved import save_sam_model
from tests.conftest import load_example

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2 * (a & b).sum() / total)


def _example() -> ModuleType:
    """examples/onnx_runtime.py: the documented runtime recipe (onnxruntime, numpy, PIL)."""
    return load_example("onnx_runtime")


class OutsideOnnx:
    """What a deployment writes from export.json alone: the example's code, mask checked."""

    def __init__(self, folder: Path) -> None:
        self.runtime = _example().OnnxSegmenter(folder)
        self.meta = self.runtime.meta

    def segment(
        self, image: np.ndarray, prompt: tuple[np.ndarray, np.ndarray] | None = None
    ) -> np.ndarray:
        logits, mask = self.runtime.segment(image, prompt)
        assert np.array_equal(mask, logits >= self.meta["threshold"]["logit"])
        return mask  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def lite_onnx(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A LiteMedSAM mean-points model (decoder nudged off the base) exported to ONNX."""
    root = tmp_path_factory.mktemp("onnx")
    model = load_sam("litemedsam")
    strategy = get_strategy("mean-points")
    strategy.fit(make_phantoms(6, 256, seed=2, jitter=0.05))
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.sam.mask_decoder.parameters():
            p.add_(0.002 * torch.randn_like(p))
    save_sam_model(root / "run", model, strategy, threshold=0.55, config={})
    args = ["export", "--format", "onnx", "--model", str(root / "run"), "--out",
            str(root / "onnx"), "--image-size", "256", "256", "--image-size", "200", "240"]  # fmt: skip
    assert main(args) == 0
    return root / "run", root / "onnx", root / "cache"


def test_onnx_export_is_reproduced_by_outside_code(lite_onnx: tuple[Path, Path, Path]) -> None:
    run, folder, cache = lite_onnx
    assert sorted(p.name for p in folder.iterdir()) == [
        "decoder.onnx",
        "encoder.onnx",
        "export.json",
    ]
    segmenter = Finetuner.load(run, cache=EmbeddingCache(cache, progress=False))
    odd = make_phantoms(1, (200, 240), seed=3)[0]
    images = [*make_phantoms(2, 256, seed=9, jitter=0.05), Sample("odd", odd.image, odd.mask)]
    outside = OutsideOnnx(folder)
    for sample, (_, expected) in zip(images, segmenter.predict_masks(images), strict=True):
        assert expected.any() and not expected.all()
        mask = outside.segment(sample.image)
        assert mask.shape == sample.image.shape[:2]
        assert _dice(mask, expected) >= 0.999, sample.id


def test_onnx_files_declare_opset_and_dynamic_axes(lite_onnx: tuple[Path, Path, Path]) -> None:
    _, folder, _ = lite_onnx
    meta = json.loads((folder / "export.json").read_text())
    for name in ("encoder.onnx", "decoder.onnx"):
        graph = onnx.load(str(folder / name))
        onnx.checker.check_model(graph)
        assert {o.domain or "ai.onnx": o.version for o in graph.opset_import}["ai.onnx"] == (
            ONNX_OPSET
        )
        assert (
            meta["files"][name]
            == __import__("hashlib").sha256((folder / name).read_bytes()).hexdigest()
        )
    dims = {
        i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
        for i in onnx.load(str(folder / "decoder.onnx")).graph.input
    }
    assert dims["point_coords"] == ["rows", "points", 2]
    assert dims["orig_size"] == [2]
    (image,) = onnx.load(str(folder / "encoder.onnx")).graph.input
    assert [d.dim_param or d.dim_value for d in image.type.tensor_type.shape.dim] == [
        "height",
        "width",
        3,
    ]


PER_LUNG = {"per_component": True}


@pytest.mark.parametrize(
    ("name", "params"),
    [("perturbed-box", PER_LUNG), ("combined", {"params": {"perturbed-box": PER_LUNG}})],
)
def test_onnx_boxes_and_points_with_boxes(name: str, params: dict, tmp_path: Path) -> None:
    """Oracle boxes (two per image: the phantom's two lungs) and points + boxes, given as inputs."""
    data = make_phantoms(5, 128, seed=4, jitter=0.05)
    model = load_sam("random:tiny")
    strategy = get_strategy(name, **params)
    strategy.fit(data[:3])
    save_sam_model(tmp_path / "run", model, strategy, threshold=0.5, config={})
    export_onnx(tmp_path / "run", tmp_path / "onnx")
    segmenter = Finetuner.load(
        tmp_path / "run", cache=EmbeddingCache(tmp_path / "c", progress=False)
    )
    outside = OutsideOnnx(tmp_path / "onnx")
    assert outside.meta["prompts"] is None  # oracle: the user brings boxes
    for sample, (_, expected) in zip(data[3:], segmenter.predict_masks(data[3:]), strict=True):
        prompt = segmenter.inference_prompt(sample)
        assert prompt.boxes is not None and len(prompt.boxes) == 2
        assert (prompt.points is not None) == (name == "combined")
        arrays = prompt_arrays(prompt)
        if name == "perturbed-box":  # the recipe's own box encoding gives the same inputs
            by_recipe = _example().boxes_prompt(prompt.boxes.tolist())
            assert all(np.array_equal(a, b) for a, b in zip(arrays, by_recipe, strict=True))
        mask = outside.segment(sample.image, arrays)
        assert _dice(mask, expected) >= 0.999, sample.id


def _xyxy(b: tuple[float, ...]) -> list[float]:
    return [min(b[0], b[2]), min(b[1], b[3]), max(b[0], b[2]), max(b[1], b[3])]


coordinate = st.floats(0, 127, allow_nan=False, width=32)


@settings(max_examples=25, deadline=None)
@given(
    points=st.lists(st.tuples(coordinate, coordinate, st.sampled_from([0, 1])), max_size=4),
    boxes=st.lists(st.tuples(coordinate, coordinate, coordinate, coordinate), max_size=3),
)
def test_graph_prompt_encoding_is_sams(
    points: list[tuple[float, float, int]], boxes: list[tuple[float, ...]]
) -> None:
    """The label-coded encoding inside decoder.onnx equals SAM's prompt encoder, row by row."""
    if not points and not boxes:
        return
    sam = _tiny_sam()
    prompt = Prompt(
        (128, 128),
        points=[p[:2] for p in points] or None,
        point_labels=[p[2] for p in points] or None,
        boxes=[_xyxy(b) for b in boxes] or None,
    )
    coords, labels = prompt_arrays(prompt)
    side = sam.image_encoder.img_size
    scale = side / 128
    with torch.no_grad():
        ours = PromptedDecoder(sam, 0.0)._sparse(
            torch.from_numpy(coords * scale), torch.from_numpy(labels)
        )
        for row, box in enumerate(prompt.boxes if prompt.boxes is not None else [None]):
            point_arg = None
            if prompt.points is not None:
                point_arg = (
                    torch.as_tensor(prompt.points[None] * scale, dtype=torch.float32),
                    torch.as_tensor(prompt.point_labels[None]),
                )
            box_arg = (
                None if box is None else torch.as_tensor(box[None] * scale, dtype=torch.float32)
            )
            sparse, _ = sam.prompt_encoder(points=point_arg, boxes=box_arg, masks=None)
            torch.testing.assert_close(ours[row], sparse[0])


_TINY: list[torch.nn.Module] = []


def _tiny_sam() -> torch.nn.Module:
    if not _TINY:
        _TINY.append(load_sam("random:tiny").sam.eval())
    return _TINY[0]


def test_onnx_export_refuses_a_used_folder_and_leaves_nothing_on_failure(
    lite_onnx: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run, folder, _ = lite_onnx
    with pytest.raises(SampromptError, match="not an empty folder"):
        export_onnx(run, folder)

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("exporter failed")

    monkeypatch.setattr(torch.onnx, "export", broken)
    with pytest.raises(RuntimeError, match="exporter failed"):
        export_onnx(run, tmp_path / "new")
    assert list(tmp_path.iterdir()) == []


def test_decoder_only_flag_needs_onnx(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["export", "--model", str(tmp_path), "--out", str(tmp_path / "x.pth"), "--decoder-only"]
    assert main(args) == 2
    assert "--decoder-only" in capsys.readouterr().err


def test_onnx_example_command_line(lite_onnx: tuple[Path, Path, Path], tmp_path: Path) -> None:
    _, folder, _ = lite_onnx
    sample = make_phantoms(1, 256, seed=11, jitter=0.05)[0]
    Image.fromarray(sample.image).save(tmp_path / "x.png")
    example = Path(__file__).parents[1] / "examples" / "onnx_runtime.py"
    command = [sys.executable, str(example), str(folder), str(tmp_path / "x.png")]
    result = subprocess.run(
        [*command, "--out", str(tmp_path / "m")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    written = np.asarray(Image.open(tmp_path / "m" / "x.png")) > 0
    assert np.array_equal(written, OutsideOnnx(folder).segment(sample.image))
    assert f"{int(written.sum())} foreground pixels" in result.stdout
    odd = Image.fromarray(sample.image[:, :200])
    odd.save(tmp_path / "odd.png")
    result = subprocess.run([*command[:2], str(folder), str(tmp_path / "odd.png"), "--out",
                             str(tmp_path / "m")], capture_output=True, text=True)  # fmt: skip
    assert result.returncode != 0 and "--image-size 256 200" in result.stderr


def test_onnx_export_without_onnx_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "onnx" else real(name, *a)
    )
    args = ["export", "--format", "onnx", "--model", str(tmp_path), "--out", str(tmp_path / "o")]
    assert main(args) == 2
    assert "pip install 'samprompt[onnx]'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
