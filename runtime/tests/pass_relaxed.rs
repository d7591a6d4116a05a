//! The relaxed SIMD pass (`detwasm_passes::relaxed`) run on the runtime's engine: every
//! relaxed operator, through `engine::compile` (all the passes), on edge inputs, against
//! the WebAssembly 3.0 deterministic profile's result computed here in plain Rust, lane
//! by lane, with NaN results canonical (a function result is observed). And wasmtime's
//! own `relaxed_simd_deterministic` choices where they differ from the profile, so that
//! the difference the pass makes is shown, not assumed.

use wasmtime::V128;

const OPS: &[(&str, &str)] = &[
    (
        "swizzle",
        "i8x16.relaxed_swizzle (local.get 0) (local.get 1)",
    ),
    ("trunc_f32_s", "i32x4.relaxed_trunc_f32x4_s (local.get 0)"),
    ("trunc_f32_u", "i32x4.relaxed_trunc_f32x4_u (local.get 0)"),
    (
        "trunc_f64_s",
        "i32x4.relaxed_trunc_f64x2_s_zero (local.get 0)",
    ),
    (
        "trunc_f64_u",
        "i32x4.relaxed_trunc_f64x2_u_zero (local.get 0)",
    ),
    (
        "madd_f32",
        "f32x4.relaxed_madd (local.get 0) (local.get 1) (local.get 2)",
    ),
    (
        "nmadd_f32",
        "f32x4.relaxed_nmadd (local.get 0) (local.get 1) (local.get 2)",
    ),
    (
        "madd_f64",
        "f64x2.relaxed_madd (local.get 0) (local.get 1) (local.get 2)",
    ),
    (
        "nmadd_f64",
        "f64x2.relaxed_nmadd (local.get 0) (local.get 1) (local.get 2)",
    ),
    (
        "laneselect8",
        "i8x16.relaxed_laneselect (local.get 0) (local.get 1) (local.get 2)",
    ),
    (
        "laneselect16",
        "i16x8.relaxed_laneselect (local.get 0) (local.get 1) (local.get 2)",
    ),
    (
        "laneselect32",
        "i32x4.relaxed_laneselect (local.get 0) (local.get 1) (local.get 2)",
    ),
    (
        "laneselect64",
        "i64x2.relaxed_laneselect (local.get 0) (local.get 1) (local.get 2)",
    ),
    ("min_f32", "f32x4.relaxed_min (local.get 0) (local.get 1)"),
    ("max_f32", "f32x4.relaxed_max (local.get 0) (local.get 1)"),
    ("min_f64", "f64x2.relaxed_min (local.get 0) (local.get 1)"),
    ("max_f64", "f64x2.relaxed_max (local.get 0) (local.get 1)"),
    (
        "q15mulr",
        "i16x8.relaxed_q15mulr_s (local.get 0) (local.get 1)",
    ),
    (
        "dot",
        "i16x8.relaxed_dot_i8x16_i7x16_s (local.get 0) (local.get 1)",
    ),
    (
        "dot_add",
        "i32x4.relaxed_dot_i8x16_i7x16_add_s (local.get 0) (local.get 1) (local.get 2)",
    ),
];

fn module() -> String {
    let mut m = String::from("(module\n");
    for (name, body) in OPS {
        m.push_str(&format!(
            "(func (export \"{name}\") (param v128 v128 v128) (result v128) ({body}))\n"
        ));
    }
    m.push(')');
    m
}

type Call = Box<dyn FnMut(&str, [u128; 3]) -> u128>;

/// Calls of the module's exports: compiled by detwasm (`passes`) or by wasmtime alone,
/// with detwasm's engine configuration.
fn instance(passes: bool) -> Call {
    let engine =
        wasmtime::Engine::new(&detwasm_runtime::engine::deterministic_config(false)).unwrap();
    let module = if passes {
        detwasm_runtime::engine::compile(&engine, module().as_bytes()).unwrap()
    } else {
        wasmtime::Module::new(&engine, module()).unwrap()
    };
    let (mut store, i) = detwasm_runtime::meter::instantiate(&engine, &module, u64::MAX / 4);
    let i = i.unwrap();
    Box::new(move |name, [a, b, c]| {
        let f = i
            .get_typed_func::<(V128, V128, V128), V128>(&mut store, name)
            .unwrap();
        f.call(&mut store, (a.into(), b.into(), c.into()))
            .unwrap()
            .as_u128()
    })
}

