#!/usr/bin/env bash
# The GPU checks, as one script for a machine with a CUDA device, from a fresh clone:
#
#   bash tools/device_check.sh [OUT_DIR]                 # default OUT_DIR: /tmp/device_check
#   bash tools/device_check.sh --download-wheels DIR     # on a connected machine: the wheels an offline
#                                                        # GPU machine lacks (then WHEELS=DIR there)
# Environment:
#   PY       the Python that holds CUDA torch (default: python3); the toolkit is installed into it
#   WHEELS   a folder of wheels for the packages the machine lacks, when it cannot reach PyPI
#   GOLDEN   BVLC Caffe's golden data (default: ../shared/caffe_golden or shared/caffe_golden)
#   ITERS    training iterations of the demo net on the GPU (default 200)
#
# Steps, in order; the first failure stops the script (exit 1) after printing its log's tail:
#   gpu       torch sees a CUDA device (its name goes into the summary)
#   install   the toolkit, editable, into $PY (torch is never replaced; missing packages from PyPI or WHEELS)
#   cuda      the CUDA tests: every built-in layer CPU vs CUDA, the golden layer net on CUDA vs BVLC Caffe,
#             seeded non-zero nets and a short training run CPU vs CUDA (skips count as failures here)
#   data      the demo's data from scikit-image's photos (tools/demo.py --data-only: LMDBs and prior)
#   train     caffe train -gpu 0 on the demo solver (ITERS iterations, snapshot), then a resume from it
#   bench     the deploy benchmark on the GPU (seed's Table 2: Caffe, K40, 100 ms per image) and
#             soft-encoding on the GPU
# Every step's log is in OUT_DIR/<step>.txt; one summary at the end (also OUT_DIR/summary.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
PY=${PY:-python3}
OFFLINE_WHEELS="kornia kornia_rs lmdb protobuf>=5.26"   # what this workplace's H200 image lacks

if [ "${1:-}" = "--download-wheels" ]; then
  DIR=${2:?usage: bash tools/device_check.sh --download-wheels DIR}
  # the GPU machine's Python (3.12 on this workplace's H200 image) and platform; torch is already there
  $PY -m pip download -d "$DIR" --only-binary=:all: --python-version "${PYVER:-3.12}" \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
    --no-deps $OFFLINE_WHEELS
  echo "wheels in $DIR; on the GPU machine: WHEELS=$DIR bash tools/device_check.sh"
  exit 0
fi

OUT=${1:-${OUT:-/tmp/device_check}}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
ITERS=${ITERS:-200}
export PYTHONUNBUFFERED=1
export TORCHCAFFE_REQUIRE_CUDA=1          # the CUDA tests fail instead of skipping without a device
if [ -z "${GOLDEN:-}" ]; then
  for g in "$REPO/../shared/caffe_golden" "$REPO/shared/caffe_golden"; do
    if [ -d "$g" ]; then GOLDEN=$(cd "$g" && pwd); break; fi
  done
fi
export TORCHCAFFE_GOLDEN=${GOLDEN:-}
CARD="(unknown)"
PASSED=()
START=$(date +%s)

summary() {
  local status=$1
  {
    echo "== device check: $status"
    echo "card: $CARD"
    for p in "${PASSED[@]}"; do echo "  passed  $p"; done
    if [ "$status" != PASS ]; then echo "  FAILED  $FAILED (log: $OUT/$FAILED.txt)"; fi
    echo "time: $(( $(date +%s) - START )) s; logs in $OUT"
  } | tee "$OUT/summary.txt"
}

# step NAME DESCRIPTION COMMAND...: run, log to OUT/NAME.txt (and the terminal), stop at the first failure
step() {
  local name=$1 what=$2
  shift 2
  echo "== $name: $what"
  set +e
  "$@" 2>&1 | tee "$OUT/$name.txt"
  local rc=${PIPESTATUS[0]}
  set -e
  if [ "$rc" -ne 0 ]; then
    FAILED=$name
    echo "-- $name failed (exit $rc); last lines of $OUT/$name.txt:"
    tail -n 30 "$OUT/$name.txt"
    summary FAIL
    exit 1
  fi
  PASSED+=("$name: $what")
}

check_gpu() {
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
  $PY - <<'EOF'
import sys
import torch
print("torch", torch.__version__, "CUDA", torch.version.cuda)
if not torch.cuda.is_available():
    sys.exit("torch sees no CUDA device (a CPU-only torch, or no GPU): nothing to check")
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"cuda:{i}: {p.name}, {p.total_memory / 2**30:.0f} GiB, compute capability {p.major}.{p.minor}")
EOF
}

missing_modules() {
  $PY - <<'EOF'
import importlib
need = {"kornia": "kornia", "lmdb": "lmdb", "h5py": "h5py", "skimage": "scikit-image", "scipy": "scipy",
        "cv2": "opencv-python-headless", "tqdm": "tqdm", "matplotlib": "matplotlib", "google.protobuf": "protobuf",
        "numpy": "numpy", "pytest": "pytest", "sklearn": "scikit-learn"}
print(" ".join(pkg for mod, pkg in need.items() if importlib.util.find_spec(mod.split(".")[0]) is None))
EOF
}

