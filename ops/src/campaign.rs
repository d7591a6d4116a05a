//! `detwasm fuzz`: a determinism campaign for one job, and what the job depends on.
//!
//! What it is for: a module author, before publishing, runs the same job many times, each
//! under a different host perturbation that must not matter — inputs copied elsewhere in
//! another creation order with other mtimes, disk or tmpfs, the compiled-module cache
//! cold, warm or off, serial compilation, a busy CPU, copies of the job running
//! concurrently in one process, and another process with another environment, time zone,
//! locale and working folder — and learns whether the results CID, the instruction count
//! or the exit status ever differ, and in which files. With [`Param`]s to vary, it also
//! changes job parameters on purpose (seed, epoch, env, args, inputs) and reports which
//! the output depends on ("you read random bytes"), before a verifier finds out.
//!
//! What it is not: proof. A campaign finds the non-determinism these perturbations reach;
//! the runtime's contract tests and the self-fuzzer cover the rest. Perturbations that can
//! legitimately change a result are left out on purpose: Cranelift's optimisation level
//! changes native frame sizes and so the depth at which a deep recursion overflows.
//!
//! The module is compiled once per engine configuration and reused (a `Runtime` keeps
//! what it loaded); only the cache perturbations compile again, since the cache is what
//! they perturb.
//!
//! With a runtime that takes checkpoints ([`Runtime::with_checkpoints`]), every run in
//! the process saves its snapshots beside its results, and a run that differs from the
//! baseline (or a varied parameter that changes the output) is located: the first
//! segment between two checkpoints whose end state differs, and what differs there
//! ([`crate::divergence`]). The other-process run saves none (it is a `detwasm verify`)
//! and is not located. Checkpoints change no result, so a campaign with them finds the
//! same divergences as one without.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde::Serialize;

use crate::divergence::{self, Divergence, Snapshots};
use crate::verify::{diff_folders, Difference};
use detwasm_job::error::RunError;
use detwasm_job::job::{Input, Job};
use detwasm_job::receipt::Receipt;
use detwasm_runtime::deliver::Durability;
use detwasm_runtime::engine::EngineOptions;
use detwasm_runtime::run::{Checkpointing, Destination, Runtime};
use detwasm_runtime::wasi::host::Asked;

/// A job parameter the campaign can vary on purpose.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Param {
    /// The seed of `random_get` (+1).
    Seed,
    /// The clock epoch (+1 year).
    Epoch,
    /// The environment: every value changed and one variable added.
    Env,
    /// The arguments: one argument appended.
    Args,
    /// The inputs: a file added to each input folder (in a copy).
    Inputs,
}

impl Param {
    pub const ALL: [Param; 5] = [
        Param::Seed,
        Param::Epoch,
        Param::Env,
        Param::Args,
        Param::Inputs,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Param::Seed => "seed",
            Param::Epoch => "epoch",
            Param::Env => "env",
            Param::Args => "args",
            Param::Inputs => "inputs",
        }
    }

    /// The host calls through which the output can depend on this parameter, from what
    /// a run `asked` (empty when none did, or none lead to it): random bytes for the
    /// seed, the clocks for the epoch, directory listings for the inputs.
    pub fn calls(self, asked: &Asked) -> Vec<String> {
        let only = match self {
            Param::Seed => Asked {
                random_calls: asked.random_calls,
                random_bytes: asked.random_bytes,
                ..Asked::default()
            },
            Param::Epoch => Asked {
                wall_clock: asked.wall_clock,
                monotonic_clock: asked.monotonic_clock,
                clock_waits: asked.clock_waits,
                ..Asked::default()
            },
            Param::Inputs => Asked {
                dir_listings: asked.dir_listings,
                ..Asked::default()
            },
            Param::Env | Param::Args => Asked::default(),
        };
        only.describe()
    }

    /// How many values of it a campaign tries, until one changes the output: four seeds,
    /// two epochs (a year on, a second on), one change of the others.
    pub fn variants(self) -> usize {
        match self {
            Param::Seed => 4,
            Param::Epoch => 2,
            Param::Env | Param::Args | Param::Inputs => 1,
        }
    }

    /// Parses `seed,epoch,env,args,inputs` (any subset, any order).
    pub fn parse_list(s: &str) -> Result<Vec<Param>, String> {
        s.split(',')
            .filter(|p| !p.trim().is_empty())
            .map(|p| {
                Param::ALL
                    .into_iter()
                    .find(|x| x.name() == p.trim())
                    .ok_or_else(|| {
                        format!(
                            "unknown parameter `{p}` (expected seed, epoch, env, args or inputs)"
                        )
                    })
            })
            .collect()
    }
}

