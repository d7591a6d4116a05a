//! `detwasm run MODULE.wasm`: argument parsing and output only; the work is
//! `detwasm_runtime::Runtime::run`.

use anyhow::{bail, Context};
use detwasm_runtime::engine::{default_cache_dir, EngineOptions};
use detwasm_runtime::job::{Epoch, Job, Limits, Output, ResultsOptions, DEFAULT_INPUT_PATH};
use detwasm_runtime::{spec, Destination, Profile, Runtime};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Run a WebAssembly module (wasm32-wasip1) deterministically and print its results CID.
///
/// The results directory has the Bacalhau layout: stdout, stderr, exitCode and one
/// folder per output volume (default `outputs`, the guest's /outputs). The same job gives
/// the same results CID and instruction count on every host.
///
/// Compiled modules are cached in $DETWASM_CACHE_DIR, else $XDG_CACHE_HOME/detwasm, else
/// ~/.cache/detwasm; delete that folder to clear it.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub job: JobArgs,

    /// Results directory (must not exist, or be empty). Default: a new folder in the
    /// current directory named after the job id (`<job id>-2`, … when the job ran there
    /// before; earlier results are never touched).
    #[arg(long, short = 'o', value_name = "DIR")]
    pub output: Option<PathBuf>,

    /// Print the receipt as one JSON object.
    #[arg(long)]
    pub json: bool,

    /// Also write the receipt (JSON) to FILE (atomically: a temporary file renamed into
    /// place). If that fails after the results were delivered, a warning says so and the
    /// exit code still follows the run (0 or 1, not 2): the results exist and their CID
    /// is printed, so the run is not reported as failed.
    #[arg(long, value_name = "FILE")]
    pub receipt: Option<PathBuf>,
}

/// What defines a job on the command line: the module and every option that goes into
/// the job (shared by `detwasm run` and `detwasm fuzz`).
#[derive(clap::Args, Debug)]
pub struct JobArgs {
    /// The module: a .wasm file (or WebAssembly text), or a module folder or name
    /// (`cowsay`, `cowsay:v0.1.0`, `./my-module`) whose lilypad_module.json.tmpl gives the
    /// job; names are looked up in $DETWASM_MODULE_PATH, then this project's modules/.
    /// Or a Bacalhau v1 job file (`job.yaml`, `job.yml`, `job.json`) of a wasm task.
    pub module: PathBuf,

    /// Template input of a module folder or name, Lilypad style (`-i Message=moo`).
    /// Repeatable.
    #[arg(long = "input-value", short = 'i', value_name = "KEY=VALUE")]
    pub input_values: Vec<String>,

    /// Let a module's spec (or a job file) take inputs (`SourcePath`, often from `-i`)
    /// from DIR. By default only the module folder (the job file's folder) is allowed. Repeatable; adds to
    /// $DETWASM_ALLOW_INPUTS (a `:`-separated list of folders).
    #[arg(long = "allow-input", value_name = "DIR")]
    pub allow_inputs: Vec<PathBuf>,

    /// Arguments passed to the module (argv[1..]); argv[0] is always `module.wasm`.
    #[arg(last = true)]
    pub args: Vec<String>,

    #[command(flatten)]
    pub opts: Box<Options>,
}

/// The job options of `detwasm run` and `detwasm fuzz` (boxed: they are large next to the
/// other commands').
#[derive(clap::Args, Debug)]
pub struct Options {
    /// Mount host directory HOST read-only at GUEST (default /inputs). Repeatable.
    #[arg(long = "input", value_name = "HOST[:GUEST]")]
    pub inputs: Vec<String>,

    /// A writable folder, wasmtime's spelling: the guest sees a copy of HOST at GUEST
    /// (default /inputs; `/` allowed) that it may change; HOST itself is never written.
    /// The folder's final state is delivered as a results volume named after GUEST's last
    /// component (`root` for `/`) and is part of the results CID. Repeatable.
    #[arg(long = "dir", value_name = "HOST[::GUEST]")]
    pub dirs: Vec<String>,

