//! artgen: a procedural image generator standing in for SDXL on detwasm.
//!
//! A prompt and a seed in, a PNG out: a landscape whose time of day, palette, terrain
//! and features (water, stars, clouds) follow the prompt's words, and whose details
//! follow the seed. Every pixel is float arithmetic (fractal noise, exponentials,
//! powers), so the module is a real test of the runtime's float determinism; and it
//! deliberately lets NaN bit patterns reach its output (the dither salt folds in the
//! bits of NaNs made at run time), which only stays reproducible across CPUs because
//! the runtime canonicalizes NaNs.
//!
//! Usage: `artgen [--seed N] [--width W] [--height H] PROMPT...`
//! Writes `/outputs/image.png` (and a one-line description on stdout).

mod png;

use std::hint::black_box;

// ---------------------------------------------------------------------------------------
// Randomness and noise: all derived from (prompt, seed), nothing from the host.

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

struct Rng(u64);
impl Rng {
    fn f(&mut self) -> f64 {
        (splitmix(&mut self.0) >> 11) as f64 / (1u64 << 53) as f64
    }
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.f()
    }
}

fn hash2(x: i64, y: i64, salt: u64) -> f64 {
    let mut s = (x as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ (y as u64).wrapping_mul(0xc2b2_ae3d_27d4_eb4f)
        ^ salt;
    (splitmix(&mut s) >> 11) as f64 / (1u64 << 53) as f64
}

fn smooth(t: f64) -> f64 {
    t * t * (3.0 - 2.0 * t)
}

/// Value noise in 0..1.
fn noise2(x: f64, y: f64, salt: u64) -> f64 {
    let (xi, yi) = (x.floor(), y.floor());
    let (xf, yf) = (smooth(x - xi), smooth(y - yi));
    let (xi, yi) = (xi as i64, yi as i64);
    let a = hash2(xi, yi, salt);
    let b = hash2(xi + 1, yi, salt);
    let c = hash2(xi, yi + 1, salt);
    let d = hash2(xi + 1, yi + 1, salt);
    let top = a + (b - a) * xf;
    let bottom = c + (d - c) * xf;
    top + (bottom - top) * yf
}

fn fbm(x: f64, y: f64, octaves: u32, salt: u64) -> f64 {
    let (mut sum, mut amp, mut freq, mut norm) = (0.0, 0.5, 1.0, 0.0);
    for o in 0..octaves {
        sum += amp * noise2(x * freq, y * freq, salt.wrapping_add(o as u64 * 7919));
        norm += amp;
        amp *= 0.5;
        freq *= 2.03;
    }
    sum / norm
}

/// Ridged fractal noise (sharp crests), for mountain profiles.
fn ridged(x: f64, octaves: u32, salt: u64) -> f64 {
    let (mut sum, mut amp, mut freq, mut norm) = (0.0, 0.5, 1.0, 0.0);
    for o in 0..octaves {
        let n = noise2(
            x * freq,
            0.5 + o as f64 * 3.1,
            salt.wrapping_add(o as u64 * 104_729),
        );
        let r = 1.0 - (2.0 * n - 1.0).abs();
        sum += amp * r * r;
        norm += amp;
        amp *= 0.5;
        freq *= 2.1;
    }
    sum / norm
}

// ---------------------------------------------------------------------------------------
// Colour.

#[derive(Clone, Copy)]
struct Rgb(f64, f64, f64);

impl Rgb {
    fn lerp(self, o: Rgb, t: f64) -> Rgb {
        let t = t.clamp(0.0, 1.0);
        Rgb(
            self.0 + (o.0 - self.0) * t,
            self.1 + (o.1 - self.1) * t,
            self.2 + (o.2 - self.2) * t,
        )
    }
    fn scale(self, k: f64) -> Rgb {
        Rgb(self.0 * k, self.1 * k, self.2 * k)
    }
    fn add(self, o: Rgb) -> Rgb {
        Rgb(self.0 + o.0, self.1 + o.1, self.2 + o.2)
    }
}

/// HSV (h in turns) to linear-ish RGB.
fn hsv(h: f64, s: f64, v: f64) -> Rgb {
    let h = (h.rem_euclid(1.0)) * 6.0;
    let c = v * s;
    let x = c * (1.0 - ((h % 2.0) - 1.0).abs());
    let (r, g, b) = match h as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let m = v - c;
    Rgb(r + m, g + m, b + m)
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Time {
    Day,
    Sunset,
    Dawn,
    Night,
}

struct Scene {
    time: Time,
    water: bool,
    clouds: f64,
    hue: f64,
    sky_top: Rgb,
    sky_horizon: Rgb,
    sun: Rgb,
    sun_pos: (f64, f64),
    sun_radius: f64,
    land_near: Rgb,
    layers: usize,
    salt: u64,
}

fn has(words: &[String], any: &[&str]) -> bool {
    words.iter().any(|w| any.iter().any(|k| w.starts_with(k)))
}

fn plan(prompt: &str, seed: u64) -> Scene {
    let words: Vec<String> = prompt
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| w.to_lowercase())
        .collect();
    let salt = fnv1a(prompt.as_bytes()) ^ seed.wrapping_mul(0x2545_f491_4f6c_dd1d);
    let mut rng = Rng(salt);
    let time = if has(&words, &["night", "moon", "star", "midnight", "galaxy"]) {
        Time::Night
    } else if has(&words, &["sunset", "dusk", "evening", "twilight", "fire"]) {
        Time::Sunset
    } else if has(&words, &["dawn", "sunrise", "morning"]) {
        Time::Dawn
    } else if has(&words, &["day", "noon", "sunny", "summer"]) {
        Time::Day
    } else {
        [Time::Day, Time::Sunset, Time::Dawn, Time::Night][(rng.f() * 4.0) as usize % 4]
    };
    // A colour word in the prompt sets the palette's hue; otherwise the seed does.
    let named_hues = [
        (&["red", "crimson"][..], 0.0),
        (&["orange", "amber"][..], 0.07),
        (&["gold", "yellow"][..], 0.13),
        (&["green", "forest", "jungle"][..], 0.33),
        (&["teal", "cyan", "ice", "frozen"][..], 0.5),
        (&["blue", "ocean", "sea"][..], 0.6),
        (&["purple", "violet"][..], 0.75),
        (&["pink", "magenta", "rose"][..], 0.9),
    ];
    let hue = named_hues
        .iter()
        .find(|(names, _)| has(&words, names))
        .map(|(_, h)| *h + rng.range(-0.02, 0.02))
        .unwrap_or_else(|| rng.f());
    let (sky_top, sky_horizon, sun, sun_y) = match time {
        Time::Day => (
            hsv(0.58 + (hue - 0.58) * 0.1, 0.65, 0.75),
            hsv(0.55, 0.25, 1.0),
            Rgb(1.0, 0.98, 0.9),
            rng.range(0.12, 0.3),
        ),
        Time::Sunset => (
            hsv(0.7 + (hue - 0.7) * 0.2, 0.6, 0.35),
            hsv(0.07 + (hue - 0.07) * 0.05, 0.7, 1.0),
            Rgb(1.0, 0.75, 0.45),
            rng.range(0.16, 0.24),
        ),
        Time::Dawn => (
            hsv(0.6, 0.45, 0.55),
            hsv(0.95 + (hue - 0.95) * 0.08, 0.35, 1.0),
            Rgb(1.0, 0.88, 0.7),
            rng.range(0.24, 0.36),
        ),
        Time::Night => (
            hsv(0.66, 0.8, 0.06),
            hsv(0.62 + (hue - 0.62) * 0.2, 0.6, 0.22),
            Rgb(0.92, 0.94, 1.0),
            rng.range(0.12, 0.3),
        ),
    };
    let land_near = hsv(hue, 0.5, if time == Time::Night { 0.05 } else { 0.12 });
    Scene {
        time,
        water: has(
            &words,
            &["lake", "sea", "ocean", "water", "river", "reflect", "bay"],
        ),
        clouds: if has(&words, &["cloud", "storm", "fog", "mist"]) {
            0.85
        } else {
            rng.range(0.2, 0.55)
        },
        hue,
        sky_top,
        sky_horizon,
        sun,
        sun_pos: (rng.range(0.15, 0.85), sun_y),
        sun_radius: if time == Time::Night { 0.035 } else { 0.05 },
        land_near,
        layers: 4 + (rng.f() * 3.0) as usize,
        salt,
    }
}

/// Bits of NaNs produced at run time by real float instructions (sqrt of a negative,
/// 0/0, inf-inf). Their sign and payload are hardware-specific unless the runtime
/// canonicalizes them; they are folded into the dither salt on purpose.
fn nan_salt(x: f64) -> u64 {
    let a = black_box(-1.0 - x.abs()).sqrt();
    let b = black_box(0.0f64) / black_box(x * 0.0);
    let c = black_box(f32::INFINITY) - black_box(f32::INFINITY);
    a.to_bits() ^ b.to_bits().rotate_left(17) ^ (c.to_bits() as u64).rotate_left(40)
}

fn render(scene: &Scene, width: usize, height: usize) -> Vec<u8> {
    let w = width as f64;
    let h = height as f64;
    let aspect = w / h;
    let horizon = if scene.water { 0.68 } else { 0.78 };
    let mut rng = Rng(scene.salt ^ 0x5eed);
    // Mountain layers, far to near: base height (fraction of the image from the top),
    // amplitude, horizontal frequency and offset.
    let layers: Vec<(f64, f64, f64, f64)> = (0..scene.layers)
        .map(|i| {
            let t = i as f64 / (scene.layers - 1) as f64;
            let base = 0.42 + t * (horizon - 0.46);
            (
                base,
                0.28 - t * 0.16,
                1.2 + t * 2.2 + rng.range(0.0, 0.8),
                rng.range(0.0, 1000.0),
            )
        })
        .collect();
    let profile: Vec<Vec<f64>> = layers
        .iter()
        .enumerate()
        .map(|(i, &(base, amp, freq, off))| {
            (0..width)
                .map(|x| {
                    let u = x as f64 / w * aspect;
                    base - amp * ridged(u * freq + off, 6, scene.salt.wrapping_add(i as u64))
                })
                .collect()
        })
        .collect();
    let dither_salt = scene.salt ^ nan_salt(scene.hue);
    let mut img = vec![0u8; width * height * 3];
    for py in 0..height {
        for px in 0..width {
            let (u, v) = (px as f64 / w, py as f64 / h);
            let mut color = shade(scene, &layers, &profile, px, u, v, aspect, horizon, None);
            if scene.water && v > horizon {
                // Reflection with ripples: mirror about the horizon, distort, darken.
                let depth = (v - horizon) / (1.0 - horizon);
                let ripple = (fbm(
                    u * 40.0,
                    depth * 60.0 / (0.2 + depth),
                    4,
                    scene.salt ^ 0xa11,
                ) - 0.5)
                    * 0.06
                    * (0.3 + depth);
                let mv = (2.0 * horizon - v + ripple * 0.3).clamp(0.0, horizon);
                let mu = (u + ripple).clamp(0.0, 0.9999);
                let mpx = (mu * w) as usize;
                let reflected = shade(
                    scene,
                    &layers,
                    &profile,
                    mpx,
                    mu,
                    mv,
                    aspect,
                    horizon,
                    Some(()),
                );
                let water_tint = scene.sky_top.scale(0.35);
                color = reflected
                    .scale(0.62 - 0.25 * depth)
                    .add(water_tint.scale(0.4 + 0.3 * depth));
                // The sun's (or moon's) glitter path: a column under it, broken into
                // horizontal sparkles by stretched noise.
                let (sx, _) = scene.sun_pos;
                let column = (-((u - sx) * aspect).abs() * (9.0 - 5.0 * depth)).exp();
                let sparkle = fbm(u * aspect * 12.0, v * 220.0, 3, scene.salt ^ 0x9117);
                let glitter =
                    column * ((sparkle - 0.45) * 3.0).clamp(0.0, 1.0) * (0.9 - 0.5 * depth);
                color = color.add(scene.sun.scale(glitter));
            }
            // Vignette.
            let (dx, dy) = (u - 0.5, v - 0.5);
            color = color.scale(1.0 - 0.55 * (dx * dx + dy * dy).powf(1.2));
            let i = (py * width + px) * 3;
            for (c, value) in [color.0, color.1, color.2].into_iter().enumerate() {
                let dither = hash2(px as i64, py as i64 * 3 + c as i64, dither_salt) - 0.5;
                let srgb = value.clamp(0.0, 1.0).powf(1.0 / 2.2) * 255.0 + dither;
                img[i + c] = srgb.round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    img
}

#[allow(clippy::too_many_arguments)]
fn shade(
    scene: &Scene,
    layers: &[(f64, f64, f64, f64)],
    profile: &[Vec<f64>],
    px: usize,
    u: f64,
    v: f64,
    aspect: f64,
    horizon: f64,
    reflected: Option<()>,
) -> Rgb {
    // Nearest layer covering this pixel, nearest first.
    for (i, layer) in profile.iter().enumerate().rev() {
        if v >= layer[px] && v <= horizon + 0.001
            || (reflected.is_none() && v >= layer[px] && !scene.water)
        {
            let t = i as f64 / (layers.len() - 1) as f64;
            // Atmospheric perspective: far ridges fade into the sky near the horizon.
            let haze = scene.sky_horizon.lerp(scene.sky_top, 0.4);
            let rock = scene.land_near.lerp(haze, (1.0 - t).powf(1.2) * 0.7);
            // Shade by depth below the layer's mean crest line (smooth across columns),
            // a thin sunlit rim on the crest, and a little texture.
            let mean = layers[i].0 - layers[i].1 * 0.5;
            let below = ((v - mean) * 3.0).clamp(0.0, 1.0);
            let texture = fbm(u * aspect * 14.0, v * 14.0, 3, scene.salt ^ (i as u64 + 99)) - 0.5;
            let pixels_below_crest = (v - layer[px]) * 512.0;
            let rim = (-pixels_below_crest / 2.5).exp() * 0.35 * (1.0 - t * 0.6);
            return rock
                .scale(1.0 - below * 0.35 + texture * 0.18)
                .add(scene.sun.scale(rim * 0.5));
        }
    }
    sky(scene, u, v, aspect, horizon)
}

fn sky(scene: &Scene, u: f64, v: f64, aspect: f64, horizon: f64) -> Rgb {
    // The gradient reaches the horizon colour where the far ridges stand.
    let t = (v / (horizon * 0.6)).clamp(0.0, 1.0);
    let mut color = scene.sky_top.lerp(scene.sky_horizon, t.powf(1.6));
    // Sun or moon: a disc and an exponential glow.
    let (sx, sy) = scene.sun_pos;
    let (dx, dy) = ((u - sx) * aspect, v - sy);
    let d = (dx * dx + dy * dy).sqrt();
    let glow_strength = if scene.time == Time::Night { 0.25 } else { 0.6 };
    color = color.add(scene.sun.scale(glow_strength * (-d * 7.0).exp()));
    if d < scene.sun_radius {
        let edge = ((scene.sun_radius - d) / 0.004).clamp(0.0, 1.0);
        color = color.lerp(scene.sun.scale(1.1), edge);
    }
    if scene.time == Time::Night {
        let cell = 0.004;
        let (cx, cy) = (
            (u * aspect / cell).floor() as i64,
            (v / cell).floor() as i64,
        );
        let r = hash2(cx, cy, scene.salt ^ 0x57a2);
        if r > 0.996 {
            let twinkle = (r - 0.996) / 0.004;
            color = color.add(Rgb(0.9, 0.9, 1.0).scale(twinkle * (1.0 - t)));
        }
    }
    // Clouds: domain-warped fbm, lit by the sun's colour.
    let warp = fbm(u * aspect * 2.0, v * 4.0, 4, scene.salt ^ 0xc10d);
    let n = fbm(
        u * aspect * 3.0 + warp * 1.5,
        v * 9.0 + warp,
        5,
        scene.salt ^ 0xc1d,
    );
    let density = ((n - (1.0 - scene.clouds * 0.6)) * 3.0).clamp(0.0, 1.0) * (1.0 - t * 0.6);
    let cloud_color = scene
        .sky_horizon
        .lerp(scene.sun, 0.5)
        .scale(if scene.time == Time::Night { 0.35 } else { 1.0 });
    color.lerp(cloud_color, density * 0.8)
}

fn main() {
    let mut seed: u64 = 42;
    let (mut width, mut height) = (768usize, 512usize);
    let mut words = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        // `--seed N` and `--seed=N` are both accepted.
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        if !matches!(flag.as_str(), "--seed" | "--width" | "--height") {
            words.push(arg);
            continue;
        }
        let value = inline.or_else(|| args.next()).unwrap_or_default();
        let number = value.trim().parse::<u64>();
        match (flag.as_str(), number) {
            ("--seed", Ok(n)) => seed = n,
            // A non-numeric seed is hashed: front-ends pass words too.
            ("--seed", Err(_)) => seed = fnv1a(value.as_bytes()),
            ("--width", Ok(n)) => width = n.clamp(16, 2048) as usize,
            ("--height", Ok(n)) => height = n.clamp(16, 2048) as usize,
            _ => {
                eprintln!("artgen: {flag} needs a number, got {value:?}");
                std::process::exit(2)
            }
        }
    }
    let prompt = if words.is_empty() {
        "a quiet valley at sunset".to_string()
    } else {
        words.join(" ")
    };
    let scene = plan(&prompt, seed);
    let rgb = render(&scene, width, height);
    let png = png::encode_rgb(
        width as u32,
        height as u32,
        &rgb,
        &[
            ("Software", "detwasm artgen"),
            ("Description", &prompt),
            ("Comment", &format!("seed={seed}")),
        ],
    );
    let out = if std::path::Path::new("/outputs").is_dir() {
        "/outputs/image.png"
    } else {
        "image.png"
    };
    std::fs::write(out, &png).expect("write the image");
    println!(
        "artgen: {width}x{height} PNG ({} bytes) for {prompt:?}, seed {seed}: {:?}{}, {} ridges, hue {:.2}",
        png.len(),
        scene.time,
        if scene.water { ", water" } else { "" },
        scene.layers,
        scene.hue
    );
}
