//! The stack pass (`detwasm_passes::stack`) run on the runtime's engine: calls through
//! tables and start functions charged, tail calls, no fuel for the metering, and the
//! native stack bounded by the metered limit. These tests were in `passes/src/stack.rs`;
//! they live here so that detwasm-passes depends on no engine, not even for its tests
//! (its pure rewriting checks stay there).

fn engine() -> wasmtime::Engine {
    wasmtime::Engine::new(&detwasm_runtime::engine::deterministic_config(false)).unwrap()
}

/// How calling export `f` (after instantiating, which may run a start function) ends,
/// on a guest-sized stack with `fuel`.
fn call(wat: &'static str, fuel: u64) -> Result<(), wasmtime::Error> {
    let engine = engine();
    let module = detwasm_runtime::engine::compile(&engine, wat.as_bytes()).unwrap();
    std::thread::Builder::new()
        .stack_size(detwasm_runtime::run::GUEST_THREAD_STACK)
        .spawn(move || {
            let (mut store, i) = detwasm_runtime::meter::instantiate(&engine, &module, fuel);
            let i = i?;
            let f = i.get_typed_func::<(), ()>(&mut store, "f")?;
            f.call(&mut store, ())
        })
        .unwrap()
        .join()
        .unwrap()
}

#[test]
fn calls_through_tables_and_start_functions_are_charged() {
    let indirect = r#"(module (type $t (func)) (table 1 funcref) (elem (i32.const 0) $g)
        (func $g (call_indirect (type $t) (i32.const 0)))
        (func (export "f") (call $g)))"#;
    assert!(detwasm_runtime::engine::is_stack_exhaustion(
        &call(indirect, u64::MAX).unwrap_err()
    ));
    let start = r#"(module (func $g (call $g)) (start $g) (func (export "f")))"#;
    assert!(detwasm_runtime::engine::is_stack_exhaustion(
        &call(start, u64::MAX).unwrap_err()
    ));
    // The guest's own `unreachable` is not a stack exhaustion.
    let own = r#"(module (func (export "f") unreachable))"#;
    assert!(!detwasm_runtime::engine::is_stack_exhaustion(
        &call(own, u64::MAX).unwrap_err()
    ));
}

/// A trap unwinds frames without their epilogues: the depth counter keeps their units,
/// so an instance entered again after a metered exhaustion exhausts at once. A job never
/// enters an instance again after a trap; a host that does (the spec test suite,
/// `tests/spec_suite.rs`) compiles with `compile_reentrant` and sets the exported
/// counter back to 0 when no frame is left, and the instance works as before.
#[test]
fn after_a_trap_the_exported_depth_counter_can_be_reset() {
    use detwasm_runtime::engine::{compile, compile_reentrant, EXPORT_STACK_DEPTH};
    let wat = r#"(module
        (func $deep (param i32) (result i32)
            (if (result i32) (local.get 0)
                (then (i32.add (i32.const 1)
                    (call $deep (i32.sub (local.get 0) (i32.const 1)))))
                (else (i32.const 0))))
        (func (export "runaway") (drop (call $deep (i32.const -1))))
        (func (export "f") (result i32) (call $deep (i32.const 100))))"#;
    let engine = engine();
    let plain = compile(&engine, wat.as_bytes()).unwrap();
    let reentrant = compile_reentrant(&engine, wat.as_bytes()).unwrap();
    std::thread::Builder::new()
        .stack_size(detwasm_runtime::run::GUEST_THREAD_STACK)
        .spawn(move || {
            let run = |module: &wasmtime::Module, reset: bool| {
                let (mut store, i) = detwasm_runtime::meter::instantiate(&engine, module, u64::MAX);
                let i = i.unwrap();
                let runaway = i.get_typed_func::<(), ()>(&mut store, "runaway").unwrap();
                let f = i.get_typed_func::<(), i32>(&mut store, "f").unwrap();
                assert_eq!(f.call(&mut store, ()).unwrap(), 100);
                let e = runaway.call(&mut store, ()).unwrap_err();
                assert!(detwasm_runtime::engine::is_stack_exhaustion(&e));
                if reset {
                    let depth = i.get_global(&mut store, EXPORT_STACK_DEPTH).unwrap();
                    assert!(
                        depth.get(&mut store).unwrap_i32() > 0,
                        "the trap left frames' units"
                    );
                    depth.set(&mut store, wasmtime::Val::I32(0)).unwrap();
                }
                f.call(&mut store, ())
            };
            let e = run(&plain, false).unwrap_err();
            assert!(detwasm_runtime::engine::is_stack_exhaustion(&e), "{e:?}");
            assert_eq!(run(&reentrant, true).unwrap(), 100);
            // Nothing but the export differs: `compile`'s module has none.
            let (mut store, i) = detwasm_runtime::meter::instantiate(&engine, &plain, 1);
            assert!(i
                .unwrap()
                .get_global(&mut store, EXPORT_STACK_DEPTH)
                .is_none());
        })
        .unwrap()
        .join()
        .unwrap();
}

