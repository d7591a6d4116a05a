//! [`crate::Setup::Interpreter`]: wasmi, an interpreter nobody here wrote, running the
//! module as detwasm's engine runs it (after every pass of a job:
//! [`detwasm_runtime::engine::rewrite`]), with the same meter answering the fuel pass's
//! refuel import and the same memory limit. It must observe what the baseline observes,
//! fuel included: the count, the stack depth at which a call stack is exhausted and the
//! bits of every NaN are decided by the passes, not by the engine (issue 20: results that
//! outlive the engine).
//!
//! What stays the engine's: the trap codes (wasmi's are mapped onto wasmtime's, whose text
//! the baseline reports) and how a metered stack exhaustion is recognised. wasmtime finds
//! it in the backtrace (the stack pass's trap function is the innermost frame); wasmi has
//! no backtrace, so the stack pass's counter (exported by `rewrite`) tells: the prologue
//! that exhausts the stack adds its frame before it traps, so only that trap leaves the
//! counter above [`detwasm_passes::stack::STACK_LIMIT`] and higher than before the call
//! (a later call of an instance whose counter a trap left high traps on its first metered
//! entry, which raises it again; an unmetered leaf's `unreachable` leaves it as it was).
//! wasmi's own stack limits are set above the metered limit's deepest stack, so that they
//! are never what ends a call: if they were, the comparison would report it.
//!
//! Why wasmi 1.1.0 and not 2.0.0, the newest: 2.0.0 miscomputes. Its first 200 generated
//! modules here had one that trapped with a division by zero where wasmtime returned;
//! reduced, `(func (result i32) (local i32 i32) memory.size i32.const 0 local.set 0
//! i32.const 1 local.get 0 local.get 0 i32.eqz select local.set 0 local.set 1 local.get
//! 0)` (with a memory) returns 0 under 2.0.0 and 1, as the spec says, under 1.1.0 and
//! wasmtime: the `select` written to a local is lost while a value is left below it.

use wasmi::errors::{ErrorKind, InstantiationError};
use wasmi::{Caller, Config, Engine, Extern, Func, Instance, Linker, Module, Store, TrapCode, Val};
use wasmtime::Trap;

use detwasm_passes::stack::STACK_LIMIT;
use detwasm_runtime::engine::EXPORT_STACK_DEPTH;
use detwasm_runtime::limiter::JobLimiter;
use detwasm_runtime::meter::{self, Meter, Stop};

pub mod job;

use crate::{
    argument, memory_seen, Call, End, Failure, Observation, Value, LOOP_FUEL_EXPORT, ROUNDS,
};

/// What the store holds: the job's memory limit and its meter.
struct Data {
    limits: Limits,
    meter: Meter,
}

/// The runtime's own limiter, asked by wasmi: the same accounting as a job's.
struct Limits(JobLimiter);

impl wasmi::ResourceLimiter for Limits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> Result<bool, wasmi_core::LimiterError> {
        let ok = wasmtime::ResourceLimiter::memory_growing(&mut self.0, current, desired, maximum);
        Ok(ok.unwrap_or(false))
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> Result<bool, wasmi_core::LimiterError> {
        let ok = wasmtime::ResourceLimiter::table_growing(&mut self.0, current, desired, maximum);
        Ok(ok.unwrap_or(false))
    }

    fn instances(&self) -> usize {
        wasmtime::ResourceLimiter::instances(&self.0)
    }

    fn tables(&self) -> usize {
        wasmtime::ResourceLimiter::tables(&self.0)
    }

    fn memories(&self) -> usize {
        wasmtime::ResourceLimiter::memories(&self.0)
    }
}

/// The meter's refusal to refuel, as a wasmi host error.
#[derive(Debug)]
struct Stopped(Stop);

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl wasmi::errors::HostError for Stopped {}

