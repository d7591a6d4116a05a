//! Verifying a result: re-run the job a receipt describes and compare.
//!
//! What it is for: a verifier (a mediator) holds a provider's receipt — and perhaps the
//! provider's results folder — and needs a yes or a no with the reason. [`verify`]
//! rebuilds the [`Job`] from the receipt alone (module and inputs found by the paths it
//! names, or where the caller points, and checked against the receipt's CIDs), runs it
//! with this runtime, and compares the results CID, the instruction count and the exit
//! code with the receipt's claims. Given the provider's folder it also hashes it and
//! lists the files that differ from the re-run, with their CIDs, the first differing
//! byte and, for text, the first differing line.
//!
//! What it is not: a judge of the provider's folder alone. The re-run decides: a receipt
//! whose claimed CID differs from the re-run is rejected even when the provider's folder
//! hashes to the claimed CID (a provider can make a folder match any claim of its own).
//!
//! Three answers, as the CLI's exit codes: verified; not verified (a mismatch, with the
//! reasons); and cannot verify ([`VerifyError`]: the module or an input is missing or is
//! not what the receipt names, the receipt comes from another engine configuration).

use std::cmp::Ordering;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use detwasm_hasher::{Entry, EntryKind, EntryPaths, HashError, Hasher, Options};
use detwasm_runtime::engine::Deadline;
use serde::Serialize;

use detwasm_job::error::RunError;
use detwasm_job::job::{Epoch, Input, Job, Module, ResultsOptions};
use detwasm_job::receipt::Receipt;
use detwasm_job::results;
use detwasm_runtime::run::{Destination, Runtime, Segment};

/// Where to find what the receipt names, when not at the receipt's own paths.
#[derive(Clone, Debug, Default)]
pub struct Sources {
    /// The module file (default: the receipt's `job.module`).
    pub module: Option<PathBuf>,
    /// Input folders: `(Some(guest), host)` replaces the input mounted at `guest`;
    /// `(None, host)` replaces the inputs in the receipt's order.
    pub inputs: Vec<(Option<String>, PathBuf)>,
    /// The file whose bytes were the job's stdin (needed when it was not empty).
    pub stdin: Option<PathBuf>,
    /// The most the verifier lets the job ask for ([`JobCaps`]).
    pub caps: JobCaps,
}

/// The most a verifier lets a receipt's (or snapshot's) job ask for, `None` for no cap:
/// a job above one is refused before its module is read or its inputs hashed. A
/// receipt's limits are the provider's choice, and a re-run spends what they allow (a
/// 30-day timeout, a 16 GiB output quota): found by review, with no way for a verifier
/// to say what it will spend. Rejected: caps by default (a verifier of large jobs would
/// have every receipt refused until it found the flags).
#[derive(Clone, Copy, Debug, Default)]
pub struct JobCaps {
    pub fuel: Option<u64>,
    pub memory: Option<u64>,
    pub max_output: Option<u64>,
    pub timeout: Option<Duration>,
}

impl JobCaps {
    /// `Err` naming the first limit of `limits` above its cap.
    pub fn check(&self, limits: &detwasm_job::job::Limits) -> Result<(), VerifyError> {
        let over = |what: &str, asked: String, cap: String| {
            Err(VerifyError::OverCap(format!(
                "its job asks for {what} {asked}, more than the {cap} allowed here"
            )))
        };
        if let Some(c) = self.fuel.filter(|c| limits.fuel > *c) {
            return over("fuel", limits.fuel.to_string(), c.to_string());
        }
        if let Some(c) = self.memory.filter(|c| limits.memory > *c) {
            return over("memory", limits.memory.to_string(), c.to_string());
        }
        if let Some(c) = self.max_output.filter(|c| limits.max_output > *c) {
            return over(
                "an output quota of",
                limits.max_output.to_string(),
                c.to_string(),
            );
        }
        let timeout = limits.safety_timeout();
        if let Some(c) = self.timeout.filter(|c| timeout > *c) {
            return over(
                "a timeout of",
                format!("{} s", timeout.as_secs_f64()),
                format!("{} s", c.as_secs_f64()),
            );
        }
        Ok(())
    }
}

/// Whether the module is at the path the job `record` names, with the record's CID.
fn module_at_record(
    record: &detwasm_job::receipt::JobRecord,
    profile: detwasm_job::results::Profile,
) -> bool {
    record.module.as_ref().is_some_and(|p| {
        detwasm_jobspec::resolve::read_module_file(Path::new(p))
            .is_ok_and(|b| results::cid_of_bytes(&b, profile).is_ok_and(|c| c == record.module_cid))
    })
}

impl Sources {
    /// Finds by CID what the job `record` names and is not where it says (its module
    /// file unreadable or another module, an input folder missing) in `places`: folders
    /// (the module as a `.wasm` or `.car` file in them, found as a module folder's
    /// entry module is; an input as a folder named by its CID, as `ipfs get CID`
    /// writes it) and CAR files (the module or input block of that CID, unpacked within
    /// the bounds of [`crate::unpack`]). What is found becomes `--module` and `--input`;
    /// what was given explicitly is kept. Keep the returned folders until the job has
    /// run. Receipts name content by CID, with paths as hints: a receipt that travels
    /// finds its content wherever the verifier keeps it. Found by use: a receipt checked
    /// on another machine failed with "No such file".
    ///
    /// What is still missing then is fetched from `remote` when it names an IPFS node or
    /// gateway ([`crate::ipfs`]): the module and each input's CAR into a scratch folder
    /// (the inputs' CARs within one job's CAR read budget together), then found in those
    /// CARs as in any other, every block checked against its CID.
    pub fn find_by_cid(
        &mut self,
        record: &detwasm_job::receipt::JobRecord,
        profile: detwasm_job::results::Profile,
        places: &[PathBuf],
        remote: &crate::ipfs::Remote,
    ) -> Result<Vec<crate::scratch::Scratch>, String> {
        if places.is_empty() && !remote.is_set() {
            return Ok(Vec::new());
        }
        // The verifier's caps first, before anything is read, fetched or written for the
        // job (found by review: a receipt over them had unpacked 8 GB before it was
        // refused).
        detwasm_job::job::check_counts(record.inputs.len(), record.outputs.len())
            .map_err(|e| e.to_string())?;
        self.caps.check(&record.limits).map_err(|e| e.to_string())?;
        // Whether the module is where the record says: read and hashed once.
        let module_here = self.module.is_some() || module_at_record(record, profile);
        let mut kept = self.find_in(record, places, module_here)?;
        if !remote.is_set() {
            return Ok(kept);
        }
        let module_missing = self.module.is_none() && !module_here;
        let mut cids: Vec<&str> = record
            .inputs
            .iter()
            .filter(|i| self.input_missing(i))
            .map(|i| i.cid.as_str())
            .collect();
        cids.sort_unstable();
        cids.dedup();
        if !module_missing && cids.is_empty() {
            return Ok(kept);
        }
        let fetched = crate::scratch::Scratch::new("detwasm-fetched-", "content fetched by CID")
            .map_err(|e| e.to_string())?;
        let mut cars = Vec::new();
        // One deadline for all of the job's fetches.
        let deadline = std::time::Instant::now() + crate::ipfs::REQUEST_TIMEOUT;
        if module_missing {
            let to = fetched.path().join("module.car");
            let limits = crate::unpack::Limits::of(detwasm_jobspec::resolve::MAX_MODULE_FILE, 1);
            remote
                .fetch_car_by(&record.module_cid, &to, limits.max_car_bytes, deadline)
                .map_err(|e| format!("the module: {e}"))?;
            cars.push(to);
        }
        // The inputs within one job's CAR read budget (a receipt's CIDs name the files
        // nothing: fixed names).
        cars.extend(
            remote
                .fetch_each(
                    &cids,
                    fetched.path(),
                    |i, _| format!("input-{i}.car"),
                    crate::unpack::JOB_CAR.max_car_bytes,
                    deadline,
                )
                .map_err(|e| format!("an input: {e}"))?,
        );
        kept.push(fetched);
        kept.extend(self.find_in(record, &cars, module_here)?);
        Ok(kept)
    }

    /// Whether `input` of the job is neither given (`--input`) nor where the record says.
    fn input_missing(&self, input: &detwasm_job::receipt::InputRecord) -> bool {
        let given = self
            .inputs
            .iter()
            .any(|(g, _)| g.as_deref() == Some(&input.guest))
            || self.inputs.iter().any(|(g, _)| g.is_none());
        !given && !Path::new(&input.host).is_dir()
    }

