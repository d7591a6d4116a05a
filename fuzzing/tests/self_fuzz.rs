//! Runtime self-fuzzing, the short fixed-seed run (see `detwasm_fuzzing` for
//! what is compared, and docs/self-fuzzing.md for long campaigns).
//!
//! The generator ([`smith_config`], [`generate`]) is shared with the cargo-fuzz target
//! `fuzz/fuzz_targets/runtime.rs`, which includes this file as a module: there `#[test]`
//! items and `cfg(test)` helpers are compiled out.

use arbitrary::Unstructured;
use detwasm_fuzzing::{export_global, trace_floats, LOOP_FUEL_EXPORT};

/// The loop budget wasm-smith's `ensure_termination` gives each call: a global counter,
/// decremented at each loop head and function entry, that traps when it reaches zero. It
/// is exported as [`LOOP_FUEL_EXPORT`], which the harness resets before every call. It is
/// meant to end long calls before engine fuel
/// ([`detwasm_fuzzing::FUEL_PER_CALL`]) does: a loop iteration costs at least
/// the counter's own 7 instructions, and more often 20 to 40.
pub const TERMINATION_FUEL: u32 = 5_000;

/// What wasm-smith generates: the features the deterministic engine enables, none it
/// refuses, and sizes small enough that a module runs in milliseconds.
///
/// - floats, SIMD and relaxed SIMD on, and no NaN canonicalization by the generator: NaN
///   bits are what the engine must make deterministic;
/// - threads, memory64, exceptions, GC, custom page sizes, wide arithmetic off (the engine
///   refuses them); reference types off too: wasmtime is built without its `gc` feature,
///   so the engine refuses every module that uses `externref` ("gc types are
///   disallowed"), and wasm-smith cannot generate `funcref` operations without also
///   generating `externref` (with them on, four modules in five were refused);
/// - no imports (nothing for the harness to provide), every item exported, a start function
///   allowed, at least two types and four functions (with fewer, most modules have nothing
///   to call);
/// - up to 4 memories (multi-memory) of at most 1 MiB declared each, up to 4 tables of at
///   most 1000 elements; `memory.grow` is then bounded by the harness's memory limit.
pub fn smith_config(disallow_traps: bool) -> wasm_smith::Config {
    wasm_smith::Config {
        disallow_traps,
        allow_floats: true,
        canonicalize_nans: false,
        simd_enabled: true,
        relaxed_simd_enabled: true,
        threads_enabled: false,
        shared_everything_threads_enabled: false,
        memory64_enabled: false,
        exceptions_enabled: false,
        gc_enabled: false,
        custom_descriptors_enabled: false,
        custom_page_sizes_enabled: false,
        wide_arithmetic_enabled: false,
        reference_types_enabled: false,
        bulk_memory_enabled: true,
        multi_value_enabled: true,
        tail_call_enabled: true,
        extended_const_enabled: true,
        saturating_float_to_int_enabled: true,
        sign_extension_ops_enabled: true,
        min_imports: 0,
        max_imports: 0,
        export_everything: true,
        allow_start_export: true,
        min_types: 2,
        min_funcs: 4,
        max_funcs: 30,
        max_instructions: 200,
        max_memories: 4,
        max_memory32_bytes: 1 << 20,
        max_tables: 4,
        max_table_elements: 1000,
        max_globals: 30,
        max_data_segments: 10,
        max_element_segments: 10,
        generate_custom_sections: false,
        ..wasm_smith::Config::default()
    }
}

/// The module wasm-smith makes of `data`, with termination ensured, or `None` when the
/// bytes do not make one. The first byte's low bit sets `disallow_traps`: with traps
/// allowed most calls trap within a few instructions (an `unreachable`, a division by
/// zero, an access out of bounds), so half the modules leave them out and run longer;
/// wasm-smith then generates no relaxed SIMD, so the other half keeps it covered. Every
/// module is then traced ([`detwasm_fuzzing::trace_floats`]), so the NaN bits of
/// every float operation are observed, not only those that reach a result.
pub fn generate(data: &[u8]) -> Option<Vec<u8>> {
    trace_floats(&generate_untraced(data)?).ok()
}

