//! digits: handwritten digit recognition with a small neural network, as a WASI job.
//!
//! The network (64-32-10, ReLU, softmax) was trained offline by `train.py` on
//! scikit-learn's 8x8 digits; its weights (`weights.bin`) are compiled into the module.
//!
//! Usage: `digits [DIR]` (default `/inputs`). Every `.pgm` (plain P2 or binary P5, any
//! size: box-averaged down to 8x8) and `.csv` (64 intensities, 0..16) in the tree is
//! classified. With no input images, the ten bundled samples are classified instead, so
//! the module has a useful default run. Results: stdout and `/outputs/predictions.json`.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

const WEIGHTS: &[u8] = include_bytes!("../weights.bin");
const SIDE: usize = 8;
const INPUTS: usize = SIDE * SIDE;

/// The bundled samples, used when no input image is given.
const SAMPLES: [(&str, &str); 10] = [
    ("digit-0.pgm", include_str!("../samples/digit-0.pgm")),
    ("digit-1.pgm", include_str!("../samples/digit-1.pgm")),
    ("digit-2.pgm", include_str!("../samples/digit-2.pgm")),
    ("digit-3.pgm", include_str!("../samples/digit-3.pgm")),
    ("digit-4.pgm", include_str!("../samples/digit-4.pgm")),
    ("digit-5.pgm", include_str!("../samples/digit-5.pgm")),
    ("digit-6.pgm", include_str!("../samples/digit-6.pgm")),
    ("digit-7.pgm", include_str!("../samples/digit-7.pgm")),
    ("digit-8.pgm", include_str!("../samples/digit-8.pgm")),
    ("digit-9.pgm", include_str!("../samples/digit-9.pgm")),
];

struct Mlp {
    hidden: usize,
    outputs: usize,
    w1: Vec<f32>,
    b1: Vec<f32>,
    w2: Vec<f32>,
    b2: Vec<f32>,
}

impl Mlp {
    fn load(bytes: &[u8]) -> Mlp {
        assert_eq!(&bytes[..4], b"DGW1", "weights.bin: bad magic");
        let u32_at = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().unwrap()) as usize;
        let (inputs, hidden, outputs) = (u32_at(4), u32_at(8), u32_at(12));
        assert_eq!(inputs, INPUTS, "weights.bin: expects {INPUTS} inputs");
        let mut floats = bytes[16..]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()));
        let mut take = |n: usize| -> Vec<f32> { floats.by_ref().take(n).collect() };
        let mlp = Mlp {
            hidden,
            outputs,
            w1: take(inputs * hidden),
            b1: take(hidden),
            w2: take(hidden * outputs),
            b2: take(outputs),
        };
        assert_eq!(mlp.b2.len(), outputs, "weights.bin: truncated");
        mlp
    }

    /// Class probabilities for 64 inputs in 0..1.
    fn predict(&self, x: &[f32; INPUTS]) -> Vec<f32> {
        let mut h = self.b1.clone();
        for (i, xi) in x.iter().enumerate() {
            let row = &self.w1[i * self.hidden..(i + 1) * self.hidden];
            for (hj, w) in h.iter_mut().zip(row) {
                *hj += xi * w;
            }
        }
        for hj in h.iter_mut() {
            *hj = hj.max(0.0);
        }
        let mut z = self.b2.clone();
        for (j, hj) in h.iter().enumerate() {
            let row = &self.w2[j * self.outputs..(j + 1) * self.outputs];
            for (zk, w) in z.iter_mut().zip(row) {
                *zk += hj * w;
            }
        }
        let max = z.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let exp: Vec<f32> = z.iter().map(|v| (v - max).exp()).collect();
        let sum: f32 = exp.iter().sum();
        exp.into_iter().map(|e| e / sum).collect()
    }
}

/// A grey image, 0 = black.
struct Grey {
    width: usize,
    height: usize,
    maxval: f32,
    pixels: Vec<f32>,
}

fn parse_pgm(bytes: &[u8]) -> Result<Grey, String> {
    // Header tokens, skipping `#` comments.
    let mut pos = 0;
    let mut header = Vec::new();
    while header.len() < 4 {
        while pos < bytes.len() && bytes[pos].is_ascii_whitespace() {
            pos += 1;
        }
        if pos < bytes.len() && bytes[pos] == b'#' {
            while pos < bytes.len() && bytes[pos] != b'\n' {
                pos += 1;
            }
            continue;
        }
        let start = pos;
        while pos < bytes.len() && !bytes[pos].is_ascii_whitespace() {
            pos += 1;
        }
        if start == pos {
            return Err("truncated PGM header".into());
        }
        header.push(String::from_utf8_lossy(&bytes[start..pos]).into_owned());
    }
    let num = |s: &str| {
        s.parse::<usize>()
            .map_err(|_| format!("bad PGM header value {s:?}"))
    };
    let (width, height, maxval) = (num(&header[1])?, num(&header[2])?, num(&header[3])?);
    if width == 0 || height == 0 || maxval == 0 || maxval > 65535 {
        return Err("bad PGM dimensions".into());
    }
    let count = width * height;
    let pixels: Vec<f32> = match header[0].as_str() {
        "P2" => {
            let text = String::from_utf8_lossy(&bytes[pos..]);
            let values: Result<Vec<f32>, _> = text
                .split_whitespace()
                .take(count)
                .map(|v| v.parse::<u32>().map(|v| v as f32))
                .collect();
            values.map_err(|_| "bad PGM pixel value".to_string())?
        }
        "P5" => {
            let data = &bytes[pos + 1..];
            if maxval < 256 {
                data.iter().take(count).map(|&b| b as f32).collect()
            } else {
                data.chunks_exact(2)
                    .take(count)
                    .map(|c| u16::from_be_bytes([c[0], c[1]]) as f32)
                    .collect()
            }
        }
        other => return Err(format!("not a greymap PGM (magic {other:?})")),
    };
    if pixels.len() != count {
        return Err(format!("PGM has {} of {count} pixels", pixels.len()));
    }
    Ok(Grey {
        width,
        height,
        maxval: maxval as f32,
        pixels,
    })
}