    /// Environment variable for the module (the module sees nothing else). Repeatable.
    #[arg(long = "env", short = 'e', value_name = "K=V")]
    pub env: Vec<String>,

    /// File whose bytes are the module's stdin (default: empty).
    #[arg(long, value_name = "FILE")]
    pub stdin: Option<PathBuf>,

    /// Seed of the module's random stream.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// What the module's first wall-clock read returns: seconds since 1970 or RFC 3339.
    #[arg(
        long,
        value_name = "SECONDS|RFC3339",
        default_value = "2022-01-01T00:00:00Z"
    )]
    pub epoch: String,

    /// Instruction budget (fuel), at least 1. Running out ends the run, the same way every
    /// time.
    #[arg(long, value_name = "N", default_value_t = detwasm_runtime::job::DEFAULT_FUEL)]
    pub fuel: u64,

    /// Linear memory limit, e.g. 256MiB. memory.grow beyond it fails.
    #[arg(long, value_name = "SIZE", default_value = "1GiB")]
    pub memory: String,

    /// Bytes the module may write to stdout, stderr and output volumes together.
    #[arg(long, value_name = "SIZE", default_value = "256MiB")]
    pub max_output: String,

    /// Wall-clock safety net in seconds (default 3600, at most 2592000 = 30 days; larger,
    /// zero, negative or non-finite values are refused). A run it stops is marked
    /// unverifiable.
    #[arg(long, value_name = "SECS", allow_negative_numbers = true)]
    pub timeout: Option<f64>,

    /// Exported function to call.
    #[arg(long, default_value = "_start")]
    pub entry: String,

    /// CID profile of the results (and module and input) CIDs.
    #[arg(long, default_value = "unixfs-v0-2015", value_parser = ["unixfs-v0-2015", "unixfs-v1-2025"])]
    pub profile: String,

    /// Leave hidden files out of the results CID, as Lilypad's `ipfs add -Qrn` does.
    #[arg(long)]
    pub skip_hidden: bool,

    /// Compile without reading or writing the module cache.
    #[arg(long)]
    pub no_cache: bool,

    /// Mount no output volume (not even the default /outputs): the guest's preopens are
    /// then only its --input and --dir folders, as with `wasmtime run`.
    #[arg(long)]
    pub no_outputs: bool,
}

/// Parses `256MiB`, `1GiB`, `64KiB`, `1MB`, `1000` (bytes).
pub fn parse_size(s: &str) -> anyhow::Result<u64> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|e: std::num::ParseIntError| {
        if *e.kind() == std::num::IntErrorKind::PosOverflow {
            anyhow::anyhow!("size `{s}` is too large (at most {} bytes)", u64::MAX)
        } else {
            anyhow::anyhow!("size `{s}`: expected a number with an optional unit")
        }
    })?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        other => bail!("size `{s}`: unknown unit `{other}` (use B, KiB, MiB, GiB, KB, MB, GB)"),
    };
    n.checked_mul(mult)
        .with_context(|| format!("size `{s}` is too large (at most {} bytes)", u64::MAX))
}