#[test]
fn tail_calls_release_the_frame_they_replace() {
    // Endless tail recursion, direct and through a table: never exhausts the stack,
    // runs until the fuel is gone.
    for wat in [
        r#"(module (func $g (return_call $g)) (func (export "f") (call $g)))"#,
        r#"(module (type $t (func)) (table 1 funcref) (elem (i32.const 0) $g)
            (func $g (return_call_indirect (type $t) (i32.const 0)))
            (func (export "f") (call $g)))"#,
    ] {
        let e = call(wat, 10_000_000).unwrap_err();
        assert_eq!(
            e.downcast_ref::<detwasm_runtime::meter::Stop>(),
            Some(&detwasm_runtime::meter::Stop::OutOfFuel),
            "{wat}: {e:?}"
        );
    }
}

/// Stack metering costs no fuel: instruction counts are the module's own operators
/// (the fuel pass runs first, `detwasm_passes::fuel`).
#[test]
fn metering_costs_no_instructions() {
    let fuel = |wat: &str, metered: bool| {
        let engine = engine();
        let binary = wat::parse_str(wat).unwrap();
        let fueled = detwasm_passes::fuel::meter(&binary).unwrap();
        let module = if metered {
            detwasm_runtime::engine::compile(&engine, &binary).unwrap()
        } else {
            wasmtime::Module::new(&engine, &fueled).unwrap()
        };
        let (mut store, i) = detwasm_runtime::meter::instantiate(&engine, &module, 1_000);
        let i = i.unwrap();
        let f = i.get_typed_func::<(), ()>(&mut store, "f").unwrap();
        f.call(&mut store, ()).unwrap();
        detwasm_runtime::meter::consumed(&mut store, Some(&i))
    };
    // `$g` could call itself (never does): it is metered.
    let wat = r#"(module (func $g (if (i32.const 0) (then (call $g))))
        (func (export "f") (call $g) (call $g)))"#;
    assert_eq!(fuel(wat, true), fuel(wat, false));
    // Entering `f`, two calls; twice entering `$g`, `i32.const`, `if`.
    assert_eq!(fuel(wat, true), 3 + 2 * 3);
}

/// The native stack is never exhausted before the metered one: recursion to the deepest
/// metered depth, for the frame shapes whose native size per stack unit is largest, on
/// the engine's own configuration and without optimisation (larger frames).
mod native_bound {
    // `frames`: the pass's frame costs, public for this test only.
    use detwasm_passes::stack::{frames, NATIVE_BYTES_PER_UNIT, STACK_LIMIT};
    use detwasm_runtime::engine::{self, MAX_WASM_STACK};
    use wasmtime::{Config, Engine, Module};

    /// A recursive function `$f` of one shape; `$d` counts the frames entered.
    struct Shape {
        name: &'static str,
        /// Declarations of `$f` (params, results, locals).
        decl: String,
        /// Its body; `(call $f ...)` recurses, `global.get $d` must start it.
        body: String,
        /// How `_start` calls `$f`.
        start: String,
        /// Functions after `$f` and `_start`.
        extra: String,
        /// Whether its native frame is bounded by its cost in units. A frame that keeps
        /// values the module does not hold (temporaries Cranelift hoisted out of a loop
        /// or merged across a call) is not, when optimised; see [`NATIVE_BYTES_PER_UNIT`].
        bounded: bool,
    }

    const ENTER: &str = "global.get $d i32.const 1 i32.add global.set $d\n";

