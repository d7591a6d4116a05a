//! Hostile guests against `detwasm run`, as a provider would meet them: each test runs a
//! small attacking module (WebAssembly text) in a real detwasm process, checks how the
//! run ends, and measures the process's peak resident memory (`wait4`'s `ru_maxrss`)
//! against the bound the runtime promises: memory limit + output quota +
//! [`HOST_OVERHEAD`]. SECURITY.md lists these tests by name.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The documented constant of the memory bound (SECURITY.md, "Host memory"): the
/// process itself (wasmtime, the compiled module, the hasher, stacks), whatever the
/// guest does.
const HOST_OVERHEAD: u64 = 64 << 20;
const MEMORY: u64 = 32 << 20;
const QUOTA: u64 = 8 << 20;

struct Run {
    code: i32,
    stdout: Vec<u8>,
    stderr: String,
    peak_rss: u64,
    dir: tempfile::TempDir,
}

impl Run {
    fn receipt(&self) -> serde_json::Value {
        // 0 or 1: the run ended and was delivered (2 would be a run error).
        assert!(
            self.code == 0 || self.code == 1,
            "exit {}: {}",
            self.code,
            self.stderr
        );
        serde_json::from_slice(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "not a receipt ({e}): {}\n{}",
                String::from_utf8_lossy(&self.stdout),
                self.stderr
            )
        })
    }
    fn results(&self) -> PathBuf {
        self.dir.path().join("results")
    }
    /// Peak memory within memory limit + output quota + the documented constant.
    fn assert_bounded(&self) {
        let bound = MEMORY + QUOTA + HOST_OVERHEAD;
        eprintln!(
            "peak RSS {} KiB (bound {} KiB)",
            self.peak_rss >> 10,
            bound >> 10
        );
        assert!(
            self.peak_rss <= bound,
            "peak RSS {} MiB is over the bound {} MiB",
            self.peak_rss >> 20,
            bound >> 20
        );
        assert!(!self.stderr.contains("panicked"), "{}", self.stderr);
    }
}

/// The CLI, with its module cache in the build's temp dir (not the user's ~/.cache).
fn detwasm() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_detwasm"));
    c.env(
        "DETWASM_CACHE_DIR",
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("detwasm-hostile-cache"),
    );
    c
}

/// Runs `detwasm run MODULE.wat --json` with the tests' limits plus `extra` flags, and
/// measures the child's peak RSS.
fn run(wat: &str, extra: &[&str], setup: impl FnOnce(&Path)) -> Run {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let module = dir.path().join("attack.wat");
    std::fs::write(&module, wat).unwrap();
    let out = dir.path().join("stdout");
    let err = dir.path().join("stderr");
    let mut cmd = detwasm();
    cmd.current_dir(dir.path())
        .arg("run")
        .arg(&module)
        .args(["--json", "-o", "results"])
        .args(extra);
    // The tests' limits unless `extra` names its own.
    if !extra.contains(&"--memory") {
        cmd.args(["--memory", &MEMORY.to_string()]);
    }
    if !extra.contains(&"--max-output") {
        cmd.args(["--max-output", &QUOTA.to_string()]);
    }
    cmd.stdin(Stdio::null())
        .stdout(File::create(&out).unwrap())
        .stderr(File::create(&err).unwrap());
    // Waited for with wait4 below (std's wait would not report the peak RSS).
    #[allow(clippy::zombie_processes)]
    let child = cmd.spawn().unwrap();
    let (code, peak_rss) = wait_with_rusage(child.id() as libc::pid_t);
    Run {
        code,
        stdout: std::fs::read(&out).unwrap(),
        stderr: std::fs::read_to_string(&err).unwrap(),
        peak_rss,
        dir,
    }
}

