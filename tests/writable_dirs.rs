//! Writable folders (`--dir HOST::GUEST`) end to end: the guest changes a copy-on-write
//! copy, the host folder is never written, the final state is delivered as a results
//! volume (symlinks as symlinks) and is part of the results CID, reproduced whatever the
//! host folder's path, creation order and mtimes. The README's `--dir` example is run
//! and its CID checked.

mod cli_support;
use cli_support::*;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn notes_module() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/probes/notes.wat")
}

fn seed(dir: &Path, reverse: bool) {
    std::fs::create_dir_all(dir).unwrap();
    let mut files = vec![("notes.txt", "first line\n"), ("old.txt", "bye\n")];
    if reverse {
        files.reverse();
    }
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
        if reverse {
            let f = std::fs::File::options()
                .write(true)
                .open(dir.join(name))
                .unwrap();
            f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(7))
                .unwrap();
        }
    }
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn a_writable_folder_is_delivered_and_the_host_folder_untouched() {
    let a = tempfile::tempdir().unwrap();
    seed(&a.path().join("notes"), false);
    let cid_a = ok(&detwasm()
        .current_dir(a.path())
        .arg("run")
        .arg(notes_module())
        .args(["--dir", "notes::/data", "-o", "results"])
        .output()
        .unwrap());
    // The host folder is as it was.
    assert_eq!(
        std::fs::read_to_string(a.path().join("notes/notes.txt")).unwrap(),
        "first line\n"
    );
    assert!(a.path().join("notes/old.txt").exists());
    // The results volume `data` holds the final state, the link as a link.
    let data = a.path().join("results/data");
    assert_eq!(
        std::fs::read_to_string(data.join("notes.txt")).unwrap(),
        "first line\ndetwasm was here\n"
    );
    assert!(!data.join("old.txt").exists());
    assert_eq!(
        std::fs::read_link(data.join("latest")).unwrap(),
        Path::new("notes.txt")
    );
    // The CID is the results folder's, symlink node included.
    let hashed = ok(&detwasm()
        .args(["hash", "--hidden"])
        .arg(a.path().join("results"))
        .output()
        .unwrap());
    assert_eq!(cid_a, hashed);

    // Elsewhere (tmpfs if there is one), created in reverse order with other mtimes: the
    // same CID.
    let shm = Path::new("/dev/shm");
    let b = if shm.is_dir() {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    };
    seed(&b.path().join("elsewhere/n"), true);
    let cid_b = ok(&detwasm()
        .current_dir(b.path())
        .arg("run")
        .arg(notes_module())
        .args(["--dir", "elsewhere/n::/data", "--no-cache", "-o", "r"])
        .output()
        .unwrap());
    assert_eq!(cid_a, cid_b);
}

#[test]
fn a_folder_mounted_writable_at_the_root_sits_beside_outputs() {
    let t = tempfile::tempdir().unwrap();
    seed(&t.path().join("root"), false);
    let wat = std::fs::read_to_string(notes_module()).unwrap();
    std::fs::write(t.path().join("m.wat"), wat).unwrap();
    // fd 3 is the root mount: the module's relative paths land at the root.
    let out = detwasm()
        .current_dir(t.path())
        .args([
            "run", "m.wat", "--dir", "root::/", "-o", "results", "--json",
        ])
        .output()
        .unwrap();
    ok(&out);
    let r = t.path().join("results");
    assert!(r.join("outputs").is_dir());
    assert_eq!(
        std::fs::read_to_string(r.join("root/notes.txt")).unwrap(),
        "first line\ndetwasm was here\n"
    );
}

