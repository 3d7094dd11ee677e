#!/usr/bin/env bash
# The CUDA checks in one run, on a machine with an NVIDIA GPU (the `device` tool's H200: run it
# from the repository root as one command, `bash bench/gpu_check.sh`, with a timeout of ~9 min).
#   1. builds vgkern with VGKERN_CUDA=ON into a private directory (offline: the Python there
#      must already have numpy, scipy, torch, pytest, hypothesis, pybind11, scikit-build-core,
#      and nvidia-cublas or a CUDA toolkit's libcublas);
#   2. runs every test with a CUDA case (tests/test_cuda.py and the `device`-parametrised
#      numerics tests) with VGKERN_CUDA_SYNC=1, so that a failing kernel is named;
#   3. runs compute-sanitizer memcheck on one small step, where the machine supports it;
#   4. runs the GPU benchmark (bench_mlp.py --device cuda).
# Logs and the benchmark's JSON go to $OUT (the device tool's folder) or /tmp/vgkern-gpu-check.
# Finishes in under 8 minutes on one H200.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-/tmp/vgkern-gpu-check}"
mkdir -p "$out"
python="${PYTHON:-python3}"
work="$(mktemp -d)"
status=0
step() { echo "== $(date +%T) $*" | tee -a "$out/summary.txt"; }

step "GPU"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | tee -a "$out/summary.txt"

step "build (VGKERN_CUDA=ON)"
if ! VGKERN_CUDA=ON "$python" -m pip install --no-build-isolation --no-deps --no-index -q \
    --target "$work/site" . -Cbuild-dir="$work/build" > "$out/build.log" 2>&1; then
  tail -40 "$out/build.log"
  echo "gpu_check: build failed" | tee -a "$out/summary.txt"
  exit 1
fi
export PYTHONPATH="$work/site"
(cd "$work" && "$python" -c "import vgkern, json; print(json.dumps(vgkern.build_info(), default=str)); \
print('cuBLAS from', vgkern._cuda.load_cublas()); assert vgkern.cuda_available()") \
  2>&1 | tee -a "$out/summary.txt" || { echo "gpu_check: no usable CUDA"; exit 1; }

step "CUDA tests (VGKERN_CUDA_SYNC=1)"
VGKERN_CUDA_SYNC=1 timeout 300 "$python" -m pytest -q -p no:cacheprovider -x -k cuda \
  -c pyproject.toml --rootdir . tests/test_cuda.py tests/test_mlp_reference.py \
  tests/test_batchnorm.py tests/test_recurrent.py tests/test_mlp_crosscheck.py \
  tests/test_log_scale.py tests/test_norm_edge_cases.py \
  tests/test_determinism.py tests/test_ops.py > "$out/tests.log" 2>&1 || status=1
tail -30 "$out/tests.log" | tee -a "$out/summary.txt"

if command -v compute-sanitizer > /dev/null; then
  step "compute-sanitizer memcheck, one step"
  (cd "$work" && timeout 120 compute-sanitizer --tool memcheck --error-exitcode 3 "$python" -c "
import numpy as np, vgkern
for dtype in ('float32', 'float64'):
    for bn in (False, True):
        net = vgkern.MLP([37, 64, 50, 10], device='cuda', dtype=dtype, batch_norm=bn)
        x = np.ones((29, 37), dtype) + np.arange(37, dtype=dtype)
        net.step(x, np.zeros((29, 10), dtype), log_scale=True)
        net.step(x, np.arange(29) % 10, loss='cross_entropy')
    for net in (vgkern.LSTM(5, 33, dtype=dtype, device='cuda'),
                vgkern.RNN(5, 33, dtype=dtype, device='cuda')):
        net.step(np.ones((7, 3, 5), dtype), np.zeros((7, 3, 33), dtype), loss='mse_sequence')
print('memcheck run done')") > "$out/memcheck.log" 2>&1
  echo "memcheck exit $? (3: errors found; see memcheck.log)" | tee -a "$out/summary.txt"
  tail -5 "$out/memcheck.log" | tee -a "$out/summary.txt"
fi

step "GPU benchmark"
timeout 240 "$python" bench/bench_mlp.py --device cuda --blocks 20 --json "$out/results_mlp.json" \
  2>&1 | tee "$out/bench.log" | tee -a "$out/summary.txt" || status=1
step "done, status $status"
exit "$status"