    /// [`Self::find_by_cid`] in `places` alone.
    fn find_in(
        &mut self,
        record: &detwasm_job::receipt::JobRecord,
        places: &[PathBuf],
        module_here: bool,
    ) -> Result<Vec<crate::scratch::Scratch>, String> {
        let mut kept: Vec<crate::scratch::Scratch> = Vec::new();
        let scratch = |kept: &mut Vec<crate::scratch::Scratch>| -> Result<PathBuf, String> {
            let s = crate::scratch::Scratch::new("detwasm-found-", "content found by CID")
                .map_err(|e| e.to_string())?;
            let p = s.path().to_path_buf();
            kept.push(s);
            Ok(p)
        };
        // The module, unless given or where the record says.
        if self.module.is_none() && !module_here {
            for place in places {
                if place.is_dir() {
                    let Ok(found) =
                        detwasm_jobspec::resolve::entry_module(place, &record.module_cid, "")
                    else {
                        continue;
                    };
                    let file = scratch(&mut kept)?.join("module.wasm");
                    std::fs::write(&file, &found.bytes).map_err(|e| e.to_string())?;
                    self.module = Some(file);
                    break;
                }
                if crate::unpack::is_car_file(place) {
                    let file = scratch(&mut kept)?.join("module.wasm");
                    let limits =
                        crate::unpack::Limits::of(detwasm_jobspec::resolve::MAX_MODULE_FILE, 1);
                    let cid = Some(record.module_cid.as_str());
                    if crate::unpack::unpack_as(place, cid, Some(&file), limits, Some("file"))
                        .is_ok()
                    {
                        self.module = Some(file);
                        break;
                    }
                }
            }
        }
        // Each input not given and not where the record says: from a folder named by
        // its CID, else from the CARs, each read once, with one budget for all of the
        // job's inputs (a job file's, [`crate::unpack::JOB_CAR`]), and an input whose
        // CID another input has already found sharing its folder. Found by review: each
        // of a hostile receipt's inputs unpacked its own gigabyte from one small CAR.
        let mut missing: Vec<&detwasm_job::receipt::InputRecord> = Vec::new();
        for input in &record.inputs {
            if !self.input_missing(input) {
                continue;
            }
            // A folder named by the CID only for a CID written as one: a receipt's
            // `../../etc` would name another folder (found by review of the same lookup
            // in job files).
            let plain = crate::ipfs::is_plain_cid(&input.cid);
            match places.iter().find(|p| plain && p.join(&input.cid).is_dir()) {
                Some(place) => self
                    .inputs
                    .push((Some(input.guest.clone()), place.join(&input.cid))),
                None => missing.push(input),
            }
        }
        let mut found: std::collections::HashMap<&str, PathBuf> = Default::default();
        let mut budget = crate::unpack::JOB_CAR;
        for place in places.iter().filter(|p| crate::unpack::is_car_file(p)) {
            let mut cids: Vec<&str> = missing
                .iter()
                .map(|i| i.cid.as_str())
                .filter(|c| !found.contains_key(c))
                .collect();
            cids.sort_unstable();
            cids.dedup();
            if cids.is_empty() {
                break;
            }
            let base = scratch(&mut kept)?;
            let dests: Vec<PathBuf> = (0..cids.len())
                .map(|i| base.join(format!("input-{i}")))
                .collect();
            let wanted: Vec<(&str, &Path, &'static str)> = cids
                .iter()
                .zip(&dests)
                .map(|(c, d)| (*c, d.as_path(), "folder"))
                .collect();
            // A CAR that cannot be read is one place less, as a folder without the CID is.
            let Ok(got) = crate::unpack::unpack_each(place, &wanted, &mut budget) else {
                continue;
            };
            for ((cid, dest), got) in cids.iter().zip(dests).zip(got) {
                if got.is_some() {
                    found.insert(cid, dest);
                }
            }
        }
        for input in missing {
            if let Some(dir) = found.get(input.cid.as_str()) {
                self.inputs.push((Some(input.guest.clone()), dir.clone()));
            }
        }
        Ok(kept)
    }

    /// Replaces each input given as a CAR file (`--input x.car[:GUEST]`, as `run` takes
    /// it) by the folder it holds, unpacked as `run` unpacks it
    /// ([`crate::request::unpack_car_input`]); keep the returned folders until the job
    /// has run.
    pub fn unpack_cars(&mut self) -> Result<Vec<crate::scratch::Scratch>, String> {
        let mut kept = Vec::new();
        for (_, host) in &mut self.inputs {
            if let Some(dir) = crate::request::unpack_car_input(host).map_err(|e| e.message)? {
                *host = dir.path().join(crate::request::CAR_TREE);
                kept.push(dir);
            }
        }
        Ok(kept)
    }

    /// One input replacement as `--input` spells it: `HOST:GUEST` replaces the input
    /// mounted at GUEST (an absolute path), a plain `HOST` the next input in the
    /// receipt's order.
    pub fn parse_input(spec: &str) -> (Option<String>, PathBuf) {
        match spec.rsplit_once(':') {
            Some((h, g)) if g.starts_with('/') => (Some(g.to_string()), PathBuf::from(h)),
            _ => (None, PathBuf::from(spec)),
        }
    }
}

/// Why a receipt could not be checked at all (not a mismatch).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("reading receipt {}: {cause}", path.display())]
    ReceiptUnreadable { path: PathBuf, cause: String },
    #[error("{} is not a detwasm receipt: {cause}", path.display())]
    NotAReceipt { path: PathBuf, cause: String },
    #[error("the receipt (or snapshot) names no module file here: pass --module FILE, or --find DIR|CAR to find it by CID")]
    NoModule,
    #[error("module {}: {cause} (pass --module FILE: the module whose CID the receipt names, or --find DIR|CAR to find it by CID)", path.display())]
    ModuleUnreadable {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("module {}: its CID is {got}, the receipt's module is {expected}: not the module the job ran", path.display())]
    ModuleMismatch {
        path: PathBuf,
        expected: String,
        got: String,
    },
    #[error("input {guest}: {} does not exist or cannot be read (pass --input HOST:{guest}, or --find DIR|CAR to find it by CID)", host.display())]
    InputMissing { guest: String, host: PathBuf },
    #[error("input {guest}: {} hashes to {got}, the receipt's input is {expected}: not the input the job read", host.display())]
    InputMismatch {
        guest: String,
        host: PathBuf,
        expected: String,
        got: String,
    },
    #[error("--input {0}: the receipt mounts no input at that guest path")]
    UnknownInput(String),
    #[error("the job read {0} bytes of stdin: pass --stdin FILE")]
    NoStdin(u64),
    #[error("stdin {}: its blake3 is {got}, the receipt's is {expected}", path.display())]
    StdinMismatch {
        path: PathBuf,
        expected: String,
        got: String,
    },
    #[error("{}", engine_mismatch(receipt, ours, version))]
    Engine {
        receipt: String,
        ours: String,
        version: String,
    },
    #[error("--results {}: {cause}", path.display())]
    Results { path: PathBuf, cause: String },
    /// The folder holds what no run of this runtime writes (a FIFO or device, a name
    /// UnixFS cannot hold, more entries than a results folder can have): evidence about
    /// the folder, so `verify` reports the results not verified (exit 1), where an error
    /// reading it leaves the verdict open (exit 2). Found by review: a FIFO in a
    /// provider's folder was "cannot re-run".
    #[error("--results {}: not a results folder of any run: {cause}", path.display())]
    NotResults { path: PathBuf, cause: String },
    /// The job the receipt (or snapshot) records is not one a run would accept, e.g.
    /// more inputs or outputs than a job may have: said before anything of it is read,
    /// hashed or run.
    #[error("the receipt's job: {0}")]
    Job(#[from] detwasm_job::error::JobError),
    #[error("re-running the job: {0}")]
    Run(#[from] RunError),
    /// The job asks for more than `--cap-*` allow ([`JobCaps`]).
    #[error("the receipt's job is refused: {0}")]
    OverCap(String),
    #[error("the receipt has no trace of snapshots (the run took no checkpoints: run it with `detwasm run --checkpoints DIR`)")]
    NoTrace,
    #[error("the two receipts cannot be bisected: {0}")]
    NotComparable(String),
    #[error("re-running segment {0} hit the job's wall-clock timeout on this machine: no verdict (nothing is known of the provider's claim)")]
    SegmentTimeout(usize),
    #[error("the re-run hit the job's wall-clock timeout on this machine: no verdict (nothing is known of the provider's claim; a faster or less loaded machine may finish it)")]
    ReRunTimeout,
    #[error("{0}")]
    BadSegments(String),
    /// The snapshots given could not be read here (no verdict).
    #[error("--snapshots {}: {cause}", path.display())]
    SnapshotsUnreadable { path: PathBuf, cause: String },
    /// The trace's snapshots hold frames of another unwind pass than this detwasm's: its
    /// segments cannot be re-run here (no verdict).
    #[error("the trace's snapshots hold frames of {theirs}; this detwasm reads {ours}: check it with a detwasm of that unwind pass (no verdict)")]
    TraceFrames { theirs: String, ours: String },
    /// This machine could not re-run a segment: its disk, its memory, its temporary
    /// folder, a compile or an input hash past the job's timeout. No verdict, and never
    /// evidence against the provider (found by review: each of these was reported as a
    /// MISMATCH, exit 1, blaming an honest provider for the verifier's own failure).
    #[error("segment {segment} could not be re-run on this machine: {cause} (no verdict: nothing is known of the provider's claim)")]
    SegmentHere { segment: usize, cause: String },
}

/// One path whose content differs between the provider's results and the re-run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Difference {
    /// Path inside the results folder, `/`-separated.
    pub path: String,
    /// `content`, `kind` (a file here, a folder there), `missing` (in the provider's
    /// folder, present in the re-run) or `extra` (only in the provider's folder).
    pub what: &'static str,
    /// CID of the entry in the re-run (`None` when missing there).
    pub cid_rerun: Option<String>,
    /// CID of the entry in the provider's folder (`None` when missing there).
    pub cid_provider: Option<String>,
    /// First byte offset at which two files differ (content differences of files).
    pub first_difference: Option<u64>,
    /// For text files: the first differing line, as `line N: -rerun / +provider`.
    pub text: Option<String>,
}

/// The verdict.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub verified: bool,
    /// Why not, one line each (empty when verified).
    pub reasons: Vec<String>,
    /// The results CID the receipt claims.
    pub cid_expected: String,
    /// The results CID of the re-run.
    pub cid_actual: String,
    pub instructions_expected: u64,
    pub instructions_actual: u64,
    pub exit_code_expected: i32,
    pub exit_code_actual: i32,
    /// How the run ended (`exited`, `trap`, …), as the receipt claims and as re-run.
    pub outcome_expected: String,
    pub outcome_actual: String,
    pub job_id: String,
    /// The CID of the provider's results folder, when it was given.
    pub cid_provider: Option<String>,
    /// Paths that differ between the provider's folder and the re-run: the first
    /// [`MAX_DIFFERENCES_LISTED`] in tree order.
    pub differences: Vec<Difference>,
    /// How many more differ than are listed.
    pub differences_unlisted: usize,
    /// Where the re-run's results are, when they were kept.
    pub rerun_results: Option<String>,
}

/// The most bytes of a receipt file read: 64 MiB, as a snapshot's state
/// (`runtime::checkpoint::MAX_STATE_BYTES`). A receipt is small (its job's args and env
/// at most 2 MiB, at most 256 inputs and outputs, and a trace of one CID per checkpoint:
/// about a million checkpoints fit); parsed, a JSON value takes a few times its text.
/// Rejected: reading it whole (a receipt is someone else's file: a sparse file of a
/// terabyte, or `/dev/zero` by symlink, was read until memory ran out, and a FIFO held
/// `verify` until a writer came).
pub const MAX_RECEIPT_BYTES: u64 = 64 << 20;

