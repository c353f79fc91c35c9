"""What ``samprompt.keep_freed_memory()`` (applied by the command line) changes on a CPU: the
seconds per image of the torch image encoder (into an empty cache), and per decoder training
image-step, per evaluated image and per U-Net image-step that ``samprompt reproduce`` probes for
its estimate, with glibc's default allocator and with freed
memory kept, each in fresh processes, alternating; plus the page faults and system time.

    python benchmarks/allocator.py --data ../shared/data/montgomery --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

PROBE = """
import json, resource, sys, tempfile, time, warnings
import torch
from samprompt import EmbeddingCache, RandomWeightsWarning, keep_freed_memory, load_sam
from samprompt.data import FolderDataset, make_phantoms
from samprompt.reproduce_plan import probe_costs
warnings.simplefilter("ignore", RandomWeightsWarning)
data_dir, checkpoint, cache_dir, threads, keep = sys.argv[1:6]
torch.set_num_threads(int(threads))
applied = keep_freed_memory() if keep == "1" else False
model = load_sam(checkpoint)
data = FolderDataset(data_dir).subset(range(40)) if data_dir else make_phantoms(40, 256, seed=0)
fresh = EmbeddingCache(tempfile.mkdtemp(), progress=False)  # torch encoder, nothing cached
fresh.embed(model, data.subset([0]))  # warm-up
tick = time.perf_counter()
fresh.embed(model, data.subset(range(1, 5)))
encode_s = (time.perf_counter() - tick) / 4
cache = EmbeddingCache(cache_dir, progress=False)
probe_costs(model, data, cache, batch_size=8)  # warm-up: embeddings cached, code paths loaded
before = resource.getrusage(resource.RUSAGE_SELF)
costs = probe_costs(model, data, cache, batch_size=8)
after = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"applied": applied, "encode_s": encode_s, "train_s": costs.train_s, "eval_s": costs.eval_s,
    "unet_s": costs.unet_s, "faults": after.ru_minflt - before.ru_minflt,
    "sys_s": after.ru_stime - before.ru_stime}))
"""

KEYS = ("encode_s", "train_s", "eval_s", "unet_s", "faults", "sys_s")


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="", help="folder dataset (default: 40 synthetic phantoms)")
    p.add_argument("--checkpoint", default="litemedsam", help="SAM checkpoint (default litemedsam)")
    p.add_argument("--cache", default=None, help="embedding cache (default: the user cache)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--repeat", type=int, default=3, help="processes per setting (default 3)")
    return p.parse_args()


def _probe(args: argparse.Namespace, keep: bool) -> dict[str, float]:
    cache = args.cache or os.path.expanduser("~/.cache/samprompt/embeddings")
    argv = [args.data, args.checkpoint, cache, str(args.threads), "1" if keep else "0"]
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, check=True
    )
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    if keep and not result["applied"]:
        sys.exit("keep_freed_memory() did not apply here (no glibc): nothing to compare")
    return result


def main() -> None:
    args = _args()
    runs: dict[bool, list[dict[str, float]]] = {False: [], True: []}
    for _ in range(args.repeat):
        for keep in (False, True):
            runs[keep].append(_probe(args, keep))
    medians = {
        k: {key: statistics.median(r[key] for r in v) for key in KEYS} for k, v in runs.items()
    }
    print(f"# {args.data or 'phantoms'}, {args.checkpoint}, {args.threads} thread(s), "
          f"median of {args.repeat} fresh processes each")  # fmt: skip
    print("| quantity | glibc default | freed memory kept | default / kept |\n|---|---|---|---|")
    for key in KEYS:
        default, kept = medians[False][key], medians[True][key]
        ratio = f"{default / kept:.2f}x" if kept > 0 else "n/a"
        print(f"| {key} | {default:.4g} | {kept:.4g} | {ratio} |")


if __name__ == "__main__":
    main()
