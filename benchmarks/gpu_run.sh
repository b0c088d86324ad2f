#!/usr/bin/env bash
# One call on a GPU machine (issue "GPU speed"): install this checkout offline, run the tests
# on the real device, then the full benchmark suite on the cuda backend.
#   bash benchmarks/gpu_run.sh            # results under $OUT (default ./gpu-out)
set -uo pipefail
OUT=${OUT:-./gpu-out}
mkdir -p "$OUT"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
pip install -q --no-deps --no-build-isolation -e . > "$OUT/install.log" 2>&1 || { cat "$OUT/install.log"; exit 1; }
python -m pytest tests -q 2>&1 | tee "$OUT/tests.txt" | tail -15
tests=${PIPESTATUS[0]}
convcore bench --suite full --backend cuda --json "$OUT/gpu.json" 2>"$OUT/bench.stderr" | tee "$OUT/gpu_table.txt"
bench=${PIPESTATUS[0]}
echo "tests exit $tests, bench exit $bench"
exit $(( tests || bench ))