/// One engine for the whole process.
fn engine() -> &'static Engine {
    static ENGINE: std::sync::OnceLock<Engine> = std::sync::OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut c = Config::default();
        c.wasm_simd(true)
            .wasm_relaxed_simd(true)
            .wasm_bulk_memory(true)
            .wasm_multi_value(true)
            .wasm_multi_memory(true)
            .wasm_reference_types(true)
            .wasm_tail_call(true)
            .wasm_extended_const(true)
            .wasm_mutable_global(true)
            .wasm_sign_extension(true)
            .wasm_saturating_float_to_int(true)
            .wasm_wide_arithmetic(false)
            .wasm_custom_page_sizes(false)
            .consume_fuel(false)
            // Deeper than the metered limit's deepest stack (every metered frame costs
            // at least 8 units; unmetered chains add a few frames at the top).
            .set_max_recursion_depth(STACK_LIMIT as usize)
            .set_max_stack_height(1 << 30);
        Engine::new(&c)
    })
}

/// Observes `binary` as [`crate::execute`] does, under wasmi.
pub(crate) fn observe(binary: &[u8], fuel: u64) -> Result<Observation, Failure> {
    let rewritten =
        detwasm_runtime::engine::rewrite(binary).map_err(|e| Failure::Invalid(e.to_string()))?;
    let mut names = Vec::new();
    for payload in wasmparser::Parser::new(0).parse_all(&rewritten) {
        if let Ok(wasmparser::Payload::ExportSection(r)) = payload {
            for e in r.into_iter().flatten() {
                names.push(e.name.to_string());
            }
        }
    }
    let engine = engine();
    let module = Module::new(engine, &rewritten[..])
        .map_err(|e| Failure::Setup(format!("wasmi refused the rewritten module: {e}")))?;
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("selffuzz-interpreter".into())
            .stack_size(detwasm_runtime::run::GUEST_THREAD_STACK)
            .spawn_scoped(s, || execute(engine, &module, &names, fuel))
            .map_err(|e| Failure::Setup(format!("starting the guest thread: {e}")))?
            .join()
            .map_err(|_| Failure::Setup("the guest thread panicked".into()))?
    })
}

fn global(store: &Store<Data>, instance: &Instance, name: &str) -> Option<wasmi::Global> {
    instance.get_global(store, name)
}

/// How a call or instantiation ended, named as the baseline names it.
fn end_of(r: &Result<(), wasmi::Error>, depth_before: i32, depth_after: i32) -> End {
    let Err(e) = r else {
        return End::Returned;
    };
    if e.downcast_ref::<Stopped>().is_some() {
        return End::OutOfFuel;
    }
    match trap_of(e, depth_before, depth_after) {
        Some(Ok(trap)) => End::Trap(trap.to_string()),
        Some(Err(m)) => End::Trap(m),
        None => End::Trap(format!("wasmi: {e}")),
    }
}

/// The trap `e` is, as wasmtime names it (`Err`: wasmi's own stack limit, which the
/// metered one should always come before; `None`: not a trap). A metered stack
/// exhaustion is told by the stack pass's counter (see the module docs).
fn trap_of(e: &wasmi::Error, depth_before: i32, depth_after: i32) -> Option<Result<Trap, String>> {
    Some(Ok(match e.as_trap_code()? {
        TrapCode::UnreachableCodeReached
            if depth_after > STACK_LIMIT as i32 && depth_after > depth_before =>
        {
            Trap::StackOverflow
        }
        TrapCode::UnreachableCodeReached => Trap::UnreachableCodeReached,
        TrapCode::MemoryOutOfBounds => Trap::MemoryOutOfBounds,
        TrapCode::TableOutOfBounds => Trap::TableOutOfBounds,
        TrapCode::IndirectCallToNull => Trap::IndirectCallToNull,
        TrapCode::IntegerDivisionByZero => Trap::IntegerDivisionByZero,
        TrapCode::IntegerOverflow => Trap::IntegerOverflow,
        TrapCode::BadConversionToInteger => Trap::BadConversionToInteger,
        TrapCode::BadSignature => Trap::BadSignature,
        TrapCode::StackOverflow => {
            return Some(Err("wasmi's own stack limit (never the metered one)".into()))
        }
        other => return Some(Err(format!("wasmi: {other:?}"))),
    }))
}

fn value(v: &Val) -> Value {
    match v {
        Val::I32(x) => Value::I32(*x as u32),
        Val::I64(x) => Value::I64(*x as u64),
        Val::F32(x) => Value::F32(x.to_bits()),
        Val::F64(x) => Value::F64(x.to_bits()),
        Val::V128(x) => Value::V128(x.as_u128()),
        Val::FuncRef(r) => Value::Ref { null: r.is_null() },
        Val::ExternRef(r) => Value::Ref { null: r.is_null() },
    }
}

