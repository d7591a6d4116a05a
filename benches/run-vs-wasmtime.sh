#!/usr/bin/env bash
# Side by side: `detwasm run` against `wasmtime run` of the same wasmtime version
# (48.0.8), on the probe module (fixtures/probes/probe.wasm, modules/probe):
#   small  per-job overhead of a module that does nothing (`exit 0`), warm caches on both
#          sides (wasmtime with its cache on: -C cache=y);
#   int    a compute-heavy integer loop (`int N`), wasmtime with its defaults;
#   float  a float-heavy loop (`float N`: mul, div, sqrt), wasmtime with its defaults.
# Prints milliseconds per run and the ratio detwasm / wasmtime. Not run in CI.
#
#   DETWASM   the detwasm binary (default target/release/detwasm, else target/debug/detwasm)
#   WASMTIME  wasmtime 48.0.8 (default: `wasmtime` on PATH), e.g. from
#             cargo install --locked wasmtime-cli@48.0.8 --root /some/where
#   RUNS      runs of the small case (default 50); HEAVY_RUNS for int/float (default 3)
set -euo pipefail
cd "$(dirname "$0")/.."

DETWASM=${DETWASM:-}
if [[ -z $DETWASM ]]; then
  if [[ -x target/release/detwasm ]]; then DETWASM=target/release/detwasm; else DETWASM=target/debug/detwasm; fi
fi
WASMTIME=${WASMTIME:-$(command -v wasmtime || true)}
RUNS=${RUNS:-50}
HEAVY_RUNS=${HEAVY_RUNS:-3}
INT_N=${INT_N:-300000000}
FLOAT_N=${FLOAT_N:-20000000}
PROBE=fixtures/probes/probe.wasm

[[ -x $DETWASM ]] || { echo "no detwasm binary at $DETWASM (cargo build first)" >&2; exit 1; }
[[ -n $WASMTIME && -x $WASMTIME ]] || { echo "wasmtime not found: set WASMTIME (wasmtime-cli 48.0.8)" >&2; exit 1; }
wt_version=$("$WASMTIME" --version)
[[ $wt_version == *48.0.8* ]] || echo "warning: $wt_version is not wasmtime 48.0.8" >&2

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export DETWASM_CACHE_DIR=$work/detwasm-cache
n=0

detwasm_run() { # args...
  n=$((n + 1))
  # $BASHPID: timing loops run in subshells, each with its own copy of $n.
  last_out="$work/out-$BASHPID-$n"
  "$DETWASM" run --fuel 100000000000000 -o "$last_out" "$PROBE" -- "$@" >/dev/null 2>"$work/detwasm-stderr" \
    || { echo "detwasm run $* failed:" >&2; cat "$work/detwasm-stderr" >&2; exit 1; }
}
wasmtime_run() { # flags... -- args...
  local flags=()
  while [[ $1 != -- ]]; do flags+=("$1"); shift; done
  shift
  "$WASMTIME" run "${flags[@]}" "$PROBE" "$@" >"$work/wasmtime-stdout" \
    || { echo "wasmtime run $* failed" >&2; exit 1; }
}
# ms per run of "$@", repeated $1 times.
per_run_ms() {
  local runs=$1; shift
  local start end
  start=$(date +%s%N)
  for _ in $(seq "$runs"); do "$@"; done
  end=$(date +%s%N)
  echo "scale=3; ($end - $start) / $runs / 1000000" | bc
}
ratio() { echo "scale=2; $1 / $2" | bc; }

echo "detwasm:  $DETWASM ($("$DETWASM" --version))"
echo "wasmtime: $WASMTIME ($wt_version)"
echo "machine:  $(nproc) cores, $(uname -sm)"
echo

# Warm both caches, and check both see the same computation.
detwasm_run exit 0
wasmtime_run -C cache=y -- exit 0
detwasm_run int 1000
wasmtime_run -- int 1000
[[ $(cat "$last_out/stdout") == $(cat "$work/wasmtime-stdout") ]] || { echo "int results differ" >&2; exit 1; }
detwasm_run float 1000
wasmtime_run -- float 1000
[[ $(cat "$last_out/stdout") == $(cat "$work/wasmtime-stdout") ]] || { echo "float results differ" >&2; exit 1; }

printf '%-8s %12s %12s %8s\n' case "detwasm ms" "wasmtime ms" ratio
d=$(per_run_ms "$RUNS" detwasm_run exit 0)
w=$(per_run_ms "$RUNS" wasmtime_run -C cache=y -- exit 0)
printf '%-8s %12s %12s %8s\n' small "$d" "$w" "$(ratio "$d" "$w")"
d=$(per_run_ms "$HEAVY_RUNS" detwasm_run int "$INT_N")
w=$(per_run_ms "$HEAVY_RUNS" wasmtime_run -- int "$INT_N")
printf '%-8s %12s %12s %8s\n' int "$d" "$w" "$(ratio "$d" "$w")"
d=$(per_run_ms "$HEAVY_RUNS" detwasm_run float "$FLOAT_N")
w=$(per_run_ms "$HEAVY_RUNS" wasmtime_run -- float "$FLOAT_N")
printf '%-8s %12s %12s %8s\n' float "$d" "$w" "$(ratio "$d" "$w")"
