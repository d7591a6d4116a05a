//! The unwind pass (`detwasm_passes::unwind`) run on the runtime's engine: a run that
//! unwinds and rewinds at every refuel ends exactly as one that does not. These tests were
//! in `passes/src/unwind.rs`; they live here so that detwasm-passes depends on no engine,
//! not even for its tests.

use detwasm_passes::unwind::instrument;
use detwasm_runtime::meter::{self, Meter};

fn engine() -> wasmtime::Engine {
    wasmtime::Engine::new(&detwasm_runtime::engine::deterministic_config(false)).unwrap()
}

/// What calling export `f` returns, the instructions it ran, the checkpoints taken
/// and the bytes of memory 0 (if any) afterwards, refuelling every `slice`
/// instructions and, when `checkpoints`, unwinding and rewinding at every refuel.
#[allow(clippy::type_complexity)]
fn run(
    wat: &str,
    slice: u64,
    checkpoints: bool,
) -> (Result<Vec<String>, String>, u64, u64, Vec<u8>) {
    let engine = engine();
    let module =
        detwasm_runtime::engine::compile_with(&engine, wat.as_bytes(), checkpoints).unwrap();
    let mut m = Meter::new(1 << 40, None).with_slice(slice);
    if checkpoints {
        m = m.with_checkpoints(1);
    }
    let mut store = wasmtime::Store::new(&engine, m);
    let mut linker = wasmtime::Linker::new(&engine);
    meter::define(&mut linker).unwrap();
    let i = linker.instantiate(&mut store, &module).unwrap();
    if let Some(s) = meter::start(&mut store, &i) {
        s.call(&mut store, &[], &mut []).unwrap();
    }
    let f = i.get_func(&mut store, "f").unwrap();
    let ty = f.ty(&store);
    let mut results: Vec<wasmtime::Val> = ty
        .results()
        .map(|t| wasmtime::Val::default_for_ty(&t).unwrap())
        .collect();
    store.data_mut().allow_checkpoints(true);
    let r = match meter::call(&mut store, &i, &f, &[], &mut results) {
        Ok(()) => Ok(results.iter().map(|v| format!("{v:?}")).collect()),
        // The trap, not where (the rewritten code's offsets differ).
        Err(e) => Err(match e.downcast_ref::<wasmtime::Trap>() {
            Some(t) => t.to_string(),
            None => format!("{e:#}"),
        }),
    };
    let n = meter::consumed(&mut store, Some(&i));
    let taken = store.data().checkpoints_taken();
    let mem = match i.get_export(&mut store, "memory") {
        Some(wasmtime::Extern::Memory(mem)) => mem.data(&store).to_vec(),
        _ => Vec::new(),
    };
    (r, n, taken, mem)
}

/// A run that unwinds and rewinds at every refuel ends exactly as one that does not:
/// same results (bits of floats included), count, trap and memory.
fn same(wat: &str, slices: &[u64]) -> u64 {
    let mut most = 0;
    for &slice in slices {
        let plain = run(wat, slice, false);
        let checked = run(wat, slice, true);
        assert_eq!(plain.2, 0);
        assert_eq!(plain.0, checked.0, "slice {slice}");
        assert_eq!(plain.1, checked.1, "slice {slice}");
        assert!(plain.3 == checked.3, "memory differs, slice {slice}");
        most = most.max(checked.2);
    }
    assert!(most > 0, "no checkpoint was taken");
    most
}

const SLICES: &[u64] = &[1, 2, 3, 7, 50, 1000];

#[test]
fn recursion_with_values_below_the_call() {
    // `fib` keeps `n` and the first call's result on the stack across the second.
    let wat = r#"(module
        (func $fib (param i64) (result i64)
          local.get 0 i64.const 2 i64.lt_u
          if (result i64) local.get 0
          else
            i64.const 1000
            local.get 0 i64.const 1 i64.sub call $fib
            local.get 0 i64.const 2 i64.sub call $fib
            i64.add i64.add
            i64.const 1000 i64.sub
          end)
        (func (export "f") (result i64) i64.const 15 call $fib))"#;
    assert!(same(wat, SLICES) > 100);
}

#[test]
fn loops_with_parameters_and_multi_value_blocks() {
    let wat = r#"(module
        (type $p (func (param i32 i64) (result i32 i64)))
        (func $step (param i64) (result i64)
          local.get 0 i64.const 3 i64.mul i64.const 1 i64.add)
        (func (export "f") (result f64 i32 i64)
          (local $c i32) (local $a i64)
          f64.const 0.5
          i32.const 0 i64.const 1
          loop $l (type $p)
            call $step
            local.set $a
            i32.const 1 i32.add local.tee $c
            local.get $a i64.const 5 call $step i64.add
            local.get $c i32.const 40 i32.lt_u br_if $l
          end))"#;
    same(wat, SLICES);
}

