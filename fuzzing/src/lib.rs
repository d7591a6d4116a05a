//! detwasm-fuzzing: runtime self-fuzzing. Runs one core module under several engine
//! setups that must agree, and says precisely where they do not. Not published: a tool
//! for detwasm's own tests and cargo-fuzz targets, above the runtime it checks.
//!
//! What it is for: proving, on generated modules (wasm-smith, see `tests/self_fuzz.rs`
//! and `fuzz/fuzz_targets/runtime.rs`), that the choices detwasm leaves out of the engine
//! fingerprint ([`detwasm_runtime::engine`]: parallel compilation, the module cache) cannot change
//! what a module computes, and that NaN bits are exactly those of a module that
//! canonicalizes after every operation (the NaN row of the determinism contract); and
//! that another engine, wasmi, computes what wasmtime does after the passes, for
//! generated modules and for whole jobs through detwasm's WASI host
//! ([`interpreter::job`]). What it is not: a perturbation of a job's host (`detwasm fuzz`
//! does that), nor a conformance test of wasmtime against the spec.
//!
//! Observed for every setup, with the same fuel budget: the end of instantiation (a start
//! function may run), then each exported function whose parameters are all numbers, called
//! in export order with fixed arguments ([`argument`]), [`ROUNDS`] times over: its results
//! (floats compared by bits), its end (returned, the trap's message, out of fuel) and the
//! fuel it consumed; afterwards the size and blake3 of every exported memory, every
//! exported global's value and every exported table's size. Each call gets a fresh budget
//! of [`FUEL_PER_CALL`], so one long loop does not starve the exports after it. Generated
//! modules also carry a float trace ([`trace_floats`]), an exported global that makes the
//! bits of every intermediate NaN observable.
//!
//! The setups ([`Setup`]) and what each must match:
//! - [`Setup::Serial`], the baseline: [`detwasm_runtime::engine::deterministic_config`] with serial
//!   compilation, compiled fresh.
//! - [`Setup::Parallel`]: the same with parallel compilation (the CLI's default).
//! - [`Setup::CacheHit`]: compiled, stored by [`ModuleCache`] in a temporary folder, and
//!   loaded back (deserialized): the path every run after the first takes.
//! - [`Setup::OptNone`]: Cranelift without optimisation, an option `detwasm fuzz` perturbs
//!   on purpose. Fuel is counted per wasm operator, so it must match too. Its native
//!   frames are larger, but the depth at which a call stack is exhausted is metered in the
//!   module ([`detwasm_passes::stack`]), so a stack overflow must happen at the same call
//!   and the same instruction count: the comparison does not stop there.
//! - [`Setup::Reference`]: the engine *without* NaN canonicalization, running the module
//!   rewritten by [`canonicalize_nans`], a wasm-to-wasm pass that replaces every NaN that
//!   an operation the spec lets produce a nondeterministic NaN returns with the canonical
//!   NaN. It must match bit for bit except for fuel (the inserted code costs fuel; it gets
//!   [`REFERENCE_FUEL_FACTOR`] times the budget and the comparison stops at the first call
//!   that ran out of fuel in the baseline, or whose call stack was exhausted in either:
//!   the pass adds locals and operands, so its frames cost more stack units). Rejected:
//!   the plain rule "every NaN observed is canonical": wasm lets `f32.neg`,
//!   `f32.copysign`, `f32.reinterpret_i32`, loads and constants carry any NaN bits, so a correct engine shows non-canonical NaNs (counted in
//!   [`Agreement::noncanonical_nans`], never a failure). Rejected: wasm-smith's own
//!   `canonicalize_nans` as the reference: it leaves out `promote`/`demote` and relaxed
//!   `madd`, which Cranelift canonicalizes (so it would report false disagreements), and it
//!   changes the generated module when it reaches `max_instructions`.
//! - [`Setup::Interpreter`]: wasmi, an interpreter nobody here wrote, running the module
//!   after every pass of a job, with the same meter and memory limit ([`interpreter`]).
//!   Everything must match, fuel and the depth of a stack exhaustion included: what a
//!   module computes is decided by detwasm's passes, not by the engine (issue 20).
//! - [`Setup::Uncanonicalized`] is the engine without NaN canonicalization on the module
//!   as it is. It is never part of [`check_module`]: it exists so tests can show that
//!   [`compare`] reports a real divergence.
//!
//! Termination: engine fuel (the same budget everywhere), plus whatever the generator adds
//! (wasm-smith's `ensure_termination`). Every setup runs on a thread of its own with
//! [`GUEST_THREAD_STACK`], as a job does, and every module is compiled through
//! [`engine::compile`], so with the same stack metering as a job.

use std::fmt;
use std::sync::OnceLock;

pub mod interpreter;

use wasmtime::{Config, Engine, Extern, Instance, Module, OptLevel, Store, Trap, Val, ValType};

use detwasm_runtime::cache::ModuleCache;
use detwasm_runtime::engine;
use detwasm_runtime::limiter::JobLimiter;
use detwasm_runtime::meter::{self, Meter, Metered};
use detwasm_runtime::run::GUEST_THREAD_STACK;

