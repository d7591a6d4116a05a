"""detwasm.ray: run many jobs on a Ray cluster, with the results a serial run gives.

>>> from detwasm.ray import run_many
>>> receipts = run_many(jobs, output_dir="results", address="127.0.0.1:6379")  # doctest: +SKIP

Each job (a dict of ``detwasm batch`` keys) becomes one Ray task that runs wherever Ray
places it; the receipts come back in input order, each equal to the line ``detwasm
batch`` prints for the same job in the same folder, and each job's results folder is
written under ``output_dir`` on this machine (the driver). ``python -m detwasm.ray
JOBS.jsonl --address ADDRESS --output-dir DIR`` does the same from a jobs file and prints
one receipt per line.

How it works, and why (the checks themselves are the runtime's: see
``detwasm_ops::remote``):

* **Jobs travel by content.** The driver packs each job: the module's bytes, the stdin
  bytes, and each input folder as a CAR (the tree the guest sees, every block named by
  its hash). Each distinct module and tree is put in Ray's object store once, however
  many jobs use it. Workers need no shared filesystem and no path of the driver's: a
  worker checks every piece against the job's CIDs, unpacks the inputs into a scratch
  folder and runs. The job id depends only on content, so a worker's run has the
  driver's job id. Rejected: passing paths (needs one filesystem on every node, and a
  path names no content).
* **Results travel back as a CAR, checked before anything is written.** The driver
  checks that the receipt is for its job, that every block of the CAR matches its CID
  and that the folder it unpacks hashes to the receipt's CID, in a staging folder that
  is renamed into place only then (a reader never sees half a result). What the driver
  does not re-check is the run itself (exit code, instruction count): the workers are
  the user's own machines; ``detwasm verify`` re-runs a receipt for anyone who must
  not trust them.
* **Lost workers and nodes: Ray retries, the driver ends each job once.** A task whose
  worker process or node dies is retried by Ray on another node (``max_retries``); a
  result lost with its node is rebuilt by re-running its task. A task writes nothing
  outside its own scratch folder, so a task that ran twice, or died half-way, leaves no
  trace; the driver takes one result per job and writes it once. Determinism makes the
  copies equal, and the CID check makes sure the one written is right. Errors of the
  job itself (a module that cannot load) are returned, not raised, so Ray does not
  retry them: they would fail the same way every time. Rejected: workers writing
  results to a shared folder (two runs of one task would race, and a dead worker could
  leave a half-written folder).
* **With checkpoints, a lost job goes on where it was** (``checkpoint_every``). Each
  worker sends every snapshot of its job, as a CAR, to a small actor on the driver's
  node, which keeps the last one per job; a retried task asks it first and goes on
  from that snapshot (checked as ``detwasm resume`` checks one: the same job id, the
  job's limits). Only the work since the last snapshot is redone, and the receipt is
  the one ``detwasm run --checkpoint-every N --checkpoints DIR`` gives, trace included,
  with or without a loss on the way. Rejected: Ray's object store (an object lives on
  the node that put it, and dies with the node it should survive); a shared folder
  (Ray promises none). The cost: the actor holds one snapshot (about the guest's
  memory) per running job, and one more on its way from each worker (a snapshot saved
  while the previous one is still being sent is skipped); a worker holds the guest,
  the snapshot as a CAR and Python's copy of it while it sends (about three times the
  guest's memory at the peak); runs with checkpoints are slower (see the README).
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Hashable, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import ray

from detwasm import Error, _native, job_json
from detwasm._types import Job, Receipt

__all__ = ["DEFAULT_MAX_RETRIES", "run_many"]

#: How often Ray re-runs a task whose worker or node died (Ray's own default is 3). A
#: job is deterministic and idempotent here (a task writes nothing the driver sees), so
#: a retry costs only time; a few more than Ray's default survive a node lost while a
#: retry of the same task was already running.
DEFAULT_MAX_RETRIES = 5

PathLike = Union[str, "os.PathLike[str]"]

#: What a task returns: the worker's receipt (JSON), results CAR and the instructions
#: run at the snapshot it went on from (None: it started the job), or a message.
_TaskResult = Tuple[Optional[str], Optional[str], Optional[bytes], Optional[int]]


@ray.remote(num_cpus=0)
class _Snapshots:
    """The last snapshot (a CAR) each running job's worker sent, keyed by the job's
    index in the run; on the driver's node, so that it outlives any worker node."""

    def __init__(self) -> None:
        self._last: Dict[int, bytes] = {}

    def put(self, key: int, car: bytes) -> None:
        # Any snapshot of the job is a correct place to go on from (the run is
        # deterministic): the last one received is the furthest of a live worker.
        self._last[key] = car

    def last(self, key: int) -> Optional[bytes]:
        return self._last.get(key)

    def drop(self, key: int) -> None:
        self._last.pop(key, None)


