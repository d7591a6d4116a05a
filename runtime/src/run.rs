//! Running a job: compile (or load from the cache), check imports, grant capabilities,
//! instantiate, call the entry with fuel, memory and output limits, deliver the results
//! directory atomically and hash it.
//!
//! # The wall-clock safety net
//!
//! A job's guest (instantiation, the start function, `_initialize`, the entry) runs on
//! a fiber of [`GUEST_THREAD_STACK`] bytes, through wasmtime's async API. The module asks
//! the host for its fuel a slice at a time ([`crate::meter`]), and the host reads the
//! clock then: once the job's deadline has passed, the refuel fails and the run ends as
//! [`Outcome::Timeout`]. The guest's hot loops carry no extra code for it, and the
//! instruction count is the same as a run without a deadline. Callers stay synchronous.
//! Rejected: epoch interruption with a ticker thread (what detwasm did before; its cost
//! is measured in [`crate::engine::ENGINE_SETTINGS`]).

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};

use wasmtime::{Engine, ExternType, FuncType, Linker, Store, Trap, ValType};

use crate::cache::ModuleCache;
use crate::capabilities;
use crate::checkpoint;
use crate::deliver;
pub use crate::deliver::Destination;
pub use crate::engine::GUEST_THREAD_STACK;
use crate::engine::{self, EngineOptions};
use crate::error::RunError;
use crate::job::{InputIdentity, Job, JobIdentity};
use crate::limiter::JobLimiter;
use crate::meter::{self, Meter, Stop};
use crate::receipt::{HostStats, InputRecord, JobRecord, Outcome, Receipt};
use crate::results;
use crate::wasi::{self, host::Fatal, Ctx};

/// The host failure of a run whose native stack ran out before its metered stack limit.
pub const NATIVE_STACK_EXHAUSTED: &str = "the native stack was exhausted before the metered \
    stack limit (the module's frames keep far more values natively than they hold); the \
    depth would depend on this CPU, so the run has no result";

/// Modules kept loaded per runtime (see `Runtime::loaded`).
const MAX_LOADED_MODULES: usize = 64;

/// A configured engine and its linker; runs any number of jobs (one at a time per call;
/// `run` takes `&self`, so several threads may run jobs at once).
pub struct Runtime {
    engine: Engine,
    linker: Linker<Ctx>,
    cache: Option<ModuleCache>,
    fingerprint: String,
    /// Modules this runtime already compiled or loaded, by blake3 of their bytes, so a
    /// process that runs many jobs of one module loads it once. Results never depend on
    /// it (compiled code is a function of the bytes and the engine).
    loaded: Mutex<HashMap<[u8; 32], wasmtime::Module>>,
    /// The CID of the module a job of this runtime ran last ([`Self::prepare_by`]), by
    /// the very bytes it was hashed from: the runs of one job (a spot check's segments,
    /// which share its `Job`) hash the module once. Jobs that read their module anew (a
    /// batch's lines, the Python bindings' calls) hash it each time.
    last_module_cid: Mutex<Option<ModuleCid>>,
    /// Take a checkpoint every this many instructions ([`Self::with_checkpoints`]).
    checkpoint_every: Option<u64>,
    /// Fuel handed to the guest at a time ([`Self::with_fuel_slice`]).
    fuel_slice: u64,
    /// Checkpoints taken by this runtime's runs so far.
    checkpoints_taken: std::sync::atomic::AtomicU64,
    /// Shown every guest's stdout and stderr live ([`Self::with_echo`]).
    echo: Option<crate::wasi::host::Echo>,
}

/// A module's CID, and the bytes it is of ([`Runtime::last_module_cid`]).
///
/// Known by the allocation of the bytes, not by a hash of them: the clone of the `Arc`
/// kept here holds the allocation, so no other module's bytes can be at that address,
/// and nobody can change bytes an `Arc` shares. One entry only: a runtime that runs many
/// modules keeps no more than one of them alive. Rejected: a map by blake3 of the bytes
/// (each run would still hash CPython's 26 MB to find its entry).
struct ModuleCid {
    bytes: std::sync::Arc<Vec<u8>>,
    profile: results::Profile,
    cid: String,
}

/// A run whose results are written but not yet published (see [`Runtime::run_staged`]).
pub struct StagedRun {
    receipt: Receipt,
    staged: deliver::Staged<String>,
    asked: wasi::host::Asked,
}

impl StagedRun {
    /// What the guest asked the host for that its results may depend on (clocks, random
    /// bytes, directory listings): for messages, never part of the result.
    pub fn asked(&self) -> wasi::host::Asked {
        self.asked
    }

    /// The folder the results will be published in.
    pub fn parent(&self) -> &std::path::Path {
        self.staged.parent()
    }

    /// Publishes the results (see [`deliver::Staged::publish`]) and returns the receipt.
    pub fn publish(self, durability: deliver::Durability) -> Result<Receipt, RunError> {
        let StagedRun {
            mut receipt,
            staged,
            ..
        } = self;
        let (dir, cid) = staged.publish(durability)?;
        receipt.cid = cid;
        receipt.results_dir = dir.display().to_string();
        Ok(receipt)
    }
}

/// A job whose module and inputs have been hashed.
pub struct Prepared {
    pub identity: JobIdentity,
    pub job_id: String,
}

impl Runtime {
    pub fn new(opts: EngineOptions) -> Result<Self, RunError> {
        let engine = engine::new_engine(&opts)?;
        let mut linker = Linker::new(&engine);
        wasi::add_to_linker(&mut linker).map_err(|e| RunError::Engine(e.to_string()))?;
        meter::define(&mut linker).map_err(|e| RunError::Engine(e.to_string()))?;
        Ok(Runtime {
            engine,
            linker,
            cache: opts.cache_dir.map(ModuleCache::new),
            fingerprint: engine::fingerprint(),
            loaded: Mutex::new(HashMap::new()),
            last_module_cid: Mutex::new(None),
            checkpoint_every: None,
            fuel_slice: meter::SLICE,
            checkpoints_taken: Default::default(),
            echo: None,
        })
    }

