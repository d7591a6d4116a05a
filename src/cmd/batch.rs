//! `detwasm batch JOBS.jsonl`: argument parsing and output only; the work is
//! `detwasm_ops::batch`.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::Context;
use detwasm_ops::batch::{self, BatchOptions};
use indicatif::{ProgressBar, ProgressStyle};

use super::run::runtime;

/// Run many jobs in one process and print one receipt per job (JSON Lines), in input
/// order.
///
/// Each line of JOBS is one job: a JSON object whose keys are `detwasm run`'s options:
/// `module` (a .wasm path, module folder or name, or a Bacalhau v1 job file; required), `args` (list), `env`
/// (object; its order is kept), `inputs` (list of `HOST[:GUEST]`), `dirs` (list of
/// `HOST[::GUEST]`), `input_values` (object, for module folders), `stdin` (a file),
/// `seed`, `epoch` (seconds or RFC 3339), `fuel`, `memory` and `max_output` (bytes or
/// `256MiB`), `timeout` (seconds), `entry`, `profile`, `skip_hidden`, `no_outputs`, and
/// `output` (its results folder; default: a folder named after the job id under
/// --output-dir). Limits combine with a module spec's as `detwasm run`'s flags do (the
/// tighter wins; see `detwasm run --help`). Unknown keys are an error naming the line. Relative paths are taken
/// against the current folder, as `detwasm run` takes them. Blank lines are skipped.
///
/// A jobs file is the operator's, as the flags of `detwasm run` are: a line's own paths
/// (`inputs: ["/etc:/x"]`, `dirs`, `stdin`, `output: "../../x"`) are read and written with
/// the operator's rights, unconfined. Never run a jobs file from someone you do not trust;
/// take their module specs or job files instead, which are confined (a module spec's or
/// job file's inputs to its folder and --allow-input folders).
///
/// Each receipt equals what `detwasm run --json` of the same job prints. A job that
/// cannot run gets a line `{"line": N, "error": "..."}` and the others go on. Exit
/// status: 0 when every job ran and exited 0, 1 when every job ran but some exited
/// non-zero (or hit the safety timeout), 2 when some job could not run.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The jobs, one JSON object per line (`-` for standard input).
    #[arg(value_name = "JOBS.jsonl")]
    pub jobs: PathBuf,

    /// Jobs run at once (default: the number of cores).
    #[arg(long, short = 'j', value_name = "N")]
    pub parallel: Option<usize>,

    /// Where jobs without an `output` key deliver their results (a folder per job, named
    /// after its job id; created if missing). Default: the current folder.
    #[arg(long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,

    /// Let module specs and job files take inputs from DIR, for every job (see `detwasm
    /// run --allow-input`). Repeatable. A line cannot widen this for the spec it names,
    /// but its own `inputs`, `dirs`, `stdin` and `output` are not confined at all (a jobs
    /// file is the operator's).
    #[arg(long = "allow-input", value_name = "DIR")]
    pub allow_inputs: Vec<PathBuf>,

    /// Where job files' `ipfs` inputs missing here are fetched from (see `detwasm run
    /// --gateway`), for every job.
    #[command(flatten)]
    pub ipfs: super::fetch::IpfsArgs,

    /// Compile without reading or writing the module cache.
    #[arg(long)]
    pub no_cache: bool,

    /// Print the closing summary (on stderr) as one JSON object.
    #[arg(long)]
    pub json: bool,

    /// Also append each line printed (a receipt, or a job's error line) to FILE, synced
    /// to disk as its job is delivered, in input order: a batch killed part-way leaves
    /// the receipt of every job it delivered. FILE must not exist or be empty, unless
    /// --resume.
    #[arg(long, value_name = "FILE")]
    pub receipts: Option<PathBuf>,

    /// Go on from a batch of the same jobs that stopped part-way: the jobs whose lines
    /// FILE (--receipts) holds, from the first, are not run again (their lines are
    /// printed as they were written); from the first line that is half-written or no
    /// longer true (its results folder gone), that job and every one after it run.
    #[arg(long, requires = "receipts")]
    pub resume: bool,
}

