//! Running a job: compile (or load from the cache), check imports, grant capabilities,
//! instantiate, call the entry with fuel, memory and output limits, deliver the results
//! directory atomically and hash it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use wasmtime::{
    Engine, ExternType, FuncType, Linker, Store, StoreLimitsBuilder, Trap, UpdateDeadline, ValType,
};

use crate::capabilities;
use crate::engine::{self, EngineOptions, ModuleCache};
use crate::error::RunError;
use crate::job::{InputIdentity, Job, JobIdentity};
use crate::receipt::{InputRecord, JobRecord, Outcome, Receipt};
use crate::results;
use crate::wasi::{self, host::Fatal, Ctx};

/// Native stack of the thread that runs a guest: the pinned wasm stack plus ample room
/// for host frames.
pub const GUEST_THREAD_STACK: usize = crate::engine::MAX_WASM_STACK + (8 << 20);

/// Modules kept loaded per runtime (see `Runtime::loaded`).
const MAX_LOADED_MODULES: usize = 64;

/// Most table elements an instance may have; `table.grow` beyond fails (returns -1).
pub const MAX_TABLE_ELEMENTS: usize = 1 << 22;

/// Where the results directory goes.
#[derive(Clone, Debug)]
pub enum Destination {
    /// Exactly this path (must not exist, or be an empty directory).
    At(PathBuf),
    /// A new folder named after the job id inside this directory; when the job has run
    /// there before, `<job id>-2`, `<job id>-3`, … so that re-running a job (the way a
    /// verifier does) never fails and never touches an earlier result.
    Under(PathBuf),
}

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
        Ok(Runtime {
            engine,
            linker,
            cache: opts.cache_dir.map(ModuleCache::new),
            fingerprint: engine::fingerprint(),
            loaded: Mutex::new(HashMap::new()),
        })
    }

    /// The engine fingerprint (part of every job id).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Hashes the module and inputs and computes the job id.
    pub fn prepare(&self, job: &Job) -> Result<Prepared, RunError> {
        job.validate()?;
        let profile = job.results.profile;
        let module_cid = results::cid_of_bytes(&job.module.bytes, profile)?;
        let mut inputs = Vec::new();
        for input in &job.inputs {
            // The guest sees hidden files, so they are part of the input's identity.
            let cid = results::cid_of_dir(&input.host, profile, true)?;
            inputs.push(InputIdentity {
                guest: input.guest.clone(),
                cid,
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

    /// Compiles `bytes` (or loads them from the cache) and checks that the module can be
    /// run with `entry`: only preview1 imports with the right types, the entry exported
    /// with type `() -> ()`.
    pub fn load(&self, bytes: &[u8], entry: &str) -> Result<wasmtime::Module, RunError> {
        let key = *blake3::hash(bytes).as_bytes();
        let known = self.loaded.lock().ok().and_then(|m| m.get(&key).cloned());
        let module = match (known, &self.cache) {
            (Some(m), _) => m,
            (None, Some(cache)) => cache.load_or_compile(&self.engine, bytes)?.0,
            (None, None) => engine::compile(&self.engine, bytes)?,
        };
        let mut store = Store::new(&self.engine, dummy_ctx());
        for import in module.imports() {
            let missing = || RunError::UnknownImport {
                module: import.module().to_string(),
                name: import.name().to_string(),
            };
            if import.module() != wasi::MODULE {
                return Err(missing());
            }
            let ours = self
                .linker
                .get(&mut store, import.module(), import.name())
                .map_err(|_| missing())?;
            match (import.ty(), ours.ty(&store)) {
                (ExternType::Func(want), ExternType::Func(have)) => {
                    if !same_func_type(&want, &have) {
                        return Err(RunError::BadImportType {
                            module: import.module().to_string(),
                            name: import.name().to_string(),
                            detail: format!("the module expects {want}, detwasm provides {have}"),
                        });
                    }
                }
                _ => return Err(missing()),
            }
        }
        match module.get_export(entry) {
            Some(ExternType::Func(f)) => {
                if f.params().len() != 0 || f.results().len() != 0 {
                    return Err(RunError::BadEntryType(entry.to_string()));
                }
            }
            _ => return Err(RunError::MissingEntry(entry.to_string())),
        }
        if let Ok(mut m) = self.loaded.lock() {
            if m.len() >= MAX_LOADED_MODULES {
                m.clear();
            }
            m.insert(key, module.clone());
        }
        Ok(module)
    }

    /// Runs `job` and delivers its results directory to `dest`. Traps, running out of
    /// fuel, the memory limit and the output quota are outcomes (recorded, results still
    /// delivered); an `Err` means nothing was delivered.
    pub fn run(&self, job: &Job, dest: &Destination) -> Result<Receipt, RunError> {
        let prepared = self.prepare(job)?;
        let module = self.load(&job.module.bytes, &job.entry)?;
        let dest = match dest {
            Destination::At(p) => p.clone(),
            Destination::Under(d) => unused_folder(d, &prepared.job_id)?,
        };
        check_destination(&dest)?;

        let host = capabilities::grant(job)?;
        // The guest runs on a thread of its own with a fixed native stack, so the depth at
        // which it overflows ([`crate::engine::MAX_WASM_STACK`]) never depends on the
        // caller's thread.
        let (outcome, instructions, host) = std::thread::scope(|s| {
            std::thread::Builder::new()
                .name("detwasm-guest".into())
                .stack_size(GUEST_THREAD_STACK)
                .spawn_scoped(s, || self.execute(job, &module, host))
                .map_err(|e| RunError::io("starting the guest thread", e))?
                .join()
                .map_err(|_| RunError::Engine("the guest thread panicked".into()))?
        })?;

        let parent = dest
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent)
            .map_err(|e| RunError::io(format!("creating {}", parent.display()), e))?;
        let staging = tempfile::Builder::new()
            .prefix(".detwasm-staging-")
            .tempdir_in(parent)
            .map_err(|e| {
                RunError::io(
                    format!("creating a staging folder in {}", parent.display()),
                    e,
                )
            })?;
        let trap = outcome.message(&job.limits);
        write_results(staging.path(), job, &host, &outcome, trap.as_deref())?;
        let cid = results::cid_of_dir(
            staging.path(),
            job.results.profile,
            !job.results.skip_hidden,
        )?;
        // Deliver: rename the complete folder into place (replacing an empty directory).
        let staged = staging.keep();
        if let Err(e) = std::fs::rename(&staged, &dest) {
            let _ = std::fs::remove_dir_all(&staged);
            return Err(RunError::io(
                format!("moving results into {}", dest.display()),
                e,
            ));
        }

        let id = &prepared.identity;
        Ok(Receipt {
            cid,
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
            results_dir: dest.display().to_string(),
            job: JobRecord {
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
                    })
                    .collect(),
                outputs: job.outputs.clone(),
                seed: job.seed,
                epoch_unix_nanos: job.epoch.unix_nanos,
                limits: job.limits,
            },
        })
    }

    /// Instantiates and calls the entry. Returns the outcome, the fuel consumed and the
    /// guest's final state (stdout, stderr, output volumes).
    fn execute(
        &self,
        job: &Job,
        module: &wasmtime::Module,
        host: wasi::host::WasiHost,
    ) -> Result<(Outcome, u64, wasi::host::WasiHost), RunError> {
        let limits = StoreLimitsBuilder::new()
            .memory_size(usize::try_from(job.limits.memory).unwrap_or(usize::MAX))
            .table_elements(MAX_TABLE_ELEMENTS)
            .instances(1)
            .trap_on_grow_failure(false)
            .build();
        let mut store = Store::new(
            &self.engine,
            Ctx {
                host,
                limits,
                memory: None,
            },
        );
        store.limiter(|c| &mut c.limits);
        store
            .set_fuel(job.limits.fuel)
            .map_err(|e| RunError::Engine(e.to_string()))?;

        // Wall-clock safety net: a ticker advances the engine epoch; at each tick this
        // store checks its own deadline, so concurrent jobs do not stop each other.
        let deadline = job.limits.timeout.map(|t| Instant::now() + t);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| match deadline {
            Some(d) if Instant::now() >= d => Ok(UpdateDeadline::Interrupt),
            _ => Ok(UpdateDeadline::Continue(1)),
        });
        let (stop, ticker) = match job.limits.timeout {
            Some(_) => {
                let (tx, rx) = mpsc::channel::<()>();
                let engine = self.engine.clone();
                let h = std::thread::spawn(move || {
                    while let Err(mpsc::RecvTimeoutError::Timeout) =
                        rx.recv_timeout(Duration::from_millis(50))
                    {
                        engine.increment_epoch();
                    }
                });
                (Some(tx), Some(h))
            }
            None => (None, None),
        };

        let result = (|| -> wasmtime::Result<()> {
            let instance = self.linker.instantiate(&mut store, module)?;
            if let Some(wasmtime::Extern::Memory(m)) = instance.get_export(&mut store, "memory") {
                store.data_mut().memory = Some(m);
            }
            if job.entry != "_start" {
                if let Ok(init) = instance.get_typed_func::<(), ()>(&mut store, "_initialize") {
                    init.call(&mut store, ())?;
                }
            }
            let entry = instance.get_typed_func::<(), ()>(&mut store, &job.entry)?;
            entry.call(&mut store, ())
        })();
        drop(stop);
        if let Some(h) = ticker {
            let _ = h.join();
        }

        let remaining = store.get_fuel().unwrap_or(0);
        let instructions = job.limits.fuel.saturating_sub(remaining);
        let outcome = match result {
            Ok(()) => Outcome::Exited(0),
            Err(e) => classify(&e),
        };
        let ctx = store.into_data();
        Ok((outcome, instructions, ctx.host))
    }
}