/// A progress callback: (runs done, runs in all, what was perturbed).
pub type Progress<'a> = dyn Fn(usize, usize, &str) + Sync + 'a;

/// How a campaign is run.
pub struct Campaign<'a> {
    /// Runs of the job, each under the next perturbation (cycling through them).
    pub runs: usize,
    /// Parameters to vary on purpose.
    pub vary: Vec<Param>,
    /// The detwasm executable, for the perturbation that needs another process; `None`
    /// skips it.
    pub exe: Option<PathBuf>,
    /// Called after each run with (runs done, runs in all, what was perturbed).
    pub progress: Option<&'a Progress<'a>>,
}

/// One run of the campaign.
#[derive(Clone, Debug, Serialize)]
pub struct RunRecord {
    /// What was perturbed.
    pub perturbation: String,
    pub cid: String,
    pub instructions: u64,
    pub exit_code: i32,
    pub outcome: String,
    /// Differs from the baseline (CID, instruction count, exit code or outcome).
    pub divergent: bool,
    /// Files that differ from the baseline's results.
    pub files: Vec<Difference>,
    /// Where it first differs from the baseline, when both took checkpoints.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diverged_at: Option<Divergence>,
}

/// What varying one parameter did.
#[derive(Clone, Debug, Serialize)]
pub struct Sensitivity {
    pub param: Param,
    /// The output (CID, instruction count or exit) changed.
    pub sensitive: bool,
    /// What was changed, in words: the value that changed the output, or every value
    /// tried when none did ([`VARIANTS`]).
    pub change: String,
    /// What of the output changed: `results` (the CID), `instructions` and `exit`, each
    /// with the two values, e.g. `instructions 903114820 -> 903114865`.
    pub changed: Vec<String>,
    /// Files whose content changed.
    pub files: Vec<String>,
    /// For the text files among them: the first line that changed, as `PATH: line N:
    /// -baseline / +varied` (what `verify` shows for a file that differs).
    pub lines: Vec<String>,
    /// Where the output first depends on it, when the runs took checkpoints.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diverged_at: Option<Divergence>,
}

/// The campaign's findings.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub runs: usize,
    pub divergent: bool,
    /// The first run's result, the reference of all others.
    pub baseline: RunRecord,
    /// The runs that diverged from the baseline, with the files that differ.
    pub differences: Vec<RunRecord>,
    /// Every run (the baseline first).
    pub all_runs: Vec<RunRecord>,
    /// Names of the varied parameters the output depends on.
    pub sensitive_to: Vec<Param>,
    pub sensitivity: Vec<Sensitivity>,
    /// What the baseline run asked the host for that results may depend on: the clocks
    /// (the job's epoch), random bytes (its seed), directory listings.
    pub asked: Asked,
}

/// The host perturbations, in the order runs take them.
const PERTURBATIONS: &[&str] = &[
    "baseline",
    "inputs copied elsewhere on disk, created in reverse order, other mtimes",
    "inputs and results on tmpfs (/dev/shm)",
    "compiled-module cache cold (compiled and stored)",
    "compiled-module cache warm (loaded, not compiled)",
    "no cache, serial compilation",
    "busy CPU (spinning threads beside the run)",
    "4 copies of the job at once in one process",
    "another process: other environment, TZ, locale, working folder",
];

