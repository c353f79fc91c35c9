"""Start-up of the ``samprompt`` command and package: seconds until a fresh Python process has
done each thing (median of several), and which heavy libraries it had to import. Device-free."""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

CASES = {
    "samprompt --help": "from samprompt.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass",
    "samprompt finetune --epochs x (argument error)": "from samprompt.cli import main\ntry:\n    main(['finetune', '--epochs', 'x'])\nexcept SystemExit:\n    pass",
    "import samprompt": "import samprompt",
    "from samprompt import Finetuner": "from samprompt import Finetuner",
    "python -c pass (the interpreter alone)": "pass",
}
HEAVY = ("torch", "torchvision", "segment_anything", "monai", "matplotlib")


def run(code: str) -> tuple[float, list[str]]:
    probe = (
        f"{code}\nimport sys\nprint('heavy:' + ','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    tick = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - tick
    last = done.stdout.rstrip("\n").splitlines()[-1].removeprefix("heavy:")
    return seconds, [m for m in last.split(",") if m]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    print(f"# python {sys.version.split()[0]}, median of {args.repeat} fresh processes")
    print("| what | seconds | heavy libraries imported |\n|---|---|---|")
    for name, code in CASES.items():
        run(code)  # warm the file cache
        results = [run(code) for _ in range(args.repeat)]
        seconds = statistics.median(s for s, _ in results)
        print(f"| {name} | {seconds:.2f} | {', '.join(results[-1][1]) or 'none'} |")


if __name__ == "__main__":
    main()
