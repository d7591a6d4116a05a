//! Errors of the runtime crate. A job that runs and traps is not an error (it has an
//! [`crate::Outcome`]); these are the reasons a job could not be run at all.

use std::path::PathBuf;

/// What is wrong with a [`crate::Job`] before it runs.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("guest path `{0}` must be absolute and normal (no `.`, `..`, `//` or trailing `/`)")]
    BadGuestPath(String),
    #[error("output name `{0}` must be a plain folder name other than stdout, stderr and exitCode, and unique")]
    BadOutputName(String),
    #[error("two mounts at guest path `{0}` (`{1}`): each mount needs a guest path of its own")]
    OverlappingMounts(String, String),
    #[error("input `{}` does not exist or cannot be read", .0.display())]
    InputMissing(PathBuf),
    /// More inputs than [`crate::job::MAX_INPUTS`].
    #[error("the job has {count} inputs, more than the {limit} a job may have (MAX_INPUTS: each input is scanned and hashed on its own); put files that belong together in one folder and mount that folder once")]
    TooManyInputs { count: usize, limit: usize },
    /// More outputs than [`crate::job::MAX_OUTPUTS`].
    #[error("the job has {count} outputs, more than the {limit} a job may have (MAX_OUTPUTS: each output is a mount and a results folder of its own); write files that belong together into one output")]
    TooManyOutputs { count: usize, limit: usize },
    #[error("environment variable name `{0}` is invalid (empty, or contains `=` or NUL)")]
    BadEnv(String),
    #[error("the value of environment variable `{0}` contains NUL (a C environment string cannot hold one)")]
    BadEnvValue(String),
    #[error("argument `{0}` contains NUL")]
    BadArg(String),
    /// Over [`crate::job::MAX_ARGS_ENV_BYTES`]: sizes as the guest receives them.
    #[error("the job's arguments ({args} bytes) and environment ({env} bytes) take {} bytes, over the limit of {limit} bytes (2 MiB, as Linux's ARG_MAX; each string counted with its NUL, argv[0] included, a variable as KEY=VALUE)", .args + .env)]
    ArgsEnvTooLarge { args: u64, env: u64, limit: u64 },
    #[error("the entry point name is empty")]
    BadEntry,
    #[error("epoch `{0}` is neither seconds since 1970 nor an RFC 3339 time (e.g. 2022-01-01T00:00:00Z)")]
    BadEpoch(String),
}

/// Why a job could not be run or its results not delivered.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Job(#[from] JobError),
    #[error("not a WebAssembly module: {0}")]
    NotWasm(String),
    #[error("invalid WebAssembly module: {0}")]
    InvalidModule(String),
    #[error("the module imports `{module}`.`{name}`, which detwasm does not provide (only wasi_snapshot_preview1 functions are available)")]
    UnknownImport { module: String, name: String },
    #[error("the module imports `{module}`.`{name}` with the wrong type: {detail}")]
    BadImportType {
        module: String,
        name: String,
        detail: String,
    },
    #[error("the module has no exported function `{0}` to call (a WASI command exports `_start`)")]
    MissingEntry(String),
    #[error("the module's entry `{0}` must take no parameters and return nothing")]
    BadEntryType(String),
    /// A module whose shape predicts unbounded compile work
    /// ([`crate::passes::shape`]): the message names the function, the measure, its
    /// value and the limit.
    #[error("module refused: {0}")]
    TooComplex(String),
    /// Loading, validating, rewriting and compiling the module did not finish before the
    /// job's wall-clock deadline (`detwasm_runtime::compile::compile_by`): no result, not even an
    /// unverifiable one, since the guest never ran.
    #[error("compiling the module did not finish within the job's wall-clock timeout of {secs} s (nothing was run or delivered; a larger `--timeout` allows longer compiles)")]
    CompileTimeout { secs: f64 },
    /// Scanning or hashing an input did not finish before the job's wall-clock deadline
    /// (`capabilities::grant_by`, [`crate::results::cid_of_dir_by`]): nothing ran,
    /// nothing is delivered. `what` says which (`hashing input …`, `scanning input …`).
    #[error("{what} did not finish within the job's wall-clock timeout of {secs} s (nothing was run or delivered; a larger `--timeout` allows it more time)")]
    InputTimeout { what: String, secs: f64 },
    #[error("the module could not be instantiated: {0}")]
    Instantiate(String),
    #[error("input `{}`: {reason}", path.display())]
    Input { path: PathBuf, reason: String },
    /// A snapshot (a checkpoints folder's entry, or a CAR of one) that this runtime will
    /// not resume: its layout, its state or its frames are not what a run of the job
    /// saves. Its own variant because it is evidence about whoever made the snapshot
    /// (a spot check counts it against the provider), where [`RunError::Io`] and
    /// [`RunError::HostFailure`] are this machine's and leave a verdict open.
    #[error("snapshot `{}`: {reason}", path.display())]
    Snapshot { path: PathBuf, reason: String },
    #[error("results directory `{}` already exists and is not empty", .0.display())]
    OutputExists(PathBuf),
    /// Writing the results failed (a full disk, a file size limit, two output names the
    /// filesystem takes for one): a host failure, never a guest outcome. The partial
    /// staging folder was removed.
    #[error("writing results into {}: {cause} (nothing was delivered)", dest.display())]
    WriteResults {
        dest: PathBuf,
        cause: std::io::Error,
    },
    /// The cause is part of the message and deliberately not `source()`, so that a chain
    /// printer (anyhow's `{:#}`) shows it once.
    #[error("{context}: {cause}")]
    Io {
        context: String,
        cause: std::io::Error,
    },
    #[error("hashing {what}: {reason}")]
    Hash { what: String, reason: String },
    #[error("engine: {0}")]
    Engine(String),
    /// The host failed while the job ran (an input unreadable or changed, memory the
    /// host could not provide): nothing is delivered, since the guest's outcome would
    /// depend on this host.
    #[error("host failure during the run (not a result of the job; nothing was delivered): {0}")]
    HostFailure(String),
}

impl RunError {
    /// An I/O error with what detwasm was doing when it happened.
    pub fn io(context: impl Into<String>, cause: std::io::Error) -> Self {
        RunError::Io {
            context: context.into(),
            cause,
        }
    }
}
