//! `detwasm resume SNAPSHOT`: argument parsing and output only; the job is rebuilt by
//! `detwasm_ops::verify::job_of_snapshot` and run by `detwasm_runtime::Runtime`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use detwasm_ops::verify::{job_of_snapshot, open_snapshot};
use detwasm_runtime::deliver::Durability;
use detwasm_runtime::run::Checkpointing;
use detwasm_runtime::Destination;

use super::run::{report, runtime};
use super::verify::SourceArgs;

/// Finish a job from one of its snapshots, with the receipt of the uninterrupted run.
///
/// SNAPSHOT is a folder that `detwasm run --checkpoints DIR` saved (DIR/000003), or a
/// CAR file of one (`detwasm hash --car s.car DIR/000003`) or of the whole checkpoints
/// folder with --cid naming the snapshot (a CID of the receipt's trace). A CAR is
/// unpacked into a temporary folder, its size bounded by what the snapshot's state
/// claims before anything is written. The job is the one the snapshot names: its module and inputs are found where DIR/job.json
/// says (or at --module/--input) and must have the job's CIDs. The run goes on from the
/// checkpoint and ends with the same results CID, instruction count, exit code and trace
/// as the run that was not interrupted, on any machine and CPU. A snapshot is untrusted
/// input: it is checked before use and cannot reach anything the job could not.
///
/// Exit status: as `detwasm run` (0 exit 0, 1 another exit or a trap, 2 the snapshot
/// cannot be resumed: another job, another detwasm, a missing module or input, a broken
/// snapshot).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The snapshot folder, or a CAR file holding it.
    pub snapshot: PathBuf,

    /// With a CAR of several snapshots (of a checkpoints folder): the CID of the one to
    /// resume from. Default: the CAR's root.
    #[arg(long, value_name = "CID")]
    pub cid: Option<String>,

    /// Results directory (must not exist, or be empty). Default: a new folder in the
    /// current directory named after the job id.
    #[arg(long, short = 'o', value_name = "DIR")]
    pub output: Option<PathBuf>,

    #[command(flatten)]
    pub sources: SourceArgs,

    /// Save the snapshots of the rest of the run into DIR (new or empty), as `detwasm
    /// run --checkpoints` does, at the snapshot's interval.
    #[arg(long, value_name = "DIR")]
    pub checkpoints: Option<PathBuf>,

    /// Print the receipt as one JSON object.
    #[arg(long)]
    pub json: bool,

    /// Also write the receipt (JSON) to FILE.
    #[arg(long, value_name = "FILE")]
    pub receipt: Option<PathBuf>,

    /// Compile without reading or writing the module cache.
    #[arg(long)]
    pub no_cache: bool,

    #[command(flatten)]
    pub live: super::run::LiveArgs,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut sources = args.sources.sources();
    // Inputs given as CAR files, unpacked for as long as the job runs.
    let _unpacked = sources.unpack_cars().map_err(anyhow::Error::msg)?;
    let opened = open_snapshot(&args.snapshot, args.cid.as_deref(), &sources.caps)?;
    let snapshot = &opened.snapshot;
    let _found = sources
        .find_by_cid(
            &snapshot.state.job,
            snapshot.state.profile,
            &args.sources.find,
            &args.sources.ipfs.remote(),
        )
        .map_err(anyhow::Error::msg)?;
    let job = job_of_snapshot(snapshot, &sources)
        .with_context(|| format!("resuming {}", args.snapshot.display()))?;
    let (runtime, live) = args.live.apply(runtime(args.no_cache)?);
    let runtime = runtime.with_checkpoints(snapshot.state.meter.every);
    let dest = match &args.output {
        Some(p) => Destination::At(p.clone()),
        None => Destination::Under(std::env::current_dir().context("current directory")?),
    };
    // The receipt's trace names every checkpoint's snapshot, so the rest of the run's
    // are made even when they are not kept (in a folder removed after the run).
    let scratch;
    let save = match &args.checkpoints {
        Some(dir) => dir.clone(),
        None => {
            scratch = detwasm_ops::scratch::Scratch::new(
                "detwasm-resume-",
                "the rest of the run's snapshots",
            )?;
            scratch.path().join("checkpoints")
        }
    };
    let how = Checkpointing {
        save: Some(&save),
        resume: Some(snapshot),
        only_last: args.checkpoints.is_none(),
        on_saved: None,
    };
    let result = runtime
        .run_staged_with(&job, &dest, &how)
        .and_then(|s| s.publish(Durability::PerFile));
    for w in runtime.warnings() {
        eprintln!("detwasm: warning: {w}");
    }
    drop(runtime);
    live.wait();
    let receipt = result.with_context(|| format!("resuming {}", args.snapshot.display()))?;
    let code = report(
        &receipt,
        args.json,
        args.receipt.as_deref(),
        args.checkpoints.as_deref(),
    );
    args.live.show_stderr_tail(&receipt);
    Ok(code)
}