fn classify(e: &wasmtime::Error) -> Outcome {
    if let Some(f) = e.downcast_ref::<Fatal>() {
        return match f {
            Fatal::Exit(c) => Outcome::Exited(*c),
            Fatal::OutputQuota => Outcome::OutputQuota,
        };
    }
    if let Some(t) = e.downcast_ref::<Trap>() {
        return match t {
            Trap::OutOfFuel => Outcome::OutOfFuel,
            Trap::Interrupt => Outcome::Timeout,
            // The trap code's text only: deterministic (no host addresses or backtrace).
            other => Outcome::Trap(other.to_string()),
        };
    }
    Outcome::Trap(format!("{e}"))
}

fn same_func_type(a: &FuncType, b: &FuncType) -> bool {
    let eq = |x: &mut dyn ExactSizeIterator<Item = ValType>,
              y: &mut dyn ExactSizeIterator<Item = ValType>| {
        x.len() == y.len() && x.zip(y).all(|(p, q)| ValType::eq(&p, &q))
    };
    eq(&mut a.params(), &mut b.params()) && eq(&mut a.results(), &mut b.results())
}

fn dummy_ctx() -> Ctx {
    let job = Job::new(Vec::new()).with_outputs(Vec::new());
    Ctx {
        host: capabilities::grant(&job).expect("an empty job grants nothing that can fail"),
        limits: StoreLimitsBuilder::new().build(),
        memory: None,
    }
}

