//! A job as its options: what `detwasm run` takes as flags, what a `detwasm batch` line
//! and a Python `detwasm.run(job)` take as JSON keys. One type and one conversion to a
//! [`Job`], so the three front ends cannot drift apart: a batch line gives the receipt
//! `detwasm run` of the same options gives.
//!
//! Relative paths (the module, inputs, folders, stdin) are kept as written, as the CLI
//! keeps them: they are resolved against the process's current folder, and recorded in
//! the receipt as written, so that `detwasm run` in the same folder gives the same
//! receipt.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use detwasm_job::job::{
    Epoch, Job, Limits, Output, ResultsOptions, StatedLimits, DEFAULT_ENTRY, DEFAULT_INPUT_PATH,
    DEFAULT_OUTPUT_NAME, DEFAULT_OUTPUT_PATH, MAX_TIMEOUT,
};
use detwasm_job::results::Profile;
use detwasm_jobspec::{self as spec, InputPolicy};

/// A job's options. Every field has `detwasm run`'s default. As JSON: an object with
/// these keys (snake case); unknown keys are an error, so a misspelt option is never
/// silently ignored.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    /// A .wasm (or .wat) file, a module folder or a module name (`cowsay:v0.1.0`).
    pub module: PathBuf,
    /// argv[1..].
    #[serde(default)]
    pub args: Vec<String>,
    /// The guest's environment, in order. As JSON an object, whose key order is kept
    /// (the order is part of the job, as the order of `-e` flags is).
    #[serde(default, deserialize_with = "ordered_pairs")]
    pub env: Vec<(String, String)>,
    /// Read-only mounts, `HOST[:GUEST]` (GUEST defaults to /inputs).
    #[serde(default)]
    pub inputs: Vec<String>,
    /// Writable copy-on-write folders, `HOST[::GUEST]`.
    #[serde(default)]
    pub dirs: Vec<String>,
    /// Template inputs of a module folder or name (`-i KEY=VALUE`).
    #[serde(default, deserialize_with = "ordered_pairs")]
    pub input_values: Vec<(String, String)>,
    /// A file whose bytes are stdin.
    #[serde(default)]
    pub stdin: Option<PathBuf>,
    #[serde(default)]
    pub seed: u64,
    /// Seconds since 1970 or RFC 3339 (default 2022-01-01T00:00:00Z).
    #[serde(default)]
    pub epoch: Option<EpochValue>,
    /// Instruction budget. Each limit is combined with what a spec states by
    /// [`Limits::combine`] (the tighter wins); fuel that nobody states is
    /// [`detwasm_job::job::FUEL_PER_SECOND`] per second of the timeout.
    #[serde(default)]
    pub fuel: Option<u64>,
    /// Linear memory limit: bytes, or a size such as `256MiB` (default 1GiB).
    #[serde(default)]
    pub memory: Option<Size>,
    /// Output quota (default 256MiB).
    #[serde(default)]
    pub max_output: Option<Size>,
    /// Wall-clock safety net in seconds (default: the spec's, else an hour).
    #[serde(default)]
    pub timeout: Option<f64>,
    /// Exported function to call (default `_start`; a module folder's spec names its own).
    #[serde(default)]
    pub entry: Option<String>,
    /// `unixfs-v0-2015` (default) or `unixfs-v1-2025`.
    #[serde(default)]
    pub profile: Option<String>,
    #[serde(default)]
    pub skip_hidden: bool,
    /// No output volume at all.
    #[serde(default)]
    pub no_outputs: bool,
    /// The results folder (default: under the batch's output folder, named after the job
    /// id). Not part of the job.
    #[serde(default)]
    pub output: Option<PathBuf>,
    /// Folders a module folder's spec may take inputs from. Not a JSON key: whoever runs
    /// the jobs grants it (`--allow-input`), not whoever wrote them.
    #[serde(skip)]
    pub allow_inputs: Vec<PathBuf>,
    /// The IPFS node or gateway a job file's `ipfs` inputs missing here are fetched from
    /// ([`crate::ipfs`]). Not a JSON key: the operator names it, not whoever wrote the
    /// jobs.
    #[serde(skip)]
    pub ipfs: crate::ipfs::Remote,
}

