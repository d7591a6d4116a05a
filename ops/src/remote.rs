//! Running a job on another machine: the job travels by content, its results come back
//! as a CAR. The Python package's Ray runner (`detwasm.ray`) is its user: the driver
//! [`pack`]s each job, a worker anywhere in the cluster runs it with [`run_portable`],
//! and the driver checks and writes the results with [`deliver`].
//!
//! What it is for: a worker that shares no filesystem with the driver runs exactly the
//! job the driver would have run — same job id, same results CID — and the driver writes
//! nothing it has not checked. What it is not: a scheduler (placement, retries and
//! ordering are Ray's and the Python layer's), nor a verifier of the run itself (see
//! below).
//!
//! Decisions, each with its reason and the alternative rejected:
//! - **Content, not paths.** The module's bytes, the stdin bytes and one CAR per input
//!   tree (hidden files included: the guest sees them) are shipped; a worker materialises
//!   the inputs in a scratch folder of its own. The job id depends only on content
//!   ([`detwasm_job::job`]), so the worker's run has the driver's job id. Rejected: sending
//!   host paths (every node would need the driver's filesystem, and a path names no
//!   content: a file changed on one node would silently be another job); a tar of each
//!   folder (nothing in it proves itself: a truncated or altered archive unpacks without
//!   a word, where every block of a CAR is checked against its CID).
//! - **What a worker trusts: nothing it has not checked.** The module must hash to the
//!   job's module CID, stdin to its blake3, every input block to its CID and each input
//!   tree to the job's input CID; then its own run must produce the driver's job id, so
//!   a worker with another detwasm version (another engine fingerprint) refuses before
//!   running.
//! - **What the driver trusts: the worker's run, and nothing about transport.** The
//!   receipt that comes back must be for the driver's job (job id, engine, module and
//!   input CIDs), every block of the results CAR must match its CID, and the folder
//!   written must hash to the receipt's results CID before it gets its final name
//!   ([`detwasm_runtime::deliver`]: staged, synced, renamed). The exit code and instruction count
//!   are the worker's word: re-running every job on the driver would double the work and
//!   defeat the cluster. The workers are the user's own machines; to check a result
//!   without trusting them, run `detwasm verify` on the receipt (that is what it is
//!   for).
//! - **The receipt the driver hands out is the one `detwasm batch` prints** for the same
//!   line in the same folder: the worker's scratch paths (module source, input hosts,
//!   results folder) are replaced by the driver's own paths as the job names them, so no
//!   field says where the job ran.

use std::sync::Arc;

use detwasm_hasher::unpack::{Car, UnpackError};
use detwasm_hasher::{Cid, HashError, Hasher, Options};
use serde::{Deserialize, Serialize};

use detwasm_job::error::RunError;
use detwasm_job::job::{Epoch, Input, Job, Limits, Module, Output, ResultsOptions};
use detwasm_job::receipt::Receipt;
use detwasm_job::results;
use detwasm_runtime::checkpoint::Snapshot;
use detwasm_runtime::deliver::{self, Durability};
use detwasm_runtime::engine::Deadline;
use detwasm_runtime::run::{Checkpointing, Destination, Runtime};

/// Room for what a results folder holds beyond its output quota: the `exitCode` file and
/// the line detwasm appends to `stderr` when a run does not exit (see
/// [`deliver::write_results`]).
const RESULTS_SLACK: u64 = 1 << 20;

/// A job as a worker receives it: everything that makes the job, with content named by
/// CID (the bytes travel beside it) and no host path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortableJob {
    /// The id the driver computed; the worker's run must have the same.
    pub job_id: String,
    /// The driver's engine fingerprint.
    pub engine: String,
    pub module_cid: String,
    /// The module as the job names it, for messages only (`running LABEL: ...`).
    pub label: String,
    pub argv0: String,
    pub entry: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub stdin_blake3: String,
    pub inputs: Vec<PortableInput>,
    pub outputs: Vec<Output>,
    pub seed: u64,
    pub epoch_unix_nanos: u64,
    pub limits: Limits,
    pub results: ResultsOptions,
}

