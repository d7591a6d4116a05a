//! `detwasm module new` and `detwasm module pack`: an author's path from nothing to a
//! module that can be published.
//!
//! What it is for: laying out a module that builds reproducibly for `wasm32-wasip1`, runs
//! under detwasm, and passes `detwasm module check` once built — source, a `build.sh`
//! that builds it and writes the module's CID into the template, a
//! `lilypad_module.json.tmpl` naming the entry module by `Path` and by `CID`, a README
//! and a `.gitignore`. What it is not: a build system; `build.sh` is a plain script the
//! author owns and edits.
//!
//! Reproducible builds, and why each setting: host paths that could reach the binary are
//! remapped (the folder, cargo's home, the toolchain's sysroot; for C the folder), debug
//! info and symbols are left out, `SOURCE_DATE_EPOCH` is fixed and flags from the
//! environment are dropped, so the same source gives the same bytes — and so the same
//! CID — in any folder, on any machine with the same toolchain. Rejected: building in a
//! container (no container runtime can be relied on where detwasm runs).

use std::path::{Path, PathBuf};

/// The language of a new module.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    /// Rust, built with cargo for `wasm32-wasip1`.
    Rust,
    /// C, built with clang for `wasm32-wasi` against wasi-libc.
    C,
}

impl std::str::FromStr for Lang {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "rust" => Ok(Lang::Rust),
            "c" => Ok(Lang::C),
            _ => Err(format!("unknown language `{s}` (expected rust or c)")),
        }
    }
}

/// Why a module folder could not be laid out.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    #[error("module name `{0}` must be 1 to 64 lower-case letters, digits, `-` or `_`, starting with a letter")]
    BadName(String),
    #[error("{} already exists and is not empty: choose another folder", .0.display())]
    Exists(PathBuf),
    #[error("{}: {cause}", path.display())]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
}

/// Checks a module name: it becomes a crate name, a file name and a template value.
pub fn check_name(name: &str) -> Result<(), ScaffoldError> {
    let ok = (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(ScaffoldError::BadName(name.to_string()))
    }
}

/// Lays out module `name` in `dir` (created; it must not exist or be empty). Returns the
/// files written, relative to `dir`. The template's CID is empty until `build.sh` runs.
pub fn new_module(dir: &Path, name: &str, lang: Lang) -> Result<Vec<PathBuf>, ScaffoldError> {
    check_name(name)?;
    if dir.exists() {
        let empty = std::fs::read_dir(dir)
            .map(|mut d| d.next().is_none())
            .unwrap_or(false);
        if !empty {
            return Err(ScaffoldError::Exists(dir.to_path_buf()));
        }
    }
    let wasm = format!("{name}.wasm");
    let mut files: Vec<(&str, String)> = vec![
        ("lilypad_module.json.tmpl", template(&wasm)),
        ("README.md", readme(name, lang)),
        (".gitignore", format!("/target\n/{wasm}.tmp\n")),
    ];
    match lang {
        Lang::Rust => {
            files.push(("Cargo.toml", cargo_toml(name)));
            files.push(("src/main.rs", RUST_MAIN.to_string()));
            files.push(("build.sh", build_rust(name)));
        }
        Lang::C => {
            files.push(("main.c", C_MAIN.to_string()));
            files.push(("build.sh", build_c(name)));
        }
    }
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |cause| ScaffoldError::Io { path, cause }
    };
    let mut written = Vec::new();
    for (rel, text) in files {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        std::fs::write(&path, text).map_err(io(&path))?;
        if rel == "build.sh" {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                .map_err(io(&path))?;
        }
        written.push(PathBuf::from(rel));
    }
    Ok(written)
}

fn template(wasm: &str) -> String {
    format!(
        r#"{{
  "machine": {{"gpu": 0, "cpu": 1000, "ram": 100}},
  "job": {{
    "APIVersion": "V1beta1",
    "Spec": {{
      "Deal": {{"Concurrency": 1}},
      "Engine": "Wasm",
      "Wasm": {{
        "EntryModule": {{"CID": "", "Path": "{wasm}"}},
        "EntryPoint": "_start",
        "Parameters": [{{{{if .Message}}}}{{{{.Message}}}}{{{{else}}}}"hello"{{{{end}}}}],
        "EnvironmentVariables": {{}}
      }},
      "Inputs": [{{{{if .Input}}}}{{"StorageSource": "localDirectory", "SourcePath": {{{{.Input}}}}, "Path": "/inputs"}}{{{{end}}}}],
      "Network": {{"Type": "None"}},
      "Outputs": [{{"Name": "outputs", "Path": "/outputs"}}],
      "PublisherSpec": {{"Type": "IPFS"}},
      "Resources": {{"GPU": "", "Memory": "64Mb"}},
      "Timeout": 600,
      "Verifier": "Noop"
    }}
  }}
}}
"#
    )
}

