#!/usr/bin/env python3
"""Run the official WASI test suite (wasm32-wasip1) under detwasm.

Usage:
    scripts/wasi-testsuite.py SUITE_DIR [--detwasm PATH] [--filter NAME]...
                              [--json] [--verbose] [--timeout SECS] [--keep]

SUITE_DIR is a local copy of the `prod/testsuite-base` branch of
https://github.com/WebAssembly/wasi-testsuite (its prebuilt tests), or one of
its test folders (e.g. SUITE_DIR/tests/rust/testsuite/wasm32-wasip1). See
docs/wasi-testsuite.md for how to get it.

Every `*.wasm` there is a test; `NAME.json` beside it is its specification
(args, env, `root`, expected exit code, stdout and stderr, or the newer list of
operations). Each test runs as

    detwasm run TEST.wasm --no-outputs --dir COPY::/ -e K=V ... -o RESULTS --json -- ARGS...

where COPY is a fresh copy of the test's `root` folder: the suite checkout is
never written (tests create and delete files in their root). The guest's stdout,
stderr and exit code are read from the results folder (files `stdout`,
`stderr`, `exitCode`) and checked as the suite's own runner
(test-runner/wasi_test_runner) checks them:

  * `stdout` / `stderr` (a `read` operation): the stream's first
    len(expected) characters must equal the expected text (the reference
    runner reads exactly that many characters from the pipe, so output after
    them is not looked at; an expectation of "" always holds). Streams are
    decoded as UTF-8 text with universal newlines, as Python's text pipes do.
  * exit code (a `wait` operation): must equal `exit_code` (default 0).
  * A test without a `.json` file gets the default spec: no args, no env, no
    root, exit code 0.
  * `*.cleanup` files in the root are test artifacts: removed (from the copy)
    before the run.

Tests the reference runner would not run for a runtime like detwasm are
reported as SKIP with the reason: a suite for another WASI version than
wasm32-wasip1, a WASI world other than `wasi:cli/command`, a test needing a
proposal (`sockets`, `http`) or operations that talk to the running guest
(`connect`, `send`, `recv`, `request`, `write`, `kill`); detwasm has no
network and runs a guest to completion on a fixed stdin. (The wasm32-wasip1
suites on the prebuilt branch contain no such test.)

Output: one line per test, `PASS suite/name` or `FAIL suite/name: reason`
(and `SKIP suite/name: reason`), then the totals `N passed, M failed` (with
`, K skipped` when some were skipped) on the last line. `--verbose` adds the
command, a stdout diff and the guest's stderr under each failure. `--json`
prints one JSON object instead. The exit status is 0 when nothing failed, 1
otherwise, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import difflib
import fnmatch
import io
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

WASI_VERSION = "wasm32-wasip1"
CLI_WORLD = "wasi:cli/command"
LEGACY_KEYS = {"args", "root", "env", "exit_code", "stderr", "stdout"}
OPERATION_KEYS = {"operations", "proposals", "world", "servers"}
# Operations this runner can check after the guest has run to completion.
OFFLINE_OPERATIONS = {"run", "read", "wait"}
# Operations that talk to the guest while it runs (sockets, http, pipes).
ALL_OPERATIONS = OFFLINE_OPERATIONS | {"write", "connect", "send", "recv", "request", "kill"}
REPO = Path(__file__).resolve().parent.parent


class SpecError(Exception):
    """A test's .json cannot be understood."""


@dataclass
class Test:
    suite: str  # e.g. "rust" (the folder under tests/)
    suite_name: str  # the manifest's name
    name: str
    wasm: Path
    spec_file: Path | None
    operations: list[dict[str, Any]] = field(default_factory=list)
    skip: str | None = None
    spec_error: str | None = None

    @property
    def id(self) -> str:
        return f"{self.suite}/{self.name}"


@dataclass
class Outcome:
    test: Test
    status: str  # PASS, FAIL, SKIP
    failures: list[str] = field(default_factory=list)
    argv: list[str] = field(default_factory=list)
    exit_code: int | None = None
    stdout: str | None = None
    stderr: str | None = None
    detwasm_stderr: str | None = None
    receipt: dict[str, Any] | None = None
    expected_stdout: str | None = None
    seconds: float = 0.0


# --------------------------------------------------------------------------- specs


