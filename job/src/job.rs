//! A job: everything that can change a run's result, and nothing else.
//!
//! A [`Job`] is module bytes, an entry point, args, env, stdin, input trees, output
//! volumes, the seed, the clock epoch, the limits and the results options (CID profile,
//! hidden files). The engine fingerprint is added by the runtime that runs it
//! ([`crate::Runtime::fingerprint`]). All of it is hashed into the job id
//! ([`JobIdentity::job_id`]); inputs and the module enter the id by their CIDs, never by
//! host paths, so the same job prepared on two hosts has the same id.
//!
//! Build one with [`Job::new`] and the `with_*`/`push_*` methods (or set the public
//! fields), then hand it to [`crate::Runtime::run`]. [`Job::validate`] says what is wrong
//! with a job before anything runs; `run` calls it too.
//!
//! Mapping from a Bacalhau `Wasm` job spec: `EntryPoint` → [`Job::entry`], `Parameters`
//! → [`Job::args`], `EnvironmentVariables` → [`Job::env`] (sorted by key, so that a JSON
//! object's order does not matter), `Inputs` → [`Job::inputs`], `Outputs[{Name, Path}]`
//! → [`Job::outputs`], `Resources.Memory` → [`Limits::memory`], `Timeout` →
//! [`Limits::timeout`].

use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::error::JobError;
use crate::results::Profile;

/// 2022-01-01T00:00:00Z, the fake epoch wazero uses: the default start of the guest's
/// wall clock.
pub const DEFAULT_EPOCH_SECS: u64 = 1_640_995_200;
/// argv[0] the guest sees unless the job names another. Never derived from the host path
/// of the module: moving a module file must not change its result.
pub const DEFAULT_ARGV0: &str = "module.wasm";
/// Entry point of a WASI command.
pub const DEFAULT_ENTRY: &str = "_start";
/// Guest path of an input when none is given.
pub const DEFAULT_INPUT_PATH: &str = "/inputs";
/// Name (results folder) and guest path of the default output volume (Bacalhau layout).
pub const DEFAULT_OUTPUT_NAME: &str = "outputs";
pub const DEFAULT_OUTPUT_PATH: &str = "/outputs";
/// Fuel per second of a job's timeout, for a job whose fuel nobody states: its budget is
/// its timeout (the spec's or `--timeout`, else [`DEFAULT_TIMEOUT`]) times this
/// ([`fuel_for`]). Fuel counts WebAssembly instructions; hosts we measured run 3.5 to 12
/// billion a second (CPython's `while True: pass`: 1.25e10/s on an x86-64 server), so a
/// job whose budget comes from its timeout ends by fuel, deterministically and
/// verifiably, on any host at least a third as fast as that, well before the wall clock
/// stops it unverifiable; the timeout stays a safety net.
///
/// Why a fixed rate, not the host's measured speed: the budget is part of the job (its
/// id, its receipt), so it must be the same for the provider and every verifier.
/// Rejected: a fixed default budget whatever the timeout (it was 1e11, which ended a
/// CPython loop after 8 s of a job whose spec gave it 600), and a rate close to a fast
/// host's (a slower verifier would hit the timeout first and could not verify).
pub const FUEL_PER_SECOND: u64 = 1_000_000_000;
/// The fuel of a job that states neither fuel nor timeout: [`fuel_for`] of
/// [`DEFAULT_TIMEOUT`] (3.6e12 instructions).
pub const DEFAULT_FUEL: u64 = FUEL_PER_SECOND * DEFAULT_TIMEOUT.as_secs();
/// Default linear-memory limit (all memories of the instance together).
pub const DEFAULT_MEMORY: u64 = 1 << 30;
/// Default quota on bytes the guest may write to stdout, stderr and output volumes.
pub const DEFAULT_MAX_OUTPUT: u64 = 256 << 20;
/// The wall-clock safety net when a job names none: one hour. Fuel is what bounds a
/// job's work; this only ends a run that fuel cannot (a host stall), so that every run
/// ends in bounded time. Such a run is marked unverifiable. Rejected: no default (a run
/// could hold a provider's slot forever), and a short default (a slow or emulated host,
/// e.g. a verifier under qemu, would end honest jobs).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);
/// Longest wall-clock timeout a job may ask for: 30 days. Larger values (which would
/// overflow the host's clock arithmetic) are refused.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(30 * 24 * 3600);
/// The most inputs (read-only mounts and writable folders together) a job may have: 256.
///
/// Each input is scanned into a tree of its own when the guest's filesystem is built
/// (all of them within one scan budget, `wasi::vfs::MAX_INPUT_ENTRIES`), whatever other
/// inputs name the same host folder (hashed once per job for the job id), so their cost
/// grows with their number: a review's job file of 250 mounts of
/// one 20,000-file folder took 3.4 GiB of memory and 84 s before the guest started, and
/// a 10 MiB job file holds tens of thousands. Checked here, in [`Job::validate`], which
/// `Runtime::prepare` and every run call first, so it holds for `run`, `batch`, Python,
/// module specs and job files alike (a Bacalhau v1 job file also checks its
/// `InputSources` against it before staging anything). 256 is far above what a real job
/// mounts; files that belong together go in one folder, mounted once.
pub const MAX_INPUTS: usize = 256;
/// The most output volumes a job may have: 256, as many as inputs.
///
/// Each output is a mount of the guest's filesystem and a folder of the results, and
/// its name and guest path are checked against every other mount's. Those checks are
/// made with hash sets (linear), but a job of 80,000 outputs still costs a volume, a
/// mount and a results folder each, and before this cap a review's 80,000-output job
/// file took 25 s of CPU in pairwise duplicate checks before anything ran. Checked by
/// [`Job::validate`] first, before any output is looked at, and by every parser that
/// builds a job's outputs (a Bacalhau job file's `ResultPaths`, a module spec's
/// `Outputs`, a receipt's or snapshot's job of record in `ops::verify`) by counting the
/// list before building any of it. Rejected: only the hash sets (linear, but no bound on
/// what a job file may ask the runtime to mount and deliver) and a larger cap (Bacalhau's
/// examples name one result path; a real job a handful).
pub const MAX_OUTPUTS: usize = 256;