/// An input tree by content: the CID of the tree the guest sees (hidden files included).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortableInput {
    pub guest: String,
    pub writable: bool,
    pub cid: String,
}

/// What the driver keeps of its own host to complete the receipt (never sent).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Local {
    /// The module path as the job names it (the receipt's `job.module`).
    pub module: Option<String>,
    /// Each input's host path as the job names it.
    pub input_hosts: Vec<String>,
    /// Bytes of the writable inputs' CARs: their trees come back as results volumes.
    pub writable_bytes: u64,
}

/// A job packed by the driver: the portable job and the content it names.
pub struct Packed {
    pub job: PortableJob,
    pub module: Arc<Vec<u8>>,
    pub stdin: Vec<u8>,
    /// One CAR per input, in the job's order, each rooted at the input's CID.
    pub inputs: Vec<Vec<u8>>,
    pub local: Local,
}

/// A job run by a worker: its receipt (with the worker's scratch paths) and its results
/// folder as a CARv1 of the whole folder, hidden files included (so that the driver can
/// write what `detwasm batch` writes even when the results CID leaves them out).
pub struct Ran {
    pub receipt: Receipt,
    pub car: Vec<u8>,
    /// With [`Checkpoints::resume`]: the instructions the job had run at the snapshot it
    /// went on from (work this run did not redo).
    pub resumed_at: Option<u64>,
}

/// Checkpoints of a job run by a worker ([`run_portable`]), kept away from the worker so
/// that a job whose node dies goes on from its last snapshot on another node instead of
/// starting again. The runtime must take checkpoints
/// ([`Runtime::with_checkpoints`]); the receipt is then the one `detwasm run
/// --checkpoint-every N --checkpoints DIR` gives (its trace names every snapshot), with
/// or without a resume on the way.
///
/// Rejected: a checkpoints folder shared by all nodes (Ray promises none, and a folder
/// on the dead node is lost with it); Ray's object store (an object lives on the node
/// that put it, so it dies with the node it should survive).
pub struct Checkpoints<'a> {
    /// The last snapshot of this job that a worker sent (a CAR rooted at its CID), to go
    /// on from. It is the user's own worker's, and checked as any snapshot is: its job
    /// id must be this job's and its state within the job's limits.
    pub resume: Option<&'a [u8]>,
    /// Receives each snapshot as a CAR rooted at its CID, in order, as it is saved.
    pub send: &'a (dyn Fn(Vec<u8>) + Sync),
}

/// Why a job could not be run remotely or its results not delivered.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The job could not run: the message `detwasm batch` gives (`running MODULE: ...`).
    #[error("running {label}: {cause}")]
    Run { label: String, cause: RunError },
    /// The worker runs another detwasm (another engine fingerprint).
    #[error("this worker's engine is {ours}, the job was packed by an engine {theirs}: install the same detwasm version on every node")]
    Engine { ours: String, theirs: String },
    /// Content that does not match the CID or hash the job names.
    #[error("{what} does not match the job: {reason}")]
    Content { what: String, reason: String },
    /// Results that do not check.
    #[error("the worker's results do not check: {0}")]
    Results(String),
    /// Writing checked results failed (nothing was delivered).
    #[error("delivering the results: {0}")]
    Deliver(RunError),
}

