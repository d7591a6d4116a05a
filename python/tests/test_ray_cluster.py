"""detwasm.ray on a real Ray cluster: two nodes on 127.0.0.1 started as `ray start`
starts them (a head and a worker node, one CPU each), a few dozen mixed jobs, the worker
node killed while it runs one, and every receipt checked against a serial
`detwasm batch` of the same lines.

What this protects: jobs travel by content (the workers read no path of the driver's:
inputs, stdin and module-folder inputs all arrive as bytes and CARs); a task lost with
its node is retried elsewhere; each job ends exactly once, with the receipt and the
results folder a serial run gives; a job that cannot run ends as the same error line.

With checkpoints, a job whose node is killed half-way goes on from its last snapshot on
the node left, and its receipt is still the one `detwasm run --checkpoint-every` gives.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import pytest

import detwasm
from conftest import PROBE, ROOT, batch, data_tree, without

ray = pytest.importorskip("ray")
from detwasm.ray import run_many  # noqa: E402

#: Node failure is noticed within ~2 s instead of Ray's default ~30 s (a 1 s health
#: check period, 5 misses), so the test does not wait on a timeout.
FAST_FAILURE_DETECTION = {
    "RAY_health_check_period_ms": "500",
    "RAY_health_check_timeout_ms": "500",
    "RAY_health_check_failure_threshold": "3",
    "RAY_USAGE_STATS_ENABLED": "0",
}


NODE_IP = "127.0.0.2"

#: The `ray` command of this interpreter's Ray (beside it in its bin folder: a shim
#: folder on PATH may not have learnt of a command installed with `python3 -m pip`).
RAY = os.path.join(os.path.dirname(sys.executable), "ray")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Node:
    """One `ray start --block` in a session of its own: the node's processes (raylet,
    its workers and agents; for the head also GCS) are the processes of that session
    (Ray gives each worker a process group of its own, but not a session)."""

    def __init__(self, name: str, args: List[str], log: Path, env: Dict[str, str]) -> None:
        self.name = name
        self.log = log
        self.proc = subprocess.Popen(
            [RAY, "start", "--block", "--node-ip-address", NODE_IP, "--num-cpus", "1",
             "--disable-usage-stats", "--dashboard-agent-listen-port", str(free_port()), *args],
            stdout=open(log, "wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env=env,
        )

    def wait_started(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while b"Ray runtime started" not in self.log.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start:\n{self.log.read_text(errors='replace')}")
            time.sleep(0.2)

    def pids(self) -> List[Tuple[int, str]]:
        """(pid, command line) of every process of this node."""
        out = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                if os.getsid(int(entry)) != self.proc.pid:
                    continue
                with open(f"/proc/{entry}/stat", "rb") as f:
                    if f.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                        continue  # dead, waiting to be reaped
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    out.append((int(entry), f.read().replace(b"\0", b" ").decode(errors="replace")))
            except OSError:
                continue
        return out

    def kill(self) -> None:
        """SIGKILL to every process of the node: a lost machine, not a shutdown. Only
        processes this test started (its node's session) are signalled."""
        deadline = time.monotonic() + 30
        while True:
            pids = [pid for pid, _ in self.pids()]
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.proc.poll()  # reaps `ray start` itself; the others are reparented and reaped
            if not pids:
                break
            assert time.monotonic() < deadline, f"{self.name}: processes {pids} survive SIGKILL"
            time.sleep(0.1)


@contextmanager
def cluster(tmp: Path, worker_env: Dict[str, str] = {}) -> Iterator[Tuple[str, Node, Node]]:
    # Ray's socket paths must stay short: its temporary folder goes under /tmp.
    temp_dir = tempfile.mkdtemp(prefix="dwray-", dir="/tmp")
    env = dict(os.environ, **FAST_FAILURE_DETECTION)
    env.pop("RAY_ADDRESS", None)
    port = free_port()
    # Both nodes are on 127.0.0.2, loopback as 127.0.0.1 is: Ray replaces `127.0.0.1`
    # and `localhost` (in addresses and in --node-ip-address) with the machine's network
    # address, so that other machines could reach it; this test talks to nothing but
    # loopback.
    address = f"{NODE_IP}:{port}"
    nodes: List[Node] = []
    try:
        head = Node("head", ["--head", "--port", str(port), "--include-dashboard=false", "--temp-dir", temp_dir],
                    tmp / "head.log", env)
        nodes.append(head)
        head.wait_started()
        worker = Node("worker", ["--address", address], tmp / "worker.log", dict(env, **worker_env))
        nodes.append(worker)
        worker.wait_started()
        yield address, head, worker
    finally:
        for node in reversed(nodes):
            node.kill()
        subprocess.run(["rm", "-rf", temp_dir], check=False)


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tuple[str, Node, Node]]:
    with cluster(tmp_path_factory.mktemp("cluster")) as c:
        yield c