/// The most bytes a job's argv (`argv[0]` included) and environment may take together,
/// each string counted with its NUL and a variable as `KEY=VALUE`, as the guest receives
/// them: 2 MiB, Linux's `ARG_MAX` for argv + envp (with the default 8 MiB stack), so
/// whatever runs under Linux fits. Why a cap as well as the fuel charge: every
/// `args_get`/`environ_get` copies the whole list in one call the deadline cannot
/// interrupt, and the host keeps the lists (the job's strings and the guest's bytes)
/// outside the memory limit; the job-file parsers alone let through 54 MiB of args (one
/// YAML string aliased eight times, within their 64 MiB expansion limit). Rejected:
/// Linux's 128 KiB per string (`MAX_ARG_STRLEN`) on top, which would refuse a long
/// prompt that fits.
pub const MAX_ARGS_ENV_BYTES: u64 = 2 << 20;

/// A WebAssembly module: its bytes, and where it came from (for the receipt only; the
/// source never enters the job id).
#[derive(Clone, Debug)]
pub struct Module {
    pub bytes: Arc<Vec<u8>>,
    /// Where the bytes were read from, recorded in the receipt so that a job can be re-run.
    pub source: Option<String>,
}

/// A host directory mounted in the guest: read-only (an input), or writable (`--dir`).
///
/// A writable folder starts as the host folder's contents and is copy-on-write: the guest
/// changes the runtime's copy, never the host folder, and the folder's final state is
/// delivered as a results volume of its own, named [`Input::volume_name`]. Its initial
/// content enters the job id by CID, as an input's does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Input {
    /// Host path. Read, never written; only its content (by CID) enters the job id.
    pub host: PathBuf,
    /// Absolute guest path, e.g. `/inputs`.
    pub guest: String,
    /// Writable (copy-on-write) and delivered as a results volume.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub writable: bool,
}

impl Input {
    /// The results folder of a writable folder: its guest path's last component (`root`
    /// for a mount at `/`).
    pub fn volume_name(&self) -> String {
        match self.guest.rsplit('/').next() {
            Some(last) if !last.is_empty() => last.to_string(),
            _ => "root".to_string(),
        }
    }
}

/// A read-write volume, empty at start, delivered as results folder `name`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Output {
    /// Folder name in the results directory (Bacalhau `Outputs[].Name`).
    pub name: String,
    /// Absolute guest path (Bacalhau `Outputs[].Path`).
    pub guest: String,
}

/// The guest's clock epoch: what the first wall-clock read returns, in nanoseconds since
/// 1970-01-01T00:00:00Z.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Epoch {
    pub unix_nanos: u64,
}

impl Epoch {
    pub fn from_unix_secs(secs: u64) -> Self {
        Epoch {
            unix_nanos: secs.saturating_mul(1_000_000_000),
        }
    }

    /// Parses seconds since the Unix epoch (`1640995200`) or an RFC 3339 UTC time
    /// (`2022-01-01T00:00:00Z`, optional fraction, `Z` or `±HH:MM` offset).
    pub fn parse(text: &str) -> Result<Self, JobError> {
        let t = text.trim();
        if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
            let secs: u64 = t
                .parse()
                .map_err(|_| JobError::BadEpoch(text.to_string()))?;
            return Ok(Epoch::from_unix_secs(secs));
        }
        parse_rfc3339(t)
            .map(|unix_nanos| Epoch { unix_nanos })
            .ok_or_else(|| JobError::BadEpoch(text.to_string()))
    }
}

impl Default for Epoch {
    fn default() -> Self {
        Epoch::from_unix_secs(DEFAULT_EPOCH_SECS)
    }
}

/// Limits of a run. Fuel, memory and output are deterministic: hitting them ends the run
/// the same way on every host. The timeout is a wall-clock safety net only: a run it
/// stops is marked unverifiable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Instruction budget (wasmtime fuel).
    pub fuel: u64,
    /// Bytes of linear memory the instance may have; `memory.grow` beyond it returns -1.
    pub memory: u64,
    /// Bytes the guest may write to stdout + stderr + output volumes together.
    pub max_output: u64,
    /// Wall-clock safety net; `None` is [`DEFAULT_TIMEOUT`] (see
    /// [`Limits::safety_timeout`]).
    #[serde(with = "opt_secs")]
    pub timeout: Option<Duration>,
}