@ray.remote(num_cpus=1, max_retries=DEFAULT_MAX_RETRIES, retry_exceptions=False)
def _run_job(spec: str, module: bytes, stdin: bytes, *inputs: bytes,
             checkpoints: Optional[Tuple[Any, int, int]] = None) -> _TaskResult:
    """One job on a worker: ``(receipt, None, car, resumed_at)``, or ``(None, message,
    None, None)`` when the job cannot run (returned, not raised: Ray must not retry a
    deterministic error). ``checkpoints``: ``(snapshots actor, job key, interval)``.
    """
    try:
        if checkpoints is None:
            receipt, car, _ = _native.run_portable(spec, module, stdin, list(inputs))
            return receipt, None, car, None
        store, key, every = checkpoints
        resume = ray.get(store.last.remote(key))
        in_flight: List[Any] = []

        def send(car: bytes) -> None:
            # At most one snapshot on its way to the actor: a snapshot saved while the
            # previous one is still being sent is skipped (the next goes), so a worker
            # holds at most one extra copy of the guest's state, however fast the
            # checkpoints come. Found by review: unthrottled, a 512 MiB guest's worker
            # peaked at 2.2 GB.
            if in_flight:
                done, _ = ray.wait(in_flight, timeout=0)
                if not done:
                    return
                in_flight.clear()
            in_flight.append(store.put.remote(key, car))

        try:
            receipt, car, at = _native.run_portable(spec, module, stdin, list(inputs), every, resume, send)
        except Error:
            if resume is None:
                raise
            # A snapshot this run could not go on from costs the work it saved, never
            # the job: start again (an error of the job itself recurs below).
            receipt, car, at = _native.run_portable(spec, module, stdin, list(inputs), every, None, send)
        return receipt, None, car, at
    except Error as e:
        return None, str(e), None, None


def _connect(address: Optional[str], quiet: bool) -> None:
    if not ray.is_initialized():
        # Workers' output would land in the driver's stdout, where receipts go.
        ray.init(address=address, log_to_driver=not quiet, logging_level="WARNING")