/// [`generate`] without the float trace: the module's NaNs are observed only where the
/// module itself lets them out (a store, a result, a global, ...), which is what the
/// engine's NaN pass decides on, so these are the modules that show it canonicalizes at
/// every such place (compared with [`Setup::Eager`]). The trace would observe every
/// result, and so have the pass canonicalize every one.
pub fn generate_untraced(data: &[u8]) -> Option<Vec<u8>> {
    let (first, rest) = data.split_first()?;
    let mut u = Unstructured::new(rest);
    let mut module = wasm_smith::Module::new(smith_config(first & 1 == 1), &mut u).ok()?;
    let global = module.ensure_termination(TERMINATION_FUEL).ok()?;
    export_global(&module.to_bytes(), LOOP_FUEL_EXPORT, global).ok()
}

#[cfg(test)]
use detwasm_fuzzing::{check_module, compare, Agreement, Setup};

/// Totals over a run of [`check_module`].
#[cfg(test)]
#[derive(Debug, Default)]
struct Tally {
    modules: usize,
    invalid: usize,
    /// Refused for using `externref` (see [`Tally::add`]).
    externref: usize,
    /// Refused by the shape scan (`passes::shape`): wasm-smith places data segments at
    /// offsets up to its memories' sizes, and a few modules exceed the memory-image limit.
    too_complex: usize,
    instantiation_traps: usize,
    calls: usize,
    returned: usize,
    trapped: usize,
    out_of_fuel: usize,
    nans: usize,
    noncanonical_nans: usize,
    reference_calls: usize,
    fuel: u64,
}

#[cfg(test)]
impl Tally {
    fn add(&mut self, a: &Agreement) {
        self.modules += 1;
        self.invalid += usize::from(a.invalid.is_some());
        // wasmtime is built without its `gc` feature, so the engine refuses modules that
        // use `externref` ("gc types are disallowed"); wasm-smith has no switch to leave
        // `externref` out while keeping reference types (tables of `funcref`,
        // `table.get`/`set`, `ref.func`), which the engine supports. Such modules are
        // counted, and must be refused the same way by every setup.
        self.externref += usize::from(
            a.invalid
                .as_ref()
                .is_some_and(|m| m.contains("gc types are disallowed")),
        );
        self.too_complex += usize::from(
            a.invalid
                .as_ref()
                .is_some_and(|m| m.starts_with("module refused:")),
        );
        self.instantiation_traps += usize::from(a.instantiation_trapped);
        self.calls += a.calls;
        self.returned += a.returned;
        self.trapped += a.trapped;
        self.out_of_fuel += a.out_of_fuel;
        self.nans += a.nans;
        self.noncanonical_nans += a.noncanonical_nans;
        self.reference_calls += a.reference_calls;
        self.fuel += a.fuel;
    }
}

/// The number in environment variable `name`, or `default`.
#[cfg(test)]
fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| v.parse::<u64>().unwrap_or_else(|_| panic!("{name}: {v:?}")))
        .unwrap_or(default)
}

/// `count` generator inputs, each from 256 bytes to 8 KiB of a ChaCha stream keyed by
/// `seed`.
#[cfg(test)]
fn seeded_inputs(seed: u64, count: u64) -> impl Iterator<Item = (u64, Vec<u8>)> {
    use rand_chacha::rand_core::{RngCore, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..count).map(move |i| {
        let len = 256 + (rng.next_u32() as usize % (8 << 10));
        let mut data = vec![0u8; len];
        rng.fill_bytes(&mut data);
        (i, data)
    })
}

/// Fails the test with the disagreement, the module written to the temporary folder.
#[cfg(test)]
fn disagreed(i: u64, seed: u64, d: &detwasm_fuzzing::Disagreement, binary: &[u8]) -> ! {
    let path = std::env::temp_dir().join(format!("detwasm-selffuzz-{}.wasm", d.module));
    std::fs::write(&path, binary).unwrap();
    panic!(
        "module {i} of seed {seed}: {d}\n(the module is at {})",
        path.display()
    );
}