/// Runs the campaign for `job` with `runtime` (the baseline engine).
pub fn run_campaign(runtime: &Runtime, job: &Job, c: &Campaign) -> Result<Report, RunError> {
    // Locked scratch folders: a campaign killed part-way leaves them to the next one to
    // remove (found by review: a killed `fuzz` left 51 MB in /tmp and in /dev/shm).
    let work = crate::scratch::Scratch::new("detwasm-fuzz-", "the campaign's runs")?;
    let runs = c.runs.max(1);
    let total = runs + c.vary.len();
    let mut records: Vec<(RunRecord, PathBuf)> = Vec::new();
    let mut base_receipt: Option<Receipt> = None;
    let mut asked = Asked::default();
    let mut done = 0;
    for i in 0..runs {
        let mut kind = i % PERTURBATIONS.len();
        if kind == PERTURBATIONS.len() - 1 && c.exe.is_none() {
            kind = 1;
        }
        let here = work.path().join(format!("run-{i}"));
        std::fs::create_dir_all(&here).map_err(|e| RunError::io("creating a run folder", e))?;
        let (receipt, results) =
            perturbed_run(runtime, job, kind, &here, c, records.first(), &mut asked)?;
        // Kept beside the results: the other-process perturbation re-runs the baseline's
        // receipt.
        let json = serde_json::to_vec_pretty(&receipt).expect("a receipt serializes");
        std::fs::write(here.join("receipt.json"), json)
            .map_err(|e| RunError::io("writing a run's receipt", e))?;
        let mut record = RunRecord {
            perturbation: if i < PERTURBATIONS.len() {
                PERTURBATIONS[kind].to_string()
            } else {
                format!("{} (again, run {i})", PERTURBATIONS[kind])
            },
            cid: receipt.cid.clone(),
            instructions: receipt.instructions,
            exit_code: receipt.exit_code,
            outcome: receipt.outcome.clone(),
            divergent: false,
            files: Vec::new(),
            diverged_at: None,
        };
        if let (Some((base, base_dir)), Some(base_receipt)) = (records.first(), &base_receipt) {
            record.divergent = record.cid != base.cid
                || record.instructions != base.instructions
                || record.exit_code != base.exit_code
                || record.outcome != base.outcome;
            if record.cid != base.cid {
                record.files = differing(base_dir, &results, job)?;
            }
            if record.divergent {
                record.diverged_at = located(runtime, base_dir, base_receipt, &here, &receipt)?;
            }
        } else {
            base_receipt = Some(receipt);
        }
        done += 1;
        if let Some(p) = c.progress {
            p(done, total, &record.perturbation);
        }
        records.push((record, results));
    }
    let (baseline, base_dir) = records[0].clone();
    let base_receipt = base_receipt.expect("the baseline ran");
    let mut sensitivity = Vec::new();
    for &param in &c.vary {
        // Several values of the parameter, until one changes the output: one other seed
        // misses a dependence half the time (a two-key hash map's order), four miss it
        // one time in sixteen. Found by use: `--vary seed` tried one.
        // What of the output a run changed against the baseline (empty: nothing).
        let what_changed = |r: &Receipt| {
            let mut changed = Vec::new();
            if r.cid != baseline.cid {
                changed.push("results".to_string());
            }
            if r.instructions != baseline.instructions {
                changed.push(format!(
                    "instructions {} -> {}",
                    baseline.instructions, r.instructions
                ));
            }
            if r.exit_code != baseline.exit_code {
                changed.push(format!("exit {} -> {}", baseline.exit_code, r.exit_code));
            }
            changed
        };
        let mut tried = Vec::new();
        let (mut here, mut r, mut change, mut changed);
        let mut k = 0;
        loop {
            here = work.path().join(format!("vary-{}-{k}", param.name()));
            std::fs::create_dir_all(&here).map_err(|e| RunError::io("creating a run folder", e))?;
            let (varied, what) = vary(job, param, &here, k)?;
            change = what;
            r = run_at(runtime, &varied, &here.join("results"), &here)?;
            tried.push(change.clone());
            changed = what_changed(&r);
            k += 1;
            if !changed.is_empty() || k >= VARIANTS.min(param.variants()) {
                break;
            }
        }
        let results = here.join("results");
        let sensitive = !changed.is_empty();
        if !sensitive {
            change = tried.join("; ");
        }
        let diverged_at = if sensitive {
            located(runtime, &base_dir, &base_receipt, &here, &r)?
        } else {
            None
        };
        let (files, lines) = if r.cid != baseline.cid {
            let diffs = differing(&base_dir, &results, job)?;
            let lines = diffs
                .iter()
                .filter_map(|d| d.text.as_ref().map(|t| format!("{}: {t}", d.path)))
                .collect();
            (diffs.into_iter().map(|d| d.path).collect(), lines)
        } else {
            (Vec::new(), Vec::new())
        };
        done += 1;
        if let Some(p) = c.progress {
            p(done, total, &format!("vary {}", param.name()));
        }
        sensitivity.push(Sensitivity {
            param,
            sensitive,
            change,
            changed,
            files,
            lines,
            diverged_at,
        });
    }
    let all_runs: Vec<RunRecord> = records.into_iter().map(|r| r.0).collect();
    let differences: Vec<RunRecord> = all_runs.iter().filter(|r| r.divergent).cloned().collect();
    Ok(Report {
        runs,
        divergent: !differences.is_empty(),
        baseline,
        differences,
        all_runs,
        sensitive_to: sensitivity
            .iter()
            .filter(|s| s.sensitive)
            .map(|s| s.param)
            .collect(),
        sensitivity,
        asked,
    })
}