/// Waits for `pid` and returns its exit code and peak RSS in bytes.
fn wait_with_rusage(pid: libc::pid_t) -> (i32, u64) {
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

/// A WASI command with the imports the attacks use, one page-aligned memory of
/// `pages` pages, and `body` as `_start`.
fn module(pages: u32, data: &str, body: &str) -> String {
    format!(
        r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_pwrite" (func $fd_pwrite (param i32 i32 i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_close" (func $fd_close (param i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_filestat_set_size" (func $set_size (param i32 i64) (result i32)))
  (import "wasi_snapshot_preview1" "path_open" (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_unlink_file" (func $unlink (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_create_directory" (func $mkdir (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") {pages})
  {data}
  (global $fd (mut i32) (i32.const 0))
  ;; opens `len` bytes at `path` in preopen `dir` (create, truncate), read+write rights
  (func $open (param $dir i32) (param $path i32) (param $len i32) (result i32)
    (local $e i32)
    (local.set $e (call $path_open (local.get $dir) (i32.const 0) (local.get $path) (local.get $len)
      (i32.const 9) (i64.const 0x42) (i64.const 0) (i32.const 0) (i32.const 60)))
    (if (local.get $e) (then (call $exit (i32.add (i32.const 1000) (local.get $e)))))
    (i32.load (i32.const 60)))
  ;; stores `n` iovecs at 0, every one over the same 64 KiB at 65536
  (func $aliased (param $n i32) (local $i i32)
    (loop $l
      (call $iov (i32.mul (local.get $i) (i32.const 8)) (i32.const 65536) (i32.const 65536))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (local.get $n)))))
  ;; stores an iovec {{ptr, len}} at `at`
  (func $iov (param $at i32) (param $ptr i32) (param $len i32)
    (i32.store (local.get $at) (local.get $ptr))
    (i32.store (i32.add (local.get $at) (i32.const 4)) (local.get $len)))
  (func (export "_start") (local $i i32) (local $e i32) (local $f i32)
{body}
  ))"#
    )
}

/// One `fd_write` whose 8000 iovecs all point at the same 64 KiB: 500 MiB asked for from
/// 128 KiB of guest memory. Before any byte is copied the total is checked against the
/// quota: the run ends with `output_quota`, and the host never holds a gathered copy.
#[test]
fn aliased_iovecs_to_stdout_end_at_the_quota_without_a_gathered_copy() {
    let body = r#"
    (call $aliased (i32.const 8000))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 8000) (i32.const 64000)))
    (call $exit (i32.const 7))"#;
    let r = run(&module(2, "", body), &[], |_| {});
    let receipt = r.receipt();
    assert_eq!(receipt["outcome"], "output_quota", "{receipt}");
    r.assert_bounded();
}

/// The same aliased write into a file of an output volume, and with a quota large enough
/// to hold it but a small instruction budget: the copy is host work charged as fuel, so
/// the run ends out of fuel, at exactly the budget, before the copy.
#[test]
fn aliased_iovecs_to_a_file_are_charged_as_fuel() {
    let body = r#"
    (local.set $f (call $open (i32.const 3) (i32.const 64000) (i32.const 1)))
    (call $aliased (i32.const 7000))
    (drop (call $fd_write (local.get $f) (i32.const 0) (i32.const 7000) (i32.const 64100)))
    (call $exit (i32.const 7))"#;
    let wat = module(2, r#"(data (i32.const 64000) "f")"#, body);
    let r = run(&wat, &[], |_| {});
    assert_eq!(r.receipt()["outcome"], "output_quota");
    r.assert_bounded();
    let fuel = 2_000_000u64;
    let r = run(
        &wat,
        &["--max-output", "1GiB", "--fuel", &fuel.to_string()],
        |_| {},
    );
    let receipt = r.receipt();
    assert_eq!(receipt["outcome"], "out_of_fuel", "{receipt}");
    assert_eq!(receipt["instructions"], fuel);
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
}

/// Write 4 MiB, close, unlink; 64 times, with an 8 MiB quota and a 32 MiB memory limit:
/// unlinked files give their memory back, so the job runs to the end and the host stays
/// within its bound (before, 256 MiB stayed allocated).
#[test]
fn unlinked_files_free_their_memory() {
    let body = r#"
    (call $iov (i32.const 0) (i32.const 65536) (i32.const 0x400000))
    (loop $l
      (local.set $f (call $open (i32.const 3) (i32.const 64000) (i32.const 1)))
      (drop (call $fd_write (local.get $f) (i32.const 0) (i32.const 1) (i32.const 16)))
      (drop (call $fd_close (local.get $f)))
      (local.set $e (call $unlink (i32.const 3) (i32.const 64000) (i32.const 1)))
      (if (local.get $e) (then (call $exit (i32.add (i32.const 2000) (local.get $e)))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const 64))))
    (call $exit (i32.const 0))"#;
    let r = run(
        &module(66, r#"(data (i32.const 64000) "f")"#, body),
        &[],
        |_| {},
    );
    let receipt = r.receipt();
    assert_eq!(receipt["outcome"], "exited", "{receipt}");
    assert_eq!(receipt["exit_code"], 0, "{receipt}");
    r.assert_bounded();
}

/// Write 4 MiB to 64 different files, truncating each to 0 bytes afterwards: truncation
/// returns the memory (and the quota), so the job ends normally within the bound.
#[test]
fn truncated_files_free_their_memory() {
    let body = r#"
    (call $iov (i32.const 0) (i32.const 65536) (i32.const 0x400000))
    (loop $l
      (i32.store8 (i32.const 64001) (i32.add (i32.const 48) (local.get $i)))
      (local.set $f (call $open (i32.const 3) (i32.const 64000) (i32.const 2)))
      (drop (call $fd_write (local.get $f) (i32.const 0) (i32.const 1) (i32.const 16)))
      (local.set $e (call $set_size (local.get $f) (i64.const 0)))
      (if (local.get $e) (then (call $exit (i32.add (i32.const 2000) (local.get $e)))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const 64))))
    (call $exit (i32.const 0))"#;
    let r = run(
        &module(66, r#"(data (i32.const 64000) "f")"#, body),
        &[],
        |_| {},
    );
    let receipt = r.receipt();
    assert_eq!(receipt["exit_code"], 0, "{receipt}");
    let outputs = r.results().join("outputs");
    assert_eq!(std::fs::read_dir(&outputs).unwrap().count(), 64);
    r.assert_bounded();
}

/// Empty files until something gives: each entry costs the quota a fixed overhead, so an
/// 8 MiB quota ends the run (output_quota) after tens of thousands of files, not after
/// the host has allocated millions of nodes.
#[test]
fn empty_files_are_charged_per_entry() {
    let body = r#"
    (loop $l
      (i32.store (i32.const 64000) (i32.add (i32.const 0x61616161)
        (i32.and (local.get $i) (i32.const 0x0f0f0f0f))))
      (i32.store (i32.const 64004) (i32.add (i32.const 0x61616161)
        (i32.and (i32.shr_u (local.get $i) (i32.const 4)) (i32.const 0x0f0f0f0f))))
      (drop (call $fd_close (call $open (i32.const 3) (i32.const 64000) (i32.const 8))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $l))"#;
    let r = run(&module(1, "", body), &[], |_| {});
    let receipt = r.receipt();
    assert_eq!(receipt["outcome"], "output_quota", "{receipt}");
    r.assert_bounded();
}

/// A path of 300 nested directories: creation stops at the depth limit with
/// ENAMETOOLONG (37), a guest-visible errno, the same on every host; the results (256
/// levels deep) are delivered and hashed.
#[test]
fn deep_trees_stop_at_the_depth_limit() {
    let body = r#"
    (loop $l
      (i32.store8 (i32.add (i32.const 1000) (i32.mul (local.get $i) (i32.const 2))) (i32.const 100))
      (i32.store8 (i32.add (i32.const 1001) (i32.mul (local.get $i) (i32.const 2))) (i32.const 47))
      (local.set $e (call $mkdir (i32.const 3) (i32.const 1000)
        (i32.add (i32.mul (local.get $i) (i32.const 2)) (i32.const 1))))
      (if (local.get $e) (then (call $exit (i32.add (i32.mul (local.get $e) (i32.const 1000)) (local.get $i)))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $l))"#;
    let r = run(&module(1, "", body), &[], |_| {});
    let receipt = r.receipt();
    assert_eq!(receipt["exit_code"], 37 * 1000 + 256, "{receipt}");
    r.assert_bounded();
}

/// Paths and sizes near the top of their types, guest pointers near the end of memory:
/// every call answers with an errno (written to stdout, one byte each), nothing panics,
/// and a debug build answers as a release build would.
#[test]
fn huge_sizes_offsets_and_pointers_are_errnos() {
    let body = r#"
    (local.set $f (call $open (i32.const 3) (i32.const 64000) (i32.const 1)))
    (call $iov (i32.const 0) (i32.const 64000) (i32.const 1))
    ;; fd_pwrite at u64::MAX - 1 and at i64::MAX: EFBIG
    (i32.store8 (i32.const 100) (call $fd_pwrite (local.get $f) (i32.const 0) (i32.const 1) (i64.const -2) (i32.const 16)))
    (i32.store8 (i32.const 101) (call $fd_pwrite (local.get $f) (i32.const 0) (i32.const 1) (i64.const 0x7fffffffffffffff) (i32.const 16)))
    ;; fd_filestat_set_size(u64::MAX): EFBIG
    (i32.store8 (i32.const 102) (call $set_size (local.get $f) (i64.const -1)))
    ;; a path longer than PATH_MAX: ENAMETOOLONG, before a byte of it is read
    (i32.store8 (i32.const 103) (call $mkdir (i32.const 3) (i32.const 0) (i32.const 60000)))
    (i32.store8 (i32.const 104) (call $mkdir (i32.const 3) (i32.const 0) (i32.const -1)))
    ;; a name with a NUL byte: EINVAL
    (i32.store8 (i32.const 105) (call $mkdir (i32.const 3) (i32.const 64010) (i32.const 3)))
    ;; iovec array and pointers wrapping around the end of the address space: EFAULT
    (i32.store8 (i32.const 106) (call $fd_write (i32.const 1) (i32.const -8) (i32.const 2) (i32.const 16)))
    (i32.store8 (i32.const 107) (call $poll (i32.const -48) (i32.const 0) (i32.const 1) (i32.const 16)))
    (i32.store8 (i32.const 108) (call $args_get (i32.const -2) (i32.const -2)))
    (i32.store8 (i32.const 109) (call $fd_read (i32.const 0) (i32.const 65530) (i32.const 1) (i32.const 16)))
    (call $iov (i32.const 200) (i32.const 100) (i32.const 10))
    (drop (call $fd_write (i32.const 1) (i32.const 200) (i32.const 1) (i32.const 16)))
    ;; set_size(i64::MAX): a size the quota cannot hold ends the run
    (drop (call $set_size (local.get $f) (i64.const 0x7fffffffffffffff)))
    (call $exit (i32.const 0))"#;
    let r = run(
        &module(
            1,
            r#"(data (i32.const 64000) "f") (data (i32.const 64010) "a\00b")"#,
            body,
        ),
        &[],
        |_| {},
    );
    let receipt = r.receipt();
    assert_eq!(receipt["outcome"], "output_quota", "{receipt}");
    let stdout = std::fs::read(r.results().join("stdout")).unwrap();
    // EFBIG 22 x3, ENAMETOOLONG 37 x2, EINVAL 28, EFAULT 21 x4.
    assert_eq!(stdout, [22, 22, 22, 37, 37, 28, 21, 21, 21, 21]);
    r.assert_bounded();
}

/// A 256 MiB input file read with one `fd_read` of 4096 iovecs aliasing one 64 KiB
/// buffer, until the end: the host reads straight into guest memory; its memory does
/// not follow the file's size.
#[test]
fn large_reads_do_not_buffer_the_input_file() {
    let body = r#"
    (local.set $f (call $open (i32.const 3) (i32.const 64000) (i32.const 3)))
    (call $aliased (i32.const 4096))
    (local.set $i (i32.const 0))
    (loop $r
      (local.set $e (call $fd_read (local.get $f) (i32.const 0) (i32.const 4096) (i32.const 40000)))
      (if (local.get $e) (then (call $exit (local.get $e))))
      (local.set $i (i32.add (local.get $i) (i32.load (i32.const 40000))))
      (br_if $r (i32.load (i32.const 40000))))
    ;; MiB read
    (call $exit (i32.shr_u (local.get $i) (i32.const 20)))"#;
    let wat = module(2, r#"(data (i32.const 64000) "big")"#, body)
        // Opened read-only.
        .replace("(i64.const 0x42)", "(i64.const 0x2)")
        .replace(
            "(i32.const 9) (i64.const 0x2)",
            "(i32.const 0) (i64.const 0x2)",
        );
    let r = run(&wat, &["--input", "in"], |d| {
        std::fs::create_dir(d.join("in")).unwrap();
        let f = File::create(d.join("in/big")).unwrap();
        f.set_len(256 << 20).unwrap();
    });
    let receipt = r.receipt();
    assert_eq!(receipt["exit_code"], 256, "{receipt}");
    r.assert_bounded();
}

/// Four memories and a table, each grown toward the limit on its own: they share one
/// budget (32 MiB here), so only two 16 MiB memories fit and the table's growth fails.
/// The exit code is the number of growths that succeeded, the table's counted as 10.
#[test]
fn all_memories_and_tables_share_the_memory_limit() {
    let wat = r#"(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory $m0 (export "memory") 0)
  (memory $m1 0)
  (memory $m2 0)
  (memory $m3 0)
  (table $t 0 funcref)
  (func (export "_start") (local $n i32)
    (if (i32.ne (memory.grow $m0 (i32.const 256)) (i32.const -1)) (then (local.set $n (i32.add (local.get $n) (i32.const 1)))))
    (if (i32.ne (memory.grow $m1 (i32.const 256)) (i32.const -1)) (then (local.set $n (i32.add (local.get $n) (i32.const 1)))))
    (if (i32.ne (memory.grow $m2 (i32.const 256)) (i32.const -1)) (then (local.set $n (i32.add (local.get $n) (i32.const 1)))))
    (if (i32.ne (memory.grow $m3 (i32.const 256)) (i32.const -1)) (then (local.set $n (i32.add (local.get $n) (i32.const 1)))))
    (if (i32.ne (table.grow $t (ref.null func) (i32.const 1000000)) (i32.const -1)) (then (local.set $n (i32.add (local.get $n) (i32.const 10)))))
    (call $exit (local.get $n))))"#;
    let r = run(wat, &[], |_| {});
    let receipt = r.receipt();
    assert_eq!(receipt["exit_code"], 2, "{receipt}");
    // With room for one more 16 MiB memory the table still does not fit beside it.
    let r = run(wat, &["--memory", "48MiB"], |_| {});
    assert_eq!(r.receipt()["exit_code"], 3);
    let r = run(wat, &["--memory", "72MiB"], |_| {});
    assert_eq!(r.receipt()["exit_code"], 14);
}

/// An input that changes while the job runs is detected: the run is a host failure
/// (exit 2, nothing delivered), never a receipt naming CIDs of what the guest did not
/// read.
#[test]
fn an_input_changed_during_the_run_is_refused() {
    // The guest spins until the test has appended to its input (it cannot see the change;
    // the host notices after the run).
    let body = r#"
    (loop $l
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const 1500000000))))
    (call $exit (i32.const 0))"#;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir(&input).unwrap();
    std::fs::write(input.join("data"), b"before").unwrap();
    let module = dir.path().join("spin.wat");
    std::fs::write(&module, module_text(body)).unwrap();
    let child = detwasm()
        .current_dir(dir.path())
        .args(["run", "spin.wat", "--input", "in", "-o", "results"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    std::fs::write(input.join("data"), b"after!").unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("changed while the job ran"), "{stderr}");
    assert!(!dir.path().join("results").exists());
}

fn module_text(body: &str) -> String {
    module(1, "", body)
}

/// Runs `detwasm run` with `args` in `dir` under resource limits set in the child
/// (`RLIMIT_NOFILE`, `RLIMIT_AS`), and returns its exit code and stderr.
fn run_limited(
    dir: &Path,
    args: &[&str],
    limits: &[(libc::__rlimit_resource_t, u64)],
) -> (i32, String, Vec<u8>) {
    let mut cmd = detwasm();
    cmd.current_dir(dir).args(args);
    let limits = limits.to_vec();
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            for &(resource, value) in &limits {
                let lim = libc::rlimit {
                    rlim_cur: value,
                    rlim_max: value,
                };
                if libc::setrlimit(resource, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.stdout,
    )
}

/// Opens every file of an input folder of 2000 files, keeping them all open, then reads
/// each: the guest holds 2000 fds, the host at most `HOST_FILES_OPEN` (64), so the job
/// runs under `ulimit -n 256` and reads every byte (exit code: files read).
#[test]
fn thousands_of_open_input_files_need_few_host_fds() {
    let body = r#"
    (call $iov (i32.const 0) (i32.const 100) (i32.const 8))
    (loop $l
      ;; name: four decimal digits of $i
      (i32.store8 (i32.const 64000) (i32.add (i32.const 48) (i32.rem_u (i32.div_u (local.get $i) (i32.const 1000)) (i32.const 10))))
      (i32.store8 (i32.const 64001) (i32.add (i32.const 48) (i32.rem_u (i32.div_u (local.get $i) (i32.const 100)) (i32.const 10))))
      (i32.store8 (i32.const 64002) (i32.add (i32.const 48) (i32.rem_u (i32.div_u (local.get $i) (i32.const 10)) (i32.const 10))))
      (i32.store8 (i32.const 64003) (i32.add (i32.const 48) (i32.rem_u (local.get $i) (i32.const 10))))
      (drop (call $open (i32.const 3) (i32.const 64000) (i32.const 4)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const 2000))))
    ;; fds 5.. are the files, in order; read each one's 4 bytes
    (local.set $i (i32.const 0))
    (loop $r
      (local.set $e (call $fd_read (i32.add (i32.const 5) (local.get $i)) (i32.const 0) (i32.const 1) (i32.const 40)))
      (if (local.get $e) (then (call $exit (i32.add (i32.const 3000) (local.get $e)))))
      (if (i32.eq (i32.load (i32.const 40)) (i32.const 4)) (then (local.set $f (i32.add (local.get $f) (i32.const 1)))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $r (i32.lt_u (local.get $i) (i32.const 2000))))
    (call $exit (local.get $f))"#;
    let wat = module(1, "", body).replace(
        "(i32.const 9) (i64.const 0x42)",
        "(i32.const 0) (i64.const 0x2)",
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("in")).unwrap();
    for i in 0..2000 {
        std::fs::write(dir.path().join(format!("in/{i:04}")), format!("{i:04}")).unwrap();
    }
    std::fs::write(dir.path().join("m.wat"), wat).unwrap();
    let (code, stderr, stdout) = run_limited(
        dir.path(),
        &["run", "m.wat", "--input", "in", "--json", "-o", "results"],
        &[(libc::RLIMIT_NOFILE, 256)],
    );
    assert_eq!(code, 1, "{stderr}");
    let receipt: serde_json::Value = serde_json::from_slice(&stdout).unwrap();
    assert_eq!(receipt["exit_code"], 2000, "{receipt}");
}

/// The host out of file descriptors while the guest reads an input: a host failure
/// (exit 2, "host failure", nothing delivered), never an errno the guest could turn
/// into a verifiable result.
#[test]
fn running_out_of_host_fds_is_a_host_failure() {
    let body = r#"
    (call $iov (i32.const 0) (i32.const 100) (i32.const 8))
    (local.set $f (call $open (i32.const 3) (i32.const 64000) (i32.const 1)))
    (drop (call $fd_read (local.get $f) (i32.const 0) (i32.const 1) (i32.const 40)))
    (call $exit (i32.const 0))"#;
    let wat = module(1, r#"(data (i32.const 64000) "a")"#, body).replace(
        "(i32.const 9) (i64.const 0x42)",
        "(i32.const 0) (i64.const 0x2)",
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("in")).unwrap();
    std::fs::write(dir.path().join("in/a"), b"data").unwrap();
    std::fs::write(dir.path().join("m.wat"), wat).unwrap();
    // Find the lowest fd limit at which detwasm gets as far as the guest's read: below it
    // the run fails earlier (also exit 2); at it, opening the input file is what fails.
    let mut saw_host_failure = false;
    for nofile in 3..40 {
        let (code, stderr, _) = run_limited(
            dir.path(),
            &[
                "run",
                "m.wat",
                "--input",
                "in",
                "--no-cache",
                "-o",
                "results",
            ],
            &[(libc::RLIMIT_NOFILE, nofile)],
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        if code == 0 {
            break;
        }
        if code == 127 {
            // Too few fds for the dynamic loader to start the process at all.
            continue;
        }
        assert_eq!(code, 2, "ulimit -n {nofile}: {stderr}");
        assert!(!dir.path().join("results").exists());
        saw_host_failure |= stderr.contains("host failure") && stderr.contains("opening input");
    }
    assert!(saw_host_failure, "no fd limit made the guest's read fail");
}

/// The host refusing to map a linear memory (`ulimit -v` below what wasmtime reserves)
/// is a host failure, not a trap recorded in a verifiable receipt.
#[test]
fn a_memory_the_host_cannot_map_is_a_host_failure() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("m.wat"),
        module(1, "", "    (call $exit (i32.const 0))"),
    )
    .unwrap();
    // Enough address space for the process, not for wasmtime's reservation of a 4 GiB
    // memory and its guard region.
    let (code, stderr, stdout) = run_limited(
        dir.path(),
        &["run", "m.wat", "--json", "-o", "results"],
        &[(libc::RLIMIT_AS, 3 << 30)],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("host failure"), "{stderr}");
    assert!(stdout.is_empty());
    assert!(!dir.path().join("results").exists());
}

/// An input given as a symlink to a folder: the guest sees the folder's tree, and the
/// receipt's input CID is that tree's CID (what `detwasm hash --hidden` prints for the
/// folder), not the CID of a UnixFS symlink node.
#[test]
fn a_symlinked_input_root_hashes_the_tree_the_guest_sees() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("real")).unwrap();
    std::fs::write(dir.path().join("real/a"), b"alpha").unwrap();
    std::fs::write(dir.path().join("real/.hidden"), b"seen too").unwrap();
    std::os::unix::fs::symlink("real", dir.path().join("link")).unwrap();
    std::fs::write(
        dir.path().join("m.wat"),
        module(1, "", "    (call $exit (i32.const 0))"),
    )
    .unwrap();
    let (code, stderr, stdout) = run_limited(
        dir.path(),
        &["run", "m.wat", "--input", "link", "--json", "-o", "results"],
        &[],
    );
    assert_eq!(code, 0, "{stderr}");
    let receipt: serde_json::Value = serde_json::from_slice(&stdout).unwrap();
    let hashed = Command::new(env!("CARGO_BIN_EXE_detwasm"))
        .args(["hash", "--hidden"])
        .arg(dir.path().join("real"))
        .output()
        .unwrap();
    let tree_cid = String::from_utf8(hashed.stdout).unwrap();
    assert_eq!(
        receipt["job"]["inputs"][0]["cid"],
        tree_cid.trim(),
        "{receipt}"
    );
}

