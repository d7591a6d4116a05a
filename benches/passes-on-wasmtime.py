#!/usr/bin/env python3
"""What each pass's code costs a workload, under `wasmtime run` 48.0.8 alone.

    python3 benches/passes-on-wasmtime.py [--workload fib] [--runs 11] [--callgrind | --compile]

Builds the workload (`--workload`, default fib; `all` for each in turn):

    fib      benches/workloads/fib.c (clang, wasm32-wasi, -O2): nearly all calls
    nbody    benches/workloads/nbody.c: float-heavy, a call per pair and step
    nbodyrs  benches/workloads/nbody-rs (Rust, --release): bodies in linear memory
    int      the probe's integer loop (fixtures/probes/probe.wasm)
    float    the probe's float loop
    pyint    CPython 3.12 (target/workloads/python-3.12.0.wasm) running
             benches/workloads/py/intloop.py
    pyfloat  the same, floatloop.py
    pynbody  the same, nbody.py

writes it after fuel metering alone, NaN canonicalization alone, stack metering alone and
all the passes (`cargo run -p detwasm-runtime --example pass_variants`), compiles each
with `wasmtime compile`, and runs each `--runs` times interleaved, with a stub
`detwasm.refuel` preloaded where the fuel pass ran (it hands out all the fuel at once).
Prints the fastest and the median run of each and the ratio of the fastest to the plain
module's. The wasmtime is the one `benches/run-vs-wasmtime.sh` installs.

With `--compile`, instead: the instructions `wasmtime compile` executes to compile the
module as built, after the fuel pass and after all the passes, on one thread
(callgrind): what a cold start pays for the passes' code (`--workload pyint` for
CPython's module; the script does not matter).

With `--callgrind`, instead: the instructions the CPU executes for each module
(`valgrind --tool=callgrind`, which does not depend on the machine's load), as the
difference between a large and a small run of the workload (both from the same
precompiled module, so that start-up cancels out; compiled without AVX-512, which
valgrind's virtual CPU lacks). Figures go in
benches/RESULTS-run.md; never in tests.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WASMTIME = ROOT / "target/wasmtime-cli-48.0.8/bin/wasmtime"
PYTHON = ROOT / "target/workloads/python-3.12.0.wasm"
PROBE = ROOT / "fixtures/probes/probe.wasm"
PY = ROOT / "benches/workloads/py"
STUB = '(module (func (export "refuel") (param i64) (result i64) (i64.const 0x7fffffffffffffff)))'

# name: (arguments of a timed run, of the small and of the large callgrind run,
#        whether the module is CPython with benches/workloads/py as /inputs)
WORKLOADS = {
    "fib": (["36"], ["20"], ["30"], False),
    "nbody": (["5000000"], ["1000"], ["201000"], False),
    "nbodyrs": (["5000000"], ["1000"], ["201000"], False),
    "int": (["int", "300000000"], ["int", "1000"], ["int", "10001000"], False),
    "float": (["float", "20000000"], ["float", "1000"], ["float", "1001000"], False),
    "pyint": (["/inputs/intloop.py"], ["-c", "pass"], ["/inputs/intloop.py"], True),
    "pyfloat": (["/inputs/floatloop.py"], ["-c", "pass"], ["/inputs/floatloop.py"], True),
    "pynbody": (["/inputs/nbody.py", "20000"], ["/inputs/nbody.py", "100"],
                ["/inputs/nbody.py", "5100"], True),
}
VARIANTS = ("plain", "fuel", "nan", "stack", "all")


def build(name: str, w: Path) -> Path:
    if name in ("fib", "nbody"):
        out = w / f"{name}.wasm"
        subprocess.run(["clang", "--target=wasm32-wasi", "-O2", "-g0", "-Wl,--strip-all",
                        "-o", out, ROOT / f"benches/workloads/{name}.c"], check=True)
        return out
    if name == "nbodyrs":
        subprocess.run(["cargo", "build", "--quiet", "--release", "--target", "wasm32-wasip1",
                        "--manifest-path", ROOT / "benches/workloads/nbody-rs/Cargo.toml",
                        "--target-dir", w / "nbody-rs"], check=True)
        return w / "nbody-rs/wasm32-wasip1/release/nbody-rs.wasm"
    if name in ("int", "float"):
        return PROBE
    if not PYTHON.is_file():
        sys.exit(f"{PYTHON} is missing: scripts/fetch-workloads.sh fetches it")
    return PYTHON


def command(name: str, variant: str, compiled: Path, w: Path, args: list[str]) -> list[str]:
    cmd = [str(WASMTIME), "run", "--allow-precompiled"]
    if variant in ("fuel", "all"):
        cmd += ["--preload", f"detwasm={w / 'stub.wasm'}"]
    if WORKLOADS[name][3]:
        cmd += ["--dir", f"{PY}::/inputs"]
    return cmd + [str(compiled)] + args


# valgrind's virtual CPU has no AVX-512: modules run under it are compiled without it.
NO_AVX512 = [f"-Ccranelift-has_avx512{f}=false" for f in ("bitalg", "dq", "f", "vbmi", "vl", "vnni")]


def pass_outputs(name: str, w: Path) -> dict[str, Path]:
    """The workload as built and after each pass (`pass_variants`), by variant."""
    module = build(name, w)
    subprocess.run(["cargo", "run", "--quiet", "-p", "detwasm-runtime", "--example",
                    "pass_variants", "--", module, w / name], check=True, cwd=ROOT)
    return {"plain": module} | {v: w / f"{name}-{v}.wasm" for v in VARIANTS[1:]}


def variants(name: str, w: Path, flags: list[str]) -> dict[str, Path]:
    compiled = {}
    for v, m in pass_outputs(name, w).items():
        compiled[v] = w / f"{name}-{v}.cwasm"
        subprocess.run([WASMTIME, "compile", *flags, m, "-o", compiled[v]], check=True)
    return compiled


def timed(name: str, w: Path, runs: int) -> None:
    compiled = variants(name, w, [])
    args = WORKLOADS[name][0]
    times: dict[str, list[float]] = {k: [] for k in compiled}
    for _ in range(runs):
        for v, c in compiled.items():
            start = time.perf_counter()
            subprocess.run(command(name, v, c, w, args), check=True, capture_output=True)
            times[v].append(time.perf_counter() - start)
    base = min(times["plain"])
    print(f"{name} {' '.join(args)}: {runs} interleaved runs each, wasmtime 48.0.8")
    for v, t in times.items():
        print(f"  {v:6s} fastest {min(t) * 1000:8.1f} ms  median {statistics.median(t) * 1000:8.1f} ms"
              f"  {min(t) / base:.2f}x")


def callgrind(name: str, w: Path) -> None:
    compiled = variants(name, w, NO_AVX512)
    _, small, large, _ = WORKLOADS[name]
    counts = {}
    for v, c in compiled.items():
        got = []
        for args in (small, large):
            cmd = ["valgrind", "--tool=callgrind", "--smc-check=all-non-file",
                   f"--callgrind-out-file={w / 'cg.out'}"] + command(name, v, c, w, args)
            p = subprocess.run(cmd, capture_output=True, text=True, check=True)
            line = next(l for l in p.stderr.splitlines() if "Collected" in l)
            got.append(int(line.split()[-1]))
        counts[v] = got[1] - got[0]
    print(f"{name}: ({' '.join(large)}) - ({' '.join(small)}), instructions executed "
          "(callgrind), wasmtime 48.0.8")
    for v, c in counts.items():
        print(f"  {v:6s} {c:>15,}  {c / counts['plain']:.2f}x")


def compile_cost(name: str, w: Path) -> None:
    print(f"{name}: wasmtime compile on one thread, instructions executed (callgrind), "
          "wasmtime 48.0.8", flush=True)
    plain = None
    for v, m in pass_outputs(name, w).items():
        if v in ("nan", "stack"):
            continue  # compiled in about the plain module's time; under valgrind, minutes
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={w / 'cg.out'}",
               WASMTIME, "compile", "-C", "parallel-compilation=n", "-C", "cache=n",
               m, "-o", w / "out.cwasm"]
        p = subprocess.run(cmd, capture_output=True, text=True, check=True)
        line = next(l for l in p.stderr.splitlines() if "Collected" in l)
        c = int(line.split()[-1])
        plain = plain or c
        print(f"  {v:6s} {c:>15,}  {c / plain:.2f}x  ({m.stat().st_size:,} bytes of wasm)",
              flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workload", default="fib", choices=[*WORKLOADS, "all"])
    ap.add_argument("--runs", type=int, default=11)
    ap.add_argument("--callgrind", action="store_true")
    ap.add_argument("--compile", action="store_true")
    a = ap.parse_args()
    if not WASMTIME.is_file():
        sys.exit(f"{WASMTIME} is missing: run benches/run-vs-wasmtime.sh once (it installs it)")
    names = list(WORKLOADS) if a.workload == "all" else [a.workload]
    with tempfile.TemporaryDirectory(prefix="detwasm-passes-") as w:
        w = Path(w)
        (w / "stub.wat").write_text(STUB)
        subprocess.run(["wat2wasm", w / "stub.wat", "-o", w / "stub.wasm"], check=True)
        for name in names:
            if a.compile:
                compile_cost(name, w)
            elif a.callgrind:
                callgrind(name, w)
            else:
                timed(name, w, a.runs)
            sys.stdout.flush()


if __name__ == "__main__":
    main()
