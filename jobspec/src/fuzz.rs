//! Fuzz targets of the spec pipeline: arbitrary bytes in, an error or a result out, never
//! a panic, never unbounded memory or time. `fuzz/` (a cargo-fuzz crate) calls them, and
//! the tests below run a few thousand deterministic inputs through each on every
//! `cargo test`: random bytes and mutations of the real example templates.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use super::{gotemplate, parse_rendered, resolve, InputPolicy};

/// Splits fuzz data into a template and its inputs: the template is everything before
/// the first NUL byte; after it, NUL-separated `KEY=VALUE` inputs.
fn split_template_input(data: &[u8]) -> (String, BTreeMap<String, String>) {
    let mut parts = data.split(|&b| b == 0);
    let text = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let inputs = parts
        .filter_map(|kv| {
            let kv = String::from_utf8_lossy(kv);
            let (k, v) = kv.split_once('=')?;
            Some((k.to_string(), v.to_string()))
        })
        .collect();
    (text, inputs)
}

/// Renders arbitrary bytes as a module template (see [`split_template_input`]).
pub fn fuzz_template(data: &[u8]) {
    let (text, inputs) = split_template_input(data);
    if let Ok(out) = gotemplate::render_module_template("fuzz", &text, &inputs) {
        assert!(out.len() <= gotemplate::MAX_OUTPUT, "output over the limit");
    }
}

/// An empty module folder (with a `data` subfolder) that [`fuzz_spec`] resolves specs in.
fn scratch_module() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("detwasm-fuzz-spec-{}", std::process::id()));
        let module = dir.join("module");
        std::fs::create_dir_all(module.join("data")).expect("creating the fuzz scratch folder");
        module
            .canonicalize()
            .expect("resolving the fuzz scratch folder")
    })
}

