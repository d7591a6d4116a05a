#!/usr/bin/env bash
# Side by side: `detwasm run` against `wasmtime run` of the same wasmtime version
# (48.0.8), in one run. On the probe module (fixtures/probes/probe.wasm, modules/probe):
#   small  per-job overhead of a module that does nothing (`exit 0`), warm caches on both
#          sides (wasmtime with its cache on: -C cache=y);
#   int    a compute-heavy integer loop (`int N`: xorshift, modulo), wasmtime's defaults;
#   float  a float-heavy loop (`float N`: a 3-body loop, mul, div, sqrt).
# On C programs built here with clang for wasm32-wasi (benches/workloads/, skipped with a
# note when clang or wasi-libc is missing; scripts/setup.sh installs both):
#   nbody  the Benchmarks Game n-body (5 bodies, float-heavy, a call per pair and step);
#   fib    naive recursive Fibonacci (integer, nearly all calls: per-call costs show).
# On a Rust program built here with cargo for wasm32-wasip1 (benches/workloads/nbody-rs,
# skipped with a note when the target is missing; scripts/setup.sh adds it):
#   nbodyrs  n-body with the bodies in a fixed-size array in linear memory, --release:
#          the float-loop shape whose stores reach the NaN pass's observation points.
# On CPython 3.12 built for WASI (target/workloads/python-3.12.0.wasm, fetched by
# scripts/fetch-workloads.sh; skipped with a note when missing), both sides with warm
# module caches (wasmtime -C cache=y), the scripts of benches/workloads/py/:
#   pyint  a million iterations of integer arithmetic and bit operations;
#   pyfloat  a million iterations of float arithmetic, sqrt and abs;
#   pynbody  n-body on floats in lists (PYNBODY_N steps);
#   cold   the first run of CPython (`-c pass`) with no module cache on either side
#          (detwasm: a new empty cache folder per run; wasmtime: -C cache=n): the passes
#          and the compile, every time.
# Prints the median milliseconds of a run on each side (runs interleaved), the ratio of
# the medians detwasm / wasmtime and the ratio of the fastest runs (lower is better; a
# verifiable job may not run faster than its instruction-counted, NaN-canonical form).
# Both sides must print the same output (checked). Figures go in benches/RESULTS-run.md,
# never in tests. Not run in CI.
#
#   DETWASM   the detwasm binary (default target/release/detwasm, else target/debug/detwasm:
#             dependencies, Cranelift included, are optimised in the dev profile too, so
#             guest code is compiled to the same machine code; only the host side differs)
#   WASMTIME  wasmtime 48.0.8 (default: `wasmtime` on PATH if it is 48.0.8, else
#             target/wasmtime-cli-48.0.8/bin/wasmtime, installed there on first use with
#             cargo install --locked wasmtime-cli@48.0.8 --root target/wasmtime-cli-48.0.8,
#             about 15 minutes on 2 cores; NO_INSTALL=1 to refuse)
#   RUNS      runs of the small case (default 50); HEAVY_RUNS for the others (default 3)
set -euo pipefail
cd "$(dirname "$0")/.."

DETWASM=${DETWASM:-}
if [[ -z $DETWASM ]]; then
  if [[ -x target/release/detwasm ]]; then DETWASM=target/release/detwasm; else DETWASM=target/debug/detwasm; fi
fi
WT_VERSION=48.0.8
WT_ROOT=target/wasmtime-cli-$WT_VERSION
if [[ -z ${WASMTIME:-} ]]; then
  if command -v wasmtime >/dev/null 2>&1 && [[ $(wasmtime --version) == *" $WT_VERSION"* ]]; then
    WASMTIME=$(command -v wasmtime)
  else
    WASMTIME=$WT_ROOT/bin/wasmtime
    if [[ ! -x $WASMTIME ]]; then
      [[ -z ${NO_INSTALL:-} ]] || { echo "no wasmtime $WT_VERSION (NO_INSTALL is set)" >&2; exit 1; }
      echo "==> cargo install --locked wasmtime-cli@$WT_VERSION --root $WT_ROOT" >&2
      cargo install --locked "wasmtime-cli@$WT_VERSION" --root "$WT_ROOT" >&2
    fi
  fi
fi
RUNS=${RUNS:-50}
HEAVY_RUNS=${HEAVY_RUNS:-3}
INT_N=${INT_N:-300000000}
FLOAT_N=${FLOAT_N:-20000000}
NBODY_N=${NBODY_N:-5000000}
FIB_N=${FIB_N:-36}
NBODYRS_N=${NBODYRS_N:-5000000}
PYNBODY_N=${PYNBODY_N:-20000}
PROBE=fixtures/probes/probe.wasm

