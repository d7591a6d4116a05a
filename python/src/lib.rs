//! `detwasm._native`: the Python extension of the `detwasm` package. Conversion only:
//! every function here parses what Python passes (JSON text, paths, bytes), calls
//! detwasm-runtime or detwasm-hasher exactly as the CLI does, and returns JSON text,
//! bytes or a `detwasm.Error` whose message is the CLI's. The Python modules
//! (`detwasm`, `detwasm.ray`) wrap these in a Pythonic API.
//!
//! Jobs cross the boundary as JSON text of a batch line (`json.dumps` of the dict on the
//! Python side keeps the order of `env`, which is part of the job), parsed by
//! [`JobRequest::from_json`], the parser `detwasm batch` uses; receipts and reports come
//! back as the JSON the CLI prints. Rejected: converting dicts field by field in Rust
//! (a second parser of the same keys, free to drift from the batch format).
//!
//! Every call that runs or hashes releases the GIL, so Python threads can run jobs at
//! once (the runtime is shared and takes `&self`).

use std::path::PathBuf;
use std::sync::OnceLock;

use detwasm_ops::batch::{self, BatchOptions};
use detwasm_ops::remote::{self, Local, PortableJob};
use detwasm_ops::verify::{verify as verify_receipt, Sources};
use detwasm_ops::JobRequest;
use detwasm_runtime::engine::{default_cache_dir, EngineOptions};
use detwasm_runtime::run::Destination;
use detwasm_runtime::{Receipt, Runtime};
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::PyBytes;

create_exception!(
    _native,
    Error,
    PyException,
    "A job, hash or verification that could not be done. The message is what the detwasm \
     command line says after `detwasm: error: ` (for jobs: what `detwasm batch` reports)."
);

/// The process's runtime: one engine, its module cache (the CLI's default folder) and
/// the modules it loaded, shared by every call. Created on first use.
static RUNTIME: OnceLock<Runtime> = OnceLock::new();

fn runtime() -> PyResult<&'static Runtime> {
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    let rt = Runtime::new(EngineOptions {
        cache_dir: default_cache_dir(),
        parallel_compilation: true,
    })
    .map_err(|e| err(format!("{:#}", anyhow::Error::from(e))))?;
    Ok(RUNTIME.get_or_init(|| rt))
}

/// A message as the CLI prints it (`{err:#}` of anyhow: the error and its causes).
fn cli_message(e: impl std::error::Error + Send + Sync + 'static) -> PyErr {
    err(format!("{:#}", anyhow::Error::from(e)))
}

/// A `detwasm.Error` whose message, which may quote a job file, a CAR's names or a
/// server's answer, is fit for a terminal ([`detwasm_ops::text::shown`]), as the CLI's.
fn err(message: impl std::fmt::Display) -> PyErr {
    Error::new_err(detwasm_ops::text::shown(&message.to_string()))
}

fn cwd() -> PyResult<PathBuf> {
    std::env::current_dir().map_err(|e| err(format!("current directory: {e}")))
}

/// Batch options for jobs run from Python: relative paths against the current folder,
/// results under `output_dir` (default: the current folder), as `detwasm batch`.
fn batch_options(
    output_dir: Option<PathBuf>,
    allow_inputs: Vec<PathBuf>,
) -> PyResult<BatchOptions> {
    let cwd = cwd()?;
    Ok(BatchOptions {
        parallel: 1,
        output_dir: output_dir.map_or_else(|| cwd.clone(), |d| cwd.join(d)),
        cwd,
        allow_inputs,
        // $DETWASM_IPFS_GATEWAY and $DETWASM_IPFS_API, as for `detwasm batch`.
        ipfs: detwasm_ops::ipfs::Remote::from_flags_or_env(None, None),
    })
}

/// Parses a job (a batch line's JSON). `line` prefixes the message as `detwasm batch`
/// does for a line that is not a job.
fn request(job: &str, line: Option<usize>) -> PyResult<JobRequest> {
    JobRequest::from_json(job).map_err(|e| {
        err(match line {
            Some(n) => format!("line {n}: {e}"),
            None => e,
        })
    })
}

/// Warnings the runtime has not shown yet (e.g. a module cache folder others can write,
/// which it ignores), each once.
#[pyfunction]
fn warnings() -> Vec<String> {
    RUNTIME.get().map(|rt| rt.warnings()).unwrap_or_default()
}