// Lanes in and out of a v128 (lane 0 in the lowest bits, as wasm's memory order).
fn lanes<const N: usize, const B: usize>(v: u128) -> [[u8; B]; N] {
    let bytes = v.to_le_bytes();
    std::array::from_fn(|i| std::array::from_fn(|j| bytes[i * B + j]))
}
fn from_lanes<const N: usize, const B: usize>(l: [[u8; B]; N]) -> u128 {
    let mut bytes = [0u8; 16];
    for (i, lane) in l.iter().enumerate() {
        bytes[i * B..(i + 1) * B].copy_from_slice(lane);
    }
    u128::from_le_bytes(bytes)
}
fn f32s(v: u128) -> [f32; 4] {
    lanes::<4, 4>(v).map(f32::from_le_bytes)
}
fn f64s(v: u128) -> [f64; 2] {
    lanes::<2, 8>(v).map(f64::from_le_bytes)
}
fn i8s(v: u128) -> [i8; 16] {
    lanes::<16, 1>(v).map(i8::from_le_bytes)
}
fn i16s(v: u128) -> [i16; 8] {
    lanes::<8, 2>(v).map(i16::from_le_bytes)
}
fn i32s(v: u128) -> [i32; 4] {
    lanes::<4, 4>(v).map(i32::from_le_bytes)
}
fn of_f32(l: [f32; 4]) -> u128 {
    from_lanes(l.map(|x| canonical32(x).to_le_bytes()))
}
fn of_f64(l: [f64; 2]) -> u128 {
    from_lanes(l.map(|x| canonical64(x).to_le_bytes()))
}
fn of_i16(l: [i16; 8]) -> u128 {
    from_lanes(l.map(i16::to_le_bytes))
}
fn of_i32(l: [i32; 4]) -> u128 {
    from_lanes(l.map(i32::to_le_bytes))
}
/// A NaN result is the canonical NaN: detwasm's contract, and what the deterministic
/// profile prescribes for a NaN result.
fn canonical32(x: f32) -> f32 {
    if x.is_nan() {
        f32::from_bits(0x7fc0_0000)
    } else {
        x
    }
}
fn canonical64(x: f64) -> f64 {
    if x.is_nan() {
        f64::from_bits(0x7ff8_0000_0000_0000)
    } else {
        x
    }
}

/// wasm's `fmin`/`fmax`: a NaN if either operand is one, -0 below +0.
fn fmin<F: Copy + PartialOrd>(a: F, b: F, nan: impl Fn(F) -> bool, neg: impl Fn(F) -> bool) -> F {
    if nan(a) {
        a
    } else if nan(b) {
        b
    } else if a < b || (a == b && neg(a)) {
        a
    } else {
        b
    }
}
fn fmax<F: Copy + PartialOrd>(a: F, b: F, nan: impl Fn(F) -> bool, neg: impl Fn(F) -> bool) -> F {
    if nan(a) {
        a
    } else if nan(b) {
        b
    } else if a > b || (a == b && !neg(a)) {
        a
    } else {
        b
    }
}

/// The deterministic profile's dot product: both operands' bytes signed, each pair of
/// products added with signed saturation to 16 bits.
fn dot(a: u128, b: u128) -> [i16; 8] {
    let (a, b) = (i8s(a), i8s(b));
    std::array::from_fn(|k| {
        let p = |i: usize| i32::from(a[i]) * i32::from(b[i]);
        (p(2 * k) + p(2 * k + 1)).clamp(i16::MIN.into(), i16::MAX.into()) as i16
    })
}