/// Runs `job` into `results`, saving its snapshots into `here/checkpoints` when
/// `runtime` takes checkpoints.
fn run_at(runtime: &Runtime, job: &Job, results: &Path, here: &Path) -> Result<Receipt, RunError> {
    run_asked(runtime, job, results, here).map(|(r, _)| r)
}

/// [`run_at`], with what the guest asked the host for ([`Asked`]).
fn run_asked(
    runtime: &Runtime,
    job: &Job,
    results: &Path,
    here: &Path,
) -> Result<(Receipt, Asked), RunError> {
    let save = runtime.checkpoint_every().map(|_| here.join(CHECKPOINTS));
    let how = Checkpointing {
        save: save.as_deref(),
        resume: None,
        only_last: false,
        on_saved: None,
    };
    let staged = runtime.run_staged_with(job, &Destination::At(results.to_path_buf()), &how)?;
    let asked = staged.asked();
    Ok((staged.publish(Durability::PerFile)?, asked))
}

/// The folder of a run's snapshots, beside its results.
const CHECKPOINTS: &str = "checkpoints";

/// Where the run whose results are in `here` first differs from the baseline, whose
/// results are `base_results`; `None` without checkpoints (or for the other-process
/// run, which saves none).
fn located(
    runtime: &Runtime,
    base_results: &Path,
    base: &Receipt,
    here: &Path,
    receipt: &Receipt,
) -> Result<Option<Divergence>, RunError> {
    let base_here = base_results.parent().unwrap_or(base_results);
    let (a, b) = (base_here.join(CHECKPOINTS), here.join(CHECKPOINTS));
    if runtime.checkpoint_every().is_none() || !a.is_dir() || !b.is_dir() {
        return Ok(None);
    }
    divergence::locate(
        &Snapshots {
            dir: &a,
            receipt: base,
        },
        &Snapshots { dir: &b, receipt },
    )
}

fn differing(a: &Path, b: &Path, job: &Job) -> Result<Vec<Difference>, RunError> {
    diff_folders(
        a,
        b,
        job.results.profile,
        !job.results.skip_hidden,
        job.limits.safety_timeout(),
    )
    .map(|d| d.differences)
    .map_err(|e| RunError::Hash {
        what: "results of the campaign".into(),
        reason: e.to_string(),
    })
}

