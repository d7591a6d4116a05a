#!/usr/bin/env python3
"""Checkpoints side by side, in one run: what taking checkpoints costs a job, what a spot
check costs against a full re-run, and how much room snapshots take.

    python3 benches/checkpoints.py [--detwasm target/debug/detwasm] [--markdown FILE]

Three measures, each printed as a ratio of two runs made here, now, on this machine:

1. CPython 3.12 running a float script (`--scale` times the base loop, default 3: about
   6 s of guest work), without checkpoints and with one every `--every` instructions,
   each timed `--runs` times interleaved (median). Both runs compile from the module
   cache. The default `--every` is what the issue's target names, a checkpoint every
   second of guest work: the instructions this machine runs in a second of the plain run
   (measured first; about 7e9 for CPython here, where 1e9, the `run` default, is a
   seventh of a second).
2. `detwasm verify --sample 3` against a full `detwasm verify` of a job of about 100
   segments: CPython running the same script `--long` times longer (default 5: about
   11 s of guest work), a checkpoint every 1/100 of it. A segment's fixed cost (starting
   detwasm, loading the compiled module from the cache, hashing and restoring the
   snapshot: about 0.1 s for CPython) is paid per segment, so the ratio approaches
   3/100 only for jobs whose segments are long against it.
3. The snapshots of the same CPython run with 20 checkpoints: their size on disk, and
   the bytes of one CAR of all of them (blocks shared between snapshots written once)
   against the sum of one CAR per snapshot.

The workload (target/workloads/python-3.12.0.wasm) is fetched by scripts/setup.sh.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON_WASM = ROOT / "target/workloads/python-3.12.0.wasm"

SCRIPT = """\
import math, sys
n = 1500000 * int(sys.argv[1]) if len(sys.argv) > 1 else 1500000
s = 0.0
for i in range(1, n):
    s += math.sin(i) / i
print(round(s, 9))
"""


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if p.returncode != 0:
        sys.exit(f"{' '.join(map(str, cmd))} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    run(cmd)
    return time.perf_counter() - start


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--detwasm", default=str(ROOT / "target/debug/detwasm"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--every", type=int, default=None,
                    help="instructions between checkpoints (default: a second of guest work here)")
    ap.add_argument("--scale", type=int, default=3)
    ap.add_argument("--long", type=int, default=5)
    ap.add_argument("--markdown", type=Path)
    a = ap.parse_args()
    d = a.detwasm
    if not PYTHON_WASM.is_file():
        sys.exit(f"{PYTHON_WASM} is missing: run scripts/setup.sh")
    work = Path(tempfile.mkdtemp(prefix="detwasm-bench-cp-"))
    os.environ["DETWASM_CACHE_DIR"] = str(work / "cache")
    try:
        (work / "in").mkdir()
        (work / "in" / "s.py").write_text(SCRIPT)
        base = [d, "run", str(PYTHON_WASM), "--input", f"{work / 'in'}:/w"]

        script = ["--", "/w/s.py", str(a.scale)]
        # Warm the module cache for the plain compile, and measure the guest's pace.
        run(base + ["-o", str(work / "warm")] + script)
        start = time.perf_counter()
        pace = json.loads(run(base + ["--json", "-o", str(work / "pace")] + script).stdout)
        every = a.every or int(pace["instructions"] / (time.perf_counter() - start))
        # Warm the cache for the compile with the unwind pass.
        run(base + ["-o", str(work / "warm-cp"), "--checkpoints", str(work / "warm-cps"),
                    "--checkpoint-every", str(every)] + script)
        plain, checked = [], []
        for i in range(a.runs):
            plain.append(timed(base + ["-o", str(work / f"p{i}")] + script))
            cps = work / f"cps{i}"
            checked.append(timed(base + ["-o", str(work / f"c{i}"), "--checkpoints", str(cps),
                                          "--checkpoint-every", str(every)] + script))
        n_cp = len(list(p for p in (work / "cps0").iterdir() if p.is_dir()))
        instructions = pace["instructions"]

        # Storage: the same job with 20 checkpoints (the measure).
        receipt = json.loads(run(base + ["--json", "-o", str(work / "r"), "--checkpoints",
                                         str(work / "cps-r"), "--checkpoint-every",
                                         str(instructions // 21 + 1)] + script).stdout)
        n_store = len(receipt["trace"]["snapshots"])

        # Storage: one CAR per snapshot against one CAR of the whole folder.
        cps = work / "cps-r"
        shutil.move(str(cps / "job.json"), str(work / "job.json"))
        separate = 0
        for snap in sorted(p for p in cps.iterdir() if p.is_dir()):
            car = work / f"{snap.name}.car"
            run([d, "hash", str(snap), "--car", str(car)])
            separate += car.stat().st_size
        run([d, "hash", str(cps), "--car", str(work / "all.car")])
        together = (work / "all.car").stat().st_size
        on_disk = du(cps)

        # Spot check against full verification: about 100 checkpoints.
        long_args = ["--", "/w/s.py", str(a.long)]
        r = json.loads(run(base + ["--json", "-o", str(work / "long")] + long_args).stdout)
        seg_every = max(r["instructions"] // 100, 10_000_000)
        run(base + ["-o", str(work / "long-cp"), "--checkpoints", str(work / "long-cps"),
                    "--checkpoint-every", str(seg_every), "--receipt", str(work / "long.json")]
            + long_args)
        segments = len(json.loads((work / "long.json").read_text())["trace"]["snapshots"]) + 1
        full, sample = [], []
        for i in range(a.runs):
            full.append(timed([d, "verify", str(work / "long.json")]))
            sample.append(timed([d, "verify", str(work / "long.json"), "--sample", "3",
                                 "--snapshots", str(work / "long-cps"), "--seed", str(i)]))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    mp, mc = statistics.median(plain), statistics.median(checked)
    mf, ms = statistics.median(full), statistics.median(sample)
    mib = 1 << 20
    rows = [
        ("CPython float script, checkpoint every "
         f"{every:,} instructions ({'given' if a.every else 'a second of guest work here'}; "
         f"{n_cp} checkpoints, {instructions:,} instructions), vs without",
         f"{mc / mp:.2f}x ({mc:.2f} s vs {mp:.2f} s)", "<= 1.25x"),
        (f"`verify --sample 3` of a job of {segments} segments (CPython, "
         f"{r['instructions']:,} instructions) vs full `verify`",
         f"{ms / mf:.3f}x ({ms:.3f} s vs {mf:.3f} s)", "<= 0.05x"),
        (f"CPython's {n_store} snapshots: on disk / one CAR of all / sum of one CAR each",
         f"{on_disk / mib:.1f} / {together / mib:.1f} / {separate / mib:.1f} MiB "
         f"(shared blocks save {100 * (1 - together / separate):.0f} %)", "say it"),
    ]
    lines = ["| measure | measured | target |", "| --- | ---: | ---: |"]
    lines += [f"| {m} | {v} | {t} |" for m, v, t in rows]
    text = "\n".join(lines)
    print(text)
    if a.markdown:
        a.markdown.write_text(
            "# Checkpoints\n\n`python3 benches/checkpoints.py --markdown benches/RESULTS-checkpoints.md`"
            f" on {os.cpu_count()} cores, median of {a.runs} interleaved runs.\n\n{text}\n")


if __name__ == "__main__":
    main()