/// The deterministic profile's result of export `name` (see `detwasm_passes::relaxed`
/// for the choices; Rust's float `as` casts saturate and give 0 for NaN, exactly
/// `trunc_sat`; its `*` and `+` round once each, never fused).
fn profile(name: &str, [a, b, c]: [u128; 3]) -> u128 {
    let (fa, fb, fc) = (f32s(a), f32s(b), f32s(c));
    let (da, db, dc) = (f64s(a), f64s(b), f64s(c));
    let nan32 = |x: f32| x.is_nan();
    let neg32 = |x: f32| x.is_sign_negative();
    let nan64 = |x: f64| x.is_nan();
    let neg64 = |x: f64| x.is_sign_negative();
    let bitselect = |a: u128, b: u128, m: u128| (a & m) | (b & !m);
    match name {
        "swizzle" => {
            let (x, j) = (lanes::<16, 1>(a), lanes::<16, 1>(b));
            from_lanes::<16, 1>(std::array::from_fn(|k| {
                let j = usize::from(j[k][0]);
                if j < 16 {
                    x[j]
                } else {
                    [0]
                }
            }))
        }
        "trunc_f32_s" => of_i32(fa.map(|x| x as i32)),
        "trunc_f32_u" => of_i32(fa.map(|x| x as u32 as i32)),
        "trunc_f64_s" => of_i32([da[0] as i32, da[1] as i32, 0, 0]),
        "trunc_f64_u" => of_i32([da[0] as u32 as i32, da[1] as u32 as i32, 0, 0]),
        "madd_f32" => of_f32(std::array::from_fn(|i| fa[i] * fb[i] + fc[i])),
        "nmadd_f32" => of_f32(std::array::from_fn(|i| -fa[i] * fb[i] + fc[i])),
        "madd_f64" => of_f64(std::array::from_fn(|i| da[i] * db[i] + dc[i])),
        "nmadd_f64" => of_f64(std::array::from_fn(|i| -da[i] * db[i] + dc[i])),
        "laneselect8" | "laneselect16" | "laneselect32" | "laneselect64" => bitselect(a, b, c),
        "min_f32" => of_f32(std::array::from_fn(|i| fmin(fa[i], fb[i], nan32, neg32))),
        "max_f32" => of_f32(std::array::from_fn(|i| fmax(fa[i], fb[i], nan32, neg32))),
        "min_f64" => of_f64(std::array::from_fn(|i| fmin(da[i], db[i], nan64, neg64))),
        "max_f64" => of_f64(std::array::from_fn(|i| fmax(da[i], db[i], nan64, neg64))),
        "q15mulr" => {
            let (x, y) = (i16s(a), i16s(b));
            of_i16(std::array::from_fn(|i| {
                let p = (i32::from(x[i]) * i32::from(y[i]) + 0x4000) >> 15;
                p.clamp(i16::MIN.into(), i16::MAX.into()) as i16
            }))
        }
        "dot" => of_i16(dot(a, b)),
        "dot_add" => {
            let (d, acc) = (dot(a, b), i32s(c));
            of_i32(std::array::from_fn(|k| {
                (i32::from(d[2 * k]) + i32::from(d[2 * k + 1])).wrapping_add(acc[k])
            }))
        }
        _ => unreachable!("{name}"),
    }
}

/// Edge inputs: NaNs (canonical, with a payload, negative, signalling), both zeros,
/// infinities, a subnormal, values out of every integer range, products whose rounding
/// a fused multiply-add would skip; bytes >= 0x80 and indices >= 16; -0x8000 for q15.
fn inputs() -> Vec<u128> {
    let f32v = |l: [u32; 4]| from_lanes(l.map(u32::to_le_bytes));
    let f64v = |l: [u64; 2]| from_lanes(l.map(u64::to_le_bytes));
    let one_plus = 1.0f32 + f32::EPSILON * 2048.0; // 1 + 2^-12
    let d_one_plus = 1.0f64 + f64::EPSILON * 2f64.powi(25); // 1 + 2^-27
    let mut v = vec![
        f32v([0x7fc0_0000, 0x7fa0_0001, 0xffc0_0000, 0x8000_0000]),
        f32v([0x0000_0000, 0x7f80_0000, 0xff80_0000, 0x0000_0001]),
        f32v([
            one_plus.to_bits(),
            (-1.0f32 - f32::EPSILON * 4096.0).to_bits(), // -(1 + 2^-11)
            3e9f32.to_bits(),
            (-3e9f32).to_bits(),
        ]),
        // 2^32, -0.75, the largest f32 below 2^31, 1.5.
        f32v([
            0x4f80_0000,
            (-0.75f32).to_bits(),
            0x4eff_ffff,
            1.5f32.to_bits(),
        ]),
        f64v([0x7ff8_0000_0000_0001, 0x8000_0000_0000_0000]),
        f64v([
            d_one_plus.to_bits(),
            (-1.0f64 - f64::EPSILON * 2f64.powi(26)).to_bits(),
        ]),
        f64v([5e9f64.to_bits(), (-2.5e9f64).to_bits()]),
        f64v([4_294_967_295.9f64.to_bits(), (-0.99f64).to_bits()]),
        // (1 + 2^-12)^2 - (1 + 2^-11): 0 unfused, 2^-24 fused; the same in f64.
        f32v([one_plus.to_bits(); 4]),
        f32v([(-1.0f32 - f32::EPSILON * 4096.0).to_bits(); 4]),
        f64v([d_one_plus.to_bits(); 2]),
        f64v([(-1.0f64 - f64::EPSILON * 2f64.powi(26)).to_bits(); 2]),
        u128::from_le_bytes([0x80; 16]),
        u128::from_le_bytes([
            0x80, 0x80, 0x7f, 0x7f, 0x80, 0x7f, 0xff, 0x01, 0x10, 0x0f, 0x8f, 0x11, 0x00, 0xf0,
            0x90, 0x20,
        ]),
        of_i16([i16::MIN, i16::MIN, i16::MAX, -1, 0x4000, -0x4000, 1, 0]),
        u128::MAX,
        0,
        0x0123_4567_89ab_cdef_fedc_ba98_7654_3210,
    ];
    // Each float lane against each other (rotations), as well as lane by lane.
    let rotated: Vec<u128> = v.iter().map(|x| x.rotate_left(32)).collect();
    v.extend(rotated);
    v
}

