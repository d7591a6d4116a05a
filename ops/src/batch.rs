//! Many jobs in one process: one engine, each module compiled (or loaded) once, jobs
//! spread over worker threads, results handed back in input order.
//!
//! Each job is run exactly as `detwasm run` runs it ([`Runtime::run`]), so its receipt is
//! the one `detwasm run` of the same options gives (with the same results folder). Jobs
//! share nothing but the engine and the loaded modules, neither of which a result can
//! depend on; the fuzz campaign's "copies of the job at once in one process" run checks
//! exactly this.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use crate::request::{BuiltJob, JobRequest};
use detwasm_job::job::Job;
use detwasm_job::receipt::Receipt;
use detwasm_runtime::deliver::{self, Durability};
use detwasm_runtime::run::{Destination, Runtime, StagedRun};

/// One job of a batch: its request, or why its line is not one.
pub type Line = Result<JobRequest, String>;

/// How a batch runs.
#[derive(Debug, Clone)]
pub struct BatchOptions {
    /// Worker threads (at least 1).
    pub parallel: usize,
    /// Where jobs without an `output` deliver: a folder named after the job id.
    pub output_dir: PathBuf,
    /// The folder a line's `output` and a module spec's `SourcePath`s are taken against.
    /// Relative `module`, `inputs`, `dirs` and `stdin` paths are kept as written (so the
    /// receipt matches `detwasm run`'s) and so resolve against the process's current
    /// folder: pass that folder here.
    pub cwd: PathBuf,
    /// Folders module specs may take inputs from (`--allow-input`), for every job.
    pub allow_inputs: Vec<PathBuf>,
    /// The IPFS node or gateway job files' missing `ipfs` inputs are fetched from
    /// (`--gateway`, `--ipfs-api`), for every job.
    pub ipfs: crate::ipfs::Remote,
}

/// The end of one job: its receipt, or the error that stopped it (nothing delivered).
pub type JobResult = Result<Receipt, String>;

/// Most runs published by one group commit.
const MAX_GROUP: usize = 256;
/// How long a group commit waits for more runs to end before it syncs.
const GROUP_WAIT: Duration = Duration::from_millis(5);

/// Runs `lines` and calls `done(index, result)` for each, in input order, as soon as it
/// and every job before it have ended. A failing job does not stop the others.
///
/// Workers run jobs into staging folders ([`Runtime::run_staged`]); this thread gathers
/// the runs that ended within [`GROUP_WAIT`] of each other and commits them as a group:
/// one `syncfs` makes their data durable, then each is renamed into place, then a second
/// `syncfs` makes the renames durable, and only then are their receipts handed out. The
/// rule is [`Runtime::run`]'s (no final name before its data is on disk; no receipt
/// before the final name is), at two syncs per group instead of seven fsyncs per job
/// (see [`deliver::sync_filesystem`]).
pub fn run_batch(
    runtime: &Runtime,
    lines: Vec<Line>,
    opts: &BatchOptions,
    mut done: impl FnMut(usize, JobResult),
) {
    let next = AtomicUsize::new(0);
    let parents = Parents::default();
    let wanted = opts.parallel.max(1).min(lines.len().max(1));
    let (tx, rx) = mpsc::channel::<(usize, Result<Staged, String>)>();
    std::thread::scope(|s| {
        let mut started = 0;
        for _ in 0..wanted {
            let tx = tx.clone();
            let (next, lines, parents) = (&next, &lines, &parents);
            let worker = move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(line) = lines.get(i) else { break };
                // A panic while running one job is that job's error, not the batch's end
                // (the jobs behind it would otherwise wait for it forever).
                let result = match line {
                    Ok(req) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        stage_one(runtime, req, opts, parents)
                    }))
                    .unwrap_or_else(|_| Err(run_error(req, "detwasm panicked running it"))),
                    Err(e) => Err(e.clone()),
                };
                if tx.send((i, result)).is_err() {
                    break;
                }
            };
            // A thread the OS refuses (e.g. a huge --parallel) is one worker fewer.
            if std::thread::Builder::new()
                .name("detwasm-batch".into())
                .spawn_scoped(s, worker)
                .is_ok()
            {
                started += 1;
            }
        }
        drop(tx);
        if started == 0 {
            for (i, line) in lines.iter().enumerate() {
                done(
                    i,
                    Err(match line {
                        Ok(req) => run_error(req, "no worker thread could be started"),
                        Err(e) => e.clone(),
                    }),
                );
            }
            return;
        }
        // Results arrive in completion order and leave in input order.
        let mut waiting = BTreeMap::new();
        let mut emitted = 0;
        while let Ok(first) = rx.recv() {
            let mut group = vec![first];
            let until = Instant::now() + GROUP_WAIT;
            while group.len() < MAX_GROUP {
                let left = until.saturating_duration_since(Instant::now());
                match rx.recv_timeout(left) {
                    Ok(m) => group.push(m),
                    Err(_) => break,
                }
            }
            for (i, result) in commit(group) {
                waiting.insert(i, result);
            }
            while let Some(r) = waiting.remove(&emitted) {
                done(emitted, r);
                emitted += 1;
            }
        }
    });
}