    fn shapes() -> Vec<Shape> {
        let n = 1000;
        let v128 = |i: usize| format!("v128.const i32x4 {i} {} {} {}", i + 1, i + 2, i + 3);
        let mut shapes = vec![
            Shape {
                name: "smallest frame",
                decl: String::new(),
                body: format!("{ENTER} call $f"),
                start: "call $f".into(),
                extra: String::new(),
                bounded: true,
            },
            Shape {
                name: "stack.wat probe (i64 param and result)",
                decl: "(param i64) (result i64)".into(),
                body: format!(
                    "{ENTER} (i64.add (call $f (i64.add (local.get 0) (i64.const 1))) \
                     (i64.const 1))"
                ),
                start: "(drop (call $f (i64.const 0)))".into(),
                extra: String::new(),
                bounded: true,
            },
        ];
        // v128 locals loaded from memory (which the call may change, so they cannot be
        // loaded again after it), all live across the recursive call.
        let locals = |n: usize| {
            let mut body = String::from(ENTER);
            for i in 0..n {
                body += &format!(
                    "(local.set {} (v128.load offset={} (i32.const 0)))\n",
                    i + 1,
                    16 * i
                );
            }
            body += "(call $f (local.get 1))\n";
            for i in 0..n {
                body += &format!("(local.get {}) i32x4.add\n", i + 1);
            }
            body
        };
        shapes.push(Shape {
            name: "1000 v128 locals live across the call",
            decl: format!("(param v128) (result v128) (local {})", "v128 ".repeat(n)),
            body: locals(n),
            start: format!("(drop (call $f ({})))", v128(7)),
            extra: String::new(),
            bounded: true,
        });
        // A large frame. (wasmparser allows 50,000 locals: measured once, 49,999 v128
        // locals take 16.8 native bytes per unit, as here, but two minutes to compile.)
        shapes.push(Shape {
            name: "4000 v128 locals live across the call",
            decl: format!(
                "(param v128) (result v128) (local {})",
                "v128 ".repeat(4000)
            ),
            body: locals(4000),
            start: format!("(drop (call $f ({})))", v128(7)),
            extra: String::new(),
            bounded: true,
        });
        // v128 operands loaded from memory, live across the call.
        let mut body = String::from(ENTER);
        for i in 0..n {
            body += &format!("(v128.load offset={} (i32.const 0))\n", 16 * i);
        }
        body += "(call $f (local.get 0))\n";
        body += &"i32x4.add\n".repeat(n);
        shapes.push(Shape {
            name: "1000 v128 operands live across the call",
            decl: "(param v128) (result v128)".into(),
            body,
            start: format!("(drop (call $f ({})))", v128(7)),
            extra: String::new(),
            bounded: true,
        });
        // The most parameters a function may have, all v128, passed on the stack: 256,
        // the shape scan's limit of parameters and results per type
        // (`passes::shape::LIMITS`; wasmparser alone allows 1,000, less the fuel's).
        let params = 256;
        let mut body = String::from(ENTER);
        for i in 0..params {
            body += &format!("(local.get {i}) ");
        }
        body += "call $f\n";
        let mut start = String::new();
        for i in 0..params {
            start += &format!("({}) ", v128(i));
        }
        start += "call $f";
        shapes.push(Shape {
            name: "256 v128 parameters",
            decl: format!("(param {})", "v128 ".repeat(params)),
            body,
            start,
            extra: String::new(),
            bounded: true,
        });
        // At every depth, before recursing, the costliest chain of unmetered frames: 16
        // functions of 4,000 v128 locals each (live across the call of the next), 64,176
        // units in all, on top of the metered frames.
        let chain = 16;
        let mut extra = String::new();
        for c in 0..chain {
            let mut body = String::new();
            for i in 0..4000 {
                body += &format!(
                    "(local.set {} (v128.load offset={} (i32.const 0)))\n",
                    i + 1,
                    16 * i
                );
            }
            if c + 1 < chain {
                body += &format!("(call $c{} (local.get 1))\n", c + 1);
            } else {
                body += "(local.get 1)\n";
            }
            for i in 0..4000 {
                body += &format!("(local.get {}) i32x4.add\n", i + 1);
            }
            extra += &format!(
                "(func $c{c} (param v128) (result v128) (local {}) {body})\n",
                "v128 ".repeat(4000)
            );
        }
        shapes.push(Shape {
            name: "a chain of unmetered frames at every depth",
            decl: String::new(),
            body: format!("{ENTER} (drop (call $c0 ({}))) call $f", v128(3)),
            start: "call $f".into(),
            extra,
            bounded: true,
        });
        // Loop-invariant expressions that Cranelift may hoist out of the loop, keeping them
        // live across the call although the module holds none of them: native values the
        // rule does not see (few locals, a low operand stack).
        let mut body = format!("{ENTER} (loop $l\n");
        for i in 0..n {
            body += &format!(
                "(local.set 1 (i32.add (local.get 1) (i32.mul (local.get 0) (i32.const {}))))\n",
                2 * i + 3
            );
        }
        body += "(local.set 1 (i32.add (local.get 1) (call $f (local.get 0))))\n";
        body += "(br_if $l (i32.eqz (local.get 1))))\n(local.get 1)";
        shapes.push(Shape {
            name: "1000 loop-invariant products",
            decl: "(param i32) (result i32) (local i32)".into(),
            body,
            start: "(drop (call $f (i32.const 5)))".into(),
            extra: String::new(),
            bounded: false,
        });
        shapes
    }

