//! The fuel pass (`detwasm_passes::fuel`) run on the runtime's engine: its counts against
//! wasmtime's own fuel, running out, traps, imports called through tables. These tests
//! were in `passes/src/fuel.rs`; they live here so that detwasm-passes depends on no
//! engine, not even for its tests (its pure rewriting checks stay there).

use detwasm_passes::fuel::{meter, EXPORT_FUEL, EXPORT_START};
use detwasm_runtime::meter::{self, Stop};

fn engine() -> wasmtime::Engine {
    wasmtime::Engine::new(&detwasm_runtime::engine::deterministic_config(false)).unwrap()
}

/// Instructions counted by the pass when export `f` of `wat` is called, and how the
/// call ended.
fn counted(wat: &str, fuel: u64) -> (u64, wasmtime::Result<()>) {
    let (n, _, r) = counted_and_overrun(wat, fuel);
    (n, r)
}

/// The same, and the operators run past the budget before a check noticed (the
/// count itself stops at the budget).
fn counted_and_overrun(wat: &str, fuel: u64) -> (u64, i64, wasmtime::Result<()>) {
    let engine = engine();
    let module = detwasm_runtime::engine::compile(&engine, wat.as_bytes()).unwrap();
    let (mut store, i) = meter::instantiate(&engine, &module, fuel);
    let i = i.unwrap();
    let before = meter::consumed(&mut store, Some(&i));
    let f = i.get_func(&mut store, "f").unwrap();
    let r = f.call(&mut store, &[], &mut []);
    // Run so far: handed - fuel; `fuel_for(0)` is handed - budget.
    let left = meter::fuel(&mut store, &i).unwrap();
    let overrun = store.data().fuel_for(0) - left;
    (meter::consumed(&mut store, Some(&i)) - before, overrun, r)
}

/// The same count by wasmtime's own fuel (`Config::consume_fuel`), on the module as
/// it is: an implementation nobody here wrote, whose cost table the pass follows.
fn wasmtime_counted(wat: &str) -> u64 {
    let mut config = detwasm_runtime::engine::deterministic_config(false);
    config.consume_fuel(true);
    let engine = wasmtime::Engine::new(&config).unwrap();
    let module = wasmtime::Module::new(&engine, wat).unwrap();
    let mut store = wasmtime::Store::new(&engine, ());
    store.set_fuel(u64::MAX / 2).unwrap();
    let i = wasmtime::Instance::new(&mut store, &module, &[]).unwrap();
    let before = store.get_fuel().unwrap();
    let f = i.get_func(&mut store, "f").unwrap();
    f.call(&mut store, &[], &mut []).unwrap();
    before - store.get_fuel().unwrap()
}

/// Straight code, branches, loops, a branch table, calls (direct, through a table,
/// of a function that returns early, tail calls), bulk memory: the count is
/// wasmtime's, operator for operator.
#[test]
fn counts_are_wasmtimes() {
    let cases = [
        r#"(module (func (export "f") (drop (i32.add (i32.const 1) (i32.const 2)))))"#,
        r#"(module (func (export "f") (local i32)
            (loop $l (br_if $l (i32.lt_u (local.tee 0 (i32.add (local.get 0)
                (i32.const 1))) (i32.const 1000))))))"#,
        r#"(module (func (export "f") (local i32)
            (block $a (block $b (block $c
                (br_table $a $b $c (i32.const 1)))
              (local.set 0 (i32.const 5)))
            (if (local.get 0) (then (nop)) (else (local.set 0 (i32.const 7)))))))"#,
        r#"(module (type $t (func (param i32) (result i32)))
            (table 2 funcref) (elem (i32.const 0) $g $h)
            (func $g (type $t) (if (local.get 0) (then (return (i32.const 3))))
                (i32.mul (local.get 0) (i32.const 2)))
            (func $h (type $t) (return_call $g (i32.add (local.get 0) (i32.const 1))))
            (func (export "f") (local i32)
                (loop $l
                  (local.set 0 (i32.add (local.get 0) (i32.const 1)))
                  (drop (call $g (local.get 0)))
                  (drop (call_indirect (type $t) (local.get 0) (i32.const 1)))
                  (br_if $l (i32.lt_u (local.get 0) (i32.const 100))))))"#,
        r#"(module (memory 1)
            (func (export "f") (memory.fill (i32.const 0) (i32.const 7) (i32.const 5000))
                (memory.copy (i32.const 100) (i32.const 0) (i32.const 300))))"#,
    ];
    for wat in cases {
        let (ours, r) = counted(wat, 1 << 40);
        r.unwrap();
        assert_eq!(ours, wasmtime_counted(wat), "{wat}");
        assert!(ours > 0);
    }
}

