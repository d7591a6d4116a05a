//! `detwasm run MODULE.wasm`: argument parsing and output only; the work is
//! `detwasm_runtime::Runtime::run`.

use anyhow::Context;
use detwasm_jobspec as spec;
use detwasm_ops::request::{BuiltJob, EpochValue, JobRequest, Size};
use detwasm_runtime::deliver::Durability;
use detwasm_runtime::engine::{default_cache_dir, EngineOptions};
use detwasm_runtime::run::Checkpointing;
use detwasm_runtime::{Destination, Receipt, Runtime};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Run a WebAssembly module (wasm32-wasip1) deterministically and print its results CID.
///
/// The results directory has the Bacalhau layout: stdout, stderr, exitCode and one
/// folder per output volume (default `outputs`, the guest's /outputs). The same job gives
/// the same results CID and instruction count on every host.
///
/// Compiled modules are cached in $DETWASM_CACHE_DIR, else $XDG_CACHE_HOME/detwasm, else
/// ~/.cache/detwasm, keeping at most $DETWASM_CACHE_MAX_MB (default 4096) of the most
/// recently used; delete that folder to clear it.
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

    /// Publish the results to the IPFS node of --ipfs-api (or $DETWASM_IPFS_API) once
    /// they are delivered, as `ipfs dag import` of their CAR (pinned), and check that the
    /// node holds them under the receipt's CID. Results of a run that is not verifiable
    /// are not published. If publishing fails, a warning says so and the exit code is 1;
    /// the results stay delivered.
    #[arg(long)]
    pub publish: bool,

    #[command(flatten)]
    pub checkpoints: CheckpointArgs,

    #[command(flatten)]
    pub live: LiveArgs,
}

/// Whether the module's output is shown as it runs (`detwasm run` and `detwasm resume`).
#[derive(clap::Args, Debug)]
pub struct LiveArgs {
    /// Show what the module writes to stdout and stderr as it runs, on detwasm's stderr
    /// (detwasm's stdout is the CID or the receipt). The default when stderr is a
    /// terminal. Either way both are captured in the results (`stdout`, `stderr`).
    #[arg(long, conflicts_with = "quiet")]
    pub live: bool,

    /// Do not show the module's output as it runs, nor the end of its stderr when it
    /// traps.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

impl LiveArgs {
    /// Whether to show the output live.
    pub fn on(&self) -> bool {
        self.live || (!self.quiet && std::io::stderr().is_terminal())
    }

    /// `runtime`, showing each guest's output live on stderr when [`Self::on`], and what
    /// to [`LiveDone::wait`] for once the run has ended and the runtime is dropped.
    pub fn apply(&self, runtime: Runtime) -> (Runtime, LiveDone) {
        if !self.on() {
            return (runtime, LiveDone(None));
        }
        // The guest never waits for the terminal: its writes are queued for a thread
        // that prints them, at most LIVE_QUEUE chunks of LIVE_CHUNK bytes, and what does
        // not fit is dropped from the live view (the results have all of it). Found by
        // review: printing inline, a stderr nobody read held the guest past its timeout,
        // and a reader that went away killed detwasm by SIGPIPE, results lost.
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(LIVE_QUEUE);
        let (done, finished) = std::sync::mpsc::channel::<()>();
        let shown = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let _ = std::thread::Builder::new()
            .name("detwasm-live".into())
            .spawn(move || {
                use std::io::Write;
                // A closed stderr is EPIPE here, not the end of detwasm.
                // SAFETY: a signal mask of this thread only, from a set built here.
                unsafe {
                    let mut set: libc::sigset_t = std::mem::zeroed();
                    libc::sigemptyset(&mut set);
                    libc::sigaddset(&mut set, libc::SIGPIPE);
                    libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
                }
                let mut err = std::io::stderr();
                for chunk in rx {
                    if err.write_all(&chunk).and_then(|()| err.flush()).is_err() {
                        break;
                    }
                }
                let _ = done.send(());
            });
        let runtime = runtime.with_echo(std::sync::Arc::new(move |_stderr: bool, bytes: &[u8]| {
            for chunk in bytes.chunks(LIVE_CHUNK) {
                if tx.try_send(chunk.to_vec()).is_err() {
                    if !shown.swap(true, std::sync::atomic::Ordering::Relaxed) {
                        let _ = tx.try_send(
                            b"\n[detwasm: live output falling behind; the rest is in the results]\n"
                                .to_vec(),
                        );
                    }
                    return;
                }
            }
        }));
        (runtime, LiveDone(Some(finished)))
    }

