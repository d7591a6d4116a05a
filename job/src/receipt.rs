//! The receipt of a run: what a verifier compares, and everything needed to re-run it.

use serde::{Deserialize, Serialize};

use crate::job::{Limits, Output};
use crate::results::Profile;

/// How a run ended. Every variant but [`Outcome::Timeout`] is a deterministic function of
/// the job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The entry returned (code 0) or the guest called `proc_exit(code)`.
    Exited(i32),
    /// A WebAssembly trap (unreachable, out-of-bounds access, stack overflow, …), or a
    /// failure at instantiation (e.g. initial memory above the limit).
    Trap(String),
    /// The instruction budget (fuel) ran out.
    OutOfFuel,
    /// A write would have exceeded the output quota.
    OutputQuota,
    /// The wall-clock safety net fired: the run is not verifiable.
    Timeout,
}

/// Exit code recorded for a run that did not end by exiting: 128 + SIGABRT, as for a
/// native process that aborts.
pub const EXIT_CODE_ABNORMAL: i32 = 134;

impl Outcome {
    pub fn exit_code(&self) -> i32 {
        match self {
            Outcome::Exited(c) => *c,
            _ => EXIT_CODE_ABNORMAL,
        }
    }
    /// A short machine-readable name: `exited`, `trap`, `out_of_fuel`, `output_quota`,
    /// `timeout`.
    pub fn kind(&self) -> &'static str {
        match self {
            Outcome::Exited(_) => "exited",
            Outcome::Trap(_) => "trap",
            Outcome::OutOfFuel => "out_of_fuel",
            Outcome::OutputQuota => "output_quota",
            Outcome::Timeout => "timeout",
        }
    }
    pub fn verifiable(&self) -> bool {
        !matches!(self, Outcome::Timeout)
    }
    /// The message recorded as `trap` in the receipt and appended to `stderr`; `None`
    /// for a normal exit.
    pub fn message(&self, limits: &Limits) -> Option<String> {
        match self {
            Outcome::Exited(_) => None,
            Outcome::Trap(m) => Some(m.clone()),
            Outcome::OutOfFuel => Some(format!(
                "out of fuel: the instruction budget of {} was used up",
                limits.fuel
            )),
            Outcome::OutputQuota => Some(format!(
                "output quota exceeded: stdout, stderr and output volumes may hold at most {} bytes",
                limits.max_output
            )),
            Outcome::Timeout => Some(format!(
                "wall-clock timeout after {} s (a safety net: this run is not verifiable)",
                limits.timeout.map(|t| t.as_secs_f64()).unwrap_or(0.0)
            )),
        }
    }
}

/// An input as recorded in the receipt.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct InputRecord {
    pub host: String,
    pub guest: String,
    pub cid: String,
    /// A writable folder (`--dir`), delivered as a results volume.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub writable: bool,
}

/// The job, as recorded in the receipt: enough to re-run it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct JobRecord {
    /// Where the module was read from, if known.
    pub module: Option<String>,
    pub module_cid: String,
    pub argv0: String,
    pub entry: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub stdin_blake3: String,
    pub stdin_bytes: u64,
    pub inputs: Vec<InputRecord>,
    pub outputs: Vec<Output>,
    pub seed: u64,
    /// Nanoseconds since 1970-01-01T00:00:00Z.
    pub epoch_unix_nanos: u64,
    pub limits: Limits,
}

/// The receipt. `--json` prints it; `--receipt FILE` writes it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Receipt {
    /// Results directory CID.
    pub cid: String,
    #[serde(with = "crate::results::profile_serde")]
    pub profile: Profile,
    pub skip_hidden: bool,
    pub exit_code: i32,
    /// `exited`, `trap`, `out_of_fuel`, `output_quota` or `timeout`.
    pub outcome: String,
    /// Null after a normal exit; otherwise what ended the run.
    pub trap: Option<String>,
    /// Fuel consumed: the instruction count a verifier compares. wasmtime charges one
    /// unit per WebAssembly operator, except a few that compile to nothing (`nop`,
    /// `drop`, `block`, `loop`, `end`, …); host calls cost their call instruction plus the
    /// host work they do (see `wasi::host::HOST_BYTES_PER_FUEL`).
    /// A run that exhausts its budget reports exactly the budget.
    pub instructions: u64,
    /// False after a wall-clock timeout.
    pub verifiable: bool,
    pub job_id: String,
    pub module_cid: String,
    /// Engine fingerprint.
    pub engine: String,
    pub detwasm_version: String,
    /// Where the results directory was delivered (host path; not part of any identity).
    pub results_dir: String,
    pub job: JobRecord,
    /// The run's checkpoints, when it saved them (`--checkpoint-every N --checkpoints
    /// DIR`): absent otherwise, so the receipts of runs without checkpoints are as they
    /// were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<Trace>,
}

/// The snapshots a run saved, in order: the CID of each (a UnixFS folder, see
/// `detwasm_runtime::checkpoint`), taken at the first fuel check at or after each
/// multiple of `every` instructions. A function of the job and `every` alone: the same
/// on every host and CPU.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Trace {
    pub every: u64,
    pub snapshots: Vec<String>,
    /// When the wall-clock deadline stopped the run: the snapshot (a folder of the
    /// checkpoints folder) to finish it from with `detwasm resume`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<String>,
}
