//! Relaxed SIMD lowered to plain SIMD: the deterministic profile's results, decided in
//! the module rather than by an engine setting.
//!
//! # Why
//!
//! Relaxed SIMD operators may return one of several results, chosen by the host (fused or
//! unfused multiply-add, `pshufb` or `tbl` for an out-of-range swizzle index, ...). The
//! WebAssembly 3.0 specification fixes each choice with a global parameter, and its
//! *deterministic profile* sets every one of them to 0 (section "Relaxed Operations" of
//! the numerics chapter). detwasm gives that profile's results, and so that no engine
//! setting decides them, this pass replaces every relaxed operator with plain SIMD that
//! computes exactly the profile's result. Before it (until `detwasm-relaxed-1`), detwasm
//! relied on wasmtime's `relaxed_simd_deterministic`, which differs from the profile in
//! two places (see the table).
//!
//! # The lowering
//!
//! | operator | the profile's result | wasmtime 48's deterministic result | lowered to |
//! |---|---|---|---|
//! | `i8x16.relaxed_swizzle` | `i8x16.swizzle` (0 for indices >= 16) | the same | `i8x16.swizzle` |
//! | `i32x4.relaxed_trunc_f32x4_{s,u}`, `..._f64x2_{s,u}_zero` | `trunc_sat` | the same | `i32x4.trunc_sat_...` |
//! | `f32x4`/`f64x2` `.relaxed_madd` | unfused: `add(mul(a, b), c)` | **fused** (`fma`) | `mul`, `add` |
//! | `f32x4`/`f64x2` `.relaxed_nmadd` | unfused: `add(mul(-a, b), c)` | **fused** | `mul`, `neg`, `add` |
//! | `*.relaxed_laneselect` | `v128.bitselect` | the same | `v128.bitselect` |
//! | `f32x4`/`f64x2` `.relaxed_{min,max}` | `min`/`max` | the same | `min`/`max` |
//! | `i16x8.relaxed_q15mulr_s` | `i16x8.q15mulr_sat_s` | the same | `i16x8.q15mulr_sat_s` |
//! | `i16x8.relaxed_dot_i8x16_i7x16_s` | both operands signed, pairs added with **signed saturation** | pairs added wrapping | `extend`, `i32x4.dot_i16x8_s`, `i16x8.narrow_i32x4_s` |
//! | `i32x4.relaxed_dot_i8x16_i7x16_add_s` | that dot (saturated i16), `extadd_pairwise_s`, `add` | the exact i32 sum of four products | as the dot, then `extadd_pairwise_i16x8_s`, `i32x4.add` |
//!
//! The dot products differ only when the second operand has bytes >= 0x80 (outside the
//! "i7" range the operator is meant for): two products of -128 by -128 add up to 32768,
//! which the profile saturates to 32767 and wasmtime wraps to -32768 (`dot`) or keeps
//! exact (`dot_add`). `relaxed_madd` differs whenever rounding the product changes the
//! sum, that is for most inputs that are not exact.
//!
//! What is followed is the specification's text (the numerics chapter, and the SpecTec
//! definitions it is made from: every relaxed parameter is 0, `relaxed_madd`'s first
//! choice is the unfused one, the relaxed dot product adds with `iadd_sat`). The
//! specification repository's reference interpreter, at the time of writing, fuses
//! `relaxed_madd` and adds the dot products wrapping; the spec test suite accepts either
//! (its `either` results), so it cannot tell them apart.
//!
//! `nmadd` negates the rounded product instead of the first operand: rounding to nearest
//! is symmetric and the sign of a product (zeros included) is the exclusive or of its
//! operands' signs, so `mul(-a, b)` and `neg(mul(a, b))` have the same bits whenever the
//! product is not a NaN, and a NaN product gives a NaN sum either way (whose bits the NaN
//! pass decides, below).
//!
//! # Where it runs
//!
//! After the fuel pass, so that a relaxed operator is counted as one instruction, as
//! before (the lowering adds no control flow); before the NaN pass ([`super::nan`]),
//! which then sees only plain SIMD: the `mul`/`add` of a lowered `madd` and the `min`/`max`
//! are producers like any other, and their NaN results are canonical wherever they can
//! be observed, as the deterministic profile requires. The stack pass, after both, counts
//! the scratch locals this pass adds (up to three `v128`s, only in functions that need
//! them) in the frames' costs. Code grows at most about seven times where it is densest
//! in relaxed operators (a 3-byte `dot` becomes 31 bytes, `dot_add` 41); like every
//! pass's output, the rewritten module is scanned against the shape limits before
//! Cranelift compiles it (`detwasm_runtime::engine::compile`).