    /// After a run that did not exit 0 and whose output was not shown live: the last
    /// lines of its stderr (a Rust panic's message is there, where the trap only says
    /// `unreachable`).
    pub fn show_stderr_tail(&self, receipt: &Receipt) {
        if self.on() || self.quiet || receipt.exit_code == 0 {
            return;
        }
        let path = Path::new(&receipt.results_dir).join("stderr");
        let Ok(bytes) = std::fs::read(&path) else {
            return;
        };
        let tail = detwasm_ops::check::stderr_tail(&bytes, detwasm_ops::check::STDERR_TAIL_LINES);
        if !tail.is_empty() {
            eprintln!("the end of its stderr ({}):", path.display());
            for line in tail.lines() {
                eprintln!("  | {line}");
            }
        }
    }
}

/// The end of the live output's printing thread ([`LiveArgs::apply`]).
pub struct LiveDone(Option<std::sync::mpsc::Receiver<()>>);

impl LiveDone {
    /// Waits (at most a second: a stderr nobody reads must not hold detwasm) until the
    /// live output queued so far is printed, so that it comes before the summary. Call
    /// after the runtime that echoes is dropped.
    pub fn wait(self) {
        if let Some(finished) = self.0 {
            let _ = finished.recv_timeout(std::time::Duration::from_secs(1));
        }
    }
}

/// Chunks of live output queued for the terminal at most, and their size: 1 MiB.
const LIVE_QUEUE: usize = 16;
const LIVE_CHUNK: usize = 64 << 10;

/// Where and how often a run saves snapshots (`detwasm run` and `detwasm resume`).
#[derive(clap::Args, Debug)]
pub struct CheckpointArgs {
    /// Save a snapshot of the job's whole state (memories, call stack, files, stdout so
    /// far, clocks, …) into DIR at each checkpoint, one folder per checkpoint
    /// (DIR/000001, …), with the job's host details in DIR/job.json. DIR must be new or
    /// empty. Each snapshot's IPFS CID goes into the receipt's `trace`; `detwasm resume
    /// DIR/000003` finishes the job from there with the same receipt. The results and
    /// their CID are the same as without checkpoints. If --timeout stops the run, a
    /// snapshot of where it stopped is saved too (DIR/timeout) and the receipt's
    /// `trace.resume` names it: `detwasm resume` finishes the job.
    #[arg(long, value_name = "DIR")]
    pub checkpoints: Option<PathBuf>,

    /// Instructions between checkpoints: one is taken at the first fuel check at or after
    /// each multiple of N (so they are at least 10,000,000 apart). Default
    /// 1,000,000,000: a tenth to a seventh of a second of guest work on a 2-core x86-64
    /// machine (CPython and the probe run 7 to 11 billion a second there). Part of what
    /// a trace means: a verifier compares traces of the same N.
    #[arg(long, value_name = "N", requires = "checkpoints")]
    pub checkpoint_every: Option<u64>,
}

/// Instructions between checkpoints when `--checkpoint-every` is not given.
pub const DEFAULT_CHECKPOINT_EVERY: u64 = 1_000_000_000;

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
    /// from DIR. By default only the module folder (the job file's folder) is allowed.
    /// Repeatable; adds to
    /// $DETWASM_ALLOW_INPUTS (a `:`-separated list of folders).
    #[arg(long = "allow-input", value_name = "DIR")]
    pub allow_inputs: Vec<PathBuf>,

    #[command(flatten)]
    pub ipfs: super::fetch::IpfsArgs,

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
    /// Mount host directory HOST read-only at GUEST (default /inputs). HOST may be a CAR
    /// file (`*.car`) of a folder: it is checked block by block and unpacked (at most
    /// 1 GiB of files, 100,000 entries) into a temporary folder for the run. Repeatable.
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

    /// File whose bytes are the module's stdin (default: empty); `-` reads detwasm's own
    /// stdin to its end before the run.
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

    /// Instruction budget (fuel), at least 1: WebAssembly instructions the module may
    /// run. Running out ends the run the same way on every host (`out_of_fuel`, a
    /// verifiable result). Default: the spec's `detwasm.fuel`, else 1e9 per second of
    /// the job's timeout (3.6e12 for the default hour). Hosts run 3.5e9 to 1.2e10
    /// instructions a second, so such a budget ends a job by fuel well before its
    /// timeout.
    ///
    /// Each limit (--fuel, --memory, --max-output, --timeout) is combined with what a
    /// module spec or job file states in one way: the tighter of the two wins. A flag
    /// lowers what a spec asks for (with a note), never raises it; without the flag, the
    /// default is the most a spec gets.
    #[arg(long, value_name = "N")]
    pub fuel: Option<u64>,