/// A guest that calls WASI without exporting its memory: the host cannot answer, so the
/// run ends as a trap (deterministic, recorded), not as a host failure.
#[test]
fn wasi_without_an_exported_memory_is_a_trap() {
    let wat = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory 1)
  (func (export "_start") (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 0)))))"#;
    let r = run(wat, &[], |_| {});
    let receipt = r.receipt();
    assert_eq!(receipt["outcome"], "trap", "{receipt}");
    assert!(receipt["trap"]
        .as_str()
        .unwrap()
        .contains("exports no memory"));
    assert_eq!(receipt["verifiable"], true);
}

/// Runs `wat` with an instruction budget it would take hours to use up and a wall-clock
/// timeout of `TIMEOUT_SECS`, and checks that the safety net stopped it, on time.
fn assert_stopped_by_the_timeout(wat: &str) {
    const TIMEOUT_SECS: f64 = 0.5;
    let start = std::time::Instant::now();
    let r = run(
        wat,
        &[
            "--timeout",
            &TIMEOUT_SECS.to_string(),
            "--fuel",
            &u64::MAX.to_string(),
        ],
        |_| {},
    );
    let took = start.elapsed().as_secs_f64();
    let receipt = r.receipt();
    assert_eq!(receipt["outcome"], "timeout", "{}", r.stderr);
    assert_eq!(receipt["verifiable"], false);
    assert_eq!(receipt["exit_code"], 134);
    assert_eq!(
        receipt["trap"],
        "wall-clock timeout after 0.5 s (a safety net: this run is not verifiable)"
    );
    // The process also compiles, hashes and writes results: a few seconds of slack on a
    // loaded machine, far below what the budget would allow.
    assert!(
        (TIMEOUT_SECS..TIMEOUT_SECS + 5.0).contains(&took),
        "took {took:.2} s"
    );
    r.assert_bounded();
}