#[test]
fn branches_that_carry_values_out_of_nested_blocks() {
    let wat = r#"(module
        (func $g (param i32) (result i32) local.get 0 i32.const 1 i32.add)
        (func $h (param i32) (result i32 i32)
          (local $i i32)
          i32.const 100
          block $out (result i32)
            i32.const 5
            block $a (result i32)
              block $b (result i32)
                local.get 0 call $g
                local.get 0 call $g
                local.get 0 i32.const 3 i32.rem_u
                br_table $a $b $out
              end
              i32.const 10 i32.add call $g
            end
            call $g
            local.get 0 i32.const 1 i32.and
            br_if $out
            i32.add
          end
          i32.add
          local.get 0 call $g)
        (func (export "f") (result i32)
          (local $i i32) (local $acc i32)
          loop $l
            local.get $i call $h i32.add local.get $acc i32.add local.set $acc
            local.get $i i32.const 1 i32.add local.tee $i
            i32.const 30 i32.lt_u br_if $l
          end
          local.get $acc))"#;
    same(wat, SLICES);
}

#[test]
fn ifs_with_parameters_with_and_without_else() {
    let wat = r#"(module
        (type $t (func (param i32 i32) (result i32 i32)))
        (func $g (param i32) (result i32) local.get 0 i32.const 3 i32.mul)
        (func (export "f") (result i32)
          (local $i i32) (local $acc i32)
          loop $l
            i32.const 9
            local.get $i local.get $acc
            local.get $i i32.const 2 i32.rem_u
            if (type $t)
              call $g i32.add call $g local.get $i
            else
              i32.add call $g i32.const 1
            end
            i32.add
            local.get $i i32.const 3 i32.rem_u
            if (param i32) (result i32)
              call $g
            end
            i32.add local.get $acc i32.add local.set $acc
            local.get $i i32.const 1 i32.add local.tee $i
            i32.const 40 i32.lt_u br_if $l
          end
          local.get $acc))"#;
    same(wat, SLICES);
}

#[test]
fn calls_through_tables_and_vectors_and_nans_kept_across_sites() {
    let wat = r#"(module
        (type $u (func (param f64) (result f64)))
        (table 2 funcref)
        (elem (i32.const 0) $half $neg)
        (memory (export "memory") 1)
        (global $g (mut i32) (i32.const 0))
        (func $half (param f64) (result f64)
          global.get $g i32.const 1 i32.add global.set $g
          local.get 0 f64.const 0.5 f64.mul)
        (func $neg (param f64) (result f64) local.get 0 f64.neg)
        (func (export "f") (result v128 f64 i32)
          (local $i i32) (local $v v128) (local $x f64)
          f64.const 3.0 local.set $x
          loop $l
            v128.const i32x4 1 2 3 4
            local.get $x
            local.get $i i32.const 1 i32.and
            call_indirect (type $u)
            local.set $x
            local.get $v i32x4.add local.set $v
            i32.const 0 f64.const nan:0x4 f64.store
            local.get $i i32.const 8 i32.mul
            local.get $x f64.store offset=8
            local.get $i i32.const 1 i32.add local.tee $i
            i32.const 50 i32.lt_u br_if $l
          end
          local.get $v local.get $x global.get $g))"#;
    same(wat, SLICES);
}

#[test]
fn traps_and_running_out_are_the_same() {
    let wat = r#"(module
        (func $g (param i32) (result i32)
          local.get 0 i32.const 37 i32.eq if unreachable end
          local.get 0)
        (func (export "f") (result i32)
          (local $i i32)
          loop $l
            local.get $i call $g drop
            local.get $i i32.const 1 i32.add local.tee $i
            i32.const 100 i32.lt_u br_if $l
          end
          local.get $i))"#;
    same(wat, SLICES);
}

/// `wat` after the fuel and stack passes, as the unwind pass takes it.
fn metered(wat: &str) -> Vec<u8> {
    let binary = wat::parse_str(wat).unwrap();
    let fueled = detwasm_passes::fuel::meter(&binary).unwrap();
    detwasm_passes::stack::meter(&fueled).unwrap()
}

/// The bodies of a module's defined functions, in order.
fn bodies(binary: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for p in wasmparser::Parser::new(0).parse_all(binary) {
        if let wasmparser::Payload::CodeSectionEntry(body) = p.unwrap() {
            out.push(binary[body.range()].to_vec());
        }
    }
    out
}

