#!/usr/bin/env bash
# One call on a GPU machine (issue "GPU speed"): install this checkout offline, run the tests
# on the real device, the offline PTX report, then the full benchmark suite on the cuda backend
# against cuDNN (TF32 off, set by the bench) with autotuning on, and check the speed goals.
#   bash benchmarks/gpu_run.sh            # results under $OUT (default ./gpu-out)
# Set GPU_RUN_TESTS=0 to skip the test suite when device time is short.
set -uo pipefail
OUT=${OUT:-./gpu-out}
mkdir -p "$OUT"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
pip install -q --no-deps --no-build-isolation -e . > "$OUT/install.log" 2>&1 || { cat "$OUT/install.log"; exit 1; }
tests=0
if [ "${GPU_RUN_TESTS:-1}" != 0 ]; then
  # The CUDA tests on the real device (not the simulator: tests/conftest.py sees /dev/nvidia*).
  python -m pytest tests -q -x -k "cuda" 2>&1 | tee "$OUT/tests.txt" | tail -15
  tests=${PIPESTATUS[0]}
fi
# Tuned choices land in $OUT so they come back with the results.
export CONVCORE_AUTOTUNE=1 CONVCORE_CACHE_DIR="$OUT/tune-cache"
convcore bench --suite full --backend cuda --json "$OUT/gpu.json" 2>"$OUT/bench.stderr" | tee "$OUT/gpu_table.txt"
bench=${PIPESTATUS[0]}
python -m convcore.bench.goals "$OUT/gpu.json" | tee "$OUT/goals.md"
echo "tests exit $tests, bench exit $bench"
exit $(( tests || bench ))
