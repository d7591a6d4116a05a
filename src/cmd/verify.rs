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
/// Exit status: 0 verified, 1 not verified (a mismatch; the report says which), 2 the job
/// cannot be re-run (module or input missing or not the receipt's, another engine).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The receipt (JSON).
    pub receipt: PathBuf,

    /// The provider's results folder, to compare file by file with the re-run.
    #[arg(long, value_name = "DIR")]
    pub results: Option<PathBuf>,

    /// The module file, when not at the path the receipt names.
    #[arg(long, value_name = "FILE")]
    pub module: Option<PathBuf>,

    /// An input folder, when not at the path the receipt names: HOST:GUEST replaces the
    /// input mounted at GUEST, a plain HOST the receipt's inputs in order. Repeatable.
    #[arg(long = "input", value_name = "HOST[:GUEST]")]
    pub inputs: Vec<String>,

    /// The file that was the job's stdin (needed when it was not empty).
    #[arg(long, value_name = "FILE")]
    pub stdin: Option<PathBuf>,

    /// Keep the re-run's results folder here (default: a temporary folder, removed).
    #[arg(long, value_name = "DIR")]
    pub keep: Option<PathBuf>,

    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,

    /// Compile without reading or writing the module cache.
    #[arg(long)]
    pub no_cache: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&args.receipt)
        .with_context(|| format!("reading receipt {}", args.receipt.display()))?;
    let receipt: Receipt = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a detwasm receipt", args.receipt.display()))?;
    let sources = Sources {
        module: args.module.clone(),
        inputs: args
            .inputs
            .iter()
            .map(|s| Sources::parse_input(s))
            .collect(),
        stdin: args.stdin.clone(),
    };
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
    let report = verify::verify(
        &runtime,
        &receipt,
        &sources,
        args.results.as_deref(),
        args.keep.as_deref(),
    )?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if report.verified {
        println!(
            "verified: results CID {} and {} instructions reproduced (exit code {})",
            report.cid_actual, report.instructions_actual, report.exit_code_actual
        );
        if let Some(p) = &report.cid_provider {
            println!("the provider's results folder hashes to {p}, file for file the re-run's");
        }
    } else {
        println!("NOT VERIFIED");
        for r in &report.reasons {
            println!("  - {r}");
        }
        if !report.differences.is_empty() {
            println!("differences (re-run vs provider):");
            for d in &report.differences {
                let cids = format!(
                    "re-run {}, provider {}",
                    d.cid_rerun.as_deref().unwrap_or("-"),
                    d.cid_provider.as_deref().unwrap_or("-")
                );
                match d.what {
                    "content" => match d.first_difference {
                        Some(at) => println!("  {}: differs from byte {at} ({cids})", d.path),
                        None => println!("  {}: differs ({cids})", d.path),
                    },
                    "missing" => println!("  {}: missing from the provider's results", d.path),
                    "extra" => println!("  {}: only in the provider's results", d.path),
                    _ => println!(
                        "  {}: a file in one, a folder in the other ({cids})",
                        d.path
                    ),
                }
                if let Some(t) = &d.text {
                    println!("      {t}");
                }
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