/// Runs one job (a batch line's JSON) and returns its receipt as JSON. The job is the
/// caller's, as a jobs file is the operator's: its own paths are not confined
/// (`allow_inputs` confines only a module spec's or job file's inputs).
#[pyfunction]
#[pyo3(signature = (job, output_dir=None, allow_inputs=Vec::new()))]
fn run(
    py: Python<'_>,
    job: &str,
    output_dir: Option<PathBuf>,
    allow_inputs: Vec<PathBuf>,
) -> PyResult<String> {
    let req = request(job, None)?;
    let opts = batch_options(output_dir, allow_inputs)?;
    let rt = runtime()?;
    let receipt = py
        .detach(|| {
            let planned = batch::job_of(&req, &opts)?;
            rt.run(&planned.job, &planned.dest)
                .map_err(|e| batch::run_error(&req, e))
        })
        .map_err(err)?;
    to_json(&receipt)
}

fn to_json(v: &impl serde::Serialize) -> PyResult<String> {
    serde_json::to_string(v)
        .map(detwasm_ops::text::json_safe)
        .map_err(|e| err(e.to_string()))
}

/// The CID of a file or folder, as `detwasm hash PATH --profile PROFILE [--hidden]`.
#[pyfunction]
#[pyo3(signature = (path, profile="unixfs-v0-2015", hidden=false))]
fn hash(py: Python<'_>, path: PathBuf, profile: &str, hidden: bool) -> PyResult<String> {
    let profile: detwasm_hasher::Profile = profile.parse().map_err(cli_message)?;
    let opts = detwasm_hasher::Options::profile(profile).with_hidden(hidden);
    py.detach(|| detwasm_hasher::hash_path(&path, &opts))
        .map(|h| h.root.to_string())
        .map_err(cli_message)
}

/// Re-runs the job of a receipt and returns the report (JSON), as `detwasm verify
/// --json`. The receipt is JSON text, or else the file at `path` (read as the CLI reads
/// it, with its messages).
#[pyfunction]
#[pyo3(signature = (receipt, path, results=None, module=None, inputs=Vec::new(), stdin=None, keep=None))]
#[allow(clippy::too_many_arguments)]
fn verify(
    py: Python<'_>,
    receipt: Option<String>,
    path: Option<PathBuf>,
    results: Option<PathBuf>,
    module: Option<PathBuf>,
    inputs: Vec<String>,
    stdin: Option<PathBuf>,
    keep: Option<PathBuf>,
) -> PyResult<String> {
    let receipt: Receipt = match (receipt, path) {
        (Some(text), _) => serde_json::from_str(&text)
            .map_err(|e| err(format!("the receipt is not a detwasm receipt: {e}")))?,
        // Read as the CLI reads it: at most MAX_RECEIPT_BYTES, a FIFO refused.
        (None, Some(p)) => py
            .detach(|| detwasm_ops::verify::read_receipt(&p))
            .map_err(cli_message)?,
        (None, None) => return Err(err("no receipt given")),
    };
    let sources = Sources {
        module,
        inputs: inputs.iter().map(|s| Sources::parse_input(s)).collect(),
        stdin,
        caps: Default::default(),
    };
    let rt = runtime()?;
    let report = py
        .detach(|| verify_receipt(rt, &receipt, &sources, results.as_deref(), keep.as_deref()))
        .map_err(cli_message)?;
    to_json(&report)
}

/// A job packed on the driver for a Ray worker (see `detwasm_ops::remote`): the
/// portable job as JSON, its content until taken, and what the driver needs to check
/// and deliver the worker's results.
#[pyclass(module = "detwasm._native")]
struct PackedJob {
    job: PortableJob,
    local: Local,
    dest: Destination,
    content: Option<Content>,
}

/// A packed job's content: the module, stdin, and one CAR per input.
type Content = (Vec<u8>, Vec<u8>, Vec<Vec<u8>>);

/// [`Content`] as Python bytes.
type PyContent<'py> = (
    Bound<'py, PyBytes>,
    Bound<'py, PyBytes>,
    Vec<Bound<'py, PyBytes>>,
);

#[pymethods]
impl PackedJob {
    /// The job id (the same on every machine).
    #[getter]
    fn job_id(&self) -> &str {
        &self.job.job_id
    }

    /// The module as the job names it (for messages).
    #[getter]
    fn label(&self) -> &str {
        &self.job.label
    }

    /// The portable job, as JSON: what a worker receives besides the content.
    #[getter]
    fn spec(&self) -> PyResult<String> {
        to_json(&self.job)
    }

    /// The module's CID (a key to ship each module once).
    #[getter]
    fn module_cid(&self) -> &str {
        &self.job.module_cid
    }

    /// The input trees' CIDs, in the job's order (keys to ship each tree once).
    #[getter]
    fn input_cids(&self) -> Vec<String> {
        self.job.inputs.iter().map(|i| i.cid.clone()).collect()
    }

