"""The shapes of jobs, receipts and reports, for type checkers and readers.

They describe the JSON the command line reads and prints (``detwasm batch`` lines,
``detwasm run --json`` receipts, ``detwasm verify --json`` reports); the runtime decides
what is valid, these only name the keys.
"""

from __future__ import annotations

import os
import sys
from typing import Dict, List, Optional, Tuple, Union

if sys.version_info >= (3, 11):
    from typing import NotRequired, Required, TypedDict
else:  # pragma: no cover - older Pythons
    from typing_extensions import NotRequired, Required, TypedDict

_Path = Union[str, "os.PathLike[str]"]


class Job(TypedDict, total=False):
    """A job: the keys of a ``detwasm batch`` line (all optional but ``module``)."""

    module: Required[_Path]
    args: List[str]
    env: Dict[str, str]
    inputs: List[str]
    dirs: List[str]
    input_values: Dict[str, str]
    stdin: _Path
    seed: int
    epoch: Union[int, str]
    fuel: int
    memory: Union[int, str]
    max_output: Union[int, str]
    timeout: float
    entry: str
    profile: str
    skip_hidden: bool
    no_outputs: bool
    output: _Path


class Limits(TypedDict):
    fuel: int
    memory: int
    max_output: int
    timeout: Optional[float]


class InputRecord(TypedDict):
    host: str
    guest: str
    cid: str
    writable: NotRequired[bool]


class Output(TypedDict):
    name: str
    guest: str


class JobRecord(TypedDict):
    module: Optional[str]
    module_cid: str
    argv0: str
    entry: str
    args: List[str]
    env: List[Tuple[str, str]]
    stdin_blake3: str
    stdin_bytes: int
    inputs: List[InputRecord]
    outputs: List[Output]
    seed: int
    epoch_unix_nanos: int
    limits: Limits


class Receipt(TypedDict):
    """A receipt, as ``detwasm run --json`` prints it."""

    cid: str
    profile: str
    skip_hidden: bool
    exit_code: int
    outcome: str
    trap: Optional[str]
    instructions: int
    verifiable: bool
    job_id: str
    module_cid: str
    engine: str
    detwasm_version: str
    results_dir: str
    job: JobRecord


class Difference(TypedDict):
    path: str
    what: str
    cid_rerun: Optional[str]
    cid_provider: Optional[str]
    first_difference: Optional[int]
    text: Optional[str]


class Report(TypedDict):
    """A verification report, as ``detwasm verify --json`` prints it."""

    verified: bool
    reasons: List[str]
    cid_expected: str
    cid_actual: str
    instructions_expected: int
    instructions_actual: int
    exit_code_expected: int
    exit_code_actual: int
    outcome_expected: str
    outcome_actual: str
    job_id: str
    cid_provider: Optional[str]
    differences: List[Difference]
    differences_unlisted: int
    rerun_results: Optional[str]