/// Reads and parses a receipt file: a regular file of at most [`MAX_RECEIPT_BYTES`],
/// opened without blocking (`jobspec::resolve::read_bounded`: a FIFO is refused as not a
/// regular file), for `detwasm verify` and Python's `verify` alike.
pub fn read_receipt(path: &Path) -> Result<Receipt, VerifyError> {
    let bytes = detwasm_jobspec::resolve::read_bounded(path, MAX_RECEIPT_BYTES).map_err(|e| {
        VerifyError::ReceiptUnreadable {
            path: path.to_path_buf(),
            cause: match e {
                detwasm_jobspec::SpecError::Io { message, .. } => message,
                e => e.to_string(),
            },
        }
    })?;
    let receipt: Receipt =
        serde_json::from_slice(&bytes).map_err(|e| VerifyError::NotAReceipt {
            path: path.to_path_buf(),
            cause: e.to_string(),
        })?;
    // Fields a verifier prints are single words of printable ASCII, as every receipt of
    // detwasm writes them (CIDs, hex ids, the fingerprint, a version number): found by
    // review, a `cid` carrying a newline printed a forged "verified: 12 of 12" line.
    let unwind = receipt.trace.as_ref().and_then(|t| t.unwind.clone());
    for (name, value) in [
        ("cid", &receipt.cid),
        ("job_id", &receipt.job_id),
        ("module_cid", &receipt.module_cid),
        ("engine", &receipt.engine),
        ("detwasm_version", &receipt.detwasm_version),
        ("trace.unwind", unwind.as_ref().unwrap_or(&String::new())),
    ] {
        if value.len() > 256 || !value.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(VerifyError::NotAReceipt {
                path: path.to_path_buf(),
                cause: format!(
                    "its `{name}` is not a word of at most 256 printable ASCII characters"
                ),
            });
        }
    }
    Ok(receipt)
}

/// Rebuilds the job a receipt describes, checking the module, inputs and stdin against
/// the receipt's CIDs.
pub fn job_of(receipt: &Receipt, sources: &Sources) -> Result<Job, VerifyError> {
    job_of_record(
        &receipt.job,
        ResultsOptions {
            profile: receipt.profile,
            skip_hidden: receipt.skip_hidden,
        },
        sources,
    )
}

/// A snapshot opened from a folder or unpacked from a CAR file
/// ([`open_snapshot`]).
pub struct OpenedSnapshot {
    pub snapshot: detwasm_runtime::checkpoint::Snapshot,
    /// The scratch folder a CAR was unpacked into, removed when this is dropped.
    _unpacked: Option<crate::scratch::Scratch>,
}

/// Opens the snapshot at `path`: a snapshot folder, or a CAR file holding one (its root,
/// or the folder `cid` of it: a CAR of a whole checkpoints folder), unpacked into a
/// temporary folder within the bounds of
/// [`detwasm_runtime::checkpoint::Snapshot::from_car`]. `cid` with a folder is an
/// error (a folder is one snapshot). A snapshot from a CAR has no `job.json` beside it:
/// the module and inputs are named by `sources`.
pub fn open_snapshot(
    path: &Path,
    cid: Option<&str>,
    caps: &JobCaps,
) -> Result<OpenedSnapshot, RunError> {
    use detwasm_runtime::checkpoint::Snapshot;
    // The caps are applied to the state's job before a CAR is unpacked (its claims, within
    // the job's limits, bound what is written), and to a folder's once it is opened.
    let admit = |s: &detwasm_runtime::checkpoint::State| {
        caps.check(&s.job.limits).map_err(|e| e.to_string())
    };
    if path.is_dir() {
        if cid.is_some() {
            return Err(RunError::Input {
                path: path.to_path_buf(),
                reason: "a snapshot folder is one snapshot; a CID picks one in a CAR file".into(),
            });
        }
        let snapshot = Snapshot::open(path)?;
        admit(&snapshot.state).map_err(|why| RunError::Snapshot {
            path: path.to_path_buf(),
            reason: format!("not a snapshot detwasm can resume: {why}"),
        })?;
        return Ok(OpenedSnapshot {
            snapshot,
            _unpacked: None,
        });
    }
    let unpacked = crate::scratch::Scratch::new("detwasm-snapshot-", "an unpacked snapshot")?;
    let snapshot = Snapshot::from_car(path, cid, &unpacked.path().join("car"), &admit)?;
    Ok(OpenedSnapshot {
        snapshot,
        _unpacked: Some(unpacked),
    })
}

/// Where a spot check finds the provider's snapshots: its checkpoints folder, or a CAR of
/// it, parsed once for every segment.
enum Snapshots<'a> {
    Folder(&'a Path),
    Car {
        path: &'a Path,
        blocks: &'a detwasm_runtime::checkpoint::Car<'a>,
    },
}

/// Calls `f` with the snapshots at `path`: a checkpoints folder, or a CAR of one, mapped
/// and parsed (every block checked) once for all the segments `f` runs. `Err` is a CAR
/// this machine could not read ([`RunError::Io`]) or one that is not a snapshot CAR
/// ([`RunError::Snapshot`]: its maker's).
fn with_snapshots<R>(path: &Path, f: impl FnOnce(&Snapshots) -> R) -> Result<R, RunError> {
    if path.is_dir() {
        return Ok(f(&Snapshots::Folder(path)));
    }
    let map = detwasm_runtime::checkpoint::map_snapshot_car(path)?;
    let blocks = detwasm_runtime::checkpoint::parse_snapshot_car(path, &map)?;
    Ok(f(&Snapshots::Car {
        path,
        blocks: &blocks,
    }))
}

impl Snapshots<'_> {
    /// Snapshot `want` of them (the entry `i` of a folder), within `caps`
    /// ([`open_snapshot`]'s).
    fn open(&self, i: usize, want: &str, caps: &JobCaps) -> Result<OpenedSnapshot, SegmentFailure> {
        match *self {
            Snapshots::Folder(folder) => {
                let entry = folder.join(format!("{i:06}"));
                if std::fs::symlink_metadata(&entry).is_err() {
                    return Err(SegmentFailure::Evidence(format!(
                        "snapshot {i}: the trace names it, and the snapshots folder {} has \
                         no entry {i:06}",
                        folder.display()
                    )));
                }
                open_snapshot(&entry, None, caps).map_err(|e| SegmentFailure::of(i, e))
            }
            Snapshots::Car { path, blocks } => {
                let admit = |s: &detwasm_runtime::checkpoint::State| {
                    caps.check(&s.job.limits).map_err(|e| e.to_string())
                };
                let unpacked =
                    crate::scratch::Scratch::new("detwasm-snapshot-", "an unpacked snapshot")
                        .map_err(|e| SegmentFailure::of(i, e))?;
                let snapshot = detwasm_runtime::checkpoint::Snapshot::from_parsed_car(
                    path,
                    blocks,
                    Some(want),
                    &unpacked.path().join("car"),
                    &admit,
                )
                .map_err(|e| SegmentFailure::of(i, e))?;
                Ok(OpenedSnapshot {
                    snapshot,
                    _unpacked: Some(unpacked),
                })
            }
        }
    }
}

/// Rebuilds the job a snapshot belongs to (`detwasm resume`): its record without host
/// paths, completed by the host details saved beside it (`job.json` in the checkpoints
/// folder, when it is the same job) and then by `sources`, and checked against the
/// record's CIDs as [`job_of`] checks a receipt's.
pub fn job_of_snapshot(
    snapshot: &detwasm_runtime::checkpoint::Snapshot,
    sources: &Sources,
) -> Result<Job, VerifyError> {
    let state = &snapshot.state;
    let mut record = state.job.clone();
    if let Some(beside) = snapshot.job_record_beside() {
        if detwasm_runtime::checkpoint::host_free(&beside) == record {
            record = beside;
        }
    }
    job_of_record(
        &record,
        ResultsOptions {
            profile: state.profile,
            skip_hidden: state.skip_hidden,
        },
        sources,
    )
}

/// [`job_of`] from the job's record and results options.
pub fn job_of_record(
    r: &detwasm_job::receipt::JobRecord,
    results_options: ResultsOptions,
    sources: &Sources,
) -> Result<Job, VerifyError> {
    // Counted first, before the module is read or any input hashed: a receipt is a
    // small file that can list 80,000 outputs (each a mount and results folder, checked
    // against each other) or inputs (each hashed).
    detwasm_job::job::check_counts(r.inputs.len(), r.outputs.len())?;
    sources.caps.check(&r.limits)?;
    let profile = results_options.profile;
    let module_path = sources
        .module
        .clone()
        .or_else(|| r.module.as_ref().map(PathBuf::from))
        .ok_or(VerifyError::NoModule)?;
    let bytes = detwasm_jobspec::resolve::read_module_file(&module_path).map_err(|e| {
        VerifyError::ModuleUnreadable {
            path: module_path.clone(),
            cause: std::io::Error::other(e.to_string()),
        }
    })?;
    let got = results::cid_of_bytes(&bytes, profile)?;
    if got != r.module_cid {
        return Err(VerifyError::ModuleMismatch {
            path: module_path,
            expected: r.module_cid.clone(),
            got,
        });
    }
    let mut hosts: Vec<PathBuf> = r.inputs.iter().map(|i| PathBuf::from(&i.host)).collect();
    let mut next = 0;
    for (guest, host) in &sources.inputs {
        let i = match guest {
            Some(g) => r
                .inputs
                .iter()
                .position(|i| &i.guest == g)
                .ok_or_else(|| VerifyError::UnknownInput(g.clone()))?,
            None => {
                next += 1;
                next - 1
            }
        };
        if i >= hosts.len() {
            return Err(VerifyError::UnknownInput(host.display().to_string()));
        }
        hosts[i] = host.clone();
    }
    // Each folder is hashed once, and within the job's own wall-clock timeout, as the
    // run hashes it (`results::InputCids`): a receipt naming one large folder many times
    // costs one hash.
    let started = std::time::Instant::now();
    let timeout = r.limits.safety_timeout();
    let deadline = started.checked_add(timeout).map(|at| (at, timeout));
    let mut cids = results::InputCids::default();
    let mut inputs = Vec::new();
    for (record, host) in r.inputs.iter().zip(hosts) {
        let canonical = std::fs::canonicalize(&host).map_err(|_| VerifyError::InputMissing {
            guest: record.guest.clone(),
            host: host.clone(),
        })?;
        let got = cids.of(&canonical, profile, deadline)?;
        if got != record.cid {
            return Err(VerifyError::InputMismatch {
                guest: record.guest.clone(),
                host,
                expected: record.cid.clone(),
                got,
            });
        }
        inputs.push(Input {
            host,
            guest: record.guest.clone(),
            writable: record.writable,
        });
    }
    let stdin = match (&sources.stdin, r.stdin_bytes) {
        (None, 0) => Vec::new(),
        (None, n) => return Err(VerifyError::NoStdin(n)),
        (Some(p), _) => {
            let data = std::fs::read(p).map_err(|e| VerifyError::Results {
                path: p.clone(),
                cause: e.to_string(),
            })?;
            let got = blake3::hash(&data).to_hex().to_string();
            if got != r.stdin_blake3 {
                return Err(VerifyError::StdinMismatch {
                    path: p.clone(),
                    expected: r.stdin_blake3.clone(),
                    got,
                });
            }
            data
        }
    };
    Ok(Job {
        module: Module {
            bytes: Arc::new(bytes),
            source: Some(module_path.display().to_string()),
        },
        argv0: r.argv0.clone(),
        entry: r.entry.clone(),
        args: r.args.clone(),
        env: r.env.clone(),
        stdin,
        inputs,
        outputs: r.outputs.clone(),
        seed: r.seed,
        epoch: Epoch {
            unix_nanos: r.epoch_unix_nanos,
        },
        limits: r.limits,
        results: results_options,
    })
}