/// Modules from a fixed seed: `DETWASM_SELFFUZZ_MODULES` of them (default 300), each
/// from 256 bytes to 8 KiB of a ChaCha stream keyed by `DETWASM_SELFFUZZ_SEED` (default
/// 0), so a failure is reproduced by the same two numbers. A disagreement fails with the
/// module written to the temporary folder.
#[test]
fn fixed_seed_modules_agree() {
    let count = env_u64("DETWASM_SELFFUZZ_MODULES", 300);
    let seed = env_u64("DETWASM_SELFFUZZ_SEED", 0);
    let started = std::time::Instant::now();
    let mut tally = Tally::default();
    let mut unmade = 0;
    for (i, data) in seeded_inputs(seed, count) {
        let Some(binary) = generate(&data) else {
            unmade += 1;
            continue;
        };
        match check_module(&binary) {
            Ok(a) => tally.add(&a),
            Err(d) => disagreed(i, seed, &d, &binary),
        }
    }
    eprintln!(
        "self-fuzz: seed {seed}: {count} inputs, {unmade} made no module, {:.1} s: {tally:?}",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        tally.invalid,
        tally.externref + tally.too_complex,
        "the generator and the engine disagree on features"
    );
    assert!(tally.too_complex * 20 < tally.modules, "{tally:?}");
    assert!(tally.externref * 2 < tally.modules, "{tally:?}");
    assert!(
        tally.modules as u64 >= count * 9 / 10,
        "too few modules made: {tally:?}"
    );
    // The run exercised what it claims to: calls that return, trap and run out of fuel,
    // and NaNs compared with the reference.
    if count >= 100 {
        assert!(tally.returned > 0 && tally.trapped > 0, "{tally:?}");
        assert!(tally.nans > 0 && tally.reference_calls > 0, "{tally:?}");
    }
}

/// The engine's NaN pass against the engine as it was before it (Cranelift canonicalizing
/// after every operation, [`Setup::Eager`]) on untraced modules
/// ([`generate_untraced`]): results, traps, memories and globals bit for bit.
/// `DETWASM_SELFFUZZ_EAGER_MODULES` of them (default 300) from the ChaCha stream of
/// `DETWASM_SELFFUZZ_SEED` (default 0, then 1000 added so these differ from
/// [`fixed_seed_modules_agree`]'s). The counts printed say how lazy the pass was: how many
/// of the modules' NaN-producing operations it canonicalized.
#[test]
fn untraced_modules_agree_with_eager_canonicalization() {
    let count = env_u64("DETWASM_SELFFUZZ_EAGER_MODULES", 300);
    let seed = env_u64("DETWASM_SELFFUZZ_SEED", 0) + 1000;
    let started = std::time::Instant::now();
    let (mut modules, mut calls, mut compared, mut nans, mut noncanonical) = (0, 0, 0, 0, 0);
    let (mut producers, mut canonicalized) = (0, 0);
    for (i, data) in seeded_inputs(seed, count) {
        let Some(binary) = generate_untraced(&data) else {
            continue;
        };
        match compare(&binary, Setup::Serial, Setup::Eager) {
            Ok(a) => {
                modules += 1;
                calls += a.calls;
                compared += a.eager_calls;
                nans += a.nans;
                noncanonical += a.noncanonical_nans;
                if a.invalid.is_none() {
                    let (p, c) = detwasm_passes::nan::producers(&binary).unwrap();
                    producers += p;
                    canonicalized += c;
                }
            }
            Err(d) => disagreed(i, seed, &d, &binary),
        }
    }
    eprintln!(
        "lazy vs eager: seed {seed}: {modules} modules, {calls} calls ({compared} compared), \
         {nans} NaNs observed ({noncanonical} non-canonical), {canonicalized} of {producers} \
         NaN-producing operations canonicalized, {:.1} s",
        started.elapsed().as_secs_f64()
    );
    if count >= 100 {
        assert!(compared > 0 && nans > 0, "nothing compared");
        assert!(
            canonicalized < producers,
            "the pass canonicalized everything"
        );
    }
}