fn cargo_toml(name: &str) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2021"
publish = false

[dependencies]

# Small, reproducible wasm (built by build.sh).
[profile.release]
opt-level = "s"
lto = true
codegen-units = 1
panic = "abort"
debug = false
strip = true

# A workspace of its own, so that a parent folder's workspace never takes it in.
[workspace]
"#
    )
}

const RUST_MAIN: &str = r#"//! A detwasm module: greets with its first argument (the template's `Message`), lists
//! the files under /inputs when there are any, and writes the same text to stdout and to
//! /outputs/result.txt. Replace this with your own work; keep it deterministic (detwasm
//! makes clocks, randomness and directory order functions of the job, and
//! `detwasm fuzz` tells you what your output depends on).

use std::fs;

fn main() {
    let message = std::env::args().nth(1).unwrap_or_else(|| "hello".to_string());
    let mut report = format!("{message}\n");
    if let Ok(entries) = fs::read_dir("/inputs") {
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for name in names {
            report.push_str(&format!("input: {name}\n"));
        }
    }
    print!("{report}");
    fs::write("/outputs/result.txt", &report).expect("writing /outputs/result.txt");
}
"#;

const C_MAIN: &str = r#"/* A detwasm module: greets with its first argument (the template's `Message`), lists
 * the files under /inputs when there are any, and writes the same text to stdout and to
 * /outputs/result.txt. Replace this with your own work; keep it deterministic. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int by_name(const struct dirent **a, const struct dirent **b) {
    return strcmp((*a)->d_name, (*b)->d_name);
}

int main(int argc, char **argv) {
    const char *message = argc > 1 ? argv[1] : "hello";
    FILE *out = fopen("/outputs/result.txt", "w");
    if (!out) {
        perror("/outputs/result.txt");
        return 1;
    }
    printf("%s\n", message);
    fprintf(out, "%s\n", message);
    struct dirent **names;
    int n = scandir("/inputs", &names, NULL, by_name);
    for (int i = 0; i < n; i++) {
        if (names[i]->d_name[0] != '.') {
            printf("input: %s\n", names[i]->d_name);
            fprintf(out, "input: %s\n", names[i]->d_name);
        }
        free(names[i]);
    }
    if (n >= 0)
        free(names);
    return fclose(out) == 0 ? 0 : 1;
}
"#;

/// The tail of both build scripts: the CID of the built module (by `detwasm hash`, as
/// `ipfs add` computes it) written into the template.
const RECORD_CID: &str = r#"
cid=$("$detwasm" hash "$wasm")
sed -i -E "s/(\"EntryModule\": \{[^}]*\"CID\": \")[^\"]*/\1$cid/" lilypad_module.json.tmpl
echo "$wasm: $cid"
"#;

fn build_rust(name: &str) -> String {
    format!(
        r#"#!/usr/bin/env bash
# Builds {name}.wasm for wasm32-wasip1, reproducibly (the same bytes in any folder, on
# any machine with the same Rust toolchain), and writes its CID into the template.
# Needs: rustup target add wasm32-wasip1; detwasm on PATH (or DETWASM=/path/to/detwasm).
set -euo pipefail
cd "$(dirname "$0")"
detwasm=${{DETWASM:-detwasm}}
command -v "$detwasm" >/dev/null || {{
  echo "build.sh: $detwasm not found: put detwasm on PATH or set DETWASM=/path/to/detwasm" >&2
  exit 1
}}
here=$(pwd -P)
wasm={name}.wasm
cargo_home=$(cd "${{CARGO_HOME:-$HOME/.cargo}}" && pwd -P)
sysroot=$(rustc --print sysroot)
unset RUSTFLAGS CARGO_BUILD_RUSTFLAGS RUSTC_WRAPPER CARGO_BUILD_RUSTC_WRAPPER CARGO_TARGET_WASM32_WASIP1_RUSTFLAGS
export SOURCE_DATE_EPOCH=0 CARGO_INCREMENTAL=0
flags=("--remap-path-prefix=$here=/module" "--remap-path-prefix=$cargo_home=/cargo"
  "--remap-path-prefix=$sysroot=/rustc-sysroot" "-Cdebuginfo=0" "-Cstrip=symbols")
CARGO_ENCODED_RUSTFLAGS=$(IFS=$'\x1f'; echo "${{flags[*]}}")
export CARGO_ENCODED_RUSTFLAGS
cargo build --quiet --release --target wasm32-wasip1
cp target/wasm32-wasip1/release/{name}.wasm "$wasm"
unset CARGO_ENCODED_RUSTFLAGS SOURCE_DATE_EPOCH
{RECORD_CID}"#
    )
}