/// Packs `job` (as [`crate::batch::job_of`] made it) for a worker. `label` is the module
/// as the job names it. Hashes the module and inputs (the job id) and writes each input
/// tree as a CAR; an input that changes between the two is an error, not another job.
pub fn pack(runtime: &Runtime, job: &Job, label: &str) -> Result<Packed, RemoteError> {
    let run_err = |cause| RemoteError::Run {
        label: label.to_string(),
        cause,
    };
    // Hashing and packing stay inside the job's own wall-clock timeout, as a run's
    // hashing does: a jobs file naming a huge folder costs the driver at most that long.
    let deadline = Deadline::after(job.limits.safety_timeout());
    let prepared = runtime.prepare_by(job, deadline).map_err(run_err)?;
    let id = &prepared.identity;
    let opts = Options::profile(job.results.profile).with_hidden(true);
    let mut cars = Vec::with_capacity(job.inputs.len());
    let mut writable_bytes = 0u64;
    for (input, identity) in job.inputs.iter().zip(&id.inputs) {
        let root = std::fs::canonicalize(&input.host)
            .map_err(|e| run_err(RunError::io(format!("input {}", input.host.display()), e)))?;
        let mut car = Vec::new();
        let mut hasher = Hasher::new(opts.clone()).car(&mut car);
        if let Some(d) = deadline {
            hasher = hasher.deadline(d.at);
        }
        let hashed = hasher.hash_path(&root).map_err(|e| {
            run_err(match (e, deadline) {
                (HashError::Deadline, Some(d)) => RunError::InputTimeout {
                    what: format!("packing input {}", input.host.display()),
                    secs: d.timeout.as_secs_f64(),
                },
                (e, _) => RunError::Hash {
                    what: input.host.display().to_string(),
                    reason: e.to_string(),
                },
            })
        })?;
        if hashed.root.to_string() != identity.cid {
            return Err(run_err(RunError::Input {
                path: input.host.clone(),
                reason: "changed while it was being packed".into(),
            }));
        }
        if input.writable {
            writable_bytes = writable_bytes.saturating_add(car.len() as u64);
        }
        cars.push(car);
    }
    Ok(Packed {
        job: PortableJob {
            job_id: prepared.job_id.clone(),
            engine: runtime.fingerprint().to_string(),
            module_cid: id.module_cid.clone(),
            label: label.to_string(),
            argv0: job.argv0.clone(),
            entry: job.entry.clone(),
            args: job.args.clone(),
            env: job.env.clone(),
            stdin_blake3: id.stdin_blake3.clone(),
            inputs: job
                .inputs
                .iter()
                .zip(&id.inputs)
                .map(|(i, c)| PortableInput {
                    guest: i.guest.clone(),
                    writable: i.writable,
                    cid: c.cid.clone(),
                })
                .collect(),
            outputs: job.outputs.clone(),
            seed: job.seed,
            epoch_unix_nanos: job.epoch.unix_nanos,
            limits: job.limits,
            results: job.results,
        },
        module: job.module.bytes.clone(),
        stdin: job.stdin.clone(),
        inputs: cars,
        local: Local {
            module: job.module.source.clone(),
            input_hosts: job
                .inputs
                .iter()
                .map(|i| i.host.display().to_string())
                .collect(),
            writable_bytes,
        },
    })
}