/// NaN-producing operations whose NaN bits differ by hardware unless canonicalized: an
/// addition that carries a NaN operand's payload (the same on x86 and ARM), and 0/0 (the
/// "default NaN": negative on x86, positive and canonical on ARM).
#[cfg(test)]
const NAN_MODULE: &str = r#"(module
    (global (export "g") (mut f32) (f32.const 0))
    (func (export "payload") (result f32)
        f32.const nan:0x200001 f32.const 1 f32.add)
    (func (export "div0") (result f32)
        f32.const 0 f32.const 0 f32.div
        global.set 0
        global.get 0))"#;

#[test]
fn the_engine_canonicalizes_and_agrees_with_the_reference() {
    let binary = wat::parse_str(NAN_MODULE).unwrap();
    let a = check_module(&binary).unwrap();
    assert_eq!((a.calls, a.returned, a.reference_calls), (4, 4, 4));
    assert_eq!((a.nans, a.noncanonical_nans), (5, 0), "{a:?}");
    // The interpreter's own float operations carry the payload through; the passes are
    // what make its NaN canonical, so it disagrees with an engine without them.
    let d = compare(&binary, Setup::Uncanonicalized, Setup::Interpreter).unwrap_err();
    assert!(d.what.contains("export `payload`"), "{d}");
}

/// The check can fail: an engine without NaN canonicalization disagrees with the baseline,
/// and the report names the export and both bit patterns.
#[test]
fn an_engine_without_nan_canonicalization_is_reported() {
    let binary = wat::parse_str(NAN_MODULE).unwrap();
    let d = compare(&binary, Setup::Serial, Setup::Uncanonicalized).unwrap_err();
    let msg = d.to_string();
    assert_eq!(
        (d.baseline, d.other),
        (Setup::Serial, Setup::Uncanonicalized)
    );
    assert!(
        msg.contains("call #0 of export `payload`: results [f32 0x7fc00000 (canonical NaN)] vs [f32 0x7fe00001 (non-canonical NaN)]"),
        "{msg}"
    );
    // ... and the reference (the module rewritten to canonicalize) catches such an engine
    // too: it is a check of the engine, not a copy of it.
    let d = compare(&binary, Setup::Uncanonicalized, Setup::Reference).unwrap_err();
    assert!(d.what.contains("export `payload`"), "{d}");
}

/// On x86 0/0 is the negative default NaN: the second export and the global then differ.
#[cfg(target_arch = "x86_64")]
#[test]
fn x86_default_nan_is_reported_in_results_and_globals() {
    let binary = wat::parse_str(NAN_MODULE.replace(
        "f32.const nan:0x200001 f32.const 1",
        "f32.const 1 f32.const 1",
    ))
    .unwrap();
    let d = compare(&binary, Setup::Serial, Setup::Uncanonicalized).unwrap_err();
    assert!(
        d.what.contains("call #1 of export `div0`: results [f32 0x7fc00000 (canonical NaN)] vs [f32 0xffc00000 (non-canonical NaN)]"),
        "{d}"
    );
}

/// Operations wasm defines on bits carry any NaN through, in every setup: a non-canonical
/// NaN observed is no disagreement (why "every NaN is canonical" is not the rule checked).
#[test]
fn bit_operations_carry_nan_payloads_and_agree() {
    let wat = r#"(module
        (func (export "reinterpret") (result f32) i32.const 0x7fa00001 f32.reinterpret_i32)
        (func (export "neg") (result f64) f64.const 0 f64.const 0 f64.div f64.neg)
        (func (export "arg") (param f32) (param f32) (result f32) local.get 1))"#;
    let binary = wat::parse_str(wat).unwrap();
    let a = check_module(&binary).unwrap();
    // Each of the three twice ([`detwasm_fuzzing::ROUNDS`]), except `arg`, whose
    // second round passes +inf.
    assert_eq!((a.nans, a.noncanonical_nans), (5, 5), "{a:?}");
}

/// Traps, fuel and memories are compared too: a disagreement on any of them would be
/// reported, and equal ones are not.
#[test]
fn traps_fuel_and_memory_agree_across_setups() {
    let wat = r#"(module
        (memory (export "m") 1)
        (func (export "store") (memory.fill (i32.const 0) (i32.const 7) (i32.const 100)))
        (func (export "oob") (result i32) (i32.load (i32.const 70000)))
        (func (export "spin") (loop (br 0)))
        (func (export "grow") (result i32) (memory.grow (i32.const 1000))))"#;
    let binary = wat::parse_str(wat).unwrap();
    let a = check_module(&binary).unwrap();
    assert_eq!(
        (a.calls, a.returned, a.trapped, a.out_of_fuel),
        (8, 4, 2, 2),
        "{a:?}"
    );
}

