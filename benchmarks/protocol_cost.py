"""Encoder calls of the paper's whole protocol: counted for a real (quick) ``reproduce`` run, and
modelled for the full protocol, against the naive count of a loop that encodes every image every
time it is used."""

from __future__ import annotations

import tempfile
from pathlib import Path

from _util import parser, run_main, setup, table

from samprompt import load_sam
from samprompt.data import make_phantoms
from samprompt.reproduce import PROMPT_TYPES, ReproduceSettings, run_reproduce


def naive_calls(n: int, s: ReproduceSettings, cross_test: int = 0) -> int:
    """Image passes through the encoder when nothing is cached (k-fold: 3/5 train, 1/5 val, 1/5 test)."""
    k = s.folds
    test = n // k
    val = n // k
    train = n - test - val
    per_fit = lambda epochs: epochs * (train + val) + val  # noqa: E731  (epochs, then the sweep)
    zero_shot = len(PROMPT_TYPES) * k * (val + test)
    grid = len(s.lrs) * len(s.weight_decays) * (per_fit(s.grid_epochs or s.epochs) + test)
    finetune = len(PROMPT_TYPES) * k * (per_fit(s.epochs) + test)
    cross = len(PROMPT_TYPES) * k * cross_test  # every fold model scores the other dataset
    return zero_shot + grid + finetune + cross


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--images", type=int, default=24)
    args = p.parse_args()
    setup(args)
    data = make_phantoms(args.images, 96, seed=0)
    with tempfile.TemporaryDirectory() as root:
        settings = ReproduceSettings.for_budget("quick", out=Path(root) / "run", device=args.device)
        result = run_reproduce(
            data, load_sam("random:tiny"), settings, progress=False, log=lambda _: None
        )
    counted = result.meta.encoder_calls
    quick = settings
    full = ReproduceSettings(out=Path("unused"))
    rows = [
        [
            f"reproduce --quick, {args.images} images (run and counted)",
            counted,
            naive_calls(args.images, quick),
        ],
        ["paper protocol, Montgomery 138 images (model)", 138, naive_calls(138, full)],
        [
            "paper protocol, Montgomery + Shenzhen cross test (model)",
            138 + 447,
            naive_calls(138, full, 447),
        ],
    ]
    print("\n## Image-encoder calls for the whole protocol")
    table(
        ["run", "samprompt (cached)", "naive", "naive / cached"], [[*r, r[2] / r[1]] for r in rows]
    )


if __name__ == "__main__":
    run_main(main)