[[ -x $DETWASM ]] || { echo "no detwasm binary at $DETWASM (cargo build first)" >&2; exit 1; }
[[ -x $WASMTIME ]] || { echo "wasmtime not found at $WASMTIME" >&2; exit 1; }
wt_version=$("$WASMTIME" --version)
[[ $wt_version == *$WT_VERSION* ]] || echo "warning: $wt_version is not wasmtime $WT_VERSION" >&2

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export DETWASM_CACHE_DIR=$work/detwasm-cache
n=0

# The C workloads, built once per run (their bytes are not committed).
C_WORKLOADS=
if command -v clang >/dev/null 2>&1 && [[ -e /usr/lib/wasm32-wasi/libc.a ]]; then
  for w in nbody fib; do
    clang --target=wasm32-wasi -O2 -g0 -Wl,--strip-all -o "$work/$w.wasm" "benches/workloads/$w.c"
  done
  C_WORKLOADS=1
else
  echo "note: clang or wasi-libc missing: nbody and fib skipped (scripts/setup.sh installs them)" >&2
fi
RUST_WORKLOAD=
if rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip1; then
  cargo build --quiet --release --target wasm32-wasip1 \
    --manifest-path benches/workloads/nbody-rs/Cargo.toml --target-dir "$work/nbody-rs"
  cp "$work/nbody-rs/wasm32-wasip1/release/nbody-rs.wasm" "$work/nbodyrs.wasm"
  RUST_WORKLOAD=1
else
  echo "note: the wasm32-wasip1 target is missing: nbodyrs skipped (scripts/setup.sh adds it)" >&2
fi

# `detwasm_run [MODULE] -- args...` / `wasmtime_run [flags...] [MODULE] -- args...`: the
# module defaults to the probe.
detwasm_run() {
  local flags=() module=$PROBE
  while [[ $1 == -* && $1 != -- ]]; do flags+=("$1" "$2"); shift 2; done
  if [[ $1 != -- ]]; then module=$1; shift; fi
  shift
  n=$((n + 1))
  # $BASHPID: timing loops run in subshells, each with its own copy of $n.
  last_out="$work/out-$BASHPID-$n"
  "$DETWASM" run --fuel 100000000000000 "${flags[@]}" -o "$last_out" "$module" -- "$@" >/dev/null 2>"$work/detwasm-stderr" \
    || { echo "detwasm run $* failed:" >&2; cat "$work/detwasm-stderr" >&2; exit 1; }
}
wasmtime_run() {
  local flags=() module=$PROBE
  while [[ $1 == -* && $1 != -- ]]; do flags+=("$1" "$2"); shift 2; done
  if [[ $1 != -- ]]; then module=$1; shift; fi
  shift
  "$WASMTIME" run "${flags[@]}" "$module" "$@" >"$work/wasmtime-stdout" \
    || { echo "wasmtime run $* failed" >&2; exit 1; }
}
# No module cache: detwasm in a new empty cache folder, wasmtime with its cache off.
detwasm_cold() {
  local cache
  cache=$(mktemp -d -p "$work")
  DETWASM_CACHE_DIR=$cache detwasm_run "$@"
  rm -rf "$cache"
}
# Uncached, wasmtime 48 sometimes fails to instantiate CPython here ("cannot add seals
# to the memfd: Device or resource busy", once in a run of the script; never when run
# alone): such a run is made once more, with a note.
wasmtime_cold() {
  (wasmtime_run -C cache=n "$@") 2>"$work/wasmtime-stderr" && return
  echo "note: wasmtime run -C cache=n failed ($(grep -m1 -o 'cannot add seals[^)]*' "$work/wasmtime-stderr" || echo see below)); made again" >&2
  wasmtime_run -C cache=n "$@"
}
# ms of one run of "$@".
one_run_ms() {
  local start end
  start=$(date +%s%N)
  "$@"
  end=$(date +%s%N)
  echo "scale=3; ($end - $start) / 1000000" | bc
}
# The median of the numbers on stdin, and the smallest.
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
smallest() { sort -n | head -1; }
ratio() { echo "scale=2; $1 / $2" | bc; }

echo "detwasm:  $DETWASM ($("$DETWASM" --version))"
echo "wasmtime: $WASMTIME ($wt_version)"
echo "machine:  $(nproc) cores, $(uname -sm)"
echo "load:     $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min) before"
echo