/// An endless loop, and a loop of large fills, run out of fuel at the same count on
/// every run; the count is the budget.
#[test]
fn out_of_fuel_is_exact() {
    for wat in [
        r#"(module (func (export "f") (loop $l (br $l))))"#,
        r#"(module (memory 1) (func (export "f")
            (loop $l (memory.fill (i32.const 0) (i32.const 0) (i32.const 65536)) (br $l))))"#,
    ] {
        let (n, r) = counted(wat, 30_000_001);
        assert_eq!(
            r.unwrap_err().downcast_ref::<Stop>(),
            Some(&Stop::OutOfFuel)
        );
        assert_eq!(n, 30_000_001, "{wat}");
    }
}

/// A trap reports the count stored last before it (at a call here), the same on
/// every host; `unreachable` stores the count itself.
#[test]
fn a_trap_reports_the_count_of_its_last_check() {
    let (n, r) = counted(
        r#"(module (memory 1) (func (export "f") (local i32)
            (loop $l (local.set 0 (i32.add (local.get 0) (i32.const 1)))
              (br_if $l (i32.lt_u (local.get 0) (i32.const 10))))
            (call $g))
          (func $g (drop (i32.load (i32.const 70000)))))"#,
        1 << 40,
    );
    assert!(r.is_err());
    // Entering costs one unit, an iteration eight and the call one; the count is
    // stored before the call, so the trap (in `$g`, which stores nothing) reports
    // all of `f`'s.
    assert_eq!(n, 1 + 10 * 8 + 1);
    let (n, r) = counted(
        r#"(module (func (export "f") (drop (i32.const 1)) unreachable))"#,
        1 << 40,
    );
    assert!(r.is_err());
    assert_eq!(n, 2);
}

/// Imports in tables are called through a wrapper that passes the fuel to the host;
/// the start function becomes an export; the module's exports keep their types.
#[test]
fn imports_as_values_start_and_exports() {
    let wat = r#"(module
        (import "m" "h" (func $h (param i32) (result i32)))
        (type $t (func (param i32) (result i32)))
        (table 1 funcref) (elem (i32.const 0) $h)
        (global $g (mut i32) (i32.const 0))
        (func $s (global.set $g (i32.const 1)))
        (start $s)
        (func (export "f") (param i32) (result i32)
          (call_indirect (type $t) (local.get 0) (i32.const 0))))"#;
    let metered = meter(&wat::parse_str(wat).unwrap()).unwrap();
    wasmparser::Validator::new().validate_all(&metered).unwrap();
    let engine = engine();
    let module = wasmtime::Module::new(&engine, &metered).unwrap();
    let names: Vec<String> = module.exports().map(|e| e.name().to_string()).collect();
    assert_eq!(names, ["f", EXPORT_FUEL, EXPORT_START]);
    let f = module.get_export("f").unwrap();
    assert_eq!(f.func().unwrap().params().len(), 1);
    // The host function charges 100 units through the global.
    let mut store = wasmtime::Store::new(&engine, meter::Meter::new(1_000, None));
    let mut linker = wasmtime::Linker::new(&engine);
    meter::define(&mut linker).unwrap();
    linker
        .func_wrap(
            "m",
            "h",
            |mut c: wasmtime::Caller<'_, meter::Meter>, x: i32| {
                let (g, fuel) = meter::caller_fuel(&mut c).unwrap();
                let left = c.data().remaining(fuel) - 100;
                let fuel = c.data().fuel_for(left);
                g.set(&mut c, wasmtime::Val::I64(fuel)).unwrap();
                x + 1
            },
        )
        .unwrap();
    let i = linker.instantiate(&mut store, &module).unwrap();
    meter::start(&mut store, &i)
        .unwrap()
        .call(&mut store, &[], &mut [])
        .unwrap();
    let f = i.get_typed_func::<i32, i32>(&mut store, "f").unwrap();
    assert_eq!(f.call(&mut store, 41).unwrap(), 42);
    // Entering, `global.set`, `i32.const` in the start function; entering,
    // `local.get`, `i32.const`, `call_indirect` in `f`; 100 by the host.
    assert_eq!(meter::consumed(&mut store, Some(&i)), 3 + 4 + 100);
}

/// A function without loops that calls a function without loops many times is
/// stopped by the checks after the calls (found by review: 100 calls of 100
/// operators ran on a budget of 1,000 and were reported as a success).
#[test]
fn many_calls_of_an_unchecked_function_run_out_of_fuel() {
    let g = "(global.set $x (i32.add (global.get $x) (i32.const 1)))".repeat(100);
    let calls = "(call $g)".repeat(100);
    let wat = format!(
        r#"(module (global $x (mut i32) (i32.const 0)) (func $g {g})
            (func (export "f") {calls}))"#
    );
    let (n, r) = counted(&wat, 1_000);
    assert_eq!(
        r.unwrap_err().downcast_ref::<Stop>(),
        Some(&Stop::OutOfFuel)
    );
    assert_eq!(n, 1_000);
}