    /// Checkpoints this runtime's runs have taken so far ([`Self::with_checkpoints`]).
    pub fn checkpoints_taken(&self) -> u64 {
        self.checkpoints_taken
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A runtime that hands out fuel `slice` instructions at a time instead of
    /// [`meter::SLICE`], so that refuels (and so checkpoints) come that often: for tests
    /// of short runs. The count a run that traps reports depends on where refuels are
    /// (see [`crate::passes::fuel`]): receipts are only comparable at one slice.
    pub fn with_fuel_slice(mut self, slice: u64) -> Self {
        self.fuel_slice = slice;
        self
    }

    /// A runtime whose jobs take a checkpoint at the first refuel at or after every
    /// `every` instructions ([`crate::meter`]): modules are compiled with the unwind pass
    /// ([`crate::passes::unwind`]), and at each checkpoint the guest unwinds its whole
    /// stack into the unwind memory, and is rewound and goes on. Receipts are the same
    /// as without (the tests compare them on every kind of module). Without
    /// [`Checkpointing::save`] a checkpoint is taken and resumed in place; with it, each
    /// is saved as a snapshot ([`crate::checkpoint`]) that [`Checkpointing::resume`]
    /// goes on from.
    pub fn with_checkpoints(mut self, every: u64) -> Self {
        self.checkpoint_every = Some(every);
        // Modules loaded before were compiled without the unwind pass.
        if let Ok(mut m) = self.loaded.lock() {
            m.clear();
        }
        self
    }

    /// Shows what each run's guest writes to stdout and stderr to `echo` as it writes it
    /// ([`crate::wasi::host::WasiHost::echo_to`]); the results capture it as before.
    pub fn with_echo(mut self, echo: crate::wasi::host::Echo) -> Self {
        self.echo = Some(echo);
        self
    }

    fn unwind(&self) -> bool {
        self.checkpoint_every.is_some()
    }

    /// How often this runtime's jobs take a checkpoint ([`Self::with_checkpoints`]), if
    /// they do.
    pub fn checkpoint_every(&self) -> Option<u64> {
        self.checkpoint_every
    }

    /// The fuel handed to the guest at a time ([`Self::with_fuel_slice`]): a runtime
    /// that must take the same checkpoints as this one needs the same.
    pub fn fuel_slice(&self) -> u64 {
        self.fuel_slice
    }

    /// The engine fingerprint (part of every job id).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Warnings for the caller to show (the runtime never prints), each once: e.g. a
    /// module cache folder other users can write, which is ignored (see
    /// [`ModuleCache`]).
    pub fn warnings(&self) -> Vec<String> {
        self.cache
            .as_ref()
            .map(|c| c.warnings())
            .unwrap_or_default()
    }

    /// Hashes the module and inputs and computes the job id.
    pub fn prepare(&self, job: &Job) -> Result<Prepared, RunError> {
        self.prepare_by(job, None)
    }

    /// The CID of `bytes` as a file, hashed once for every run of the same bytes in a row
    /// ([`ModuleCid`]).
    fn module_cid(
        &self,
        bytes: &std::sync::Arc<Vec<u8>>,
        profile: results::Profile,
    ) -> Result<String, RunError> {
        let known = |m: &ModuleCid| std::sync::Arc::ptr_eq(&m.bytes, bytes) && m.profile == profile;
        if let Some(m) = self
            .last_module_cid
            .lock()
            .ok()
            .as_deref()
            .and_then(Option::as_ref)
        {
            if known(m) {
                return Ok(m.cid.clone());
            }
        }
        let cid = results::cid_of_bytes(bytes, profile)?;
        if let Ok(mut last) = self.last_module_cid.lock() {
            *last = Some(ModuleCid {
                bytes: bytes.clone(),
                profile,
                cid: cid.clone(),
            });
        }
        Ok(cid)
    }

    /// [`Self::prepare`], the hashing given up at `deadline` ([`RunError::InputTimeout`],
    /// see [`results::cid_of_dir_by`]); each distinct input folder is hashed once
    /// ([`results::InputCids`]).
    pub fn prepare_by(
        &self,
        job: &Job,
        deadline: Option<engine::Deadline>,
    ) -> Result<Prepared, RunError> {
        job.validate()?;
        let profile = job.results.profile;
        let module_cid = self.module_cid(&job.module.bytes, profile)?;
        let mut inputs = Vec::new();
        let mut cids = results::InputCids::default();
        for input in &job.inputs {
            // The guest sees hidden files, so they are part of the input's identity. The
            // tree hashed is the one the guest sees: a symlinked input root is followed
            // (as the mount follows it), never hashed as a symlink node.
            let root = std::fs::canonicalize(&input.host)
                .map_err(|e| RunError::io(format!("input {}", input.host.display()), e))?;
            let cid = cids.of(&root, profile, deadline.map(|d| (d.at, d.timeout)))?;
            inputs.push(InputIdentity {
                guest: input.guest.clone(),
                cid,
                writable: input.writable,
            });
        }
        let identity = JobIdentity {
            format: JobIdentity::FORMAT,
            module_cid,
            argv0: job.argv0.clone(),
            entry: job.entry.clone(),
            args: job.args.clone(),
            env: job.env.clone(),
            stdin_blake3: blake3::hash(&job.stdin).to_hex().to_string(),
            inputs,
            outputs: job.outputs.clone(),
            seed: job.seed,
            epoch_unix_nanos: job.epoch.unix_nanos,
            limits: job.limits,
            results: job.results,
            engine: self.fingerprint.clone(),
        };
        let job_id = identity.job_id();
        Ok(Prepared { identity, job_id })
    }

    /// Checks that the module can be run with `entry` — only preview1 imports with the
    /// right types, the entry exported with type `() -> ()` — and then compiles it (or
    /// loads it from the cache).
    ///
    /// The check reads the module's import and export sections before compiling
    /// ([`engine::read_interface`]): a large module with an unknown import fails in
    /// milliseconds instead of after minutes of compiling. Rejected: checking the compiled
    /// `Module`'s imports (what this did before; correct, but only after the full cost).
    pub fn load(&self, bytes: &[u8], entry: &str) -> Result<wasmtime::Module, RunError> {
        self.load_by(bytes, entry, None)
    }

    /// [`Self::load`], a compile ended at `deadline` ([`crate::compile::compile_by`]).
    pub fn load_by(
        &self,
        bytes: &[u8],
        entry: &str,
        deadline: Option<engine::Deadline>,
    ) -> Result<wasmtime::Module, RunError> {
        Ok(self.load_from(bytes, entry, deadline)?.0)
    }

    /// [`Self::load_by`] when no compile is needed (this runtime holds the module, or its
    /// cache does), `None` otherwise: for loading a module while another thread hashes
    /// it, without compiling one a check may not need.
    pub fn load_compiled(
        &self,
        bytes: &[u8],
        entry: &str,
    ) -> Result<Option<wasmtime::Module>, RunError> {
        Ok(self
            .load_or_compile(bytes, entry, None, false)?
            .map(|m| m.0))
    }

    /// [`Self::load_by`], and where the module came from: `memory`, `cache` or
    /// `compiled` (for the receipt's host statistics).
    fn load_from(
        &self,
        bytes: &[u8],
        entry: &str,
        deadline: Option<engine::Deadline>,
    ) -> Result<(wasmtime::Module, &'static str), RunError> {
        self.load_or_compile(bytes, entry, deadline, true)?
            .ok_or_else(|| RunError::Engine("the module was neither loaded nor compiled".into()))
    }

    /// [`Self::load_from`], `None` instead of a compile unless `compile`.
    fn load_or_compile(
        &self,
        bytes: &[u8],
        entry: &str,
        deadline: Option<engine::Deadline>,
        compile: bool,
    ) -> Result<Option<(wasmtime::Module, &'static str)>, RunError> {
        let binary = engine::to_binary(bytes)?;
        let key = crate::cache::module_hash(&binary);
        let known = self.loaded.lock().ok().and_then(|m| m.get(&key).cloned());
        let cached = match (&known, &self.cache) {
            (None, Some(cache)) => cache.load(&self.engine, &key, self.unwind()),
            _ => None,
        };
        if !compile && known.is_none() && cached.is_none() {
            return Ok(None);
        }
        // The shape scan before the interface is read: reading it keeps every type's
        // signature and text, 240 MB for a 2 MB type section the scan refuses. The scan
        // is linear and cheap; `engine::compile` runs it again on a cache miss (and on the
        // rewritten module). Rejected: limits of its own in `read_interface` (a second
        // list of limits to keep in step with `passes::shape`). A module this runtime
        // already loaded, or one the cache holds compiled, passed it (it depends on the
        // bytes alone, and the cache key names the scan's version and limits), so it is
        // not scanned again: for CPython that was a sixth of a spot check's host time per
        // segment, and a quarter of a warm start.
        if known.is_none() && cached.is_none() {
            crate::passes::shape::check(&binary, &crate::passes::shape::LIMITS)
                .map_err(|r| RunError::TooComplex(r.to_string()))?;
        }
        self.check_interface(&engine::read_interface(&binary, entry)?, entry)?;
        let (module, from) = match (known, cached, &self.cache) {
            (Some(m), _, _) => (m, "memory"),
            (None, Some(m), _) => (m, "cache"),
            // The binary, not `bytes`: text is translated once, above.
            (None, None, Some(cache)) => (
                cache.compile_and_store(&self.engine, &binary, &key, deadline, self.unwind())?,
                "compiled",
            ),
            (None, None, None) => (
                crate::compile::compile_by(&self.engine, &binary, deadline, self.unwind())?,
                "compiled",
            ),
        };
        if let Ok(mut m) = self.loaded.lock() {
            if m.len() >= MAX_LOADED_MODULES {
                m.clear();
            }
            m.insert(key, module.clone());
        }
        Ok(Some((module, from)))
    }

    fn check_interface(&self, interface: &engine::Interface, entry: &str) -> Result<(), RunError> {
        let mut store = Store::new(&self.engine, dummy_ctx());
        for (module, name, sig) in &interface.imports {
            let missing = || RunError::UnknownImport {
                module: module.clone(),
                name: name.clone(),
            };
            if module != wasi::MODULE {
                return Err(missing());
            }
            let Ok(ours) = self.linker.get(&mut store, module, name) else {
                return Err(missing());
            };
            let ExternType::Func(have) = ours.ty(&store) else {
                return Err(missing());
            };
            let Some(sig) = sig else {
                // A memory, table or global import: detwasm provides only functions.
                return Err(missing());
            };
            if !sig
                .numeric
                .as_ref()
                .is_some_and(|(p, r)| same_func_type(p, r, &have))
            {
                return Err(RunError::BadImportType {
                    module: module.clone(),
                    name: name.clone(),
                    detail: format!("the module expects {}, detwasm provides {have}", sig.text),
                });
            }
        }
        match &interface.entry {
            Some(Some(sig)) => match &sig.numeric {
                Some((p, r)) if p.is_empty() && r.is_empty() => Ok(()),
                _ => Err(RunError::BadEntryType(entry.to_string())),
            },
            // An export of that name that is not a function, or none at all.
            _ => Err(RunError::MissingEntry(entry.to_string())),
        }
    }

    /// Runs `job` and delivers its results directory to `dest`. Traps, running out of
    /// fuel, the memory limit and the output quota are outcomes (recorded, results still
    /// delivered); an `Err` means nothing was delivered.
    pub fn run(&self, job: &Job, dest: &Destination) -> Result<Receipt, RunError> {
        self.run_staged(job, dest)?
            .publish(deliver::Durability::PerFile)
    }

    /// Runs `job` and writes its results into a staging folder beside `dest`, not yet
    /// published: [`StagedRun::publish`] gives them their final name and completes the
    /// receipt. Dropping the [`StagedRun`] removes the staging folder.
    pub fn run_staged(&self, job: &Job, dest: &Destination) -> Result<StagedRun, RunError> {
        self.run_staged_with(job, dest, &Checkpointing::default())
    }

    /// [`Self::run_staged`], saving a snapshot at each checkpoint into `how.save` and/or
    /// going on from the snapshot `how.resume` (of this same job) instead of starting.
    /// Both need a runtime that takes checkpoints ([`Self::with_checkpoints`], the same
    /// interval as the snapshot's). The receipt is the uninterrupted run's, with the
    /// trace of snapshots when they were saved.
    pub fn run_staged_with(
        &self,
        job: &Job,
        dest: &Destination,
        how: &Checkpointing<'_>,
    ) -> Result<StagedRun, RunError> {
        let ran = self.run_guest(job, Some(dest), how, None)?;
        self.stage(job, dest, ran, how)
    }

    /// Runs one segment of a job for a spot check: from its start (`resume` `None`) or
    /// from snapshot `resume`, to its next checkpoint, whose snapshot is saved into
    /// `save` (new or empty) and whose CID is returned; or, when the job ends first, to
    /// its end, with the receipt of the whole job (results delivered into `dest`).
    pub fn run_segment(
        &self,
        job: &Job,
        resume: Option<&checkpoint::Snapshot>,
        save: &Path,
        dest: &Destination,
    ) -> Result<Segment, RunError> {
        let how = Checkpointing {
            save: Some(save),
            resume,
            only_last: false,
            on_saved: None,
        };
        let ran = self.run_guest(job, Some(dest), &how, Some(1))?;
        if ran.stopped {
            let cid = ran.trace.last().cloned().unwrap_or_default();
            return Ok(Segment::Checkpoint { cid });
        }
        Ok(Segment::End(Box::new(
            self.stage(job, dest, ran, &how)?
                .publish(deliver::Durability::PerFile)?,
        )))
    }

    /// Everything of a run up to its results: checks, grants, hashes, compiles, runs the
    /// guest (saving and resuming snapshots as `how` says, and stopping after `stop_after`
    /// new snapshots when given).
    fn run_guest(
        &self,
        job: &Job,
        dest: Option<&Destination>,
        how: &Checkpointing<'_>,
        stop_after: Option<usize>,
    ) -> Result<Ran, RunError> {
        // The wall-clock safety net covers the whole job from here: hashing, loading and
        // compiling the module (a compile that overruns it is an error, see
        // [`crate::compile::compile_by`]), and running the guest.
        let deadline = engine::Deadline::after(job.limits.safety_timeout());
        let started = std::time::Instant::now();
        job.validate()?;
        if (how.save.is_some() || how.resume.is_some()) && !self.unwind() {
            return Err(RunError::Engine(
                "saving or resuming snapshots needs a runtime that takes checkpoints".into(),
            ));
        }
        // Inputs are scanned (and their host identities stamped) before they are hashed,
        // and checked against the stamps after the run: a change at any point in between
        // is caught, so the receipt's input CIDs are those of what the guest read.
        let mut host = capabilities::grant_by(job, deadline)?;
        if let Some(echo) = &self.echo {
            host.echo_to(echo.clone());
        }
        let prepared = self.prepare_by(job, deadline)?;
        let record = job_record(job, &prepared.identity);
        let mut trace = Vec::new();
        if let Some(snapshot) = how.resume {
            snapshot.check_job(&prepared.job_id, &self.fingerprint)?;
            snapshot.restore_host(&mut host, job.limits.max_output)?;
            trace = snapshot.state.trace.clone();
            if !snapshot.state.off_trace {
                trace.push(match &snapshot.cid {
                    Some(cid) => cid.clone(),
                    None => results::cid_of_dir(&snapshot.dir, job.results.profile, true)?,
                });
            }
        }
        let mut sink = match how.save {
            Some(dir) => Some(checkpoint_sink(dir, &record, trace.clone(), how.only_last)?),
            None => None,
        };
        let loading = std::time::Instant::now();
        let (module, module_from) = self.load_from(&job.module.bytes, &job.entry, deadline)?;
        let load_ms = millis(loading.elapsed());
        if let Some(dest) = dest {
            deliver::check(dest)?;
        }
        let info = checkpoint::JobInfo {
            job_id: &prepared.job_id,
            record: &record,
            results: job.results,
            engine: &self.fingerprint,
        };

        // The guest runs on a fiber of [`GUEST_THREAD_STACK`] bytes, large enough for the
        // deepest metered stack ([`crate::passes::stack`]) and the host frames above it;
        // the fiber is driven from a thread of its own of the same size, so nothing of the
        // run depends on the caller's thread.
        let running = std::time::Instant::now();
        let (outcome, instructions, host, stopped, guest_peak) = std::thread::scope(|s| {
            std::thread::Builder::new()
                .name("detwasm-guest".into())
                .stack_size(GUEST_THREAD_STACK)
                .spawn_scoped(s, || {
                    self.execute(
                        job,
                        &module,
                        host,
                        deadline,
                        how.resume,
                        sink.as_mut().map(|sink| SaveTo {
                            sink,
                            info: &info,
                            stop_after,
                            on_saved: how.on_saved,
                        }),
                    )
                })
                .map_err(|e| RunError::io("starting the guest thread", e))?
                .join()
                .map_err(|_| RunError::Engine("the guest thread panicked".into()))?
        })?;
        let mut resume_at = None;
        if let Some(s) = sink {
            trace = s.trace;
            resume_at = s.resume;
        }

        let stats = HostStats {
            wall_ms: 0,
            load_ms,
            run_ms: millis(running.elapsed()),
            module: module_from.to_string(),
            guest_memory_peak_bytes: guest_peak,
            process_peak_rss_bytes: 0,
        };
        Ok(Ran {
            outcome,
            instructions,
            host,
            stopped,
            trace,
            resume_at,
            prepared,
            record,
            stats,
            started,
        })
    }

    /// Stages the results of a run ([`Self::run_guest`]) and makes its receipt.
    fn stage(
        &self,
        job: &Job,
        dest: &Destination,
        ran: Ran,
        how: &Checkpointing<'_>,
    ) -> Result<StagedRun, RunError> {
        let Ran {
            outcome,
            instructions,
            host,
            trace,
            resume_at,
            prepared,
            record,
            mut stats,
            started,
            ..
        } = ran;
        // Staged, then synced and renamed into place by `publish` (see [`crate::deliver`]).
        let trap = outcome.message(&job.limits);
        let staged = deliver::stage(dest, &prepared.job_id, |staging| {
            let named = match dest {
                Destination::At(p) => p.clone(),
                Destination::Under(d) => d.join(&prepared.job_id),
            };
            write_results(staging, &named, job, &host, &outcome, trap.as_deref())?;
            results::cid_of_dir(staging, job.results.profile, !job.results.skip_hidden)
        })?;
        stats.wall_ms = millis(started.elapsed());
        stats.process_peak_rss_bytes = process_peak_rss();

        let id = &prepared.identity;
        let receipt = Receipt {
            cid: String::new(),
            profile: job.results.profile,
            skip_hidden: job.results.skip_hidden,
            exit_code: outcome.exit_code(),
            outcome: outcome.kind().to_string(),
            trap,
            instructions,
            verifiable: outcome.verifiable(),
            job_id: prepared.job_id.clone(),
            module_cid: id.module_cid.clone(),
            engine: self.fingerprint.clone(),
            detwasm_version: env!("CARGO_PKG_VERSION").to_string(),
            results_dir: String::new(),
            job: record,
            trace: (how.save.is_some() || how.resume.is_some()).then(|| crate::receipt::Trace {
                every: self.checkpoint_every.unwrap_or(0),
                snapshots: trace,
                resume: resume_at,
                unwind: Some(crate::passes::unwind::PASS_VERSION.into()),
            }),
            host: Some(stats),
        };
        Ok(StagedRun {
            receipt,
            staged,
            asked: host.asked,
        })
    }

    /// Instantiates and calls the entry. Returns the outcome, the fuel consumed and the
    /// guest's final state (stdout, stderr, output volumes).
    fn execute(
        &self,
        job: &Job,
        module: &wasmtime::Module,
        host: wasi::host::WasiHost,
        deadline: Option<engine::Deadline>,
        resume: Option<&checkpoint::Snapshot>,
        mut save: Option<SaveTo<'_, '_>>,
    ) -> Result<(Outcome, u64, wasi::host::WasiHost, bool, u64), RunError> {
        let limits = JobLimiter::new(job.limits.memory);
        let limits = if self.unwind() {
            // The unwind pass's memory and forwarding table are not the job's.
            limits.with_pass_resources_of(module)
        } else {
            limits
        };
        let mut store = Store::new(
            &self.engine,
            Ctx {
                host,
                limits,
                memory: None,
                // Wall-clock safety net: the deadline is read each time the guest asks
                // for more fuel (see [`crate::meter`]); each store has its own deadline,
                // so concurrent jobs do not stop each other.
                meter: {
                    let m = Meter::new(job.limits.fuel, deadline.map(|d| d.at))
                        .with_slice(self.fuel_slice);
                    let mut m = match self.checkpoint_every {
                        Some(n) => m.with_checkpoints(n),
                        None => m,
                    };
                    // Snapshots are saved: the deadline's checkpoint can be resumed.
                    if save.is_some() {
                        m = m.with_timeout_checkpoint();
                    }
                    if let Some(snapshot) = resume {
                        m.restore(&snapshot.state.meter, snapshot.state.instructions)
                            .map_err(|why| RunError::Snapshot {
                                path: snapshot.dir.clone(),
                                reason: format!("not a snapshot this run can resume: {why}"),
                            })?;
                    }
                    m
                },
            },
        );
        store.limiter(|c| &mut c.limits);

        let mut instance = None;
        // What ended the run that is not the guest's: a snapshot refused or not saved.
        let mut not_guest: Option<RunError> = None;
        let mut stopped = false;
        let guest = async {
            let i = self.linker.instantiate_async(&mut store, module).await?;
            instance = Some(i);
            if let Some(wasmtime::Extern::Memory(m)) = i.get_export(&mut store, "memory") {
                store.data_mut().memory = Some(m);
            }
            if let Some(snapshot) = resume {
                // Resumed: the start function and `_initialize` ran before the snapshot;
                // the saved state replaces what instantiating made, and the entry rewinds.
                if let Err(e) = snapshot.restore_instance(&mut store, &i) {
                    not_guest = Some(e);
                    return Ok(());
                }
                // Every rewinding frame takes its fuel from the global (see the unwind
                // pass): it must be the checkpoint's.
                let fuel = meter::fuel(&mut store, &i).unwrap_or(0);
                if let Err(why) = store.data().meter.check_rewind_fuel(fuel) {
                    not_guest = Some(RunError::Snapshot {
                        path: snapshot.dir.clone(),
                        reason: format!("not a snapshot this run can resume: {why}"),
                    });
                    return Ok(());
                }
            } else {
                if let Some(start) = meter::start(&mut store, &i) {
                    start.call_async(&mut store, &[], &mut []).await?;
                }
                if job.entry != "_start" {
                    if let Ok(init) = i.get_typed_func::<(), ()>(&mut store, "_initialize") {
                        init.call_async(&mut store, ()).await?;
                    }
                }
            }
            let entry = i.get_typed_func::<(), ()>(&mut store, &job.entry)?;
            store.data_mut().meter.allow_checkpoints(true);
            loop {
                entry.call_async(&mut store, ()).await?;
                // Unwound for a checkpoint: rewound, the entry is called again and the
                // guest goes on from where it stopped.
                if !meter::rewind_if_unwound(&mut store, &i)? {
                    return Ok(());
                }
                if let Some(SaveTo {
                    sink,
                    info,
                    stop_after,
                    on_saved,
                }) = save.as_mut()
                {
                    let before = sink.trace.len();
                    match checkpoint::save(&mut store, &i, info, sink) {
                        Ok(cid) => {
                            if let (Some(f), Some(last)) = (on_saved, &sink.last) {
                                f(&sink.dir.join(last), &cid);
                            }
                        }
                        Err(e) => {
                            not_guest = Some(e);
                            return Ok(());
                        }
                    }
                    // A spot check's segment ends at its next checkpoint.
                    if stop_after.is_some_and(|n| sink.trace.len() - before >= n) {
                        stopped = true;
                        return Ok(());
                    }
                }
                // The deadline struck at this checkpoint: saved, the run ends timed out.
                if store.data().meter.timed_out() {
                    return Err(wasmtime::Error::new(Stop::Timeout));
                }
            }
        };
        let result: wasmtime::Result<()> = run_until(guest);
        if let Some(e) = not_guest {
            return Err(e);
        }
        // A rewind the meter refused is no result of the job: a forged snapshot's (or,
        // without one, a fault of this host's).
        if let Some(why) = store.data().meter.rewind_refused() {
            return Err(match resume {
                Some(snapshot) => RunError::Snapshot {
                    path: snapshot.dir.clone(),
                    reason: format!("not a snapshot this run can resume: {why}"),
                },
                None => RunError::HostFailure(format!("a checkpoint's rewind failed: {why}")),
            });
        }
        if store.data().meter.rewind_timed_out() {
            if let Some(SaveTo { sink, .. }) = save.as_mut() {
                if sink.resume.is_none() {
                    sink.resume = sink.last.clone();
                }
            }
        }

        let fuel = instance
            .and_then(|i| meter::fuel(&mut store, &i))
            .unwrap_or(0);
        let instructions = store.data().meter.consumed(fuel);
        let overran = store.data().meter.overran(fuel);
        self.checkpoints_taken.fetch_add(
            store.data().meter.checkpoints_taken(),
            std::sync::atomic::Ordering::Relaxed,
        );
        let ctx = store.into_data();
        if let Some(failure) = ctx.limits.host_failure {
            return Err(RunError::HostFailure(failure));
        }
        let outcome = match &result {
            Ok(()) => Outcome::Exited(0),
            Err(e) => classify(e, ctx.limits.denied).map_err(RunError::HostFailure)?,
        };
        // Work past the limit since the last check (at most two function bodies' worth)
        // ends the run out of fuel rather than a success counted at the limit.
        let outcome = match outcome {
            Outcome::Exited(_) if overran => Outcome::OutOfFuel,
            other => other,
        };
        ctx.host
            .vfs
            .inputs_unchanged()
            .map_err(RunError::HostFailure)?;
        Ok((outcome, instructions, ctx.host, stopped, ctx.limits.peak))
    }
}

/// How a run takes part in checkpoints beyond taking them ([`Runtime::run_staged_with`]).
#[derive(Default)]
pub struct Checkpointing<'a> {
    /// Save a snapshot at each checkpoint into this folder (created; it must be empty or
    /// new), with the job's host details beside them (`job.json`).
    pub save: Option<&'a Path>,
    /// Go on from this snapshot of the same job instead of starting.
    pub resume: Option<&'a checkpoint::Snapshot>,
    /// Keep only the last snapshot in `save`: each one's CID goes into the trace, and
    /// the one before is removed once the next is saved (the last stays, for a resume
    /// after a timeout). For a run that needs the trace, not the snapshots (`resume`
    /// without `--checkpoints`): found by review, such a resume kept every snapshot of
    /// the rest of the run in a scratch folder until it ended, 14.6 GB for a 256 MiB job.
    pub only_last: bool,
    /// Called on the guest's thread with each snapshot's folder and CID as soon as it is
    /// saved in `save`, before the guest goes on (so the folder is complete and still
    /// there with [`Self::only_last`]). For a runner that keeps snapshots elsewhere than
    /// this host (`detwasm.ray` sends each to its driver, so that a job whose node dies
    /// goes on from its last one). It cannot change the run: it sees the snapshot only
    /// after it is saved, and returns nothing.
    pub on_saved: Option<OnSaved<'a>>,
}