/// The generated modules, not only hand-written ones, catch an engine that lets hardware
/// NaNs through: of the first 100 modules of seed 0, many disagree between the baseline
/// and [`Setup::Uncanonicalized`] (the count is printed: 23 on x86-64 when this was
/// written, almost all through the float trace; 2 before the trace existed).
#[test]
fn generated_modules_catch_an_engine_without_nan_canonicalization() {
    let (mut checked, mut caught) = (0, Vec::new());
    for (_, data) in seeded_inputs(0, 100) {
        let Some(binary) = generate(&data) else {
            continue;
        };
        checked += 1;
        if let Err(d) = compare(&binary, Setup::Serial, Setup::Uncanonicalized) {
            caught.push(d.what);
        }
    }
    eprintln!(
        "{} of {checked} modules caught it: {caught:#?}",
        caught.len()
    );
    assert!(!caught.is_empty());
}

/// One module's calls as a fuel meter counts them: `(export, returned, fuel)` for
/// instantiation (as `start`) and each exported function called once, loop fuel reset
/// before each call. `None` when the module does not instantiate.
#[cfg(test)]
fn counted_calls(binary: &[u8], wasmtime_fuel: bool) -> Option<Vec<(String, bool, u64)>> {
    use detwasm_fuzzing as selffuzz;
    use detwasm_runtime::{engine, meter};
    use wasmtime::{Extern, Val};
    const BUDGET: u64 = 1 << 40;
    // wasmtime's side canonicalizes NaNs eagerly (Cranelift), as the engine's NaN pass
    // does where bits are observed: otherwise a NaN's bits, and so the path a call
    // takes, could differ between the two sides.
    let mut config = engine::deterministic_config(false);
    config
        .consume_fuel(wasmtime_fuel)
        .cranelift_nan_canonicalization(wasmtime_fuel);
    let eng = wasmtime::Engine::new(&config).unwrap();
    let module = if wasmtime_fuel {
        // wasmtime's fuel, on the module as it is (no pass).
        wasmtime::Module::new(&eng, binary).ok()?
    } else {
        engine::compile(&eng, binary).ok()?
    };
    let mut store = wasmtime::Store::new(&eng, meter::Meter::new(BUDGET, None));
    let mut out = Vec::new();
    let instance = if wasmtime_fuel {
        store.set_fuel(BUDGET).unwrap();
        let i = wasmtime::Instance::new(&mut store, &module, &[]);
        let used = BUDGET - store.get_fuel().unwrap();
        out.push(("start".to_string(), i.is_ok(), used));
        i.ok()?
    } else {
        let mut linker = wasmtime::Linker::new(&eng);
        meter::define(&mut linker).unwrap();
        let i = linker.instantiate(&mut store, &module).ok()?;
        let r = match meter::start(&mut store, &i) {
            Some(s) => s.call(&mut store, &[], &mut []),
            None => Ok(()),
        };
        out.push((
            "start".to_string(),
            r.is_ok(),
            meter::consumed(&mut store, Some(&i)),
        ));
        if r.is_err() {
            return Some(out);
        }
        i
    };
    if out[0].1 {
        let exports: Vec<(String, Extern)> = instance
            .exports(&mut store)
            .filter(|e| !meter::is_pass_export(e.name()))
            .map(|e| (e.name().to_string(), e.into_extern()))
            .collect();
        let loop_fuel = exports.iter().find_map(|(n, e)| match e {
            Extern::Global(g) if n == selffuzz::LOOP_FUEL_EXPORT => Some(*g),
            _ => None,
        });
        let initial = loop_fuel.map(|g| g.get(&mut store));
        for (name, e) in &exports {
            let Extern::Func(f) = e else { continue };
            let ty = f.ty(&store);
            let Some(params) = ty
                .params()
                .enumerate()
                .map(|(i, t)| selffuzz::argument(&t, i))
                .collect::<Option<Vec<Val>>>()
            else {
                continue;
            };
            if let (Some(g), Some(v)) = (loop_fuel, initial) {
                g.set(&mut store, v).unwrap();
            }
            let before = if wasmtime_fuel {
                BUDGET - store.get_fuel().unwrap()
            } else {
                meter::consumed(&mut store, Some(&instance))
            };
            let mut results = vec![Val::I32(0); ty.results().len()];
            let r = f.call(&mut store, &params, &mut results);
            let after = if wasmtime_fuel {
                BUDGET - store.get_fuel().unwrap()
            } else {
                meter::consumed(&mut store, Some(&instance))
            };
            out.push((name.clone(), r.is_ok(), after - before));
        }
    }
    Some(out)
}