def load_operations(spec_file: Path | None) -> tuple[list[dict[str, Any]], str | None]:
    """The test's operations (legacy specs converted as the reference runner
    converts them) and a reason to skip it, if any."""
    if spec_file is None:
        return [{"type": "run"}, {"type": "wait", "exit_code": 0}], None
    with open(spec_file, encoding="utf-8") as f:
        config = json.load(f)
    if not isinstance(config, dict):
        raise SpecError("the specification is not a JSON object")
    keys = set(config)
    if keys & OPERATION_KEYS and keys & LEGACY_KEYS:
        raise SpecError("the specification mixes the legacy and the operation-based style")
    if any(config.get(k) is not None for k in ("operations", "proposals", "servers")):
        ops = config.get("operations") or []
        for op in ops:
            if op.get("type") not in ALL_OPERATIONS:
                raise SpecError(f"unsupported operation type {op.get('type')!r}")
        world = config.get("world", CLI_WORLD)
        proposals = config.get("proposals") or []
        if world != CLI_WORLD:
            return ops, f"WASI world {world} is not supported by detwasm"
        if proposals:
            return ops, f"needs the WASI proposal(s) {', '.join(proposals)}, which detwasm does not provide"
        if config.get("servers"):
            return ops, "needs HTTP servers (wasi:http), which detwasm does not provide"
        online = sorted({op["type"] for op in ops} - OFFLINE_OPERATIONS)
        if online:
            return ops, f"operations {', '.join(online)} talk to the running guest; detwasm has no network and a fixed stdin"
        return ops, None
    ops: list[dict[str, Any]] = [
        {"type": "run", "args": config.get("args", []), "env": config.get("env", {}), "root": config.get("root")}
    ]
    if config.get("stdout") is not None:
        ops.append({"type": "read", "id": "stdout", "payload": config["stdout"]})
    if config.get("stderr") is not None:
        ops.append({"type": "read", "id": "stderr", "payload": config["stderr"]})
    ops.append({"type": "wait", "exit_code": config.get("exit_code", 0)})
    return ops, None


def manifest(folder: Path) -> tuple[str, str]:
    name, version = str(folder), WASI_VERSION
    if folder.name.startswith("wasm32-wasip"):
        version = folder.name
    path = folder / "manifest.json"
    if path.exists():
        with open(path, encoding="utf-8") as f:
            m = json.load(f)
        name = m.get("name", name)
        version = m.get("version", version)
    return name, version


def test_folders(suite_dir: Path) -> list[Path]:
    if any(suite_dir.glob("*.wasm")):
        return [suite_dir]
    folders = sorted(suite_dir.glob(f"tests/*/testsuite/{WASI_VERSION}"))
    if not folders:
        folders = sorted(suite_dir.glob(f"*/testsuite/{WASI_VERSION}"))
    return folders


def discover(suite_dir: Path, filters: list[str]) -> list[Test]:
    tests: list[Test] = []
    for folder in test_folders(suite_dir):
        suite_name, version = manifest(folder)
        suite = folder.parent.parent.name if folder.parent.name == "testsuite" else folder.name
        for wasm in sorted(folder.glob("*.wasm")):
            name = wasm.stem
            if filters and not any(
                fnmatch.fnmatchcase(name, f) or fnmatch.fnmatchcase(f"{suite}/{name}", f) for f in filters
            ):
                continue
            spec_file = wasm.with_suffix(".json")
            test = Test(suite, suite_name, name, wasm, spec_file if spec_file.exists() else None)
            if version != WASI_VERSION:
                test.skip = f"{version} is not supported by detwasm (it runs {WASI_VERSION})"
            else:
                try:
                    test.operations, test.skip = load_operations(test.spec_file)
                except (SpecError, ValueError, AttributeError) as e:
                    test.spec_error = str(e)
            tests.append(test)
    return tests


# --------------------------------------------------------------------------- running


def copy_root(root: Path, into: Path) -> Path:
    dest = into / "root"
    shutil.copytree(root, dest, symlinks=True)
    for f in sorted(dest.glob("**/*.cleanup"), reverse=True):
        if f.is_symlink():
            continue
        if f.is_dir():
            shutil.rmtree(f)
        elif f.exists():
            f.unlink()
    return dest