def mixed_jobs(t: Path) -> List[str]:
    """36 batch lines: long and short jobs, inputs, writable folders, stdin, module
    folders (whose spec inputs are the driver's files), both profiles, hidden files left
    out, out of fuel, a repeated job, and three that cannot run (not a job, a module
    that does not load, an input that does not exist)."""
    data = data_tree(t / "data")
    (t / "rw").mkdir()
    (t / "rw" / ".keep").write_text("")
    (t / "stdin.txt").write_text("from the driver's disk\n")
    probe = str(PROBE)
    jobs: List[Dict[str, Any]] = []
    for i in range(16):
        # About 0.4 s each: the worker node is busy when it is killed.
        jobs.append({"module": probe, "args": ["int", str(100_000_000 + i)]})
    for i in range(6):
        jobs.append({"module": probe, "args": ["report"], "inputs": [f"{data}:/data{i}"], "seed": i,
                     "env": {"Z": str(i), "A": "first"}})
    jobs += [
        {"module": probe, "args": ["report"], "dirs": [f"{t / 'rw'}::/rw"], "stdin": str(t / "stdin.txt")},
        {"module": probe, "args": ["report"], "inputs": [str(data)], "skip_hidden": True,
         "profile": "unixfs-v1-2025"},
        {"module": probe, "args": ["spin"], "fuel": 50_000_000},
        {"module": "cowsay", "input_values": {"Message": "ray"}},
        {"module": "cowsay", "input_values": {"Message": "moo"}},
        {"module": "artgen", "input_values": {"Prompt": "a quiet lake at sunset", "Width": "96", "Height": "64"}},
        {"module": "digits"},
        {"module": "wordstats", "input_values": {"Input": "modules/wordstats/samples"}},
        {"module": str(ROOT / "fixtures/modules/cowsay.wasm"), "args": ["plain"], "memory": "64MiB"},
    ]
    lines = [json.dumps(j) for j in jobs]
    lines.insert(3, lines[0])  # the same job twice: two results folders, as in a batch
    lines.insert(10, json.dumps({"module": probe, "colour": "blue"}))
    lines.insert(20, json.dumps({"module": str(ROOT / "fixtures/probes/bad_import.wat")}))
    lines.append(json.dumps({"module": probe, "inputs": [str(t / "no-such-folder")]}))
    lines.append("")  # blank lines are skipped, and still counted in line numbers
    lines.append(json.dumps({"module": probe, "args": ["report"], "seed": 99}))
    assert len([line for line in lines if line]) == 36
    return lines


def check_against_serial(serial: List[Dict[str, Any]], ours: List[Any], serial_dir: Path, ours_dir: Path) -> None:
    """Each receipt equals the serial one but for where its folder is, each folder holds
    the same files, each error is the same error; nothing else was written."""
    assert len(ours) == len(serial)
    for s, o in zip(serial, ours):
        if "error" in s:
            assert o == s
            continue
        assert without(o, "results_dir") == without(s, "results_dir")
        # A folder named after its job id, directly under the other root. Which copy of a
        # repeated job gets `-2` follows the order they are delivered in (as for two
        # `detwasm run`s at once), so the names are compared as a set below.
        name = Path(o["results_dir"]).relative_to(ours_dir)
        assert len(name.parts) == 1 and name.name.split("-")[0] == o["job_id"], name
        # File for file the serial run's results, hidden files included.
        for profile in ("unixfs-v0-2015", "unixfs-v1-2025"):
            assert detwasm.hash(o["results_dir"], profile, hidden=True) == \
                detwasm.hash(s["results_dir"], profile, hidden=True)
    written = sorted(p.name for p in ours_dir.iterdir())
    assert written == sorted(Path(s["results_dir"]).name for s in serial if "error" not in s), \
        "one folder per job that ran, no staging folder left"


def test_run_many_gives_what_detwasm_batch_gives(ray_cluster: Tuple[str, Node, Node], tmp_path: Path,
                                                 cli: str, monkeypatch: pytest.MonkeyPatch) -> None:
    address, _, _ = ray_cluster
    monkeypatch.chdir(ROOT)  # module names and relative spec inputs, as from a checkout
    lines = mixed_jobs(tmp_path)[20:30]
    serial = batch(cli, lines, ROOT, tmp_path / "serial")
    try:
        results = run_many([json.loads(line) for line in lines if line], tmp_path / "ray", address=address)
    finally:
        ray.shutdown()
    ours: List[Any] = []
    for s, r in zip(serial, results):
        if "error" in s:
            # run_many has no line numbers: the message is the batch's without "line N: ".
            assert isinstance(r, detwasm.Error), r
            assert str(r) == s["error"].removeprefix(f"line {s['line']}: ")
            ours.append(s)
        else:
            ours.append(r)
    check_against_serial(serial, ours, tmp_path / "serial", tmp_path / "ray")