/// What is called with each snapshot saved ([`Checkpointing::on_saved`]): its folder and
/// its CID.
pub type OnSaved<'a> = &'a (dyn Fn(&Path, &str) + Sync);

/// Where a run that saves snapshots puts them ([`Runtime::execute`]).
struct SaveTo<'s, 'i> {
    sink: &'s mut checkpoint::Sink,
    info: &'s checkpoint::JobInfo<'i>,
    /// Stop after this many new snapshots (a spot check's segment).
    stop_after: Option<usize>,
    on_saved: Option<OnSaved<'s>>,
}

/// Where a segment of a spot check ended ([`Runtime::run_segment`]).
pub enum Segment {
    /// At the next checkpoint, whose snapshot has this CID.
    Checkpoint { cid: String },
    /// At the job's end, with the whole job's receipt.
    End(Box<Receipt>),
}

/// A run's guest finished (or stopped at a checkpoint), its results not yet staged.
struct Ran {
    outcome: Outcome,
    instructions: u64,
    host: wasi::host::WasiHost,
    /// Stopped at a checkpoint (a segment), not at the job's end.
    stopped: bool,
    trace: Vec<String>,
    /// The snapshot to resume from, when the deadline stopped the run.
    resume_at: Option<String>,
    prepared: Prepared,
    record: JobRecord,
    /// The host statistics so far (the wall time and process memory are taken when the
    /// results are staged).
    stats: HostStats,
    /// When the job started (its checks).
    started: std::time::Instant,
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The process's peak resident set in bytes (`getrusage`: Linux reports kibibytes), or 0
/// when it cannot be read.
fn process_peak_rss() -> u64 {
    // SAFETY: getrusage writes into the struct it is given and nothing else.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0;
    }
    u64::try_from(usage.ru_maxrss)
        .unwrap_or(0)
        .saturating_mul(1024)
}