impl Limits {
    /// The wall-clock safety net in force: the job's, else [`DEFAULT_TIMEOUT`].
    pub fn safety_timeout(&self) -> Duration {
        self.timeout.unwrap_or(DEFAULT_TIMEOUT).min(MAX_TIMEOUT)
    }

    /// The limits of a job from what its spec states and what the operator states
    /// (flags, a batch line's keys), one rule for every limit: **the tighter of the two
    /// wins**, the operator's being its flag or else the default. A spec describes the
    /// job; the operator may lower what it asks for, never raise it past what the
    /// operator allows: so a provider's flags are ceilings for every spec it runs, and a
    /// spec that asks for less than a ceiling keeps its own value (and its job id).
    /// Fuel is the same with no default ceiling (the timeout bounds a job's time): the
    /// tighter of `--fuel` and the spec's fuel, and when neither states one,
    /// [`fuel_for`] the job's timeout. A bare module has no spec: its limits are the
    /// operator's.
    ///
    /// Returns the limits and a note for each spec value the operator lowered.
    /// Rejected: the operator's value replacing the spec's (a provider's flags would
    /// then raise a hostile spec's limits as well as lower them), and a spec raising a
    /// default (a spec could then ask a provider who set no flag for a 30-day run or
    /// 4 GiB of memory).
    pub fn combine(operator: &StatedLimits, spec: &StatedLimits) -> (Limits, Vec<String>) {
        let mut notes = Vec::new();
        let mut tighter = |what: &str,
                           flag: &str,
                           ours: Option<u64>,
                           default: u64,
                           theirs: Option<u64>,
                           show: &dyn Fn(u64) -> String| {
            let ceiling = ours.unwrap_or(default);
            match theirs {
                Some(t) if t > ceiling => {
                    notes.push(match ours {
                        Some(_) => format!(
                            "the spec asks for {what} {}; {flag} lowers it to {}",
                            show(t),
                            show(ceiling)
                        ),
                        None => format!(
                            "the spec asks for {what} {}; the job gets {}, the default most \
                             (give {flag} to allow more)",
                            show(t),
                            show(ceiling)
                        ),
                    });
                    ceiling
                }
                Some(t) => t,
                None => ceiling,
            }
        };
        let bytes = |b: u64| {
            if b >= 1 << 20 && b.is_multiple_of(1 << 20) {
                format!("{} MiB", b >> 20)
            } else {
                format!("{b} bytes")
            }
        };
        let secs = |ns: u64| format!("{} s", Duration::from_nanos(ns).as_secs_f64());
        let memory = tighter(
            "memory of",
            "--memory",
            operator.memory,
            DEFAULT_MEMORY,
            spec.memory,
            &bytes,
        );
        let max_output = tighter(
            "an output quota of",
            "--max-output",
            operator.max_output,
            DEFAULT_MAX_OUTPUT,
            spec.max_output,
            &bytes,
        );
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let timeout = match (operator.timeout, spec.timeout) {
            (None, None) => None,
            (op, spec) => Some(Duration::from_nanos(tighter(
                "a timeout of",
                "--timeout",
                op.map(nanos),
                nanos(DEFAULT_TIMEOUT),
                spec.map(nanos),
                &secs,
            ))),
        };
        let fuel = match (operator.fuel, spec.fuel) {
            (Some(op), Some(sp)) => tighter("fuel of", "--fuel", Some(op), op, Some(sp), &|f| {
                f.to_string()
            }),
            (Some(f), None) | (None, Some(f)) => f,
            (None, None) => fuel_for(timeout.unwrap_or(DEFAULT_TIMEOUT)),
        };
        let limits = Limits {
            fuel,
            memory,
            max_output,
            timeout,
        };
        (limits, notes)
    }
}

/// The fuel of a job whose fuel nobody states: [`FUEL_PER_SECOND`] for each second of
/// its timeout (rounded up, at least 1).
pub fn fuel_for(timeout: Duration) -> u64 {
    let t = timeout.min(MAX_TIMEOUT);
    let whole = t.as_secs().saturating_mul(FUEL_PER_SECOND);
    let part = (u64::from(t.subsec_nanos()) * FUEL_PER_SECOND).div_ceil(1_000_000_000);
    whole.saturating_add(part).max(1)
}

/// Limits as one party states them (a spec, or the operator's flags): each `None` where
/// it states none. [`Limits::combine`] makes a job's limits of two of these.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatedLimits {
    pub fuel: Option<u64>,
    pub memory: Option<u64>,
    pub max_output: Option<u64>,
    pub timeout: Option<Duration>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            fuel: DEFAULT_FUEL,
            memory: DEFAULT_MEMORY,
            max_output: DEFAULT_MAX_OUTPUT,
            timeout: None,
        }
    }
}