    /// The content, once: `(module, stdin, [input CAR, ...])`. Later calls raise: the
    /// driver keeps no second copy of what it put in the object store.
    fn take_content<'py>(&mut self, py: Python<'py>) -> PyResult<PyContent<'py>> {
        let (module, stdin, inputs) = self
            .content
            .take()
            .ok_or_else(|| err("the content of this job was already taken"))?;
        Ok((
            PyBytes::new(py, &module),
            PyBytes::new(py, &stdin),
            inputs.iter().map(|c| PyBytes::new(py, c)).collect(),
        ))
    }

    /// Checks a worker's receipt (JSON) and results CAR and delivers the results; returns
    /// the receipt `detwasm batch` prints for the job.
    fn deliver(&self, py: Python<'_>, receipt: &str, car: PyBackedBytes) -> PyResult<String> {
        let receipt: Receipt = serde_json::from_str(receipt)
            .map_err(|e| err(format!("the worker's receipt does not parse: {e}")))?;
        let receipt = py
            .detach(|| remote::deliver(&self.job, &self.local, receipt, &car, &self.dest))
            .map_err(|e| err(e.to_string()))?;
        to_json(&receipt)
    }
}

/// Packs a job (a batch line's JSON) on the driver: the job `detwasm batch` would run,
/// with its content read and hashed. `line` is the line number for messages about a
/// line that is not a job.
#[pyfunction]
#[pyo3(signature = (job, output_dir=None, allow_inputs=Vec::new(), line=None))]
fn pack(
    py: Python<'_>,
    job: &str,
    output_dir: Option<PathBuf>,
    allow_inputs: Vec<PathBuf>,
    line: Option<usize>,
) -> PyResult<PackedJob> {
    let req = request(job, line)?;
    let opts = batch_options(output_dir, allow_inputs)?;
    let rt = runtime()?;
    py.detach(|| {
        // `planned.staging` (a job file's staged file inputs) lives until packed.
        let planned = batch::job_of(&req, &opts)?;
        let label = req.module.display().to_string();
        let packed = remote::pack(rt, &planned.job, &label).map_err(|e| e.to_string())?;
        let dest = planned.dest;
        Ok::<_, String>(PackedJob {
            job: packed.job,
            local: packed.local,
            dest,
            content: Some((packed.module.to_vec(), packed.stdin, packed.inputs)),
        })
    })
    .map_err(err)
}

/// Runtimes that take checkpoints, one per interval asked for (a process asks for one
/// or a few: each is an engine of its own, kept for the process's life).
static CHECKPOINTING: std::sync::Mutex<Vec<(u64, &'static Runtime)>> =
    std::sync::Mutex::new(Vec::new());

fn checkpointing_runtime(every: u64) -> PyResult<&'static Runtime> {
    let mut all = CHECKPOINTING
        .lock()
        .map_err(|_| err("a thread panicked while creating a runtime"))?;
    if let Some((_, rt)) = all.iter().find(|(e, _)| *e == every) {
        return Ok(rt);
    }
    let rt = Runtime::new(EngineOptions {
        cache_dir: default_cache_dir(),
        parallel_compilation: true,
    })
    .map_err(|e| err(format!("{:#}", anyhow::Error::from(e))))?
    .with_checkpoints(every);
    let rt: &'static Runtime = Box::leak(Box::new(rt));
    all.push((every, rt));
    Ok(rt)
}

/// Runs a packed job on this machine (a Ray worker): `spec` is [`PackedJob::spec`],
/// then the content. Returns the worker's receipt (JSON), the results as a CAR, and the
/// instructions run at the snapshot it went on from (None without `resume`).
///
/// With `checkpoint_every` (instructions), the run takes checkpoints
/// ([`remote::Checkpoints`]): `on_snapshot(car)` is called with each snapshot as a CAR
/// as soon as it is saved (on the run's thread; what it raises is printed and ignored: a
/// snapshot lost costs only work redone), and `resume` (a snapshot CAR of this job that
/// an earlier worker sent) makes the run go on from it.
#[pyfunction]
#[pyo3(signature = (spec, module, stdin, inputs, checkpoint_every=None, resume=None, on_snapshot=None))]
#[allow(clippy::too_many_arguments)]
fn run_portable<'py>(
    py: Python<'py>,
    spec: &str,
    module: PyBackedBytes,
    stdin: PyBackedBytes,
    inputs: Vec<PyBackedBytes>,
    checkpoint_every: Option<u64>,
    resume: Option<PyBackedBytes>,
    on_snapshot: Option<Py<PyAny>>,
) -> PyResult<(String, Bound<'py, PyBytes>, Option<u64>)> {
    let job: PortableJob =
        serde_json::from_str(spec).map_err(|e| err(format!("not a packed job: {e}")))?;
    let rt = match checkpoint_every {
        Some(0) => return Err(err("checkpoint_every must be at least 1")),
        Some(every) => checkpointing_runtime(every)?,
        None => {
            if resume.is_some() || on_snapshot.is_some() {
                return Err(err("resume and on_snapshot need checkpoint_every"));
            }
            runtime()?
        }
    };
    let send = |car: Vec<u8>| {
        if let Some(f) = &on_snapshot {
            Python::attach(|py| {
                if let Err(e) = f.call1(py, (PyBytes::new(py, &car),)) {
                    e.print(py);
                }
            })
        }
    };
    let ran = py
        .detach(|| {
            let cars: Vec<&[u8]> = inputs.iter().map(|c| &c[..]).collect();
            let cp = checkpoint_every.map(|_| remote::Checkpoints {
                resume: resume.as_deref(),
                send: &send,
            });
            remote::run_portable(
                rt,
                &job,
                module.to_vec(),
                stdin.to_vec(),
                &cars,
                cp.as_ref(),
            )
        })
        .map_err(|e| err(e.to_string()))?;
    Ok((
        to_json(&ran.receipt)?,
        PyBytes::new(py, &ran.car),
        ran.resumed_at,
    ))
}