/// Fuel for instantiation and for each call.
pub const FUEL_PER_CALL: u64 = 200_000;
/// The budget per call of the setups that canonicalize in another way than the engine
/// (reference, eager, uncanonicalized), as a multiple of [`FUEL_PER_CALL`]: canonicalizing
/// a scalar adds eight instructions after an operation, so a body made only of such
/// operations costs nine times as much.
pub const REFERENCE_FUEL_FACTOR: u64 = 10;
/// How many times the exports are called, each round with the next arguments of the
/// cycles of [`argument`] (shifted by 3), so a function with one float parameter gets both
/// a number and a NaN. Measured on the first 100 modules of seed 0, before
/// [`trace_floats`]: one round exposed an engine without NaN canonicalization in 1 module,
/// two rounds in 2, for 1.5 times the time.
pub const ROUNDS: usize = 2;
/// Memory limit of a store (all memories and tables), as a job's limit works.
pub const MEMORY_LIMIT: u64 = 16 << 20;

/// An exported mutable `i32` global of this name is a loop budget of the module's own
/// (wasm-smith's `ensure_termination` counter, exported by [`export_global`]): it is set
/// back to its value after instantiation before every call, so that each export gets the
/// whole budget. A budget kept in the module ends a call at the same wasm instruction in
/// the reference as in the baseline (a trap), where engine fuel, which the reference's
/// inserted code also consumes, cannot; so the comparison with the reference goes on past
/// long-running calls.
pub const LOOP_FUEL_EXPORT: &str = "__detwasm_loop_fuel";

use detwasm_passes::nan::{
    canon_kind, copy_section, emit_canonicalization, read_u32, rewrite_code, write_u32, Canon,
    SCRATCH_LOCALS,
};
pub use detwasm_passes::nan::{CANONICAL_F32_NAN, CANONICAL_F64_NAN};

/// An engine setup that a module runs under (see the module docs for each).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Setup {
    Serial,
    Parallel,
    CacheHit,
    OptNone,
    Reference,
    Eager,
    Uncanonicalized,
    /// The baseline's engine, refuelling every [`CHECKPOINT_SLICE`] instructions: what
    /// [`Setup::Checkpointed`] is compared with (where refuels happen decides the count
    /// a trap reports, so both refuel alike).
    Sliced,
    /// Compiled with the unwind pass ([`detwasm_passes::unwind`]), refuelling like
    /// [`Setup::Sliced`] and unwinding the whole stack and rewinding it at every refuel
    /// of an exported function's call: everything must match [`Setup::Sliced`], fuel
    /// included. A module the pass refuses (tail calls that can unwind, references kept
    /// across a call) is counted in [`Agreement::not_checkpointable`].
    Checkpointed,
    /// wasmi, an interpreter, running the module after every pass of a job
    /// ([`detwasm_runtime::engine::rewrite`]) with the same meter: everything must match
    /// the baseline, fuel included (see [`interpreter`]).
    Interpreter,
}

/// The slice of [`Setup::Sliced`] and [`Setup::Checkpointed`]: a checkpoint every 997
/// instructions or so, at a different place in every loop.
pub const CHECKPOINT_SLICE: u64 = 997;

impl Setup {
    /// The setups [`check_module`] compares with the baseline ([`Setup::Serial`]).
    pub const CHECKED: [Setup; 6] = [
        Setup::Parallel,
        Setup::CacheHit,
        Setup::OptNone,
        Setup::Reference,
        Setup::Eager,
        Setup::Interpreter,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Setup::Serial => "serial",
            Setup::Parallel => "parallel",
            Setup::CacheHit => "cache-hit",
            Setup::OptNone => "opt-none",
            Setup::Reference => "reference",
            Setup::Eager => "eager",
            Setup::Uncanonicalized => "uncanonicalized",
            Setup::Sliced => "sliced",
            Setup::Checkpointed => "checkpointed",
            Setup::Interpreter => "interpreter (wasmi)",
        }
    }

    fn config(self) -> Config {
        let mut c = engine::deterministic_config(matches!(self, Setup::Parallel | Setup::CacheHit));
        match self {
            Setup::OptNone => {
                c.cranelift_opt_level(OptLevel::None);
            }
            Setup::Eager => {
                c.cranelift_nan_canonicalization(true);
            }
            Setup::Reference | Setup::Uncanonicalized => {
                c.cranelift_nan_canonicalization(false);
            }
            Setup::Serial
            | Setup::Parallel
            | Setup::CacheHit
            | Setup::Sliced
            | Setup::Checkpointed
            | Setup::Interpreter => {}
        }
        c
    }

    /// One engine per setup for the whole process (creating one per module would cost more
    /// than running most modules).
    fn engine(self) -> Result<&'static Engine, String> {
        static ENGINES: [OnceLock<Result<Engine, String>>; 10] = [const { OnceLock::new() }; 10];
        ENGINES[self as usize]
            .get_or_init(|| Engine::new(&self.config()).map_err(|e| format!("{e:#}")))
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Whether fuel must match the baseline's.
    fn same_fuel(self) -> bool {
        // The others do not run the engine's NaN pass, whose inserted code costs fuel.
        !matches!(
            self,
            Setup::Reference | Setup::Eager | Setup::Uncanonicalized
        )
    }
}

impl fmt::Display for Setup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A value a module returned or holds; floats as their bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Value {
    I32(u32),
    I64(u64),
    F32(u32),
    F64(u64),
    V128(u128),
    /// A reference: only whether it is null can be compared across stores.
    Ref {
        null: bool,
    },
}

impl Value {
    fn of(v: &Val) -> Value {
        match v {
            Val::I32(x) => Value::I32(*x as u32),
            Val::I64(x) => Value::I64(*x as u64),
            Val::F32(b) => Value::F32(*b),
            Val::F64(b) => Value::F64(*b),
            Val::V128(x) => Value::V128(x.as_u128()),
            other => Value::Ref {
                null: (*other).ref_().is_none_or(|r| r.is_null()),
            },
        }
    }

