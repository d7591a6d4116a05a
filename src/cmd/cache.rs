//! `detwasm cache`: what the module cache holds, and trimming it; the cache itself is
//! `detwasm_runtime::cache`.

use std::process::ExitCode;

use anyhow::Context;
use detwasm_runtime::cache::ModuleCache;
use detwasm_runtime::engine::default_cache_dir;

/// The module cache: compiled modules kept between runs ($DETWASM_CACHE_DIR, else
/// ~/.cache/detwasm), at most $DETWASM_CACHE_MAX_MB (default 4096) MiB, the least
/// recently used removed first. It never changes a result; `--no-cache` runs without it.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Print the cache folder, its compiled modules' count and bytes, and its cap.
    Info {
        /// As one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Remove the least recently used compiled modules until the cache holds at most
    /// SIZE (default: its cap; 0 empties it), and temporary files left by killed runs.
    Gc {
        /// The most bytes of compiled modules to keep, e.g. 500MiB, or 0.
        #[arg(long, value_name = "SIZE", value_parser = detwasm_ops::request::parse_size)]
        max_size: Option<u64>,
    },
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let dir = default_cache_dir()
        .context("no cache folder: set DETWASM_CACHE_DIR (or HOME or XDG_CACHE_HOME)")?;
    let cache = ModuleCache::new(dir.clone());
    match args.command {
        Command::Info { json } => {
            let (files, bytes) = cache.usage();
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "dir": dir.display().to_string(), "modules": files, "bytes": bytes,
                        "max_bytes": cache.max_bytes(), "trusted": cache.dir_is_trusted(),
                    })
                );
            } else {
                println!("{}", dir.display());
                eprintln!(
                    "{files} compiled modules, {bytes} bytes (at most {} kept)",
                    cache.max_bytes()
                );
            }
        }
        Command::Gc { max_size } => {
            // Another user's folder is not ours to empty (it is not used either).
            if !cache.dir_is_trusted() {
                anyhow::bail!(
                    "{}: not this user's private folder; detwasm neither uses nor trims it",
                    dir.display()
                );
            }
            let before = cache.usage();
            let (files, bytes) = cache.gc(max_size.unwrap_or(cache.max_bytes()));
            eprintln!(
                "removed {} compiled modules ({} bytes); {files} left, {bytes} bytes",
                before.0.saturating_sub(files),
                before.1.saturating_sub(bytes)
            );
        }
    }
    for w in cache.warnings() {
        eprintln!("detwasm: warning: {w}");
    }
    Ok(ExitCode::SUCCESS)
}