/// An epoch as JSON: seconds (a number) or text.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(
    untagged,
    expecting = "an epoch: seconds since 1970 (a number) or RFC 3339 text"
)]
pub enum EpochValue {
    Seconds(u64),
    Text(String),
}

/// A size as JSON: bytes (a number) or text with a unit (`256MiB`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(
    untagged,
    expecting = "a size: bytes (a number) or text with a unit such as \"256MiB\""
)]
pub enum Size {
    Bytes(u64),
    Text(String),
}

/// Why options do not make a job: the option at fault (its JSON key) and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestError {
    /// The option's JSON key (`fuel`, `max_output`); `None` when no single option is at
    /// fault (e.g. the module folder's spec).
    pub key: Option<&'static str>,
    pub message: String,
}

impl RequestError {
    fn new(key: &'static str, message: impl Into<String>) -> Self {
        RequestError {
            key: Some(key),
            message: message.into(),
        }
    }

    /// The message with the option named as the command line spells it (`--max-output`).
    pub fn for_cli(&self) -> String {
        match self.key {
            Some(k) => format!("{}: {}", cli_flag(k), self.message),
            None => self.message.clone(),
        }
    }
}

/// The `detwasm run` flag of a JSON key.
pub fn cli_flag(key: &str) -> String {
    match key {
        "inputs" => "--input".into(),
        "dirs" => "--dir".into(),
        "input_values" => "--input-value".into(),
        "allow_inputs" => "--allow-input".into(),
        other => format!("--{}", other.replace('_', "-")),
    }
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.key {
            Some(k) => write!(f, "{k}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for RequestError {}

impl From<spec::SpecError> for RequestError {
    fn from(e: spec::SpecError) -> Self {
        RequestError {
            key: None,
            message: e.to_string(),
        }
    }
}

impl JobRequest {
    /// A request for `module` with every default.
    pub fn new(module: impl Into<PathBuf>) -> Self {
        JobRequest {
            module: module.into(),
            ..Default::default()
        }
    }

    /// Parses one JSON object (a batch line, or what Python passes).
    pub fn from_json(text: &str) -> Result<Self, String> {
        serde_json::from_str(text).map_err(|e| e.to_string())
    }

    /// The job these options describe, with what must live as long as its run (the
    /// staged copies of a job file's file inputs) and notes for the user (a job file's
    /// settings that do not apply, as `FILE:LINE: text`). `cwd` is the folder a module
    /// folder's `SourcePath`s are taken against (the process's current folder).
    pub fn build(&self, cwd: &Path) -> Result<BuiltJob, RequestError> {
        let module = &self.module;
        let mut notes = Vec::new();
        let mut staging = None;
        let mut fetched = None;
        // A module folder or name, or a Bacalhau v1 job file: the job comes from its
        // spec; the options add to it (args, env, inputs) or tighten it (memory, timeout).
        let from_spec = if spec::bacalhau::v1::is_job_file(module) {
            if !self.input_values.is_empty() {
                return Err(RequestError::new(
                    "input_values",
                    "template inputs are for module templates; a job file has no template inputs",
                ));
            }
            let mut policy = InputPolicy::from_env_and(&self.allow_inputs);
            // `ipfs` inputs found nowhere here are fetched as `CID.car` into a scratch
            // folder, allowed as the folders the policy names are.
            fetched =
                crate::ipfs::prefetch_job_file(module, cwd, &policy, &self.ipfs).map_err(|e| {
                    RequestError {
                        key: None,
                        message: e.to_string(),
                    }
                })?;
            if let Some(f) = &fetched {
                policy.roots.push(f.path().to_path_buf());
            }
            let loaded = spec::bacalhau::v1::load(module, cwd, &policy)?;
            notes = loaded.notes;
            staging = loaded.staging;
            Some((loaded.job, loaded.spec.parts.stated()))
        } else if spec::is_module_reference(module) {
            let mut dir = spec::ModuleDir::open(&module.to_string_lossy())?;
            let policy = InputPolicy::from_env_and(&self.allow_inputs);
            let values: BTreeMap<String, String> = self.input_values.iter().cloned().collect();
            // An entry module named by a CID the folder does not hold: fetched.
            fetched =
                crate::ipfs::prefetch_entry_module(&dir, &values, &self.ipfs).map_err(|e| {
                    RequestError {
                        key: None,
                        message: e.to_string(),
                    }
                })?;
            dir.fetched = fetched.as_ref().map(|f| f.path().to_path_buf());
            let prepared = dir.job(&values, cwd, &policy)?;
            Some((prepared.job, prepared.spec.parts().stated()))
        } else if !self.input_values.is_empty() {
            return Err(RequestError::new(
                "input_values",
                "template inputs are for module folders and names; to mount a folder use --input HOST[:GUEST]",
            ));
        } else if !self.allow_inputs.is_empty() {
            return Err(RequestError::new(
                "allow_inputs",
                "is for module folders and names (it limits what their spec may mount); for a .wasm, mount folders with --input HOST[:GUEST]",
            ));
        } else {
            None
        };
        let is_module = from_spec.is_some();
        let (mut job, spec_limits) = match from_spec {
            Some(from_spec) => from_spec,
            None => {
                let bytes = detwasm_jobspec::resolve::read_module_file(module).map_err(|e| {
                    RequestError {
                        key: None,
                        message: format!("reading module {}: {e}", module.display()),
                    }
                })?;
                let job = Job::new(bytes)
                    .with_source(module.display().to_string())
                    .with_entry(self.entry.clone().unwrap_or_else(|| DEFAULT_ENTRY.into()));
                (job, StatedLimits::default())
            }
        };
        job = job.with_seed(self.seed).with_epoch(match &self.epoch {
            None => Epoch::default(),
            Some(EpochValue::Seconds(s)) => Epoch::from_unix_secs(*s),
            Some(EpochValue::Text(t)) => {
                Epoch::parse(t).map_err(|e| RequestError::new("epoch", e.to_string()))?
            }
        });
        job.args.extend(self.args.iter().cloned());
        job.env.extend(self.env.iter().cloned());
        for spec in &self.inputs {
            let (host, guest) = match spec.rsplit_once(':') {
                Some((h, g)) if g.starts_with('/') => (h, g),
                _ => (spec.as_str(), DEFAULT_INPUT_PATH),
            };
            match unpack_car_input(Path::new(host))? {
                Some(dir) => {
                    job = job.push_input(dir.path().join(CAR_TREE), guest);
                    staging.get_or_insert_with(Default::default).keep(dir);
                }
                None => job = job.push_input(host, guest),
            }
        }
        for spec in &self.dirs {
            let (host, guest) = spec
                .split_once("::")
                .unwrap_or((spec.as_str(), DEFAULT_INPUT_PATH));
            job = job.push_dir(host, guest);
        }
        // An input folder that cannot be listed is named with the OS's reason (the job's
        // own check only says that it is missing or unreadable).
        for input in &job.inputs {
            if let Err(e) = std::fs::read_dir(&input.host) {
                return Err(RequestError {
                    key: Some(if input.writable { "dirs" } else { "inputs" }),
                    message: format!("input folder {}: {e}", input.host.display()),
                });
            }
        }
        if let Some(f) = &self.stdin {
            job.stdin = std::fs::read(f).map_err(|e| {
                RequestError::new("stdin", format!("reading stdin file {}: {e}", f.display()))
            })?;
        }
        if self.no_outputs {
            job.outputs = Vec::new();
        } else if !is_module {
            job.outputs = vec![Output {
                name: DEFAULT_OUTPUT_NAME.into(),
                guest: DEFAULT_OUTPUT_PATH.into(),
            }];
        }
        let timeout = self
            .timeout
            .map(|t| parse_timeout(t).map_err(|m| RequestError::new("timeout", m)))
            .transpose()?;
        if self.fuel == Some(0) {
            return Err(RequestError::new(
                "fuel",
                "must be at least 1 (the run would end before its first instruction)",
            ));
        }
        let memory = self
            .memory
            .as_ref()
            .map(|m| size(m, "memory"))
            .transpose()?;
        let max_output = self
            .max_output
            .as_ref()
            .map(|m| size(m, "max_output"))
            .transpose()?;
        let operator = StatedLimits {
            fuel: self.fuel,
            memory,
            max_output,
            timeout,
        };
        // One rule for every limit, spec or not: see [`Limits::combine`].
        let (limits, lowered) = Limits::combine(&operator, &spec_limits);
        job.limits = limits;
        notes.extend(lowered);
        let profile: Profile = match &self.profile {
            None => Profile::UnixfsV0_2015,
            Some(p) => p.parse().map_err(|e: detwasm_hasher::HashError| {
                RequestError::new("profile", e.to_string())
            })?,
        };
        job.results = ResultsOptions {
            profile,
            skip_hidden: self.skip_hidden,
        };
        Ok(BuiltJob {
            job,
            notes,
            staging,
            fetched,
        })
    }
}

/// A job built from a [`JobRequest`] (see [`JobRequest::build`]).
#[derive(Debug)]
pub struct BuiltJob {
    pub job: Job,
    /// Notes for the user, as `FILE:LINE: text`.
    pub notes: Vec<String>,
    /// Keep alive until the run has ended.
    pub staging: Option<spec::bacalhau::v1::Staging>,
    /// CARs fetched for the job's `ipfs` inputs ([`crate::ipfs::prefetch_job_file`]):
    /// keep alive until the run has ended.
    pub fetched: Option<crate::scratch::Scratch>,
}

/// The name of the folder a CAR input is unpacked to, in its staging folder.
pub const CAR_TREE: &str = "tree";

/// A `--input` that is a CAR file (a regular file named `*.car`): its folder unpacked into
/// a staging folder of its own, within a job file's CAR budgets
/// (`detwasm_jobspec::car::MAX_JOB_CAR_READ`, `_BYTES`, `_ENTRIES`, `_WORK`), every block
/// checked against its CID, the size checked before anything is written. The job
/// mounts the unpacked folder (the CAR's root must be a folder) and names it by the CID
/// of what the guest sees, as any input. `None` for anything else (a folder).
pub fn unpack_car_input(host: &Path) -> Result<Option<crate::scratch::Scratch>, RequestError> {
    if !crate::unpack::is_car_file(host) {
        return Ok(None);
    }
    let err = |message: String| RequestError {
        key: Some("inputs"),
        message: format!("input {}: {message}", host.display()),
    };
    let dir = crate::scratch::Scratch::new("detwasm-car-input-", "an unpacked CAR input")
        .map_err(|e| err(e.to_string()))?;
    // A job file's CAR budgets, the same for a CAR named on the command line.
    let limits = crate::unpack::JOB_CAR;
    let tree = dir.path().join(CAR_TREE);
    // An input is a folder: a CAR of anything else is refused before it is written.
    crate::unpack::unpack_as(host, None, Some(&tree), limits, Some("folder")).map_err(
        |message| RequestError {
            key: Some("inputs"),
            message: format!("input {message}"),
        },
    )?;
    Ok(Some(dir))
}

fn size(v: &Size, key: &'static str) -> Result<u64, RequestError> {
    match v {
        Size::Bytes(n) => Ok(*n),
        Size::Text(t) => parse_size(t).map_err(|m| RequestError::new(key, m)),
    }
}

/// Parses `256MiB`, `1GiB`, `64KiB`, `1MB`, `1000` (bytes).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let too_large = || format!("size `{s}` is too large (at most {} bytes)", u64::MAX);
    let n: u64 = num.parse().map_err(|e: std::num::ParseIntError| {
        if *e.kind() == std::num::IntErrorKind::PosOverflow {
            too_large()
        } else {
            format!("size `{s}`: expected a number with an optional unit")
        }
    })?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        other => {
            return Err(format!(
                "size `{s}`: unknown unit `{other}` (use B, KiB, MiB, GiB, KB, MB, GB)"
            ))
        }
    };
    n.checked_mul(mult).ok_or_else(too_large)
}

/// A timeout in seconds as a duration: positive, finite and at most [`MAX_TIMEOUT`].
/// Checked before converting, because `Duration::from_secs_f64` panics on values it
/// cannot represent (negative, NaN, infinite, above u64::MAX seconds).
pub fn parse_timeout(secs: f64) -> Result<Duration, String> {
    if !(secs.is_finite() && secs > 0.0) {
        return Err(format!("`{secs}` must be a positive number of seconds"));
    }
    if secs > MAX_TIMEOUT.as_secs_f64() {
        return Err(format!(
            "`{secs}`: at most {} seconds (30 days)",
            MAX_TIMEOUT.as_secs()
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A JSON object of strings as (key, value) pairs in document order. Rejected: a map
/// type, which would sort the keys (serde_json's map is ordered by key), making
/// `{"B":"1","A":"2"}` another job than `-e B=1 -e A=2`.
fn ordered_pairs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, String)>, D::Error> {
    struct Pairs;
    impl<'de> Visitor<'de> for Pairs {
        type Value = Vec<(String, String)>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an object of strings")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out: Vec<(String, String)> = Vec::new();
            // A hash set of the keys seen: a pairwise check is quadratic in the keys.
            let mut seen = std::collections::HashSet::new();
            while let Some((k, v)) = map.next_entry::<String, String>()? {
                if !seen.insert(k.clone()) {
                    return Err(de::Error::custom(format!("key `{k}` appears twice")));
                }
                out.push((k, v));
            }
            Ok(out)
        }
    }
    d.deserialize_map(Pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_keys_are_the_run_options_and_unknown_keys_are_refused() {
        let r = JobRequest::from_json(
            r#"{"module":"m.wasm","args":["a"],"env":{"B":"1","A":"2"},"seed":7,
                "epoch":1700000000,"memory":"64MiB","max_output":4096,"timeout":2.5}"#,
        )
        .unwrap();
        assert_eq!(
            r.env,
            vec![("B".into(), "1".into()), ("A".into(), "2".into())]
        );
        assert_eq!(r.memory, Some(Size::Text("64MiB".into())));
        assert_eq!(r.max_output, Some(Size::Bytes(4096)));
        assert_eq!(r.epoch, Some(EpochValue::Seconds(1_700_000_000)));
        let e = JobRequest::from_json(r#"{"module":"m.wasm","sede":1}"#).unwrap_err();
        assert!(e.contains("unknown field `sede`"), "{e}");
        let e =
            JobRequest::from_json(r#"{"module":"m.wasm","env":{"A":"1","A":"2"}}"#).unwrap_err();
        assert!(e.contains("appears twice"), "{e}");
        let e = JobRequest::from_json(r#"{"module":"m.wasm","allow_inputs":["/"]}"#).unwrap_err();
        assert!(e.contains("unknown field `allow_inputs`"), "{e}");
    }

    #[test]
    fn bad_values_name_the_option_as_each_front_end_spells_it() {
        let dir = tempfile::tempdir().unwrap();
        let wasm = dir.path().join("m.wat");
        std::fs::write(&wasm, "(module (func (export \"_start\")))").unwrap();
        let mut r = JobRequest::new(&wasm);
        r.fuel = Some(0);
        let e = r.build(dir.path()).unwrap_err();
        assert_eq!(e.key, Some("fuel"));
        assert!(e.for_cli().starts_with("--fuel: must be at least 1"), "{e}");
        r.fuel = None;
        r.max_output = Some(Size::Text("1XB".into()));
        let e = r.build(dir.path()).unwrap_err();
        assert!(e.to_string().starts_with("max_output: size `1XB`"), "{e}");
        assert!(e.for_cli().starts_with("--max-output: "), "{e}");
        r.max_output = None;
        r.timeout = Some(f64::NAN);
        assert!(r.build(dir.path()).is_err());
        r.timeout = Some(2.0);
        let job = r.build(dir.path()).unwrap().job;
        assert_eq!(job.limits.timeout, Some(Duration::from_secs(2)));
        assert_eq!(job.outputs.len(), 1, "the default /outputs volume");
    }

    #[test]
    fn timeouts_are_positive_finite_and_capped() {
        assert_eq!(parse_timeout(1.5).unwrap().as_millis(), 1500);
        assert_eq!(parse_timeout(2_592_000.0).unwrap().as_secs(), 2_592_000);
        for bad in [
            0.0,
            -1.0,
            f64::NAN,
            f64::INFINITY,
            2_592_000.5,
            1e300,
            f64::MAX,
        ] {
            assert!(parse_timeout(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes_parse_with_units_and_overflow_is_an_error() {
        assert_eq!(parse_size("256MiB").unwrap(), 256 << 20);
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("16GiB").unwrap(), 16 << 30);
        assert_eq!(parse_size("10kb").unwrap(), 10_000);
        assert_eq!(parse_size("42").unwrap(), 42);
        assert!(parse_size("1XB").is_err());
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("99999999999999999999")
            .unwrap_err()
            .contains("too large"));
        assert!(parse_size("17179869184GiB")
            .unwrap_err()
            .contains("too large"));
    }
}