/// How the results directory is hashed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultsOptions {
    #[serde(with = "crate::results::profile_serde")]
    pub profile: Profile,
    /// Leave hidden files (names starting with `.`) out of the results CID. Off by
    /// default: a verifier must see everything delivered. On reproduces Lilypad's
    /// `ipfs add -Qrn`.
    pub skip_hidden: bool,
}

impl Default for ResultsOptions {
    fn default() -> Self {
        ResultsOptions {
            profile: Profile::UnixfsV0_2015,
            skip_hidden: false,
        }
    }
}

/// A job. See the module docs.
#[derive(Clone, Debug)]
pub struct Job {
    pub module: Module,
    /// argv[0] as the guest sees it (default [`DEFAULT_ARGV0`]).
    pub argv0: String,
    /// Exported function to call (default `_start`).
    pub entry: String,
    /// argv[1..].
    pub args: Vec<String>,
    /// The guest's whole environment, in this order. Nothing of the host's is passed.
    pub env: Vec<(String, String)>,
    pub stdin: Vec<u8>,
    pub inputs: Vec<Input>,
    pub outputs: Vec<Output>,
    /// Seed of the guest's `random_get` stream.
    pub seed: u64,
    pub epoch: Epoch,
    pub limits: Limits,
    pub results: ResultsOptions,
}

impl Job {
    /// A job with the defaults: entry `_start`, no args/env/stdin/inputs, one output
    /// volume `outputs` at `/outputs`, seed 0, epoch 2022-01-01T00:00:00Z, default limits.
    pub fn new(module_bytes: Vec<u8>) -> Self {
        Job {
            module: Module {
                bytes: Arc::new(module_bytes),
                source: None,
            },
            argv0: DEFAULT_ARGV0.to_string(),
            entry: DEFAULT_ENTRY.to_string(),
            args: Vec::new(),
            env: Vec::new(),
            stdin: Vec::new(),
            inputs: Vec::new(),
            outputs: vec![Output {
                name: DEFAULT_OUTPUT_NAME.to_string(),
                guest: DEFAULT_OUTPUT_PATH.to_string(),
            }],
            seed: 0,
            epoch: Epoch::default(),
            limits: Limits::default(),
            results: ResultsOptions::default(),
        }
    }

    /// Records where the module was read from (receipt only).
    pub fn with_source(mut self, source: impl Into<String>) -> Self {
        self.module.source = Some(source.into());
        self
    }
    pub fn with_entry(mut self, entry: impl Into<String>) -> Self {
        self.entry = entry.into();
        self
    }
    pub fn with_argv0(mut self, argv0: impl Into<String>) -> Self {
        self.argv0 = argv0.into();
        self
    }
    pub fn push_arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }
    pub fn push_env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }
    pub fn with_stdin(mut self, stdin: Vec<u8>) -> Self {
        self.stdin = stdin;
        self
    }
    /// Mounts host path `host` read-only at guest path `guest`.
    pub fn push_input(mut self, host: impl Into<PathBuf>, guest: impl Into<String>) -> Self {
        self.inputs.push(Input {
            host: host.into(),
            guest: guest.into(),
            writable: false,
        });
        self
    }
    /// Mounts a copy-on-write copy of host folder `host` at guest path `guest`, delivered
    /// as results volume [`Input::volume_name`].
    pub fn push_dir(mut self, host: impl Into<PathBuf>, guest: impl Into<String>) -> Self {
        self.inputs.push(Input {
            host: host.into(),
            guest: guest.into(),
            writable: true,
        });
        self
    }
    /// Replaces the output volumes.
    pub fn with_outputs(mut self, outputs: Vec<Output>) -> Self {
        self.outputs = outputs;
        self
    }
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
    pub fn with_epoch(mut self, epoch: Epoch) -> Self {
        self.epoch = epoch;
        self
    }
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }
    pub fn with_results(mut self, results: ResultsOptions) -> Self {
        self.results = results;
        self
    }

    /// Checks what can be checked without running: guest paths absolute, normal and each
    /// mount's own; output names (and writable folders' volume names) plain folder names that do not collide with
    /// `stdout`, `stderr`, `exitCode` or each other; inputs exist; no NUL or `=` in env
    /// keys, no NUL in env values (each said as what it is); args and env within
    /// [`MAX_ARGS_ENV_BYTES`]; at most [`MAX_INPUTS`] inputs and [`MAX_OUTPUTS`] outputs
    /// (both counted first, before any input or output is looked at). Names and mounts
    /// are checked for duplicates with hash sets, in time linear in their number.
    pub fn validate(&self) -> Result<(), JobError> {
        check_counts(self.inputs.len(), self.outputs.len())?;
        let mut mounts: HashSet<&str> = HashSet::new();
        let mut names: HashSet<String> = HashSet::new();
        for input in &self.inputs {
            check_guest_path(&input.guest)?;
            if std::fs::symlink_metadata(&input.host).is_err() {
                return Err(JobError::InputMissing(input.host.clone()));
            }
            if input.writable {
                let n = input.volume_name();
                if ["stdout", "stderr", "exitCode"].contains(&n.as_str())
                    || !names.insert(n.clone())
                {
                    return Err(JobError::BadOutputName(n));
                }
            }
            // Mounts may nest (`/` and `/outputs`, as wasmtime's preopens may: the guest's
            // libc takes the longest matching prefix), but two at one guest path are
            // ambiguous.
            if !mounts.insert(&input.guest) {
                return Err(JobError::OverlappingMounts(
                    input.guest.clone(),
                    input.guest.clone(),
                ));
            }
        }
        for output in &self.outputs {
            check_guest_path(&output.guest)?;
            let n = output.name.as_str();
            if n.is_empty()
                || n == "."
                || n == ".."
                || n.contains('/')
                || n.contains('\0')
                || ["stdout", "stderr", "exitCode"].contains(&n)
                || !names.insert(n.to_string())
            {
                return Err(JobError::BadOutputName(output.name.clone()));
            }
            if !mounts.insert(&output.guest) {
                return Err(JobError::OverlappingMounts(
                    output.guest.clone(),
                    output.guest.clone(),
                ));
            }
        }
        for (k, v) in &self.env {
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                return Err(JobError::BadEnv(k.clone()));
            }
            if v.contains('\0') {
                return Err(JobError::BadEnvValue(k.clone()));
            }
        }
        for a in self.args.iter().chain(std::iter::once(&self.argv0)) {
            if a.contains('\0') {
                return Err(JobError::BadArg(a.clone()));
            }
        }
        // Each string as the guest receives it: with its NUL, a variable as `KEY=VALUE`.
        let args: u64 = self
            .args
            .iter()
            .chain([&self.argv0])
            .map(|a| a.len() as u64 + 1)
            .sum();
        let env: u64 = self
            .env
            .iter()
            .map(|(k, v)| (k.len() + v.len()) as u64 + 2)
            .sum();
        if args + env > MAX_ARGS_ENV_BYTES {
            return Err(JobError::ArgsEnvTooLarge {
                args,
                env,
                limit: MAX_ARGS_ENV_BYTES,
            });
        }
        if self.entry.is_empty() {
            return Err(JobError::BadEntry);
        }
        Ok(())
    }
}