    /// `Some(canonical?)` for a scalar float NaN.
    fn nan(self) -> Option<bool> {
        match self {
            Value::F32(b) if f32::from_bits(b).is_nan() => Some(b == CANONICAL_F32_NAN),
            Value::F64(b) if f64::from_bits(b).is_nan() => Some(b == CANONICAL_F64_NAN),
            _ => None,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nan = |canonical: Option<bool>| match canonical {
            Some(true) => " (canonical NaN)",
            Some(false) => " (non-canonical NaN)",
            None => "",
        };
        match *self {
            Value::I32(x) => write!(f, "i32 {x:#010x}"),
            Value::I64(x) => write!(f, "i64 {x:#018x}"),
            Value::F32(b) => write!(f, "f32 {b:#010x}{}", nan(self.nan())),
            Value::F64(b) => write!(f, "f64 {b:#018x}{}", nan(self.nan())),
            Value::V128(x) => write!(f, "v128 {x:#034x}"),
            Value::Ref { null: true } => write!(f, "null ref"),
            Value::Ref { null: false } => write!(f, "non-null ref"),
        }
    }
}

/// How instantiation or a call ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    Returned,
    OutOfFuel,
    /// The trap's message (deterministic: a trap code's text, no addresses).
    Trap(String),
}

impl End {
    fn of(r: Result<(), &wasmtime::Error>) -> End {
        match r {
            Ok(()) => End::Returned,
            // Reported as a job reports it (`run::classify`).
            Err(e) if detwasm_runtime::engine::is_stack_exhaustion(e) => {
                End::Trap(Trap::StackOverflow.to_string())
            }
            // A job makes this a host failure; here it is an end of its own, which the
            // setups must still agree on.
            Err(e) if e.downcast_ref::<Trap>() == Some(&Trap::StackOverflow) => {
                End::Trap(detwasm_runtime::run::NATIVE_STACK_EXHAUSTED.into())
            }
            Err(e) if e.downcast_ref::<detwasm_runtime::meter::Stop>().is_some() => End::OutOfFuel,
            Err(e) => match e.downcast_ref::<Trap>() {
                Some(Trap::OutOfFuel) => End::OutOfFuel,
                Some(t) => End::Trap(t.to_string()),
                None => End::Trap(format!("{e}")),
            },
        }
    }

    fn is_stack_overflow(&self) -> bool {
        *self == End::Trap(Trap::StackOverflow.to_string())
    }
}

impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            End::Returned => f.write_str("returned"),
            End::OutOfFuel => f.write_str("ran out of fuel"),
            End::Trap(m) => write!(f, "trapped: {m}"),
        }
    }
}

/// One call of an export.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    pub export: String,
    pub end: End,
    pub results: Vec<Value>,
    pub fuel: u64,
}

/// Everything a setup observed of one module.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observation {
    pub instantiate: End,
    pub instantiate_fuel: u64,
    pub calls: Vec<Call>,
    /// (export, bytes, blake3 hex of the contents).
    pub memories: Vec<(String, usize, String)>,
    pub globals: Vec<(String, Value)>,
    /// (export, elements).
    pub tables: Vec<(String, u64)>,
    /// Exported functions not called (a reference parameter).
    pub skipped: usize,
}

/// What [`check_module`] found when every setup agreed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Agreement {
    /// The module did not validate (the same message in every setup); nothing ran.
    pub invalid: Option<String>,
    /// Whether instantiation trapped (then nothing was called).
    pub instantiation_trapped: bool,
    pub calls: usize,
    pub returned: usize,
    pub trapped: usize,
    pub out_of_fuel: usize,
    /// Fuel the baseline consumed, instantiation included.
    pub fuel: u64,
    /// Scalar float NaNs among the baseline's results and globals.
    pub nans: usize,
    /// ... of which not canonical: carried through by an operation wasm defines on bits
    /// (see the module docs), which the reference reproduces bit for bit.
    pub noncanonical_nans: usize,
    /// Calls compared with the reference (fewer than `calls` when the baseline ran out of
    /// fuel).
    pub reference_calls: usize,
    /// Modules [`Setup::Checkpointed`] could not compile because the unwind pass refuses
    /// them (the reason is in its docs).
    pub not_checkpointable: usize,
    /// Calls compared with the eager setup (Cranelift canonicalizing after every
    /// operation, the engine before `detwasm-nan-1`).
    pub eager_calls: usize,
    /// Exported functions not called.
    pub skipped: usize,
}

/// Two setups that must agree and did not, or a setup that could not run the module.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Disagreement {
    /// blake3 of the module bytes.
    pub module: String,
    pub baseline: Setup,
    pub other: Setup,
    /// What differed, naming the export and both values.
    pub what: String,
}

impl fmt::Display for Disagreement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "module blake3:{}: {} vs {}: {}",
            self.module, self.baseline, self.other, self.what
        )
    }
}

impl std::error::Error for Disagreement {}

/// Runs `binary` under [`Setup::Serial`] and every setup of [`Setup::CHECKED`] and
/// compares each with the baseline.
pub fn check_module(binary: &[u8]) -> Result<Agreement, Disagreement> {
    check_against(binary, Setup::Serial, &Setup::CHECKED)
}

/// Runs `binary` under `baseline` and `other` and compares them as [`check_module`]
/// compares a setup with its baseline.
pub fn compare(binary: &[u8], baseline: Setup, other: Setup) -> Result<Agreement, Disagreement> {
    check_against(binary, baseline, &[other])
}