/// Re-runs the receipt's job and compares; with `provider_results`, also compares the
/// provider's folder with the re-run, file by file. The re-run's results go to `keep`
/// when given (kept), else to a temporary folder (removed).
pub fn verify(
    runtime: &Runtime,
    receipt: &Receipt,
    sources: &Sources,
    provider_results: Option<&Path>,
    keep: Option<&Path>,
) -> Result<Report, VerifyError> {
    same_engine(runtime, receipt)?;
    let job = job_of(receipt, sources)?;
    let tmp;
    let dest = match keep {
        Some(p) => p.to_path_buf(),
        None => {
            tmp = crate::scratch::Scratch::new("detwasm-verify-", "the re-run's results")?;
            tmp.path().join("results")
        }
    };
    let rerun = runtime.run(&job, &Destination::At(dest.clone()))?;

    let mut reasons = receipt_claims(receipt, &rerun.job_id);
    // This machine's wall clock is no evidence against the provider: with nothing else
    // against the receipt, a re-run stopped by it leaves the verdict open (found by
    // review: it said NOT VERIFIED, exit 1, of an honest receipt on a slow verifier).
    if !rerun.verifiable {
        if reasons.is_empty() {
            return Err(VerifyError::ReRunTimeout);
        }
        reasons.push("the re-run was stopped by this machine's wall-clock timeout".into());
    }
    if rerun.cid != receipt.cid {
        reasons.push(format!(
            "results CID: the receipt claims {}, the re-run gives {}",
            receipt.cid, rerun.cid
        ));
    }
    if rerun.instructions != receipt.instructions {
        reasons.push(format!(
            "instruction count: the receipt claims {}, the re-run counts {}",
            receipt.instructions, rerun.instructions
        ));
    }
    if rerun.exit_code != receipt.exit_code || rerun.outcome != receipt.outcome {
        reasons.push(format!(
            "end: the receipt claims {} (exit code {}), the re-run ends {} (exit code {})",
            receipt.outcome, receipt.exit_code, rerun.outcome, rerun.exit_code
        ));
    } else if rerun.trap != receipt.trap {
        // The trap's message is part of the result (found by review: only the outcome
        // was compared, so a receipt could name another trap).
        reasons.push(format!(
            "trap: the receipt claims {:?}, the re-run traps with {:?}",
            receipt.trap, rerun.trap
        ));
    }
    let (cid_provider, differences, differences_unlisted) = match provider_results {
        None => (None, Vec::new(), 0),
        Some(p) => {
            // A CAR of the provider's results (`hash --car`): unpacked, within what a
            // results folder of this job can hold, for the comparison only.
            let compared = results_car(p, receipt).and_then(|unpacked| {
                let p = unpacked.as_ref().map_or(p, |(_, folder)| folder.as_path());
                diff_folders(
                    &dest,
                    p,
                    receipt.profile,
                    !receipt.skip_hidden,
                    receipt.job.limits.safety_timeout(),
                )
            });
            let diff = match compared {
                Ok(diff) => diff,
                Err(e @ VerifyError::NotResults { .. }) => {
                    reasons.push(e.to_string());
                    FolderDiff {
                        ours: rerun.cid.clone(),
                        theirs: String::new(),
                        differences: Vec::new(),
                        unlisted: 0,
                    }
                }
                Err(e) => return Err(e),
            };
            if !diff.theirs.is_empty() && diff.theirs != receipt.cid {
                reasons.push(format!(
                    "the provider's results folder hashes to {}, not to the receipt's {}",
                    diff.theirs, receipt.cid
                ));
            }
            let total = diff.differences.len() + diff.unlisted;
            if total > 0 {
                reasons.push(format!(
                    "{total} path(s) of the provider's results differ from the re-run"
                ));
            }
            let theirs = Some(diff.theirs).filter(|c| !c.is_empty());
            (theirs, diff.differences, diff.unlisted)
        }
    };
    Ok(Report {
        verified: reasons.is_empty(),
        reasons,
        cid_expected: receipt.cid.clone(),
        cid_actual: rerun.cid,
        instructions_expected: receipt.instructions,
        instructions_actual: rerun.instructions,
        exit_code_expected: receipt.exit_code,
        exit_code_actual: rerun.exit_code,
        outcome_expected: receipt.outcome.clone(),
        outcome_actual: rerun.outcome,
        job_id: rerun.job_id,
        cid_provider,
        differences,
        differences_unlisted,
        rerun_results: keep.map(|p| p.display().to_string()),
    })
}

/// When `path` is a CAR file (`*.car`) of a provider's results: the folder it holds,
/// unpacked into a locked scratch folder ([`crate::scratch::Scratch`]) within what a
/// results folder of the receipt's job can hold (its output quota twice over, for the
/// writable folders' files also within it, plus the `exitCode` and stderr slack;
/// [`MAX_RESULTS_ENTRIES`] entries), every block checked against its CID. A CAR that is
/// corrupt, too large or not of a folder is evidence about the provider's results:
/// [`VerifyError::NotResults`]. `None` for anything else (a folder).
fn results_car(
    path: &Path,
    receipt: &Receipt,
) -> Result<Option<(crate::scratch::Scratch, PathBuf)>, VerifyError> {
    if !crate::unpack::is_car_file(path) {
        return Ok(None);
    }
    let scratch = crate::scratch::Scratch::new("detwasm-results-car-", "unpacked results")
        .map_err(VerifyError::from)?;
    let folder = scratch.path().join("results");
    let limits = crate::unpack::Limits::of(
        receipt
            .job
            .limits
            .max_output
            .saturating_mul(2)
            .saturating_add(1 << 20),
        MAX_RESULTS_ENTRIES as u64,
    );
    let not = |cause: String| VerifyError::NotResults {
        path: path.to_path_buf(),
        cause,
    };
    crate::unpack::unpack_as(path, None, Some(&folder), limits, Some("folder")).map_err(not)?;
    Ok(Some((scratch, folder)))
}

/// The most entries `verify --results` walks in a provider's results folder: what a
/// results folder of this runtime can hold, 2,097,668. A guest keeps at most
/// `wasi::vfs::MAX_ENTRIES` (1,048,576) entries in its output volumes; a writable folder
/// (`--dir`) starts with the entries its host folder had, which the input scans count
/// against `MAX_INPUT_ENTRIES` (1,048,576, all mounts together); each output and
/// writable folder is a volume folder ([`MAX_OUTPUTS`] + [`MAX_INPUTS`]); and the folder
/// itself, `stdout`, `stderr` and `exitCode` are four more. A folder with more was not
/// made by an honest run of any job, and is refused (`HashError::TooManyEntries`) at the
/// entry over the cap, while it is listed, having held at most this many (the hasher's
/// table and the entries kept to compare, at most about 800 bytes each with names of 255
/// bytes: 1.6 GiB; measured, 160 MB for 200,000 entries of 250-byte names 4,000 bytes
/// deep, which took 915 MB while every entry held its full path). Rejected: no cap (a provider's folder
/// of ten million empty files cost the verifier what it liked), and a cap from the
/// receipt's own job (its output quota says nothing of a writable folder's entries).
///
/// [`MAX_OUTPUTS`]: detwasm_job::job::MAX_OUTPUTS
/// [`MAX_INPUTS`]: detwasm_job::job::MAX_INPUTS
pub const MAX_RESULTS_ENTRIES: usize = detwasm_runtime::wasi::vfs::MAX_ENTRIES as usize
    + detwasm_runtime::wasi::vfs::MAX_INPUT_ENTRIES as usize
    + detwasm_job::job::MAX_OUTPUTS
    + detwasm_job::job::MAX_INPUTS
    + 4;

/// The most bytes of files read, in all, to say where files of the two folders differ
/// (their first differing byte and line): 256 MiB, four of the largest files compared
/// ([`MAX_COMPARED`]). Beyond it, further differing files are reported by their CIDs
/// alone, which the hash already gave. Rejected: only the cap per file (a provider's
/// folder of 100,000 files of 64 MiB, each differing from the re-run's, made the
/// verifier read 12 TB to describe a mismatch the CIDs had already proved).
pub const MAX_COMPARED_TOTAL: u64 = 256 << 20;

/// The most differences [`diff_folders`] lists: 10,000 (the rest are counted). Each holds
/// a path of up to 4 KiB; a provider's folder of two million extra files in a folder of
/// the re-run's would otherwise list them all. Rejected: no cap (gigabytes of paths to
/// say what the first few already said).
pub const MAX_DIFFERENCES_LISTED: usize = 10_000;

/// What [`diff_folders`] found.
#[derive(Debug)]
pub struct FolderDiff {
    /// The CID of the first folder (the re-run's).
    pub ours: String,
    /// The CID of the second folder (the provider's).
    pub theirs: String,
    /// The first [`MAX_DIFFERENCES_LISTED`] paths that differ, in tree order.
    pub differences: Vec<Difference>,
    /// How many more differ.
    pub unlisted: usize,
}

/// One results folder's entries (without the root), in the hasher's pre-order (a folder
/// before its entries, the entries of a folder by name bytes); their paths are rebuilt
/// as they are compared ([`EntryPaths`]).
type Entries = Vec<Entry>;

/// Compares two results folders hashed under `profile`: returns the CID of each and the
/// paths that differ (`cid_rerun` describes `ours`, `cid_provider` `theirs`).
///
/// `theirs` is someone else's (a provider's): both folders are hashed, and their files
/// compared, within `timeout` from the call (the receipt's job timeout, as its re-run
/// had), and within [`MAX_RESULTS_ENTRIES`] entries each; at most [`MAX_COMPARED_TOTAL`]
/// bytes of files are read to describe differences. The comparison itself is linear in
/// the entries' paths (both lists are merged in tree order; a folder reported missing,
/// extra or of another kind has its contents skipped as one range). Rejected: the
/// pairwise check of every path against every reported folder this did before (a
/// provider's folder of 100,000 extra files took 24 s).
pub fn diff_folders(
    ours: &Path,
    theirs: &Path,
    profile: detwasm_job::Profile,
    include_hidden: bool,
    timeout: Duration,
) -> Result<FolderDiff, VerifyError> {
    let caps = Caps {
        deadline: Deadline::after(timeout),
        entries: MAX_RESULTS_ENTRIES,
        read: MAX_COMPARED_TOTAL,
    };
    diff_within(ours, theirs, profile, include_hidden, caps)
}

