"""Types of detwasm's Rust extension. Conversion only: JSON text in and out, as the
command line reads and prints it; the Python modules wrap these."""

from typing import Callable, List, Optional, Tuple

__version__: str

class Error(Exception):
    """A job, hash or verification that could not be done; the message is the command
    line's (after ``detwasm: error:``)."""

def run(job: str, output_dir: Optional[str] = None, allow_inputs: List[str] = ...) -> str: ...
def hash(path: str, profile: str = "unixfs-v0-2015", hidden: bool = False) -> str: ...
def verify(
    receipt: Optional[str],
    path: Optional[str],
    results: Optional[str] = None,
    module: Optional[str] = None,
    inputs: List[str] = ...,
    stdin: Optional[str] = None,
    keep: Optional[str] = None,
) -> str: ...
def warnings() -> List[str]: ...
def read_jobs(path: str) -> List[Tuple[int, str]]: ...
def error_line(line: int, error: str) -> str: ...
def shown(text: str) -> str: ...

class PackedJob:
    """A job packed on the driver for a worker (see detwasm.ray)."""

    @property
    def job_id(self) -> str: ...
    @property
    def label(self) -> str: ...
    @property
    def spec(self) -> str: ...
    @property
    def module_cid(self) -> str: ...
    @property
    def input_cids(self) -> List[str]: ...
    def take_content(self) -> Tuple[bytes, bytes, List[bytes]]: ...
    def deliver(self, receipt: str, car: bytes) -> str: ...

def pack(
    job: str, output_dir: Optional[str] = None, allow_inputs: List[str] = ..., line: Optional[int] = None
) -> PackedJob: ...
def run_portable(
    spec: str,
    module: bytes,
    stdin: bytes,
    inputs: List[bytes],
    checkpoint_every: Optional[int] = None,
    resume: Optional[bytes] = None,
    on_snapshot: Optional[Callable[[bytes], None]] = None,
) -> Tuple[str, bytes, Optional[int]]: ...