fn check_against(
    binary: &[u8],
    baseline: Setup,
    others: &[Setup],
) -> Result<Agreement, Disagreement> {
    let module = blake3::hash(binary).to_hex().to_string();
    let fail = |other: Setup, what: String| Disagreement {
        module: module.clone(),
        baseline,
        other,
        what,
    };
    let base = match observe(binary, baseline) {
        Ok(o) => o,
        Err(Failure::Invalid(msg)) => {
            // Every setup must refuse it the same way.
            for &other in others {
                match observe(binary, other) {
                    // The reference's message names offsets in the rewritten module.
                    Err(Failure::Invalid(m)) if m == msg || other == Setup::Reference => {}
                    Err(Failure::Invalid(m)) => {
                        return Err(fail(other, format!("invalid as `{msg}` vs as `{m}`")))
                    }
                    Err(Failure::Setup(m)) => return Err(fail(other, m)),
                    Ok(_) => {
                        return Err(fail(other, format!("invalid (`{msg}`) vs valid")));
                    }
                }
            }
            return Ok(Agreement {
                invalid: Some(msg),
                ..Agreement::default()
            });
        }
        Err(Failure::Setup(m)) => return Err(fail(baseline, m)),
    };
    let mut agreement = summarize(&base);
    for &other in others {
        let theirs = match observe(binary, other) {
            Ok(o) => o,
            Err(Failure::Invalid(m))
                if other == Setup::Checkpointed && m.contains("cannot take checkpoints") =>
            {
                agreement.not_checkpointable += 1;
                continue;
            }
            Err(Failure::Invalid(m)) => {
                return Err(fail(other, format!("valid vs invalid (`{m}`)")));
            }
            Err(Failure::Setup(m)) => return Err(fail(other, m)),
        };
        let compared = differences(&base, &theirs, other).map_err(|what| fail(other, what))?;
        match other {
            Setup::Reference => agreement.reference_calls = compared,
            Setup::Eager => agreement.eager_calls = compared,
            _ => {}
        }
    }
    Ok(agreement)
}

fn summarize(o: &Observation) -> Agreement {
    let mut a = Agreement {
        instantiation_trapped: o.instantiate != End::Returned,
        calls: o.calls.len(),
        fuel: o.instantiate_fuel,
        skipped: o.skipped,
        ..Agreement::default()
    };
    let values = o
        .calls
        .iter()
        .flat_map(|c| &c.results)
        .chain(o.globals.iter().map(|(_, v)| v));
    for v in values {
        if let Some(canonical) = v.nan() {
            a.nans += 1;
            a.noncanonical_nans += usize::from(!canonical);
        }
    }
    for c in &o.calls {
        a.fuel += c.fuel;
        match c.end {
            End::Returned => a.returned += 1,
            End::OutOfFuel => a.out_of_fuel += 1,
            End::Trap(_) => a.trapped += 1,
        }
    }
    a
}

/// `Ok(calls compared)` or what differs first. Calls are compared in order up to the
/// horizon of `other` (see the module docs); the final state only when no call was cut off.
fn differences(base: &Observation, theirs: &Observation, other: Setup) -> Result<usize, String> {
    let same_fuel = other.same_fuel();
    // Where the comparison must stop: the end at which `other` may legitimately differ.
    let cut = |e: &End| match other {
        // The reference's rewriting adds locals and operands to every frame, so its
        // frames cost more stack units and its stack is exhausted sooner.
        // So do the engine's NaN pass's, compared with the eager setup.
        Setup::Reference | Setup::Eager | Setup::Uncanonicalized => {
            *e == End::OutOfFuel || e.is_stack_overflow()
        }
        _ => false,
    };
    let ends = |a: &End, b: &End| {
        if a != b {
            Err(format!("{a} vs {b}"))
        } else {
            Ok(())
        }
    };
    if cut(&base.instantiate) || cut(&theirs.instantiate) {
        return Ok(0);
    }
    ends(&base.instantiate, &theirs.instantiate).map_err(|e| format!("instantiation {e}"))?;
    if same_fuel && base.instantiate_fuel != theirs.instantiate_fuel {
        return Err(format!(
            "instantiation consumed {} vs {} fuel",
            base.instantiate_fuel, theirs.instantiate_fuel
        ));
    }
    if base.calls.len() != theirs.calls.len() || base.skipped != theirs.skipped {
        return Err(format!(
            "{} vs {} exports called",
            base.calls.len(),
            theirs.calls.len()
        ));
    }
    for (i, (a, b)) in base.calls.iter().zip(&theirs.calls).enumerate() {
        let at = || format!("call #{i} of export `{}`", a.export);
        if a.export != b.export {
            return Err(format!("{}: called `{}` instead", at(), b.export));
        }
        if cut(&a.end) || cut(&b.end) {
            return Ok(i);
        }
        ends(&a.end, &b.end).map_err(|e| format!("{}: {e}", at()))?;
        if a.results != b.results {
            return Err(format!(
                "{}: results [{}] vs [{}]",
                at(),
                list(&a.results),
                list(&b.results)
            ));
        }
        if same_fuel && a.fuel != b.fuel {
            return Err(format!("{}: consumed {} vs {} fuel", at(), a.fuel, b.fuel));
        }
    }
    for (x, y) in base.memories.iter().zip(&theirs.memories) {
        if x != y {
            return Err(format!(
                "final memory `{}`: {} bytes blake3:{} vs {} bytes blake3:{}",
                x.0, x.1, x.2, y.1, y.2
            ));
        }
    }
    for (x, y) in base.globals.iter().zip(&theirs.globals) {
        if x != y {
            return Err(format!("final global `{}`: {} vs {}", x.0, x.1, y.1));
        }
    }
    if base.memories.len() != theirs.memories.len()
        || base.globals.len() != theirs.globals.len()
        || base.tables != theirs.tables
    {
        return Err(format!(
            "exported memories, globals or tables differ: {:?} vs {:?}",
            base.tables, theirs.tables
        ));
    }
    Ok(base.calls.len())
}