/// What [`diff_folders`] may spend: its deadline, the entries walked in each folder and
/// the bytes of files read to describe differences.
#[derive(Clone, Copy)]
struct Caps {
    deadline: Option<Deadline>,
    entries: usize,
    read: u64,
}

/// [`diff_folders`] within `caps`.
fn diff_within(
    ours: &Path,
    theirs: &Path,
    profile: detwasm_job::Profile,
    include_hidden: bool,
    caps: Caps,
) -> Result<FolderDiff, VerifyError> {
    let (ours_cid, a) = entries(ours, profile, include_hidden, caps)?;
    let (theirs_cid, b) = entries(theirs, profile, include_hidden, caps)?;
    let (differences, unlisted) = compare(ours, &a, theirs, &b, caps)?;
    Ok(FolderDiff {
        ours: ours_cid,
        theirs: theirs_cid,
        differences,
        unlisted,
    })
}

/// The error of a comparison that passed its deadline.
fn too_late(dir: &Path, d: Deadline) -> VerifyError {
    VerifyError::Results {
        path: dir.to_path_buf(),
        cause: format!(
            "comparing it with the re-run did not finish within the job's wall-clock timeout of {} s",
            d.timeout.as_secs_f64()
        ),
    }
}

/// Every entry of a results folder with its CID, walked within the caps' deadline and
/// entries.
fn entries(
    dir: &Path,
    profile: detwasm_job::Profile,
    include_hidden: bool,
    caps: Caps,
) -> Result<(String, Entries), VerifyError> {
    let deadline = caps.deadline;
    let opts = Options::profile(profile).with_hidden(include_hidden);
    let mut hasher = Hasher::new(opts).entries(true).max_entries(caps.entries);
    if let Some(d) = deadline {
        hasher = hasher.deadline(d.at);
    }
    let hashed = hasher.hash_path(dir).map_err(|e| match (e, deadline) {
        (HashError::Deadline, Some(d)) => too_late(dir, d),
        (
            e @ (HashError::Unsupported { .. }
            | HashError::InvalidName { .. }
            | HashError::TooManyEntries { .. }),
            _,
        ) => VerifyError::NotResults {
            path: dir.to_path_buf(),
            cause: e.to_string(),
        },
        (e, _) => VerifyError::Results {
            path: dir.to_path_buf(),
            cause: e.to_string(),
        },
    })?;
    let mut list = hashed.entries;
    // The root is compared by the caller, by its CID.
    list.retain(|e| e.depth > 0);
    list.shrink_to_fit();
    Ok((hashed.root.to_string(), list))
}

/// The hasher's pre-order of two relative paths: by components, each by bytes, a folder
/// before its entries. That is byte order with `/` taken as lower than every byte a
/// name can hold (a name holds neither `/` nor NUL).
fn tree_order(a: &str, b: &str) -> Ordering {
    let key = |c: u8| if c == b'/' { 0 } else { c };
    let (a, b) = (a.as_bytes(), b.as_bytes());
    match a.iter().zip(b).position(|(x, y)| x != y) {
        Some(i) => key(a[i]).cmp(&key(b[i])),
        None => a.len().cmp(&b.len()),
    }
}

/// Paths whose entries differ, leaves only: a folder is listed when it is missing,
/// extra or of another kind; its changed contents are listed by their own paths. The
/// first [`MAX_DIFFERENCES_LISTED`] are returned, with the number of the rest.
///
/// Both lists are in tree order ([`tree_order`]), so they are merged in one pass, and the
/// contents of a folder reported whole (or equal by CID on both sides) are the run of
/// entries deeper than it that follows it: skipped by one depth check each.
fn compare(
    ours_dir: &Path,
    ours: &[Entry],
    theirs_dir: &Path,
    theirs: &[Entry],
    caps: Caps,
) -> Result<(Vec<Difference>, usize), VerifyError> {
    let is_dir = |k: EntryKind| matches!(k, EntryKind::Directory | EntryKind::HamtDirectory);
    let mut out = Vec::new();
    let mut unlisted = 0;
    let mut read_budget = caps.read;
    // The depth of the folder whose contents are skipped: reported whole, or equal on
    // both sides.
    let mut skip: Option<u32> = None;
    let (mut ia, mut ib) = (ours.iter(), theirs.iter());
    let (mut pa, mut pb) = (EntryPaths::default(), EntryPaths::default());
    let (mut a, mut b) = (ia.next(), ib.next());
    if let Some(e) = a {
        pa.next(e);
    }
    if let Some(e) = b {
        pb.next(e);
    }
    while a.is_some() || b.is_some() {
        let order = match (a, b) {
            (Some(_), Some(_)) => tree_order(pa.path(), pb.path()),
            (Some(_), None) => Ordering::Less,
            _ => Ordering::Greater,
        };
        let (x, y) = match order {
            Ordering::Less => (a, None),
            Ordering::Greater => (None, b),
            Ordering::Equal => (a, b),
        };
        let (depth, path) = match (x, y) {
            (Some(x), _) => (x.depth, pa.path()),
            (None, Some(y)) => (y.depth, pb.path()),
            (None, None) => break,
        };
        let d = if skip.is_some_and(|s| depth > s) {
            None
        } else {
            skip = None;
            match (x, y) {
                (Some(a), Some(b)) if a.cid == b.cid => {
                    skip = Some(depth);
                    None
                }
                (Some(a), Some(b)) if is_dir(a.kind) && is_dir(b.kind) => None,
                (Some(a), Some(b)) if is_dir(a.kind) != is_dir(b.kind) || a.kind != b.kind => {
                    Some(Difference {
                        path: path.to_string(),
                        what: "kind",
                        cid_rerun: Some(a.cid.to_string()),
                        cid_provider: Some(b.cid.to_string()),
                        first_difference: None,
                        text: None,
                    })
                }
                (Some(a), Some(b)) => {
                    if let Some(d) = caps.deadline.filter(|d| Instant::now() >= d.at) {
                        return Err(too_late(theirs_dir, d));
                    }
                    let (first, text) = file_difference(
                        &ours_dir.join(path),
                        &theirs_dir.join(path),
                        &mut read_budget,
                    );
                    Some(Difference {
                        path: path.to_string(),
                        what: "content",
                        cid_rerun: Some(a.cid.to_string()),
                        cid_provider: Some(b.cid.to_string()),
                        first_difference: first,
                        text,
                    })
                }
                (Some(a), None) => Some(Difference {
                    path: path.to_string(),
                    what: "missing",
                    cid_rerun: Some(a.cid.to_string()),
                    cid_provider: None,
                    first_difference: None,
                    text: None,
                }),
                (None, Some(b)) => Some(Difference {
                    path: path.to_string(),
                    what: "extra",
                    cid_rerun: None,
                    cid_provider: Some(b.cid.to_string()),
                    first_difference: None,
                    text: None,
                }),
                (None, None) => None,
            }
        };
        if let Some(d) = d {
            if d.what != "content" {
                skip = Some(depth);
            }
            if out.len() < MAX_DIFFERENCES_LISTED {
                out.push(d);
            } else {
                unlisted += 1;
            }
        }
        if x.is_some() {
            a = ia.next();
            if let Some(e) = a {
                pa.next(e);
            }
        }
        if y.is_some() {
            b = ib.next();
            if let Some(e) = b {
                pb.next(e);
            }
        }
    }
    Ok((out, unlisted))
}

/// Largest file compared byte by byte for the report (larger ones are reported by CID).
const MAX_COMPARED: u64 = 64 << 20;

/// A regular file's bytes, at most `limit` of them: opened without following a symlink
/// and without blocking (a FIFO put there after the walk is not waited on), and checked
/// to be a regular file of at most `limit` bytes on its handle. `None` otherwise.
fn read_small(path: &Path, limit: u64) -> Option<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(path)
        .ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() || meta.len() > limit {
        return None;
    }
    let mut bytes = Vec::new();
    file.take(limit + 1).read_to_end(&mut bytes).ok()?;
    (bytes.len() as u64 <= limit).then_some(bytes)
}