#[test]
fn every_relaxed_operator_gives_the_deterministic_profiles_result() {
    let mut call = instance(true);
    let inputs = inputs();
    let mut checked = 0;
    for (name, _) in OPS {
        for &a in &inputs {
            for &b in &inputs {
                // The third operand only matters to madd, nmadd, laneselect and dot_add:
                // all of them for those, a few for the others.
                let thirds: &[u128] = if ["madd", "laneselect", "dot_add"]
                    .iter()
                    .any(|t| name.contains(t))
                {
                    &inputs
                } else {
                    &inputs[..2]
                };
                for &c in thirds {
                    let got = call(name, [a, b, c]);
                    let want = profile(name, [a, b, c]);
                    assert_eq!(
                        got, want,
                        "{name}({a:#034x}, {b:#034x}, {c:#034x}): {got:#034x}, the profile \
                         gives {want:#034x}"
                    );
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 50_000, "{checked}");
}

/// Where the profile and wasmtime 48's `relaxed_simd_deterministic` differ (the module
/// compiled by wasmtime alone): `relaxed_madd` is fused there, the dot products wrap or
/// stay exact there. Without the pass these would be detwasm's results.
#[test]
fn the_relaxed_pass_changes_what_wasmtime_alone_gives_for_madd_and_the_dot_products() {
    let (mut detwasm, mut wasmtime) = (instance(true), instance(false));
    // (1 + 2^-12)^2 - (1 + 2^-11) is 2^-24 exactly, and 0 once the product is rounded.
    let x = 1.0f32 + f32::EPSILON * 2048.0;
    let y = -1.0f32 - f32::EPSILON * 4096.0;
    let f = |v: f32| from_lanes([v.to_le_bytes(); 4]);
    let args = [f(x), f(x), f(y)];
    assert_eq!(f32s(detwasm("madd_f32", args)), [0.0; 4]);
    assert_eq!(f32s(wasmtime("madd_f32", args)), [2f32.powi(-24); 4]);
    let nargs = [f(-x), f(x), f(y)];
    assert_eq!(f32s(detwasm("nmadd_f32", nargs)), [0.0; 4]);
    assert_eq!(f32s(wasmtime("nmadd_f32", nargs)), [2f32.powi(-24); 4]);
    // (1 + 2^-27)^2 - (1 + 2^-26) is 2^-54 exactly, and 0 once the product is rounded.
    let x = 1.0f64 + f64::EPSILON * 2f64.powi(25);
    let y = -1.0f64 - f64::EPSILON * 2f64.powi(26);
    let d = |v: f64| from_lanes([v.to_le_bytes(); 2]);
    let args = [d(x), d(x), d(y)];
    assert_eq!(f64s(detwasm("madd_f64", args)), [0.0; 2]);
    assert_eq!(f64s(wasmtime("madd_f64", args)), [2f64.powi(-54); 2]);
    // Two products of -128 by -128: 32768, saturated by the profile.
    let m = u128::from_le_bytes([0x80; 16]);
    assert_eq!(i16s(detwasm("dot", [m, m, 0])), [i16::MAX; 8]);
    assert_eq!(i16s(wasmtime("dot", [m, m, 0])), [i16::MIN; 8]);
    assert_eq!(i32s(detwasm("dot_add", [m, m, 0])), [65534; 4]);
    assert_eq!(i32s(wasmtime("dot_add", [m, m, 0])), [65536; 4]);
    // Everywhere else (the other operators, and the dot products within the i7 range) they
    // agree.
    let seven = u128::from_le_bytes([0x7f; 16]);
    for name in ["dot", "dot_add"] {
        assert_eq!(detwasm(name, [m, seven, 5]), wasmtime(name, [m, seven, 5]));
    }
    let inputs = inputs();
    for (name, _) in OPS {
        if name.contains("madd") || name.starts_with("dot") {
            continue;
        }
        for &a in &inputs {
            for &b in &inputs {
                let args = [a, b, inputs[3]];
                // wasmtime alone does not canonicalize NaNs (that is the NaN pass's work):
                // only whether a lane is a NaN is compared.
                let same = |v: u128| match &name[name.len() - 4..] {
                    "_f32" => of_f32(f32s(v)),
                    "_f64" => of_f64(f64s(v)),
                    _ => v,
                };
                let (got, engine) = (detwasm(name, args), wasmtime(name, args));
                assert_eq!(got, same(got), "{name}: a NaN that is not canonical");
                assert_eq!(got, same(engine), "{name}");
            }
        }
    }
}