/// A folder to save snapshots in, prepared: created if new (refused if it holds
/// anything but this job's `job.json`), the job's host details written beside the
/// snapshots.
fn checkpoint_sink(
    dir: &Path,
    record: &JobRecord,
    trace: Vec<String>,
    only_last: bool,
) -> Result<checkpoint::Sink, RunError> {
    let io = |e| RunError::io(format!("checkpoints folder {}", dir.display()), e);
    std::fs::create_dir_all(dir).map_err(io)?;
    let job_file = dir.join(checkpoint::JOB_FILE);
    let entries = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok())
        .filter(|e| e.path() != job_file)
        .count();
    if entries > 0 {
        return Err(RunError::Input {
            path: dir.to_path_buf(),
            reason: "the checkpoints folder is not empty (snapshots of another run would \
                     mix with this one's)"
                .into(),
        });
    }
    // Absolute paths, so that a resume from another folder finds the module and inputs.
    let absolute = |p: &str| {
        std::fs::canonicalize(p).map_or_else(|_| p.to_string(), |c| c.display().to_string())
    };
    let mut record = record.clone();
    record.module = record.module.as_deref().map(absolute);
    for i in &mut record.inputs {
        i.host = absolute(&i.host);
    }
    let text = serde_json::to_vec_pretty(&record)
        .map_err(|e| RunError::Engine(format!("writing {}: {e}", job_file.display())))?;
    std::fs::write(&job_file, text).map_err(io)?;
    Ok(checkpoint::Sink {
        dir: dir.to_path_buf(),
        trace,
        resume: None,
        last: None,
        only_last,
    })
}