fn build_c(name: &str) -> String {
    format!(
        r#"#!/usr/bin/env bash
# Builds {name}.wasm for wasm32-wasi with clang and wasi-libc, reproducibly (the same
# bytes in any folder with the same clang and wasi-libc), and writes its CID into the
# template. Needs: clang, lld, wasi-libc (Debian: apt-get install clang lld wasi-libc
# libclang-rt-14-dev-wasm32); detwasm on PATH (or DETWASM=/path/to/detwasm).
set -euo pipefail
cd "$(dirname "$0")"
detwasm=${{DETWASM:-detwasm}}
command -v "$detwasm" >/dev/null || {{
  echo "build.sh: $detwasm not found: put detwasm on PATH or set DETWASM=/path/to/detwasm" >&2
  exit 1
}}
here=$(pwd -P)
wasm={name}.wasm
export SOURCE_DATE_EPOCH=0
"${{CC:-clang}}" --target=wasm32-wasi -O2 -g0 "-ffile-prefix-map=$here=/module" \
  -Wl,--strip-all -o "$wasm" main.c
{RECORD_CID}"#
    )
}

fn readme(name: &str, lang: Lang) -> String {
    let source = match lang {
        Lang::Rust => "`src/main.rs` (Rust)",
        Lang::C => "`main.c` (C, with wasi-libc)",
    };
    format!(
        r#"# {name}

A detwasm module: {source}, built for WebAssembly (WASI preview 1) by `./build.sh`.

```sh
./build.sh                                   # builds {name}.wasm, writes its CID into the template
detwasm run . -i Message=hi                  # runs the module as its template describes
mkdir -p data && echo x > data/a.txt
detwasm run . -i Message=hi -i Input=data    # with a folder of the module's at /inputs
detwasm fuzz . -i Message=hi --vary seed,epoch,env,args,inputs   # is it deterministic? what does it read?
detwasm module check . -i Message=hi         # everything a publisher checks
detwasm module pack .                        # {name}.car: the wasm as a CAR, to pin on IPFS
```

`lilypad_module.json.tmpl` is the module's spec (a Go template, as Lilypad renders it): it
names the entry module by path and by CID, so a runner can fetch it by CID and check what
it runs. `build.sh` keeps the CID up to date; commit the template with the wasm. Its
`Inputs` mount the folder `-i Input=DIR` names at `/inputs` (none without it): a spec may
mount folders inside the module folder only, unless the runner allows more
(`--allow-input DIR`). Its `Timeout` gives the job's fuel (1e9 instructions a second);
to state the fuel itself, add `"Annotations": ["detwasm.fuel=N"]` beside it.
"#
    )
}

/// A module's entry wasm written as a CAR.
#[derive(Clone, Debug)]
pub struct Packed {
    /// The CID of the wasm file, as `ipfs add` prints it under the profile used.
    pub cid: String,
    /// The CAR file written.
    pub car: PathBuf,
    /// The wasm file packed.
    pub wasm: PathBuf,
    /// The CID the template names, when it names one (it should equal `cid`).
    pub template_cid: Option<String>,
}

/// Why a module could not be packed.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error(transparent)]
    Spec(#[from] detwasm_jobspec::SpecError),
    #[error("{}: the template names no entry module (EntryModule needs a Path or a CID)", .0.display())]
    NoPath(PathBuf),
    #[error("{}: {cause}", path.display())]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("hashing {}: {cause}", path.display())]
    Hash { path: PathBuf, cause: String },
    #[error("{}: the CAR would be written in {}, outside the module folder {} (a folder on the entry module's Path is a link leading out of it); name a file whose folder is inside the module folder", car.display(), leads_to.display(), module_dir.display())]
    Outside {
        car: PathBuf,
        leads_to: PathBuf,
        module_dir: PathBuf,
    },
}

