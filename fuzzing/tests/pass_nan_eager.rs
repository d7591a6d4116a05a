//! The NaN pass (`detwasm_passes::nan`) against Cranelift's eager canonicalization, with
//! the self-fuzzer's setups (`detwasm_fuzzing::compare`). This test was in
//! `passes/src/nan.rs`; it lives here, beside the self-fuzzer that provides the setups,
//! so that detwasm-passes depends on no engine, not even for its tests (and
//! detwasm-runtime takes no dev-dependency on detwasm-fuzzing, which depends on it).

use detwasm_fuzzing::{compare, Setup};

/// Every route a raw NaN can take to where it is seen, run by the engine (pass, no
/// Cranelift canonicalization) and by the eager setup (Cranelift canonicalizing after
/// every operation): bit for bit the same results, memory and globals. On x86-64,
/// `0/0` gives the negative default NaN, so without the pass they differ (checked
/// too, to show the module does produce raw NaNs).
#[test]
fn observable_nans_equal_eager_canonicalization() {
    let wat = r#"(module (memory (export "m") 1)
        (global $g (export "g") (mut f64) (f64.const 0))
        (data (i32.const 64) "\01\00\a0\7f")
        (func $nan (result f32) (f32.div (f32.const 0) (f32.const 0)))
        (func $nan64 (result f64) (f64.div (f64.const 0) (f64.const 0)))
        (func $payload (result f32) (f32.load (i32.const 64)))
        (func (export "ret") (result f32) (call $nan))
        (func (export "neg") (result f32) (f32.neg (f32.div (f32.const 0) (f32.const 0))))
        (func (export "neg_payload") (result f32) (f32.neg (call $payload)))
        (func (export "abs_store")
          (f32.store (i32.const 0) (f32.abs (f32.sub (f32.const inf) (f32.const inf)))))
        (func (export "sign") (result f32)
          (f32.copysign (f32.const 1) (f32.mul (f32.const 0) (f32.const inf))))
        (func (export "select") (param i32) (result f32)
          (select (f32.div (f32.const 0) (f32.const 0)) (call $payload) (local.get 0)))
        (func (export "table") (param i32) (result f32)
          (block $a (result f32)
            (block $b (result f32)
              (br_table $a $b (f32.sqrt (f32.const -1)) (local.get 0)))
            (f32.neg)))
        (func (export "global") (global.set $g (f64.promote_f32 (call $nan))))
        (func (export "demote") (result i32)
          (i32.reinterpret_f32 (f32.demote_f64 (call $nan64))))
        (func (export "loop") (result f64) (local $x f64) (local $i i32)
          (loop $l
            (local.set $x (f64.add (local.get $x) (f64.div (f64.const 0) (f64.const 0))))
            (br_if $l (i32.lt_u (local.tee $i (i32.add (local.get $i) (i32.const 1))) (i32.const 3))))
          (local.get $x))
        (func (export "lanes") (result v128)
          (f32x4.replace_lane 1
            (f32x4.div (v128.const f32x4 0 1 0 1) (v128.const f32x4 0 1 0 1))
            (f32.min (call $nan) (f32.const 1))))
        (func (export "wide") (result v128)
          (f32x4.add (f64x2.sqrt (v128.const f64x2 -1 4)) (v128.const f32x4 0 0 0 0)))
        (func (export "madd") (result v128)
          (f32x4.relaxed_madd (v128.const f32x4 0 1 2 3) (v128.const f32x4 inf 1 1 1)
            (v128.const f32x4 1 1 1 1)))
        (func (export "pmin") (result v128)
          (f64x2.pmin (f64x2.mul (v128.const f64x2 0 1) (v128.const f64x2 inf 1))
            (v128.const f64x2 1 1))))"#;
    let binary = wat::parse_str(wat).unwrap();
    let agreed = compare(&binary, Setup::Serial, Setup::Eager).unwrap();
    assert_eq!(agreed.eager_calls, agreed.calls);
    assert!(agreed.nans > 4, "{agreed:?}");
    assert!(
        agreed.noncanonical_nans >= 3,
        "neg, neg_payload, table: {agreed:?}"
    );
    if cfg!(target_arch = "x86_64") {
        compare(&binary, Setup::Uncanonicalized, Setup::Eager).unwrap_err();
    }
}