/// The job as its receipt records it.
fn job_record(job: &Job, id: &JobIdentity) -> JobRecord {
    JobRecord {
        module: job.module.source.clone(),
        module_cid: id.module_cid.clone(),
        argv0: job.argv0.clone(),
        entry: job.entry.clone(),
        args: job.args.clone(),
        env: job.env.clone(),
        stdin_blake3: id.stdin_blake3.clone(),
        stdin_bytes: job.stdin.len() as u64,
        inputs: job
            .inputs
            .iter()
            .zip(&id.inputs)
            .map(|(i, c)| InputRecord {
                host: i.host.display().to_string(),
                guest: i.guest.clone(),
                cid: c.cid.clone(),
                writable: i.writable,
            })
            .collect(),
        outputs: job.outputs.clone(),
        seed: job.seed,
        epoch_unix_nanos: job.epoch.unix_nanos,
        limits: job.limits,
    }
}

/// Polls `guest` to completion on this thread. The only futures polled here are
/// wasmtime's, over synchronous host functions, with no fuel pauses configured: they run
/// to completion on their first poll (on a fiber of [`GUEST_THREAD_STACK`] bytes), so a
/// waker that does nothing is all an executor needs. Rejected: an async runtime (a
/// dependency and a thread pool for one future at a time) and making the callers async
/// (batch, verify, fuzz, the Python bindings and remote would all change for no gain).
fn run_until<F: Future>(guest: F) -> F::Output {
    let mut guest = std::pin::pin!(guest);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(out) = guest.as_mut().poll(&mut cx) {
            return out;
        }
    }
}

