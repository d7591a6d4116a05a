//! `detwasm module`: create, render, check and pack Lilypad-style modules. Argument parsing and
//! output only; the work is `detwasm_jobspec` and `detwasm_ops::{check, scaffold}`.

use std::process::ExitCode;

use anyhow::Context;
use detwasm_jobspec::{self as spec, ModuleDir};
use detwasm_ops::check;
use detwasm_ops::scaffold;
use detwasm_runtime::engine::{default_cache_dir, EngineOptions};
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
        #[arg(
            short = 'i',
            long = "input-value",
            alias = "input",
            value_name = "KEY=VALUE"
        )]
        inputs: Vec<String>,
    },
    /// Validate a module: template renders, spec can be honoured, entry module matches
    /// its CID, wasm loads with only wasi_snapshot_preview1 imports, and a test run (with
    /// the given inputs, default none) is reproducible.
    Check {
        /// Module folder or name.
        module: String,
        /// Template input for the test run. Repeatable.
        #[arg(
            short = 'i',
            long = "input-value",
            alias = "input",
            value_name = "KEY=VALUE"
        )]
        inputs: Vec<String>,
        /// Also allow inputs (a spec's `SourcePath`) from DIR; by default only the module
        /// folder is allowed. Repeatable; adds to $DETWASM_ALLOW_INPUTS (`:`-separated).
        #[arg(long = "allow-input", value_name = "DIR")]
        allow_inputs: Vec<std::path::PathBuf>,
        /// Print the steps as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Lay out a new module folder: source, a reproducible build script, a template that
    /// names the module by path and CID, a README; then build it (unless --no-build), so
    /// that `detwasm module check` passes on it as generated.
    New {
        /// The module's name (lower-case letters, digits, `-`, `_`).
        name: String,
        /// Source language: rust (cargo, wasm32-wasip1) or c (clang, wasi-libc).
        #[arg(long, default_value = "rust", value_parser = ["rust", "c"])]
        lang: String,
        /// Folder to create (default: ./NAME).
        #[arg(long, value_name = "DIR")]
        dir: Option<std::path::PathBuf>,
        /// Only lay out the files; do not run build.sh.
        #[arg(long)]
        no_build: bool,
    },
    /// Write the module's wasm as a CAR (NAME.car beside it) and print its CID, so the
    /// template can name the module by CID and the CAR can be imported into any IPFS node
    /// (`ipfs dag import NAME.car`).
    Pack {
        /// Module folder or name.
        module: String,
        /// Template input, if the template needs one to render. Repeatable.
        #[arg(
            short = 'i',
            long = "input-value",
            alias = "input",
            value_name = "KEY=VALUE"
        )]
        inputs: Vec<String>,
        /// CID profile (the template's CID was made with it; `ipfs add` uses v0).
        #[arg(long, default_value = "unixfs-v0-2015", value_parser = ["unixfs-v0-2015", "unixfs-v1-2025"])]
        profile: String,
    },
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    // One meaning per flag: `--input` is a host folder everywhere else (`run --input`),
    // so a template value is `-i`/`--input-value`, as in `run`. The old spelling still
    // works here, with a note. Found by use: `module check --input` and `run --input`
    // meant different things.
    if std::env::args().any(|a| a == "--input" || a.starts_with("--input=")) {
        eprintln!(
            "detwasm: note: `module ... --input KEY=VALUE` is deprecated: use -i/--input-value \
             (as `detwasm run -i`); `--input` names a host folder in `run`"
        );
    }
    match args.command {
        Command::New {
            name,
            lang,
            dir,
            no_build,
        } => {
            let lang: scaffold::Lang = lang.parse().map_err(anyhow::Error::msg)?;
            let dir = dir.unwrap_or_else(|| std::path::PathBuf::from(&name));
            let files = scaffold::new_module(&dir, &name, lang)?;
            println!("created {}:", dir.display());
            for f in &files {
                println!("  {}", f.display());
            }
            if !no_build {
                let exe = std::env::current_exe().context("finding the detwasm executable")?;
                let status = std::process::Command::new("bash")
                    .arg("build.sh")
                    .current_dir(&dir)
                    .env("DETWASM", exe)
                    .status()
                    .context("running build.sh")?;
                if !status.success() {
                    anyhow::bail!(
                        "{}/build.sh failed ({status}); the files are in place: fix the build, then run it again",
                        dir.display()
                    );
                }
            }
            println!("next: detwasm module check {} -i Message=hi", dir.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Pack {
            module,
            inputs,
            profile,
        } => {
            let dir = ModuleDir::open(&module)?;
            let profile: detwasm_runtime::Profile = profile
                .parse()
                .map_err(|e| anyhow::anyhow!("--profile: {e}"))?;
            let packed = scaffold::pack(&dir, &spec::parse_inputs(&inputs)?, profile)?;
            println!("{}", packed.cid);
            // The paths and the CID come from the template.
            eprintln!(
                "wrote {} ({})",
                super::shown(&packed.car.display().to_string()),
                super::shown(&packed.wasm.display().to_string())
            );
            match &packed.template_cid {
                Some(c) if *c != packed.cid => eprintln!(
                    "detwasm: warning: the template names {}, not {}: rebuild (build.sh) or update its CID",
                    super::shown(c),
                    packed.cid
                ),
                Some(_) => {}
                None => eprintln!(
                    "the template names the module by Path only: add \"CID\": \"{}\" to its EntryModule",
                    packed.cid
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
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
                    super::json(
                        &serde_json::json!({
                            "module": dir.dir.display().to_string(),
                            "ok": ok,
                            "steps": steps,
                        }),
                        true
                    )?
                );
            } else {
                println!("module {}", dir.dir.display());
                for s in &steps {
                    println!(
                        "  {} {}: {}",
                        if s.ok { "ok  " } else { "FAIL" },
                        s.step,
                        // It may quote the template, the module's imports or its output.
                        super::shown(&s.detail)
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