/// Runs `job` under perturbation `kind` in folder `here`; returns its receipt and where
/// its results are.
fn perturbed_run(
    runtime: &Runtime,
    job: &Job,
    kind: usize,
    here: &Path,
    c: &Campaign,
    baseline: Option<&(RunRecord, PathBuf)>,
    asked: &mut Asked,
) -> Result<(Receipt, PathBuf), RunError> {
    let results = here.join("results");
    // A runtime of another engine configuration takes the same checkpoints.
    let engine = |cache_dir: Option<PathBuf>, parallel: bool| {
        let r = Runtime::new(EngineOptions {
            cache_dir,
            parallel_compilation: parallel,
        })?
        .with_fuel_slice(runtime.fuel_slice());
        Ok::<_, RunError>(match runtime.checkpoint_every() {
            Some(every) => r.with_checkpoints(every),
            None => r,
        })
    };
    let receipt = match kind {
        0 => {
            let (r, a) = run_asked(runtime, job, &results, here)?;
            *asked = a;
            r
        }
        1 => {
            let moved = with_copied_inputs(job, &here.join("inputs"))?;
            run_at(runtime, &moved, &results, here)?
        }
        2 => {
            let shm = Path::new("/dev/shm");
            let what = "a run's inputs and results on tmpfs";
            let base = if shm.is_dir() {
                crate::scratch::Scratch::new_in(shm, "detwasm-fuzz-", what)
            } else {
                crate::scratch::Scratch::new("detwasm-fuzz-", what)
            }?;
            let moved = with_copied_inputs(job, &base.path().join("inputs"))?;
            let r = run_at(runtime, &moved, &base.path().join("results"), here)?;
            // Results are within the job's output quota (and its writable folders' files,
            // also within it): no budget beyond that.
            let mut unbounded = u64::MAX;
            copy_tree(
                &base.path().join("results"),
                &results,
                false,
                &mut unbounded,
            )
            .map_err(|e| RunError::io("copying tmpfs results", e))?;
            r
        }
        3 | 4 => {
            // Cold: a fresh cache folder; warm: the folder the cold run filled (a new
            // Runtime, so the module comes from the cache file, not from memory).
            let cache = here.parent().unwrap_or(here).join("module-cache");
            run_at(&engine(Some(cache), true)?, job, &results, here)?
        }
        5 => run_at(&engine(None, false)?, job, &results, here)?,
        6 => {
            let stop = Arc::new(AtomicBool::new(false));
            let spinners: Vec<_> = (0..2)
                .map(|_| {
                    let stop = stop.clone();
                    std::thread::spawn(move || {
                        let mut x = 0u64;
                        while !stop.load(Ordering::Relaxed) {
                            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                            std::hint::black_box(x);
                        }
                    })
                })
                .collect();
            let r = run_at(runtime, job, &results, here);
            stop.store(true, Ordering::Relaxed);
            for s in spinners {
                let _ = s.join();
            }
            r?
        }
        7 => {
            let outcomes: Vec<Result<Receipt, RunError>> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..4)
                    .map(|k| {
                        let copy = here.join(format!("copy-{k}"));
                        s.spawn(move || run_at(runtime, job, &copy.join("results"), &copy))
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join()
                            .unwrap_or_else(|_| Err(RunError::Engine("a run panicked".into())))
                    })
                    .collect()
            });
            let mut first: Option<Receipt> = None;
            for (k, r) in outcomes.into_iter().enumerate() {
                let r = r?;
                match &first {
                    // A copy that disagrees with the first copy is what is reported.
                    Some(f) if f.cid != r.cid || f.instructions != r.instructions => {
                        keep_copy(here, k, &results)?;
                        return Ok((r, results));
                    }
                    Some(_) => {}
                    None => first = Some(r),
                }
            }
            keep_copy(here, 0, &results)?;
            first.expect("four copies ran")
        }
        _ => {
            let exe = c.exe.as_ref().expect("checked by the caller");
            let base = baseline.expect("the baseline runs first");
            other_process(exe, job, here, &base.1, &results)?
        }
    };
    Ok((receipt, results))
}

/// Keeps copy `k` of the four-copies run as the run's results (and snapshots).
fn keep_copy(here: &Path, k: usize, results: &Path) -> Result<(), RunError> {
    let copy = here.join(format!("copy-{k}"));
    std::fs::rename(copy.join("results"), results)
        .map_err(|e| RunError::io("keeping a copy's results", e))?;
    let snapshots = copy.join(CHECKPOINTS);
    if snapshots.is_dir() {
        std::fs::rename(&snapshots, here.join(CHECKPOINTS))
            .map_err(|e| RunError::io("keeping a copy's snapshots", e))?;
    }
    Ok(())
}

/// The most bytes of input files the campaign copies for one run (the moved-inputs and
/// tmpfs perturbations): 1 GiB, counted by file size before each copy. Found by review:
/// a 3 GiB sparse input (4 KB on disk) filled 3 GiB of /dev/shm, which is RAM, and 3 GiB
/// more under /tmp. Rejected: no cap (the copy's cost was the input's apparent size,
/// whatever it took on disk).
pub const MAX_COPIED_INPUT_BYTES: u64 = 1 << 30;

/// The job with every input copied under `to`: entries created in reverse name order,
/// files given old and differing mtimes. What the guest sees must not change. At most
/// [`MAX_COPIED_INPUT_BYTES`] are copied, all inputs together.
fn with_copied_inputs(job: &Job, to: &Path) -> Result<Job, RunError> {
    let mut budget = MAX_COPIED_INPUT_BYTES;
    let mut moved = job.clone();
    moved.inputs = job
        .inputs
        .iter()
        .enumerate()
        .map(|(i, input)| {
            let dest = to.join(format!("input-{i}"));
            let src = std::fs::canonicalize(&input.host)
                .map_err(|e| RunError::io(format!("input {}", input.host.display()), e))?;
            copy_tree(&src, &dest, true, &mut budget)
                .map_err(|e| RunError::io(format!("copying input {}", input.host.display()), e))?;
            Ok(Input {
                host: dest,
                guest: input.guest.clone(),
                writable: input.writable,
            })
        })
        .collect::<Result<_, RunError>>()?;
    Ok(moved)
}

