from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from samprompt.metrics import f1_iou, summarize


def _numpy_scores(pred: np.ndarray, true: np.ndarray) -> tuple[float, float]:
    inter = np.logical_and(pred, true).sum()
    total = pred.sum() + true.sum()
    union = np.logical_or(pred, true).sum()
    if true.sum() == 0:
        return (1.0, 1.0) if pred.sum() == 0 else (0.0, 0.0)
    return 2 * inter / total, inter / union


@given(
    pair=st.integers(1, 20).flatmap(
        lambda h: st.integers(1, 20).flatmap(
            lambda w: st.tuples(arrays(bool, (3, h, w)), arrays(bool, (3, h, w)))
        )
    )
)
@settings(max_examples=200, deadline=None)
def test_monai_metrics_agree_with_numpy(pair: tuple[np.ndarray, np.ndarray]) -> None:
    pred, true = pair
    f1, iou = f1_iou(pred, true)
    for i in range(3):
        ef1, eiou = _numpy_scores(pred[i], true[i])
        assert abs(f1[i] - ef1) < 1e-6 and abs(iou[i] - eiou) < 1e-6


def test_empty_conventions_are_numbers_not_nan() -> None:
    empty = np.zeros((1, 4, 4), bool)
    full = np.ones((1, 4, 4), bool)
    assert f1_iou(empty, empty) == (np.array([1.0]), np.array([1.0]))
    f1, iou = f1_iou(full, empty)
    assert f1[0] == 0.0 and iou[0] == 0.0
    f1, iou = f1_iou(empty, full)
    assert f1[0] == 0.0 and iou[0] == 0.0


def test_summarize_is_mean_and_population_std() -> None:
    assert summarize([1.0, 3.0]) == (2.0, 1.0)