/// A guest that loops forever, with no call and no host function in the loop, is stopped
/// by the wall-clock timeout: the guest asks for fuel a slice at a time (every
/// `meter::SLICE` instructions) and the deadline is checked at each refuel.
#[test]
fn an_endless_loop_is_stopped_by_the_timeout() {
    assert_stopped_by_the_timeout(
        r#"(module (memory (export "memory") 1)
             (func (export "_start") (loop $l (br $l))))"#,
    );
}

/// A loop of `memory.fill`s over the whole memory (32 MiB each, a handful of
/// instructions): wasmtime charges bulk memory operations one unit of fuel per byte and
/// checks fuel before large ones, so the guest still pauses often enough for the
/// timeout to stop it on time.
#[test]
fn a_loop_of_huge_memory_fills_is_stopped_by_the_timeout() {
    let pages = MEMORY >> 16;
    assert_stopped_by_the_timeout(&format!(
        r#"(module (memory (export "memory") {pages})
             (func (export "_start")
               (loop $l
                 (memory.fill (i32.const 0) (i32.const 7) (i32.const {MEMORY}))
                 (br $l))))"#
    ));
}

/// The review's finding: a recursion 15,000 deep whose frames each run a long straight
/// rest after the recursive call. A check on entry bounds the way down, not the way
/// back up; before the fix nothing was checked there (reported: 7.5e10 operators run on
/// a budget of 2e5, `--timeout 0.5` ignored for 20 s). The rest here is 10,000
/// `memory.grow 0`s, 20,000 operators that are cheap to compile but slow to run (a call
/// into wasmtime each): the unchecked way up took 15 s on this project's machine.
fn recursion_with_long_rests() -> String {
    let rest = "(drop (memory.grow (i32.const 0)))\n".repeat(10_000);
    format!(
        r#"(module (memory (export "memory") 1)
             (func $r (param i32)
               (if (local.get 0) (then (call $r (i32.sub (local.get 0) (i32.const 1)))))
               {rest})
             (func (export "_start") (call $r (i32.const 15000))))"#
    )
}

