//! The `detwasm` command line: argument parsing and output only. Every piece of logic
//! lives in `detwasm-hasher` (CIDs, CAR) or `detwasm-runtime` (jobs, sandbox, specs).

mod cmd;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Deterministic WebAssembly runtime: run a module, get a results CID anyone can verify.
#[derive(Parser)]
#[command(name = "detwasm", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Compute the IPFS CID of a file or directory, exactly as `ipfs add` does.
    Hash(cmd::hash::Args),
    /// Run a module (a .wasm file, a module folder or a module name) deterministically.
    Run(cmd::run::Args),
    /// Work with Lilypad-style module specs.
    Module(cmd::module::Args),
    /// Finish a job from one of its snapshots (`detwasm run --checkpoints DIR`).
    Resume(cmd::resume::Args),
    /// Re-run the job a receipt describes and say whether its result is reproduced.
    Verify(cmd::verify::Args),
    /// Run a job many times under host perturbations; report any difference, and what the
    /// output depends on.
    Fuzz(cmd::fuzz::Args),
    // The help text is `cmd::batch::Args`'s (the keys of a line, and who a jobs file
    // belongs to).
    Batch(cmd::batch::Args),
    /// The module cache: what it holds, and trimming it.
    Cache(cmd::cache::Args),
    // The help text is `cmd::unpack::Args`'s.
    Unpack(cmd::unpack::Args),
    // The help text is `cmd::fetch::Args`'s.
    Fetch(cmd::fetch::Args),
}

/// The hidden first argument that makes this program a compile worker
/// (`detwasm_runtime::compile_worker`): it compiles the module on its stdin and exits.
const COMPILE_WORKER_ARG: &str = "__compile-worker";

fn main() -> ExitCode {
    restore_sigpipe();
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == COMPILE_WORKER_ARG)
    {
        let status = detwasm_runtime::compile_worker::serve();
        return ExitCode::from(u8::try_from(status).unwrap_or(1));
    }
    name_compile_worker();
    let cli = Cli::parse();
    // With --json, a failure is JSON on stdout too (`{"error": …, "exit_code": 2}`), so
    // a program reading stdout always gets an object to parse. `batch --json` is its
    // summary on stderr, whose stdout is receipt lines: not here.
    let json = match &cli.command {
        Command::Hash(a) => a.json,
        Command::Run(a) => a.json,
        Command::Resume(a) => a.json,
        Command::Verify(a) => a.json,
        Command::Fuzz(a) => a.json,
        Command::Unpack(a) => a.json,
        Command::Fetch(a) => a.json,
        Command::Module(_) | Command::Batch(_) | Command::Cache(_) => false,
    };
    let result = match cli.command {
        Command::Hash(args) => cmd::hash::run(args),
        Command::Run(args) => cmd::run::run(args),
        Command::Module(args) => cmd::module::run(args),
        Command::Resume(args) => cmd::resume::run(args),
        Command::Verify(args) => cmd::verify::run(args),
        Command::Fuzz(args) => cmd::fuzz::run(args),
        Command::Batch(args) => cmd::batch::run(args),
        Command::Cache(args) => cmd::cache::run(args),
        Command::Unpack(args) => cmd::unpack::run(args),
        Command::Fetch(args) => cmd::fetch::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            // A message may quote a job file, a CAR's names or a server's answer.
            let message = cmd::shown(&format!("{err:#}"));
            eprintln!("detwasm: error: {message}");
            if json {
                println!("{}", serde_json::json!({"error": message, "exit_code": 2}));
            }
            ExitCode::from(2)
        }
    }
}

/// Names this very program as the compile worker of jobs with a deadline, so that a
/// compile is killed at the deadline instead of running on in this process. On Linux by
/// `/proc/self/exe`: the file this process runs, even if `detwasm` was replaced or
/// removed since it started (a worker of another build would be refused).
fn name_compile_worker() {
    let me = std::path::PathBuf::from("/proc/self/exe");
    let program = if me.exists() {
        Some(me)
    } else {
        std::env::current_exe().ok()
    };
    if let Some(program) = program {
        detwasm_runtime::compile_worker::set_compile_worker(
            program,
            vec![COMPILE_WORKER_ARG.into()],
        );
    }
}

/// Restores SIGPIPE's default action (the Rust runtime ignores it), so that output into a
/// closed pipe (`detwasm run --json … | head -c0`, a consumer that went away) ends the
/// process quietly, the way `cat` or `ls` end, instead of `println!` panicking on
/// `EPIPE`. By then a run's results and receipt have been delivered (see
/// `cmd::run`), so nothing is lost. Rejected: handling `BrokenPipe` at every write
/// (every `println!`/`eprintln!` of every subcommand would need it, and one missed is a
/// panic).
fn restore_sigpipe() {
    // SAFETY: called first thing in main, before any thread exists; setting a signal's
    // disposition to SIG_DFL has no other precondition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
