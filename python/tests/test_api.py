"""detwasm.run, hash and verify in-process: each gives what the command line gives for
the same job, path or receipt, and fails with the command line's message."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Dict, List

import pytest

import detwasm
from conftest import PROBE, ROOT, batch, data_tree, without


def jobs(t: Path) -> List[Dict[str, Any]]:
    data = data_tree(t / "data")
    (t / "stdin.txt").write_bytes(b"from stdin\n")
    (t / "rw").mkdir()
    (t / "rw" / "seed.txt").write_text("start\n")
    return [
        {"module": str(PROBE), "args": ["report"], "inputs": [str(data)], "env": {"ZED": "1", "ALPHA": "2"},
         "seed": 9, "epoch": "2030-01-01T00:00:00Z"},
        {"module": "cowsay", "input_values": {"Message": "from python"}},
        {"module": str(ROOT / "fixtures/modules/cowsay.wasm"), "args": ["moo"], "profile": "unixfs-v1-2025",
         "memory": "64MiB", "max_output": 100000},
        {"module": str(PROBE), "args": ["report"], "stdin": str(t / "stdin.txt"), "dirs": [f"{t / 'rw'}::/rw"],
         "skip_hidden": True},
        {"module": str(PROBE), "args": ["spin"], "fuel": 1000000},
    ]


def test_run_gives_the_receipt_detwasm_batch_prints(tmp_path: Path, cli: str) -> None:
    js = jobs(tmp_path)
    reference = batch(cli, [json.dumps(j) for j in js], tmp_path, tmp_path / "cli")
    ours = [detwasm.run(j, output_dir=tmp_path / "py") for j in js]
    assert len(reference) == len(ours) == 5
    for r, o in zip(reference, ours):
        assert without(o, "results_dir") == without(r, "results_dir")
        assert o["results_dir"] == str(tmp_path / "py" / o["job_id"])
        assert detwasm.hash(o["results_dir"], o["profile"], hidden=not o["skip_hidden"]) == o["cid"]
    assert ours[4]["outcome"] == "out_of_fuel" and ours[4]["exit_code"] == 134


def test_env_order_is_part_of_the_job_and_paths_may_be_path_objects(tmp_path: Path) -> None:
    a = detwasm.run({"module": PROBE, "env": {"B": "1", "A": "2"}}, output_dir=tmp_path)
    b = detwasm.run({"module": PROBE, "env": {"A": "2", "B": "1"}}, output_dir=tmp_path)
    assert a["job"]["env"] == [["B", "1"], ["A", "2"]]
    assert a["job_id"] != b["job_id"]
    again = detwasm.run(json.dumps({"module": str(PROBE), "env": {"B": "1", "A": "2"}}), output_dir=tmp_path)
    assert again["job_id"] == a["job_id"] and again["cid"] == a["cid"]
    assert again["results_dir"].endswith(a["job_id"] + "-2"), "an earlier result is never touched"


def test_errors_carry_the_messages_detwasm_batch_reports(tmp_path: Path, cli: str) -> None:
    bad = [
        {"module": str(PROBE), "sede": 1},
        {"module": str(PROBE), "fuel": 0},
        {"module": str(tmp_path / "missing.wasm")},
        {"module": str(ROOT / "fixtures/probes/bad_import.wat")},
        {"module": str(PROBE), "inputs": [str(tmp_path / "nowhere")]},
    ]
    lines = [json.dumps(j) for j in bad]
    reference = [r["error"] for r in batch(cli, lines, tmp_path, tmp_path / "cli")]
    for n, (job, expected) in enumerate(zip(bad, reference), start=1):
        with pytest.raises(detwasm.Error) as e:
            detwasm.run(job, output_dir=tmp_path / "py")
        # A line that is not a job is numbered by the batch; a dict has no line.
        assert str(e.value) == expected.removeprefix(f"line {n}: "), expected
    assert not (tmp_path / "py").exists() or not any((tmp_path / "py").iterdir())
    with pytest.raises(TypeError):
        detwasm.run({"module": str(PROBE), "args": [object()]})


def test_an_error_quoting_a_hostile_job_file_is_fit_for_a_terminal(tmp_path: Path) -> None:
    """A job file's field of escape sequences and half a megabyte, quoted by the refusal:
    the error has no control characters and is cut (keeping its end, the cause), as the
    CLI shows it; the error line of a batch is JSON with DEL and C1 escaped too."""
    job = tmp_path / "job.yaml"
    job.write_text(
        "Type: batch\nTasks:\n  - Name: main\n    Engine:\n      Type: \"\\e]0;T\\a\\u009b2J"
        + "J" * 500_000
        + "\"\n"
    )
    with pytest.raises(detwasm.Error) as e:
        detwasm.run({"module": str(job)})
    message = str(e.value)
    assert len(message) < 5000, len(message)
    assert not any(ord(c) < 32 or 0x7F <= ord(c) <= 0x9F for c in message), message[:200]
    assert message.endswith("detwasm runs only jobs whose engine is wasm"), message[-200:]
    from detwasm import _native

    line = _native.error_line(1, "a\x9bb\x7fc\x1b")
    assert all(ord(c) < 0x7F for c in line), line
    assert json.loads(line)["error"] == "a?b?c?"


def test_hash_is_ipfs_exact_and_fails_as_the_cli_does(tmp_path: Path, cli: str) -> None:
    (tmp_path / "hello").write_bytes(b"hello\n")
    (tmp_path / "empty").mkdir()
    assert detwasm.hash(tmp_path / "hello") == "QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN"
    assert detwasm.hash(tmp_path / "empty", "unixfs-v1-2025") == \
        "bafybeiczsscdsbs7ffqz55asqdf3smv6klcw3gofszvwlyarci47bgf354"
    data = data_tree(tmp_path / "data")
    for profile in ("unixfs-v0-2015", "unixfs-v1-2025"):
        for hidden in (False, True):
            flags = ["--profile", profile] + (["--hidden"] if hidden else [])
            out = subprocess.run([cli, "hash", str(data), *flags], capture_output=True, text=True, check=True)
            assert detwasm.hash(data, profile, hidden=hidden) == out.stdout.strip()
    missing = tmp_path / "missing"
    out = subprocess.run([cli, "hash", str(missing)], capture_output=True, text=True)
    with pytest.raises(detwasm.Error) as e:
        detwasm.hash(missing)
    assert out.stderr.strip() == f"detwasm: error: {e.value}"
    with pytest.raises(detwasm.Error, match="unixfs-v9"):
        detwasm.hash(data, "unixfs-v9")


def test_verify_reproduces_and_names_what_differs(tmp_path: Path, cli: str) -> None:
    receipt = detwasm.run({"module": str(PROBE), "args": ["report"], "seed": 3}, output_dir=tmp_path)
    report = detwasm.verify(receipt, receipt["results_dir"])
    assert report["verified"] and report["reasons"] == [] and report["cid_provider"] == receipt["cid"]
    path = tmp_path / "receipt.json"
    path.write_text(json.dumps(receipt))
    cli_report = json.loads(subprocess.run([cli, "verify", str(path), "--json"], capture_output=True,
                                           text=True, check=True).stdout)
    assert without(detwasm.verify(path), "rerun_results") == without(cli_report, "rerun_results")
    lying = dict(receipt, instructions=receipt["instructions"] + 1)
    report = detwasm.verify(lying)
    assert not report["verified"]
    assert any("instruction count" in r for r in report["reasons"])
    (Path(receipt["results_dir"]) / "stdout").write_text("tampered\n")
    report = detwasm.verify(receipt, receipt["results_dir"])
    assert not report["verified"] and report["cid_actual"] == receipt["cid"]
    assert [d["path"] for d in report["differences"]] == ["stdout"]
    moved = dict(receipt, job=dict(receipt["job"], module=str(tmp_path / "gone.wasm")))
    path.write_text(json.dumps(moved))
    out = subprocess.run([cli, "verify", str(path)], capture_output=True, text=True)
    with pytest.raises(detwasm.Error) as e:
        detwasm.verify(path)
    assert out.stderr.strip() == f"detwasm: error: {e.value}"
    assert detwasm.verify(path, module=PROBE)["verified"]
    with pytest.raises(detwasm.Error) as e:
        detwasm.verify(tmp_path / "no-receipt.json")
    out = subprocess.run([cli, "verify", str(tmp_path / "no-receipt.json")], capture_output=True, text=True)
    assert out.stderr.strip() == f"detwasm: error: {e.value}"


def test_a_receipt_file_is_read_as_the_cli_reads_it(tmp_path: Path, cli: str) -> None:
    """A FIFO named as the receipt is refused without waiting for a writer, a file over
    64 MiB (MAX_RECEIPT_BYTES) after 64 MiB, with the CLI's messages."""
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    big = tmp_path / "big.json"
    with open(big, "wb") as f:
        f.truncate((64 << 20) + 1)
    for path, why in [(fifo, "not a regular file"), (big, "larger than 67108864 bytes")]:
        with pytest.raises(detwasm.Error, match=why) as e:
            detwasm.verify(path)
        out = subprocess.run([cli, "verify", str(path)], capture_output=True, text=True, timeout=60)
        assert out.stderr.strip() == f"detwasm: error: {e.value}"