fn list(values: &[Value]) -> String {
    values
        .iter()
        .map(Value::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

enum Failure {
    /// The module did not compile (validation), with the engine's message.
    Invalid(String),
    /// The setup itself failed (a cache that did not load back what it stored, a host
    /// failure): always reported.
    Setup(String),
}

/// Loads `binary` the way `setup` does and runs it on a thread with the guest stack.
fn observe(binary: &[u8], setup: Setup) -> Result<Observation, Failure> {
    if setup == Setup::Interpreter {
        return interpreter::observe(binary, FUEL_PER_CALL);
    }
    let engine = setup.engine().map_err(Failure::Setup)?;
    let module = load(engine, binary, setup)?;
    let fuel = match setup {
        Setup::Reference | Setup::Eager | Setup::Uncanonicalized => {
            FUEL_PER_CALL * REFERENCE_FUEL_FACTOR
        }
        _ => FUEL_PER_CALL,
    };
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name(format!("selffuzz-{setup}"))
            .stack_size(GUEST_THREAD_STACK)
            .spawn_scoped(s, || execute(engine, &module, fuel, setup))
            .map_err(|e| Failure::Setup(format!("starting the guest thread: {e}")))?
            .join()
            .map_err(|_| Failure::Setup("the guest thread panicked".into()))?
    })
}

/// A start function that failed, with the instance it ran in (to read its fuel).
#[derive(Debug)]
struct StartFailed(Instance);

impl fmt::Display for StartFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the start function failed")
    }
}

fn load(engine: &Engine, binary: &[u8], setup: Setup) -> Result<Module, Failure> {
    let invalid = |e: detwasm_runtime::RunError| Failure::Invalid(e.to_string());
    // The setups that rewrite the module themselves scan it first, as `engine::compile`
    // does, so that a module whose shape is refused is refused the same way by every
    // setup (with the same message), not by the rescan of their own rewriting.
    if matches!(
        setup,
        Setup::Reference | Setup::Eager | Setup::Uncanonicalized
    ) {
        detwasm_passes::shape::check(binary, &detwasm_passes::shape::LIMITS)
            .map_err(|r| invalid(detwasm_runtime::RunError::TooComplex(r.to_string())))?;
    }
    match setup {
        Setup::CacheHit => {
            let dir = tempfile::tempdir()
                .map_err(|e| Failure::Setup(format!("creating a cache folder: {e}")))?;
            let cache = ModuleCache::new(dir.path().join("cache"));
            let (_, hit) = cache.load_or_compile(engine, binary).map_err(invalid)?;
            let (module, hit_again) = cache.load_or_compile(engine, binary).map_err(invalid)?;
            if hit || !hit_again {
                return Err(Failure::Setup(format!(
                    "the module cache did not load back the module it stored (first load a \
                     hit: {hit}, second a hit: {hit_again}; warnings: {:?})",
                    cache.warnings()
                )));
            }
            Ok(module)
        }
        // Not through the engine's NaN pass: the reference canonicalizes after every
        // operation itself, the eager setup has Cranelift do it, the uncanonicalized one
        // nothing.
        // The relaxed SIMD lowering is not a way of canonicalizing: every setup has it,
        // after the fuel pass, as the engine's path does.
        Setup::Reference => {
            let fueled = detwasm_passes::fuel::meter(binary).map_err(Failure::Invalid)?;
            let fueled = detwasm_passes::relaxed::lower(&fueled).map_err(Failure::Invalid)?;
            let rewritten = canonicalize_nans(&fueled).map_err(Failure::Invalid)?;
            engine::compile_rewritten(engine, binary, &rewritten).map_err(invalid)
        }
        Setup::Eager | Setup::Uncanonicalized => {
            let fueled = detwasm_passes::fuel::meter(binary).map_err(Failure::Invalid)?;
            let fueled = detwasm_passes::relaxed::lower(&fueled).map_err(Failure::Invalid)?;
            engine::compile_rewritten(engine, binary, &fueled).map_err(invalid)
        }
        Setup::Checkpointed => engine::compile_with(engine, binary, true).map_err(invalid),
        _ => engine::compile(engine, binary).map_err(invalid),
    }
}

/// The fixed argument for parameter `index` of type `ty`: a cycle of values chosen to
/// reach edge cases (zero, signs, extremes, and for floats NaNs with a payload and with the
/// sign set, infinities, a subnormal), or `None` for a reference parameter.
pub fn argument(ty: &ValType, index: usize) -> Option<Val> {
    const I32S: [u32; 6] = [0, 1, 0xffff_ffff, 0x8000_0000, 0x7fff_ffff, 0x0001_0000];
    const I64S: [u64; 6] = [
        0,
        1,
        u64::MAX,
        1 << 63,
        0x7fff_ffff_ffff_ffff,
        0x1_0000_0000,
    ];
    const F32S: [u32; 6] = [
        0x3fc0_0000, // 1.5
        0x7fa0_0001, // signalling NaN with a payload
        0x8000_0000, // -0.0
        0xffc0_0000, // negative quiet NaN
        0x7f80_0000, // +inf
        0x0000_0001, // smallest subnormal
    ];
    const F64S: [u64; 6] = [
        0x3ff8_0000_0000_0000,
        0x7ff4_0000_0000_0001,
        0x8000_0000_0000_0000,
        0xfff8_0000_0000_0000,
        0x7ff0_0000_0000_0000,
        0x0000_0000_0000_0001,
    ];
    let i = index % 6;
    Some(match ty {
        ValType::I32 => Val::I32(I32S[i] as i32),
        ValType::I64 => Val::I64(I64S[i] as i64),
        ValType::F32 => Val::F32(F32S[i]),
        ValType::F64 => Val::F64(F64S[i]),
        ValType::V128 => {
            let lo = u128::from(F32S[i]) | (u128::from(F32S[(i + 1) % 6]) << 32);
            let hi = u128::from(F64S[(i + 3) % 6]);
            Val::V128(((hi << 64) | lo).into())
        }
        ValType::Ref(_) => return None,
    })
}