install() {
  # the toolkit itself, without letting pip touch the CUDA torch (--no-deps; nothing to download)
  $PY -m pip install -q --no-deps --no-build-isolation -e . || return 1
  local missing
  missing=$(missing_modules)
  if [ -n "$missing" ]; then
    echo "missing: $missing"
    if [ -n "${WHEELS:-}" ]; then
      # shellcheck disable=SC2086
      $PY -m pip install -q --no-index --find-links "$WHEELS" $missing || return 1
    elif ! $PY -m pip install -q $missing; then   # shellcheck disable=SC2086
      echo "cannot install $missing: this machine reaches no package index. On a connected machine run"
      echo "  bash tools/device_check.sh --download-wheels wheels"
      echo "copy the folder here and rerun with WHEELS=wheels"
      return 1
    fi
  fi
  missing=$(missing_modules)
  if [ -n "$missing" ]; then echo "still missing: $missing"; return 1; fi
  if ! $PY -c "from torchcaffe.proto import caffe_pb2" 2>/dev/null; then
    echo "caffe_pb2 does not load with this protobuf; installing protobuf>=5.26"
    if [ -n "${WHEELS:-}" ]; then
      $PY -m pip install -q --no-index --find-links "$WHEELS" "protobuf>=5.26" || return 1
    else
      $PY -m pip install -q "protobuf>=5.26" || return 1
    fi
  fi
  $PY -c "import torch, torchcaffe, cic, colorization; from torchcaffe.proto import caffe_pb2
print('toolkit imported with torch', torch.__version__, 'CUDA', torch.cuda.is_available())"
}

cuda_tests() {
  if [ -z "$TORCHCAFFE_GOLDEN" ]; then
    echo "BVLC Caffe's golden data (caffe_golden) is not here: set GOLDEN=/path/to/caffe_golden"
    return 1
  fi
  echo "golden data: $TORCHCAFFE_GOLDEN"
  $PY -m pytest -q -p no:cacheprovider -rs tests/test_layers_cuda.py tests/test_cuda_net.py
}

train() {
  local solver="$OUT/solver.prototxt" prefix="$OUT/snapshots/demo"
  mkdir -p "$OUT/snapshots"
  sed -e "s/^max_iter: .*/max_iter: $ITERS/" -e "s/^snapshot: .*/snapshot: $ITERS/" \
      -e "s/^display: .*/display: 20/" -e "s/^test_interval: .*/test_interval: $ITERS/" \
      -e "s/^solver_mode: .*/solver_mode: GPU/" -e "s#^snapshot_prefix: .*#snapshot_prefix: \"$prefix\"#" \
      prototxt/demo/solver.prototxt > "$solver"
  $PY -m torchcaffe.cli train -solver "$solver" -gpu 0 > "$OUT/train_gpu.log" 2>&1 || { tail -n 40 "$OUT/train_gpu.log"; return 1; }
  grep -E "Iteration [0-9]+ \(|Test net output|Optimization Done|Snapshotting to" "$OUT/train_gpu.log"
  grep -q "Optimization Done" "$OUT/train_gpu.log" || { echo "training did not finish"; return 1; }
  if grep -E "loss = (nan|inf|-inf)" "$OUT/train_gpu.log"; then echo "the loss is not finite"; return 1; fi
  # resume from the snapshot for 20 more iterations (the CUDA random state comes back with it)
  sed -i "s/^max_iter: .*/max_iter: $((ITERS + 20))/" "$solver"
  $PY -m torchcaffe.cli train -solver "$solver" -gpu 0 -snapshot "${prefix}_iter_${ITERS}.solverstate" \
    > "$OUT/resume_gpu.log" 2>&1 || { tail -n 40 "$OUT/resume_gpu.log"; return 1; }
  grep -E "Restored data positions|Optimization Done" "$OUT/resume_gpu.log"
  grep -q "Restored data positions and random generator states" "$OUT/resume_gpu.log" || { echo "resume not exact"; return 1; }
}

bench() {
  $PY tools/bench_deploy.py --gpu 0 --iterations 20 && $PY tools/bench_soft_encoding.py --device cuda --repeats 9
}

step gpu "CUDA device visible to torch" check_gpu
CARD=$($PY -c "import torch; print(torch.cuda.get_device_name(0))")
step install "toolkit installed into $PY" install
step cuda "CUDA tests (layers, golden net, seeded nets, CPU vs CUDA training)" cuda_tests
step data "demo data (LMDBs, prior) from scikit-image photos" $PY tools/demo.py --data-only --crops 20
step train "caffe train -gpu 0: $ITERS iterations of the demo net, snapshot, exact resume" train
step bench "deploy and soft-encoding benchmarks on the GPU" bench
summary PASS