def test_a_lost_node_changes_nothing(ray_cluster: Tuple[str, Node, Node], tmp_path: Path, cli: str) -> None:
    address, head, worker = ray_cluster
    lines = mixed_jobs(tmp_path)
    serial = batch(cli, lines, ROOT, tmp_path / "serial")
    jobs_file = tmp_path / "jobs.jsonl"
    jobs_file.write_text("".join(line + "\n" for line in lines))
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    driver = subprocess.Popen(
        [sys.executable, "-m", "detwasm.ray", str(jobs_file), "--address", address,
         "--output-dir", str(tmp_path / "ray")],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    # Kill the worker node while it runs one of our tasks: that task must then be run
    # again elsewhere (the head is the only node left), or the run cannot complete.
    deadline = time.monotonic() + 120
    running = []
    while not running:
        assert driver.poll() is None, f"the run ended before the worker node ran a job: {driver.communicate()}"
        assert time.monotonic() < deadline, "the worker node never ran a job"
        running = [cmd for _, cmd in worker.pids() if cmd.startswith("ray::_run_job")]
        time.sleep(0.05)
    worker.kill()
    try:
        out, err = driver.communicate(timeout=240)
    finally:
        driver.kill()
    assert driver.returncode == 2, err  # some jobs cannot run, as in the serial batch
    assert "36 jobs in" in err and "on 1 nodes" in err, err
    ours = [json.loads(line) for line in out.splitlines()]
    check_against_serial(serial, ours, tmp_path / "serial", tmp_path / "ray")
    assert [s["line"] for s in serial if "error" in s] == [11, 21, 35]


#: Instructions between checkpoints of the checkpointed test: a few per second.
EVERY = 1_000_000_000


def test_a_job_whose_node_dies_goes_on_from_its_last_checkpoint(tmp_path: Path, cli: str) -> None:
    # The worker node's temporary folder is the test's: its job's snapshots (kept on
    # disk only until the next one) show how far it got when the node is killed.
    worker_tmp = tmp_path / "worker-tmp"
    worker_tmp.mkdir()
    # Two long jobs, one per node (each node has one CPU).
    jobs = [{"module": str(PROBE), "args": ["int", str(n)]} for n in (300_000_000, 300_000_001)]
    lines = [json.dumps(j) for j in jobs]
    jobs_file = tmp_path / "jobs.jsonl"
    jobs_file.write_text("".join(line + "\n" for line in lines))

    # The reference: each job run alone, with the same checkpoints.
    serial = []
    for i, job in enumerate(jobs):
        done = subprocess.run(
            [cli, "run", job["module"], "--json", "--checkpoint-every", str(EVERY),
             "--checkpoints", str(tmp_path / f"serial-cp{i}"), "-o", str(tmp_path / f"serial{i}"),
             "--", *job["args"]],
            capture_output=True, text=True, check=False,
        )
        assert done.returncode == 0, done.stderr
        serial.append(json.loads(done.stdout))
    assert len(serial[0]["trace"]["snapshots"]) >= 6, serial[0]["trace"]

    (tmp_path / "cluster").mkdir()
    with cluster(tmp_path / "cluster", {"TMPDIR": str(worker_tmp)}) as (address, _, worker):
        env = dict(os.environ)
        env.pop("RAY_ADDRESS", None)
        driver = subprocess.Popen(
            [sys.executable, "-m", "detwasm.ray", str(jobs_file), "--address", address,
             "--output-dir", str(tmp_path / "ray"), "--checkpoint-every", str(EVERY), "--json"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        # Kill the worker node once its job has saved its third snapshot.
        deadline = time.monotonic() + 180
        seen = 0
        while seen < 3:
            assert driver.poll() is None, f"the run ended first: {driver.communicate()}"
            assert time.monotonic() < deadline, "the worker node's job took no checkpoints"
            snapshots = [p.name for p in worker_tmp.glob("detwasm-remote-*/checkpoints/[0-9]*")]
            seen = max([int(n) for n in snapshots], default=0)
            time.sleep(0.05)
        worker.kill()
        try:
            out, err = driver.communicate(timeout=300)
        finally:
            driver.kill()
    assert driver.returncode == 0, err
    # The summary line (Ray may log to stderr after it, from its own processes).
    summary = json.loads(next(line for line in reversed(err.splitlines()) if line.startswith('{"jobs"')))
    assert summary["jobs"] == 2 and summary["exited_0"] == 2, summary
    # The lost job went on from a snapshot: it redid at most the work since the last
    # one its worker sent before the kill, not the whole job.
    assert summary["resumed"] == 1, summary
    total = serial[0]["instructions"]
    # (A snapshot is taken at the first check at or after each multiple of EVERY; one
    # more may have been taken between the last look and the kill.)
    assert EVERY <= summary["instructions_not_redone"] < (seen + 2) * EVERY < total, (summary, seen)
    print(f"lost at snapshot {seen} of {len(serial[0]['trace']['snapshots'])}; went on from instruction "
          f"{summary['instructions_not_redone']} of about {total}")
    ours = [json.loads(line) for line in out.splitlines()]
    assert len(ours) == 2
    for s, o in zip(serial, ours):
        # The same receipt, trace of snapshots included, as the uninterrupted run's.
        assert without(o, "results_dir", "job") == without(s, "results_dir", "job")
        assert without(o["job"], "module") == without(s["job"], "module")
        assert detwasm.hash(o["results_dir"], "unixfs-v0-2015", hidden=True) == \
            detwasm.hash(s["results_dir"], "unixfs-v0-2015", hidden=True)