/// The folder a run publishes into, opened before any job wrote there and kept open for
/// the batch (see [`deliver::sync_filesystem`] for why), and whether a group sync is
/// reliable on it ([`deliver::group_sync_supported`]).
struct Parent {
    path: PathBuf,
    dir: std::fs::File,
    grouped: bool,
}

/// The batch's [`Parent`]s by path.
#[derive(Default)]
struct Parents(Mutex<HashMap<PathBuf, Arc<Parent>>>);

impl Parents {
    /// The parent of `dest` (created if missing), opened once.
    fn of(&self, dest: &Destination) -> Result<Arc<Parent>, String> {
        let path = match dest {
            Destination::At(p) => p
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .to_path_buf(),
            Destination::Under(d) => d.clone(),
        };
        let mut map = self.0.lock().map_err(|_| "a worker panicked".to_string())?;
        if let Some(p) = map.get(&path) {
            return Ok(p.clone());
        }
        std::fs::create_dir_all(&path).map_err(|e| format!("creating {}: {e}", path.display()))?;
        let dir = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let grouped = deliver::group_sync_supported(&dir);
        let parent = Arc::new(Parent {
            path: path.clone(),
            dir,
            grouped,
        });
        map.insert(path, parent.clone());
        Ok(parent)
    }
}

/// A run staged by a worker, and the folder it publishes into.
type Staged = (StagedRun, Arc<Parent>);

/// Publishes a group of staged runs (see [`run_batch`]). Runs into a folder where a
/// group sync is not reliable are published one by one, each with its own fsyncs.
fn commit(group: Vec<(usize, Result<Staged, String>)>) -> Vec<(usize, JobResult)> {
    let mut parents: Vec<Arc<Parent>> = Vec::new();
    for (_, r) in &group {
        if let Ok((_, parent)) = r {
            if parent.grouped && !parents.iter().any(|p| p.path == parent.path) {
                parents.push(parent.clone());
            }
        }
    }
    let sync = |parents: &[Arc<Parent>]| -> Result<(), String> {
        for p in parents {
            deliver::sync_filesystem(&p.dir, &p.path)
                .map_err(|e| format!("syncing the results to disk: {e}"))?;
        }
        Ok(())
    };
    // Staged runs dropped on an error remove their staging folders: nothing half-synced
    // is ever published.
    let data_synced = sync(&parents);
    let published: Vec<(usize, JobResult, bool)> = group
        .into_iter()
        .map(|(i, r)| match r {
            Err(e) => (i, Err(e), false),
            Ok((staged, parent)) if !parent.grouped => (
                i,
                staged
                    .publish(Durability::PerFile)
                    .map_err(|e| e.to_string()),
                false,
            ),
            Ok((staged, _)) => {
                let r = match &data_synced {
                    Ok(()) => staged
                        .publish(Durability::Grouped)
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(e.clone()),
                };
                (i, r, true)
            }
        })
        .collect();
    let renames_synced = sync(&parents);
    published
        .into_iter()
        .map(|(i, r, grouped)| match (&renames_synced, grouped) {
            // The rename may not be on disk: the receipt is not handed out as good.
            (Err(e), true) => (i, r.and_then(|_| Err(e.clone()))),
            _ => (i, r),
        })
        .collect()
}

/// Runs one request as `detwasm run` would, up to its staged results.
fn stage_one(
    runtime: &Runtime,
    req: &JobRequest,
    opts: &BatchOptions,
    parents: &Parents,
) -> Result<Staged, String> {
    let planned = job_of(req, opts)?;
    let parent = parents.of(&planned.dest).map_err(|e| run_error(req, e))?;
    let staged = runtime
        .run_staged(&planned.job, &planned.dest)
        .map_err(|e| run_error(req, e))?;
    Ok((staged, parent))
}

/// A batch line's job, where its results go, and what must live as long as its run.
pub struct Planned {
    pub job: Job,
    pub dest: Destination,
    /// A job file's staged file inputs: keep until the run (or packing) has ended.
    pub staging: Option<detwasm_jobspec::bacalhau::v1::Staging>,
}

