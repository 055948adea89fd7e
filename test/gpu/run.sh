#!/usr/bin/env bash
# The GPU suite, on the GPU machine (see ../shared/device/): every CUDA op against the CPU op, whole models
# against transformers, graphs and overlap, the server suite on --device cuda, and a compute-sanitizer run.
#   source .device/setup.sh && bash test/gpu/run.sh [LOG_DIR]
# Carry .device and build/libmsgl_cuda.so{,.sources}; the CPU library and the fixtures are built here.
set -uo pipefail
cd "$(dirname "$0")/../.."
logs=${1:-${OUT:-/tmp}/gpu-logs}
mkdir -p "$logs"
status=0
step() { # name, command...
  local name=$1; shift
  local started=$SECONDS
  if "$@" >"$logs/$name.log" 2>&1; then echo "PASS $name ($((SECONDS - started)) s)"; else echo "FAIL $name ($((SECONDS - started)) s): see $logs/$name.log"; tail -40 "$logs/$name.log"; status=1; fi
  grep -E "^ *[0-9]+ (pass|fail)|skip" "$logs/$name.log" | tail -3 | sed 's/^/    /'
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
step build bun run build cpu
step fixtures bun run fixtures
step ops bun test test/gpu/elementwise.test.ts test/gpu/attention.test.ts test/gpu/sampling.test.ts test/gpu/dependent_launch.test.ts
step models bun test test/gpu/model.test.ts
step engine bun test test/gpu/engine.test.ts
step tp bun test test/gpu/all_reduce.test.ts test/gpu/tp.test.ts
step multinode bun test test/gpu/multinode.test.ts
step server env MINISGL_TEST_DEVICE=cuda bun test test/server.test.ts
step memcheck compute-sanitizer --tool memcheck --error-exitcode 1 bun test/gpu/memcheck_run.ts
exit $status
