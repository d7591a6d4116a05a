//! `detwasm batch JOBS.jsonl`: argument parsing and output only; the work is
//! `detwasm_ops::batch`.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
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
/// --output-dir). Unknown keys are an error naming the line. Relative paths are taken
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

    /// Compile without reading or writing the module cache.
    #[arg(long)]
    pub no_cache: bool,

    /// Print the closing summary (on stderr) as one JSON object.
    #[arg(long)]
    pub json: bool,
}

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
    let lines = parsed.into_iter().map(|(_, l)| l).collect::<Vec<_>>();
    let runtime = runtime(args.no_cache)?;
    let opts = BatchOptions {
        parallel,
        output_dir,
        cwd,
        allow_inputs: args.allow_inputs.clone(),
    };

    // A bar on a terminal only (indicatif hides it otherwise); receipts go to stdout.
    let bar = ProgressBar::new(lines.len() as u64).with_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} jobs {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let (mut ok, mut nonzero, mut failed) = (0usize, 0usize, 0usize);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let interactive = std::io::stdout().is_terminal();
    let mut write_error = None;
    batch::run_batch(&runtime, lines, &opts, |i, result| {
        let line = match result {
            Ok(receipt) => {
                if receipt.exit_code == 0 && receipt.verifiable {
                    ok += 1;
                } else {
                    nonzero += 1;
                }
                serde_json::to_string(&receipt)
            }
            Err(error) => {
                failed += 1;
                serde_json::to_string(&serde_json::json!({"line": numbers[i], "error": error}))
            }
        };
        // On a terminal the bar (stderr) is hidden while a receipt line is written.
        let written = line.map_err(std::io::Error::other).and_then(|l| {
            if interactive {
                bar.suspend(|| writeln!(out, "{l}").and_then(|()| out.flush()))
            } else {
                writeln!(out, "{l}")
            }
        });
        if let Err(e) = written {
            write_error.get_or_insert(e);
        }
        bar.inc(1);
    });
    bar.finish_and_clear();
    out.flush().context("writing receipts")?;
    if let Some(e) = write_error {
        return Err(e).context("writing receipts");
    }
    drop(out);
    for w in runtime.warnings() {
        eprintln!("detwasm: warning: {w}");
    }
    let secs = started.elapsed().as_secs_f64();
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