/// The first of `dir/name`, `dir/name-2`, `dir/name-3`, … that does not exist yet.
fn unused_folder(dir: &Path, name: &str) -> Result<PathBuf, RunError> {
    let mut n = 1u32;
    loop {
        let candidate = match n {
            1 => dir.join(name),
            _ => dir.join(format!("{name}-{n}")),
        };
        match std::fs::symlink_metadata(&candidate) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(candidate),
            Err(e) => return Err(RunError::io(format!("checking {}", candidate.display()), e)),
            Ok(_) => n += 1,
        }
    }
}

fn check_destination(dest: &Path) -> Result<(), RunError> {
    match std::fs::symlink_metadata(dest) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(RunError::io(format!("checking {}", dest.display()), e)),
        Ok(m) if m.is_dir() => {
            let mut it = std::fs::read_dir(dest)
                .map_err(|e| RunError::io(format!("reading {}", dest.display()), e))?;
            if it.next().is_none() {
                Ok(())
            } else {
                Err(RunError::OutputExists(dest.to_path_buf()))
            }
        }
        Ok(_) => Err(RunError::OutputExists(dest.to_path_buf())),
    }
}

fn write_results(
    dir: &Path,
    job: &Job,
    host: &wasi::host::WasiHost,
    outcome: &Outcome,
    trap: Option<&str>,
) -> Result<(), RunError> {
    let io = |what: &str| {
        let what = format!("writing {what} of the results");
        move |e| RunError::io(what, e)
    };
    std::fs::write(dir.join("stdout"), &host.stdout).map_err(io("stdout"))?;
    let mut stderr = host.stderr.clone();
    if let Some(t) = trap {
        if !stderr.is_empty() && !stderr.ends_with(b"\n") {
            stderr.push(b'\n');
        }
        stderr.extend_from_slice(format!("detwasm: {t}\n").as_bytes());
    }
    std::fs::write(dir.join("stderr"), &stderr).map_err(io("stderr"))?;
    std::fs::write(dir.join("exitCode"), outcome.exit_code().to_string())
        .map_err(io("exitCode"))?;
    let first_output = job.inputs.len();
    for (i, out) in job.outputs.iter().enumerate() {
        let d = dir.join(&out.name);
        std::fs::create_dir(&d).map_err(io(&out.name))?;
        host.vfs
            .export(first_output + i, &d)
            .map_err(io(&out.name))?;
    }
    Ok(())
}