use wasm_encoder::{Encode, Instruction as I};
use wasmparser::{Operator, Parser, Payload};

/// The version of this pass, named in `detwasm_runtime::engine::ENGINE_SETTINGS`: bumped
/// whenever a lowering, or its emitted code, changes.
pub const PASS_VERSION: &str = "detwasm-relaxed-1";

/// The `v128` scratch locals a function gets, by how many its lowerings need.
const SCRATCH: [&[u8]; 4] = [&[], &[0x7b], &[0x7b, 0x7b], &[0x7b, 0x7b, 0x7b]];

/// The module with every relaxed SIMD operator replaced by plain SIMD computing the
/// deterministic profile's result (see the module docs), or why it could not be
/// rewritten. A module without relaxed operators is returned as it is.
pub fn lower(binary: &[u8]) -> Result<Vec<u8>, String> {
    let needs = scratch_needs(binary)?;
    if needs.iter().all(Option::is_none) {
        return Ok(binary.to_vec());
    }
    let locals = |body: usize| -> &'static [u8] {
        SCRATCH[usize::from(needs.get(body).copied().flatten().unwrap_or(0))]
    };
    super::nan::rewrite_code_par(binary, &locals, &|_| {
        Box::new(|_, op, _, out, scratch| match lowering(op, scratch) {
            Some(code) => {
                for i in &code {
                    i.encode(out);
                }
                true
            }
            None => false,
        })
    })
}

/// For each function body: `None` if it has no relaxed operator, else how many scratch
/// locals its lowerings need at most.
fn scratch_needs(binary: &[u8]) -> Result<Vec<Option<u8>>, String> {
    let err = |e: wasmparser::BinaryReaderError| e.to_string();
    let mut bodies = Vec::new();
    for payload in Parser::new(0).parse_all(binary) {
        if let Payload::CodeSectionEntry(body) = payload.map_err(err)? {
            bodies.push(body);
        }
    }
    // Body by body in parallel ([`crate::par_map`]): a module without relaxed operators
    // is only scanned, and the scan is most of this pass's time.
    crate::par_map(bodies, |body| {
        let mut need = None;
        let mut ops = body.get_operators_reader().map_err(err)?;
        while !ops.eof() {
            let op = ops.read().map_err(err)?;
            if let Some(n) = scratch_need(&op) {
                need = Some(need.unwrap_or(0).max(n));
            }
        }
        Ok(need)
    })
    .into_iter()
    .collect()
}

/// How many scratch locals the lowering of `op` needs, if `op` is a relaxed operator.
fn scratch_need(op: &Operator) -> Option<u8> {
    lowering(op, 0).map(|code| {
        code.iter()
            .filter_map(|i| match i {
                I::LocalGet(l) | I::LocalSet(l) | I::LocalTee(l) => Some(*l as u8 + 1),
                _ => None,
            })
            .max()
            .unwrap_or(0)
    })
}