/// A job of `inputs` inputs and `outputs` outputs is within [`MAX_INPUTS`] and
/// [`MAX_OUTPUTS`]: what [`Job::validate`] checks first, for parsers and re-readers of a
/// job's record to check from a count, before they build any input or output.
pub fn check_counts(inputs: usize, outputs: usize) -> Result<(), JobError> {
    if inputs > MAX_INPUTS {
        return Err(JobError::TooManyInputs {
            count: inputs,
            limit: MAX_INPUTS,
        });
    }
    if outputs > MAX_OUTPUTS {
        return Err(JobError::TooManyOutputs {
            count: outputs,
            limit: MAX_OUTPUTS,
        });
    }
    Ok(())
}

fn check_guest_path(p: &str) -> Result<(), JobError> {
    if p == "/" {
        return Ok(());
    }
    let ok = p.starts_with('/')
        && p.len() > 1
        && !p.ends_with('/')
        && !p.contains('\0')
        && p[1..]
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..");
    if ok {
        Ok(())
    } else {
        Err(JobError::BadGuestPath(p.to_string()))
    }
}

/// What the job id is computed from: the job with its module and inputs replaced by their
/// CIDs, plus the engine fingerprint. Serialized as JSON (field order fixed by this
/// struct) and hashed with blake3.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct JobIdentity {
    /// Version of this encoding; bump it when a field is added.
    pub format: u32,
    pub module_cid: String,
    pub argv0: String,
    pub entry: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// blake3 of stdin, hex.
    pub stdin_blake3: String,
    pub inputs: Vec<InputIdentity>,
    pub outputs: Vec<Output>,
    pub seed: u64,
    pub epoch_unix_nanos: u64,
    pub limits: Limits,
    pub results: ResultsOptions,
    pub engine: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct InputIdentity {
    pub guest: String,
    pub cid: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub writable: bool,
}

impl JobIdentity {
    pub const FORMAT: u32 = 1;

    /// blake3 (hex) of the identity's JSON.
    pub fn job_id(&self) -> String {
        let json = serde_json::to_vec(self).expect("identity serializes");
        blake3::hash(&json).to_hex().to_string()
    }
}

/// Parses RFC 3339 (`YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`) to Unix nanoseconds. Times
/// before 1970 are refused (the guest clock is unsigned).
fn parse_rfc3339(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        if !t.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        t.parse().ok()
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut i = 19;
    let mut nanos: i64 = 0;
    if b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let frac = &s[start..i];
        if frac.is_empty() {
            return None;
        }
        let mut digits: String = frac.chars().take(9).collect();
        while digits.len() < 9 {
            digits.push('0');
        }
        nanos = digits.parse().ok()?;
    }
    let offset_secs: i64 = match &s[i..] {
        "Z" | "z" => 0,
        rest if rest.len() == 6 && matches!(rest.as_bytes()[0], b'+' | b'-') => {
            if rest.as_bytes()[3] != b':' {
                return None;
            }
            let oh = num(i + 1..i + 3)?;
            let om = num(i + 4..i + 6)?;
            let sign = if rest.starts_with('-') { -1 } else { 1 };
            sign * (oh * 3600 + om * 60)
        }
        _ => return None,
    };
    // Days from civil (Howard Hinnant's algorithm).
    let yy = if mo <= 2 { y - 1 } else { y };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + se - offset_secs;
    if secs < 0 {
        return None;
    }
    Some(secs as u64 * 1_000_000_000 + nanos as u64)
}

