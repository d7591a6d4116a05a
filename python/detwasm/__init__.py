"""detwasm: deterministic WebAssembly jobs, in-process.

A *job* is a dict with the keys of a ``detwasm batch`` line: ``module`` (required: a
.wasm or .wat file, a module folder or a module name), ``args``, ``env`` (its order is
part of the job), ``inputs``, ``dirs``, ``input_values``, ``stdin``, ``seed``, ``epoch``,
``fuel``, ``memory``, ``max_output``, ``timeout``, ``entry``, ``profile``,
``skip_hidden``, ``no_outputs`` and ``output``. Unknown keys are an error. Relative
paths are taken against the current folder, as the command line takes them. Limits
combine with a module spec's as the command line's flags do: the tighter wins, and fuel
nobody states is 1e9 instructions per second of the job's timeout.

A job dict is the caller's, as the flags of ``detwasm run`` are: its own paths
(``inputs``, ``dirs``, ``stdin``, ``output``) are read and written with this process's
rights, unconfined (``{"inputs": ["/etc:/x"]}`` mounts ``/etc``; ``{"output": "../../x"}``
writes there). Never build a job dict from what someone you do not trust sent; take
their module folder or Bacalhau job file as ``module`` instead, whose own inputs are
confined to its folder and ``allow_inputs``.

>>> import detwasm
>>> receipt = detwasm.run({"module": "hello.wasm", "args": ["world"]})  # doctest: +SKIP
>>> receipt["cid"], receipt["exit_code"]                                # doctest: +SKIP

Everything here runs in this process (the runtime is a Rust extension; calls release the
GIL, so threads run jobs at once). Errors raise :class:`detwasm.Error` with the message
the command line prints after ``detwasm: error:``. To run many jobs on a Ray cluster, see
:mod:`detwasm.ray`.

This module is conversion only: a job dict becomes the JSON of a batch line (so ``env``
keeps its order), receipts and reports come back as the JSON the command line prints,
parsed into dicts. What a job means is decided by the runtime, in one place.
"""

from __future__ import annotations

import json
import os
import warnings as _warnings
from typing import Any, List, Mapping, Optional, Sequence, Union

from detwasm import _native
from detwasm._native import Error
from detwasm._types import Job, Receipt, Report

__all__ = ["Error", "Job", "Receipt", "Report", "hash", "run", "verify", "__version__"]

__version__: str = _native.__version__

# The extension names its exception `_native.Error`, a module no one can import: named
# after this package instead, it pickles by reference (a Ray worker raises the same class
# the driver catches) and shows as `detwasm.Error` in tracebacks.
Error.__module__ = "detwasm"

PathLike = Union[str, "os.PathLike[str]"]


def _fspath(value: object) -> str:
    """``json.dumps`` hook: a path object in a job is written as its path."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"a job value of type {type(value).__name__} is not JSON (str, number, bool, list or dict)")


def job_json(job: Union[Mapping[str, Any], str]) -> str:
    """The JSON text of a job: a batch line. A str is taken as that text already.

    ``json.dumps`` keeps a dict's insertion order, so ``env`` reaches the runtime in the
    order it was written (the order is part of the job, as the order of ``-e`` flags is).
    """
    if isinstance(job, str):
        return job
    if not isinstance(job, Mapping):
        raise TypeError(f"a job is a dict of batch-line keys, not {type(job).__name__}")
    return json.dumps(dict(job), default=_fspath, ensure_ascii=False)


def _paths(values: Sequence[PathLike]) -> List[str]:
    if isinstance(values, (str, bytes, os.PathLike)):
        raise TypeError("expected a list of paths, not one path")
    return [os.fspath(v) for v in values]


def _show_warnings() -> None:
    for message in _native.warnings():
        _warnings.warn(f"detwasm: {message}", RuntimeWarning, stacklevel=3)


def run(
    job: Union[Job, Mapping[str, Any], str],
    *,
    output_dir: Optional[PathLike] = None,
    allow_inputs: Sequence[PathLike] = (),
) -> Receipt:
    """Run one job and return its receipt (the dict ``detwasm run --json`` prints).

    The results folder is the job's ``output`` if given, else a folder named after the job
    id under ``output_dir`` (default: the current folder; ``<job id>-2``, ... when the job
    ran there before). ``allow_inputs`` lets a module folder's spec or a job file take
    inputs from those folders (``--allow-input``); it confines only what the spec names,
    not the job dict's own ``inputs``, ``dirs``, ``stdin`` and ``output``, which are the
    caller's (see the module docs). A job whose module exits non-zero, traps or runs out of
    fuel still returns a receipt (see its ``exit_code``, ``outcome`` and ``trap``); a job
    that cannot run raises :class:`Error` with the message ``detwasm batch`` reports.
    """
    try:
        text = _native.run(
            job_json(job),
            None if output_dir is None else os.fspath(output_dir),
            _paths(allow_inputs),
        )
    finally:
        _show_warnings()
    receipt: Receipt = json.loads(text)
    return receipt


def hash(path: PathLike, profile: str = "unixfs-v0-2015", *, hidden: bool = False) -> str:  # noqa: A001
    """The IPFS CID of a file or folder, as ``detwasm hash PATH --profile PROFILE``.

    ``profile`` is ``"unixfs-v0-2015"`` (kubo's ``ipfs add -r`` defaults) or
    ``"unixfs-v1-2025"``. Hidden files are left out unless ``hidden`` (as ``--hidden``).
    """
    return _native.hash(os.fspath(path), profile, hidden)


def verify(
    receipt: Union[Receipt, Mapping[str, Any], PathLike],
    results: Optional[PathLike] = None,
    *,
    module: Optional[PathLike] = None,
    inputs: Sequence[str] = (),
    stdin: Optional[PathLike] = None,
    keep: Optional[PathLike] = None,
) -> Report:
    """Re-run the job of a receipt and compare, as ``detwasm verify --json``.

    ``receipt`` is a receipt dict (as :func:`run` returns) or the path of a receipt file.
    With ``results`` (the provider's results folder), every file that differs from the
    re-run is listed. ``module``, ``inputs`` (``"HOST:GUEST"`` or ``"HOST"``) and
    ``stdin`` point at content that is not where the receipt says; ``keep`` keeps the
    re-run's results there. Returns the report: ``report["verified"]`` is the verdict
    and ``report["reasons"]`` says why not. Raises :class:`Error` when the job cannot be
    re-run at all (module or input missing or not the receipt's, another engine).
    """
    if isinstance(receipt, Mapping):
        text: Optional[str] = json.dumps(dict(receipt), ensure_ascii=False)
        path: Optional[str] = None
    else:
        text, path = None, os.fspath(receipt)
    try:
        report_text = _native.verify(
            text,
            path,
            None if results is None else os.fspath(results),
            None if module is None else os.fspath(module),
            list(inputs),
            None if stdin is None else os.fspath(stdin),
            None if keep is None else os.fspath(keep),
        )
    finally:
        _show_warnings()
    report: Report = json.loads(report_text)
    return report
