//! n-body (the Benchmarks Game's five Jovian bodies) for `benches/run-vs-wasmtime.sh`:
//! float work whose state lives in linear memory, as a Rust program keeps it. The bodies
//! are a fixed-size array behind a pointer that `advance` (never inlined) reads and
//! writes every step, so every position and velocity is loaded from and stored to memory
//! each step, the shape of float code that reaches the NaN pass's observation points.
//!
//! Usage: nbody-rs.wasm STEPS (prints the energy before and after, 9 decimals).

use std::f64::consts::PI;

const SOLAR_MASS: f64 = 4.0 * PI * PI;
const DAYS_PER_YEAR: f64 = 365.24;
const N: usize = 5;

#[derive(Clone, Copy)]
struct Body {
    pos: [f64; 3],
    vel: [f64; 3],
    mass: f64,
}

fn bodies() -> [Body; N] {
    let b = |pos: [f64; 3], vel: [f64; 3], mass: f64| Body {
        pos,
        vel: vel.map(|v| v * DAYS_PER_YEAR),
        mass: mass * SOLAR_MASS,
    };
    [
        b([0.0; 3], [0.0; 3], 1.0),
        b(
            [4.841_431_442_464_72, -1.160_320_044_027_428_4, -0.103_622_044_471_123_1],
            [1.660_076_642_744_037e-3, 7.699_011_184_197_404e-3, -6.904_600_169_720_63e-5],
            9.547_919_384_243_266e-4,
        ),
        b(
            [8.343_366_718_244_58, 4.124_798_564_124_305, -4.035_234_171_143_214e-1],
            [-2.767_425_107_268_624e-3, 4.998_528_012_349_172e-3, 2.304_172_975_737_639e-5],
            2.858_859_806_661_308e-4,
        ),
        b(
            [1.289_436_956_213_913e1, -1.511_115_140_169_863e1, -2.233_075_788_926_557e-1],
            [2.964_601_375_647_616e-3, 2.378_471_739_594_809e-3, -2.965_895_685_402_375_6e-5],
            4.366_244_043_351_563e-5,
        ),
        b(
            [1.537_969_711_485_091_1e1, -2.591_931_460_998_796_4e1, 1.792_587_729_503_711_8e-1],
            [2.680_677_724_903_893_2e-3, 1.628_241_700_382_423e-3, -9.515_922_545_197_159e-5],
            5.151_389_020_466_114_5e-5,
        ),
    ]
}

fn offset_momentum(bodies: &mut [Body; N]) {
    let mut p = [0.0; 3];
    for b in bodies.iter() {
        for k in 0..3 {
            p[k] += b.vel[k] * b.mass;
        }
    }
    for k in 0..3 {
        bodies[0].vel[k] = -p[k] / SOLAR_MASS;
    }
}

fn energy(bodies: &[Body; N]) -> f64 {
    let mut e = 0.0;
    for i in 0..N {
        let b = &bodies[i];
        e += 0.5 * b.mass * b.vel.iter().map(|v| v * v).sum::<f64>();
        for c in &bodies[i + 1..] {
            let d: f64 = (0..3).map(|k| (b.pos[k] - c.pos[k]).powi(2)).sum();
            e -= b.mass * c.mass / d.sqrt();
        }
    }
    e
}

#[inline(never)]
fn advance(bodies: &mut [Body; N], dt: f64) {
    for i in 0..N {
        for j in i + 1..N {
            let d = [0, 1, 2].map(|k| bodies[i].pos[k] - bodies[j].pos[k]);
            let d2 = d[0] * d[0] + d[1] * d[1] + d[2] * d[2];
            let mag = dt / (d2 * d2.sqrt());
            let (mi, mj) = (bodies[i].mass, bodies[j].mass);
            for k in 0..3 {
                bodies[i].vel[k] -= d[k] * mj * mag;
                bodies[j].vel[k] += d[k] * mi * mag;
            }
        }
    }
    for b in bodies.iter_mut() {
        for k in 0..3 {
            b.pos[k] += dt * b.vel[k];
        }
    }
}

fn main() {
    let steps: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    // On the heap: the array's address escapes to `advance`, so it stays in memory.
    let mut system = Box::new(bodies());
    offset_momentum(&mut system);
    println!("{:.9}", energy(&system));
    for _ in 0..steps {
        advance(&mut system, 0.01);
    }
    println!("{:.9}", energy(&system));
}
