//! What the end-to-end tests of the CLI share: the `detwasm` command as every test
//! starts it, the project's folders, and reading what a run printed. (Hashing tests
//! have their own helpers in `hash_support/`.) Each test file takes what it needs, so
//! some of these are unused in any one of them.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub mod corpus;

/// The `detwasm` binary under test, with a module cache of the test build's own (never
/// the user's) and none of the user's settings that change what a run may read: the
/// module search path, the folders a module spec may mount and the IPFS node or gateway
/// content is fetched from.
pub fn detwasm() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_detwasm"));
    c.env(
        "DETWASM_CACHE_DIR",
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("detwasm-cli-cache"),
    )
    .env_remove("DETWASM_ALLOW_INPUTS")
    .env_remove("DETWASM_MODULE_PATH")
    .env_remove("DETWASM_IPFS_API")
    .env_remove("DETWASM_IPFS_GATEWAY");
    c
}

/// The project's root folder.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A file or folder under `fixtures/`.
pub fn fixture(rel: &str) -> PathBuf {
    root().join("fixtures").join(rel)
}

/// stdout of a run that must have succeeded (the panic shows both streams otherwise).
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "detwasm failed ({:?}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("stdout is UTF-8")
}

/// stderr of a run that must have failed.
pub fn failed(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "expected a failure, got stdout:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr.clone()).expect("stderr is UTF-8")
}

/// The receipt a successful `--json` run printed.
pub fn receipt(out: &Output) -> serde_json::Value {
    serde_json::from_str(&ok(out)).expect("--json prints one JSON object")
}

/// Waits for `pid` and returns its exit code and peak RSS in bytes.
pub fn wait_with_rusage(pid: libc::pid_t) -> (i32, u64) {
    let mut status = 0;
    // SAFETY: plain out-parameters for wait4 on our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid, "wait4: {}", std::io::Error::last_os_error());
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    (code, usage.ru_maxrss as u64 * 1024)
}