/// A symlink in the host folder leading out of it cannot be delivered: the job is
/// refused, naming the link (nothing written to a results folder may point outside it).
#[test]
fn a_host_symlink_leading_out_of_a_writable_folder_is_refused() {
    let t = tempfile::tempdir().unwrap();
    seed(&t.path().join("notes"), false);
    std::os::unix::fs::symlink("../../etc/passwd", t.path().join("notes/escape")).unwrap();
    let out = detwasm()
        .current_dir(t.path())
        .arg("run")
        .arg(notes_module())
        .args(["--dir", "notes::/data", "-o", "results"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("escape") && err.contains("leading out"),
        "{err}"
    );
    assert!(!t.path().join("results").exists());
}

/// The README's `--dir` example, run as written, prints the CID the README shows.
#[test]
fn the_readme_dir_example_reproduces_its_cid() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let start = readme.find("<!-- dir-example:start -->").expect("marker");
    let end = readme.find("<!-- dir-example:end -->").expect("marker");
    let block = &readme[start..end];
    let cid = block
        .lines()
        .find(|l| l.starts_with("Qm"))
        .expect("the example's CID")
        .trim();
    let t = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for line in block.lines().filter(|l| l.starts_with("$ ")) {
        let command = line.trim_start_matches("$ ");
        let bin = Path::new(env!("CARGO_BIN_EXE_detwasm")).parent().unwrap();
        let out = Command::new("bash")
            .args([
                "-c",
                &command.replace("fixtures/", &format!("{}/fixtures/", root.display())),
            ])
            .current_dir(t.path())
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    bin.display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            )
            .env(
                "DETWASM_CACHE_DIR",
                Path::new(env!("CARGO_TARGET_TMPDIR")).join("detwasm-dirs-cache"),
            )
            .output()
            .unwrap();
        let printed = ok(&out);
        if command.starts_with("detwasm run") {
            assert_eq!(printed, cid, "{command}");
        }
    }
}

/// A module that writes `hello\n` to /outputs/a.txt, hard-links it as b.txt, and appends
/// `more\n` through the fd it opened first.
const LINKER: &str = r#"(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_link" (func $link (param i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "a.txt")
  (data (i32.const 110) "b.txt")
  (data (i32.const 120) "hello\n")
  (data (i32.const 130) "more\n")
  (func $write (param $fd i32) (param $at i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $at))
    (i32.store (i32.const 4) (local.get $len))
    (if (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 64))
      (then (call $exit (i32.const 9)))))
  (func (export "_start") (local $e i32) (local $fd i32)
    (local.set $e (call $path_open (i32.const 3) (i32.const 0) (i32.const 100) (i32.const 5)
      (i32.const 1) (i64.const 0x40) (i64.const 0) (i32.const 0) (i32.const 60)))
    (if (local.get $e) (then (call $exit (local.get $e))))
    (local.set $fd (i32.load (i32.const 60)))
    (call $write (local.get $fd) (i32.const 120) (i32.const 6))
    (local.set $e (call $link (i32.const 3) (i32.const 0) (i32.const 100) (i32.const 5)
      (i32.const 3) (i32.const 110) (i32.const 5)))
    (if (local.get $e) (then (call $exit (i32.add (i32.const 100) (local.get $e)))))
    (call $write (local.get $fd) (i32.const 130) (i32.const 5))
    (call $exit (i32.const 0))))"#;

/// Hard links: both names delivered as full copies of the one file (a write after the
/// link is in both), the same results CID on every run, and each name charged to the
/// output quota as the copy it is delivered as.
#[test]
fn a_hard_linked_file_is_delivered_under_each_name() {
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("link.wat"), LINKER).unwrap();
    let run = |out: &str, extra: &[&str]| {
        detwasm()
            .current_dir(t.path())
            .args(["run", "link.wat", "--json", "-o", out])
            .args(extra)
            .output()
            .unwrap()
    };
    let first = receipt(&run("r1", &[]));
    assert_eq!(first["exit_code"], 0, "{first}");
    for name in ["a.txt", "b.txt"] {
        assert_eq!(
            std::fs::read_to_string(t.path().join("r1/outputs").join(name)).unwrap(),
            "hello\nmore\n"
        );
    }
    let again = receipt(&run("r2", &[]));
    assert_eq!(first["cid"], again["cid"]);
    // The link's copy does not fit (an entry is charged 256 bytes and its name, a.txt
    // takes 267 of 400): the run ends at the quota there, as at any write past it.
    let out = run("r3", &["--max-output", "400"]);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["outcome"], "output_quota", "{r}");
    let outputs = t.path().join("r3/outputs");
    assert_eq!(
        std::fs::read_to_string(outputs.join("a.txt")).unwrap(),
        "hello
"
    );
    assert!(!outputs.join("b.txt").exists());
}
