"""Reproduce the paper's tables and figures (``samprompt reproduce`` from Python).

Usage: ``python reproduce_paper.py DATA_DIR CHECKPOINT OUT_DIR [--quick]``, e.g. with the
Montgomery folder and ``litemedsam`` (built in) or ``sam_vit_b_01ec64.pth``; the ``converged`` budget
(``--quick``: the smoke-test budget). Without arguments it
runs the quick setting on phantoms with LiteMedSAM (the run shows the pipeline; phantom numbers say
little about chest X-rays).
"""

import sys
from pathlib import Path

from samprompt import load_sam
from samprompt.data import FolderDataset, make_phantoms
from samprompt.reproduce import ReproduceSettings, run_reproduce

args = [a for a in sys.argv[1:] if a != "--quick"]
if args:
    data, checkpoint, out = FolderDataset(args[0]), args[1], Path(args[2])
    quick = "--quick" in sys.argv
else:
    data, checkpoint, out, quick = (
        make_phantoms(24, 96, seed=0),
        "litemedsam",
        Path("reproduce-run"),
        True,
    )

settings = ReproduceSettings.for_budget("quick" if quick else "converged", out=out)
result = run_reproduce(data, load_sam(checkpoint), settings)
print(
    f"point prompts, fine-tuned: F1 {result.finetuned['points'].scores.f1_mean:.3f}; "
    f"U-Net {result.unet.scores.f1_mean:.3f}; see {out / 'report.md'}"
)