/// Copies a tree (symlinks as symlinks), its files' sizes charged to `budget` before
/// each is copied (an error past it). With `perturb`, entries are created in reverse name
/// order and files get mtimes from 1990 on, one hour apart.
fn copy_tree(from: &Path, to: &Path, perturb: bool, budget: &mut u64) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    let mut entries: Vec<_> = std::fs::read_dir(from)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    if perturb {
        entries.reverse();
    }
    for (i, e) in entries.iter().enumerate() {
        let (src, dst) = (e.path(), to.join(e.file_name()));
        let ft = e.file_type()?;
        if ft.is_dir() {
            copy_tree(&src, &dst, perturb, budget)?;
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src)?, &dst)?;
        } else {
            let len = e.metadata()?.len();
            *budget = budget.checked_sub(len).ok_or_else(|| {
                std::io::Error::other(format!(
                    "{}: the campaign copies at most {MAX_COPIED_INPUT_BYTES} bytes of \
                     inputs for a run, and this file takes it past that",
                    src.display()
                ))
            })?;
            std::fs::copy(&src, &dst)?;
            if perturb {
                let t = std::time::UNIX_EPOCH
                    + std::time::Duration::from_secs(631_152_000 + 3600 * i as u64);
                std::fs::File::options()
                    .write(true)
                    .open(&dst)?
                    .set_modified(t)?;
            }
        }
    }
    Ok(())
}