/// The first differing byte of two files and, when both are text, the first differing
/// line.
///
/// Each file is read only if it is at most [`MAX_COMPARED`] bytes and both fit in what
/// is left of `budget` (of [`MAX_COMPARED_TOTAL`]), which they are charged to; else the
/// two are reported by CID alone.
fn file_difference(ours: &Path, theirs: &Path, budget: &mut u64) -> (Option<u64>, Option<String>) {
    let size = |p: &Path| {
        std::fs::symlink_metadata(p)
            .ok()
            .filter(|m| m.is_file() && m.len() <= MAX_COMPARED)
            .map(|m| m.len())
    };
    let (Some(x), Some(y)) = (size(ours), size(theirs)) else {
        return (None, None);
    };
    if x + y > *budget {
        return (None, None);
    }
    *budget -= x + y;
    let (Some(a), Some(b)) = (read_small(ours, x), read_small(theirs, y)) else {
        return (None, None);
    };
    let first = a
        .iter()
        .zip(&b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len())) as u64;
    let text = match (std::str::from_utf8(&a), std::str::from_utf8(&b)) {
        (Ok(x), Ok(y)) => {
            let (mut lx, mut ly) = (x.lines(), y.lines());
            let mut n = 0;
            loop {
                n += 1;
                match (lx.next(), ly.next()) {
                    (Some(p), Some(q)) if p == q => continue,
                    (None, None) => break None,
                    (p, q) => {
                        let show = |l: Option<&str>| match l {
                            Some(l) if l.chars().count() > 120 => {
                                format!("{}…", l.chars().take(120).collect::<String>())
                            }
                            Some(l) => l.to_string(),
                            None => "(end of file)".into(),
                        };
                        break Some(format!("line {n}: -{} / +{}", show(p), show(q)));
                    }
                }
            }
        }
        _ => None,
    };
    (Some(first), text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_files_report_the_first_differing_byte_and_line() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("a"), "one\ntwo\nthree\n").unwrap();
        std::fs::write(t.path().join("b"), "one\ntwo\nTHREE\n").unwrap();
        let mut budget = MAX_COMPARED_TOTAL;
        let (first, text) = file_difference(&t.path().join("a"), &t.path().join("b"), &mut budget);
        assert_eq!(first, Some(8));
        assert_eq!(text.as_deref(), Some("line 3: -three / +THREE"));
        std::fs::write(t.path().join("c"), "one\ntwo\n").unwrap();
        let (first, text) = file_difference(&t.path().join("a"), &t.path().join("c"), &mut budget);
        assert_eq!(first, Some(8));
        assert_eq!(text.as_deref(), Some("line 3: -three / +(end of file)"));
    }

    /// A receipt's job of record with 80,000 outputs (or 300 inputs) is a job error,
    /// said from the counts before the module is read (none exists here) or any input
    /// hashed; at the caps the counts pass and the next check (the module) speaks.
    #[test]
    fn a_job_of_record_over_the_caps_is_a_job_error_before_anything_is_read() {
        use detwasm_job::error::JobError;
        use detwasm_job::job::{Limits, Output, MAX_INPUTS, MAX_OUTPUTS};
        use detwasm_job::receipt::{InputRecord, JobRecord};
        let record = |inputs: usize, outputs: usize| JobRecord {
            module: Some("/nonexistent/m.wasm".into()),
            module_cid: String::new(),
            argv0: "m.wasm".into(),
            entry: "_start".into(),
            args: Vec::new(),
            env: Vec::new(),
            stdin_blake3: String::new(),
            stdin_bytes: 0,
            inputs: (0..inputs)
                .map(|i| InputRecord {
                    host: "/nonexistent".into(),
                    guest: format!("/i{i}"),
                    cid: String::new(),
                    writable: false,
                })
                .collect(),
            outputs: (0..outputs)
                .map(|i| Output {
                    name: format!("o{i}"),
                    guest: format!("/o{i}"),
                })
                .collect(),
            seed: 0,
            epoch_unix_nanos: 0,
            limits: Limits::default(),
        };
        let of = |r: &JobRecord| job_of_record(r, ResultsOptions::default(), &Sources::default());
        let e = of(&record(0, 80_000)).unwrap_err();
        assert!(
            matches!(
                e,
                VerifyError::Job(JobError::TooManyOutputs {
                    count: 80_000,
                    limit: 256
                })
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("80000 outputs"), "{e}");
        let e = of(&record(MAX_INPUTS + 44, 1)).unwrap_err();
        assert!(
            matches!(
                e,
                VerifyError::Job(JobError::TooManyInputs { count: 300, .. })
            ),
            "{e:?}"
        );
        let e = of(&record(MAX_INPUTS, MAX_OUTPUTS)).unwrap_err();
        assert!(matches!(e, VerifyError::ModuleUnreadable { .. }), "{e:?}");
    }

    /// The provider's folder with `n` extra files in `extra/` and `stdout` changed, and
    /// the re-run's.
    fn folders(n: usize) -> (tempfile::TempDir, PathBuf, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let (ours, theirs) = (t.path().join("ours"), t.path().join("theirs"));
        for d in [&ours, &theirs] {
            std::fs::create_dir_all(d.join("outputs/a")).unwrap();
            std::fs::write(d.join("outputs/a/f"), "same\n").unwrap();
            std::fs::write(d.join("outputs/a-c"), "same\n").unwrap();
            std::fs::write(d.join("exitCode"), "0").unwrap();
        }
        std::fs::write(ours.join("stdout"), "one\ntwo\n").unwrap();
        std::fs::write(theirs.join("stdout"), "one\nTWO\n").unwrap();
        std::fs::create_dir(theirs.join("outputs/extra")).unwrap();
        for i in 0..n {
            std::fs::write(theirs.join(format!("outputs/extra/{i}")), "").unwrap();
        }
        std::fs::write(theirs.join("outputs/a/g"), "new\n").unwrap();
        (t, ours, theirs)
    }

    fn caps() -> Caps {
        Caps {
            deadline: Deadline::after(Duration::from_secs(3600)),
            entries: MAX_RESULTS_ENTRIES,
            read: MAX_COMPARED_TOTAL,
        }
    }

    fn diff(ours: &Path, theirs: &Path, caps: Caps) -> Result<Vec<Difference>, VerifyError> {
        diff_within(
            ours,
            theirs,
            detwasm_job::Profile::UnixfsV1_2025,
            true,
            caps,
        )
        .map(|r| r.differences)
    }

    /// The comparison merges both folders in tree order: an extra folder of 20,000 files
    /// is one difference (its contents skipped as one run, not each checked against every
    /// difference found before), `a-c` (which sorts between `a` and `a/…` as text) is
    /// not mistaken for a path inside `a`, and a changed file is still described.
    #[test]
    fn an_extra_folder_of_many_files_is_one_difference() {
        let (_t, ours, theirs) = folders(20_000);
        let d = diff(&ours, &theirs, caps()).unwrap();
        let got: Vec<(&str, &str)> = d.iter().map(|d| (d.path.as_str(), d.what)).collect();
        assert_eq!(
            got,
            [
                ("outputs/a/g", "extra"),
                ("outputs/extra", "extra"),
                ("stdout", "content")
            ]
        );
        assert_eq!(d[2].first_difference, Some(4));
        assert_eq!(tree_order("a-c", "a/b"), Ordering::Greater);
        assert_eq!(tree_order("a", "a/b"), Ordering::Less);
    }

    /// Extra files in a folder both have are each a difference, listed up to
    /// [`MAX_DIFFERENCES_LISTED`] and counted beyond it; paths rebuilt from depths and
    /// names come out whole as the walk goes down and back up.
    #[test]
    fn differences_past_the_listed_cap_are_counted_and_paths_rebuilt_at_every_depth() {
        let (_t, ours, theirs) = folders(0);
        for d in [&ours, &theirs] {
            std::fs::create_dir_all(d.join("outputs/x/y/z")).unwrap();
            std::fs::write(d.join("outputs/x/y/z/f"), "same\n").unwrap();
        }
        std::fs::write(theirs.join("outputs/x/y/z/g"), "new\n").unwrap();
        std::fs::write(theirs.join("outputs/x/q"), "new\n").unwrap();
        let n = MAX_DIFFERENCES_LISTED + 7;
        for i in 0..n {
            std::fs::write(theirs.join(format!("outputs/a/h{i:05}")), "").unwrap();
        }
        let got = diff_within(
            &ours,
            &theirs,
            detwasm_job::Profile::UnixfsV1_2025,
            true,
            caps(),
        )
        .unwrap();
        // outputs/a/g, the n files, outputs/extra, outputs/x/q, outputs/x/y/z/g, stdout.
        assert_eq!(got.differences.len() + got.unlisted, n + 5);
        assert_eq!(got.differences.len(), MAX_DIFFERENCES_LISTED);
        assert_eq!(got.differences[0].path, "outputs/a/g");
        assert_eq!(got.differences[1].path, "outputs/a/h00000");
        for i in 0..n {
            std::fs::remove_file(theirs.join(format!("outputs/a/h{i:05}"))).unwrap();
        }
        let small = diff(&ours, &theirs, caps()).unwrap();
        let paths: Vec<&str> = small.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "outputs/a/g",
                "outputs/extra",
                "outputs/x/q",
                "outputs/x/y/z/g",
                "stdout"
            ]
        );
    }

    /// A provider's folder over the entry cap is refused at the entry over it, naming the
    /// folder; one past its deadline is refused naming the timeout; beyond the read
    /// budget, differing files are reported by CID without being read.
    #[test]
    fn a_provider_folder_is_compared_within_its_entries_deadline_and_reads() {
        let (_t, ours, theirs) = folders(100);
        let e = diff(
            &ours,
            &theirs,
            Caps {
                entries: 50,
                ..caps()
            },
        )
        .unwrap_err();
        let m = e.to_string();
        assert!(
            matches!(&e, VerifyError::NotResults { path, .. } if path == &theirs)
                && m.contains("more than 50 entries")
                && m.contains("extra"),
            "{m}"
        );
        let e = diff(
            &ours,
            &theirs,
            Caps {
                deadline: Deadline::after(Duration::ZERO),
                ..caps()
            },
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("did not finish within the job's wall-clock timeout of 0 s"),
            "{e}"
        );
        let d = diff(&ours, &theirs, Caps { read: 10, ..caps() }).unwrap();
        let stdout = d.iter().find(|d| d.path == "stdout").unwrap();
        assert_eq!(
            (stdout.first_difference, stdout.cid_provider.is_some()),
            (None, true)
        );
        let d = diff(&ours, &theirs, Caps { read: 16, ..caps() }).unwrap();
        let stdout = d.iter().find(|d| d.path == "stdout").unwrap();
        assert_eq!(stdout.first_difference, Some(4));
        assert_eq!(
            MAX_RESULTS_ENTRIES,
            (1 << 20) + (1 << 20) + 256 + 256 + 4,
            "the derivation in its doc"
        );
    }
}

/// What is wrong with a receipt's own claims about its job, whatever the re-run gives:
/// its job id is not the id of the job its record describes (`job_id`, computed here),
/// it says its run was not verifiable, or its module CID is not its record's. One line
/// each; empty when none. Both [`verify`] and [`spot_check`] count these against the
/// receipt (found by review: a spot check compared only the trace, so a receipt of a
/// cheaper job relabelled with the requested job's id was verified).
fn receipt_claims(receipt: &Receipt, job_id: &str) -> Vec<String> {
    let mut reasons = Vec::new();
    if receipt.job_id != job_id {
        reasons.push(format!(
            "the receipt's job id {} is not the id of the job it describes ({job_id})",
            receipt.job_id
        ));
    }
    if !receipt.verifiable {
        reasons.push(
            "the receipt says its run was stopped by the wall-clock timeout: such a run is not verifiable"
                .into(),
        );
    }
    if receipt.module_cid != receipt.job.module_cid {
        reasons.push(format!(
            "the receipt's module CID {} is not its job's ({})",
            receipt.module_cid, receipt.job.module_cid
        ));
    }
    reasons
}

/// The trace's snapshots are of this detwasm's unwind pass ([`Trace::unwind`]), or the
/// error that says which they are of.
fn same_frames(trace: &detwasm_job::receipt::Trace) -> Result<(), VerifyError> {
    let ours = detwasm_runtime::passes::unwind::PASS_VERSION;
    match trace.unwind.as_deref() {
        Some(v) if v == ours => Ok(()),
        theirs => Err(VerifyError::TraceFrames {
            theirs: theirs.map_or_else(
                || "detwasm-unwind-4 or older (the trace does not name its unwind pass)".into(),
                |v| v.to_string(),
            ),
            ours: ours.into(),
        }),
    }
}