/// Writes the module's entry wasm (the template's `EntryModule.Path`, rendered with
/// `inputs`) as a CARv1 next to it (`NAME.car`, as `ipfs dag export` writes it), so the
/// CAR can be imported into any IPFS node (`ipfs dag import`) and the module fetched by
/// its CID. The CAR is written atomically.
pub fn pack(
    module: &detwasm_jobspec::ModuleDir,
    inputs: &std::collections::BTreeMap<String, String>,
    profile: detwasm_job::Profile,
) -> Result<Packed, PackError> {
    let (_, spec) = module.spec(inputs)?;
    let rel = spec.entry_module.path.trim();
    let named = spec.entry_module.cid.trim();
    // By Path when the template names one (the CID may be stale: the author is told);
    // else by the CID, among the folder's .wasm files.
    let entry = if rel.is_empty() {
        if named.is_empty() {
            return Err(PackError::NoPath(module.template_path.clone()));
        }
        detwasm_jobspec::resolve::entry_module(&module.dir, named, "")?
    } else {
        detwasm_jobspec::resolve::entry_module(&module.dir, "", rel)?
    };
    let mut car = Vec::new();
    let hashed = detwasm_hasher::Hasher::new(detwasm_hasher::Options::profile(profile))
        .car(&mut car)
        .hash_tree(&detwasm_hasher::Node::bytes(entry.bytes.clone()))
        .map_err(|e| PackError::Hash {
            path: entry.file.clone(),
            cause: e.to_string(),
        })?;
    let car_path = entry.file.with_extension("car");
    // Written only into the module folder: the entry file may be a link leading anywhere
    // (it is only read), but a folder on its Path that leads out of the module folder
    // would have the CAR written (or a file of that name replaced) wherever it leads.
    // Found by review: `Path: "sub/id_rsa"`, `sub` a link to another folder, wrote a
    // readable `id_rsa.car` there. Rejected: checking `Path` for `..` alone (it was).
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |cause| PackError::Io { path, cause }
    };
    let module_dir = module.dir.canonicalize().map_err(io(&module.dir))?;
    let folder = car_path.parent().unwrap_or(Path::new("."));
    let leads_to = folder.canonicalize().map_err(io(folder))?;
    if !leads_to.starts_with(&module_dir) {
        return Err(PackError::Outside {
            car: car_path,
            leads_to,
            module_dir,
        });
    }
    // As readable as the module it holds (readable by all when the wasm is, as the
    // template and the wasm beside it are: the CAR is what gets published; a temporary
    // file's 0600 was kept before). Found by review: a 0600 file packed as 0644.
    let mode = {
        use std::os::unix::fs::PermissionsExt;
        match std::fs::metadata(&entry.file) {
            Ok(m) if m.permissions().mode() & 0o004 != 0 => 0o644,
            _ => 0o600,
        }
    };
    detwasm_runtime::deliver::write_file_atomically(&car_path, &car)
        .and_then(|()| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&car_path, std::fs::Permissions::from_mode(mode))
        })
        .map_err(|cause| PackError::Io {
            path: car_path.clone(),
            cause,
        })?;
    Ok(Packed {
        cid: hashed.root.to_string(),
        car: car_path,
        wasm: entry.file,
        template_cid: (!named.is_empty()).then(|| named.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_folders_never_overwritten() {
        assert!(check_name("my-module_2").is_ok());
        for bad in ["", "My", "2nd", "a b", "a/b", "../x", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("keep"), "x").unwrap();
        assert!(matches!(
            new_module(t.path(), "m", Lang::Rust),
            Err(ScaffoldError::Exists(_))
        ));
        assert_eq!(std::fs::read_to_string(t.path().join("keep")).unwrap(), "x");
    }

    #[test]
    fn the_template_renders_to_a_spec_detwasm_honours() {
        let t = tempfile::tempdir().unwrap();
        let files = new_module(&t.path().join("m"), "m", Lang::C).unwrap();
        assert!(files.contains(&PathBuf::from("main.c")));
        let dir =
            detwasm_jobspec::ModuleDir::open_in(t.path().join("m").to_str().unwrap(), &[]).unwrap();
        let inputs = detwasm_jobspec::parse_inputs(&["Message=hi"]).unwrap();
        let (_, spec) = dir.spec(&inputs).unwrap();
        assert_eq!(spec.parameters, ["hi"]);
        assert_eq!(spec.entry_module.path, "m.wasm");
        assert!(spec.inputs.is_empty());
        // The template's example of an input: a folder mounted at /inputs when named.
        let inputs = detwasm_jobspec::parse_inputs(&["Message=hi", "Input=data"]).unwrap();
        let (_, spec) = dir.spec(&inputs).unwrap();
        assert_eq!(
            (
                spec.inputs[0].source_path.as_str(),
                spec.inputs[0].path.as_str()
            ),
            ("data", "/inputs")
        );
    }

    #[test]
    fn pack_writes_a_car_that_serves_the_module_by_its_cid() {
        let t = tempfile::tempdir().unwrap();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../modules/cowsay");
        let dir = t.path().join("cowsay");
        std::fs::create_dir(&dir).unwrap();
        for f in ["lilypad_module.json.tmpl", "cowsay.wasm"] {
            std::fs::copy(src.join(f), dir.join(f)).unwrap();
        }
        let module = detwasm_jobspec::ModuleDir::open_in(dir.to_str().unwrap(), &[]).unwrap();
        let packed = pack(
            &module,
            &Default::default(),
            detwasm_job::Profile::UnixfsV0_2015,
        )
        .unwrap();
        assert_eq!(packed.car, dir.join("cowsay.car"));
        assert_eq!(packed.template_cid.as_deref(), Some(packed.cid.as_str()));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&packed.car).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644, "published: readable by all");
        // Without the .wasm, the module is found by its CID inside the CAR, also when
        // the template names the (absent) wasm by Path as well.
        std::fs::remove_file(dir.join("cowsay.wasm")).unwrap();
        let found = detwasm_jobspec::resolve::entry_module(&dir, &packed.cid, "").unwrap();
        assert_eq!(found.file, dir.join("cowsay.car"));
        assert_eq!(found.bytes, std::fs::read(src.join("cowsay.wasm")).unwrap());
        let found =
            detwasm_jobspec::resolve::entry_module(&dir, &packed.cid, "cowsay.wasm").unwrap();
        assert_eq!(found.file, dir.join("cowsay.car"));
    }

    /// A folder on the entry's Path that leads out of the module folder: nothing is
    /// written where it leads (found by review: `sub/id_rsa`, `sub` a link to another
    /// folder, wrote `id_rsa.car` there, readable by all).
    #[test]
    fn pack_never_writes_outside_the_module_folder() {
        let t = tempfile::tempdir().unwrap();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../modules/cowsay");
        let (dir, victim) = (t.path().join("m"), t.path().join("victim"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::create_dir_all(&victim).unwrap();
        std::fs::copy(src.join("cowsay.wasm"), victim.join("secret")).unwrap();
        std::fs::write(victim.join("other.car"), "keep").unwrap();
        std::os::unix::fs::symlink(&victim, dir.join("sub")).unwrap();
        let template = std::fs::read_to_string(src.join("lilypad_module.json.tmpl")).unwrap();
        for (path, car) in [("sub/secret", "secret.car"), ("sub/other.x", "other.car")] {
            std::fs::copy(victim.join("secret"), victim.join("other.x")).unwrap();
            let named = template.replace(
                r#""CID": "Qmf4QYeAyxmai1ksbWp4D7opTa6hVSosjbubMwiv4yax7c""#,
                &format!(r#""Path": "{path}""#),
            );
            assert_ne!(named, template);
            std::fs::write(dir.join("lilypad_module.json.tmpl"), named).unwrap();
            let module = detwasm_jobspec::ModuleDir::open_in(dir.to_str().unwrap(), &[]).unwrap();
            let e = pack(
                &module,
                &Default::default(),
                detwasm_job::Profile::UnixfsV0_2015,
            )
            .unwrap_err();
            assert!(matches!(e, PackError::Outside { .. }), "{e}");
            assert!(e.to_string().contains("outside the module folder"), "{e}");
            if car == "secret.car" {
                assert!(!victim.join(car).exists());
            } else {
                assert_eq!(std::fs::read(victim.join(car)).unwrap(), b"keep");
            }
        }
    }
}
