#!/usr/bin/env bash
# The GPU checks, as one short script for a machine with a CUDA device (nothing here runs them otherwise):
#   bash tools/device_check.sh [OUT_DIR]
# 1. the CUDA tests (layers, nets, Python layers on the device); 2. the deploy benchmark on the GPU
# (the seed's Table 2: 100 ms per image in Caffe on a K40); 3. soft-encoding on the GPU vs the released
# CPU approach; 4. a few training iterations of the demo net with `caffe train -gpu 0`.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-${OUT:-/tmp/device_check}}
mkdir -p "$OUT"
PY=${PY:-python3}
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
$PY -m pytest -q tests/test_layers_cuda.py tests/test_cuda_net.py 2>&1 | tee "$OUT/cuda_tests.txt"
$PY tools/bench_deploy.py --gpu 0 --iterations 20 2>&1 | tee "$OUT/bench_deploy.txt"
$PY tools/bench_soft_encoding.py --device cuda --repeats 9 2>&1 | tee "$OUT/bench_soft_encoding.txt"
if [ -d data/lmdb/demo/train ]; then
  mkdir -p snapshots/demo
  sed 's/max_iter: 1500/max_iter: 200/; s/solver_mode: CPU/solver_mode: GPU/' prototxt/demo/solver.prototxt > "$OUT/solver.prototxt"
  caffe train -solver "$OUT/solver.prototxt" -gpu 0 2>&1 | grep -E "Iteration|Optimization" | tee "$OUT/train_gpu.txt"
fi