/// The plain SIMD that replaces relaxed operator `op` (`None`: `op` is not relaxed), its
/// scratch locals numbered from `s`.
fn lowering(op: &Operator, s: u32) -> Option<Vec<I<'static>>> {
    use Operator as O;
    Some(match op {
        O::I8x16RelaxedSwizzle => vec![I::I8x16Swizzle],
        O::I32x4RelaxedTruncF32x4S => vec![I::I32x4TruncSatF32x4S],
        O::I32x4RelaxedTruncF32x4U => vec![I::I32x4TruncSatF32x4U],
        O::I32x4RelaxedTruncF64x2SZero => vec![I::I32x4TruncSatF64x2SZero],
        O::I32x4RelaxedTruncF64x2UZero => vec![I::I32x4TruncSatF64x2UZero],
        O::I8x16RelaxedLaneselect
        | O::I16x8RelaxedLaneselect
        | O::I32x4RelaxedLaneselect
        | O::I64x2RelaxedLaneselect => vec![I::V128Bitselect],
        O::F32x4RelaxedMin => vec![I::F32x4Min],
        O::F32x4RelaxedMax => vec![I::F32x4Max],
        O::F64x2RelaxedMin => vec![I::F64x2Min],
        O::F64x2RelaxedMax => vec![I::F64x2Max],
        O::I16x8RelaxedQ15mulrS => vec![I::I16x8Q15MulrSatS],
        // [a b c] -> a * b + c, rounded twice.
        O::F32x4RelaxedMadd => vec![I::LocalSet(s), I::F32x4Mul, I::LocalGet(s), I::F32x4Add],
        O::F64x2RelaxedMadd => vec![I::LocalSet(s), I::F64x2Mul, I::LocalGet(s), I::F64x2Add],
        // [a b c] -> -(a * b) + c (the module docs say why that is -a * b + c).
        O::F32x4RelaxedNmadd => vec![
            I::LocalSet(s),
            I::F32x4Mul,
            I::F32x4Neg,
            I::LocalGet(s),
            I::F32x4Add,
        ],
        O::F64x2RelaxedNmadd => vec![
            I::LocalSet(s),
            I::F64x2Mul,
            I::F64x2Neg,
            I::LocalGet(s),
            I::F64x2Add,
        ],
        O::I16x8RelaxedDotI8x16I7x16S => dot(s),
        // [a b c] -> extadd_pairwise_s(dot(a, b)) + c.
        O::I32x4RelaxedDotI8x16I7x16AddS => {
            let mut code = vec![I::LocalSet(s + 2)];
            code.extend(dot(s));
            code.extend([
                I::I32x4ExtAddPairwiseI16x8S,
                I::LocalGet(s + 2),
                I::I32x4Add,
            ]);
            code
        }
        _ => return None,
    })
}