mod opt_secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }
    /// A timeout read from a record (a receipt, a snapshot's state, `job.json`: someone
    /// else's file) must be a number of seconds from 0 to [`super::MAX_TIMEOUT`]; anything
    /// else is an error naming it. Found by review: `1e300` panicked in
    /// `Duration::from_secs_f64`; a negative or infinite value was read as no timeout, a
    /// job other than the one written.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let v: Option<f64> = Option::deserialize(d)?;
        v.map(|secs| {
            Duration::try_from_secs_f64(secs)
                .ok()
                .filter(|t| *t <= super::MAX_TIMEOUT)
                .ok_or_else(|| {
                    serde::de::Error::custom(format!(
                        "timeout {secs:?}: not a number of seconds from 0 to {}",
                        super::MAX_TIMEOUT.as_secs()
                    ))
                })
        })
        .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_timeout_out_of_range_is_an_error_not_a_panic() {
        let limits = |t: &str| {
            serde_json::from_str::<Limits>(&format!(
                r#"{{"fuel":1,"memory":65536,"max_output":0,"timeout":{t}}}"#
            ))
        };
        for bad in ["1e300", "-1", "2592001"] {
            let e = limits(bad).unwrap_err().to_string();
            assert!(
                e.contains("not a number of seconds from 0 to 2592000"),
                "{bad}: {e}"
            );
        }
        assert_eq!(
            limits("2.5").unwrap().timeout,
            Some(Duration::from_millis(2500))
        );
        assert_eq!(limits("null").unwrap().timeout, None);
    }

    #[test]
    fn every_limit_is_the_tighter_of_the_operators_and_the_specs() {
        let none = StatedLimits::default();
        let secs = Duration::from_secs;
        // A bare module: the operator's values, else the defaults; fuel from the timeout.
        let (l, notes) = Limits::combine(&none, &none);
        assert_eq!(l, Limits::default());
        assert_eq!(l.fuel, 3_600_000_000_000);
        assert!(notes.is_empty());
        let op = StatedLimits {
            timeout: Some(secs(60)),
            ..none
        };
        assert_eq!(Limits::combine(&op, &none).0.fuel, 60_000_000_000);
        // A spec that asks for less than the ceilings keeps its values, silently.
        let spec = StatedLimits {
            memory: Some(64 << 20),
            max_output: Some(1 << 20),
            timeout: Some(secs(600)),
            fuel: None,
        };
        let (l, notes) = Limits::combine(&none, &spec);
        assert_eq!(
            (l.memory, l.max_output, l.timeout, l.fuel),
            (64 << 20, 1 << 20, Some(secs(600)), 600_000_000_000)
        );
        assert!(notes.is_empty(), "{notes:?}");
        // The same rule for every limit: a flag or a default lowers what the spec asks,
        // and says so; a flag above the spec's value does not raise it.
        let greedy = StatedLimits {
            memory: Some(4 << 30),
            max_output: Some(1 << 40),
            timeout: Some(secs(7200)),
            fuel: Some(1 << 50),
        };
        let (l, notes) = Limits::combine(&none, &greedy);
        assert_eq!(
            (l.memory, l.max_output, l.timeout, l.fuel),
            (
                DEFAULT_MEMORY,
                DEFAULT_MAX_OUTPUT,
                Some(DEFAULT_TIMEOUT),
                1 << 50
            )
        );
        assert_eq!(notes.len(), 3, "{notes:?}");
        assert!(
            notes[0].contains("memory of 4096 MiB; the job gets 1024 MiB, the default most (give --memory to allow more)"),
            "{notes:?}"
        );
        let op = StatedLimits {
            memory: Some(8 << 30),
            max_output: Some(1 << 20),
            timeout: Some(secs(10_000)),
            fuel: Some(1000),
        };
        let (l, notes) = Limits::combine(&op, &greedy);
        assert_eq!(
            (l.memory, l.max_output, l.timeout, l.fuel),
            (4 << 30, 1 << 20, Some(secs(7200)), 1000)
        );
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes[1].contains("fuel of 1125899906842624; --fuel lowers it to 1000"));
        // A spec's own fuel is not capped by its timeout.
        let (l, _) = Limits::combine(
            &none,
            &StatedLimits {
                fuel: Some(5),
                timeout: Some(secs(600)),
                ..none
            },
        );
        assert_eq!(l.fuel, 5);
    }

    #[test]
    fn fuel_for_a_timeout_is_rounded_up_and_capped() {
        assert_eq!(fuel_for(Duration::from_millis(1500)), 1_500_000_000);
        assert_eq!(fuel_for(Duration::from_nanos(1)), 1);
        assert_eq!(fuel_for(Duration::ZERO), 1);
        assert_eq!(fuel_for(Duration::MAX), fuel_for(MAX_TIMEOUT));
        assert_eq!(fuel_for(MAX_TIMEOUT), 2_592_000_000_000_000);
    }

    #[test]
    fn epoch_parses_seconds_and_rfc3339() {
        assert_eq!(Epoch::parse("1640995200").unwrap(), Epoch::default());
        assert_eq!(
            Epoch::parse("2022-01-01T00:00:00Z").unwrap(),
            Epoch::default()
        );
        assert_eq!(
            Epoch::parse("2022-01-01T01:00:00+01:00").unwrap(),
            Epoch::default()
        );
        assert_eq!(
            Epoch::parse("1970-01-01T00:00:00.5Z").unwrap().unix_nanos,
            500_000_000
        );
        assert!(Epoch::parse("2022-13-01T00:00:00Z").is_err());
        assert!(Epoch::parse("yesterday").is_err());
    }

    fn identity() -> JobIdentity {
        JobIdentity {
            format: JobIdentity::FORMAT,
            module_cid: "QmModule".into(),
            argv0: DEFAULT_ARGV0.into(),
            entry: DEFAULT_ENTRY.into(),
            args: vec!["a".into()],
            env: vec![("K".into(), "V".into())],
            stdin_blake3: blake3::hash(b"").to_hex().to_string(),
            inputs: vec![InputIdentity {
                guest: "/inputs".into(),
                cid: "QmInput".into(),
                writable: false,
            }],
            outputs: Job::new(vec![]).outputs,
            seed: 0,
            epoch_unix_nanos: Epoch::default().unix_nanos,
            limits: Limits::default(),
            results: ResultsOptions::default(),
            engine: "blake3:engine".into(),
        }
    }

    /// The job id encoding is part of every job's identity: pinned, so that changing it
    /// is deliberate (bump `JobIdentity::FORMAT`).
    #[test]
    fn job_id_encoding_is_pinned_and_covers_every_field() {
        let base = identity();
        assert_eq!(
            serde_json::to_string(&base).unwrap(),
            concat!(
                r#"{"format":1,"module_cid":"QmModule","argv0":"module.wasm","entry":"_start","#,
                r#""args":["a"],"env":[["K","V"]],"#,
                r#""stdin_blake3":"af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262","#,
                r#""inputs":[{"guest":"/inputs","cid":"QmInput"}],"#,
                r#""outputs":[{"name":"outputs","guest":"/outputs"}],"seed":0,"#,
                r#""epoch_unix_nanos":1640995200000000000,"#,
                r#""limits":{"fuel":3600000000000,"memory":1073741824,"max_output":268435456,"timeout":null},"#,
                r#""results":{"profile":"unixfs-v0-2015","skip_hidden":false},"engine":"blake3:engine"}"#
            )
        );
        let id = base.job_id();
        let mut changed = Vec::new();
        let mut v = identity();
        v.seed = 1;
        changed.push(v);
        let mut v = identity();
        v.limits.fuel += 1;
        changed.push(v);
        let mut v = identity();
        v.results.skip_hidden = true;
        changed.push(v);
        let mut v = identity();
        v.inputs[0].cid = "QmOther".into();
        changed.push(v);
        let mut v = identity();
        v.engine = "blake3:other".into();
        changed.push(v);
        for v in changed {
            assert_ne!(v.job_id(), id);
        }
    }

    #[test]
    fn validate_rejects_bad_paths_and_names() {
        let j = Job::new(vec![]);
        assert!(j.validate().is_ok());
        let bad = Job::new(vec![]).with_outputs(vec![Output {
            name: "stdout".into(),
            guest: "/o".into(),
        }]);
        assert!(matches!(bad.validate(), Err(JobError::BadOutputName(_))));
        let same = Job::new(vec![]).with_outputs(vec![
            Output {
                name: "a".into(),
                guest: "/out".into(),
            },
            Output {
                name: "b".into(),
                guest: "/out".into(),
            },
        ]);
        assert!(matches!(
            same.validate(),
            Err(JobError::OverlappingMounts(..))
        ));
        // Nested mounts are fine (`/` writable beside `/outputs`), as wasmtime's preopens.
        let t = tempfile::tempdir().unwrap();
        let nested = Job::new(vec![]).push_dir(t.path(), "/");
        assert!(nested.validate().is_ok());
        // A writable folder's volume may not take a name the results use already.
        let clash = Job::new(vec![]).push_dir(t.path(), "/outputs/../stdout");
        assert!(clash.validate().is_err());
        let clash = Job::new(vec![]).push_dir(t.path(), "/x/outputs");
        assert!(matches!(clash.validate(), Err(JobError::BadOutputName(_))));
        let rel = Job::new(vec![]).with_outputs(vec![Output {
            name: "a".into(),
            guest: "out/../x".into(),
        }]);
        assert!(matches!(rel.validate(), Err(JobError::BadGuestPath(_))));
    }

    /// Args + env are refused over 2 MiB (each string with its NUL, argv[0] and `=`
    /// included), with both sizes and the limit in the message, and accepted at it.
    #[test]
    fn args_and_env_are_refused_over_the_cap_and_accepted_at_it() {
        assert_eq!(MAX_ARGS_ENV_BYTES, 2 << 20);
        // argv[0] `module.wasm` + NUL is 12 bytes, `K=V` + NUL 4, `--` + NUL 3.
        let fill = MAX_ARGS_ENV_BYTES as usize - 12 - 4 - 3 - 1;
        let at = Job::new(vec![])
            .push_arg("x".repeat(fill))
            .push_arg("--")
            .push_env("K", "V");
        at.validate().unwrap();
        let over = at.clone().push_arg("");
        let e = over.validate().unwrap_err();
        assert!(
            matches!(
                e,
                JobError::ArgsEnvTooLarge {
                    args,
                    env: 4,
                    limit: MAX_ARGS_ENV_BYTES
                } if args == MAX_ARGS_ENV_BYTES - 4 + 1
            ),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "the job's arguments (2097149 bytes) and environment (4 bytes) take 2097153 \
             bytes, over the limit of 2097152 bytes (2 MiB, as Linux's ARG_MAX; each string \
             counted with its NUL, argv[0] included, a variable as KEY=VALUE)"
        );
        // The environment counts as much as the arguments.
        let mut env = Job::new(vec![]);
        env.env = vec![("K".into(), "v".repeat(MAX_ARGS_ENV_BYTES as usize))];
        assert!(matches!(
            env.validate(),
            Err(JobError::ArgsEnvTooLarge { args: 12, .. })
        ));
    }

    /// A job may have at most [`MAX_INPUTS`] inputs (each is scanned and hashed on its
    /// own); one more is refused with the count and the limit, before any input's host
    /// path is looked at.
    #[test]
    fn validate_caps_the_number_of_inputs() {
        let t = tempfile::tempdir().unwrap();
        let mut j = Job::new(vec![]);
        for i in 0..MAX_INPUTS {
            j = j.push_input(t.path(), format!("/in{i}"));
        }
        assert!(j.validate().is_ok());
        let j = j.push_input(t.path().join("missing"), "/one-more");
        let e = j.validate().unwrap_err();
        assert!(
            matches!(
                e,
                JobError::TooManyInputs {
                    count: 257,
                    limit: 256
                }
            ),
            "{e}"
        );
        let e = e.to_string();
        assert!(
            e.contains("257 inputs") && e.contains("256") && e.contains("MAX_INPUTS"),
            "{e}"
        );
    }

    /// A job may have at most [`MAX_OUTPUTS`] outputs: one more is refused with the count
    /// and the limit before any output is looked at; duplicate names and mounts among
    /// many outputs are found in linear time (a review's 80,000 outputs took 25 s of
    /// pairwise checks), and a job at the cap is valid.
    #[test]
    fn validate_caps_the_number_of_outputs_and_finds_duplicates_by_hashing() {
        let outputs = |n: usize| -> Vec<Output> {
            (0..n)
                .map(|i| Output {
                    name: format!("o{i}"),
                    guest: format!("/o{i}"),
                })
                .collect()
        };
        let at = Job::new(vec![]).with_outputs(outputs(MAX_OUTPUTS));
        at.validate().unwrap();
        let mut over = outputs(MAX_OUTPUTS + 1);
        over[0].guest = "not absolute".into();
        let e = Job::new(vec![]).with_outputs(over).validate().unwrap_err();
        assert!(
            matches!(
                e,
                JobError::TooManyOutputs {
                    count: 257,
                    limit: 256
                }
            ),
            "{e:?}"
        );
        let e = e.to_string();
        assert!(
            e.contains("257 outputs") && e.contains("256") && e.contains("MAX_OUTPUTS"),
            "{e}"
        );
        assert!(check_counts(80_000, 0)
            .unwrap_err()
            .to_string()
            .contains("80000 inputs"));
        // Duplicates at the cap: the last output repeats the first's name, or its mount.
        let mut same_name = outputs(MAX_OUTPUTS);
        same_name[MAX_OUTPUTS - 1].name = "o0".into();
        assert!(matches!(
            Job::new(vec![]).with_outputs(same_name).validate(),
            Err(JobError::BadOutputName(n)) if n == "o0"
        ));
        let mut same_mount = outputs(MAX_OUTPUTS);
        same_mount[MAX_OUTPUTS - 1].guest = "/o0".into();
        assert!(matches!(
            Job::new(vec![]).with_outputs(same_mount).validate(),
            Err(JobError::OverlappingMounts(a, _)) if a == "/o0"
        ));
    }

    /// A NUL in an env value is named as such, not as an invalid variable name.
    #[test]
    fn a_nul_in_an_env_value_is_named_as_a_bad_value() {
        let mut j = Job::new(vec![]);
        j.env = vec![("NAME".into(), "a\0b".into())];
        let e = j.validate().unwrap_err();
        assert!(matches!(&e, JobError::BadEnvValue(k) if k == "NAME"), "{e}");
        assert!(e
            .to_string()
            .contains("value of environment variable `NAME` contains NUL"));
        j.env = vec![("A\0B".into(), "v".into())];
        assert!(matches!(j.validate(), Err(JobError::BadEnv(_))));
    }
}
