"""Seeded synthetic phantoms for tests, examples and the demo (no real data needed)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from samprompt.data.sample import Sample, SampleList
from samprompt.errors import ConfigError

__all__ = ["make_phantoms"]


def _ellipse(
    shape: tuple[int, int], cy: float, cx: float, ry: float, rx: float, angle: float
) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float64)
    dy, dx = yy - cy, xx - cx
    cos, sin = np.cos(angle), np.sin(angle)
    u = (dx * cos + dy * sin) / rx
    v = (-dx * sin + dy * cos) / ry
    return np.asarray(u * u + v * v <= 1.0)


def _chest(
    rng: np.random.Generator, shape: tuple[int, int], jitter: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    h, w = shape
    # With jitter, the whole chest moves and scales and its contrast varies, as patients and
    # exposures do; without, no extra numbers are drawn, so seeds give the same phantoms as before.
    dy, dx, zoom, lung_grey = 0.0, 0.0, 1.0, 70.0
    if jitter:
        dy, dx = rng.uniform(-jitter, jitter, 2)
        zoom = rng.uniform(1 - jitter, 1 + jitter)
        lung_grey = rng.uniform(60.0, 120.0)

    def ellipse(cy: float, cx: float, ry: float, rx: float, angle: float) -> np.ndarray:
        return _ellipse(
            shape,
            h * (0.5 + dy + (cy - 0.5) * zoom),
            w * (0.5 + dx + (cx - 0.5) * zoom),
            h * ry * zoom,
            w * rx * zoom,
            angle,
        )

    image = np.full(shape, 15.0)
    body = ellipse(0.52, 0.5, 0.47, 0.44, 0.0)
    image[body] = 165.0
    mask = np.zeros(shape, bool)
    for side in (-1, 1):
        mask |= ellipse(
            rng.uniform(0.44, 0.52),
            0.5 + side * rng.uniform(0.17, 0.22),
            rng.uniform(0.25, 0.32),
            rng.uniform(0.11, 0.15),
            side * rng.uniform(0.0, 0.25),
        )
    heart = ellipse(0.62, rng.uniform(0.53, 0.58), 0.12, 0.1, 0.3)
    mask &= ~heart
    image[mask] = lung_grey
    image[heart] = 185.0
    ribs = (np.sin(np.arange(h)[:, None] / h * np.pi * rng.uniform(14, 18)) > 0.75) & body
    image += 20.0 * ribs
    image = ndimage.gaussian_filter(image, 1.5) + rng.normal(0, 8, shape)
    return np.clip(image, 0, 255).astype(np.uint8), mask


def _nodule(
    rng: np.random.Generator, shape: tuple[int, int], jitter: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    h, w = shape
    texture = ndimage.gaussian_filter(rng.normal(0, 1, shape), 6)
    image = 100.0 + 25.0 * texture / (texture.std() + 1e-9)
    r = min(h, w) * rng.uniform(0.08, 0.18)
    cy, cx = rng.uniform(r + 2, h - r - 2), rng.uniform(r + 2, w - r - 2)
    mask = _ellipse(shape, cy, cx, r * rng.uniform(0.7, 1.0), r, rng.uniform(0, np.pi))
    image[mask] += 60.0
    image = ndimage.gaussian_filter(image, 1.0) + rng.normal(0, 6, shape)
    return np.clip(image, 0, 255).astype(np.uint8), mask


_KINDS = {"chest": _chest, "nodule": _nodule}


def make_phantoms(
    n: int,
    size: int | tuple[int, int] = 256,
    *,
    kind: str = "chest",
    seed: int = 0,
    jitter: float = 0.0,
) -> SampleList:
    """Make ``n`` synthetic grey images with binary masks.

    Parameters
    ----------
    n : int
        Number of samples.
    size : int or (int, int)
        Image side, or ``(H, W)``.
    kind : {"chest", "nodule"}
        ``chest``: a body with two dark lungs (the mask) beside a bright heart and ribs;
        ``nodule``: one bright blob (the mask) on a textured background.
    seed : int
        The same seed gives the same images.
    jitter : float
        ``chest`` only: each chest moves by up to ``jitter`` of the image side, scales by up to
        ``1 ± jitter`` and gets its own lung contrast (0, the default, keeps them all alike).

    Examples
    --------
    >>> ds = make_phantoms(2, 64, seed=1)
    >>> len(ds), ds[0].image.shape, bool(ds[0].mask.any())
    (2, (64, 64), True)
    """
    if kind not in _KINDS:
        raise ConfigError(f"unknown phantom kind {kind!r}; expected one of {sorted(_KINDS)}")
    if not 0.0 <= jitter < 0.5:
        raise ConfigError(f"jitter must be in [0, 0.5), got {jitter}")
    if n < 1:
        raise ConfigError(f"n must be positive, got {n}")
    shape = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(n):
        image, mask = _KINDS[kind](rng, shape, jitter)
        samples.append(Sample(f"{kind}_{i:04d}", image, mask))
    return SampleList(samples)