/// How often the batch says how far it is on stderr when stderr is not a terminal (a
/// log file, a CI job), where the bar is not drawn.
const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let text = if args.jobs.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading jobs from stdin")?
    } else {
        std::fs::read_to_string(&args.jobs)
            .with_context(|| format!("reading jobs {}", args.jobs.display()))?
    };
    let cwd = std::env::current_dir().context("current directory")?;
    let output_dir = match &args.output_dir {
        Some(d) => {
            std::fs::create_dir_all(d)
                .with_context(|| format!("creating output folder {}", d.display()))?;
            cwd.join(d)
        }
        None => cwd.clone(),
    };
    let parallel = match args.parallel {
        Some(0) => anyhow::bail!("--parallel must be at least 1"),
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let parsed = batch::parse_lines(&text);
    let numbers: Vec<usize> = parsed.iter().map(|(n, _)| *n).collect();
    let mut lines = parsed.into_iter().map(|(_, l)| l).collect::<Vec<_>>();
    let (mut log, kept) = match (&args.receipts, args.resume) {
        (None, _) => (None, batch::Kept::default()),
        (Some(path), false) => (
            Some(batch::ReceiptLog::create(path).map_err(anyhow::Error::msg)?),
            batch::Kept::default(),
        ),
        (Some(path), true) => {
            let (log, kept) =
                batch::ReceiptLog::resume(path, &numbers, &lines).map_err(anyhow::Error::msg)?;
            (Some(log), kept)
        }
    };
    let total_jobs = lines.len();
    let skipped = kept.lines;
    lines.drain(..skipped);
    let runtime = runtime(args.no_cache)?;
    let opts = BatchOptions {
        parallel,
        output_dir,
        cwd,
        allow_inputs: args.allow_inputs.clone(),
        ipfs: args.ipfs.remote(),
    };

    // A bar on a terminal only (indicatif hides it otherwise); receipts go to stdout.
    let bar = ProgressBar::new(total_jobs as u64).with_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} jobs {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let counts = Counts::default();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let interactive = std::io::stdout().is_terminal();
    let mut write_error = None;
    let mut renamed = 0usize;
    // The kept lines first, as they were written.
    if let Some(log) = &log {
        log.copy_kept(&kept, &mut out)
            .map_err(anyhow::Error::msg)
            .context("writing receipts")?;
    }
    counts.add_kept(&kept);
    bar.inc(kept.lines as u64);
    out.flush().context("writing receipts")?;
    if skipped > 0 {
        eprintln!(
            "detwasm: {skipped} of {total_jobs} jobs already delivered (their receipts are in {}): running the other {}",
            args.receipts.as_deref().unwrap_or(Path::new("-")).display(),
            total_jobs - skipped
        );
    }
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|scope| {
        // Progress on stderr when no bar is drawn there.
        if !std::io::stderr().is_terminal() {
            let counts = &counts;
            scope.spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(PROGRESS_EVERY)
                {
                    eprintln!(
                        "detwasm batch: {} of {total_jobs} jobs done, {:.0} s",
                        counts.done(),
                        started.elapsed().as_secs_f64()
                    );
                }
            });
        }
        batch::run_batch(&runtime, lines, &opts, |i, result| {
            let line = match result {
                Ok(receipt) => {
                    counts.tally(false, receipt.exit_code == 0 && receipt.verifiable);
                    let name = Path::new(&receipt.results_dir).file_name();
                    if name.is_some_and(|n| {
                        n.to_string_lossy()
                            .starts_with(&format!("{}-", receipt.job_id))
                    }) {
                        renamed += 1;
                    }
                    super::json(&receipt, false)
                }
                Err(error) => {
                    counts.tally(true, false);
                    // The error may quote the job's spec, a CAR's names or a server.
                    super::json(
                        &serde_json::json!({"line": numbers[skipped + i], "error": super::shown(&error)}),
                        false,
                    )
                }
            };
            // On a terminal the bar (stderr) is hidden while a receipt line is written.
            // Every line is flushed as its job is delivered (a batch killed part-way has
            // printed every receipt it delivered), and appended to --receipts, synced.
            let written = line.map_err(std::io::Error::other).and_then(|l| {
                // The receipts file first: it is the durable record, and a closed stdout
                // must not cost it a line.
                if let Some(log) = &mut log {
                    log.append(&l).map_err(std::io::Error::other)?;
                }
                if interactive {
                    bar.suspend(|| writeln!(out, "{l}").and_then(|()| out.flush()))
                } else {
                    writeln!(out, "{l}").and_then(|()| out.flush())
                }
            });
            if let Err(e) = written {
                write_error.get_or_insert(e);
            }
            bar.inc(1);
        });
        drop(stop);
    });
    bar.finish_and_clear();
    out.flush().context("writing receipts")?;
    if let Some(e) = write_error {
        return Err(e).context("writing receipts");
    }
    drop(out);
    if renamed > 0 {
        eprintln!(
            "detwasm: warning: {renamed} jobs found a results folder named after their job \
             id already there and delivered beside it (<job id>-2, …): was this batch run \
             before? --receipts FILE --resume skips the jobs already delivered"
        );
    }
    for w in runtime.warnings() {
        eprintln!("detwasm: warning: {w}");
    }
    let secs = started.elapsed().as_secs_f64();
    let (ok, nonzero, failed) = counts.get();
    let total = ok + nonzero + failed;
    if args.json {
        eprintln!(
            "{}",
            serde_json::json!({
                "jobs": total, "exited_0": ok, "exited_non_zero": nonzero, "failed": failed,
                "seconds": secs, "parallel": parallel,
            })
        );
    } else {
        eprintln!(
            "{total} jobs in {secs:.2} s ({:.0} jobs/s, {parallel} at once): {ok} exited 0, \
             {nonzero} exited non-zero, {failed} could not run",
            total as f64 / secs.max(1e-9)
        );
    }
    Ok(ExitCode::from(if failed > 0 {
        2
    } else if nonzero > 0 {
        1
    } else {
        0
    }))
}

/// Jobs ended so far: exited 0 (and verifiable), otherwise ended, could not run.
#[derive(Default)]
struct Counts {
    ok: AtomicUsize,
    nonzero: AtomicUsize,
    failed: AtomicUsize,
}

impl Counts {
    fn tally(&self, failed: bool, ok: bool) {
        let which = match (failed, ok) {
            (true, _) => &self.failed,
            (false, true) => &self.ok,
            (false, false) => &self.nonzero,
        };
        which.fetch_add(1, Ordering::Relaxed);
    }

    /// The lines a resumed batch kept, as if they had just been delivered.
    fn add_kept(&self, kept: &batch::Kept) {
        self.failed.fetch_add(kept.errors, Ordering::Relaxed);
        self.ok.fetch_add(kept.exited_0, Ordering::Relaxed);
        self.nonzero
            .fetch_add(kept.lines - kept.errors - kept.exited_0, Ordering::Relaxed);
    }

    fn get(&self) -> (usize, usize, usize) {
        (
            self.ok.load(Ordering::Relaxed),
            self.nonzero.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }

    fn done(&self) -> usize {
        let (a, b, c) = self.get();
        a + b + c
    }
}
