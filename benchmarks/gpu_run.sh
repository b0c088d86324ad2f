#!/usr/bin/env bash
# One call on a GPU machine (issue "GPU speed"): install this checkout offline, run the CUDA tests
# on the real device, then a benchmark suite on the cuda backend against cuDNN (TF32 off, set by the
# bench) with autotuning on, and check the speed goals. Every phase has its own time limit and is
# stopped with SIGINT, so pytest still prints its summary and the bench JSON (written after every op)
# keeps the rows measured so far.
#   bash benchmarks/gpu_run.sh            # results under $OUT (default ./gpu-out)
# Knobs (environment):
#   GPU_RUN_TESTS=0        skip the tests           GPU_TEST_S=240    their time limit (s)
#   GPU_TEST_K="cuda"      pytest -k expression     GPU_TEST_WORKERS=8 pytest-xdist workers (0: none)
#   GPU_SUITE=full         bench suite              GPU_BENCH_S=300   its time limit (s)
#   GPU_CASES=...          bench --cases filter     GPU_OPS=...       bench --ops filter
#   GPU_REPEATS=20         timed calls per contender GPU_RUN_BENCH=0  skip the bench
#   GPU_PROFILE=1          then run benchmarks/gpu_profile.py (kernel vs host time), GPU_PROFILE_S=120
set -uo pipefail
OUT=${OUT:-./gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
# One interpreter for everything: on the lent machines `pip` and `python` can belong to different
# Pythons (python3 is the one that holds PyTorch there).
PY=${PY:-python3}
start=$(date +%s)
stamp() { echo "[gpu_run +$(( $(date +%s) - start ))s] $*"; }

{ nvidia-smi; $PY -m pip show numba numba-cuda torch cupy-cuda13x 2>/dev/null | grep -E "^(Name|Version)"; } \
  > "$OUT/machine.txt" 2>&1
grep -E "H100|H200|A100|Version|Name" "$OUT/machine.txt" | head -12
$PY -m pip install -q --no-deps --no-build-isolation -e . > "$OUT/install.log" 2>&1 &&
  $PY -c "import convcore.kernels.conv2d.cuda" >> "$OUT/install.log" 2>&1 || { cat "$OUT/install.log"; exit 1; }
rm -f "$OUT/install.log"  # at most 8 files come back from the device: keep the ones that say something
stamp "installed"

tests=0
if [ "${GPU_RUN_TESTS:-1}" != 0 ]; then
  # The CUDA tests on the real device (not the simulator: tests/conftest.py sees /dev/nvidia*).
  workers=()
  if [ "${GPU_TEST_WORKERS:-8}" != 0 ] && $PY -c "import xdist" 2>/dev/null; then
    workers=(-n "${GPU_TEST_WORKERS:-8}")
  fi
  timeout -s INT -k 15 "${GPU_TEST_S:-240}" $PY -m pytest tests -v -p no:cacheprovider "${workers[@]}" \
    -k "${GPU_TEST_K:-cuda}" --maxfail=30 -rfE 2>&1 | tee "$OUT/tests.txt" | grep -v -E "PASSED|^tests/" | tail -40
  # -v: one line per test in tests.txt, so a run stopped at its limit still says what passed and failed.
  echo "passed $(grep -c PASSED "$OUT/tests.txt"), failed $(grep -c -E " FAILED| ERROR" "$OUT/tests.txt")"
  tests=${PIPESTATUS[0]}
  stamp "tests exit $tests"
fi

bench=0
if [ "${GPU_RUN_BENCH:-1}" != 0 ]; then
# Tuned choices land in $OUT so they come back with the results.
export CONVCORE_AUTOTUNE=1 CONVCORE_CACHE_DIR="$OUT/tune"
bench_args=(--suite "${GPU_SUITE:-full}" --backend cuda --repeats "${GPU_REPEATS:-20}" --numpy-repeats 0
            --json "$OUT/gpu.json")
[ -n "${GPU_CASES:-}" ] && bench_args+=(--cases "$GPU_CASES")
[ -n "${GPU_OPS:-}" ] && bench_args+=(--ops "$GPU_OPS")
timeout -s INT -k 15 "${GPU_BENCH_S:-300}" $PY -m convcore bench "${bench_args[@]}" > /dev/null 2> "$OUT/log.txt"
bench=$?
stamp "bench exit $bench"
grep -v "^bench " "$OUT/log.txt" | tail -5
if [ -f "$OUT/gpu.json" ]; then
  # The table again from the JSON (complete even when the bench was stopped at its limit).
  $PY - "$OUT/gpu.json" <<'EOF' > "$OUT/gpu_table.txt"
import sys
from convcore.bench.report import format_machine, format_table, load_json
machine, rows = load_json(sys.argv[1])
print(format_machine(machine))
print(format_table(rows))
EOF
  $PY -m convcore.bench.goals "$OUT/gpu.json" > "$OUT/goals.md" 2>&1
  tail -8 "$OUT/goals.md"
fi
fi
if [ "${GPU_PROFILE:-0}" != 0 ]; then
  # After the bench, so the profiled calls use the choices it tuned (same cache).
  # Kernel time (CUPTI) against cuDNN's, and the host overhead of a call: benchmarks/gpu_profile.py.
  timeout -s INT -k 15 "${GPU_PROFILE_S:-120}" $PY benchmarks/gpu_profile.py --out "$OUT" 2>>"$OUT/log.txt"
  stamp "profile exit $?"
fi

stamp "done: tests exit $tests, bench exit $bench"
exit $(( tests || bench ))