/// What a self-fuzzed guest's store holds: its limits and its fuel budget.
struct Data {
    limits: JobLimiter,
    meter: Meter,
}

impl Metered for Data {
    fn meter(&mut self) -> &mut Meter {
        &mut self.meter
    }
    fn unwinding(&mut self, on: bool) {
        self.limits.unwinding = on;
    }
}

fn execute(
    engine: &Engine,
    module: &Module,
    fuel: u64,
    setup: Setup,
) -> Result<Observation, Failure> {
    let new_meter = || match setup {
        Setup::Sliced => Meter::new(fuel, None).with_slice(CHECKPOINT_SLICE),
        Setup::Checkpointed => Meter::new(fuel, None)
            .with_slice(CHECKPOINT_SLICE)
            .with_checkpoints(1),
        _ => Meter::new(fuel, None),
    };
    let limits = match setup {
        // The unwind pass's memory and forwarding table are not the guest's, as in a job
        // (found by this test: a module that grew its memory to the limit was refused
        // the last growth with checkpoints, for the 96 bytes of the table).
        Setup::Checkpointed => JobLimiter::new(MEMORY_LIMIT).with_pass_resources_of(module),
        _ => JobLimiter::new(MEMORY_LIMIT),
    };
    let mut store = Store::new(
        engine,
        Data {
            limits,
            meter: new_meter(),
        },
    );
    store.limiter(|d| &mut d.limits);
    let mut linker = wasmtime::Linker::new(engine);
    meter::define(&mut linker).map_err(|e| Failure::Setup(format!("the refuel import: {e}")))?;
    // Each call starts with the whole budget: the meter anew and the guest's fuel at 0.
    let set_fuel = |store: &mut Store<Data>, instance: Option<&Instance>| {
        store.data_mut().meter = new_meter();
        if let Some(Extern::Global(g)) =
            instance.and_then(|i| i.get_export(&mut *store, detwasm_passes::fuel::EXPORT_FUEL))
        {
            g.set(&mut *store, Val::I64(0))
                .map_err(|e| Failure::Setup(format!("resetting the fuel: {e}")))?;
        }
        Ok::<(), Failure>(())
    };
    let consumed = |store: &mut Store<Data>, instance: Option<&Instance>| {
        let f = instance
            .and_then(|i| meter::fuel(&mut *store, i))
            .unwrap_or(0);
        store.data().meter.consumed(f)
    };
    let host_failure = |store: &Store<Data>| match &store.data().limits.host_failure {
        Some(f) => Err(Failure::Setup(format!("host failure: {f}"))),
        None => Ok(()),
    };

    set_fuel(&mut store, None)?;
    let instance = linker.instantiate(&mut store, module).and_then(|i| {
        if let Some(start) = meter::start(&mut store, &i) {
            start
                .call(&mut store, &[], &mut [])
                .map(|()| i)
                .map_err(|e| {
                    // The fuel of a failed start function is still read below.
                    e.context(StartFailed(i))
                })
        } else {
            Ok(i)
        }
    });
    let started = match &instance {
        Ok(i) => Some(*i),
        Err(e) => e.downcast_ref::<StartFailed>().map(|s| s.0),
    };
    host_failure(&store)?;
    let instantiate_fuel = consumed(&mut store, started.as_ref());
    let mut obs = Observation {
        instantiate: End::of(instance.as_ref().map(|_| ())),
        instantiate_fuel,
        calls: Vec::new(),
        memories: Vec::new(),
        globals: Vec::new(),
        tables: Vec::new(),
        skipped: 0,
    };
    let Ok(instance) = instance else {
        return Ok(obs);
    };
    let exports: Vec<(String, Extern)> = instance
        .exports(&mut store)
        .filter(|e| !meter::is_pass_export(e.name()))
        .map(|e| (e.name().to_string(), e.into_extern()))
        .collect();
    let loop_fuel = exports.iter().find_map(|(name, ext)| match ext {
        Extern::Global(g) if name == LOOP_FUEL_EXPORT => {
            let v = g.get(&mut store);
            Some((*g, v))
        }
        _ => None,
    });
    let funcs = exports.iter().filter_map(|(name, ext)| match ext {
        Extern::Func(f) => Some((name, f)),
        _ => None,
    });
    let rounds: Vec<_> = (0..ROUNDS)
        .flat_map(|r| funcs.clone().map(move |f| (r, f)))
        .collect();
    for (round, (name, func)) in rounds {
        let ty = func.ty(&store);
        let params: Option<Vec<Val>> = ty
            .params()
            .enumerate()
            .map(|(i, t)| argument(&t, i + 3 * round))
            .collect();
        let Some(params) = params else {
            obs.skipped += usize::from(round == 0);
            continue;
        };
        let mut results = vec![Val::I32(0); ty.results().len()];
        if let Some((global, initial)) = &loop_fuel {
            global
                .set(&mut store, *initial)
                .map_err(|e| Failure::Setup(format!("resetting {LOOP_FUEL_EXPORT}: {e}")))?;
        }
        set_fuel(&mut store, Some(&instance))?;
        store.data_mut().meter.allow_checkpoints(true);
        let r = meter::call(&mut store, &instance, func, &params, &mut results);
        store.data_mut().meter.allow_checkpoints(false);
        host_failure(&store)?;
        let end = End::of(r.as_ref().copied());
        obs.calls.push(Call {
            export: name.clone(),
            results: if r.is_ok() {
                results.iter().map(Value::of).collect()
            } else {
                Vec::new()
            },
            end,
            fuel: consumed(&mut store, Some(&instance)),
        });
    }
    for (name, ext) in &exports {
        match ext {
            Extern::Memory(m) => obs.memories.push(memory_seen(name, m.data(&store))),
            Extern::Global(g) => {
                let v = g.get(&mut store);
                obs.globals.push((name.clone(), Value::of(&v)));
            }
            Extern::Table(t) => obs.tables.push((name.clone(), t.size(&store))),
            _ => {}
        }
    }
    Ok(obs)
}

