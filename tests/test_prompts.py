from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from samprompt import Dataset, Prompt, PromptError, Sample, get_strategy
from samprompt.data import SampleList, make_phantoms
from samprompt.prompts import Combined, MeanPoints, PerturbedBox
from samprompt.prompts.geometry import box_coverage, components


@st.composite
def masked_samples(draw: st.DrawFn) -> Sample:
    h, w = draw(st.integers(8, 120)), draw(st.integers(8, 120))
    mask = np.zeros((h, w), bool)
    for _ in range(draw(st.integers(1, 3))):
        y0, x0 = draw(st.integers(0, h - 2)), draw(st.integers(0, w - 2))
        y1, x1 = draw(st.integers(y0 + 1, h)), draw(st.integers(x0 + 1, w))
        mask[y0:y1, x0:x1] = True
    return Sample("s", np.zeros((h, w), np.uint8), mask)


def _inside(prompt: Prompt) -> bool:
    h, w = prompt.image_size
    ok = True
    if prompt.points is not None:
        ok &= bool(
            (prompt.points >= 0).all()
            and (prompt.points[:, 0] <= w - 1).all()
            and (prompt.points[:, 1] <= h - 1).all()
        )
    if prompt.boxes is not None:
        b = prompt.boxes
        ok &= bool(
            (b >= 0).all() and (b[:, [0, 2]] <= w - 1).all() and (b[:, [1, 3]] <= h - 1).all()
        )
        ok &= bool((b[:, 0] <= b[:, 2]).all() and (b[:, 1] <= b[:, 3]).all())
    return ok


def test_prompt_validation_messages() -> None:
    with pytest.raises(PromptError, match="outside the 10x5 image"):
        Prompt((5, 10), points=[[10.5, 1.0]], point_labels=[1])
    with pytest.raises(PromptError, match="labels must be 0 or 1"):
        Prompt((5, 10), points=[[1.0, 1.0]], point_labels=[2])
    with pytest.raises(PromptError, match="NaN"):
        Prompt((5, 10), boxes=[[0, 0, np.nan, 3]])
    with pytest.raises(PromptError, match="given together"):
        Prompt((5, 10), points=[[1.0, 1.0]])
    with pytest.raises(PromptError, match="not inside"):
        Prompt((5, 10), boxes=[[4, 0, 2, 3]])


def test_to_input_frame_uses_resize_longest_side() -> None:
    prompt = Prompt((500, 1000), points=[[999.0, 0.0]], point_labels=[1], boxes=[[0, 0, 500, 250]])
    points, boxes = prompt.to_input_frame(1024)
    np.testing.assert_allclose(points, [[999.0 * 1.024, 0.0]])
    np.testing.assert_allclose(boxes, [[0, 0, 512, 256]])


@given(
    sample=masked_samples(),
    seed=st.integers(0, 2**31),
    shift=st.floats(0.0, 0.45),
    per_component=st.booleans(),
    coverage=st.floats(0.0, 1.0),
)
@settings(max_examples=150, deadline=None)
def test_perturbed_box_inside_image_and_covers_stated_fraction(
    sample: Sample, seed: int, shift: float, per_component: bool, coverage: float
) -> None:
    strategy = PerturbedBox(max_shift=shift, per_component=per_component, min_coverage=coverage)
    prompt = strategy.training_prompt(sample, np.random.default_rng(seed))
    assert _inside(prompt)
    regions = (
        components(sample.mask, strategy.min_component_fraction) if per_component else [sample.mask]
    )
    assert prompt.num_boxes == len(regions)
    for region, box in zip(regions, prompt.boxes, strict=True):
        assert box_coverage(region, box) >= coverage - 1e-12
    again = strategy.training_prompt(sample, np.random.default_rng(seed))
    assert again.same_as(prompt)
    exact = strategy.inference_prompt(sample)
    for region, box in zip(regions, exact.boxes, strict=True):
        assert box_coverage(region, box) == 1.0


def test_perturbed_box_jitters_in_training_only() -> None:
    sample = make_phantoms(1, 64, seed=1)[0]
    strategy = PerturbedBox(max_shift=0.2, min_coverage=0.0)
    boxes = {
        tuple(strategy.training_prompt(sample, np.random.default_rng(s)).boxes[0]) for s in range(5)
    }
    assert len(boxes) == 5
    assert strategy.inference_prompt(sample).same_as(strategy.inference_prompt(sample))