# Warm both caches, and check both see the same computation.
same() { # case
  [[ $(cat "$last_out/stdout") == $(cat "$work/wasmtime-stdout") ]] || { echo "$1 results differ" >&2; exit 1; }
}
detwasm_run -- exit 0
wasmtime_run -C cache=y -- exit 0
detwasm_run -- int 1000
wasmtime_run -- int 1000
same int
detwasm_run -- float 1000
wasmtime_run -- float 1000
same float
if [[ -n $C_WORKLOADS ]]; then
  detwasm_run "$work/nbody.wasm" -- 1000
  wasmtime_run "$work/nbody.wasm" -- 1000
  same nbody
  detwasm_run "$work/fib.wasm" -- 20
  wasmtime_run "$work/fib.wasm" -- 20
  same fib
fi
if [[ -n $RUST_WORKLOAD ]]; then
  detwasm_run "$work/nbodyrs.wasm" -- 1000
  wasmtime_run "$work/nbodyrs.wasm" -- 1000
  same nbodyrs
fi
PYTHON=target/workloads/python-3.12.0.wasm
PY_D=(--input benches/workloads/py "$PYTHON")
PY_W=(-C cache=y --dir benches/workloads/py::/inputs "$PYTHON")
if [[ -e $PYTHON ]]; then
  for w in intloop floatloop; do
    detwasm_run "${PY_D[@]}" -- "/inputs/$w.py"
    wasmtime_run "${PY_W[@]}" -- "/inputs/$w.py"
    same "$w"
  done
  detwasm_run "${PY_D[@]}" -- /inputs/nbody.py 100
  wasmtime_run "${PY_W[@]}" -- /inputs/nbody.py 100
  same pynbody
else
  echo "note: $PYTHON missing: pyint and pyfloat skipped (scripts/fetch-workloads.sh fetches it)" >&2
fi

row() { # case runs detwasm-args... ::: wasmtime-args...
  local name=$1 runs=$2; shift 2
  local d_args=() w_args=()
  while [[ $1 != ::: ]]; do d_args+=("$1"); shift; done
  shift
  w_args=("$@")
  # Interleaved, one run of each side at a time, so that a change of the machine's load
  # or clock during the row weighs on both sides alike.
  local ds=() ws=()
  for _ in $(seq "$runs"); do
    ds+=("$(one_run_ms "${D_RUN:-detwasm_run}" "${d_args[@]}")")
    ws+=("$(one_run_ms "${W_RUN:-wasmtime_run}" "${w_args[@]}")")
  done
  local d w dmin wmin
  d=$(printf '%s\n' "${ds[@]}" | median)
  w=$(printf '%s\n' "${ws[@]}" | median)
  dmin=$(printf '%s\n' "${ds[@]}" | smallest)
  wmin=$(printf '%s\n' "${ws[@]}" | smallest)
  printf '%-8s %12s %12s %8s %10s\n' "$name" "$d" "$w" "$(ratio "$d" "$w")" "$(ratio "$dmin" "$wmin")"
}
printf '%-8s %12s %12s %8s %10s\n' case "detwasm ms" "wasmtime ms" ratio "ratio(min)"
row small "$RUNS" -- exit 0 ::: -C cache=y -- exit 0
row int "$HEAVY_RUNS" -- int "$INT_N" ::: -- int "$INT_N"
row float "$HEAVY_RUNS" -- float "$FLOAT_N" ::: -- float "$FLOAT_N"
if [[ -n $C_WORKLOADS ]]; then
  row nbody "$HEAVY_RUNS" "$work/nbody.wasm" -- "$NBODY_N" ::: "$work/nbody.wasm" -- "$NBODY_N"
  row fib "$HEAVY_RUNS" "$work/fib.wasm" -- "$FIB_N" ::: "$work/fib.wasm" -- "$FIB_N"
fi
if [[ -n $RUST_WORKLOAD ]]; then
  row nbodyrs "$HEAVY_RUNS" "$work/nbodyrs.wasm" -- "$NBODYRS_N" ::: "$work/nbodyrs.wasm" -- "$NBODYRS_N"
fi
if [[ -e $PYTHON ]]; then
  row pyint "$HEAVY_RUNS" "${PY_D[@]}" -- /inputs/intloop.py ::: "${PY_W[@]}" -- /inputs/intloop.py
  row pyfloat "$HEAVY_RUNS" "${PY_D[@]}" -- /inputs/floatloop.py ::: "${PY_W[@]}" -- /inputs/floatloop.py
  row pynbody "$HEAVY_RUNS" "${PY_D[@]}" -- /inputs/nbody.py "$PYNBODY_N" ::: "${PY_W[@]}" -- /inputs/nbody.py "$PYNBODY_N"
  D_RUN=detwasm_cold W_RUN=wasmtime_cold \
    row cold "$HEAVY_RUNS" "$PYTHON" -- -c pass ::: --dir benches/workloads/py::/inputs "$PYTHON" -- -c pass
fi
echo "load:     $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min) after"
