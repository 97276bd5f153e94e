#!/usr/bin/env bash
# The GPU check, one command, under 8 minutes on one GPU (the tests get 4 minutes at most, the benchmark 200 s):
#   1. the GPU-marked tests (pytest -m gpu: one short training per precision, auto, channels_last, --compile,
#      DDP with nccl on one process through torchrun);
#   2. bench/gpu.py: ResNet-50 end to end vs its pure forward+backward rate (target >= 0.90).
# Both run even if the first fails; the exit code is 1 if either failed, 2 without a CUDA GPU.
#
#   bash bench/gpu_check.sh                 # from anywhere; extra arguments go to bench/gpu.py
#   bash bench/gpu_check.sh --images 2048   # a shorter benchmark
set -uo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-4}" PYTHONUNBUFFERED=1

if ! python3 -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: no CUDA GPU is visible to torch here; nothing to check." >&2
    exit 2
fi
# The tests start `python -m zoo` under torchrun: zoo (and its built-in plugins) must import from this tree.
if ! python3 -c "import sys, zoo, zoo_builtin_plugins; sys.exit(0 if zoo.__file__.startswith('$PWD/') else 1)" \
        2>/dev/null; then
    python3 -m pip install --quiet --no-deps --no-build-isolation -e . \
        || { echo "gpu_check: could not install zoo from $PWD (pip install -e .)" >&2; exit 2; }
fi

echo "== $(date -u '+%Y-%m-%d %H:%M:%S UTC')  $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
python3 -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, 'cuDNN',
      torch.backends.cudnn.version(), 'bf16', torch.cuda.is_bf16_supported())"

started=$SECONDS
echo "== pytest -m gpu"
timeout 240 python3 -m pytest -m gpu -q -rs tests/test_gpu.py
tests=$?
echo "== tests: exit $tests in $((SECONDS - started)) s"

started=$SECONDS
echo "== bench/gpu.py $*"
timeout 200 python3 bench/gpu.py "$@"
bench=$?
echo "== bench: exit $bench in $((SECONDS - started)) s"

if [ "$tests" -ne 0 ] || [ "$bench" -ne 0 ]; then
    exit 1
fi