def test_perturbed_box_empty_mask_names_sample() -> None:
    sample = Sample("empty_one", np.zeros((8, 8), np.uint8), np.zeros((8, 8), bool))
    with pytest.raises(PromptError, match="'empty_one' has an empty mask"):
        PerturbedBox().inference_prompt(sample)


@given(
    train_seed=st.integers(0, 1000),
    size=st.tuples(st.integers(40, 160), st.integers(40, 160)),
    k=st.integers(1, 4),
    background=st.integers(0, 2),
)
@settings(max_examples=25, deadline=None)
def test_mean_points_inside_and_independent_of_test_mask(
    train_seed: int, size: tuple[int, int], k: int, background: int
) -> None:
    strategy = MeanPoints(points_per_region=k, background_points=background)
    strategy.fit(make_phantoms(6, 64, seed=train_seed))
    test = make_phantoms(1, size, seed=train_seed + 1)[0]
    prompt = strategy.inference_prompt(test)
    assert _inside(prompt)
    assert (prompt.point_labels == 1).sum() == 2 * k
    flipped = Sample(test.id, test.image, ~test.mask)
    assert strategy.inference_prompt(flipped).same_as(prompt)
    assert strategy.training_prompt(test, np.random.default_rng(0)).same_as(prompt)


def test_mean_points_sit_inside_the_mean_mask_regions() -> None:
    train = make_phantoms(10, 128, seed=0)
    strategy = MeanPoints(points_per_region=3, background_points=1)
    strategy.fit(train)
    mean = strategy.mean_map
    assert mean is not None
    grid_xy = (strategy.unit_points * strategy.grid - 0.5).round().astype(int)
    for (x, y), label in zip(grid_xy, strategy.labels, strict=True):
        assert (mean[y, x] >= 0.5) if label == 1 else (mean[y, x] < 0.05)


def test_mean_points_from_mean_image() -> None:
    strategy = MeanPoints(source="image", points_per_region=2)
    train = make_phantoms(8, 96, seed=4)
    strategy.fit(train)
    prompt = strategy.inference_prompt(train[0])
    assert prompt.num_points == 4
    inside = [train[0].mask[round(y), round(x)] for x, y in prompt.points]
    assert sum(inside) >= 3  # lungs are the dark regions of the mean phantom


class GuardedDataset(Dataset):
    """A dataset that raises when a held-out position is read."""

    def __init__(self, samples: SampleList, held_out: set[int]) -> None:
        self.samples, self.held_out = samples, held_out

    @property
    def ids(self) -> list[str]:
        return self.samples.ids

    def load(self, index: int) -> Sample:
        if index in self.held_out:
            raise AssertionError(f"held-out sample {index} was read")
        return self.samples[index]


@pytest.mark.parametrize("name", ["mean-points", "perturbed-box", "combined"])
def test_fit_reads_the_training_split_only(name: str) -> None:
    data = GuardedDataset(make_phantoms(10, 48, seed=2), held_out={7, 8, 9})
    strategy = get_strategy(name)
    strategy.fit(data.subset(range(7)))
    with pytest.raises(AssertionError, match="held-out"):
        data[8]  # the guard works


@pytest.mark.parametrize(
    "name,params",
    [
        ("mean-points", {"points_per_region": 2, "background_points": 1}),
        ("perturbed-box", {"per_component": True}),
        ("combined", {"params": {"perturbed-box": {"per_component": True}}}),
    ],
)
def test_state_dict_round_trip_reproduces_prompts(name: str, params: dict) -> None:
    train = make_phantoms(6, 64, seed=8)
    test = make_phantoms(3, (50, 70), seed=9)
    strategy = get_strategy(name, **params)
    strategy.fit(train)
    state = json.loads(json.dumps(strategy.state_dict()))
    restored = get_strategy(name)
    restored.load_state_dict(state)
    for sample in test:
        assert restored.inference_prompt(sample).same_as(strategy.inference_prompt(sample))
        a = strategy.training_prompt(sample, np.random.default_rng(3))
        b = restored.training_prompt(sample, np.random.default_rng(3))
        assert a.same_as(b)


def test_combined_is_the_union() -> None:
    train = make_phantoms(6, 64, seed=5)
    combined = Combined()
    combined.fit(train)
    assert combined.needs_mask_at_inference
    points, boxes = MeanPoints(), PerturbedBox()
    points.fit(train)
    prompt = combined.inference_prompt(train[0])
    np.testing.assert_array_equal(prompt.points, points.inference_prompt(train[0]).points)
    np.testing.assert_array_equal(prompt.boxes, boxes.inference_prompt(train[0]).boxes)