/// How a run that did not return ended, or `Err` with the reason when the end was the
/// host's doing and so is no outcome of the job: a host function's [`Fatal::Host`], or
/// an error that is neither a trap nor one of our own ends while the limiter refused
/// nothing (at instantiation: the host could not map the module's memories or tables).
/// An instantiation the limiter refused (`denied`: initial memories above the job's
/// limit) is a deterministic outcome, recorded as a trap. Rejected: recording every
/// error as a trap, which made an `mmap` refused by this host a verifiable result.
///
/// A metered stack exhaustion ([`crate::engine::is_stack_exhaustion`]) is reported as
/// wasmtime's stack overflow, `call stack exhausted`. wasmtime's own stack overflow (the
/// native limit reached before the metered one, which only frames that keep far more
/// native values than the module holds can do, see
/// [`crate::passes::stack::NATIVE_BYTES_PER_UNIT`]) is a host failure: its depth depends
/// on this CPU's frame layout, so it is no outcome of the job. Rejected: recording it as
/// a trap (a verifier on another CPU would get another instruction count).
fn classify(e: &wasmtime::Error, denied: bool) -> Result<Outcome, String> {
    if crate::engine::is_stack_exhaustion(e) {
        return Ok(Outcome::Trap(Trap::StackOverflow.to_string()));
    }
    if e.downcast_ref::<Trap>() == Some(&Trap::StackOverflow) {
        return Err(NATIVE_STACK_EXHAUSTED.to_string());
    }
    if let Some(f) = e.downcast_ref::<Fatal>() {
        return ended_by_host(f);
    }
    if let Some(stop) = e.downcast_ref::<Stop>() {
        return Ok(stopped(stop));
    }
    if let Some(t) = e.downcast_ref::<Trap>() {
        return Ok(match t {
            Trap::OutOfFuel => Outcome::OutOfFuel,
            Trap::Interrupt => Outcome::Timeout,
            // The trap code's text only: deterministic (no host addresses or backtrace).
            other => Outcome::Trap(other.to_string()),
        });
    }
    if denied {
        return Ok(Outcome::Trap(format!("{e}")));
    }
    Err(format!("{e:#}"))
}

