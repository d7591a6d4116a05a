//! A whole job under wasmi: the module after every pass of a job
//! ([`detwasm_runtime::engine::rewrite`]), detwasm's own WASI host
//! ([`detwasm_runtime::wasi::host::WasiHost`], built from the job by the one place
//! capabilities are granted, `capabilities::grant`), the same meter, memory limit and
//! results folder; only the engine is another. Its results CID, instruction count, exit
//! code and trap must be the runtime's ([`run`]; `tests/engines.rs` compares them on the
//! probe, the NaN, SIMD and stack fixtures, the example modules and CPython).
//!
//! What is the engine's here, as in `detwasm_runtime::run`: linking the host's calls
//! (the list is `detwasm_wasi::preview1_calls!`, shared with the runtime), charging their
//! work as fuel through the fuel global, and telling how the run ended.

use std::path::Path;

use wasmi::{Caller, Engine, Extern, Linker, Module, Store, Val};

use detwasm_passes::fuel::{EXPORT_FUEL, EXPORT_START, IMPORT_MODULE, IMPORT_REFUEL};
use detwasm_runtime::engine::EXPORT_STACK_DEPTH;
use detwasm_runtime::limiter::JobLimiter;
use detwasm_runtime::meter::Meter;
use detwasm_runtime::run::{ended_by_host, stopped};
use detwasm_runtime::wasi::abi::{Errno, Mem};
use detwasm_runtime::wasi::host::{Fatal, HostError, WasiHost};
use detwasm_runtime::wasi::host_call;
use detwasm_runtime::{results, Job, Outcome};

use super::{Limits, Stopped};

/// How a job ended under wasmi: what a receipt records of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ran {
    pub cid: String,
    pub instructions: u64,
    pub exit_code: i32,
    pub outcome: String,
    pub trap: Option<String>,
}

struct Ctx {
    host: WasiHost,
    limits: Limits,
    meter: Meter,
    memory: Option<wasmi::Memory>,
}

/// What ends the run from a host call, as a wasmi host error.
#[derive(Debug)]
struct Ended(Fatal);

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl wasmi::errors::HostError for Ended {}

fn fuel_global(caller: &Caller<'_, Ctx>) -> Option<(wasmi::Global, i64)> {
    match caller.get_export(EXPORT_FUEL) {
        Some(Extern::Global(g)) => match g.get(caller) {
            Val::I64(v) => Some((g, v)),
            _ => None,
        },
        _ => None,
    }
}

/// A host call: the guest's memory, its fuel handed to the host for the work, the fuel
/// left written back, the errno or the end (as `detwasm_runtime::wasi`'s `dispatch`).
fn dispatch(
    caller: &mut Caller<'_, Ctx>,
    f: impl FnOnce(&mut WasiHost, &mut Mem) -> Result<(), HostError>,
) -> Result<i32, wasmi::Error> {
    let memory = match caller.data().memory {
        Some(m) => m,
        None => match caller.get_export("memory") {
            Some(Extern::Memory(m)) => {
                caller.data_mut().memory = Some(m);
                m
            }
            _ => {
                return Err(wasmi::Error::host(Ended(Fatal::Guest(
                    "the module calls WASI but exports no memory named `memory`".into(),
                ))))
            }
        },
    };
    let fuel = fuel_global(caller);
    let (data, ctx) = memory.data_and_store_mut(&mut *caller);
    let (result, left) = host_call(&mut ctx.host, &ctx.meter, data, fuel.map(|(_, f)| f), f);
    if let Some(((global, _), left)) = fuel.zip(left) {
        global.set(&mut *caller, Val::I64(left))?;
    }
    result.map_err(|fatal| wasmi::Error::host(Ended(fatal)))
}

macro_rules! wasi {
    ($linker:ident, $name:literal, $method:ident ( $($arg:ident : $ty:ty => $conv:ty),* )) => {
        $linker
            .func_wrap(
                detwasm_runtime::wasi::MODULE,
                $name,
                |mut caller: Caller<'_, Ctx>, $($arg: $ty),*| -> Result<i32, wasmi::Error> {
                    dispatch(&mut caller, |h, m| h.$method(m, $($arg as $conv),*))
                },
            )
            .map_err(|e| e.to_string())?;
    };
}

fn linker(engine: &Engine) -> Result<Linker<Ctx>, String> {
    let mut linker = Linker::<Ctx>::new(engine);
    detwasm_wasi::preview1_calls!(wasi, linker);
    linker
        .func_wrap(
            detwasm_runtime::wasi::MODULE,
            "proc_exit",
            |mut caller: Caller<'_, Ctx>, code: i32| -> Result<(), wasmi::Error> {
                Err(wasmi::Error::host(Ended(
                    caller.data_mut().host.proc_exit(code as u32),
                )))
            },
        )
        .map_err(|e| e.to_string())?;
    linker
        .func_wrap(
            detwasm_runtime::wasi::MODULE,
            "proc_raise",
            |_: i32| -> i32 { Errno::NOSYS.0 as i32 },
        )
        .map_err(|e| e.to_string())?;
    linker
        .func_wrap(
            IMPORT_MODULE,
            IMPORT_REFUEL,
            |mut caller: Caller<'_, Ctx>, fuel: i64| -> Result<i64, wasmi::Error> {
                let r = caller.data_mut().meter.refuel(fuel);
                if let Some((g, _)) = fuel_global(&caller) {
                    g.set(&mut caller, Val::I64(*r.as_ref().unwrap_or(&fuel)))?;
                }
                r.map_err(|s| wasmi::Error::host(Stopped(s)))
            },
        )
        .map_err(|e| e.to_string())?;
    Ok(linker)
}