/// What [`Observation::memories`] keeps of an exported memory: its size and blake3.
fn memory_seen(name: &str, data: &[u8]) -> (String, usize, String) {
    (
        name.to_string(),
        data.len(),
        blake3::hash(data).to_hex().to_string(),
    )
}

/// The wasm-to-wasm NaN canonicalization pass the reference runs: after every operation
/// whose NaN result the spec leaves nondeterministic (scalar and vector `add`, `sub`,
/// `mul`, `div`, `sqrt`, `min`, `max`, `ceil`, `floor`, `trunc`, `nearest`, `promote`,
/// `demote`, relaxed `madd`/`nmadd`/`min`/`max`), the result is replaced by the canonical
/// NaN if it is a NaN (per lane for vectors), with three scratch locals added to each
/// function. Operations defined on bits (`neg`, `abs`, `copysign`, `reinterpret`, loads,
/// constants, `pmin`/`pmax`, which select an operand) are left alone, as Cranelift's own
/// pass leaves them.
///
/// Every section but the code section is copied byte for byte; each operator's bytes are
/// copied as they are, so the pass only needs to recognise operators, never to re-encode
/// them. Only wasmparser is used (wasm-encoder is not a dependency of the runtime).
pub fn canonicalize_nans(binary: &[u8]) -> Result<Vec<u8>, String> {
    rewrite_code(
        binary,
        &|_| SCRATCH_LOCALS,
        &mut |_, op, _, out, scratch| {
            if let Some(kind) = canon_kind(op) {
                emit_canonicalization(out, kind, Canon::F32x4.scratch_local(scratch));
            }
            false
        },
    )
}

/// The name under which [`trace_floats`] exports its trace.
pub const TRACE_EXPORT: &str = "__detwasm_float_trace";

/// `binary` with every NaN-producing float result (the operations of [`canonicalize_nans`])
/// folded into an exported `i64` global, [`TRACE_EXPORT`]: `trace = rotl(trace, 5) ^
/// bits` after each such operation (both halves of a vector). For the generator: a NaN a
/// module computes is usually consumed (compared, truncated, dropped) before it reaches a
/// result, a global or memory, so without the trace an engine that let hardware NaNs
/// through was exposed by 2 of the first 100 modules of seed 0 (3 of 300 of seed 7); the
/// trace makes every intermediate NaN's bits observable. Applied before the reference's
/// pass, whose canonicalization then comes between each operation and its trace, as the
/// engine's own does.
pub fn trace_floats(binary: &[u8]) -> Result<Vec<u8>, String> {
    let (with_global, trace) = append_i64_global(binary)?;
    let traced = rewrite_code(
        &with_global,
        &|_| SCRATCH_LOCALS,
        &mut |_, op, _, out, scratch| {
            if let Some(kind) = canon_kind(op) {
                emit_trace(out, kind, scratch, trace);
            }
            false
        },
    )?;
    export_global(&traced, TRACE_EXPORT, trace)
}

/// `local.tee s; global.get t; i64.const 5; i64.rotl; local.get s; <to i64>; i64.xor;
/// global.set t` (twice for a vector's two halves), leaving the value on the stack.
fn emit_trace(out: &mut Vec<u8>, kind: Canon, scratch: u32, trace: u32) {
    let local = kind.scratch_local(scratch);
    out.push(0x22); // local.tee
    write_u32(out, local);
    out.push(0x23); // global.get
    write_u32(out, trace);
    let halves: &[&[u8]] = match kind {
        Canon::F32 => &[&[0xbc, 0xad]], // i32.reinterpret_f32; i64.extend_i32_u
        Canon::F64 => &[&[0xbd]],       // i64.reinterpret_f64
        // i64x2.extract_lane 0 and 1
        Canon::F32x4 | Canon::F64x2 => &[&[0xfd, 0x1d, 0], &[0xfd, 0x1d, 1]],
    };
    for to_i64 in halves {
        out.extend_from_slice(&[0x42, 5, 0x89]); // i64.const 5; i64.rotl
        out.push(0x20); // local.get
        write_u32(out, local);
        out.extend_from_slice(to_i64);
        out.push(0x85); // i64.xor
    }
    out.push(0x24); // global.set
    write_u32(out, trace);
}