/// Straight code of `n` operators (four per group) that touches a global `$x`.
fn straight(n: usize) -> String {
    "(global.set $x (i32.add (global.get $x) (i32.const 1)))".repeat(n / 4)
}

/// A recursion whose frames each run a long straight rest after the recursive call
/// is stopped on its way back up, within two function bodies of the budget (found
/// by review: 15,000 frames of 5 M operators ran 7.5e10 operators on a budget of
/// 2e5, the calls back up never checked). Before the rule the call returned: the
/// 300,000 operators of the way up ran unchecked.
#[test]
fn a_recursion_is_checked_on_its_way_back_up() {
    let rest = straight(1_000);
    // The recursive call followed by the end of an `if`, and by a conditional
    // branch to a loop header, not taken (the check is then right after it).
    let calls = [
        "(if (local.get 0) (then (call $r (i32.sub (local.get 0) (i32.const 1)))))",
        "(if (local.get 0) (then (loop $l
            (call $r (i32.sub (local.get 0) (i32.const 1)))
            (br_if $l (i32.const 0)))))",
    ];
    for call in calls {
        let wat = format!(
            r#"(module (global $x (mut i32) (i32.const 0))
                (func $r (param i32) {call} {rest})
                (func (export "f") (call $r (i32.const 300))))"#
        );
        // The way down costs about 2,000: the budget runs out on the way up.
        let (n, overrun, r) = counted_and_overrun(&wat, 20_000);
        assert_eq!(
            r.unwrap_err().downcast_ref::<Stop>(),
            Some(&Stop::OutOfFuel),
            "{call}"
        );
        assert_eq!(n, 20_000);
        // Two bodies of about 1,010 operators.
        assert!((0..2 * 1_010).contains(&overrun), "{call}: {overrun}");
        // With budget to spare, the count is wasmtime's.
        let (n, _, r) = counted_and_overrun(&wat, 1 << 40);
        r.unwrap();
        assert_eq!(n, wasmtime_counted(&wat), "{call}");
    }
}

/// Tail calls of functions not checked on entry (a loop-free straight body, direct
/// and through a table) at the end of each frame of a recursion, and a tail call
/// between two long straight runs: each is stopped within two function bodies of
/// the budget. Before the rules the first two ran their 600,000 operators unchecked
/// and the third ran three bodies past the budget.
#[test]
fn tail_calls_are_checked_before_a_callee_not_checked_on_entry() {
    let rest = straight(1_000);
    let head = r#"(global $x (mut i32) (i32.const 0))
        (type $t (func (param i32)))
        (table 1 funcref) (elem (i32.const 0) $tail)"#;
    let tail_calls = [
        "(return_call $tail (local.get 0))",
        "(return_call_indirect (type $t) (local.get 0) (i32.const 0))",
    ];
    for tail_call in tail_calls {
        let wat = format!(
            r#"(module {head}
                (func $tail (type $t) {rest})
                (func $r (param i32)
                  (if (local.get 0) (then (call $r (i32.sub (local.get 0) (i32.const 1)))))
                  {rest}
                  {tail_call})
                (func (export "f") (call $r (i32.const 300))))"#
        );
        let (n, overrun, r) = counted_and_overrun(&wat, 20_000);
        assert_eq!(
            r.unwrap_err().downcast_ref::<Stop>(),
            Some(&Stop::OutOfFuel),
            "{tail_call}"
        );
        assert_eq!(n, 20_000);
        assert!((0..2 * 1_010).contains(&overrun), "{tail_call}: {overrun}");
        let (n, _, r) = counted_and_overrun(&wat, 1 << 40);
        r.unwrap();
        assert_eq!(n, wasmtime_counted(&wat), "{tail_call}");
    }
    // Out of fuel right after `$a`'s entry check: `$a`'s rest, `$tail` and `f`'s
    // rest would be three bodies; the check before the tail call stops it after one.
    let wat = format!(
        r#"(module {head}
            (func $tail (type $t) {rest})
            (func $a (param i32) {rest} (return_call $tail (local.get 0)))
            (func (export "f") (call $a (i32.const 0)) {rest}))"#
    );
    let (n, overrun, r) = counted_and_overrun(&wat, 4);
    assert_eq!(
        r.unwrap_err().downcast_ref::<Stop>(),
        Some(&Stop::OutOfFuel)
    );
    assert_eq!(n, 4);
    assert!((0..2 * 1_010).contains(&overrun), "{overrun}");
}

/// A function that names itself with `ref.func` and is exported (which declares it
/// in the original) stays valid: its new index is declared (found by review).
#[test]
fn exported_functions_named_by_ref_func_stay_declared() {
    let (n, r) = counted(
        r#"(module (func $f (export "f") (drop (ref.func $f))))"#,
        1_000,
    );
    r.unwrap();
    assert_eq!(n, 2);
}