/// The job the command line describes, and the staged copies of a job file's file inputs
/// (keep them until the run has ended).
pub fn build_job(j: &JobArgs) -> anyhow::Result<(Job, Option<spec::v1::Staging>)> {
    let JobArgs {
        module,
        input_values,
        allow_inputs,
        args: guest_args,
        opts,
    } = j;
    let args = &**opts;
    // A module folder or name, or a Bacalhau v1 job file: the job comes from its spec
    // (detwasm_runtime::spec); the flags below add to it (args, env, inputs) or tighten
    // it (memory, timeout).
    let mut staging = None;
    let from_spec = if spec::v1::is_job_file(module) {
        if !input_values.is_empty() {
            bail!("-i/--input-value KEY=VALUE is for module templates; a job file has no template inputs");
        }
        let policy = spec::InputPolicy::from_env_and(allow_inputs);
        let cwd = std::env::current_dir().context("current directory")?;
        let loaded = spec::v1::load(module, &cwd, &policy)?;
        for n in &loaded.notes {
            eprintln!("detwasm: note: {n}");
        }
        staging = loaded.staging;
        Some(loaded.job)
    } else if spec::is_module_reference(module) {
        let module = spec::ModuleDir::open(&module.to_string_lossy())?;
        let cwd = std::env::current_dir().context("current directory")?;
        let policy = spec::InputPolicy::from_env_and(allow_inputs);
        Some(
            module
                .job(&spec::parse_inputs(input_values)?, &cwd, &policy)?
                .job,
        )
    } else if !input_values.is_empty() {
        bail!("-i/--input-value KEY=VALUE is for module folders and names; to mount a folder use --input HOST[:GUEST]")
    } else if !allow_inputs.is_empty() {
        bail!("--allow-input DIR is for module folders and names (it limits what their spec may mount); for a .wasm, mount folders with --input HOST[:GUEST]")
    } else {
        None
    };
    let is_module = from_spec.is_some();
    let mut job = match from_spec {
        Some(job) => job,
        None => {
            let bytes = std::fs::read(module)
                .with_context(|| format!("reading module {}", module.display()))?;
            Job::new(bytes)
                .with_source(module.display().to_string())
                .with_entry(args.entry.clone())
        }
    }
    .with_seed(args.seed)
    .with_epoch(Epoch::parse(&args.epoch)?);
    job.args.extend(guest_args.iter().cloned());
    for kv in &args.env {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--env `{kv}`: expected K=V"))?;
        job.env.push((k.to_string(), v.to_string()));
    }
    for spec in &args.inputs {
        let (host, guest) = match spec.rsplit_once(':') {
            Some((h, g)) if g.starts_with('/') => (h, g),
            _ => (spec.as_str(), DEFAULT_INPUT_PATH),
        };
        job = job.push_input(host, guest);
    }
    for spec in &args.dirs {
        let (host, guest) = spec
            .split_once("::")
            .unwrap_or((spec.as_str(), DEFAULT_INPUT_PATH));
        job = job.push_dir(host, guest);
    }
    // An input folder that cannot be listed is named with the OS's reason (the job's own
    // check only says that it is missing or unreadable).
    for input in &job.inputs {
        if let Err(e) = std::fs::read_dir(&input.host) {
            bail!("input folder {}: {e}", input.host.display());
        }
    }
    if let Some(f) = &args.stdin {
        job.stdin =
            std::fs::read(f).with_context(|| format!("reading stdin file {}", f.display()))?;
    }
    if args.no_outputs {
        job.outputs = Vec::new();
    } else if !is_module {
        job.outputs = vec![Output {
            name: detwasm_runtime::job::DEFAULT_OUTPUT_NAME.into(),
            guest: detwasm_runtime::job::DEFAULT_OUTPUT_PATH.into(),
        }];
    }
    let timeout = args.timeout.map(parse_timeout).transpose()?;
    if args.fuel == 0 {
        bail!("--fuel must be at least 1 (the run would end before its first instruction)");
    }
    let memory = parse_size(&args.memory).context("--memory")?;
    job.limits = Limits {
        fuel: args.fuel,
        memory: if is_module {
            memory.min(job.limits.memory)
        } else {
            memory
        },
        max_output: parse_size(&args.max_output).context("--max-output")?,
        timeout: if is_module {
            timeout.or(job.limits.timeout)
        } else {
            timeout
        },
    };
    let profile: Profile = args
        .profile
        .parse()
        .map_err(|e| anyhow::anyhow!("--profile: {e}"))?;
    job.results = ResultsOptions {
        profile,
        skip_hidden: args.skip_hidden,
    };
    Ok((job, staging))
}