/// The instruction count detwasm's fuel pass gives a call that returns is the count of
/// wasmtime's own fuel (an implementation nobody here wrote), on generated modules
/// (untraced, so the modules are as wasm-smith made them): `DETWASM_FUELCOUNT_MODULES`
/// of them (default 150) from seed `DETWASM_SELFFUZZ_SEED`. Calls that trap are not
/// compared (the pass reports the count stored last before a trap, wasmtime its own).
#[test]
fn instruction_counts_equal_wasmtimes_fuel_on_generated_modules() {
    let count = env_u64("DETWASM_FUELCOUNT_MODULES", 150);
    let seed = env_u64("DETWASM_SELFFUZZ_SEED", 0);
    let (mut modules, mut compared) = (0, 0);
    for (i, data) in seeded_inputs(seed, count) {
        let Some(binary) = generate_untraced(&data) else {
            continue;
        };
        let (Some(ours), Some(theirs)) =
            (counted_calls(&binary, false), counted_calls(&binary, true))
        else {
            continue;
        };
        modules += 1;
        assert_eq!(ours.len(), theirs.len(), "module {i} of seed {seed}: calls");
        // Instantiation is not compared: wasmtime charges fuel of its own there (one
        // unit with no start function at all).
        for (o, t) in ours.iter().zip(&theirs).skip(1) {
            assert_eq!(o.0, t.0);
            if o.1 && t.1 {
                compared += 1;
                if o.2 != t.2 {
                    let path = std::env::temp_dir().join(format!("detwasm-fuelcount-{i}.wasm"));
                    std::fs::write(&path, &binary).unwrap();
                    panic!(
                        "module {i} of seed {seed}, `{}`: the pass counts {}, wasmtime {} \
                         (the module is at {})",
                        o.0,
                        o.2,
                        t.2,
                        path.display()
                    );
                }
            }
        }
    }
    eprintln!("{modules} modules, {compared} calls that returned: the same counts");
    assert!(
        modules >= count as usize / 4 && compared >= modules,
        "{modules} {compared}"
    );
}

/// Checkpoints change nothing a module computes: generated modules run with the whole
/// stack unwound and rewound at every refuel (every [`detwasm_fuzzing::CHECKPOINT_SLICE`]
/// instructions) against the same refuels without ([`Setup::Checkpointed`] vs
/// [`Setup::Sliced`]): results, traps, fuel, memories and globals bit for bit (tail
/// calls included). `DETWASM_SELFFUZZ_CHECKPOINT_MODULES` of them (default 200) from the ChaCha stream of
/// `DETWASM_SELFFUZZ_SEED` (default 0, then 2000 added).
#[test]
fn generated_modules_agree_with_checkpoints_at_every_refuel() {
    let count = env_u64("DETWASM_SELFFUZZ_CHECKPOINT_MODULES", 200);
    let seed = env_u64("DETWASM_SELFFUZZ_SEED", 0) + 2000;
    let started = std::time::Instant::now();
    let (mut modules, mut calls, mut refused, mut fuel) = (0, 0, 0, 0);
    for (i, data) in seeded_inputs(seed, count) {
        let Some(binary) = generate(&data) else {
            continue;
        };
        match compare(&binary, Setup::Sliced, Setup::Checkpointed) {
            Ok(a) => {
                modules += 1;
                calls += a.calls;
                refused += a.not_checkpointable;
                fuel += a.fuel;
            }
            Err(d) => disagreed(i, seed, &d, &binary),
        }
    }
    eprintln!(
        "checkpoints: seed {seed}: {modules} modules ({refused} not checkpointable), {calls} \
         calls, {fuel} instructions, {:.1} s",
        started.elapsed().as_secs_f64()
    );
    if count >= 100 {
        assert!(calls > 0 && fuel > 100 * detwasm_fuzzing::CHECKPOINT_SLICE);
        assert!(
            refused * 2 < modules,
            "most modules refused: {refused} of {modules}"
        );
    }
}

