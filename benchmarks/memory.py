"""Peak resident memory of one training epoch over 100 vs 1000 cached embeddings.

Embeddings are synthetic (written straight into the cache, no encoder runs) and the dataset is
lazy, so only the training loop's own memory is measured. Each size runs in a fresh process.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from _util import parser, run_main, setup, table

from samprompt import EmbeddingCache, FinetuneConfig, Finetuner, get_strategy, load_sam
from samprompt.data import Dataset, Sample, make_phantoms


class LazyPhantoms(Dataset):
    """Phantom ``i`` is generated when read, so the dataset itself holds no pixels."""

    def __init__(self, n: int, offset: int = 0) -> None:
        self.n, self.offset = n, offset

    @property
    def ids(self) -> list[str]:
        return [f"p{self.offset + i}" for i in range(self.n)]

    def load(self, index: int) -> Sample:
        sample = make_phantoms(1, 64, seed=self.offset + index)[0]
        return Sample(f"p{self.offset + index}", sample.image, sample.mask)


def child(n: int, root: str, device: str) -> None:
    model = load_sam("random:tiny")
    cache = EmbeddingCache(root, progress=False)
    train, val = LazyPhantoms(n), LazyPhantoms(8, offset=10_000)
    rng = np.random.default_rng(0)
    for data in (train, val):
        for sample in data:
            path = cache.entry_path(model, sample.image)
            if not path.exists():
                cache._write(path, rng.standard_normal((256, 64, 64)).astype(np.float16))
    config = FinetuneConfig(epochs=1, batch_size=8, lr=1e-4, device=device, thresholds=(0.5,))
    Finetuner(model, get_strategy("perturbed-box"), config, cache=cache, progress=False).fit(
        train, val
    )
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)  # MiB on Linux


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(int(sys.argv[2]), sys.argv[3], sys.argv[4])
        return
    p = parser(__doc__ or "")
    p.add_argument("--sizes", type=int, nargs=2, default=[100, 1000])
    args = p.parse_args()
    setup(args)
    peaks = {}
    with tempfile.TemporaryDirectory() as root:
        for n in args.sizes:
            out = subprocess.run(
                [sys.executable, str(Path(__file__)), "--child", str(n), root, args.device],
                capture_output=True,
                text=True,
                check=True,
            )
            peaks[n] = float(out.stdout.strip().splitlines()[-1])
    small, large = args.sizes
    print("\n## Peak RSS of one training epoch")
    table(["cached embeddings", "peak RSS (MiB)"], [[n, peaks[n]] for n in args.sizes])
    print(f"ratio {large} vs {small}: {peaks[large] / peaks[small]:.3f}")


if __name__ == "__main__":
    run_main(main)