/// Re-runs the baseline's job in another detwasm process (`detwasm verify` of the
/// baseline's receipt, which rebuilds the job from it), with a cleared environment, other
/// TZ and locale, noise variables and another working folder.
fn other_process(
    exe: &Path,
    job: &Job,
    here: &Path,
    baseline_results: &Path,
    results: &Path,
) -> Result<Receipt, RunError> {
    let io = |what: &str| {
        let what = what.to_string();
        move |e| RunError::io(what, e)
    };
    let base_receipt = baseline_results
        .parent()
        .map(|p| p.join("receipt.json"))
        .ok_or_else(|| RunError::Engine("no baseline receipt".into()))?;
    let module = here.join("module.wasm");
    std::fs::write(&module, job.module.bytes.as_slice()).map_err(io("writing the module"))?;
    let stdin = here.join("stdin");
    std::fs::write(&stdin, &job.stdin).map_err(io("writing stdin"))?;
    let cwd = here.join("elsewhere");
    std::fs::create_dir_all(&cwd).map_err(io("creating a working folder"))?;
    let mut cmd = Command::new(exe);
    cmd.env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("TZ", "Pacific/Chatham")
        .env("LANG", "de_DE.UTF-8")
        .env("LC_ALL", "tr_TR.UTF-8")
        .env("HOME", &cwd)
        .env("DETWASM_CACHE_DIR", here.join("cache"))
        .env("DETWASM_FUZZ_NOISE", "x".repeat(4096))
        .current_dir(&cwd)
        .arg("verify")
        .arg(&base_receipt)
        .arg("--json")
        .arg("--keep")
        .arg(results)
        .arg("--module")
        .arg(&module)
        .arg("--stdin")
        .arg(&stdin);
    for input in &job.inputs {
        let host = std::fs::canonicalize(&input.host).map_err(io("input"))?;
        cmd.arg("--input")
            .arg(format!("{}:{}", host.display(), input.guest));
    }
    let out = cmd
        .output()
        .map_err(io("starting another detwasm process"))?;
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|_| {
        RunError::Engine(format!(
            "the other detwasm process failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    })?;
    let mut receipt: Receipt = serde_json::from_slice(
        &std::fs::read(&base_receipt).map_err(io("reading the baseline receipt"))?,
    )
    .map_err(|e| RunError::Engine(e.to_string()))?;
    let field = |k: &str| report.get(k).cloned().unwrap_or_default();
    receipt.cid = field("cid_actual").as_str().unwrap_or_default().to_string();
    receipt.instructions = field("instructions_actual").as_u64().unwrap_or_default();
    receipt.exit_code = field("exit_code_actual").as_i64().unwrap_or_default() as i32;
    receipt.outcome = field("outcome_actual")
        .as_str()
        .map(str::to_string)
        .unwrap_or(receipt.outcome);
    Ok(receipt)
}

/// The most values of one parameter a campaign tries ([`Param::variants`]).
pub const VARIANTS: usize = 4;

/// The job with `param` changed (its `k`-th variant, `k` below [`Param::variants`]), and
/// the change in words.
fn vary(job: &Job, param: Param, here: &Path, k: usize) -> Result<(Job, String), RunError> {
    let mut j = job.clone();
    let change = match param {
        Param::Seed => {
            // Three neighbours, then one far away (every bit flipped).
            j.seed = match k {
                0..=2 => j.seed.wrapping_add(k as u64 + 1),
                _ => !j.seed,
            };
            format!("seed {} -> {}", job.seed, j.seed)
        }
        Param::Epoch => {
            let (ns, words) = match k {
                0 => (365 * 86_400 * 1_000_000_000, "epoch + 365 days"),
                _ => (1_000_000_000, "epoch + 1 s"),
            };
            j.epoch.unix_nanos = j.epoch.unix_nanos.saturating_add(ns);
            words.into()
        }
        Param::Env => {
            for (_, v) in &mut j.env {
                v.push('x');
            }
            j.env.push(("DETWASM_FUZZ_EXTRA".into(), "1".into()));
            "every value + `x`, and DETWASM_FUZZ_EXTRA=1 added".into()
        }
        Param::Args => {
            j.args.push("detwasm-fuzz-extra".into());
            "argument `detwasm-fuzz-extra` appended".into()
        }
        Param::Inputs => {
            if job.inputs.is_empty() {
                return Ok((j, "no inputs to vary".into()));
            }
            j = with_copied_inputs(job, &here.join("inputs"))?;
            for input in &j.inputs {
                std::fs::write(input.host.join("detwasm-fuzz-extra.txt"), b"added\n")
                    .map_err(|e| RunError::io("adding a file to an input copy", e))?;
            }
            "file detwasm-fuzz-extra.txt added to each input".into()
        }
    };
    Ok((j, change))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(path: &str) -> Vec<u8> {
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)).unwrap()
    }

    fn runtime() -> Runtime {
        Runtime::new(EngineOptions {
            cache_dir: None,
            parallel_compilation: true,
        })
        .unwrap()
    }

    fn campaign(runs: usize, vary: Vec<Param>) -> Campaign<'static> {
        Campaign {
            runs,
            vary,
            exe: None,
            progress: None,
        }
    }

    /// The probe over an input folder agrees with itself under every in-process
    /// perturbation, and its output depends on everything it reports.
    /// Copies of inputs are charged by file size before each copy: a sparse file past the
    /// budget is refused without writing its holes.
    #[test]
    fn input_copies_stop_at_their_budget() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("in");
        std::fs::create_dir_all(src.join("d")).unwrap();
        std::fs::write(src.join("d/small"), [1u8; 10]).unwrap();
        let mut budget = 10;
        copy_tree(&src, &t.path().join("a"), true, &mut budget).unwrap();
        assert_eq!(budget, 0);
        std::fs::File::create(src.join("sparse"))
            .unwrap()
            .set_len(MAX_COPIED_INPUT_BYTES + 1)
            .unwrap();
        let mut budget = MAX_COPIED_INPUT_BYTES;
        let e = copy_tree(&src, &t.path().join("b"), true, &mut budget).unwrap_err();
        assert!(e.to_string().contains("at most 1073741824 bytes"), "{e}");
        assert!(!t.path().join("b/sparse").exists());
    }

    #[test]
    fn a_deterministic_job_agrees_under_every_perturbation() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("in/sub")).unwrap();
        std::fs::write(t.path().join("in/a.txt"), "a").unwrap();
        std::fs::write(t.path().join("in/sub/b.txt"), "b").unwrap();
        let job = Job::new(fixture("fixtures/probes/probe.wasm"))
            .push_input(t.path().join("in"), "/inputs")
            .push_arg("report")
            .push_env("K", "V");
        let report = run_campaign(&runtime(), &job, &campaign(8, Param::ALL.to_vec())).unwrap();
        assert!(!report.divergent, "{:#?}", report.differences);
        assert_eq!(report.all_runs.len(), 8);
        let names: Vec<&str> = report.sensitive_to.iter().map(|p| p.name()).collect();
        assert_eq!(names, ["seed", "epoch", "env", "args", "inputs"]);
        let seed = &report.sensitivity[0];
        assert!(seed.files.contains(&"stdout".to_string()), "{seed:?}");
    }

    /// cowsay of a fixed message reads no randomness, no clock, no env and no inputs:
    /// the campaign says its output depends on its arguments only.
    #[test]
    fn sensitivity_names_only_what_the_output_depends_on() {
        let job = Job::new(fixture("fixtures/modules/cowsay.wasm")).push_arg("moo");
        let report = run_campaign(&runtime(), &job, &campaign(2, Param::ALL.to_vec())).unwrap();
        assert!(!report.divergent);
        assert_eq!(report.sensitive_to, [Param::Args]);
    }

    /// With a deliberately leaked channel (this crate's test-only switch that lets the
    /// host's real time through the wall clock), the campaign reports the divergence and
    /// names the file it shows in.
    #[test]
    fn a_leaked_host_clock_is_caught_and_the_file_named() {
        detwasm_runtime::wasi::host::LEAK_HOST_TIME.store(true, Ordering::SeqCst);
        let job = Job::new(fixture("fixtures/probes/probe.wasm")).push_arg("report");
        let report = run_campaign(&runtime(), &job, &campaign(3, vec![]));
        detwasm_runtime::wasi::host::LEAK_HOST_TIME.store(false, Ordering::SeqCst);
        let report = report.unwrap();
        assert!(report.divergent);
        let files: Vec<&str> = report.differences[0]
            .files
            .iter()
            .map(|d| d.path.as_str())
            .collect();
        assert!(files.contains(&"stdout"), "{files:?}");
    }

    /// With checkpoints, the leaked clock is located: the first segment whose end state
    /// differs, with stdout or memory named there.
    #[test]
    fn a_leaked_host_clock_is_located_to_a_segment() {
        detwasm_runtime::wasi::host::LEAK_HOST_TIME.store(true, Ordering::SeqCst);
        let job = Job::new(fixture("fixtures/probes/probe.wasm")).push_arg("report");
        let rt = runtime().with_fuel_slice(1_000).with_checkpoints(10_000);
        let report = run_campaign(&rt, &job, &campaign(2, vec![]));
        detwasm_runtime::wasi::host::LEAK_HOST_TIME.store(false, Ordering::SeqCst);
        let report = report.unwrap();
        assert!(report.divergent);
        let d = report.differences[0].diverged_at.as_ref().expect("located");
        assert!(
            d.state
                .iter()
                .any(|s| s.part.starts_with("memory") || s.part == "stdout"),
            "{d:#?}"
        );
        let to = d.to_instruction.expect("before the run's end");
        assert!(d.from_instruction < to, "{d:#?}");
    }

    /// With checkpoints, a varied seed is located: the first segment whose end state
    /// differs is where random bytes were first read (other bytes in memory, where the
    /// standard library keeps its hash keys), one segment of the reference run; runs
    /// under host perturbations agree snapshot for snapshot (not divergent, not
    /// located), and a parameter the output does not depend on is not located either.
    #[test]
    fn checkpoints_locate_where_a_varied_seed_first_changes_the_state() {
        let job = Job::new(fixture("fixtures/probes/probe.wasm")).push_arg("report");
        let rt = runtime().with_fuel_slice(1_000).with_checkpoints(10_000);
        let report = run_campaign(&rt, &job, &campaign(3, vec![Param::Seed])).unwrap();
        assert!(!report.divergent, "{:#?}", report.differences);
        assert!(report.all_runs.iter().all(|r| r.diverged_at.is_none()));
        let seed = &report.sensitivity[0];
        assert!(seed.sensitive);
        let d = seed.diverged_at.as_ref().expect("located");
        let parts: Vec<&str> = d.state.iter().map(|s| s.part.as_str()).collect();
        assert!(parts.contains(&"memory 0"), "{d:#?}");
        assert!(
            !parts.contains(&"random stream"),
            "the same words are read: {d:#?}"
        );
        let to = d
            .to_instruction
            .expect("random bytes are read before the end");
        assert!(
            d.from_instruction < to && to - d.from_instruction < 2 * 10_000,
            "{d:#?}"
        );
        assert!(to < report.baseline.instructions);

        let cowsay = Job::new(fixture("fixtures/modules/cowsay.wasm")).push_arg("moo");
        let report = run_campaign(&rt, &cowsay, &campaign(1, vec![Param::Seed])).unwrap();
        assert!(!report.sensitivity[0].sensitive);
        assert!(report.sensitivity[0].diverged_at.is_none());
    }
}