    fn module(shape: &Shape) -> Vec<u8> {
        let wat = format!(
            "(module (global $d (export \"depth\") (mut i32) (i32.const 0)) (memory 16)
               (func $f {} {})
               (func (export \"_start\") {}) {})",
            shape.decl, shape.body, shape.start, shape.extra
        );
        wat::parse_str(&wat).unwrap()
    }

    /// How `_start` ended and how many frames of `$f` were entered.
    fn run(engine: &Engine, module: &Module) -> (wasmtime::Error, u32) {
        let (engine, module) = (engine.clone(), module.clone());
        std::thread::Builder::new()
            .stack_size(detwasm_runtime::run::GUEST_THREAD_STACK)
            .spawn(move || {
                let (mut store, i) =
                    detwasm_runtime::meter::instantiate(&engine, &module, u64::MAX);
                let i = i.unwrap();
                let start = i.get_typed_func::<(), ()>(&mut store, "_start").unwrap();
                let err = start.call(&mut store, ()).unwrap_err();
                let d = i.get_global(&mut store, "depth").unwrap().get(&mut store);
                (err, d.unwrap_i32() as u32)
            })
            .unwrap()
            .join()
            .unwrap()
    }

    fn engines() -> Vec<(&'static str, Engine)> {
        let speed = engine::deterministic_config(true);
        let mut none: Config = engine::deterministic_config(true);
        none.cranelift_opt_level(wasmtime::OptLevel::None);
        vec![
            ("speed", Engine::new(&speed).unwrap()),
            ("opt none", Engine::new(&none).unwrap()),
        ]
    }

    /// For each shape and each engine: the module as it is overflows the native stack
    /// (measuring native bytes per frame); metered, it is stopped by the metered limit at
    /// exactly the depth the rule gives, with native bytes per unit below
    /// [`NATIVE_BYTES_PER_UNIT`].
    #[test]
    fn the_metered_limit_is_reached_before_the_native_one() {
        for (opt, engine) in engines() {
            for shape in shapes() {
                let binary = module(&shape);
                // The frames as the stack pass sees them: after the fuel and NaN passes
                // (a parameter and a local more each, and the `_start` wrapper last).
                let fueled = detwasm_passes::fuel::meter(&binary).unwrap();
                let prepared = detwasm_passes::nan::canonicalize(&fueled).unwrap();
                let a = frames(&prepared).unwrap();
                let costs: Vec<u32> = a.iter().map(|f| f.cost).collect();
                let (f, start) = (costs[0], costs[1] + costs[costs.len() - 1]);
                if !shape.extra.is_empty() {
                    // The chain is 16 of the largest frames: compiled once (on the
                    // optimised engine only), it shows the metered limit still comes
                    // first with it on top.
                    let chain = &a[2..a.len() - 1];
                    assert!(chain.iter().all(|c| c.unmetered), "{}", shape.name);
                    if opt == "speed" {
                        let metered = engine::compile(&engine, &binary).unwrap();
                        let (err, depth) = run(&engine, &metered);
                        assert!(
                            detwasm_runtime::engine::is_stack_exhaustion(&err),
                            "{}: {err:?}",
                            shape.name
                        );
                        assert_eq!(depth, (STACK_LIMIT - start) / f, "{}", shape.name);
                    }
                    continue;
                }
                let plain = Module::from_binary(&engine, &binary).unwrap();
                let (err, native_depth) = run(&engine, &plain);
                assert_eq!(
                    err.downcast_ref::<wasmtime::Trap>(),
                    Some(&wasmtime::Trap::StackOverflow),
                    "{}: {err:?}",
                    shape.name
                );
                let bytes_per_frame = MAX_WASM_STACK as f64 / f64::from(native_depth);
                let bytes_per_unit = bytes_per_frame / f64::from(f);
                let metered = engine::compile(&engine, &binary).unwrap();
                let (err, depth) = run(&engine, &metered);
                eprintln!(
                    "{opt:>8} {:<42} cost {f:>6} units  native {bytes_per_frame:>9.0} B/frame \
                     {bytes_per_unit:>5.2} B/unit  metered depth {depth}",
                    shape.name
                );
                if !shape.bounded {
                    if opt != "speed" {
                        continue; // nothing hoisted: bounded
                    }
                    // The runtime makes this a host failure, never an outcome (see
                    // `run::classify`).
                    assert!(
                        !detwasm_runtime::engine::is_stack_exhaustion(&err),
                        "{} ({opt})",
                        shape.name
                    );
                    assert_eq!(
                        err.downcast_ref::<wasmtime::Trap>(),
                        Some(&wasmtime::Trap::StackOverflow)
                    );
                    continue;
                }
                assert!(
                    detwasm_runtime::engine::is_stack_exhaustion(&err),
                    "{} ({opt}): {err:?}",
                    shape.name
                );
                assert_eq!(depth, (STACK_LIMIT - start) / f, "{} ({opt})", shape.name);
                assert!(
                    bytes_per_unit < NATIVE_BYTES_PER_UNIT as f64,
                    "{} ({opt}): {bytes_per_unit} native bytes per unit",
                    shape.name
                );
            }
        }
    }
}
