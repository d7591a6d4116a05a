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
    #[serde(deserialize_with = "bounded::args")]
    pub args: Vec<String>,
    #[serde(deserialize_with = "bounded::env")]
    pub env: Vec<(String, String)>,
    pub stdin_blake3: String,
    pub stdin_bytes: u64,
    #[serde(deserialize_with = "bounded::inputs")]
    pub inputs: Vec<InputRecord>,
    #[serde(deserialize_with = "bounded::outputs")]
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
    /// How the run went on the host that made this receipt ([`HostStats`]): never part
    /// of what is verified. Absent from receipts made before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<HostStats>,
}

impl Receipt {
    /// The receipt without what only describes the host that made it (`results_dir`,
    /// [`Self::host`]): two runs of the same job give equal `verified()` receipts.
    pub fn verified(&self) -> Receipt {
        Receipt {
            results_dir: String::new(),
            host: None,
            ..self.clone()
        }
    }
}

/// What an operator watches of a run: its times, its memory, whether the compiled module
/// was reused. It varies with the machine, its load and its cache, so none of it is part
/// of the job id, the results CID or what `verify` compares; it sits in a field of its
/// own so that a verifier's receipt differs from the provider's only here and in
/// `results_dir`. Rejected: a separate file of statistics (one more thing to keep beside
/// each receipt, and `batch` writes receipts as lines of one log).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct HostStats {
    /// Milliseconds from the job's start (checks, hashing of the module and inputs) to
    /// its results written, before they are moved into place.
    pub wall_ms: u64,
    /// Of which: loading the module (reading it from the cache, or compiling it).
    pub load_ms: u64,
    /// Of which: running the guest (snapshots included).
    pub run_ms: u64,
    /// Where the compiled module came from: `memory` (this process had loaded it),
    /// `cache` (the module cache) or `compiled`.
    pub module: String,
    /// The most bytes of linear memory and tables the guest held at once.
    pub guest_memory_peak_bytes: u64,
    /// The detwasm process's peak resident memory so far (`getrusage`): in `batch`, in
    /// Python and in Ray workers, of every job the process ran until this one ended.
    pub process_peak_rss_bytes: u64,
}

/// The snapshots a run saved, in order: the CID of each (a UnixFS folder, see
/// `detwasm_runtime::checkpoint`), taken at the first fuel check at or after each
/// multiple of `every` instructions. A function of the job and `every` alone: the same
/// on every host and CPU.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Trace {
    pub every: u64,
    #[serde(deserialize_with = "bounded::trace")]
    pub snapshots: Vec<String>,
    /// When the wall-clock deadline stopped the run: the snapshot (a folder of the
    /// checkpoints folder) to finish it from with `detwasm resume`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<String>,
    /// The unwind pass whose frames the snapshots hold (`detwasm-unwind-N`): a verifier
    /// re-runs segments only with the same (snapshots of the same job differ between
    /// versions, which the job id does not name), and counts a snapshot of another
    /// against the trace. Absent in receipts made before traces named it
    /// (`detwasm-unwind-4` or older). Found by review: a snapshot claiming another
    /// version was taken for another build's and left the verdict open, so a provider
    /// could turn a fabricated result into no verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unwind: Option<String>,
}

/// A job record's arguments and environment, refused while they are parsed once they
/// exceed what a job may pass ([`crate::job::MAX_ARGS_ENV_BYTES`], each string counted
/// as the guest receives it, with its NUL), so that a receipt or a snapshot's state
/// cannot make the parser hold more than a few times that. Found by review: 22 million
/// empty arguments (3 bytes of JSON each, 24 parsed) in a snapshot's state took 1.58 GB
/// before the job's own check refused them, after parsing. Rejected: checking after
/// parsing (the memory is spent by then).
mod bounded {
    use serde::de::{Deserialize, Deserializer, Error, SeqAccess, Visitor};

    use crate::job::{MAX_ARGS_ENV_BYTES, MAX_INPUTS, MAX_OUTPUTS};

    struct Bounded<T> {
        what: &'static str,
        /// What an element costs, and the most all may cost (`limit`, named `name`).
        cost: fn(&T) -> u64,
        limit: u64,
        name: &'static str,
        /// `Err(why)` for an element that cannot be one.
        check: fn(&T) -> Result<(), &'static str>,
    }

    impl<'de, T: Deserialize<'de>> Visitor<'de> for Bounded<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(f, "a list of {}", self.what)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let (mut out, mut total) = (Vec::new(), 0u64);
            while let Some(x) = seq.next_element::<T>()? {
                (self.check)(&x).map_err(|why| {
                    A::Error::custom(format!("{} entry {}: {why}", self.what, out.len() + 1))
                })?;
                total = total.saturating_add((self.cost)(&x));
                if total > self.limit {
                    return Err(A::Error::custom(format!(
                        "{} of more than {} {}",
                        self.what, self.limit, self.name
                    )));
                }
                out.push(x);
            }
            Ok(out)
        }
    }

    fn any<T>(_: &T) -> Result<(), &'static str> {
        Ok(())
    }

    pub fn args<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        d.deserialize_seq(Bounded {
            what: "arguments",
            cost: |a: &String| a.len() as u64 + 1,
            limit: MAX_ARGS_ENV_BYTES,
            name: "bytes (MAX_ARGS_ENV_BYTES)",
            check: any,
        })
    }

    pub fn env<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, String)>, D::Error> {
        d.deserialize_seq(Bounded {
            what: "environment variables",
            cost: |(k, v): &(String, String)| (k.len() + v.len()) as u64 + 2,
            limit: MAX_ARGS_ENV_BYTES,
            name: "bytes (MAX_ARGS_ENV_BYTES)",
            check: any,
        })
    }

    pub fn inputs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<super::InputRecord>, D::Error> {
        d.deserialize_seq(Bounded {
            what: "inputs",
            cost: |_| 1,
            limit: MAX_INPUTS as u64,
            name: "(MAX_INPUTS)",
            check: any,
        })
    }

    pub fn outputs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<crate::job::Output>, D::Error> {
        d.deserialize_seq(Bounded {
            what: "outputs",
            cost: |_| 1,
            limit: MAX_OUTPUTS as u64,
            name: "(MAX_OUTPUTS)",
            check: any,
        })
    }

    /// A trace's snapshot CIDs: each 1 to [`super::MAX_CID_CHARS`] ASCII letters and
    /// digits, at most [`super::MAX_TRACE_SNAPSHOTS`] of them.
    pub fn trace<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        d.deserialize_seq(Bounded {
            what: "trace",
            cost: |_| 1,
            limit: super::MAX_TRACE_SNAPSHOTS,
            name: "snapshots (MAX_TRACE_SNAPSHOTS)",
            check: |c: &String| {
                if c.is_empty()
                    || c.len() > super::MAX_CID_CHARS
                    || !c.bytes().all(|b| b.is_ascii_alphanumeric())
                {
                    Err("not a CID")
                } else {
                    Ok(())
                }
            },
        })
    }
}