/// What [`VerifyError::Engine`] says: which protocol the receipt needs, and which
/// detwasm made it.
fn engine_mismatch(receipt: &str, ours: &str, version: &str) -> String {
    use detwasm_runtime::engine::protocol_of;
    let mine = protocol_of(ours).unwrap_or(ours);
    // The same version number is another build of it (the number names a release, not
    // the rules): say so rather than send the verifier to the version it runs.
    let maker = if version == env!("CARGO_PKG_VERSION") {
        format!("another build of detwasm {version}")
    } else {
        format!("detwasm {version}")
    };
    let legacy = receipt
        .strip_prefix("blake3:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()));
    match protocol_of(receipt) {
        None if !legacy => format!(
            "the receipt's engine fingerprint {receipt:?} is not one any detwasm writes \
             (`detwasm-protocol-N:blake3:` and 64 hex digits); this detwasm follows {mine}"
        ),
        Some(theirs) if theirs != mine => format!(
            "the receipt was made under {theirs} (by {maker}); this detwasm follows {mine}: \
             verify it with a detwasm that follows {theirs}, such as {maker}"
        ),
        Some(_) => format!(
            "the receipt's fingerprint is {receipt} ({maker}) and this detwasm's is {ours}, \
             under the same protocol: one of the two builds changed its rules without a new \
             protocol version; verify it with {maker}"
        ),
        None => format!(
            "the receipt was made before protocol versions, by {maker} (its fingerprint \
             {receipt} named that build's engine); this detwasm follows {mine}: verify it \
             with {maker}"
        ),
    }
}

/// The receipt's engine is this runtime's, or the error that says which it was.
fn same_engine(runtime: &Runtime, receipt: &Receipt) -> Result<(), VerifyError> {
    if receipt.engine != runtime.fingerprint() {
        return Err(VerifyError::Engine {
            receipt: receipt.engine.clone(),
            ours: runtime.fingerprint().to_string(),
            version: receipt.detwasm_version.clone(),
        });
    }
    Ok(())
}

/// One segment a spot check re-ran.
#[derive(Clone, Debug, Serialize)]
pub struct SegmentCheck {
    /// 0 is from the job's start to checkpoint 1; `i` from checkpoint `i` to `i + 1`;
    /// the last from the last checkpoint to the job's end.
    pub segment: usize,
    /// Whether the re-run reached what the trace (or, for the last, the receipt) claims.
    pub ok: bool,
    /// What the trace claims at the segment's end: the next snapshot's CID, or for the
    /// last segment the results CID, instructions and exit code.
    pub expected: String,
    /// What the re-run reached.
    pub actual: String,
    /// Why not, when not.
    pub reason: Option<String>,
    pub seconds: f64,
}

/// The verdict of a spot check ([`spot_check`]).
#[derive(Clone, Debug, Serialize)]
pub struct SampleReport {
    pub verified: bool,
    /// The id of the job the receipt's record describes, computed here (what the
    /// receipt's `job_id` must be).
    pub job_id: String,
    /// What is wrong with the receipt's own claims (its job id, its module, a run it says
    /// was not verifiable), one line each: any of them and no segment is re-run.
    pub reasons: Vec<String>,
    /// Segments of the job (snapshots + 1).
    pub segments: usize,
    pub checked: Vec<SegmentCheck>,
}

/// The segments a spot check of `k` re-runs out of `segments`: always the last (it ties
/// the trace to the results CID the receipt claims: without it a provider could attach
/// an honest trace to a fabricated result), and `k - 1` others drawn without replacement
/// by a generator seeded with `seed` (the verifier's own randomness; the provider learns
/// the choice only after committing to its trace). All of them when `k >= segments`.
pub fn choose_segments(segments: usize, k: usize, seed: u64) -> Vec<usize> {
    if k >= segments {
        return (0..segments).collect();
    }
    let mut state = seed;
    // SplitMix64: enough to draw indices from a seed; nothing secret rests on it beyond
    // the seed itself.
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let mut rest: Vec<usize> = (0..segments - 1).collect();
    let mut picked = vec![segments - 1];
    for i in 0..k.saturating_sub(1) {
        let j = i + (next() % (rest.len() - i) as u64) as usize;
        rest.swap(i, j);
        picked.push(rest[i]);
    }
    picked.sort_unstable();
    picked
}

/// Spot-checks a receipt's trace: re-runs `segments` of the job (each from the
/// provider's snapshot that starts it, found in `snapshots` and checked against the
/// trace's CID first, to the next checkpoint) and compares where each ends with the
/// trace. `runtime` must take checkpoints at the trace's interval
/// (`Runtime::with_checkpoints(trace.every)`).
///
/// What it proves: a provider that fabricated a result or skipped work has at least one
/// segment whose end does not follow from its start; each segment re-run finds it when it
/// is that one. Re-running k of n segments costs about k/n of the job (plus a compile,
/// which the module cache makes a load), spread over the machine's cores.
///
/// Evidence and no verdict are kept apart, as [`verify`] keeps them: a segment that
/// reaches another end than the trace's, or a snapshot that is missing, forged or not
/// the trace's, is a mismatch (not verified); a failure of this machine (its disk,
/// memory or clock) is an error, no verdict. A mismatch found in one segment is reported
/// even when another segment had no verdict.
pub fn spot_check(
    runtime: &Runtime,
    receipt: &Receipt,
    snapshots: &Path,
    sources: &Sources,
    segments: &[usize],
) -> Result<SampleReport, VerifyError> {
    same_engine(runtime, receipt)?;
    let trace = receipt.trace.as_ref().ok_or(VerifyError::NoTrace)?;
    same_frames(trace)?;
    let n = trace.snapshots.len();
    if segments.is_empty()
        || segments.windows(2).any(|w| w[0] >= w[1])
        || segments.iter().any(|&i| i > n)
    {
        return Err(VerifyError::BadSegments(format!(
            "{} segments asked for, of {}: they must be at least one, in increasing order, each below {}",
            segments.len(),
            n + 1,
            n + 1
        )));
    }
    let job = job_of(receipt, sources)?;
    let deadline = detwasm_runtime::engine::Deadline::after(job.limits.safety_timeout());
    // The module is hashed (for the job id) while its compiled code loads, on another
    // core: CPython's take 26 and 100 ms, before any segment can start. Only a module
    // compiled already is loaded this early: a compile waits for the receipt's claims.
    let (prepared, early) = std::thread::scope(|s| {
        // A thread the system refuses only means no early load (`s.spawn` would panic).
        let early = std::thread::Builder::new()
            .spawn_scoped(s, || runtime.load_compiled(&job.module.bytes, &job.entry));
        let prepared = runtime.prepare_by(&job, deadline);
        // A failure is met again, and reported, by the load below.
        let early = early.ok().and_then(|t| t.join().ok()).and_then(Result::ok);
        (prepared, early.flatten())
    });
    let prepared = prepared?;
    let reasons = receipt_claims(receipt, &prepared.job_id);
    if !reasons.is_empty() {
        return Ok(SampleReport {
            verified: false,
            job_id: prepared.job_id,
            reasons,
            segments: n + 1,
            checked: Vec::new(),
        });
    }
    // The module is loaded once (within the job's timeout, as each segment's run loads
    // it), before the segments share it. A failure here ends the check with it (no
    // verdict): found by review, each segment compiled it again, a core's worth at a
    // time, and reported its failure as a mismatch.
    if early.is_none() {
        runtime.load_by(&job.module.bytes, &job.entry, deadline)?;
    }
    // Segments are independent runs: they go on threads of their own, each holding its
    // own guest memory at once. What each reaches does not depend on it. Fewer than twice
    // as many segments as the machine has cores all start at once, sharing the cores:
    // on as many threads as cores, the last round left cores idle (3 segments on 2
    // cores took two segments' time, all at once a segment and a half: CPython's spot
    // check 0.66 s then, 0.54 s now). More go on as many threads as cores, so that a
    // verifier holds at most about twice the guest memories of its cores. Rejected: one
    // after another (a verifier with cores waited for them in turn); every segment at
    // once (`--sample 100` held 100 guest memories).
    let run_all = |source: &Snapshots| {
        let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
        let threads = if segments.len() < 2 * cores {
            segments.len()
        } else {
            cores
        }
        .max(1);
        let next = std::sync::atomic::AtomicUsize::new(0);
        let done: std::sync::Mutex<Vec<Option<Result<SegmentCheck, VerifyError>>>> =
            std::sync::Mutex::new((0..segments.len()).map(|_| None).collect());
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| loop {
                    let j = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(&i) = segments.get(j) else { break };
                    let r = check_segment(runtime, receipt, trace, &job, source, i);
                    done.lock().expect("no segment panics holding the lock")[j] = Some(r);
                });
            }
        });
        done.into_inner()
            .expect("no segment panics holding the lock")
            .into_iter()
            .map(|r| r.expect("every segment was run"))
            .collect::<Vec<Result<SegmentCheck, VerifyError>>>()
    };
    let results = match with_snapshots(snapshots, run_all) {
        Ok(results) => results,
        // A CAR that is no snapshot CAR is its maker's: not verified, no segment run.
        Err(e @ RunError::Snapshot { .. }) => {
            return Ok(SampleReport {
                verified: false,
                job_id: prepared.job_id,
                reasons: vec![e.to_string()],
                segments: n + 1,
                checked: Vec::new(),
            })
        }
        Err(e) => {
            return Err(VerifyError::SnapshotsUnreadable {
                path: snapshots.to_path_buf(),
                cause: e.to_string(),
            })
        }
    };
    // Evidence wins over no verdict (found by review: a segment's timeout on this
    // machine hid another segment's mismatch).
    let mismatched = results.iter().any(|r| matches!(r, Ok(c) if !c.ok));
    let mut checked = Vec::with_capacity(results.len());
    for r in results {
        match r {
            Ok(c) => checked.push(c),
            Err(e) if !mismatched => return Err(e),
            Err(_) => {}
        }
    }
    Ok(SampleReport {
        verified: !checked.is_empty() && checked.iter().all(|c| c.ok),
        job_id: prepared.job_id,
        reasons,
        segments: n + 1,
        checked,
    })
}

