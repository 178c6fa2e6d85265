#!/usr/bin/env bash
# All GPU work of a session in one script.
#
#   scripts/gpu-check.sh prepare   (here, no GPU needed) build the cuda test binaries in release
#                                  and copy them, stripped, into carry/bin (git-ignored); then
#                                  run the device tool with carry: ["carry"].
#   scripts/gpu-check.sh run       (on the GPU machine) kernel compile check, parity tests, the
#                                  benchmarks (cuda_parity's ignored bench:: tests) and the step
#                                  profile (profile::gpu_profile); tables on stdout, full log
#                                  under $OUT (or ./gpu-check-out). Uses cargo when the machine
#                                  has it, otherwise the binaries in carry/bin (xz-compressed
#                                  copies fit the device tool's 64 MiB better).
# Record the results (date, device, command, numbers) in docs/gpu-results.md.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-run}
TESTS="cuda_kernels_compile cuda_parity backends"

if [ "$mode" = prepare ]; then
  mkdir -p carry/bin
  for t in $TESTS; do
    exe=$(nice -n 19 cargo test --release --features cuda --test "$t" --no-run --message-format=json 2>/dev/null |
      python3 -c 'import sys,json
for l in sys.stdin:
    m=json.loads(l)
    # The test target itself (not the ponder binary that integration tests also build).
    if (m.get("reason")=="compiler-artifact" and m.get("executable")
            and m["target"]["name"]==sys.argv[1] and m["profile"]["test"]):
        print(m["executable"])' "$t" | tail -1)
    [ -n "$exe" ] || { echo "no test executable found for $t" >&2; exit 1; }
    cp "$exe" "carry/bin/$t"
    strip "carry/bin/$t" || true
  done
  ls -la carry/bin
  exit 0
fi

OUT=${OUT:-$PWD/gpu-check-out}
mkdir -p "$OUT"
LOG=$OUT/gpu-check.log
{
  echo "== $(date -u +%FT%TZ) $(hostname)"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
  # The machine's own toolkit NVRTC (CUDA 13.0) matches what its driver can JIT.
  for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
    [ -d "$d" ] && export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  done
  # cuBLAS may live only in the Python venv's nvidia wheels: add those after the toolkit.
  for d in $(python3 -c 'import nvidia,os;[print(os.path.join(p,q,"lib")) for p in nvidia.__path__ for q in sorted(os.listdir(p))]' 2>/dev/null); do
    [ -d "$d" ] && export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$d"
  done
  echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
  for l in libcuda.so libnvrtc.so libcublas.so libcublasLt.so; do
    echo "$l: $( (ldconfig -p; for d in ${LD_LIBRARY_PATH:+${LD_LIBRARY_PATH//:/ }}; do ls "$d" 2>/dev/null; done) | grep -o "$l[.0-9]*" | sort -u | tr '\n' ' ')"
  done
  export CI=true
  # A missing device fails the CUDA tests here instead of skipping them.
  export PONDER_EXPECT_GPU=1
  status=0
  if command -v cargo >/dev/null; then
    run_test() { cargo test --release --features cuda --test "$1" -- --nocapture --test-threads=1 "${@:2}"; }
  else
    run_test() { "carry/bin/$1" --nocapture --test-threads=1 "${@:2}"; }
  fi
  for t in cuda_kernels_compile cuda_parity backends; do
    echo "== $t"
    run_test "$t" || status=1
  done
  echo "== gpu_bench"
  run_test cuda_parity --ignored bench:: || status=1
  echo "== gpu_profile"
  run_test cuda_parity --ignored profile::gpu_profile || status=1
  echo "== exit status $status"
  exit $status
} 2>&1 | tee "$LOG"
rc=${PIPESTATUS[0]}
echo
echo "== summary"
grep -E "^(test |\| |floors:|launch:|device:|.*greedy decode|.*relative (logit )?error|.*refuses|.*SKIPPED)" "$LOG" || true
exit "$rc"
