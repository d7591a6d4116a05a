//! The committed example modules are what their sources build to, and their CIDs are
//! what the templates and `fixtures/modules/CIDS` say.
//!
//! `fixtures_match_cids_and_templates` always runs. `rebuild_gives_the_same_cids`
//! rebuilds every module with `scripts/build-modules.sh` into a fresh target folder and
//! compares CIDs; it needs the `wasm32-wasip1` target (installed by scripts/setup.sh,
//! so in CI) and says so when it is missing.

mod cli_support;
use cli_support::*;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Command;

use detwasm_hasher::{Hasher, Node, Options, Profile};

const MODULES: [&str; 4] = ["cowsay", "artgen", "wordstats", "digits"];

/// The CID `ipfs add` prints for a file (kubo defaults: unixfs-v0-2015).
fn cid_of(path: &Path) -> String {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Hasher::new(Options::profile(Profile::UnixfsV0_2015))
        .hash_tree(&Node::bytes(bytes))
        .unwrap()
        .root
        .to_string()
}

/// `fixtures/modules/CIDS`: `CID  NAME.wasm` lines.
fn committed_cids() -> BTreeMap<String, String> {
    let text = fs::read_to_string(root().join("fixtures/modules/CIDS")).unwrap();
    text.lines()
        .map(|l| {
            let (cid, file) = l.split_once("  ").expect("`CID  FILE` lines");
            (file.trim_end_matches(".wasm").to_string(), cid.to_string())
        })
        .collect()
}

#[test]
fn fixtures_match_cids_and_templates() {
    let cids = committed_cids();
    assert_eq!(cids.keys().map(String::as_str).collect::<Vec<_>>(), {
        let mut m = MODULES.to_vec();
        m.sort();
        m
    });
    for m in MODULES {
        let cid = cid_of(&root().join(format!("fixtures/modules/{m}.wasm")));
        assert_eq!(cids[m], cid, "fixtures/modules/CIDS is stale for {m}");
        let template =
            fs::read_to_string(root().join(format!("modules/{m}/lilypad_module.json.tmpl")))
                .unwrap();
        assert!(
            template.contains(&format!("\"CID\": \"{cid}\"")),
            "modules/{m}/lilypad_module.json.tmpl does not name {cid}: run scripts/build-modules.sh"
        );
        // The module folder's .wasm is the fixture (a symlink in git).
        assert_eq!(cid_of(&root().join(format!("modules/{m}/{m}.wasm"))), cid);
    }
}

fn wasm_target_installed() -> bool {
    let out = Command::new("rustc")
        .args(["--print", "target-libdir", "--target", "wasm32-wasip1"])
        .output();
    match out {
        Ok(o) if o.status.success() => {
            let dir = String::from_utf8_lossy(&o.stdout).trim().to_string();
            fs::read_dir(&dir)
                .map(|mut d| d.next().is_some())
                .unwrap_or(false)
        }
        _ => false,
    }
}

#[test]
fn rebuild_gives_the_same_cids() {
    if !wasm_target_installed() {
        eprintln!(
            "SKIPPED: the wasm32-wasip1 target is not installed (scripts/setup.sh installs it)"
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("out");
    let status = Command::new("bash")
        .arg(root().join("scripts/build-modules.sh"))
        .arg("--target-dir")
        .arg(tmp.path().join("target"))
        .arg("--out")
        .arg(&out_dir)
        .env_remove("RUSTFLAGS")
        .status()
        .unwrap();
    assert!(status.success(), "scripts/build-modules.sh failed");
    let cids = committed_cids();
    for m in MODULES {
        let rebuilt = cid_of(&out_dir.join(format!("{m}.wasm")));
        assert_eq!(
            rebuilt, cids[m],
            "{m}.wasm rebuilt from source is not the committed fixture: the build is not reproducible, or the fixture is stale"
        );
    }
}