/// [a b] -> the i16x8 whose lane k is the signed-saturating sum of a[2k] * b[2k] and
/// a[2k+1] * b[2k+1], both operands' bytes signed. `i32x4.dot_i16x8_s` of the
/// sign-extended halves gives each pair's sum exactly (at most 2 * 128 * 128 in
/// magnitude), and `i16x8.narrow_i32x4_s` saturates it to 16 bits, low half first.
/// Scratch locals `s` and `s + 1`.
fn dot(s: u32) -> Vec<I<'static>> {
    vec![
        I::LocalSet(s + 1),
        I::LocalTee(s),
        I::I16x8ExtendLowI8x16S,
        I::LocalGet(s + 1),
        I::I16x8ExtendLowI8x16S,
        I::I32x4DotI16x8S,
        I::LocalGet(s),
        I::I16x8ExtendHighI8x16S,
        I::LocalGet(s + 1),
        I::I16x8ExtendHighI8x16S,
        I::I32x4DotI16x8S,
        I::I16x8NarrowI32x4S,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validate(binary: &[u8]) {
        wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::all())
            .validate_all(binary)
            .unwrap();
    }

    /// Every operator of every function body, by name.
    fn operators(binary: &[u8]) -> Vec<String> {
        let mut names = Vec::new();
        for payload in Parser::new(0).parse_all(binary) {
            if let Payload::CodeSectionEntry(body) = payload.unwrap() {
                let mut ops = body.get_operators_reader().unwrap();
                while !ops.eof() {
                    let op = format!("{:?}", ops.read().unwrap());
                    names.push(op.split([' ', '{', '(']).next().unwrap().to_string());
                }
            }
        }
        names
    }

    const ALL: &str = r#"(module
        (func (param v128 v128 v128) (result v128)
            (i8x16.relaxed_swizzle (local.get 0) (local.get 1))
            (i32x4.relaxed_trunc_f32x4_s) (i32x4.relaxed_trunc_f32x4_u)
            (i32x4.relaxed_trunc_f64x2_s_zero) (i32x4.relaxed_trunc_f64x2_u_zero)
            (f32x4.relaxed_madd (local.get 1) (local.get 2))
            (f32x4.relaxed_nmadd (local.get 1) (local.get 2))
            (f64x2.relaxed_madd (local.get 1) (local.get 2))
            (f64x2.relaxed_nmadd (local.get 1) (local.get 2))
            (i8x16.relaxed_laneselect (local.get 1) (local.get 2))
            (i16x8.relaxed_laneselect (local.get 1) (local.get 2))
            (i32x4.relaxed_laneselect (local.get 1) (local.get 2))
            (i64x2.relaxed_laneselect (local.get 1) (local.get 2))
            (f32x4.relaxed_min (local.get 1)) (f32x4.relaxed_max (local.get 1))
            (f64x2.relaxed_min (local.get 1)) (f64x2.relaxed_max (local.get 1))
            (i16x8.relaxed_q15mulr_s (local.get 1))
            (i16x8.relaxed_dot_i8x16_i7x16_s (local.get 1))
            (i32x4.relaxed_dot_i8x16_i7x16_add_s (local.get 1) (local.get 2)))
        (func (result i32) (i32.const 7)))"#;

    #[test]
    fn every_relaxed_operator_is_lowered_to_valid_plain_simd() {
        let binary = wat::parse_str(ALL).unwrap();
        assert!(operators(&binary).iter().any(|o| o.contains("Relaxed")));
        let lowered = lower(&binary).unwrap();
        validate(&lowered);
        let ops = operators(&lowered);
        assert!(!ops.iter().any(|o| o.contains("Relaxed")), "{ops:?}");
        for plain in [
            "I8x16Swizzle",
            "I32x4TruncSatF32x4S",
            "I32x4TruncSatF64x2UZero",
            "F32x4Mul",
            "F64x2Neg",
            "V128Bitselect",
            "F64x2Max",
            "I16x8Q15MulrSatS",
            "I32x4DotI16x8S",
            "I16x8NarrowI32x4S",
            "I32x4ExtAddPairwiseI16x8S",
        ] {
            assert!(ops.iter().any(|o| o == plain), "{plain} missing: {ops:?}");
        }
    }

    #[test]
    fn only_functions_that_need_scratch_locals_get_them() {
        let binary = wat::parse_str(ALL).unwrap();
        // The first function's dot_add needs three; the second none (no relaxed operator).
        assert_eq!(scratch_needs(&binary).unwrap(), vec![Some(3), None]);
        let only_min = wat::parse_str(
            "(module (func (param v128) (result v128) (f32x4.relaxed_min (local.get 0) (local.get 0))))",
        )
        .unwrap();
        assert_eq!(scratch_needs(&only_min).unwrap(), vec![Some(0)]);
        let lowered = lower(&only_min).unwrap();
        validate(&lowered);
        // A lowering that needs no local adds none, and `f32x4.min`'s opcode is as long
        // as `f32x4.relaxed_min`'s: the module is as long as before.
        assert_eq!(lowered.len(), only_min.len());
        assert_ne!(lowered, only_min);
    }

    #[test]
    fn modules_without_relaxed_operators_are_unchanged() {
        let binary = wat::parse_str(
            "(module (func (param v128) (result v128) (f32x4.min (local.get 0) (local.get 0))))",
        )
        .unwrap();
        assert_eq!(lower(&binary).unwrap(), binary);
    }

    /// A function at WebAssembly's limit of locals cannot get a scratch local: refused
    /// with the reason, as the NaN pass refuses it (the same rewriting).
    #[test]
    fn a_function_at_the_locals_limit_is_refused_with_the_reason() {
        let module = |declared: usize| {
            let locals = " i32".repeat(declared);
            wat::parse_str(format!(
                "(module (func (param v128) (result v128) (local{locals}) \
                 (f32x4.relaxed_madd (local.get 0) (local.get 0) (local.get 0))))"
            ))
            .unwrap()
        };
        validate(&lower(&module(49_998)).unwrap());
        let e = lower(&module(49_999)).unwrap_err();
        assert!(e.contains("limit of 50000"), "{e}");
    }
}