#[test]
fn functions_that_cannot_reach_a_checkpoint_are_left_as_they_are() {
    let wat = r#"(module
        (func $leaf (param i32) (result i32) local.get 0 i32.const 1 i32.add)
        (func (export "f") (result i32)
          (local $i i32)
          loop $l
            local.get $i call $leaf local.tee $i
            i32.const 10 i32.lt_u br_if $l
          end
          local.get $i))"#;
    let stacked = metered(wat);
    // Seen in the pass's output (its analysis is private): $leaf is not instrumented, its
    // body copied byte for byte; `f`, which loops, is (so is the fuel pass's wrapper of
    // `f`).
    let (before, after) = (bodies(&stacked), bodies(&instrument(&stacked).unwrap()));
    assert_eq!(before.len(), after.len());
    assert_eq!(before[0], after[0]);
    assert_ne!(before[1], after[1]);
    same(wat, SLICES);
}

/// How many times `i64.const value` appears in the defined functions' code.
fn consts(binary: &[u8], value: i64) -> usize {
    let mut n = 0;
    for p in wasmparser::Parser::new(0).parse_all(binary) {
        if let wasmparser::Payload::CodeSectionEntry(body) = p.unwrap() {
            let mut ops = body.get_operators_reader().unwrap();
            while !ops.eof() {
                if matches!(ops.read().unwrap(), wasmparser::Operator::I64Const { value: v } if v == value)
                {
                    n += 1;
                }
            }
        }
    }
    n
}

/// A loop that holds a site gets a plain copy beside its rewinding one ("Loops run
/// plain" in the pass's docs), and a loop that mostly wraps another does not: rewinds at
/// every refuel land in both copies and end as the run without them.
#[test]
fn loops_get_a_plain_copy_unless_they_wrap_a_larger_loop() {
    let wat = r#"(module
        (global $g (mut i64) (i64.const 0))
        (func $bump (param i64) (result i64) local.get 0 i64.const 1 i64.add)
        (func (export "f") (result i64)
          (local $i i32) (local $j i32) (local $acc i64)
          loop $outer
            i64.const 555555 global.set $g
            i32.const 0 local.set $j
            loop $inner
              local.get $acc i64.const 777777 i64.xor call $bump
              i64.const 3 i64.mul i64.const 777777 i64.xor local.set $acc
              local.get $acc i64.const 7 i64.rotl local.set $acc
              local.get $j i32.const 1 i32.add local.tee $j
              i32.const 20 i32.lt_u br_if $inner
            end
            local.get $i i32.const 1 i32.add local.tee $i
            i32.const 10 i32.lt_u br_if $outer
          end
          local.get $acc))"#;
    let stacked = metered(wat);
    let after = instrument(&stacked).unwrap();
    assert_eq!(consts(&stacked, 777_777), 2);
    assert_eq!(
        consts(&after, 777_777),
        4,
        "the inner loop is emitted twice"
    );
    assert_eq!(consts(&after, 555_555), 1, "the outer loop is emitted once");
    assert!(same(wat, SLICES) > 100);
}

/// A loop of many branches in a function of `locals` locals, with a marker constant in
/// the loop.
fn wide_loop(locals: usize) -> String {
    let branches = "local.get $i i32.const 7 i32.eq br_if $b\n".repeat(300);
    format!(
        r#"(module
        (func $g (param i64) (result i64) local.get 0 i64.const 1 i64.add)
        (func (export "f") (result i64)
          (local $i i32) (local $acc i64) (local {} i64)
          loop $l
            block $b
              {branches}
            end
            local.get $acc i64.const 424242 i64.xor call $g local.set $acc
            local.get $i i32.const 1 i32.add local.tee $i
            i32.const 3 i32.lt_u br_if $l
          end
          local.get $acc))"#,
        "i64 ".repeat(locals)
    )
}

/// Plain copies are made only where the rewritten module stays within the limits it is
/// scanned against: the same loop is copied in a function of few locals, and not in one
/// of so many that its variables × blocks would pass the limit with the copy (the
/// module is then accepted as without copies, never refused for them).
#[test]
fn copies_are_made_only_within_the_limits() {
    let few = instrument(&metered(&wide_loop(10))).unwrap();
    assert_eq!(consts(&few, 424_242), 2, "copied");
    let many = instrument(&metered(&wide_loop(4_000))).unwrap();
    assert_eq!(consts(&many, 424_242), 1, "not copied");
    let shape = detwasm_passes::shape::check(&many, &detwasm_passes::shape::UNWIND_LIMITS)
        .expect("within the limits");
    // Near the limit, so that the copy would have passed it.
    assert!(
        2 * shape.ssa.0 > detwasm_passes::shape::UNWIND_LIMITS.ssa,
        "{shape:?}"
    );
    same(&wide_loop(4_000), &[50, 1000]);
}

