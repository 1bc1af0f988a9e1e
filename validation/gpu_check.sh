#!/usr/bin/env bash
# The device check, prepared to run in a few minutes on a GPU machine (the task's device budget is 15 minutes):
# the CUDA parity tests, then the training-step benchmark on the GPU at the paper's widths (fewer repeats).
# Usage on the device machine, from the repository root: bash validation/gpu_check.sh
set -euo pipefail
OUT=${OUT:-results}
export NUMBA_CACHE_DIR=${NUMBA_CACHE_DIR:-$PWD/.numba_cache}
python -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0))"
python -m pytest -q -ra tests/test_gqtorch_cuda.py
python -m validation bench gradients --device cuda --repeats 5 --widths 100,500,1000,2000,3000 \
    --out "$OUT/bench_gradients_cuda.json" | tee "$OUT/bench_gradients_cuda.md"