/// The job a batch line describes and where its results go, or the message a batch
/// reports for it (the option at fault, as its JSON key). Shared with the front ends
/// that take the same lines (the Python package's `run` and its Ray runner), so that
/// they report exactly what `detwasm batch` reports.
pub fn job_of(req: &JobRequest, opts: &BatchOptions) -> Result<Planned, String> {
    let mut req = req.clone();
    // The operator's grant applies to the jobs that have a spec to confine (for a bare
    // .wasm, `allow_inputs` is refused as a user's mistake).
    if detwasm_jobspec::is_module_reference(&req.module)
        || detwasm_jobspec::bacalhau::v1::is_job_file(&req.module)
    {
        req.allow_inputs.extend(opts.allow_inputs.iter().cloned());
        req.ipfs = opts.ipfs.clone();
    }
    let BuiltJob { job, staging, .. } = req.build(&opts.cwd).map_err(|e| e.to_string())?;
    let dest = match &req.output {
        Some(p) => Destination::At(resolve(&opts.cwd, p)),
        None => Destination::Under(opts.output_dir.clone()),
    };
    Ok(Planned { job, dest, staging })
}

/// The message a batch reports for a job that could not run.
pub fn run_error(req: &JobRequest, e: impl std::fmt::Display) -> String {
    format!("running {}: {e}", req.module.display())
}

fn resolve(cwd: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        cwd.join(p)
    }
}

/// Reads a JSON Lines file of jobs: one [`Line`] per non-blank line, each with its line
/// number (1-based) for messages. A line that is not a job is an `Err` naming the line
/// and the cause (an unknown key, a wrong type), and takes its place in the order.
pub fn parse_lines(text: &str) -> Vec<(usize, Line)> {
    job_lines(text)
        .map(|(n, l)| {
            (
                n,
                JobRequest::from_json(l).map_err(|e| format!("line {n}: {e}")),
            )
        })
        .collect()
}

/// The non-blank lines of a jobs file, each with its number (1-based): the lines
/// [`parse_lines`] parses.
pub fn job_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(n, l)| (n + 1, l))
}

/// A batch's receipts file (`detwasm batch --receipts FILE`): every line the batch prints
/// (a receipt, or a job's error line), appended and synced to disk as its job is
/// delivered, in input order. Found by use: receipts printed to a redirected stdout sat
/// in a buffer, and a batch killed after 13 delivered jobs had printed 7. With the file
/// in input order, a batch killed part-way goes on from where it stopped
/// ([`ReceiptLog::resume`]). Rejected: syncing only at the end (a kill loses them all);
/// keying kept receipts by job id (every job's inputs would be hashed again to find its
/// id before it could be skipped).
pub struct ReceiptLog {
    file: std::fs::File,
    path: PathBuf,
}

/// The longest line of a receipts file [`ReceiptLog::resume`] reads: 64 MiB, the most a
/// receipt file may hold (`verify::MAX_RECEIPT_BYTES`).
pub const MAX_RECEIPT_LINE: u64 = 64 << 20;

/// What [`ReceiptLog::resume`] reads of a line of a receipts file: the fields that say
/// whose line it is, every other field skipped as it is parsed (a receipt's job record
/// with its arguments, environment, inputs and outputs bounded while parsed). Found by
/// review: parsing each line into a `serde_json::Value` first took 1.12 GB for one
/// 64 MiB line of `[0,0,…]`. Rejected: a `Value` checked afterwards (16 bytes per 2 of
/// text are spent by then).
#[derive(serde::Deserialize)]
struct LineView {
    #[serde(default)]
    error: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    line: Option<u64>,
    #[serde(default)]
    cid: Option<String>,
    #[serde(default)]
    job_id: Option<String>,
    #[serde(default)]
    results_dir: Option<String>,
    #[serde(default)]
    job: Option<detwasm_job::receipt::JobRecord>,
    #[serde(default)]
    exit_code: Option<i64>,
    #[serde(default)]
    verifiable: Option<bool>,
}

/// Whether `v`, a line of a receipts file, is the line of the job at `number` in the
/// jobs file (`line`: that job's request): its error line, or a receipt of a job with
/// its arguments, a results CID, and its results folder, named after the receipt's job
/// id, there.
fn is_line_of(v: &LineView, number: usize, line: Option<&Line>) -> bool {
    if v.error.is_some() {
        return v.line == Some(number as u64);
    }
    let Some(job_id) = v
        .job_id
        .as_deref()
        .filter(|id| id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()))
    else {
        return false;
    };
    let named = v.results_dir.as_deref().map(Path::new).is_some_and(|d| {
        d.is_dir()
            && d.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(job_id))
    });
    let args_match = match (line, &v.job) {
        (Some(Ok(req)), Some(job)) => job.args == req.args,
        _ => false,
    };
    let cid = v
        .cid
        .as_deref()
        .is_some_and(|c| detwasm_hasher::Cid::parse(c).is_some());
    named && cid && args_match
}

