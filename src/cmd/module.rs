//! `detwasm module`: render and check Lilypad-style module specs. Argument parsing and
//! output only; the work is `detwasm_runtime::spec`.

use std::process::ExitCode;

use anyhow::Context;
use detwasm_runtime::engine::{default_cache_dir, EngineOptions};
use detwasm_runtime::spec::{self, check, ModuleDir};
use detwasm_runtime::Runtime;

/// Work with module specs (`lilypad_module.json.tmpl`).
///
/// MODULE is a module folder, a name found on the module path ($DETWASM_MODULE_PATH, then
/// this project's modules/ folder), optionally with a tag (`cowsay:v0.1.0`).
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Print the rendered spec exactly as Lilypad renders it (inputs JSON-encoded), byte
    /// for byte.
    Render {
        /// Module folder or name.
        module: String,
        /// Template input, Lilypad style (`-i Message=moo`). Repeatable.
        #[arg(short = 'i', long = "input", value_name = "KEY=VALUE")]
        inputs: Vec<String>,
    },
    /// Validate a module: template renders, spec can be honoured, entry module matches
    /// its CID, wasm loads with only wasi_snapshot_preview1 imports, and a test run (with
    /// the given inputs, default none) is reproducible.
    Check {
        /// Module folder or name.
        module: String,
        /// Template input for the test run. Repeatable.
        #[arg(short = 'i', long = "input", value_name = "KEY=VALUE")]
        inputs: Vec<String>,
        /// Also allow inputs (a spec's `SourcePath`) from DIR; by default only the module
        /// folder is allowed. Repeatable; adds to $DETWASM_ALLOW_INPUTS (`:`-separated).
        #[arg(long = "allow-input", value_name = "DIR")]
        allow_inputs: Vec<std::path::PathBuf>,
        /// Print the steps as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::Render { module, inputs } => {
            let dir = ModuleDir::open(&module)?;
            let rendered = dir.render(&spec::parse_inputs(&inputs)?)?;
            // Exactly the rendered bytes, nothing added: they are what Lilypad would parse.
            print!("{rendered}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Check {
            module,
            inputs,
            allow_inputs,
            json,
        } => {
            let dir = ModuleDir::open(&module)?;
            let inputs = spec::parse_inputs(&inputs)?;
            let runtime = Runtime::new(EngineOptions {
                cache_dir: default_cache_dir(),
                parallel_compilation: true,
            })?;
            let cwd = std::env::current_dir().context("current directory")?;
            let policy = spec::InputPolicy::from_env_and(&allow_inputs);
            let steps = check::check(&dir, &inputs, &cwd, &policy, &runtime);
            let ok = steps.len() == 5 && steps.iter().all(|s| s.ok);
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "module": dir.dir.display().to_string(),
                        "ok": ok,
                        "steps": steps,
                    }))?
                );
            } else {
                println!("module {}", dir.dir.display());
                for s in &steps {
                    println!(
                        "  {} {}: {}",
                        if s.ok { "ok  " } else { "FAIL" },
                        s.step,
                        s.detail
                    );
                }
                println!(
                    "{}",
                    if ok {
                        "module ok"
                    } else {
                        "module check failed"
                    }
                );
            }
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}
