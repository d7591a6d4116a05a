//! `detwasm fuzz MODULE`: argument parsing and output only; the work is
//! `detwasm_ops::campaign`.

use std::process::ExitCode;

use anyhow::Context;
use detwasm_ops::campaign::{self, Campaign, Param};
use indicatif::{ProgressBar, ProgressStyle};

use super::run::{build_job, runtime, JobArgs};
use detwasm_ops::request::BuiltJob;

/// Run one job many times under host perturbations and report any difference.
///
/// The job is given as to `detwasm run` (a .wasm, a module folder or name, and the same
/// options). Each run perturbs the host in a way that must not matter: inputs copied
/// elsewhere, created in another order with other mtimes; disk or tmpfs; the compiled
/// module cache cold, warm or off; serial compilation; a busy CPU; four copies of the job
/// at once in one process; another process with another environment, time zone, locale
/// and working folder. A difference in results CID, instruction count or exit status is
/// reported with the files that differ (exit 1).
///
/// With --vary, job parameters are changed on purpose, and the report says which of them
/// the output depends on (e.g. `seed`: the module reads random bytes).
///
/// With --checkpoint-every N, every run saves its state every N instructions (in the
/// campaign's temporary folder), and a difference is located: the first segment of N
/// instructions whose end state differs from the reference's, and what differs there
/// (memory byte ranges, globals, the call stack, stdout, files, the random stream,
/// clocks, open files).
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub job: JobArgs,

    /// Runs under perturbations (the first is the reference). The default covers each
    /// perturbation once.
    #[arg(long, default_value_t = 9)]
    pub runs: usize,

    /// Job parameters to vary on purpose, comma-separated: seed, epoch, env, args, inputs.
    #[arg(long, value_name = "LIST")]
    pub vary: Option<String>,

    /// Save each run's state every N instructions and name the segment where a run
    /// first differs, and what differs there (costs a snapshot per checkpoint per run).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub checkpoint_every: Option<u64>,

    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let BuiltJob {
        job,
        staging: _s,
        fetched: _f,
        ..
    } = build_job(&args.job)?;
    let vary = match &args.vary {
        Some(v) => Param::parse_list(v).map_err(|e| anyhow::anyhow!("--vary: {e}"))?,
        None => Vec::new(),
    };
    if args.runs == 0 {
        anyhow::bail!("--runs must be at least 1");
    }
    let mut runtime = runtime(args.job.opts.no_cache)?;
    if let Some(every) = args.checkpoint_every {
        runtime = runtime.with_checkpoints(every);
    }
    let total = (args.runs + vary.len()) as u64;
    // A bar on a terminal only (indicatif hides it otherwise).
    let bar = ProgressBar::new(total).with_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let progress = |done: usize, _: usize, what: &str| {
        bar.set_position(done as u64);
        bar.set_message(what.to_string());
    };
    let report = campaign::run_campaign(
        &runtime,
        &job,
        &Campaign {
            runs: args.runs,
            vary,
            exe: std::env::current_exe().ok(),
            progress: Some(&progress),
        },
    )
    .with_context(|| format!("fuzzing {}", args.job.module.display()));
    bar.finish_and_clear();
    for w in runtime.warnings() {
        eprintln!("detwasm: warning: {w}");
    }
    let report = report?;
    if args.json {
        println!("{}", super::json(&report, true)?);
    } else {
        let b = &report.baseline;
        println!(
            "{} runs; reference: results CID {}, {} instructions, {} (exit code {})",
            report.runs, b.cid, b.instructions, b.outcome, b.exit_code
        );
        if report.divergent {
            println!("NOT DETERMINISTIC under these perturbations:");
            for d in &report.differences {
                println!(
                    "  {}: CID {}, {} instructions, exit code {}",
                    d.perturbation, d.cid, d.instructions, d.exit_code
                );
                // Names and lines of the module's results: shown as untrusted text.
                for f in &d.files {
                    let path = super::shown(&f.path);
                    match f.first_difference {
                        Some(at) => println!("      {path} ({}, from byte {at})", f.what),
                        None => println!("      {path} ({})", f.what),
                    }
                    if let Some(t) = &f.text {
                        println!("        {}", super::shown(t));
                    }
                }
                print_divergence(d.diverged_at.as_ref());
            }
        } else {
            println!("deterministic: every run gave the same CID, instruction count and exit");
        }
        for s in &report.sensitivity {
            if s.sensitive {
                // What changed, precisely: the files, or (when the results are the same)
                // only the instruction count or the exit.
                let what = if s.files.is_empty() {
                    let other: Vec<&str> = s
                        .changed
                        .iter()
                        .map(String::as_str)
                        .filter(|c| *c != "results")
                        .collect();
                    format!(
                        " (changes only the {}; the results are the same)",
                        other.join(", ")
                    )
                } else {
                    format!(" (changes {})", super::shown(&s.files.join(", ")))
                };
                println!("depends on {}: {}{what}", s.param.name(), s.change);
                for l in &s.lines {
                    println!("    {}", super::shown(l));
                }
                let calls = s.param.calls(&report.asked);
                if !calls.is_empty() {
                    println!("    the module {}", calls.join(", "));
                }
                print_divergence(s.diverged_at.as_ref());
            } else {
                println!("does not depend on {}: {}", s.param.name(), s.change);
            }
        }
        // Said even without --vary: the job's seed and epoch reach the module through
        // these calls (never the host's clock or entropy), so its results are a function
        // of them.
        let asked = report.asked.describe();
        let varied: Vec<Param> = report.sensitivity.iter().map(|s| s.param).collect();
        let untried: Vec<&str> = [Param::Seed, Param::Epoch]
            .into_iter()
            .filter(|p| !p.calls(&report.asked).is_empty() && !varied.contains(p))
            .map(|p| p.name())
            .collect();
        // Each varied parameter's calls are under its line; the note is for the others.
        if !asked.is_empty() && (varied.is_empty() || !untried.is_empty()) {
            println!(
                "note: the module {}{}",
                asked.join(", "),
                if untried.is_empty() {
                    String::new()
                } else {
                    format!(
                        " (its results may depend on the job's {}: try --vary {})",
                        untried.join(" and "),
                        untried.join(",")
                    )
                }
            );
        }
    }
    Ok(if report.divergent {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Where a run first differed, under the lines that report it.
fn print_divergence(d: Option<&detwasm_ops::divergence::Divergence>) {
    let Some(d) = d else { return };
    match d.to_instruction {
        Some(to) => println!(
            "    first differs in segment {} (instructions {} to {}), at its checkpoint:",
            d.segment, d.from_instruction, to
        ),
        None => println!(
            "    first differs in segment {} (instruction {} to the end){}",
            d.segment,
            d.from_instruction,
            if d.state.is_empty() { "" } else { ":" }
        ),
    }
    for s in &d.state {
        println!("      {}: {}", s.part, super::shown(&s.detail));
    }
}