/// How a run that a host call ended ends (`Err`: a host failure, never a result). The
/// one mapping for every engine that links the host (the self-fuzzer's wasmi too).
pub fn ended_by_host(f: &Fatal) -> Result<Outcome, String> {
    match f {
        Fatal::Exit(c) => Ok(Outcome::Exited(*c)),
        Fatal::OutputQuota => Ok(Outcome::OutputQuota),
        Fatal::OutOfFuel => Ok(Outcome::OutOfFuel),
        Fatal::Guest(m) => Ok(Outcome::Trap(m.clone())),
        Fatal::Host(m) => Err(m.clone()),
        Fatal::Timeout => Ok(Outcome::Timeout),
    }
}

/// How a run the meter stopped at a refuel ends.
pub fn stopped(stop: &Stop) -> Outcome {
    match stop {
        Stop::OutOfFuel => Outcome::OutOfFuel,
        // Raised at a refuel once the deadline has passed (see [`crate::meter`]).
        Stop::Timeout => Outcome::Timeout,
    }
}

fn same_func_type(params: &[ValType], results: &[ValType], have: &FuncType) -> bool {
    let eq = |x: &[ValType], y: &mut dyn ExactSizeIterator<Item = ValType>| {
        x.len() == y.len() && x.iter().zip(y).all(|(p, q)| ValType::eq(p, &q))
    };
    eq(params, &mut have.params()) && eq(results, &mut have.results())
}