/// A function that tail-calls one that can unwind is gone from the stack when that
/// one unwinds: on rewind it forwards to the function whose frame comes next.
#[test]
fn tail_calls_forward_the_rewind() {
    let wat = r#"(module
        (type $t (func (param i32 i64) (result i64)))
        (table 2 funcref)
        (elem (i32.const 0) $even $odd)
        (func $spin (param i32) (result i32)
          loop $l local.get 0 i32.const 1 i32.sub local.tee 0 br_if $l end
          local.get 0)
        (func $even (param i32 i64) (result i64)
          local.get 0 i32.eqz if local.get 1 return end
          i32.const 3 call $spin drop
          local.get 0 i32.const 1 i32.sub
          local.get 1 i64.const 3 i64.mul
          i32.const 1
          return_call_indirect (type $t))
        (func $odd (param i32 i64) (result i64)
          local.get 0 i32.eqz if local.get 1 return end
          local.get 0 i32.const 1 i32.sub
          local.get 1 i64.const 7 i64.add
          return_call $even)
        (func $start (param i32) (result i64)
          local.get 0 i64.const 1 return_call $odd)
        (func (export "f") (result i64 i64)
          i32.const 301 call $start
          i32.const 7 call $start))"#;
    assert!(same(wat, SLICES) > 50);
}

#[test]
fn references_across_sites_are_refused_with_the_reason() {
    let refs = r#"(module
        (func $g (param i32) (result i32)
          loop $l local.get 0 i32.const 1 i32.sub local.tee 0 br_if $l end
          local.get 0)
        (func (export "f") (result i32)
          ref.null func i32.const 3 call $g drop drop i32.const 0))"#;
    let e = detwasm_runtime::engine::compile_with(&engine(), refs.as_bytes(), true)
        .unwrap_err()
        .to_string();
    assert!(e.contains("reference"), "{e}");
    // Without checkpoints it compiles.
    detwasm_runtime::engine::compile(&engine(), refs.as_bytes()).unwrap();
}

/// An interpreter's switch: a `br_table` out of a chain of nested blocks, each case's
/// code after one block's end. The blocks of a chain leave their dispatch to the
/// innermost one and make it again after each block's end (`Dispatch down a chain` in
/// the pass's docs): rewinding must still reach every case, through blocks with
/// parameters too.
#[test]
fn a_switch_of_nested_blocks_rewinds_into_every_case() {
    let wat = r#"(module
        (func $g (param i32) (result i32)
          local.get 0 i32.const 3 i32.mul i32.const 1 i32.add)
        (func (export "f") (result i32 i64)
          (local $i i32) (local $acc i32) (local $x i64)
          block $done
            loop $l
              block $b3
                block $b2
                  block $b1
                    block $b0
                      local.get $i i32.const 4 i32.rem_u
                      br_table $b0 $b1 $b2 $b3
                    end
                    local.get $x
                    local.get $acc call $g local.tee $acc
                    i64.extend_i32_u i64.add local.set $x
                    br $b3
                  end
                  local.get $acc
                  block $c1 (param i32) (result i32)
                    block $c2 (param i32) (result i32)
                      call $g
                    end
                    call $g
                  end
                  local.set $acc
                  br $b3
                end
                local.get $acc i32.const 7 i32.xor local.set $acc
              end
              local.get $x local.get $acc call $g i64.extend_i32_u i64.add local.set $x
              local.get $i i32.const 1 i32.add local.tee $i
              i32.const 30 i32.lt_u br_if $l
            end
          end
          local.get $acc local.get $x))"#;
    assert!(same(wat, SLICES) > 30);
}

/// Found by review: each call site saves every value left on the stack below it, so D
/// values left across S calls grow the body by about 6·D·S bytes; 200 KB of such code
/// took 80 s and 4.3 GB before the scan after the pass refused it. The pass now stops as
/// soon as a body passes the limit the scan would apply.
#[test]
fn values_left_across_many_calls_are_refused_as_the_body_grows() {
    let (d, s) = (3000, 3000);
    let wat = format!(
        "(module (memory (export \"memory\") 1)
           (func $g (local i32) (loop $l (br_if $l (local.get 0))))
           (func (export \"f\") {} {} {}))",
        "i32.const 0 ".repeat(d),
        "call $g ".repeat(s),
        "drop ".repeat(d)
    );
    let e = detwasm_runtime::engine::compile_with(&engine(), wat.as_bytes(), true)
        .expect_err("refused")
        .to_string();
    assert!(e.contains("grows past"), "{e}");
    // Without checkpoints the same module compiles.
    detwasm_runtime::engine::compile_with(&engine(), wat.as_bytes(), false).unwrap();
}