/// What [`ReceiptLog::resume`] kept of a receipts file: its first lines, one per job from
/// the first, each still true (an error line names its job's line; a receipt's results
/// folder is there). They are the file's first `bytes` bytes, printed from the file
/// ([`ReceiptLog::copy_kept`]) rather than held (found by review: 16 forged lines of
/// 64 MiB held 2.1 GB).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Kept {
    /// Lines kept.
    pub lines: usize,
    /// Of which error lines, and receipts of runs that exited 0 and are verifiable.
    pub errors: usize,
    pub exited_0: usize,
    /// Their bytes, newlines included.
    pub bytes: u64,
}

impl ReceiptLog {
    /// A new receipts file at `path`: it must not exist or be empty (a batch does not
    /// write over another's receipts).
    ///
    /// A link at `path` is not followed and anything but a regular file is refused
    /// without blocking (found by review: a planted link made the batch create and
    /// append to the file it named; a FIFO would have blocked it before any job ran).
    pub fn create(path: &Path) -> Result<ReceiptLog, String> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ELOOP) => format!("{}: a symlink; not followed", path.display()),
                _ => format!("{}: {e}", path.display()),
            })?;
        let meta = file
            .metadata()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if !meta.is_file() {
            return Err(format!("{}: not a regular file", path.display()));
        }
        if meta.len() > 0 {
            return Err(format!(
                "{} already holds receipts: --resume goes on from them, or remove it",
                path.display()
            ));
        }
        Ok(ReceiptLog {
            file,
            path: path.to_path_buf(),
        })
    }

    /// Opens the receipts file of a batch that stopped part-way, for the same jobs
    /// (`lines`, whose line numbers in the jobs file are `numbers`): keeps its lines from
    /// the first while each is a complete line that is still true of the job at its
    /// place, cuts the file after them (a line half-written when the batch was killed, or
    /// one whose results folder is gone, is run again with every job after it), and
    /// returns them. A missing file keeps nothing.
    ///
    /// A line is kept only if it is this job's: an error line naming its line number, or
    /// a receipt whose job has the job's arguments and whose results folder, named after
    /// the receipt's job id, is there. A file that is not a regular file (a link is not
    /// followed), or whose first line is not its first job's, is refused and not touched
    /// (found by review: any JSON line with an existing `results_dir` was kept, so three
    /// lines of `{"results_dir": "/"}` skipped every job, and naming the jobs file by
    /// mistake emptied it). Lines are read one at a time, each at most
    /// [`MAX_RECEIPT_LINE`] bytes.
    pub fn resume(
        path: &Path,
        numbers: &[usize],
        lines: &[Line],
    ) -> Result<(ReceiptLog, Kept), String> {
        use std::io::{BufRead, Read};
        use std::os::unix::fs::OpenOptionsExt;
        let fail = |e: std::io::Error| format!("{}: {e}", path.display());
        let file = match std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok((ReceiptLog::create(path)?, Kept::default()));
            }
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(format!("{}: a symlink; not followed", path.display()));
            }
            Err(e) => return Err(fail(e)),
        };
        if !file.metadata().map_err(fail)?.is_file() {
            return Err(format!("{}: not a regular file", path.display()));
        }
        let mut reader = std::io::BufReader::new(&file);
        let mut kept = Kept::default();
        for (i, &number) in numbers.iter().enumerate() {
            let mut line = Vec::new();
            (&mut reader)
                .take(MAX_RECEIPT_LINE + 1)
                .read_until(b'\n', &mut line)
                .map_err(fail)?;
            // Every line of ours begins so; anything else is not parsed.
            let ours = line.starts_with(br#"{"cid":"#) || line.starts_with(br#"{"error":"#);
            if line.last() != Some(&b'\n') {
                // A line half-written when the batch was killed begins as every line of
                // ours does; anything else is not ours to cut.
                if i == 0 && !line.is_empty() && !ours {
                    return Err(format!(
                        "{}: it does not start with a receipt or error line: not touched \
                         (is it these jobs' receipts file?)",
                        path.display()
                    ));
                }
                break;
            }
            let view = ours
                .then(|| serde_json::from_slice::<LineView>(&line).ok())
                .flatten()
                .filter(|v| is_line_of(v, number, lines.get(i)));
            let Some(view) = view else {
                if i == 0 && !line.is_empty() {
                    return Err(format!(
                        "{}: its first line is not a receipt or error line of this batch's \
                         first job (line {number}): not touched (is it these jobs' receipts \
                         file?)",
                        path.display()
                    ));
                }
                break;
            };
            kept.lines += 1;
            kept.bytes += line.len() as u64;
            if view.error.is_some() {
                kept.errors += 1;
            } else if view.exit_code == Some(0) && view.verifiable == Some(true) {
                kept.exited_0 += 1;
            }
        }
        drop(reader);
        file.set_len(kept.bytes).map_err(fail)?;
        file.sync_data().map_err(fail)?;
        Ok((
            ReceiptLog {
                file,
                path: path.to_path_buf(),
            },
            kept,
        ))
    }

    /// Writes the lines [`Self::resume`] kept (the file's first `kept.bytes` bytes) to
    /// `out`, as they were written.
    pub fn copy_kept(&self, kept: &Kept, out: &mut dyn std::io::Write) -> Result<(), String> {
        use std::io::{Read, Seek};
        let fail = |e: std::io::Error| format!("{}: {e}", self.path.display());
        let mut f = &self.file;
        f.seek(std::io::SeekFrom::Start(0)).map_err(fail)?;
        let copied = std::io::copy(&mut f.take(kept.bytes), out).map_err(fail)?;
        if copied != kept.bytes {
            return Err(format!(
                "{}: it changed while the batch read it",
                self.path.display()
            ));
        }
        Ok(())
    }

    /// Appends `line` and syncs it to disk.
    pub fn append(&mut self, line: &str) -> Result<(), String> {
        use std::io::Write;
        let fail = |e: std::io::Error| format!("{}: {e}", self.path.display());
        self.file
            .write_all(format!("{line}\n").as_bytes())
            .map_err(fail)?;
        self.file.sync_data().map_err(fail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use detwasm_runtime::engine::EngineOptions;

    const ECHO: &str = r#"(module
      (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "args_sizes_get" (func $as (param i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "args_get" (func $ag (param i32 i32) (result i32)))
      (memory (export "memory") 1)
      (func (export "_start")
        (drop (call $as (i32.const 0) (i32.const 4)))
        (drop (call $ag (i32.const 16) (i32.const 64)))
        ;; iovec at 8: the second argument (argv[1]) up to its NUL, from the sizes
        (i32.store (i32.const 8) (i32.load (i32.const 20)))
        (i32.store (i32.const 12)
          (i32.sub (i32.sub (i32.add (i32.const 64) (i32.load (i32.const 4)))
                            (i32.load (i32.const 20))) (i32.const 1)))
        (drop (call $w (i32.const 1) (i32.const 8) (i32.const 1) (i32.const 0)))))"#;

    #[test]
    fn results_come_back_in_input_order_and_failures_do_not_stop_the_batch() {
        let t = tempfile::tempdir().unwrap();
        let wat = t.path().join("echo.wat");
        std::fs::write(&wat, ECHO).unwrap();
        let mut text = String::new();
        for i in 0..12 {
            text.push_str(&format!(
                "{{\"module\":{:?},\"args\":[\"job{i}\"]}}\n",
                wat.display()
            ));
            if i == 5 {
                text.push_str("{\"module\":\"x.wasm\",\"colour\":1}\n\n");
            }
        }
        let lines = parse_lines(&text);
        assert_eq!(lines.len(), 13);
        assert!(lines[6]
            .1
            .as_ref()
            .unwrap_err()
            .starts_with("line 7: unknown field `colour`"));
        let rt = Runtime::new(EngineOptions::default()).unwrap();
        let opts = BatchOptions {
            parallel: 3,
            output_dir: t.path().join("out"),
            cwd: t.path().to_path_buf(),
            allow_inputs: Vec::new(),
            ipfs: Default::default(),
        };
        std::fs::create_dir(&opts.output_dir).unwrap();
        let mut seen = Vec::new();
        run_batch(
            &rt,
            lines.into_iter().map(|(_, l)| l).collect(),
            &opts,
            |i, r| seen.push((i, r)),
        );
        assert_eq!(
            seen.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            (0..13).collect::<Vec<_>>()
        );
        for (i, r) in &seen {
            if *i == 6 {
                assert!(r.is_err());
                continue;
            }
            let receipt = r.as_ref().unwrap();
            let n = if *i < 6 { *i } else { i - 1 };
            let stdout =
                std::fs::read_to_string(Path::new(&receipt.results_dir).join("stdout")).unwrap();
            assert_eq!(stdout, format!("job{n}"));
        }
    }
}