/// The baseline's argument ([`argument`]), as a wasmi value.
fn wasmi_argument(ty: &wasmi::ValType, index: usize) -> Option<Val> {
    let t = match ty {
        wasmi::ValType::I32 => wasmtime::ValType::I32,
        wasmi::ValType::I64 => wasmtime::ValType::I64,
        wasmi::ValType::F32 => wasmtime::ValType::F32,
        wasmi::ValType::F64 => wasmtime::ValType::F64,
        wasmi::ValType::V128 => wasmtime::ValType::V128,
        _ => return None,
    };
    Some(match argument(&t, index)? {
        wasmtime::Val::I32(x) => Val::I32(x),
        wasmtime::Val::I64(x) => Val::I64(x),
        wasmtime::Val::F32(b) => Val::F32(wasmi::F32::from_bits(b)),
        wasmtime::Val::F64(b) => Val::F64(wasmi::F64::from_bits(b)),
        wasmtime::Val::V128(x) => Val::V128(wasmi::V128::from(x.as_u128())),
        _ => return None,
    })
}

fn execute(
    engine: &Engine,
    module: &Module,
    names: &[String],
    fuel: u64,
) -> Result<Observation, Failure> {
    let new_meter = || Meter::new(fuel, None);
    let mut store = Store::new(
        engine,
        Data {
            limits: Limits(JobLimiter::new(crate::MEMORY_LIMIT)),
            meter: new_meter(),
        },
    );
    store.limiter(|d| &mut d.limits);
    let mut linker = Linker::<Data>::new(engine);
    linker
        .func_wrap(
            detwasm_passes::fuel::IMPORT_MODULE,
            detwasm_passes::fuel::IMPORT_REFUEL,
            |mut caller: Caller<'_, Data>, fuel: i64| -> Result<i64, wasmi::Error> {
                let r = caller.data_mut().meter.refuel(fuel);
                // The global follows, as the runtime's refuel sets it.
                if let Some(Extern::Global(g)) =
                    caller.get_export(detwasm_passes::fuel::EXPORT_FUEL)
                {
                    g.set(&mut caller, Val::I64(*r.as_ref().unwrap_or(&fuel)))?;
                }
                r.map_err(|s| wasmi::Error::host(Stopped(s)))
            },
        )
        .map_err(|e| Failure::Setup(format!("the refuel import: {e}")))?;
    let set_fuel = |store: &mut Store<Data>, instance: Option<&Instance>| {
        store.data_mut().meter = new_meter();
        if let Some(g) = instance.and_then(|i| global(store, i, detwasm_passes::fuel::EXPORT_FUEL))
        {
            g.set(&mut *store, Val::I64(0))
                .map_err(|e| Failure::Setup(format!("resetting the fuel: {e}")))?;
        }
        Ok::<(), Failure>(())
    };
    let consumed = |store: &Store<Data>, instance: Option<&Instance>| {
        let f = instance
            .and_then(|i| global(store, i, detwasm_passes::fuel::EXPORT_FUEL))
            .and_then(|g| match g.get(store) {
                Val::I64(v) => Some(v),
                _ => None,
            })
            .unwrap_or(0);
        store.data().meter.consumed(f)
    };
    let depth = |store: &Store<Data>, instance: Option<&Instance>| {
        instance
            .and_then(|i| global(store, i, EXPORT_STACK_DEPTH))
            .and_then(|g| match g.get(store) {
                Val::I32(v) => Some(v),
                _ => None,
            })
            .unwrap_or(0)
    };

    set_fuel(&mut store, None)?;
    // Instantiated without its start function (the fuel pass moved it to an export that
    // the host calls, as the runtime does), so that a start that fails leaves an instance
    // to read the fuel of.
    let instance = match linker.instantiate_and_start(&mut store, module) {
        Ok(i) => i,
        // A data or element segment out of bounds, or a memory or table the limit
        // refuses: the module's own end, with nothing to read the fuel of.
        Err(e) if e.as_trap_code().is_some() || store.data().limits.0.denied => {
            return Ok(Observation {
                instantiate: end_of(&Err(e), 0, 0),
                instantiate_fuel: consumed(&store, None),
                calls: Vec::new(),
                memories: Vec::new(),
                globals: Vec::new(),
                tables: Vec::new(),
                skipped: 0,
            });
        }
        // wasmi reports a segment out of bounds as an error of the table or memory, where
        // the spec (and wasmtime) traps.
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::Table(_)
                    | ErrorKind::Memory(_)
                    | ErrorKind::Instantiation(InstantiationError::ElementSegmentDoesNotFit { .. })
            ) =>
        {
            let trap = match e.kind() {
                ErrorKind::Memory(_) => Trap::MemoryOutOfBounds,
                _ => Trap::TableOutOfBounds,
            };
            return Ok(Observation {
                instantiate: End::Trap(trap.to_string()),
                instantiate_fuel: consumed(&store, None),
                calls: Vec::new(),
                memories: Vec::new(),
                globals: Vec::new(),
                tables: Vec::new(),
                skipped: 0,
            });
        }
        Err(e) => return Err(Failure::Setup(format!("wasmi could not instantiate: {e}"))),
    };
    let started = match instance.get_func(&store, detwasm_passes::fuel::EXPORT_START) {
        Some(start) => start.call(&mut store, &[], &mut []),
        None => Ok(()),
    };
    let instantiate = end_of(&started, 0, depth(&store, Some(&instance)));
    let mut obs = Observation {
        instantiate_fuel: consumed(&store, Some(&instance)),
        instantiate,
        calls: Vec::new(),
        memories: Vec::new(),
        globals: Vec::new(),
        tables: Vec::new(),
        skipped: 0,
    };
    if obs.instantiate != End::Returned {
        return Ok(obs);
    }
    // In the module's order, as wasmtime lists them (wasmi's own order is not it).
    let exports: Vec<(String, Extern)> = names
        .iter()
        .filter(|n| !meter::is_pass_export(n))
        .filter_map(|n| Some((n.clone(), instance.get_export(&store, n)?)))
        .collect();
    let loop_fuel = exports.iter().find_map(|(name, ext)| match ext {
        Extern::Global(g) if name == LOOP_FUEL_EXPORT => Some((*g, g.get(&store))),
        _ => None,
    });
    let funcs: Vec<(&String, &Func)> = exports
        .iter()
        .filter_map(|(name, ext)| match ext {
            Extern::Func(f) => Some((name, f)),
            _ => None,
        })
        .collect();
    for round in 0..ROUNDS {
        for &(name, func) in &funcs {
            let ty = func.ty(&store);
            let params: Option<Vec<Val>> = ty
                .params()
                .iter()
                .enumerate()
                .map(|(i, t)| wasmi_argument(t, i + 3 * round))
                .collect();
            let Some(params) = params else {
                obs.skipped += usize::from(round == 0);
                continue;
            };
            let mut results: Vec<Val> = ty.results().iter().map(|t| Val::default(*t)).collect();
            if let Some((g, initial)) = &loop_fuel {
                g.set(&mut store, initial.clone())
                    .map_err(|e| Failure::Setup(format!("resetting {LOOP_FUEL_EXPORT}: {e}")))?;
            }
            set_fuel(&mut store, Some(&instance))?;
            let before = depth(&store, Some(&instance));
            let r = func.call(&mut store, &params, &mut results);
            let end = end_of(&r, before, depth(&store, Some(&instance)));
            obs.calls.push(Call {
                export: name.clone(),
                results: if r.is_ok() {
                    results.iter().map(value).collect()
                } else {
                    Vec::new()
                },
                end,
                fuel: consumed(&store, Some(&instance)),
            });
        }
    }
    for (name, ext) in &exports {
        match ext {
            Extern::Memory(m) => obs.memories.push(memory_seen(name, m.data(&store))),
            Extern::Global(g) => obs.globals.push((name.clone(), value(&g.get(&store)))),
            Extern::Table(t) => obs.tables.push((name.clone(), t.size(&store))),
            _ => {}
        }
    }
    Ok(obs)
}