/// Re-runs segment `i` of the receipt's job ([`spot_check`]) and compares where it ends
/// with the trace (or, for the last, with the receipt).
fn check_segment(
    runtime: &Runtime,
    receipt: &Receipt,
    trace: &detwasm_job::receipt::Trace,
    job: &Job,
    snapshots: &Snapshots,
    i: usize,
) -> Result<SegmentCheck, VerifyError> {
    let n = trace.snapshots.len();
    let started = std::time::Instant::now();
    let expected = if i < n {
        trace.snapshots[i].clone()
    } else {
        format!(
            "results {}, {} instructions, exit {}",
            receipt.cid, receipt.instructions, receipt.exit_code
        )
    };
    let (actual, reason) = match run_segment(runtime, job, trace, snapshots, i) {
        Err(SegmentFailure::Evidence(why)) => (String::new(), Some(why)),
        Err(SegmentFailure::Here(e)) => return Err(e),
        Ok(Segment::Checkpoint { cid }) if i < n => {
            let ok = cid == trace.snapshots[i];
            let why = (!ok).then(|| {
                format!(
                    "from {}, the job reaches snapshot {cid}, not the trace's {}",
                    start_name(i),
                    trace.snapshots[i]
                )
            });
            (cid, why)
        }
        Ok(Segment::Checkpoint { cid }) => (
            cid.clone(),
            Some(format!(
                "from {}, the job takes another checkpoint ({cid}), which the trace does not name",
                start_name(i)
            )),
        ),
        // This machine's wall clock is no evidence against the provider.
        Ok(Segment::End(r)) if !r.verifiable => return Err(VerifyError::SegmentTimeout(i)),
        Ok(Segment::End(r)) => {
            let actual = format!(
                "results {}, {} instructions, exit {}",
                r.cid, r.instructions, r.exit_code
            );
            let why = if i < n {
                Some(format!(
                    "from {}, the job ends ({actual}) before the trace's next snapshot",
                    start_name(i)
                ))
            } else if (r.cid.as_str(), r.instructions, r.exit_code)
                != (
                    receipt.cid.as_str(),
                    receipt.instructions,
                    receipt.exit_code,
                )
            {
                Some(format!(
                    "from {}, the job ends with {actual}; the receipt claims {expected}",
                    start_name(i)
                ))
            } else if r.outcome != receipt.outcome || r.trap != receipt.trap {
                Some(format!(
                    "from {}, the job ends {} ({:?}); the receipt claims it ended {} ({:?})",
                    start_name(i),
                    r.outcome,
                    r.trap,
                    receipt.outcome,
                    receipt.trap
                ))
            } else {
                None
            };
            (actual, why)
        }
    };
    Ok(SegmentCheck {
        segment: i,
        ok: reason.is_none(),
        expected,
        actual,
        reason,
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn start_name(i: usize) -> String {
    if i == 0 {
        "the job's start".into()
    } else {
        format!("snapshot {i}")
    }
}

/// Why a segment was not run to its end: evidence about the provider's snapshots (a
/// mismatch), or this machine's failure (no verdict).
enum SegmentFailure {
    Evidence(String),
    Here(VerifyError),
}

impl SegmentFailure {
    /// A refused snapshot ([`RunError::Snapshot`]) is evidence; anything else a run can
    /// fail with (I/O, the host's memory, a compile or hash past the deadline, a module
    /// this runtime will not run) is this machine's.
    fn of(i: usize, e: RunError) -> Self {
        match e {
            RunError::Snapshot { .. } => SegmentFailure::Evidence(format!("snapshot {i}: {e}")),
            e => SegmentFailure::Here(VerifyError::SegmentHere {
                segment: i,
                cause: e.to_string(),
            }),
        }
    }
}

/// Runs segment `i`: from the job's start or from the provider's snapshot `i` (which must
/// hash to the trace's CID), in temporary folders. `snapshots` is the provider's
/// checkpoints folder, or a CAR of it (`detwasm hash --car`), from which the snapshot
/// the trace names is unpacked.
fn run_segment(
    runtime: &Runtime,
    job: &Job,
    trace: &detwasm_job::receipt::Trace,
    snapshots: &Snapshots,
    i: usize,
) -> Result<Segment, SegmentFailure> {
    let opened = if i == 0 {
        None
    } else {
        let want = &trace.snapshots[i - 1];
        // Opened (its layout checked against its state, within the caps of
        // `Snapshot::open`) before it is hashed: hashing first cost a folder's every byte,
        // whatever it held (found by review: a 16 GiB sparse file beside a snapshot took
        // 40 s with a 3 s job timeout).
        // The receipt's job (within the verifier's caps) is the most a snapshot of it
        // may claim.
        let l = &job.limits;
        let caps = JobCaps {
            fuel: Some(l.fuel),
            memory: Some(l.memory),
            max_output: Some(l.max_output),
            timeout: Some(l.safety_timeout()),
        };
        let opened = snapshots.open(i, want, &caps)?;
        // Hashed within the job's timeout, as its re-run is run, counted from here (found
        // by review: counted from before a CAR was parsed, the parse used it up): a forged
        // folder within the caps of its own claims took 73 s to hash for `--sample 8`.
        let timeout = job.limits.safety_timeout();
        let deadline = std::time::Instant::now()
            .checked_add(timeout)
            .map(|at| (at, timeout));
        let dir = &opened.snapshot.dir;
        let cid = match results::cid_of_dir_by(dir, job.results.profile, true, deadline) {
            Ok(cid) => cid,
            // This machine's disk or clock.
            Err(e @ (RunError::Io { .. } | RunError::InputTimeout { .. })) => {
                return Err(SegmentFailure::of(i, e))
            }
            Err(e) => {
                return Err(SegmentFailure::Evidence(format!(
                    "snapshot {i} ({}): {e}",
                    dir.display()
                )))
            }
        };
        if cid != *want {
            return Err(SegmentFailure::Evidence(format!(
                "snapshot {i} ({}) hashes to {cid}, not the trace's {want}",
                dir.display()
            )));
        }
        Some(OpenedSnapshot {
            snapshot: opened.snapshot.hashed_to(cid),
            _unpacked: opened._unpacked,
        })
    };
    let tmp = crate::scratch::Scratch::new("detwasm-segment-", "a spot check's segment").map_err(
        |e| {
            SegmentFailure::Here(VerifyError::SegmentHere {
                segment: i,
                cause: e.to_string(),
            })
        },
    )?;
    runtime
        .run_segment(
            job,
            opened.as_ref().map(|o| &o.snapshot),
            &tmp.path().join("checkpoints"),
            &Destination::At(tmp.path().join("results")),
        )
        .map_err(|e| SegmentFailure::of(i, e))
}

/// What [`bisect`] found.
#[derive(Clone, Debug, Serialize)]
pub struct BisectReport {
    /// The segment re-run: the first at whose end the two traces disagree.
    pub segment: usize,
    /// What each receipt claims at its end, and what the re-run reached.
    pub claim_a: String,
    pub claim_b: String,
    pub actual: String,
    /// `a`, `b`, or `neither` (both wrong there); `both` only if the claims are the same
    /// (then the traces do not disagree).
    pub right: &'static str,
    pub seconds: f64,
}

/// What a receipt claims at the end of segment `i`: its snapshot `i + 1`, or past its
/// trace's end, its results.
fn claim(r: &Receipt, i: usize) -> String {
    let snapshots = r
        .trace
        .as_ref()
        .map(|t| t.snapshots.as_slice())
        .unwrap_or(&[]);
    match snapshots.get(i) {
        Some(cid) => cid.clone(),
        None => format!(
            "results {}, {} instructions, exit {}",
            r.cid, r.instructions, r.exit_code
        ),
    }
}

/// Finds where two traces of the same job disagree first and re-runs only that segment
/// (from the last snapshot they agree on, found in `snapshots`) to say which side is
/// right: the dispute of two providers (or a provider and a verifier) settled at the cost
/// of one segment.
pub fn bisect(
    runtime: &Runtime,
    a: &Receipt,
    b: &Receipt,
    snapshots: &Path,
    sources: &Sources,
) -> Result<BisectReport, VerifyError> {
    same_engine(runtime, a)?;
    same_engine(runtime, b)?;
    if a.job_id != b.job_id {
        return Err(VerifyError::NotComparable(format!(
            "they are of two jobs ({} and {})",
            a.job_id, b.job_id
        )));
    }
    let (ta, tb) = match (&a.trace, &b.trace) {
        (Some(ta), Some(tb)) => (ta, tb),
        _ => return Err(VerifyError::NoTrace),
    };
    same_frames(ta)?;
    same_frames(tb)?;
    if ta.every != tb.every {
        return Err(VerifyError::NotComparable(format!(
            "their checkpoints are every {} and every {} instructions",
            ta.every, tb.every
        )));
    }
    let common = ta
        .snapshots
        .iter()
        .zip(&tb.snapshots)
        .take_while(|(x, y)| x == y)
        .count();
    let segment = common;
    let (claim_a, claim_b) = (claim(a, segment), claim(b, segment));
    if claim_a == claim_b {
        return Err(VerifyError::NotComparable(
            "their traces and results agree: there is nothing to settle".into(),
        ));
    }
    let job = job_of(a, sources)?;
    let started = std::time::Instant::now();
    let ran = with_snapshots(snapshots, |source| {
        run_segment(runtime, &job, ta, source, segment)
    })
    .map_err(|e| match e {
        e @ RunError::Snapshot { .. } => VerifyError::NotComparable(e.to_string()),
        e => VerifyError::SnapshotsUnreadable {
            path: snapshots.to_path_buf(),
            cause: e.to_string(),
        },
    })?;
    let actual = match ran {
        Ok(Segment::Checkpoint { cid }) => cid,
        Ok(Segment::End(r)) if !r.verifiable => return Err(VerifyError::SegmentTimeout(segment)),
        Ok(Segment::End(r)) => format!(
            "results {}, {} instructions, exit {}",
            r.cid, r.instructions, r.exit_code
        ),
        Err(SegmentFailure::Evidence(why)) => return Err(VerifyError::NotComparable(why)),
        Err(SegmentFailure::Here(e)) => return Err(e),
    };
    let right = match (actual == claim_a, actual == claim_b) {
        (true, true) => "both",
        (true, false) => "a",
        (false, true) => "b",
        (false, false) => "neither",
    };
    Ok(BisectReport {
        segment,
        claim_a,
        claim_b,
        actual,
        right,
        seconds: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod spot_tests {
    use super::choose_segments;

    #[test]
    fn the_last_segment_is_always_checked_and_the_rest_are_drawn_by_the_seed() {
        assert_eq!(choose_segments(5, 9, 1), vec![0, 1, 2, 3, 4]);
        for seed in 0..50 {
            let c = choose_segments(101, 3, seed);
            assert_eq!(c.len(), 3);
            assert_eq!(*c.last().unwrap(), 100);
            assert!(c.windows(2).all(|w| w[0] < w[1]), "distinct: {c:?}");
            assert_eq!(c, choose_segments(101, 3, seed));
        }
        // Different seeds choose differently.
        let all: std::collections::BTreeSet<Vec<usize>> =
            (0..50).map(|s| choose_segments(101, 3, s)).collect();
        assert!(all.len() > 40);
    }
}