/// With a budget of 200,000 the run ends out of fuel, counted at the budget exactly,
/// within two function bodies of it and so at once.
#[test]
fn a_recursion_with_long_rests_runs_out_of_fuel_on_its_way_back_up() {
    let start = std::time::Instant::now();
    let r = run(&recursion_with_long_rests(), &["--fuel", "200000"], |_| {});
    let took = start.elapsed().as_secs_f64();
    let receipt = r.receipt();
    assert_eq!(receipt["outcome"], "out_of_fuel", "{receipt}");
    assert_eq!(receipt["instructions"], 200_000);
    assert_eq!(receipt["verifiable"], true);
    // Compiling and delivering, with slack for a loaded machine; the way up unchecked
    // would take 15 s.
    assert!(took < 5.0, "took {took:.2} s");
    r.assert_bounded();
}

/// With a budget it would take hours to use up, `--timeout 0.5` stops it on time (the
/// deadline is read at the refuels of the checks on the way back up).
#[test]
fn a_recursion_with_long_rests_is_stopped_by_the_timeout() {
    assert_stopped_by_the_timeout(&recursion_with_long_rests());
}

/// Unbounded recursion with the largest frames per stack unit (100 `v128` values live
/// across each call): the metered limit ends it (`call stack exhausted`, the same depth
/// and instruction count on every CPU), and the native stack it touched stays inside the
/// memory bound.
#[test]
fn unbounded_recursion_ends_at_the_metered_stack_limit() {
    let mut body = String::new();
    for i in 0..100 {
        body += &format!("(v128.load offset={} (i32.const 0))\n", 16 * i);
    }
    body += "(call $f (local.get 0))\n";
    body += &"i32x4.add\n".repeat(100);
    let wat = format!(
        "(module (memory (export \"memory\") 1)
           (func $f (param v128) (result v128) {body})
           (func (export \"_start\") (drop (call $f (v128.const i64x2 1 2)))))"
    );
    let r = run(&wat, &[], |_| {});
    let receipt = r.receipt();
    assert_eq!(receipt["trap"], "wasm trap: call stack exhausted");
    r.assert_bounded();
}

/// Frames that keep many more values natively than the module holds: 1,000
/// loop-invariant products Cranelift hoists out of the loop around the recursive call,
/// live across it (runtime/src/passes/stack.rs measures 625 native bytes per stack
/// unit). The native stack runs out before the metered limit, at a depth that depends on
/// the CPU: a host failure (exit 2, nothing delivered), never a result.
#[test]
fn frames_of_hoisted_values_exhaust_the_native_stack_as_a_host_failure() {
    let mut body = String::from("(loop $l\n");
    for i in 0..1000 {
        body += &format!(
            "(local.set 1 (i32.add (local.get 1) (i32.mul (local.get 0) (i32.const {}))))\n",
            2 * i + 3
        );
    }
    body += "(local.set 1 (i32.add (local.get 1) (call $f (local.get 0))))\n";
    body += "(br_if $l (i32.eqz (local.get 1))))\n(local.get 1)";
    let wat = format!(
        "(module (memory (export \"memory\") 1)
           (func $f (param i32) (result i32) (local i32) {body})
           (func (export \"_start\") (drop (call $f (i32.const 5)))))"
    );
    let r = run(&wat, &[], |_| {});
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("native stack was exhausted"),
        "{}",
        r.stderr
    );
    assert!(!r.results().exists(), "nothing delivered");
    r.assert_bounded();
}