/// How the run ended, as `detwasm_runtime::run` classifies it (`Err`: a host failure).
fn outcome(e: &wasmi::Error, depth_after: i32, denied: bool) -> Result<Outcome, String> {
    if let Some(Ended(f)) = e.downcast_ref::<Ended>() {
        return ended_by_host(f);
    }
    if let Some(Stopped(s)) = e.downcast_ref::<Stopped>() {
        return Ok(stopped(s));
    }
    match super::trap_of(e, 0, depth_after) {
        Some(Ok(t)) => Ok(Outcome::Trap(t.to_string())),
        Some(Err(m)) => Err(m),
        None if denied => Ok(Outcome::Trap(format!("{e}"))),
        None => Err(format!("{e}")),
    }
}

/// Runs `job` under wasmi, delivering its results into `dir` (created).
pub fn run(job: &Job, dir: &Path) -> Result<Ran, String> {
    let host = detwasm_runtime::capabilities::grant(job).map_err(|e| e.to_string())?;
    let rewritten =
        detwasm_runtime::engine::rewrite(&job.module.bytes).map_err(|e| e.to_string())?;
    let engine = super::engine();
    let module = Module::new(engine, &rewritten[..]).map_err(|e| e.to_string())?;
    let linker = linker(engine)?;
    let job = job.clone();
    let dir = dir.to_path_buf();
    let engine = engine.clone();
    // On a thread with the guest stack, as a job's guest runs.
    std::thread::Builder::new()
        .name("interpreter-job".into())
        .stack_size(detwasm_runtime::run::GUEST_THREAD_STACK)
        .spawn(move || execute(&engine, &module, &linker, &job, host, &dir))
        .map_err(|e| e.to_string())?
        .join()
        .map_err(|_| "the guest thread panicked".to_string())?
}

fn execute(
    engine: &Engine,
    module: &Module,
    linker: &Linker<Ctx>,
    job: &Job,
    host: WasiHost,
    dir: &Path,
) -> Result<Ran, String> {
    let mut store = Store::new(
        engine,
        Ctx {
            host,
            limits: Limits(JobLimiter::new(job.limits.memory)),
            meter: Meter::new(job.limits.fuel, None),
            memory: None,
        },
    );
    store.limiter(|c| &mut c.limits);
    let mut instance = None;
    let result = (|| -> Result<(), wasmi::Error> {
        let i = linker.instantiate_and_start(&mut store, module)?;
        instance = Some(i);
        if let Some(Extern::Memory(m)) = i.get_export(&store, "memory") {
            store.data_mut().memory = Some(m);
        }
        if let Some(start) = i.get_func(&store, EXPORT_START) {
            start.call(&mut store, &[], &mut [])?;
        }
        if job.entry != "_start" {
            if let Some(init) = i.get_func(&store, "_initialize") {
                init.call(&mut store, &[], &mut [])?;
            }
        }
        let entry = i
            .get_func(&store, &job.entry)
            .ok_or_else(|| wasmi::Error::new(format!("no entry `{}`", job.entry)))?;
        entry.call(&mut store, &[], &mut [])
    })();
    let read = |store: &Store<Ctx>, name: &str| {
        instance
            .and_then(|i| i.get_global(store, name))
            .map(|g| g.get(store))
    };
    let fuel = match read(&store, EXPORT_FUEL) {
        Some(Val::I64(f)) => f,
        _ => 0,
    };
    let depth = match read(&store, EXPORT_STACK_DEPTH) {
        Some(Val::I32(d)) => d,
        _ => 0,
    };
    let instructions = store.data().meter.consumed(fuel);
    let overran = store.data().meter.overran(fuel);
    let ctx = store.into_data();
    if let Some(failure) = ctx.limits.0.host_failure {
        return Err(failure);
    }
    let outcome = match &result {
        Ok(()) => Outcome::Exited(0),
        Err(e) => outcome(e, depth, ctx.limits.0.denied)?,
    };
    let outcome = match outcome {
        Outcome::Exited(_) if overran => Outcome::OutOfFuel,
        other => other,
    };
    let trap = outcome.message(&job.limits);
    std::fs::create_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    detwasm_runtime::run::write_results(dir, dir, job, &ctx.host, &outcome, trap.as_deref())
        .map_err(|e| e.to_string())?;
    let cid = results::cid_of_dir(dir, job.results.profile, !job.results.skip_hidden)
        .map_err(|e| e.to_string())?;
    Ok(Ran {
        cid,
        instructions,
        exit_code: outcome.exit_code(),
        outcome: outcome.kind().to_string(),
        trap,
    })
}
