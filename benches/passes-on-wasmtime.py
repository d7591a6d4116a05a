#!/usr/bin/env python3
"""What each pass's code costs a call-heavy program, under `wasmtime run` 48.0.8 alone.

    python3 benches/passes-on-wasmtime.py [--runs 11] [--n 36] [--callgrind]

Builds `benches/workloads/fib.c` (clang, wasm32-wasi, -O2), writes it after fuel
metering alone, stack metering alone and all the passes (`cargo run -p detwasm-runtime
--example pass_variants`), compiles each with `wasmtime compile`, and runs each `--runs`
times interleaved with a stub `detwasm.refuel` preloaded (it hands out all the fuel at
once). Prints the fastest and the median run of each and the ratio of the fastest to the
plain module's. The wasmtime is the one `benches/run-vs-wasmtime.sh` installs.

With `--callgrind`, instead: the instructions the CPU executes for each module
(`valgrind --tool=callgrind`, which does not depend on the machine's load), as the
difference between `fib(30)` and `fib(20)` (each run uncached, so that start-up and the
compile, the same in both, cancel out).
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
STUB = '(module (func (export "refuel") (param i64) (result i64) (i64.const 0x7fffffffffffffff)))'


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=11)
    ap.add_argument("--n", type=int, default=36)
    ap.add_argument("--callgrind", action="store_true")
    a = ap.parse_args()
    if not WASMTIME.is_file():
        sys.exit(f"{WASMTIME} is missing: run benches/run-vs-wasmtime.sh once (it installs it)")
    with tempfile.TemporaryDirectory(prefix="detwasm-passes-") as w:
        w = Path(w)
        fib = w / "fib.wasm"
        subprocess.run(["clang", "--target=wasm32-wasi", "-O2", "-g0", "-Wl,--strip-all",
                        "-o", fib, ROOT / "benches/workloads/fib.c"], check=True)
        subprocess.run(["cargo", "run", "--quiet", "-p", "detwasm-runtime", "--example",
                        "pass_variants", "--", fib, w / "fib"], check=True, cwd=ROOT)
        (w / "stub.wat").write_text(STUB)
        subprocess.run(["wat2wasm", w / "stub.wat", "-o", w / "stub.wasm"], check=True)
        variants = {"plain": fib, "fuel": w / "fib-fuel.wasm", "stack": w / "fib-stack.wasm",
                    "all": w / "fib-all.wasm"}
        if a.callgrind:
            callgrind(w, variants)
            return
        compiled = {}
        for name, m in variants.items():
            compiled[name] = w / f"{name}.cwasm"
            subprocess.run([WASMTIME, "compile", m, "-o", compiled[name]], check=True)
        times: dict[str, list[float]] = {k: [] for k in variants}
        for _ in range(a.runs):
            for name, c in compiled.items():
                cmd = [WASMTIME, "run", "--allow-precompiled"]
                if name in ("fuel", "all"):
                    cmd += ["--preload", f"detwasm={w / 'stub.wasm'}"]
                start = time.perf_counter()
                subprocess.run(cmd + [c, str(a.n)], check=True, capture_output=True)
                times[name].append(time.perf_counter() - start)
    base = min(times["plain"])
    print(f"fib({a.n}), {a.runs} interleaved runs each, wasmtime 48.0.8")
    for name, t in times.items():
        print(f"{name:6s} fastest {min(t) * 1000:7.1f} ms  median {statistics.median(t) * 1000:7.1f} ms"
              f"  {min(t) / base:.2f}x")


def callgrind(w: Path, variants: dict[str, Path]) -> None:
    counts = {}
    for name, m in variants.items():
        got = []
        for n in (20, 30):
            cmd = ["valgrind", "--tool=callgrind", "--smc-check=all-non-file",
                   f"--callgrind-out-file={w / 'cg.out'}", WASMTIME, "run", "-C", "cache=n"]
            if name in ("fuel", "all"):
                cmd += ["--preload", f"detwasm={w / 'stub.wasm'}"]
            p = subprocess.run(cmd + [m, str(n)], capture_output=True, text=True, check=True)
            line = next(l for l in p.stderr.splitlines() if "Collected" in l)
            got.append(int(line.split()[-1]))
        counts[name] = got[1] - got[0]
    print("fib(30) - fib(20), instructions executed (callgrind), wasmtime 48.0.8")
    for name, c in counts.items():
        print(f"{name:6s} {c:>12,}  {c / counts['plain']:.2f}x")


if __name__ == "__main__":
    main()