/// Runs a packed job on this machine (a worker): checks the content against the job,
/// materialises the inputs in a scratch folder, runs, and returns the receipt and the
/// results folder as a CAR. The scratch folder is removed before returning (one left by
/// a worker killed meanwhile is removed by a later job, [`crate::scratch`]).
pub fn run_portable(
    runtime: &Runtime,
    job: &PortableJob,
    module: Vec<u8>,
    stdin: Vec<u8>,
    inputs: &[&[u8]],
    checkpoints: Option<&Checkpoints<'_>>,
) -> Result<Ran, RemoteError> {
    if job.engine != runtime.fingerprint() {
        return Err(RemoteError::Engine {
            ours: runtime.fingerprint().to_string(),
            theirs: job.engine.clone(),
        });
    }
    let run_err = |cause| RemoteError::Run {
        label: job.label.clone(),
        cause,
    };
    let profile = job.results.profile;
    let module_cid = results::cid_of_bytes(&module, profile).map_err(run_err)?;
    if module_cid != job.module_cid {
        return Err(RemoteError::Content {
            what: "the module".into(),
            reason: format!(
                "its CID is {module_cid}, the job's module is {}",
                job.module_cid
            ),
        });
    }
    let stdin_blake3 = blake3::hash(&stdin).to_hex().to_string();
    if stdin_blake3 != job.stdin_blake3 {
        return Err(RemoteError::Content {
            what: "stdin".into(),
            reason: format!(
                "its blake3 is {stdin_blake3}, the job's is {}",
                job.stdin_blake3
            ),
        });
    }
    if inputs.len() != job.inputs.len() {
        return Err(RemoteError::Content {
            what: "the inputs".into(),
            reason: format!("{} trees for {} inputs", inputs.len(), job.inputs.len()),
        });
    }
    // Locked: what a killed worker left is removed by the next job on that machine
    // (found by review: 949 MB per killed worker were left for good).
    let scratch =
        crate::scratch::Scratch::new("detwasm-remote-", "a worker's job").map_err(run_err)?;
    let mut mounts = Vec::with_capacity(inputs.len());
    for (i, (input, car)) in job.inputs.iter().zip(inputs).enumerate() {
        let what = || format!("input {}", input.guest);
        let content = |e: UnpackError| RemoteError::Content {
            what: what(),
            reason: e.to_string(),
        };
        let car = Car::parse(car).map_err(content)?;
        if car.root().to_string() != input.cid {
            return Err(RemoteError::Content {
                what: what(),
                reason: format!(
                    "the tree sent is {}, the job's is {}",
                    car.root(),
                    input.cid
                ),
            });
        }
        let host = scratch.path().join(format!("input-{i}"));
        // No budget: the trees come from the driver, whose jobs these are; bounding them
        // would protect no one from anyone.
        car.unpack(&host, u64::MAX).map_err(content)?;
        mounts.push(Input {
            host,
            guest: input.guest.clone(),
            writable: input.writable,
        });
    }
    let local_job = Job {
        module: Module {
            bytes: Arc::new(module),
            source: Some(job.label.clone()),
        },
        argv0: job.argv0.clone(),
        entry: job.entry.clone(),
        args: job.args.clone(),
        env: job.env.clone(),
        stdin,
        inputs: mounts,
        outputs: job.outputs.clone(),
        seed: job.seed,
        epoch: Epoch {
            unix_nanos: job.epoch_unix_nanos,
        },
        limits: job.limits,
        results: job.results,
    };
    let dest = scratch.path().join("results");
    let mut resumed_at = None;
    let staged = match checkpoints {
        None => runtime.run_staged(&local_job, &Destination::At(dest.clone())),
        Some(cp) => {
            let snapshot = match cp.resume {
                Some(car) => Some(snapshot_of(car, &local_job, scratch.path())?),
                None => None,
            };
            resumed_at = snapshot.as_ref().map(|s| s.state.instructions);
            let profile = job.results.profile;
            let send = |dir: &std::path::Path, cid: &str| {
                // Best effort: a snapshot not sent costs only work redone if this
                // worker is lost, never a result (the run goes on either way).
                let mut car = Vec::new();
                let packed = Hasher::new(Options::profile(profile).with_hidden(true))
                    .car(&mut car)
                    .hash_path(dir);
                if packed.is_ok_and(|h| h.root.to_string() == cid) {
                    (cp.send)(car);
                }
            };
            let save = scratch.path().join("checkpoints");
            let how = Checkpointing {
                save: Some(&save),
                resume: snapshot.as_ref(),
                only_last: true,
                on_saved: Some(&send),
            };
            runtime.run_staged_with(&local_job, &Destination::At(dest.clone()), &how)
        }
    };
    // The scratch copy needs no durability: the driver syncs what it delivers.
    let receipt = staged
        .and_then(|staged| staged.publish(Durability::Grouped))
        .map_err(run_err)?;
    if receipt.job_id != job.job_id {
        return Err(RemoteError::Content {
            what: "the job".into(),
            reason: format!(
                "this worker's run has job id {}, the driver's is {}",
                receipt.job_id, job.job_id
            ),
        });
    }
    let mut car = Vec::new();
    Hasher::new(Options::profile(profile).with_hidden(true))
        .car(&mut car)
        .hash_path(&dest)
        .map_err(|e| {
            run_err(RunError::Hash {
                what: "the results".into(),
                reason: e.to_string(),
            })
        })?;
    Ok(Ran {
        receipt,
        car,
        resumed_at,
    })
}