/// Parses arbitrary bytes as a rendered spec; when it parses, resolves its inputs under
/// the default policy in an empty module folder and looks for its entry module there,
/// as [`super::ModuleDir::job`] does. Every input that is accepted must lie inside that
/// folder.
pub fn fuzz_spec(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let Ok(spec) = parse_rendered(&text) else {
        return;
    };
    let dir = scratch_module();
    if let Ok(mounts) = InputPolicy::module_only().resolve_inputs(dir, dir, &spec) {
        for (host, _) in mounts {
            assert!(
                host.starts_with(dir),
                "{} escaped {}",
                host.display(),
                dir.display()
            );
        }
    }
    let _ = resolve::entry_module(dir, &spec.entry_module.cid, &spec.entry_module.path);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// splitmix64: a fixed seed gives the same inputs on every run.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    fn mutate(rng: &mut Rng, seed: &[u8], dictionary: &[&str]) -> Vec<u8> {
        let mut data = seed.to_vec();
        for _ in 0..1 + rng.below(6) {
            let at = rng.below(data.len() + 1);
            match rng.below(5) {
                0 if !data.is_empty() => {
                    let i = rng.below(data.len());
                    data[i] ^= 1 << rng.below(8);
                }
                1 => {
                    let word = dictionary[rng.below(dictionary.len())].as_bytes();
                    let times = 1 + rng.below(3) * rng.below(60);
                    for _ in 0..times {
                        data.splice(at..at, word.iter().copied());
                    }
                }
                2 if !data.is_empty() => {
                    let end = (at + rng.below(40)).min(data.len());
                    data.drain(at.min(end)..end);
                }
                3 if !data.is_empty() => {
                    let start = rng.below(data.len());
                    let end = (start + rng.below(64)).min(data.len());
                    let chunk = data[start..end].to_vec();
                    data.splice(at..at, chunk);
                }
                _ => data.insert(at, rng.next() as u8),
            }
        }
        data
    }

    fn example_templates() -> Vec<(PathBuf, String)> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut out = Vec::new();
        for dir in ["modules", "tests"] {
            let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
                continue;
            };
            let mut paths: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path().join(super::super::TEMPLATE_FILE)))
                .filter(|p| p.is_file())
                .collect();
            paths.sort();
            for p in paths {
                let text = std::fs::read_to_string(&p).unwrap();
                out.push((p, text));
            }
        }
        assert!(
            out.len() >= 4,
            "the example templates are the seeds: {out:?}"
        );
        out
    }

    const TEMPLATE_WORDS: &[&str] = &[
        "{{",
        "}}",
        "{{- ",
        " -}}",
        "{{if .A}}",
        "{{with .}}",
        "{{else}}",
        "{{else if 0}}",
        "{{end}}",
        "(",
        ")",
        "|",
        "printf",
        "subst",
        "print",
        "len",
        "and",
        "or",
        "not",
        "eq",
        "ne",
        "\"%s\"",
        "\"%999999999d\"",
        "\"%9999999d\"",
        "\"%*d\"",
        "\"%.*s\"",
        "\"%1000000s\"",
        " 9999999 ",
        " -1 ",
        " .A ",
        " . ",
        "`raw`",
        "\"\\u00e9\"",
        "/*",
        "*/",
        "\0A=x",
        "\0A=\"",
        "$x",
        "range",
        "nil",
        "0x",
        "1e999",
        "\u{1F404}",
    ];

    #[test]
    fn fuzz_template_short_run() {
        let mut rng = Rng(0x5eed_0001);
        let seeds: Vec<Vec<u8>> = example_templates()
            .into_iter()
            .map(|(_, t)| {
                let mut seed = t.into_bytes();
                seed.extend_from_slice(b"\0Message=moo\0Input=data\0A=x");
                seed
            })
            .collect();
        for i in 0..3000 {
            let data = if i % 4 == 0 {
                (0..rng.below(200)).map(|_| rng.next() as u8).collect()
            } else {
                let seed = &seeds[rng.below(seeds.len())];
                mutate(&mut rng, seed, TEMPLATE_WORDS)
            };
            fuzz_template(&data);
        }
    }

    const SPEC_WORDS: &[&str] = &[
        "[",
        "]",
        "{",
        "}",
        ",",
        ":",
        "\"",
        "null",
        "1e999",
        "1e300",
        "-1",
        "18446744073709551616",
        "\"Timeout\":",
        "\"Inputs\":[{\"SourcePath\":\"/etc\"}],",
        "\"SourcePath\":\"../\"",
        "\"SourcePath\":\"data\"",
        "\"Memory\":\"9999999999T\"",
        "\"Path\":\"../x.wasm\"",
        "\"CID\":\"Qm\"",
        "\"Engine\":\"Wasm\"",
        "[[[[[[[[[[[[[[[[",
        "\\u0000",
    ];

    #[test]
    fn fuzz_spec_short_run() {
        let mut rng = Rng(0x5eed_0002);
        // The rendered examples (the shapes the parser sees in practice), plus one with
        // inputs.
        let mut seeds: Vec<Vec<u8>> = example_templates()
            .into_iter()
            .filter_map(|(p, t)| {
                gotemplate::render_module_template(&p.display().to_string(), &t, &BTreeMap::new())
                    .ok()
            })
            .map(String::into_bytes)
            .collect();
        seeds.push(
            br#"{"job":{"Spec":{"Engine":"Wasm","Wasm":{"EntryModule":{"Path":"m.wasm"}},"Inputs":[{"SourcePath":"data","Path":"/in"}],"Timeout":5,"Resources":{"Memory":"1Gb"}}}}"#
                .to_vec(),
        );
        for i in 0..3000 {
            let data = if i % 4 == 0 {
                (0..rng.below(200)).map(|_| rng.next() as u8).collect()
            } else {
                let seed = &seeds[rng.below(seeds.len())];
                mutate(&mut rng, seed, SPEC_WORDS)
            };
            fuzz_spec(&data);
        }
    }
}