/// Down-samples to 8x8 ink intensities in 0..1 (the training data's convention: 1 is
/// full ink). A light background (mean above half) means dark ink, so it is inverted.
fn to_features(img: &Grey) -> [f32; INPUTS] {
    let mean = img.pixels.iter().sum::<f32>() / img.pixels.len() as f32;
    let invert = mean > img.maxval / 2.0;
    let mut out = [0f32; INPUTS];
    for (cell, value) in out.iter_mut().enumerate() {
        let (cy, cx) = (cell / SIDE, cell % SIDE);
        let (y0, y1) = (
            cy * img.height / SIDE,
            ((cy + 1) * img.height).div_ceil(SIDE),
        );
        let (x0, x1) = (cx * img.width / SIDE, ((cx + 1) * img.width).div_ceil(SIDE));
        let mut sum = 0.0;
        let mut n = 0.0;
        for y in y0..y1.max(y0 + 1).min(img.height) {
            for x in x0..x1.max(x0 + 1).min(img.width) {
                sum += img.pixels[y * img.width + x];
                n += 1.0;
            }
        }
        let v = sum / n / img.maxval;
        *value = if invert { 1.0 - v } else { v };
    }
    out
}

fn parse_csv(text: &str) -> Result<[f32; INPUTS], String> {
    let values: Result<Vec<f32>, _> = text
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<f32>())
        .collect();
    let values = values.map_err(|_| "CSV holds a value that is not a number".to_string())?;
    if values.len() != INPUTS {
        return Err(format!(
            "CSV holds {} values, expected {INPUTS} (8x8, 0..16)",
            values.len()
        ));
    }
    let mut out = [0f32; INPUTS];
    for (o, v) in out.iter_mut().zip(values) {
        *o = (v / 16.0).clamp(0.0, 1.0);
    }
    Ok(out)
}

fn collect(dir: &Path, rel: &str, found: &mut Vec<(String, Vec<u8>)>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let rel_path = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        let Ok(ft) = entry.file_type() else { continue };
        if ft.is_dir() {
            collect(&entry.path(), &rel_path, found);
        } else {
            let lower = name.to_ascii_lowercase();
            if lower.ends_with(".pgm") || lower.ends_with(".csv") {
                if let Ok(bytes) = fs::read(entry.path()) {
                    found.push((rel_path, bytes));
                }
            }
        }
    }
}

fn main() {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "/inputs".into());
    let mlp = Mlp::load(WEIGHTS);
    let mut images = Vec::new();
    collect(Path::new(&dir), "", &mut images);
    let source = if images.is_empty() {
        images = SAMPLES
            .iter()
            .map(|(n, t)| (format!("samples/{n}"), t.as_bytes().to_vec()))
            .collect();
        "bundled samples"
    } else {
        "inputs"
    };
    let mut json = format!(
        "{{\n  \"model\": \"mlp-64-{}-{}\",\n  \"source\": \"{source}\",\n  \"predictions\": [",
        mlp.hidden, mlp.outputs
    );
    let mut failures = 0;
    for (i, (path, bytes)) in images.iter().enumerate() {
        let features = if path.to_ascii_lowercase().ends_with(".csv") {
            parse_csv(&String::from_utf8_lossy(bytes))
        } else {
            parse_pgm(bytes).map(|g| to_features(&g))
        };
        let sep = if i == 0 { "" } else { "," };
        match features {
            Ok(x) => {
                let p = mlp.predict(&x);
                let (digit, confidence) =
                    p.iter().enumerate().fold((0, f32::MIN), |best, (d, &v)| {
                        if v > best.1 {
                            (d, v)
                        } else {
                            best
                        }
                    });
                println!("{path}: {digit} ({:.1}%)", confidence * 100.0);
                let probs: Vec<String> = p.iter().map(|v| format!("{v:.4}")).collect();
                let _ = write!(
                    json,
                    "{sep}\n    {{\"file\": \"{path}\", \"digit\": {digit}, \"confidence\": {confidence:.4}, \"probabilities\": [{}]}}",
                    probs.join(", ")
                );
            }
            Err(e) => {
                failures += 1;
                eprintln!("{path}: {e}");
                let _ = write!(
                    json,
                    "{sep}\n    {{\"file\": \"{path}\", \"error\": \"{}\"}}",
                    e.replace('"', "'")
                );
            }
        }
    }
    json.push_str("\n  ]\n}\n");
    if Path::new("/outputs").is_dir() {
        fs::write("/outputs/predictions.json", &json).expect("write /outputs/predictions.json");
    }
    if failures > 0 && failures == images.len() {
        std::process::exit(1);
    }
}
