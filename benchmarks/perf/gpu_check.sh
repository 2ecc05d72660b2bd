#!/usr/bin/env bash
# The GPU check (issue 27 item 5): on a machine with CUDA and the project installed
# (pip install -e ".[test]"), from the repository root:
#     bash benchmarks/perf/gpu_check.sh
# Prints the demo grid's time on the CPU and the GPU (model cached), their ratio, the fraction of
# the GPU run the GPU is busy and the top host-side costs; about 3-8 minutes on one GPU.
set -euo pipefail
export XAIBENCH_CACHE="${XAIBENCH_CACHE:-${TMPDIR:-/tmp}/xaibench-gpu-cache}"
exec timeout 480 python "$(dirname "$0")/gpu_check.py"