def test_threads_run_jobs_at_once(tmp_path: Path) -> None:
    results: Dict[int, str] = {}

    def one(i: int) -> None:
        results[i] = detwasm.run({"module": str(PROBE), "args": ["spin"], "fuel": 20_000_000, "seed": i % 2},
                                 output_dir=tmp_path / str(i))["cid"]

    threads = [threading.Thread(target=one, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results.values())) == 1, "the seed does not reach a spinning guest's results"


def _leb(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _section(kind: int, body: bytes) -> bytes:
    return bytes([kind]) + _leb(len(body)) + body


def slow_compile_module(loads: int = 220_000, functions: int = 4) -> bytes:
    """A WASI command inside every shape limit that takes seconds to compile:
    ``functions`` functions of ``loads`` chained ``i32.load``s (the CLI's tests use the
    same shape)."""
    types = _leb(2) + b"\x60\x00\x00" + b"\x60\x01\x7f\x01\x7f"
    funcs = _leb(1 + functions) + b"\x00" + b"\x01" * functions
    memory = b"\x01\x00\x01"
    exports = _leb(1) + _leb(6) + b"_start" + b"\x00\x00"
    bodies = [b"\x02\x00\x0b"]
    for f in range(functions):
        code = bytearray(b"\x00\x20\x00")
        for i in range(loads):
            code += b"\x28\x02" + _leb((i * 4 + f) % 60_000)
        code += b"\x0b"
        bodies.append(_leb(len(code)) + bytes(code))
    code_section = _leb(len(bodies)) + b"".join(bodies)
    return (b"\0asm\x01\0\0\0" + _section(1, types) + _section(3, funcs) + _section(5, memory)
            + _section(7, exports) + _section(10, code_section))


def _compile_workers_of(pid: int) -> List[int]:
    """Children of ``pid`` that are detwasm compile workers."""
    workers = []
    for p in Path("/proc").iterdir():
        try:
            stat = (p / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid and b"_compile_worker" in (p / "cmdline").read_bytes():
                workers.append(int(p.name))
        except (OSError, ValueError, IndexError):
            continue
    return workers


def test_a_compile_past_the_timeout_is_killed_with_it(tmp_path: Path) -> None:
    """A compile runs in a worker process (this interpreter, importing the extension)
    that is killed at the job's deadline, so a notebook or Ray worker does not keep
    compiling a hostile module after its job failed."""
    module = tmp_path / "slow.wasm"
    module.write_bytes(slow_compile_module())
    seen: set = set()
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            seen.update(_compile_workers_of(os.getpid()))
            time.sleep(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with pytest.raises(detwasm.Error, match="compiling the module did not finish"):
            detwasm.run({"module": str(module), "timeout": 1}, output_dir=tmp_path / "out")
    finally:
        stop.set()
        watcher.join()
    assert seen, "no compile worker was seen"
    assert all(not Path(f"/proc/{pid}").exists() for pid in seen), seen
    # And a module that compiles in time comes back from the worker and runs.
    receipt = detwasm.run({"module": str(PROBE), "args": ["report"], "timeout": 60}, output_dir=tmp_path / "ok")
    assert receipt["exit_code"] == 0