/// The runtime the command line asks for (the module cache unless `no_cache`).
pub fn runtime(no_cache: bool) -> anyhow::Result<Runtime> {
    Ok(Runtime::new(EngineOptions {
        cache_dir: if no_cache { None } else { default_cache_dir() },
        parallel_compilation: true,
    })?)
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (job, _staging) = build_job(&args.job)?;
    let module = &args.job.module;
    let runtime = runtime(args.job.opts.no_cache)?;
    let dest = match &args.output {
        Some(p) => Destination::At(p.clone()),
        None => Destination::Under(std::env::current_dir().context("current directory")?),
    };
    let result = runtime.run(&job, &dest);
    // The runtime never prints; its warnings (e.g. a module cache other users can write,
    // which it ignored) are shown here, each once, whether the run succeeded or not.
    for w in runtime.warnings() {
        eprintln!("detwasm: warning: {w}");
    }
    let receipt = result.with_context(|| format!("running {}", module.display()))?;

    let json = serde_json::to_string_pretty(&receipt)?;
    // The results are delivered: from here on a failure is reported, but does not turn
    // the run into a failed one. The receipt is written before anything is printed, so a
    // closed stdout cannot prevent it.
    let receipt_failure = args.receipt.as_ref().and_then(|path| {
        detwasm_runtime::deliver::write_file_atomically(path, format!("{json}\n").as_bytes())
            .err()
            .map(|e| (path, e))
    });
    if args.json {
        println!("{json}");
    } else {
        println!("{}", receipt.cid);
        eprintln!("exit code:    {}", receipt.exit_code);
        if let Some(t) = &receipt.trap {
            eprintln!("ended by:     {t}");
        }
        eprintln!("instructions: {}", receipt.instructions);
        eprintln!("results:      {}", receipt.results_dir);
        eprintln!("job id:       {}", receipt.job_id);
        if !receipt.verifiable {
            eprintln!("warning: the wall-clock timeout stopped this run; it is not verifiable");
        }
    }
    if let Some((path, e)) = receipt_failure {
        eprintln!(
            "detwasm: warning: the results were delivered at {}, but the receipt could not \
             be written to {}: {e}",
            receipt.results_dir,
            path.display()
        );
    }
    Ok(if receipt.exit_code == 0 && receipt.verifiable {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `--timeout SECS` as a duration: positive, finite and at most
/// [`detwasm_runtime::job::MAX_TIMEOUT`]. Checked before converting, because
/// `Duration::from_secs_f64` panics on values it cannot represent (negative, NaN,
/// infinite, above u64::MAX seconds).
pub fn parse_timeout(secs: f64) -> anyhow::Result<Duration> {
    let max = detwasm_runtime::job::MAX_TIMEOUT;
    if !(secs.is_finite() && secs > 0.0) {
        bail!("--timeout `{secs}`: must be a positive number of seconds");
    }
    if secs > max.as_secs_f64() {
        bail!(
            "--timeout `{secs}`: at most {} seconds (30 days)",
            max.as_secs()
        );
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::{parse_size, parse_timeout};

    #[test]
    fn timeouts_are_positive_finite_and_capped() {
        assert_eq!(parse_timeout(1.5).unwrap().as_millis(), 1500);
        assert_eq!(parse_timeout(2_592_000.0).unwrap().as_secs(), 2_592_000);
        for bad in [
            0.0,
            -1.0,
            f64::NAN,
            f64::INFINITY,
            2_592_000.5,
            1e300,
            f64::MAX,
        ] {
            assert!(parse_timeout(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes_that_overflow_are_errors() {
        let e = parse_size("99999999999999999999").unwrap_err().to_string();
        assert!(e.contains("too large"), "{e}");
        let e = parse_size("17179869184GiB").unwrap_err().to_string();
        assert!(e.contains("too large"), "{e}");
        assert_eq!(parse_size("16GiB").unwrap(), 16 << 30);
    }

    #[test]
    fn sizes_parse_with_binary_and_decimal_units() {
        assert_eq!(parse_size("256MiB").unwrap(), 256 << 20);
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("10kb").unwrap(), 10_000);
        assert_eq!(parse_size("42").unwrap(), 42);
        assert!(parse_size("1XB").is_err());
        assert!(parse_size("MiB").is_err());
    }
}
