"""``python -m detwasm.ray JOBS.jsonl --address ADDRESS --output-dir DIR``: the jobs of
a ``detwasm batch`` file, run on a Ray cluster; one receipt per line on stdout, in
input order, exactly as ``detwasm batch`` prints them (a job that cannot run gets
``{"error": "...", "line": N}``), and a summary on stderr.

Exit status, as ``detwasm batch``: 0 when every job ran and exited 0, 1 when every job
ran but some exited non-zero (or hit the safety timeout), 2 when some job could not run
(or the command itself failed: its message follows ``detwasm: error:``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import List, Optional, TextIO

from detwasm import Error, _native
from detwasm.ray import DEFAULT_MAX_RETRIES, run_ordered


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number of instructions, at least 1")
    return n


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m detwasm.ray",
        description="Run the jobs of a detwasm batch file on a Ray cluster and print one "
        "receipt per job (JSON Lines), in input order, as `detwasm batch` prints them.",
    )
    p.add_argument("jobs", metavar="JOBS.jsonl", help="the jobs, one JSON object per line (- for stdin)")
    p.add_argument("--address", help="the Ray cluster (ray.init's address: HOST:PORT or auto); "
                   "default: RAY_ADDRESS, else a local Ray started for this run")
    p.add_argument("--output-dir", metavar="DIR", default=None,
                   help="where results folders are written, one per job named after its job id "
                   "(created if missing; default: the current folder)")
    p.add_argument("--allow-input", metavar="DIR", action="append", default=[], dest="allow_inputs",
                   help="let module specs and job files take inputs from DIR, for every job "
                   "(repeatable); a line's own inputs, dirs, stdin and output are not confined: "
                   "a jobs file is the operator's")
    p.add_argument("--max-retries", type=int, default=DEFAULT_MAX_RETRIES, metavar="N",
                   help=f"times Ray re-runs a task whose worker or node died (default {DEFAULT_MAX_RETRIES})")
    p.add_argument("--checkpoint-every", type=_positive, metavar="N", default=None,
                   help="take a checkpoint every N instructions and keep each job's last snapshot "
                   "on the driver's node: a job whose node dies goes on from it elsewhere instead "
                   "of starting again; receipts are those of `detwasm run --checkpoint-every N "
                   "--checkpoints DIR` (with their trace)")
    p.add_argument("--json", action="store_true", help="print the closing summary (stderr) as one JSON object")
    return p


def _receipts_only_on_stdout() -> TextIO:
    """The real stdout, for receipts; file descriptor 1 and ``sys.stdout`` go to stderr
    from here on. Ray prints to the driver's stdout (a task retried, a node lost), from
    Python and from C++: without this, such lines would land between the receipts."""
    sys.stdout.flush()
    receipts = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return receipts


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    out = _receipts_only_on_stdout()
    try:
        lines = _native.read_jobs(args.jobs)
        if args.output_dir is not None:
            try:
                os.makedirs(args.output_dir, exist_ok=True)
            except OSError as e:
                raise Error(f"creating output folder {args.output_dir}: {e.strerror or e}") from None
        import ray  # noqa: F401 - after the cheap checks: importing Ray takes a second

        started = time.monotonic()
        ok = nonzero = failed = resumed = saved = 0
        numbers = [n for n, _ in lines]
        for index, result, resumed_at in run_ordered(
            lines, args.output_dir, address=args.address, allow_inputs=args.allow_inputs,
            max_retries=args.max_retries, quiet=True, checkpoint_every=args.checkpoint_every,
        ):
            if resumed_at is not None:
                resumed += 1
                saved += resumed_at
            if isinstance(result, Error):
                failed += 1
                line = _native.error_line(numbers[index], str(result))
            else:
                receipt = json.loads(result)
                if receipt["exit_code"] == 0 and receipt["verifiable"]:
                    ok += 1
                else:
                    nonzero += 1
                line = result
            out.write(line + "\n")
            out.flush()
        secs = time.monotonic() - started
        cpus = int(ray.cluster_resources().get("CPU", 0))
        nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    except Error as e:
        print(f"detwasm: error: {e}", file=sys.stderr)
        return 2
    total = ok + nonzero + failed
    if args.json:
        print(json.dumps({"jobs": total, "exited_0": ok, "exited_non_zero": nonzero, "failed": failed,
                          "seconds": secs, "nodes": nodes, "cpus": cpus, "resumed": resumed,
                          "instructions_not_redone": saved}), file=sys.stderr)
    else:
        print(f"{total} jobs in {secs:.2f} s ({total / max(secs, 1e-9):.0f} jobs/s, {cpus} CPUs on {nodes} "
              f"nodes): {ok} exited 0, {nonzero} exited non-zero, {failed} could not run", file=sys.stderr)
        if resumed:
            print(f"{resumed} {'job' if resumed == 1 else 'jobs'} went on from a checkpoint after "
                  f"losing a worker ({saved} instructions not redone)", file=sys.stderr)
    return 2 if failed else 1 if nonzero else 0


if __name__ == "__main__":
    sys.exit(main())