/// The non-blank lines of a jobs file (`-`: standard input) with their numbers
/// (1-based), read and split exactly as `detwasm batch` reads them.
#[pyfunction]
fn read_jobs(path: PathBuf) -> PyResult<Vec<(usize, String)>> {
    let text = if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())
            .map_err(|e| err(format!("reading jobs from stdin: {e}")))?
    } else {
        std::fs::read_to_string(&path)
            .map_err(|e| err(format!("reading jobs {}: {e}", path.display())))?
    };
    Ok(batch::job_lines(&text)
        .map(|(n, l)| (n, l.to_string()))
        .collect())
}

/// Text that may quote untrusted parties, fit for a terminal, as the CLI shows it
/// ([`detwasm_ops::text::shown`]): for the messages the Python side makes itself.
#[pyfunction]
fn shown(text: &str) -> String {
    detwasm_ops::text::shown(text)
}

/// The line `detwasm batch` prints for a job that could not run.
#[pyfunction]
fn error_line(line: usize, error: &str) -> PyResult<String> {
    // As `detwasm batch` prints it: the error may quote a job's spec or a worker's words.
    let error = detwasm_ops::text::shown(error);
    to_json(&serde_json::json!({"line": line, "error": error}))
}

/// The compile worker's side (`detwasm_runtime::compile_worker::serve`): compiles the
/// module on stdin, writes it on stdout and returns the exit status. Only for the
/// process [`name_compile_worker`] starts.
#[pyfunction]
fn _compile_worker(py: Python<'_>) -> i32 {
    py.detach(detwasm_runtime::compile_worker::serve)
}

/// What the worker interpreter runs. The current folder, which `-c` puts first on the
/// path, is taken off it: the worker must import the extension the caller imported, not
/// a `detwasm` folder where the caller happens to stand (one that cannot be imported
/// writes nothing, and the caller compiles in process).
const WORKER_CODE: &str = "import sys\n\
                           if sys.path[:1] == ['']: del sys.path[0]\n\
                           from detwasm import _native\n\
                           sys.exit(_native._compile_worker())";

/// Names this interpreter, importing this extension, as the compile worker of jobs with a
/// deadline, so that a compile is killed at the deadline instead of running on in the
/// caller's process (a Ray worker, a notebook). An embedded interpreter with no
/// `sys.executable` names none, and compiles in process.
fn name_compile_worker(py: Python<'_>) -> PyResult<()> {
    let executable: Option<String> = py.import("sys")?.getattr("executable")?.extract().ok();
    if let Some(executable) = executable.filter(|e| !e.is_empty()) {
        detwasm_runtime::compile_worker::set_compile_worker(
            executable.into(),
            vec!["-c".into(), WORKER_CODE.into()],
        );
    }
    Ok(())
}

/// detwasm's Python extension: conversion between Python and detwasm-runtime.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    name_compile_worker(m.py())?;
    m.add_function(wrap_pyfunction!(_compile_worker, m)?)?;
    m.add("Error", m.py().get_type::<Error>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<PackedJob>()?;
    m.add_function(wrap_pyfunction!(run, m)?)?;
    m.add_function(wrap_pyfunction!(hash, m)?)?;
    m.add_function(wrap_pyfunction!(verify, m)?)?;
    m.add_function(wrap_pyfunction!(warnings, m)?)?;
    m.add_function(wrap_pyfunction!(pack, m)?)?;
    m.add_function(wrap_pyfunction!(run_portable, m)?)?;
    m.add_function(wrap_pyfunction!(read_jobs, m)?)?;
    m.add_function(wrap_pyfunction!(error_line, m)?)?;
    m.add_function(wrap_pyfunction!(shown, m)?)?;
    Ok(())
}