/// `binary` with one more global, a mutable `i64` starting at 0, appended to the global
/// section (which must exist), and its index.
fn append_i64_global(binary: &[u8]) -> Result<(Vec<u8>, u32), String> {
    use wasmparser::{Parser, Payload, TypeRef};
    let mut out = Vec::with_capacity(binary.len() + 8);
    let mut imported = 0u32;
    let mut index = None;
    for payload in Parser::new(0).parse_all(binary) {
        match payload.map_err(|e| e.to_string())? {
            Payload::Version { range, .. } => out.extend_from_slice(&binary[range]),
            Payload::ImportSection(r) => {
                for import in r.clone().into_imports() {
                    if let TypeRef::Global(_) = import.map_err(|e| e.to_string())?.ty {
                        imported += 1;
                    }
                }
                copy_section(&mut out, binary, 2, r.range());
            }
            Payload::GlobalSection(r) => {
                let range = r.range();
                let (_, count_len) = read_u32(&binary[range.clone()])?;
                let mut section = Vec::new();
                write_u32(&mut section, r.count() + 1);
                section.extend_from_slice(&binary[range.start + count_len..range.end]);
                // i64, mutable, initialised by `i64.const 0 end`
                section.extend_from_slice(&[0x7e, 0x01, 0x42, 0x00, 0x0b]);
                out.push(6);
                write_u32(&mut out, section.len() as u32);
                out.extend_from_slice(&section);
                index = Some(imported + r.count());
            }
            Payload::CodeSectionEntry(_) => {}
            other => {
                if let Some((id, range)) = other.as_section() {
                    copy_section(&mut out, binary, id, range);
                }
            }
        }
    }
    let index = index.ok_or("the module has no global section")?;
    Ok((out, index))
}

/// `binary` with one more export: global `index` as `name` (appended to the export section,
/// which must exist). For [`LOOP_FUEL_EXPORT`].
pub fn export_global(binary: &[u8], name: &str, index: u32) -> Result<Vec<u8>, String> {
    use wasmparser::{Parser, Payload};
    let mut out = Vec::with_capacity(binary.len() + name.len() + 8);
    let mut done = false;
    for payload in Parser::new(0).parse_all(binary) {
        match payload.map_err(|e| e.to_string())? {
            Payload::Version { range, .. } => out.extend_from_slice(&binary[range]),
            Payload::ExportSection(r) => {
                let range = r.range();
                let (_, count_len) = read_u32(&binary[range.clone()])?;
                let mut section = Vec::new();
                write_u32(&mut section, r.count() + 1);
                section.extend_from_slice(&binary[range.start + count_len..range.end]);
                write_u32(&mut section, name.len() as u32);
                section.extend_from_slice(name.as_bytes());
                section.push(0x03); // a global
                write_u32(&mut section, index);
                out.push(7);
                write_u32(&mut out, section.len() as u32);
                out.extend_from_slice(&section);
                done = true;
            }
            // Bodies are part of the code section's range, copied with it.
            Payload::CodeSectionEntry(_) => {}
            other => {
                if let Some((id, range)) = other.as_section() {
                    out.push(id);
                    write_u32(&mut out, range.len() as u32);
                    out.extend_from_slice(&binary[range]);
                }
            }
        }
    }
    if done {
        Ok(out)
    } else {
        Err("the module has no export section".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leb128_round_trips() {
        for v in [0, 1, 127, 128, 300, 16_384, u32::MAX] {
            let mut b = Vec::new();
            write_u32(&mut b, v);
            assert_eq!(read_u32(&b).unwrap(), (v, b.len()));
        }
    }

    #[test]
    fn the_pass_canonicalizes_arithmetic_and_leaves_bit_operations_alone() {
        let wat = r#"(module
            (func (export "add") (result f32) f32.const nan:0x200001 f32.const 1 f32.add)
            (func (export "neg") (result f32) f32.const nan f32.neg)
            (func (export "promote") (result f64) f32.const -nan:0x1 f64.promote_f32)
            (func (export "vmul") (result v128)
                v128.const f32x4 nan:0x200001 1 -nan 2
                v128.const f32x4 1 1 1 1
                f32x4.mul))"#;
        let binary = wat::parse_str(wat).unwrap();
        let rewritten = canonicalize_nans(&binary).unwrap();
        wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::all())
            .validate_all(&rewritten)
            .unwrap();
        // An engine that does not canonicalize, running the rewritten module: the pass's
        // NaNs are canonical, the bit operation's are not.
        let engine = Setup::Uncanonicalized.engine().unwrap();
        let module = Module::new(engine, &rewritten).unwrap();
        let Ok(obs) = execute(engine, &module, FUEL_PER_CALL, Setup::Serial) else {
            panic!("execute failed")
        };
        // Every export is called twice (with two argument sets); these take none, so both
        // rounds must give the same.
        let results: Vec<_> = obs.calls.iter().map(|c| c.results.clone()).collect();
        let (first, second) = results.split_at(results.len() / 2);
        assert_eq!(first, second);
        let results = first.to_vec();
        let f32x4 = |a: u32, b: u32, c: u32, d: u32| {
            Value::V128(
                u128::from(a) | u128::from(b) << 32 | u128::from(c) << 64 | u128::from(d) << 96,
            )
        };
        assert_eq!(
            results,
            vec![
                vec![Value::F32(CANONICAL_F32_NAN)],
                vec![Value::F32(0xffc0_0000)],
                vec![Value::F64(CANONICAL_F64_NAN)],
                vec![f32x4(
                    CANONICAL_F32_NAN,
                    0x3f80_0000,
                    CANONICAL_F32_NAN,
                    0x4000_0000
                )],
            ]
        );
    }
}
