#!/usr/bin/env bash
# Run every benchmark on one device and print the tables (used for benchmarks/README.md).
#   bash benchmarks/run_all.sh cpu      # about 18 minutes on 2 CPU cores
#   bash benchmarks/run_all.sh cuda     # a few minutes on one GPU
set -euo pipefail
device=${1:-cpu}
python=${PYTHON:-python3}
cd "$(dirname "$0")"
for bench in roofline encoder_throughput decoder_step precision protocol_cost memory profile_step compile_step; do
  echo "=== $bench ($device)"
  extra=()
  if [ "$device" != cpu ] && [ "$bench" = encoder_throughput ]; then extra=(--images 8); fi
  # bf16 is emulated (about 10x slower than fp32) on CPUs without AVX-512 BF16 / AMX
  if [ "$device" = cpu ] && [ "$bench" = roofline ]; then extra=(--precisions fp32); fi
  "$python" "$bench.py" --device "$device" "${extra[@]}"
done
echo "=== startup"
"$python" startup.py