/// A trace's snapshot CIDs as a receipt or a snapshot's state lists them
/// ([`Trace::snapshots`]), each checked and counted while parsed.
pub use bounded::trace as trace_cids;

/// Most characters of a CID in a trace (a CIDv0 has 46, a base32 CIDv1 of a blake3 or
/// sha2-256 hash 59).
pub const MAX_CID_CHARS: usize = 100;

/// The most snapshots a trace lists: a run stops with an error at its next checkpoint
/// past it, and a receipt or state listing more is refused while parsed. Found by
/// review: 22 million empty entries in a 64 MiB receipt took 0.6 GB in `verify`. A
/// million is 11 days of a job at the default interval (1e9 instructions, about a
/// second of guest work); the trace of a million takes about 100 MB to hold.
/// Rejected: no bound (a receipt's size was its only limit) and a bound from the job's
/// fuel over the interval (tests and short jobs checkpoint every few instructions on
/// budgets far larger than they use).
pub const MAX_TRACE_SNAPSHOTS: u64 = 1_000_000;

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> JobRecord {
        JobRecord {
            module: None,
            module_cid: "Qm".into(),
            argv0: "module.wasm".into(),
            entry: "_start".into(),
            args: vec!["a".into()],
            env: vec![("K".into(), "V".into())],
            stdin_blake3: String::new(),
            stdin_bytes: 0,
            inputs: vec![],
            outputs: vec![],
            seed: 0,
            epoch_unix_nanos: 0,
            limits: Limits::default(),
        }
    }

    /// Found by review: a 64 MiB receipt of 22 million empty trace entries took 0.6 GB
    /// in `verify`. Entries are checked and counted while parsed, as inputs and outputs.
    #[test]
    fn traces_inputs_and_outputs_past_their_bounds_are_refused_while_parsing() {
        let mut v = serde_json::to_value(record()).unwrap();
        v["inputs"] = serde_json::json!(vec![
            serde_json::json!({"host": "", "guest": "/x", "cid": "Qm", "writable": false});
            257
        ]);
        let e = serde_json::from_value::<JobRecord>(v)
            .unwrap_err()
            .to_string();
        assert!(e.contains("inputs of more than 256"), "{e}");
        let mut v = serde_json::to_value(record()).unwrap();
        v["outputs"] =
            serde_json::json!(vec![serde_json::json!({"name": "o", "guest": "/o"}); 257]);
        let e = serde_json::from_value::<JobRecord>(v)
            .unwrap_err()
            .to_string();
        assert!(e.contains("outputs of more than 256"), "{e}");
        let trace = |entries: serde_json::Value| {
            serde_json::from_value::<Trace>(serde_json::json!({"every": 1, "snapshots": entries}))
        };
        assert!(trace(serde_json::json!(["QmA", "bafyB"])).is_ok());
        let e = trace(serde_json::json!(["QmA", ""]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("trace entry 2: not a CID"), "{e}");
        let e = trace(serde_json::json!(["Qm/../x"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a CID"), "{e}");
        let many = serde_json::Value::from(vec!["Q"; MAX_TRACE_SNAPSHOTS as usize + 1]);
        let e = trace(many).unwrap_err().to_string();
        assert!(e.contains("trace of more than 1000000 snapshots"), "{e}");
    }

    /// Arguments and variables past what a job may pass are refused while parsing (3
    /// million empty arguments, 9 MB of JSON, are over the 2 MiB a guest may receive);
    /// a record within it parses as it was written.
    #[test]
    fn args_and_env_past_what_a_job_may_pass_are_refused_while_parsing() {
        let ok = record();
        let text = serde_json::to_string(&ok).unwrap();
        assert_eq!(serde_json::from_str::<JobRecord>(&text).unwrap(), ok);
        let mut v = serde_json::to_value(&ok).unwrap();
        v["args"] = serde_json::Value::Array(vec![serde_json::Value::from(""); 3_000_000]);
        let e = serde_json::from_value::<JobRecord>(v)
            .unwrap_err()
            .to_string();
        assert!(e.contains("arguments of more than 2097152 bytes"), "{e}");
        let mut v = serde_json::to_value(&ok).unwrap();
        let big = "x".repeat(1 << 20);
        v["env"] = serde_json::json!([["A", big], ["B", big]]);
        let e = serde_json::from_value::<JobRecord>(v)
            .unwrap_err()
            .to_string();
        assert!(e.contains("environment variables of more than"), "{e}");
    }
}