    /// Linear memory limit (all memories together), e.g. 256MiB [default: 1GiB].
    /// memory.grow beyond it fails.
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<String>,

    /// Bytes the module may write to stdout, stderr and output volumes together
    /// [default: 256MiB].
    #[arg(long, value_name = "SIZE")]
    pub max_output: Option<String>,

    /// Wall-clock safety net in seconds [default: the spec's, else 3600]: at most
    /// 2592000 (30 days); larger, zero, negative or non-finite values are refused. A run
    /// it stops is marked unverifiable (fuel, not time, is the deterministic limit).
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

impl JobArgs {
    /// The options as a [`JobRequest`] (the form `detwasm batch` lines and the Python
    /// package use too): flags are parsed here, everything else is the runtime's.
    pub fn request(&self) -> anyhow::Result<JobRequest> {
        let o = &*self.opts;
        let pairs = |flag: &str, kvs: &[String]| -> anyhow::Result<Vec<(String, String)>> {
            kvs.iter()
                .map(|kv| {
                    kv.split_once('=')
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .with_context(|| format!("{flag} `{kv}`: expected K=V"))
                })
                .collect()
        };
        Ok(JobRequest {
            module: self.module.clone(),
            args: self.args.clone(),
            env: pairs("--env", &o.env)?,
            inputs: o.inputs.clone(),
            dirs: o.dirs.clone(),
            input_values: spec::parse_inputs(&self.input_values)?
                .into_iter()
                .collect(),
            stdin: o.stdin.clone(),
            seed: o.seed,
            epoch: Some(EpochValue::Text(o.epoch.clone())),
            fuel: o.fuel,
            memory: o.memory.clone().map(Size::Text),
            max_output: o.max_output.clone().map(Size::Text),
            timeout: o.timeout,
            entry: Some(o.entry.clone()),
            profile: Some(o.profile.clone()),
            skip_hidden: o.skip_hidden,
            no_outputs: o.no_outputs,
            output: None,
            allow_inputs: self.allow_inputs.clone(),
            ipfs: self.ipfs.remote(),
        })
    }
}

/// The job the command line describes (with the staged copies of a job file's file
/// inputs: keep it until the run has ended). A job file's notes are printed here.
pub fn build_job(j: &JobArgs) -> anyhow::Result<BuiltJob> {
    let cwd = std::env::current_dir().context("current directory")?;
    let mut request = j.request()?;
    // `--stdin -`: detwasm's own stdin, read to its end before the run (the job's stdin
    // is bytes, named in the receipt by their hash, wherever they came from).
    let from_stdin = request.stdin.as_deref() == Some(Path::new("-"));
    if from_stdin {
        request.stdin = None;
    }
    let mut built = request
        .build(&cwd)
        .map_err(|e| anyhow::anyhow!(e.for_cli()))?;
    if from_stdin {
        use std::io::Read;
        std::io::stdin()
            .read_to_end(&mut built.job.stdin)
            .context("reading the job's stdin from detwasm's stdin (--stdin -)")?;
    }
    for n in &built.notes {
        eprintln!("detwasm: note: {}", super::shown(n));
    }
    Ok(built)
}

/// The runtime the command line asks for (the module cache unless `no_cache`).
pub fn runtime(no_cache: bool) -> anyhow::Result<Runtime> {
    Ok(Runtime::new(EngineOptions {
        cache_dir: if no_cache { None } else { default_cache_dir() },
        parallel_compilation: true,
    })?)
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let BuiltJob {
        job,
        staging: _s,
        fetched: _f,
        ..
    } = build_job(&args.job)?;
    let module = &args.job.module;
    let (mut runtime, live) = args.live.apply(runtime(args.job.opts.no_cache)?);
    if args.checkpoints.checkpoints.is_some() {
        runtime = runtime.with_checkpoints(
            args.checkpoints
                .checkpoint_every
                .unwrap_or(DEFAULT_CHECKPOINT_EVERY),
        );
    }
    let dest = match &args.output {
        Some(p) => Destination::At(p.clone()),
        None => Destination::Under(std::env::current_dir().context("current directory")?),
    };
    let how = Checkpointing {
        save: args.checkpoints.checkpoints.as_deref(),
        resume: None,
        only_last: false,
        on_saved: None,
    };
    let result = runtime
        .run_staged_with(&job, &dest, &how)
        .and_then(|s| s.publish(Durability::PerFile));
    // The runtime never prints; its warnings (e.g. a module cache other users can write,
    // which it ignored) are shown here, each once, whether the run succeeded or not.
    for w in runtime.warnings() {
        eprintln!("detwasm: warning: {w}");
    }
    drop(runtime);
    live.wait();
    let receipt = result.with_context(|| format!("running {}", module.display()))?;
    let code = report(
        &receipt,
        args.json,
        args.receipt.as_deref(),
        args.checkpoints.checkpoints.as_deref(),
    );
    args.live.show_stderr_tail(&receipt);
    if args.publish && !publish(&receipt, &args.job.ipfs) {
        return Ok(ExitCode::from(1));
    }
    Ok(code)
}

/// Publishes a run's delivered results (`--publish`); false, with a warning, when they
/// were not published.
fn publish(receipt: &Receipt, ipfs: &super::fetch::IpfsArgs) -> bool {
    if !receipt.verifiable {
        eprintln!("detwasm: warning: not published: this run is not verifiable");
        return false;
    }
    let options =
        detwasm_hasher::Options::profile(receipt.profile).with_hidden(!receipt.skip_hidden);
    let dir = Path::new(&receipt.results_dir);
    match detwasm_ops::ipfs::publish_path(&ipfs.remote(), dir, options) {
        Ok((cid, url)) if cid == receipt.cid => {
            eprintln!("published:    {cid} to {url}");
            true
        }
        Ok((cid, _)) => {
            eprintln!(
                "detwasm: warning: {} hashes to {cid} now, not the receipt's {}: changed since the run; published, but not as the receipt's results",
                dir.display(),
                receipt.cid
            );
            false
        }
        Err(e) => {
            eprintln!(
                "detwasm: warning: the results are at {}, but were not published: {}",
                dir.display(),
                super::shown(&e.to_string())
            );
            false
        }
    }
}

/// Prints a receipt (the CID on stdout and a summary on stderr, or the JSON) and writes
/// it to `receipt_file`; the exit code of a run that delivered it: 0 for an exit 0 that
/// is verifiable, else 1.
pub fn report(
    receipt: &Receipt,
    json: bool,
    receipt_file: Option<&Path>,
    checkpoints: Option<&Path>,
) -> ExitCode {
    let text = super::json(receipt, true).expect("a receipt is JSON");
    // The results are delivered: from here on a failure is reported, but does not turn
    // the run into a failed one. The receipt is written before anything is printed, so a
    // closed stdout cannot prevent it.
    let receipt_failure = receipt_file.and_then(|path| {
        detwasm_runtime::deliver::write_file_atomically(path, format!("{text}\n").as_bytes())
            .err()
            .map(|e| (path, e))
    });
    if json {
        println!("{text}");
    } else {
        println!("{}", receipt.cid);
        eprintln!("exit code:    {}", receipt.exit_code);
        if let Some(t) = &receipt.trap {
            eprintln!("ended by:     {t}");
        }
        eprintln!("instructions: {}", receipt.instructions);
        eprintln!("results:      {}", receipt.results_dir);
        eprintln!("job id:       {}", receipt.job_id);
        if let Some(h) = &receipt.host {
            eprintln!(
                "took:         {:.2} s (module {} in {:.2} s, guest {:.2} s), guest memory {} MiB at most",
                h.wall_ms as f64 / 1000.0,
                match h.module.as_str() {
                    "cache" => "from the cache",
                    "memory" => "already loaded",
                    _ => "compiled",
                },
                h.load_ms as f64 / 1000.0,
                h.run_ms as f64 / 1000.0,
                h.guest_memory_peak_bytes.div_ceil(1 << 20),
            );
        }
        if let (Some(trace), Some(dir)) = (&receipt.trace, checkpoints) {
            eprintln!(
                "checkpoints:  {} snapshots (every {} instructions) in {}",
                trace.snapshots.len(),
                trace.every,
                dir.display()
            );
        }
        if !receipt.verifiable {
            eprintln!("warning: the wall-clock timeout stopped this run; it is not verifiable");
        }
        if let (Some(at), Some(dir)) = (
            receipt.trace.as_ref().and_then(|t| t.resume.as_ref()),
            checkpoints,
        ) {
            eprintln!(
                "a snapshot was saved when it stopped: finish the job with `detwasm resume {}`",
                dir.join(at).display()
            );
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
    if receipt.exit_code == 0 && receipt.verifiable {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