fn dummy_ctx() -> Ctx {
    let job = Job::new(Vec::new()).with_outputs(Vec::new());
    Ctx {
        host: capabilities::grant(&job).expect("an empty job grants nothing that can fail"),
        limits: JobLimiter::new(0),
        memory: None,
        meter: Meter::new(0, None),
    }
}

/// Writes the results directory of a run into `dir` (an empty staging folder): `stdout`,
/// `stderr` (with detwasm's line saying why the run ended, if it did not exit),
/// `exitCode`, and one folder per output volume. Errors are
/// [`RunError::WriteResults`] naming `dest`, the folder the results were meant for.
pub fn write_results(
    dir: &Path,
    dest: &Path,
    job: &Job,
    host: &wasi::host::WasiHost,
    outcome: &Outcome,
    trap: Option<&str>,
) -> Result<(), RunError> {
    let failed = |cause| RunError::WriteResults {
        dest: dest.to_path_buf(),
        cause,
    };
    deliver::write_new(&dir.join("stdout"), &host.stdout).map_err(failed)?;
    let mut stderr = host.stderr.clone();
    if let Some(t) = trap {
        if !stderr.is_empty() && !stderr.ends_with(b"\n") {
            stderr.push(b'\n');
        }
        stderr.extend_from_slice(format!("detwasm: {t}\n").as_bytes());
    }
    deliver::write_new(&dir.join("stderr"), &stderr).map_err(failed)?;
    deliver::write_new(
        &dir.join("exitCode"),
        outcome.exit_code().to_string().as_bytes(),
    )
    .map_err(failed)?;
    // Writable folders (`--dir`), each a volume named after its guest path.
    for (i, input) in job.inputs.iter().enumerate().filter(|(_, i)| i.writable) {
        let d = dir.join(input.volume_name());
        std::fs::create_dir(&d)
            .map_err(|e| deliver::named(&d, e))
            .map_err(failed)?;
        host.vfs.export(i, &d).map_err(failed)?;
    }
    let first_output = job.inputs.len();
    for (i, out) in job.outputs.iter().enumerate() {
        let d = dir.join(&out.name);
        std::fs::create_dir(&d)
            .map_err(|e| deliver::named(&d, e))
            .map_err(failed)?;
        host.vfs.export(first_output + i, &d).map_err(failed)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writing_results_over_a_name_that_exists_fails_and_names_it() {
        let t = tempfile::tempdir().unwrap();
        let job = Job::new(b"(module (func (export \"_start\")))".to_vec());
        let host = crate::capabilities::grant(&job).unwrap();
        let dest = t.path().join("final");
        for taken in ["stdout", "exitCode", "outputs"] {
            let dir = t.path().join(format!("staging-{taken}"));
            std::fs::create_dir(&dir).unwrap();
            std::fs::write(dir.join(taken), "earlier").unwrap();
            let e = write_results(&dir, &dest, &job, &host, &Outcome::Exited(0), None).unwrap_err();
            let msg = e.to_string();
            assert!(matches!(e, RunError::WriteResults { .. }), "{msg}");
            assert!(msg.contains(&format!("writing results into {}", dest.display())));
            assert!(msg.contains(&format!("{taken} already exists")), "{msg}");
            assert!(msg.contains("nothing was delivered"), "{msg}");
            assert_eq!(std::fs::read(dir.join(taken)).unwrap(), b"earlier");
        }
    }

    /// The CID kept for the bytes it was hashed from ([`Runtime::module_cid`]) is only
    /// ever given for those bytes: the same bytes again get it, other bytes (even at an
    /// address the first ones were freed from) their own, whatever the order.
    #[test]
    fn a_modules_cid_is_kept_for_its_own_bytes_only() {
        let rt = Runtime::new(EngineOptions::default()).unwrap();
        let a = Job::new(b"(module (func (export \"_start\")))".to_vec());
        let b = Job::new(b"(module (func (export \"_start\") nop))".to_vec());
        let profile = a.results.profile;
        let cid = |j: &Job| results::cid_of_bytes(&j.module.bytes, profile).unwrap();
        let id = |j: &Job| rt.prepare(j).unwrap().identity.module_cid;
        assert_ne!(cid(&a), cid(&b));
        for _ in 0..2 {
            assert_eq!(id(&a), cid(&a));
            assert_eq!(id(&a), cid(&a), "again, from what was kept");
            assert_eq!(id(&b), cid(&b));
        }
        // Bytes freed and others allocated in their place: never the kept CID.
        for i in 0..50u8 {
            let j = Job::new(
                format!("(module (func (export \"_start\")) (global i32 (i32.const {i})))")
                    .into_bytes(),
            );
            assert_eq!(id(&j), cid(&j));
        }
        assert_eq!(id(&a), cid(&a));
    }
}
