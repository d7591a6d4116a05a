//! `detwasm verify RECEIPT.json`: argument parsing and output only; the work is
//! `detwasm_ops::verify`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use detwasm_ops::verify::{self, Sources};
use detwasm_runtime::engine::{default_cache_dir, EngineOptions};
use detwasm_runtime::{Receipt, Runtime};

/// Re-run the job a receipt describes and say whether its result is reproduced.
///
/// The receipt is what `detwasm run --receipt FILE` (or `--json`) wrote. The module and
/// the inputs are read from the paths the receipt names (or from --module/--input) and
/// must have the receipt's CIDs. The results CID, the instruction count and the exit
/// code of the re-run must equal the receipt's. With --results, the provider's results
/// folder is hashed too, and every file that differs from the re-run is listed.
///
/// With --sample K --snapshots DIR (a receipt of `detwasm run --checkpoints DIR`), only K
/// segments of the job are re-run, each from the provider's snapshot to the next
/// checkpoint, and compared with the receipt's trace: the last segment (which ends with
/// the results CID) and K-1 others chosen at random. --snapshots may also be a CAR of the
/// checkpoints folder (`detwasm hash --car cp.car DIR`): each snapshot needed is
/// unpacked from it by its trace CID. A provider that faked a fraction f
/// of the segments is caught with probability at least 1 - (1 - f)^(K-1), and always
/// when it faked the last.
///
/// Exit status: 0 verified, 1 not verified (a mismatch; the report says which), 2 the job
/// cannot be re-run (module or input missing or not the receipt's, another engine).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The receipt (JSON).
    pub receipt: PathBuf,

    /// The provider's results folder, to compare file by file with the re-run.
    #[arg(long, value_name = "DIR")]
    pub results: Option<PathBuf>,

    #[command(flatten)]
    pub sources: SourceArgs,

    /// Keep the re-run's results folder here (default: a temporary folder, removed).
    #[arg(long, value_name = "DIR")]
    pub keep: Option<PathBuf>,

    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,

    /// Compile without reading or writing the module cache.
    #[arg(long)]
    pub no_cache: bool,

    /// Spot-check: re-run only K segments of the job (all when K is at least their
    /// number), from the provider's snapshots in --snapshots.
    #[arg(long, value_name = "K", requires = "snapshots", value_parser = at_least_one)]
    pub sample: Option<usize>,

    /// The provider's checkpoints folder (`detwasm run --checkpoints DIR`), or a CAR of
    /// it.
    #[arg(long, value_name = "DIR|CAR")]
    pub snapshots: Option<PathBuf>,

    /// Settle a dispute: RECEIPT_B is another receipt of the same job whose trace
    /// disagrees with RECEIPT's. The first segment at whose end they differ is re-run
    /// (from the last snapshot both traces name, in --snapshots) and the report says
    /// which receipt is right there (`a` is RECEIPT, `b` RECEIPT_B). Exit 0 when RECEIPT
    /// is right, 1 when it is not.
    #[arg(
        long,
        value_name = "RECEIPT_B",
        requires = "snapshots",
        conflicts_with = "sample"
    )]
    pub bisect: Option<PathBuf>,

    /// Seed of the segments' choice (default: drawn from the system's entropy). Given,
    /// the same segments are chosen again: for reproducing a check, not for verifying
    /// (a provider that knows the seed knows which segments to leave honest).
    #[arg(long, value_name = "N", requires = "sample")]
    pub seed: Option<u64>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let receipt = verify::read_receipt(&args.receipt)?;
    let mut sources = args.sources.sources();
    // Inputs given as CAR files, and content found by CID, kept for as long as the job
    // runs.
    let _unpacked = sources.unpack_cars().map_err(anyhow::Error::msg)?;
    let _found = sources
        .find_by_cid(
            &receipt.job,
            receipt.profile,
            &args.sources.find,
            &args.sources.ipfs.remote(),
        )
        .map_err(anyhow::Error::msg)?;
    let runtime = Runtime::new(EngineOptions {
        cache_dir: if args.no_cache {
            None
        } else {
            default_cache_dir()
        },
        parallel_compilation: true,
    })?;
    for w in runtime.warnings() {
        eprintln!("detwasm: warning: {w}");
    }
    if let (Some(k), Some(snapshots)) = (args.sample, &args.snapshots) {
        return spot_check(&args, runtime, &receipt, &sources, k, snapshots);
    }
    if let (Some(other), Some(snapshots)) = (&args.bisect, &args.snapshots) {
        let b = verify::read_receipt(other)?;
        let every = receipt.trace.as_ref().map_or(0, |t| t.every);
        let runtime = runtime.with_checkpoints(every);
        let report = verify::bisect(&runtime, &receipt, &b, snapshots, &sources)?;
        if args.json {
            println!("{}", super::json(&report, true)?);
        } else {
            println!(
                "first disagreement at the end of segment {}: re-run from {} reaches {}",
                report.segment,
                if report.segment == 0 {
                    "the job's start".to_string()
                } else {
                    format!("snapshot {}", report.segment)
                },
                report.actual
            );
            // The claims are the receipts' (untrusted) words.
            println!(
                "  {}: {}",
                args.receipt.display(),
                super::shown(&report.claim_a)
            );
            println!("  {}: {}", other.display(), super::shown(&report.claim_b));
            println!(
                "{}",
                match report.right {
                    "a" => format!("{} is right", args.receipt.display()),
                    "b" => format!("{} is right", other.display()),
                    _ => "neither is right".to_string(),
                }
            );
        }
        return Ok(match report.right {
            "a" => ExitCode::SUCCESS,
            _ => ExitCode::from(1),
        });
    }
    let report = verify::verify(
        &runtime,
        &receipt,
        &sources,
        args.results.as_deref(),
        args.keep.as_deref(),
    )?;
    if args.json {
        println!("{}", super::json(&report, true)?);
    } else if report.verified {
        println!(
            "verified: results CID {} and {} instructions reproduced (exit code {})",
            report.cid_actual, report.instructions_actual, report.exit_code_actual
        );
        if let Some(p) = &report.cid_provider {
            println!("the provider's results folder hashes to {p}, file for file the re-run's");
        }
        // The re-run takes no checkpoints: "verified" says nothing of the trace, which
        // spot checks, bisect and resume rely on (found by review: a receipt listing 22
        // million made-up snapshots was "verified").
        if let Some(t) = &receipt.trace {
            println!(
                "(its trace of {} snapshots was not checked: `detwasm verify {} --sample K \
                 --snapshots DIR` checks it)",
                t.snapshots.len(),
                args.receipt.display()
            );
        }
    } else {
        println!("NOT VERIFIED");
        for r in &report.reasons {
            // Reasons quote the receipt (its CID, outcome, job id).
            println!("  - {}", super::shown(r));
        }
        if !report.differences.is_empty() {
            println!("differences (re-run vs provider):");
            for d in &report.differences {
                let cids = format!(
                    "re-run {}, provider {}",
                    d.cid_rerun.as_deref().unwrap_or("-"),
                    d.cid_provider.as_deref().unwrap_or("-")
                );
                // Names and lines of the provider's results: shown as untrusted text.
                let path = super::shown(&d.path);
                match d.what {
                    "content" => match d.first_difference {
                        Some(at) => println!("  {path}: differs from byte {at} ({cids})"),
                        None => println!("  {path}: differs ({cids})"),
                    },
                    "missing" => println!("  {path}: missing from the provider's results"),
                    "extra" => println!("  {path}: only in the provider's results"),
                    _ => println!("  {path}: a file in one, a folder in the other ({cids})"),
                }
                if let Some(t) = &d.text {
                    println!("      {}", super::shown(t));
                }
            }
            if report.differences_unlisted > 0 {
                println!("  … and {} more", report.differences_unlisted);
            }
        }
    }
    if let Some(k) = &report.rerun_results {
        eprintln!("re-run results: {k}");
    }
    Ok(if report.verified {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Where the module, inputs and stdin of a job are when not at the paths its receipt (or
/// checkpoints folder) names: `verify` and `resume`.
#[derive(clap::Args, Debug)]
pub struct SourceArgs {
    /// The module file, when not at the path the receipt (or job.json) names.
    #[arg(long, value_name = "FILE")]
    pub module: Option<PathBuf>,

    /// An input folder (or a CAR file of one), when not at the path the receipt (or
    /// job.json) names: HOST:GUEST replaces the input mounted at GUEST, a plain HOST the
    /// job's inputs in order. Repeatable.
    #[arg(long = "input", value_name = "HOST[:GUEST]")]
    pub inputs: Vec<String>,

    /// The file that was the job's stdin (needed when it was not empty).
    #[arg(long, value_name = "FILE")]
    pub stdin: Option<PathBuf>,

    /// Where to look for the module and inputs by CID when they are not where the
    /// receipt (or job.json) says: a folder (the module as a .wasm or .car in it, an
    /// input as a folder named by its CID, as `ipfs get CID` writes it) or a CAR file
    /// holding them. Repeatable; --module and --input win.
    #[arg(long, value_name = "DIR|CAR")]
    pub find: Vec<PathBuf>,

    /// Where to fetch the module and inputs by CID when they are not here at all (not
    /// where the receipt says, nor in --find): an IPFS node or trustless gateway.
    #[command(flatten)]
    pub ipfs: super::fetch::IpfsArgs,

    /// Refuse a job whose fuel budget is above N (the receipt's limits are the
    /// provider's choice, and a re-run spends what they allow). Default: no cap.
    #[arg(long, value_name = "N")]
    pub cap_fuel: Option<u64>,

    /// Refuse a job whose memory limit is above SIZE, e.g. 4GiB. Default: no cap.
    #[arg(long, value_name = "SIZE", value_parser = detwasm_ops::request::parse_size)]
    pub cap_memory: Option<u64>,

    /// Refuse a job whose output quota is above SIZE, e.g. 1GiB. Default: no cap.
    #[arg(long, value_name = "SIZE", value_parser = detwasm_ops::request::parse_size)]
    pub cap_output: Option<u64>,

    /// Refuse a job whose wall-clock timeout (3600 s when it names none) is above SECS.
    /// Default: no cap.
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub cap_timeout: Option<std::time::Duration>,
}

pub fn parse_secs(s: &str) -> Result<std::time::Duration, String> {
    s.parse::<f64>()
        .ok()
        .and_then(|v| std::time::Duration::try_from_secs_f64(v).ok())
        .ok_or_else(|| format!("{s:?} is not a number of seconds"))
}

impl SourceArgs {
    pub fn sources(&self) -> Sources {
        Sources {
            module: self.module.clone(),
            inputs: self
                .inputs
                .iter()
                .map(|s| Sources::parse_input(s))
                .collect(),
            stdin: self.stdin.clone(),
            caps: verify::JobCaps {
                fuel: self.cap_fuel,
                memory: self.cap_memory,
                max_output: self.cap_output,
                timeout: self.cap_timeout,
            },
        }
    }
}

/// `--sample K`: a count of segments, at least one (0 re-ran one segment and said so as
/// if asked: found by review).
fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err(
            "at least one segment is re-run (the last, which ties the trace to the results)".into(),
        ),
        Ok(k) => Ok(k),
        Err(e) => Err(e.to_string()),
    }
}

/// Eight bytes of the system's entropy.
fn entropy() -> anyhow::Result<u64> {
    use std::io::Read;
    let mut b = [0u8; 8];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .context("reading /dev/urandom for the segments' choice")?;
    Ok(u64::from_le_bytes(b))
}

fn spot_check(
    args: &Args,
    runtime: Runtime,
    receipt: &Receipt,
    sources: &Sources,
    k: usize,
    snapshots: &std::path::Path,
) -> anyhow::Result<ExitCode> {
    let trace = receipt.trace.as_ref().ok_or(verify::VerifyError::NoTrace)?;
    let runtime = runtime.with_checkpoints(trace.every);
    let seed = match args.seed {
        Some(s) => s,
        None => entropy()?,
    };
    let segments = verify::choose_segments(trace.snapshots.len() + 1, k, seed);
    let report = verify::spot_check(&runtime, receipt, snapshots, sources, &segments)?;
    if args.json {
        println!("{}", super::json(&report, true)?);
    } else {
        for r in &report.reasons {
            println!("the receipt: {}", super::shown(r));
        }
        for c in &report.checked {
            let what = if c.segment + 1 == report.segments {
                format!(
                    "segment {} (checkpoint {} to the end)",
                    c.segment, c.segment
                )
            } else if c.segment == 0 {
                "segment 0 (the start to checkpoint 1)".to_string()
            } else {
                format!(
                    "segment {} (checkpoint {} to {})",
                    c.segment,
                    c.segment,
                    c.segment + 1
                )
            };
            match &c.reason {
                None => println!("{what}: ok, {} ({:.2} s)", c.actual, c.seconds),
                Some(r) => println!("{what}: MISMATCH: {}", super::shown(r)),
            }
        }
        if report.verified {
            println!(
                "verified: {} of {} segments re-run, each reached what the trace claims",
                report.checked.len(),
                report.segments
            );
        } else {
            println!("NOT VERIFIED");
        }
    }
    Ok(if report.verified {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