/// The interpreter meets the same metered stack limit at the same call and count (the
/// passes meter it, not the engine: wasmi's own limits lie beyond), and the same NaN bits
/// in vector lanes, through calls and out of memory.
#[test]
fn recursion_simd_and_nans_agree_under_another_engine() {
    let wat = r#"(module
        (memory (export "m") 1)
        (func $fib (param i32) (result i32)
            local.get 0 i32.const 2 i32.lt_u
            if (result i32) local.get 0
            else local.get 0 i32.const 1 i32.sub call $fib
                 local.get 0 i32.const 2 i32.sub call $fib i32.add end)
        (func (export "fib15") (result i32) i32.const 15 call $fib)
        (func (export "lanes") (param v128) (result v128)
            local.get 0 local.get 0 f32x4.div
            v128.const f32x4 0 -0 1 -1 f32x4.sqrt f32x4.add)
        (func (export "stored") (result f64)
            i32.const 8 f64.const 0 f64.const 0 f64.div f64.store
            i32.const 8 f64.load f64.const 1 f64.mul)
        (func $down (export "down") (param i64) (result i64)
            local.get 0 i64.const 1 i64.add call $down))"#;
    let binary = wat::parse_str(wat).unwrap();
    let a = compare(&binary, Setup::Serial, Setup::Interpreter).unwrap();
    // Each export twice ([`detwasm_fuzzing::ROUNDS`]). `down` ends on the metered stack
    // limit (before the fuel: none runs out); the counter then stays at the limit (a trap
    // skips the epilogues), so in the second round `fib15` and `down` trap on entry, in
    // both engines alike.
    assert_eq!(
        (a.calls, a.returned, a.trapped, a.out_of_fuel, a.nans),
        (8, 5, 3, 0, 2),
        "{a:?}"
    );
    assert!(a.fuel > 20_000, "{a:?}");
}

/// What a job computes is the passes', not the engine's: generated modules rewritten by
/// every pass of a job run under wasmi, an interpreter nobody here wrote, exactly as under
/// wasmtime ([`Setup::Interpreter`] vs [`Setup::Serial`]): results (NaN bits included),
/// traps, instruction counts, stack exhaustion, memories and globals.
/// `DETWASM_SELFFUZZ_ENGINE_MODULES` of them (default 200) from the ChaCha stream of
/// `DETWASM_SELFFUZZ_SEED` (default 0, then 3000 added).
#[test]
fn generated_modules_agree_under_another_engine() {
    let count = env_u64("DETWASM_SELFFUZZ_ENGINE_MODULES", 200);
    let seed = env_u64("DETWASM_SELFFUZZ_SEED", 0) + 3000;
    let started = std::time::Instant::now();
    let (mut modules, mut calls, mut trapped, mut fuel, mut nans) = (0, 0, 0, 0, 0);
    for (i, data) in seeded_inputs(seed, count) {
        let Some(binary) = generate(&data) else {
            continue;
        };
        match compare(&binary, Setup::Serial, Setup::Interpreter) {
            Ok(a) => {
                modules += 1;
                calls += a.calls;
                trapped += a.trapped;
                fuel += a.fuel;
                nans += a.nans;
            }
            Err(d) => disagreed(i, seed, &d, &binary),
        }
    }
    eprintln!(
        "wasmi: seed {seed}: {modules} modules, {calls} calls ({trapped} trapped), {nans} \
         NaNs, {fuel} instructions, {:.1} s",
        started.elapsed().as_secs_f64()
    );
    if count >= 100 {
        assert!(calls > 0 && trapped > 0 && nans > 0 && fuel > 1_000_000);
    }
}