def run_ordered(
    jobs: Iterable[Tuple[Optional[int], str]],
    output_dir: Optional[PathLike] = None,
    *,
    address: Optional[str] = None,
    allow_inputs: Sequence[PathLike] = (),
    max_retries: int = DEFAULT_MAX_RETRIES,
    quiet: bool = False,
    checkpoint_every: Optional[int] = None,
) -> Iterator[Tuple[int, Union[str, Error], Optional[int]]]:
    """Runs jobs given as ``(line number or None, batch-line JSON)`` on the cluster and
    yields ``(index, receipt JSON or Error, resumed_at)`` in input order, each as soon as
    it and every job before it have ended. The receipt JSON is the text ``detwasm
    batch`` prints (with ``checkpoint_every``: ``detwasm run --checkpoint-every``'s, with
    its trace); ``resumed_at`` is the instruction count of the snapshot a retried job
    went on from (None when it ran from its start).
    """
    if checkpoint_every is not None and checkpoint_every < 1:
        raise ValueError("checkpoint_every must be at least 1")
    _connect(address, quiet)
    store = None
    if checkpoint_every is not None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        here = ray.get_runtime_context().get_node_id()
        store = _Snapshots.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=here, soft=False)
        ).remote()
    out = None if output_dir is None else os.fspath(output_dir)
    allowed = [os.fspath(p) for p in allow_inputs]
    task = _run_job.options(max_retries=max_retries)
    shipped: Dict[Hashable, ray.ObjectRef] = {}

    def put_once(key: Hashable, data: bytes) -> ray.ObjectRef:
        if key not in shipped:
            shipped[key] = ray.put(data)
        return shipped[key]

    ended: Dict[int, Tuple[Union[str, Error], Optional[int]]] = {}
    packed: Dict[int, Any] = {}
    running: Dict[ray.ObjectRef, int] = {}
    count = 0
    for index, (line, text) in enumerate(jobs):
        count += 1
        try:
            job = _native.pack(text, out, allowed, line)
        except Error as e:
            ended[index] = (e, None)
            continue
        module, stdin, inputs = job.take_content()
        refs = [put_once(("tree", cid), car) for cid, car in zip(job.input_cids, inputs)]
        checkpoints = None if store is None else (store, index, checkpoint_every)
        ref = task.remote(job.spec, put_once(("module", job.module_cid), module), stdin, *refs,
                          checkpoints=checkpoints)
        packed[index] = job
        running[ref] = index

    emitted = 0
    while emitted < count:
        while emitted in ended:
            result, resumed_at = ended.pop(emitted)
            yield emitted, result, resumed_at
            emitted += 1
        if not running:
            continue
        ready, _ = ray.wait(list(running), num_returns=1)
        for ref in ready:
            index = running.pop(ref)
            job = packed.pop(index)
            if store is not None:
                store.drop.remote(index)
            try:
                receipt, message, car, resumed_at = ray.get(ref)
            except ray.exceptions.RayError as e:
                # Ray's text may carry a worker's traceback of a hostile job's words.
                ended[index] = (Error(_native.shown(f"running {job.label}: the task failed on the cluster: {e}")), None)
                continue
            if message is not None:
                ended[index] = (Error(message), None)
                continue
            try:
                ended[index] = (job.deliver(receipt, car), resumed_at)
            except Error as e:
                ended[index] = (e, None)


def run_many(
    jobs: Iterable[Union[Job, Mapping[str, Any], str]],
    output_dir: Optional[PathLike] = None,
    *,
    address: Optional[str] = None,
    allow_inputs: Sequence[PathLike] = (),
    max_retries: int = DEFAULT_MAX_RETRIES,
    checkpoint_every: Optional[int] = None,
) -> List[Union[Receipt, Error]]:
    """Run jobs on a Ray cluster; return one receipt per job, in input order.

    ``jobs`` are dicts of ``detwasm batch`` keys (or their JSON text). Results folders
    are written on this machine under ``output_dir`` (default: the current folder), named
    after each job's id, or at the job's ``output``. ``address`` is the cluster's
    (``ray.init``'s: ``"127.0.0.1:6379"``, ``"auto"``, or None to start or reuse a local
    one); if Ray is already initialised it is used as it is. A job that cannot run ends
    as a :class:`detwasm.Error` in its place in the list (as ``detwasm batch`` prints an
    error line and goes on); other jobs are not affected.

    The jobs are the caller's, as a ``detwasm batch`` file is the operator's: their own
    paths (``inputs``, ``dirs``, ``stdin``, ``output``) are read and written on this
    machine unconfined; ``allow_inputs`` confines only what a module spec or job file
    names. Never pass jobs built from what someone you do not trust sent.

    ``checkpoint_every`` (instructions): each job takes a checkpoint that often and
    sends its snapshots to the driver's node, so that a job whose node dies goes on
    from its last snapshot on another node instead of starting again. The receipts are
    then those of ``detwasm run --checkpoint-every N --checkpoints DIR`` (with the trace
    of snapshots), the same whether or not a node was lost.
    """
    lines = ((None, job_json(job)) for job in jobs)
    out: List[Union[Receipt, Error]] = []
    for _, result, _ in run_ordered(
        lines, output_dir, address=address, allow_inputs=allow_inputs, max_retries=max_retries,
        checkpoint_every=checkpoint_every,
    ):
        out.append(json.loads(result) if isinstance(result, str) else result)
    return out
