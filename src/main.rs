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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Hash(args) => cmd::hash::run(args),
        Command::Run(args) => cmd::run::run(args),
        Command::Module(args) => cmd::module::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("detwasm: error: {err:#}");
            ExitCode::from(2)
        }
    }
}