def read_text(path: Path) -> str | None:
    """A guest stream as the reference runner sees it: UTF-8 text, universal newlines."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    text = data.decode("utf-8", errors="replace")
    return io.StringIO(text, newline=None).getvalue()


def short(text: str, limit: int = 120) -> str:
    r = repr(text)
    return r if len(r) <= limit else r[: limit - 5] + "...'"


def run_test(test: Test, detwasm: list[str], timeout: float, keep: bool) -> Outcome:
    out = Outcome(test, "PASS")
    if test.spec_error:
        out.status = "FAIL"
        out.failures.append(f"bad specification {test.spec_file}: {test.spec_error}")
        return out
    if test.skip:
        out.status = "SKIP"
        out.failures.append(test.skip)
        return out
    work = Path(tempfile.mkdtemp(prefix=f"wasi-testsuite-{test.name}-"))
    start = time.monotonic()
    results = work / "results"
    ran = False
    try:
        for op in test.operations:
            kind = op.get("type")
            if kind == "run":
                if ran:
                    out.failures.append("a second `run` operation is not supported by this runner")
                    break
                ran = True
                # No /outputs volume: the guest's preopens are the suite's, as with wasmtime.
                argv = list(detwasm) + ["run", str(test.wasm), "--no-outputs"]
                root = op.get("root")
                if root:
                    base = test.spec_file.parent if test.spec_file else test.wasm.parent
                    argv += ["--dir", f"{copy_root(base / root, work)}::/"]
                for k, v in (op.get("env") or {}).items():
                    argv += ["-e", f"{k}={v}"]
                argv += ["-o", str(results), "--json", "--"] + [str(a) for a in op.get("args") or []]
                out.argv = argv
                proc = subprocess.Popen(
                    argv,
                    cwd=work,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    start_new_session=True,
                )
                try:
                    receipt_text, dw_err = proc.communicate(timeout=timeout)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.communicate()
                    out.failures.append(f"timeout: detwasm still running after {timeout:g} s")
                    break
                out.detwasm_stderr = dw_err.decode("utf-8", errors="replace")
                try:
                    out.receipt = json.loads(receipt_text)
                except json.JSONDecodeError:
                    out.receipt = None
                code_text = read_text(results / "exitCode")
                out.stdout = read_text(results / "stdout")
                out.stderr = read_text(results / "stderr")
                if code_text is None or out.receipt is None:
                    msg = out.detwasm_stderr.strip().splitlines()
                    out.failures.append(
                        f"detwasm did not run the job (exit status {proc.returncode}): {msg[-1] if msg else 'no message'}"
                    )
                    break
                try:
                    out.exit_code = int(code_text.strip())
                except ValueError:
                    out.failures.append(f"unreadable exitCode {short(code_text)}")
                    break
            elif kind == "read":
                stream = op.get("id", "stdout")
                expected = op.get("payload", "")
                actual = out.stdout if stream == "stdout" else out.stderr
                if actual is None:
                    out.failures.append(f"no {stream} in the results")
                    continue
                if stream == "stdout":
                    out.expected_stdout = expected
                got = actual[: len(expected)]
                if got != expected:
                    out.failures.append(f"{stream}: expected {short(expected)}, got {short(got)}")
            elif kind == "wait":
                expected_code = op.get("exit_code", 0)
                if out.exit_code != expected_code:
                    why = f"exit code: expected {expected_code}, got {out.exit_code}"
                    trap = (out.receipt or {}).get("trap")
                    if trap:
                        why += f" ({(out.receipt or {}).get('outcome', 'trap')}: {trap})"
                    last = [l for l in (out.stderr or "").splitlines() if l.strip()]
                    if last:
                        # Rust tests report the failed assertion on stderr.
                        panic = next((l for l in last if "panicked at" in l), None)
                        idx = last.index(panic) if panic else -1
                        detail = last[idx + 1] if panic and idx + 1 < len(last) else last[-1]
                        why += f"; stderr: {detail.strip()[:300]}"
                    out.failures.append(why)
    finally:
        out.seconds = time.monotonic() - start
        if keep and out.failures:
            out.failures.append(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    out.status = "FAIL" if out.failures else "PASS"
    return out


# --------------------------------------------------------------------------- output


def report_line(o: Outcome) -> str:
    if o.status == "PASS":
        return f"PASS {o.test.id}"
    return f"{o.status} {o.test.id}: " + "; ".join(o.failures)


def verbose_lines(o: Outcome) -> list[str]:
    lines = ["    $ " + " ".join(_quote(a) for a in o.argv)] if o.argv else []
    if o.expected_stdout is not None and o.stdout is not None:
        got = o.stdout[: len(o.expected_stdout)]
        if got != o.expected_stdout:
            diff = difflib.unified_diff(
                o.expected_stdout.splitlines(), got.splitlines(), "expected stdout", "detwasm stdout", lineterm=""
            )
            lines += ["    " + l for l in diff]
    if o.stdout and o.expected_stdout is None:
        lines.append("    guest stdout:")
        lines += ["      " + l for l in o.stdout.splitlines()[-30:]]
    if o.stderr:
        lines.append("    guest stderr:")
        lines += ["      " + l for l in o.stderr.splitlines()[-30:]]
    if o.detwasm_stderr and o.detwasm_stderr.strip():
        lines.append("    detwasm stderr:")
        lines += ["      " + l for l in o.detwasm_stderr.splitlines()[-10:]]
    return lines


def _quote(a: str) -> str:
    return shlex.quote(a)


def totals(outcomes: list[Outcome]) -> tuple[int, int, int]:
    passed = sum(o.status == "PASS" for o in outcomes)
    failed = sum(o.status == "FAIL" for o in outcomes)
    return passed, failed, len(outcomes) - passed - failed


def totals_line(outcomes: list[Outcome]) -> str:
    passed, failed, skipped = totals(outcomes)
    line = f"{passed} passed, {failed} failed"
    return line + (f", {skipped} skipped" if skipped else "")


def as_json(o: Outcome) -> dict[str, Any]:
    return {
        "suite": o.test.suite,
        "suite_name": o.test.suite_name,
        "name": o.test.name,
        "wasm": str(o.test.wasm),
        "outcome": o.status.lower(),
        "reasons": o.failures,
        "argv": o.argv,
        "exit_code": o.exit_code,
        "detwasm_outcome": (o.receipt or {}).get("outcome"),
        "trap": (o.receipt or {}).get("trap"),
        "results_cid": (o.receipt or {}).get("cid"),
        "stdout": o.stdout,
        "stderr": o.stderr,
        "seconds": round(o.seconds, 3),
    }


def default_detwasm() -> list[str]:
    built = REPO / "target" / "debug" / "detwasm"
    if built.exists():
        return [str(built)]
    return ["detwasm"]


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        description="Run the WASI test suite (wasm32-wasip1, prebuilt branch prod/testsuite-base) under detwasm."
    )
    p.add_argument("suite_dir", metavar="SUITE_DIR", type=Path, help="checkout of prod/testsuite-base, or one test folder")
    p.add_argument("--detwasm", metavar="PATH", help="detwasm binary (default: target/debug/detwasm, else detwasm on PATH)")
    p.add_argument(
        "--filter", metavar="NAME", action="append", default=[],
        help="run only tests whose NAME or SUITE/NAME matches this glob (e.g. 'path_*', 'c/lseek'). Repeatable",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object with every result instead of lines")
    p.add_argument("--verbose", "-v", action="store_true", help="show the command, stdout diff and stderr of failures")
    p.add_argument(
        "--timeout", metavar="SECS", type=float, default=60.0,
        help="wall-clock limit per test (default 60; the reference runner uses 5, which a cold module cache can exceed)",
    )
    p.add_argument("--keep", action="store_true", help="keep the work folder (root copy, results) of failed tests")
    args = p.parse_args(argv)

    if not args.suite_dir.is_dir():
        p.error(f"{args.suite_dir} is not a folder")
    detwasm = [args.detwasm] if args.detwasm else default_detwasm()
    if shutil.which(detwasm[0]) is None and not Path(detwasm[0]).is_file():
        p.error(f"no detwasm at {detwasm[0]} (build it with `cargo build`, or pass --detwasm PATH)")
    tests = discover(args.suite_dir.resolve(), args.filter)
    if not tests:
        p.error(f"no {WASI_VERSION} tests under {args.suite_dir}" + (" matching the filter" if args.filter else ""))

    outcomes = []
    for test in tests:
        o = run_test(test, detwasm, args.timeout, args.keep)
        outcomes.append(o)
        if not args.json:
            print(report_line(o), flush=True)
            if args.verbose and o.status == "FAIL":
                print("\n".join(verbose_lines(o)), flush=True)

    passed, failed, skipped = totals(outcomes)
    if args.json:
        json.dump(
            {
                "suite_dir": str(args.suite_dir),
                "detwasm": " ".join(detwasm),
                "totals": {"passed": passed, "failed": failed, "skipped": skipped, "total": len(outcomes)},
                "tests": [as_json(o) for o in outcomes],
            },
            sys.stdout,
            indent=2,
        )
        print()
    else:
        print(totals_line(outcomes))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
