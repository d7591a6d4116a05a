//! The README's tutorial, run as written: every line between `<!-- tutorial:start -->`
//! and `<!-- tutorial:end -->` is run in order by bash in a fresh folder, with the
//! `detwasm` under test first on PATH, and must succeed. If the README changes, this test
//! runs the new commands.

use std::path::Path;
use std::process::Command;

#[test]
fn the_readme_tutorial_runs_as_written() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let start = readme
        .find("<!-- tutorial:start -->")
        .expect("tutorial start marker");
    let end = readme
        .find("<!-- tutorial:end -->")
        .expect("tutorial end marker");
    let commands: Vec<&str> = readme[start..end]
        .lines()
        .filter(|l| l.starts_with("detwasm ") || l.starts_with("./"))
        .collect();
    assert!(commands.len() >= 7, "{commands:?}");
    let bin = Path::new(env!("CARGO_BIN_EXE_detwasm")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let work = tempfile::tempdir().unwrap();
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("detwasm-tutorial-cache");
    for command in &commands {
        let out = Command::new("bash")
            .args(["-c", command])
            .current_dir(work.path())
            .env("PATH", &path)
            .env("DETWASM_CACHE_DIR", &cache)
            // The module's own cargo build gets a target dir of its own, not the one
            // running this test.
            .env_remove("CARGO_TARGET_DIR")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "`{command}` failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // What the tutorial promises: the template names the built module by its CID, the CAR
    // holds it, and the C module was built too.
    let template =
        std::fs::read_to_string(work.path().join("hello/lilypad_module.json.tmpl")).unwrap();
    let cid = Command::new(env!("CARGO_BIN_EXE_detwasm"))
        .arg("hash")
        .arg(work.path().join("hello/hello.wasm"))
        .output()
        .unwrap();
    let cid = String::from_utf8(cid.stdout).unwrap();
    assert!(template.contains(cid.trim()), "{template}");
    assert!(work.path().join("hello/hello.car").is_file());
    assert!(work.path().join("hello-c/hello-c.wasm").is_file());
}

/// `build.sh` is reproducible: the same module laid out in two folders builds to the
/// same bytes (same CID), whatever the folder's path.
#[test]
fn a_new_module_builds_to_the_same_cid_in_any_folder() {
    let bin = Path::new(env!("CARGO_BIN_EXE_detwasm"));
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let mut cids = Vec::new();
    for (dir, sub) in [(a.path(), "x"), (b.path(), "some/deeper/place")] {
        let out = Command::new(bin)
            .args(["module", "new", "same", "--dir"])
            .arg(dir.join(sub))
            .env_remove("CARGO_TARGET_DIR")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let hashed = Command::new(bin)
            .arg("hash")
            .arg(dir.join(sub).join("same.wasm"))
            .output()
            .unwrap();
        cids.push(String::from_utf8(hashed.stdout).unwrap());
    }
    assert_eq!(cids[0], cids[1]);
}

/// A module's `build.sh` run without detwasm on PATH (and no DETWASM) stops before it
/// builds anything, saying how to point it at detwasm.
#[test]
fn build_sh_without_detwasm_says_so_before_building() {
    let bin = Path::new(env!("CARGO_BIN_EXE_detwasm"));
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("m");
    let out = Command::new(bin)
        .args(["module", "new", "m", "--lang", "c", "--no-build", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new("bash")
        .arg(dir.join("build.sh"))
        .env("PATH", "/usr/bin:/bin")
        .env_remove("DETWASM")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("build.sh: detwasm not found: put detwasm on PATH or set DETWASM="),
        "{err}"
    );
    assert!(!dir.join("m.wasm").exists(), "nothing built");
}