/// A snapshot CAR a worker of this job sent ([`Checkpoints::resume`]), unpacked into
/// `scratch` within the bounds of [`Snapshot::from_car`], and refused unless its job has
/// this job's limits (its job id is checked against the run's before it is used).
fn snapshot_of(car: &[u8], job: &Job, scratch: &std::path::Path) -> Result<Snapshot, RemoteError> {
    let bad = |reason: String| RemoteError::Content {
        what: "the snapshot to resume from".into(),
        reason,
    };
    let file = scratch.join("resume.car");
    std::fs::write(&file, car).map_err(|e| bad(e.to_string()))?;
    let admit = |s: &detwasm_runtime::checkpoint::State| {
        if s.job.limits == job.limits {
            Ok(())
        } else {
            Err("it is a snapshot of a job with other limits".to_string())
        }
    };
    let snapshot = Snapshot::from_car(&file, None, &scratch.join("resume"), &admit)
        .map_err(|e| bad(e.to_string()))?;
    let _ = std::fs::remove_file(&file);
    Ok(snapshot)
}

/// Checks a worker's receipt and results CAR against the packed job and delivers the
/// results at `dest` (staged, checked, synced, renamed: see [`detwasm_runtime::deliver`]). Returns
/// the receipt `detwasm batch` gives for the job: the driver's paths, the delivered
/// folder.
pub fn deliver(
    job: &PortableJob,
    local: &Local,
    mut receipt: Receipt,
    car: &[u8],
    dest: &Destination,
) -> Result<Receipt, RemoteError> {
    let bad = |m: String| Err(RemoteError::Results(m));
    if receipt.job_id != job.job_id || receipt.engine != job.engine {
        return bad(format!(
            "the receipt is for job {} (engine {}), the driver's job is {} (engine {})",
            receipt.job_id, receipt.engine, job.job_id, job.engine
        ));
    }
    let cids: Vec<&str> = receipt.job.inputs.iter().map(|i| i.cid.as_str()).collect();
    let ours: Vec<&str> = job.inputs.iter().map(|i| i.cid.as_str()).collect();
    if receipt.module_cid != job.module_cid
        || cids != ours
        || receipt.profile != job.results.profile
        || receipt.skip_hidden != job.results.skip_hidden
        || receipt.job.inputs.len() != local.input_hosts.len()
    {
        return bad("the receipt names other content than the job".into());
    }
    let car = Car::parse(car).map_err(|e| RemoteError::Results(e.to_string()))?;
    let expected = Cid::parse(&receipt.cid).ok_or_else(|| {
        RemoteError::Results(format!(
            "the receipt's results CID {} does not parse",
            receipt.cid
        ))
    })?;
    // With hidden files left out of the results CID, the CAR (which holds them) has
    // another root; the folder written is checked against the receipt's CID below.
    if !job.results.skip_hidden && car.root() != expected {
        return bad(format!(
            "the CAR holds {}, the receipt's results are {}",
            car.root(),
            receipt.cid
        ));
    }
    // A results folder holds at most the output quota plus the writable folders it
    // started from; each entry is charged as the quota charges it. Doubled: a bound
    // against a CAR that links blocks over and over, not an accounting.
    let budget = job
        .limits
        .max_output
        .saturating_add(local.writable_bytes)
        .saturating_mul(2)
        .saturating_add(RESULTS_SLACK);
    let profile = job.results.profile;
    let include_hidden = !job.results.skip_hidden;
    let staged = deliver::stage(dest, &job.job_id, |staging| {
        if let Err(e) = car.unpack(staging, budget) {
            return Ok(Err(e.to_string()));
        }
        let cid = results::cid_of_dir(staging, profile, include_hidden)?;
        Ok(if cid == receipt.cid {
            Ok(cid)
        } else {
            Err(format!(
                "the folder written hashes to {cid}, the receipt's results are {}",
                receipt.cid
            ))
        })
    })
    .map_err(RemoteError::Deliver)?;
    if let Err(e) = &staged.value {
        // Dropping the staged folder removes it: nothing unchecked is published.
        return bad(e.clone());
    }
    let (dir, _) = staged
        .publish(Durability::PerFile)
        .map_err(RemoteError::Deliver)?;
    receipt.results_dir = dir.display().to_string();
    receipt.job.module = local.module.clone();
    for (record, host) in receipt.job.inputs.iter_mut().zip(&local.input_hosts) {
        record.host = host.clone();
    }
    Ok(receipt)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{job_of, BatchOptions};
    use crate::request::JobRequest;
    use detwasm_runtime::engine::EngineOptions;
    use std::path::Path;

    /// Writes `hi` to stdout.
    const COPY: &str = r#"(module
      (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
      (memory (export "memory") 1)
      (data (i32.const 100) "hi\n")
      (func (export "_start")
        (i32.store (i32.const 8) (i32.const 100))
        (i32.store (i32.const 12) (i32.const 3))
        (drop (call $w (i32.const 1) (i32.const 8) (i32.const 1) (i32.const 0)))))"#;

    fn setup(t: &Path) -> (Runtime, BatchOptions) {
        std::fs::write(t.join("m.wat"), COPY).unwrap();
        std::fs::create_dir_all(t.join("in/sub")).unwrap();
        std::fs::write(t.join("in/sub/x"), b"x").unwrap();
        std::fs::write(t.join("in/.h"), b"hidden").unwrap();
        std::fs::create_dir_all(t.join("rw")).unwrap();
        std::fs::write(t.join("rw/.keep"), b"").unwrap();
        std::fs::write(t.join("stdin"), b"bytes in").unwrap();
        let opts = BatchOptions {
            parallel: 1,
            output_dir: t.join("out"),
            cwd: t.to_path_buf(),
            allow_inputs: Vec::new(),
            ipfs: Default::default(),
        };
        (Runtime::new(EngineOptions::default()).unwrap(), opts)
    }

    fn request(t: &Path, skip_hidden: bool) -> JobRequest {
        JobRequest {
            inputs: vec![t.join("in").display().to_string()],
            dirs: vec![format!("{}::/rw", t.join("rw").display())],
            stdin: Some(t.join("stdin")),
            skip_hidden,
            ..JobRequest::new(t.join("m.wat"))
        }
    }

    #[test]
    fn a_remote_run_gives_the_local_receipt_and_results() {
        let t = tempfile::tempdir().unwrap();
        let (rt, opts) = setup(t.path());
        for skip_hidden in [false, true] {
            let req = request(t.path(), skip_hidden);
            let planned = job_of(&req, &opts).unwrap();
            let (job, dest) = (planned.job, planned.dest);
            let local = rt.run(&job, &dest).unwrap();
            let packed = pack(&rt, &job, "m.wat").unwrap();
            assert_eq!(packed.job.job_id, local.job_id);
            // Through JSON, as it travels.
            let portable: PortableJob =
                serde_json::from_str(&serde_json::to_string(&packed.job).unwrap()).unwrap();
            let cars: Vec<&[u8]> = packed.inputs.iter().map(|c| &c[..]).collect();
            let ran = run_portable(
                &rt,
                &portable,
                packed.module.to_vec(),
                packed.stdin.clone(),
                &cars,
                None,
            )
            .unwrap();
            assert_ne!(ran.receipt.results_dir, local.results_dir);
            let remote = deliver(&portable, &packed.local, ran.receipt, &ran.car, &dest).unwrap();
            let mut expected = local.clone();
            expected.results_dir = remote.results_dir.clone();
            expected.host = remote.host.clone();
            assert_eq!(remote, expected, "skip_hidden {skip_hidden}");
            assert!(remote.results_dir.ends_with(&format!("{}-2", local.job_id)));
            // Hidden files are delivered even when the CID leaves them out.
            assert!(Path::new(&remote.results_dir).join("rw/.keep").exists());
        }
    }

    #[test]
    fn packing_stops_at_the_jobs_timeout() {
        let t = tempfile::tempdir().unwrap();
        let (rt, opts) = setup(t.path());
        let mut job = job_of(&request(t.path(), false), &opts).unwrap().job;
        job.limits.timeout = Some(std::time::Duration::from_nanos(1));
        let e = pack(&rt, &job, "m.wat").err().unwrap().to_string();
        assert!(e.contains("timeout"), "{e}");
        assert!(
            e.contains(&t.path().join("in").display().to_string()),
            "{e}"
        );
    }

    #[test]
    fn altered_content_and_results_are_refused_and_nothing_is_delivered() {
        let t = tempfile::tempdir().unwrap();
        let (rt, opts) = setup(t.path());
        let job = job_of(&request(t.path(), false), &opts).unwrap().job;
        let packed = pack(&rt, &job, "m.wat").unwrap();
        let cars: Vec<&[u8]> = packed.inputs.iter().map(|c| &c[..]).collect();
        let run = |module: Vec<u8>, stdin: Vec<u8>, cars: &[&[u8]]| {
            run_portable(&rt, &packed.job, module, stdin, cars, None)
                .err()
                .map(|e| e.to_string())
        };
        let e = run(b"(module)".to_vec(), packed.stdin.clone(), &cars).unwrap();
        assert!(e.starts_with("the module does not match the job"), "{e}");
        let e = run(packed.module.to_vec(), b"other".to_vec(), &cars).unwrap();
        assert!(e.starts_with("stdin does not match"), "{e}");
        let swapped = [cars[1], cars[0]];
        let e = run(packed.module.to_vec(), packed.stdin.clone(), &swapped).unwrap();
        assert!(e.starts_with("input /inputs does not match"), "{e}");
        let mut other = packed.job.clone();
        other.engine = "blake3:other".into();
        let e = run_portable(
            &rt,
            &other,
            packed.module.to_vec(),
            packed.stdin.clone(),
            &cars,
            None,
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("install the same detwasm version"), "{e}");

        let ran = run_portable(
            &rt,
            &packed.job,
            packed.module.to_vec(),
            packed.stdin.clone(),
            &cars,
            None,
        )
        .unwrap();
        let out = t.path().join("delivered");
        let dest = Destination::Under(out.clone());
        let mut car = ran.car.clone();
        let last = car.len() - 1;
        car[last] ^= 1;
        let e = deliver(&packed.job, &packed.local, ran.receipt.clone(), &car, &dest).unwrap_err();
        assert!(e.to_string().contains("corrupt CAR"), "{e}");
        let mut lying = ran.receipt.clone();
        lying.cid = results::cid_of_bytes(b"", lying.profile).unwrap();
        let e = deliver(&packed.job, &packed.local, lying, &ran.car, &dest).unwrap_err();
        assert!(e.to_string().contains("the receipt's results are"), "{e}");
        let mut other_job = ran.receipt.clone();
        other_job.job_id = "0".repeat(64);
        assert!(deliver(&packed.job, &packed.local, other_job, &ran.car, &dest).is_err());
        let left: Vec<_> = std::fs::read_dir(&out)
            .map(|d| d.collect())
            .unwrap_or_default();
        assert!(
            left.is_empty(),
            "nothing delivered, no staging left: {left:?}"
        );
        deliver(&packed.job, &packed.local, ran.receipt, &ran.car, &dest).unwrap();
    }

    /// Counts to 300,000, then writes `hi`: several checkpoints at 100,000 instructions.
    const LOOP: &str = r#"(module
      (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
      (memory (export "memory") 1)
      (data (i32.const 100) "hi\n")
      (func (export "_start") (local $i i32)
        (loop $l
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (i32.store (i32.const 200) (local.get $i))
          (br_if $l (i32.lt_u (local.get $i) (i32.const 300000))))
        (i32.store (i32.const 8) (i32.const 100))
        (i32.store (i32.const 12) (i32.const 3))
        (drop (call $w (i32.const 1) (i32.const 8) (i32.const 1) (i32.const 0)))))"#;

    #[test]
    fn a_job_goes_on_from_a_snapshot_another_worker_sent_with_the_same_receipt() {
        let t = tempfile::tempdir().unwrap();
        let (_, opts) = setup(t.path());
        std::fs::write(t.path().join("loop.wat"), LOOP).unwrap();
        // Refuels (and so checkpoints) every 10,000 instructions.
        let rt = Runtime::new(EngineOptions::default())
            .unwrap()
            .with_fuel_slice(10_000)
            .with_checkpoints(100_000);
        let req = JobRequest {
            inputs: vec![t.path().join("in").display().to_string()],
            ..JobRequest::new(t.path().join("loop.wat"))
        };
        let job = job_of(&req, &opts).unwrap().job;
        let packed = pack(&rt, &job, "loop.wat").unwrap();
        let cars: Vec<&[u8]> = packed.inputs.iter().map(|c| &c[..]).collect();
        let sent = std::sync::Mutex::new(Vec::new());
        let send = |car: Vec<u8>| sent.lock().unwrap().push(car);
        let run = |resume: Option<&[u8]>| {
            let cp = Checkpoints {
                resume,
                send: &send,
            };
            let m = packed.module.to_vec();
            run_portable(&rt, &packed.job, m, packed.stdin.clone(), &cars, Some(&cp))
        };
        let whole = run(None).unwrap();
        assert_eq!(whole.resumed_at, None);
        let trace = whole.receipt.trace.clone().unwrap();
        let snapshots = std::mem::take(&mut *sent.lock().unwrap());
        assert!(snapshots.len() >= 3, "{} snapshots", snapshots.len());
        // Each sent snapshot is the CAR of the trace's snapshot of its number.
        for (car, cid) in snapshots.iter().zip(&trace.snapshots) {
            assert_eq!(Car::parse(car).unwrap().root().to_string(), *cid);
        }
        // A worker that died after sending the second: the next goes on from it.
        let resumed = run(Some(&snapshots[1])).unwrap();
        let at = resumed.resumed_at.unwrap();
        assert!(at > 0 && at < whole.receipt.instructions, "{at}");
        // The same receipt but for the worker's scratch paths (the driver replaces them).
        let mut expected = whole.receipt.clone();
        expected.results_dir = resumed.receipt.results_dir.clone();
        expected.host = resumed.receipt.host.clone();
        expected.job.inputs = resumed.receipt.job.inputs.clone();
        assert_eq!(resumed.receipt, expected);
        assert_eq!(resumed.car, whole.car);
        // Only the snapshots after the one resumed were sent again.
        assert_eq!(sent.lock().unwrap().len(), snapshots.len() - 2);

        // A snapshot of another job is refused, not resumed.
        let mut other = job.clone();
        other.seed += 1;
        let other_packed = pack(&rt, &other, "loop.wat").unwrap();
        let cp = Checkpoints {
            resume: Some(&snapshots[1]),
            send: &send,
        };
        let m = other_packed.module.to_vec();
        let stdin = other_packed.stdin.clone();
        let e = run_portable(&rt, &other_packed.job, m, stdin, &cars, Some(&cp))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("job"), "{e}");
    }
}
