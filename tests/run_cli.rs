//! `detwasm run` end to end, as a user runs it: the same job run by two detwasm processes
//! that differ in everything but the job (environment, TZ, locale, cwd, cache, input
//! location and filesystem) prints the same results CID and instruction count.

mod cli_support;
use cli_support::*;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/probes")
        .join(name)
}

fn json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "detwasm failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("--json prints one JSON object")
}

fn make_inputs(root: &Path, reverse: bool) {
    let mut files = vec![
        ("b.txt", "bee"),
        ("a.txt", "ay"),
        ("sub/c.txt", "see"),
        (".dot", "dot"),
    ];
    if reverse {
        files.reverse();
    }
    for (n, d) in files {
        let p = root.join(n);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, d).unwrap();
    }
}

#[test]
fn same_cid_from_processes_with_different_environments() {
    let a = tempfile::tempdir().unwrap();
    let in_a = a.path().join("in");
    make_inputs(&in_a, false);
    let cache_a = a.path().join("cache");
    let out_a = detwasm()
        .current_dir(a.path())
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("TZ", "UTC")
        .env("LANG", "C")
        .env("DETWASM_CACHE_DIR", &cache_a)
        .args(["run", "--json", "-e", "GREETING=hi", "--input"])
        .arg(format!("{}:/inputs", in_a.display()))
        .arg(fixture("probe.wasm"))
        .args(["--", "report"])
        .output()
        .unwrap();
    let ja = json(&out_a);

    let shm = Path::new("/dev/shm");
    let b = if shm.is_dir() {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    };
    let in_b = b.path().join("elsewhere/in");
    make_inputs(&in_b, true);
    let out_b = detwasm()
        .current_dir(b.path())
        .env("TZ", "Asia/Kathmandu")
        .env("LC_ALL", "de_DE.UTF-8")
        .env("HOME", b.path())
        .env("SOME_NOISE", "x".repeat(1000))
        .args([
            "run",
            "--json",
            "--no-cache",
            "-e",
            "GREETING=hi",
            "--input",
        ])
        .arg(&in_b) // default guest path /inputs
        .arg(fixture("probe.wasm"))
        .args(["--", "report"])
        .output()
        .unwrap();
    let jb = json(&out_b);

    for key in [
        "cid",
        "instructions",
        "job_id",
        "module_cid",
        "engine",
        "exit_code",
    ] {
        assert_eq!(ja[key], jb[key], "{key} differs");
    }
    assert_eq!(ja["trap"], serde_json::Value::Null);
    assert_eq!(ja["verifiable"], true);
    // Default results folder: named after the job id, in the current directory.
    let job_id = ja["job_id"].as_str().unwrap();
    let res = a.path().join(job_id);
    for f in ["stdout", "stderr", "exitCode", "outputs/report.txt"] {
        assert!(res.join(f).exists(), "missing {f}");
    }
    let report = std::fs::read_to_string(res.join("stdout")).unwrap();
    assert!(report.contains(r#"env=[("GREETING", "hi")]"#), "{report}");
    assert!(report.contains(r#"args=["module.wasm", "report"]"#));
    // The cache was used by the first process only.
    assert!(std::fs::read_dir(&cache_a).unwrap().next().is_some());
}

#[test]
fn human_output_receipt_and_exit_codes() {
    let t = tempfile::tempdir().unwrap();
    let receipt = t.path().join("receipt.json");
    let out = detwasm()
        .args(["run", "--no-cache", "-o"])
        .arg(t.path().join("r"))
        .arg("--receipt")
        .arg(&receipt)
        .args(["--seed", "7", "--epoch", "2024-02-29T12:00:00Z"])
        .arg(fixture("probe.wasm"))
        .args(["--", "exit", "3"])
        .output()
        .unwrap();
    // The module exited 3: the results exist, and the CLI says it did not succeed.
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let cid = stdout.lines().next().unwrap();
    assert!(cid.starts_with("Qm"), "{stdout}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("exit code:    3"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(t.path().join("r/exitCode")).unwrap(),
        "3"
    );
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&receipt).unwrap()).unwrap();
    assert_eq!(r["cid"], cid);
    assert_eq!(r["exit_code"], 3);
    assert_eq!(r["job"]["seed"], 7);
    assert_eq!(r["job"]["epoch_unix_nanos"], 1_709_208_000_000_000_000u64);
    assert_eq!(r["job"]["args"], serde_json::json!(["exit", "3"]));
    assert_eq!(r["detwasm_version"], env!("CARGO_PKG_VERSION"));
    assert!(r["job"]["module"].as_str().unwrap().ends_with("probe.wasm"));
}

#[test]
fn bad_modules_get_an_error_that_says_what_is_wrong() {
    let t = tempfile::tempdir().unwrap();
    let not_wasm = t.path().join("x.wasm");
    std::fs::write(&not_wasm, b"#!/bin/sh\necho hi\n").unwrap();
    let cases = [
        (not_wasm, "not a WebAssembly module"),
        (fixture("bad_import.wat"), "`env`.`host_time`"),
        (fixture("no_start.wat"), "no exported function `_start`"),
    ];
    for (module, want) in cases {
        let dest = t.path().join("res");
        let out = detwasm()
            .args(["run", "--no-cache", "-o"])
            .arg(&dest)
            .arg(&module)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{err}");
        assert!(!dest.exists(), "a failed run left a results directory");
    }
    // --entry picks another export.
    let out = detwasm()
        .args(["run", "--no-cache", "--json", "--entry", "main", "-o"])
        .arg(t.path().join("main"))
        .arg(fixture("no_start.wat"))
        .output()
        .unwrap();
    assert_eq!(json(&out)["exit_code"], 0);
}

#[test]
fn limits_from_the_command_line() {
    let t = tempfile::tempdir().unwrap();
    let run = |name: &str, flags: &[&str], args: &[&str]| {
        let out = detwasm()
            .args(["run", "--json", "-o"])
            .arg(t.path().join(name))
            .args(flags)
            .arg(fixture("probe.wasm"))
            .arg("--")
            .args(args)
            .output()
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let fuel = run("fuel", &["--fuel", "1000000"], &["spin"]);
    assert_eq!(fuel["instructions"], 1_000_000);
    assert!(fuel["trap"].as_str().unwrap().contains("out of fuel"));
    let quota = run("quota", &["--max-output", "8KiB"], &["write", "100000"]);
    assert!(quota["trap"].as_str().unwrap().contains("output quota"));
    let mem = run("mem", &["--memory", "2MiB"], &["grow", "64"]);
    assert_eq!(mem["exit_code"], 0);
    assert_eq!(
        std::fs::read_to_string(t.path().join("mem/stdout")).unwrap(),
        "grow=-1\n"
    );
    let stdin = t.path().join("in.txt");
    std::fs::write(&stdin, "piped").unwrap();
    let s = run(
        "stdin",
        &["--stdin", stdin.to_str().unwrap(), "--env", "A=1"],
        &["report"],
    );
    assert_eq!(s["exit_code"], 0);
    let report = std::fs::read_to_string(t.path().join("stdin/stdout")).unwrap();
    assert!(report.contains(r#"stdin="piped""#) && report.contains(r#"("A", "1")"#));
}

#[test]
fn skip_hidden_matches_detwasm_hash() {
    let t = tempfile::tempdir().unwrap();
    let run = |name: &str, extra: &[&str]| {
        let out = detwasm()
            .args(["run", "--json", "-o"])
            .arg(t.path().join(name))
            .args(extra)
            .arg(fixture("probe.wasm"))
            .args(["--", "report"])
            .output()
            .unwrap();
        json(&out)["cid"].as_str().unwrap().to_string()
    };
    let hash = |dir: &str, extra: &[&str]| {
        let out = detwasm()
            .arg("hash")
            .args(extra)
            .arg(t.path().join(dir))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let all = run("all", &[]);
    let visible = run("visible", &["--skip-hidden"]);
    assert_ne!(all, visible, "the probe writes /outputs/.hidden");
    assert_eq!(
        visible,
        hash("visible", &[]),
        "as `ipfs add -Qrn` (no hidden files)"
    );
    assert_eq!(all, hash("all", &["--hidden"]));
}

#[test]
fn rerunning_a_job_in_the_same_folder_keeps_both_results() {
    let cwd = tempfile::tempdir().unwrap();
    let run = || {
        let out = detwasm()
            .current_dir(cwd.path())
            .args(["run", "--json"])
            .arg(fixture("probe.wasm"))
            .args(["--", "report"])
            .output()
            .unwrap();
        json(&out)
    };
    let (first, second) = (run(), run());
    let id = first["job_id"].as_str().unwrap();
    assert_eq!(first["job_id"], second["job_id"]);
    assert_eq!(first["cid"], second["cid"]);
    assert_eq!(first["instructions"], second["instructions"]);
    // The earlier result is left as it was; the re-run gets a folder of its own.
    assert!(first["results_dir"].as_str().unwrap().ends_with(id));
    let second_dir = PathBuf::from(second["results_dir"].as_str().unwrap());
    assert_eq!(second_dir, cwd.path().join(format!("{id}-2")));
    assert!(second_dir.join("exitCode").is_file());
}

/// The receipt's host statistics: times, memory and where the module came from (compiled
/// on the first run, from the cache on the second), shown on stderr; they change
/// nothing that is verified, and `verify` of a receipt passes whatever they say.
#[test]
fn a_receipt_tells_the_operator_how_the_run_went_outside_what_is_verified() {
    let t = tempfile::tempdir().unwrap();
    let cache = t.path().join("cache");
    let run = |out: &str| {
        detwasm()
            .env("DETWASM_CACHE_DIR", &cache)
            .args(["run", "--json", "--receipt"])
            .arg(t.path().join(format!("{out}.json")))
            .arg("-o")
            .arg(t.path().join(out))
            .arg(fixture("probe.wasm"))
            .args(["--", "report"])
            .output()
            .unwrap()
    };
    let (first, second) = (json(&run("a")), json(&run("b")));
    assert_eq!(first["host"]["module"], "compiled", "{first}");
    assert_eq!(second["host"]["module"], "cache", "{second}");
    for r in [&first, &second] {
        let h = &r["host"];
        let ms = |k: &str| h[k].as_u64().unwrap();
        // Each rounded down to whole milliseconds (a load from the cache can take 0).
        assert!(ms("wall_ms") + 1 >= ms("load_ms") + ms("run_ms"), "{h}");
        assert!(ms("guest_memory_peak_bytes") >= 65536, "{h}");
        assert!(
            ms("process_peak_rss_bytes") > ms("guest_memory_peak_bytes"),
            "{h}"
        );
    }
    let strip = |r: &serde_json::Value| {
        let mut r = r.clone();
        let o = r.as_object_mut().unwrap();
        o.remove("host");
        o.remove("results_dir");
        r
    };
    assert_eq!(strip(&first), strip(&second));
    // A line on stderr says the same.
    let out = detwasm()
        .env("DETWASM_CACHE_DIR", &cache)
        .arg("run")
        .arg("-o")
        .arg(t.path().join("c"))
        .arg(fixture("probe.wasm"))
        .args(["--", "report"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("(module from the cache in "), "{err}");
    // A receipt whose host statistics were changed still verifies.
    let path = t.path().join("a.json");
    let mut edited = first.clone();
    edited["host"]["wall_ms"] = 1.into();
    std::fs::write(&path, edited.to_string()).unwrap();
    let out = detwasm()
        .env("DETWASM_CACHE_DIR", &cache)
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_module_cache_other_users_can_write_is_ignored_with_a_warning() {
    use std::os::unix::fs::PermissionsExt;
    let t = tempfile::tempdir().unwrap();
    let cache = t.path().join("cache");
    std::fs::create_dir(&cache).unwrap();
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = detwasm()
        .env("DETWASM_CACHE_DIR", &cache)
        .args(["run", "--json", "-o"])
        .arg(t.path().join("r"))
        .arg(fixture("probe.wasm"))
        .args(["--", "report"])
        .output()
        .unwrap();
    assert_eq!(json(&out)["exit_code"], 0, "the run itself is unaffected");
    let err = String::from_utf8_lossy(&out.stderr);
    let want = format!(
        "detwasm: warning: not using module cache {}: it is writable by other users (mode 0777)",
        cache.display()
    );
    assert_eq!(err.matches(&want).count(), 1, "warned once: {err}");
    assert!(
        std::fs::read_dir(&cache).unwrap().next().is_none(),
        "nothing was written to the untrusted cache"
    );
}

/// `detwasm` with writes to files limited to `bytes` (RLIMIT_FSIZE): a write beyond fails
/// with EFBIG (SIGXFSZ ignored), as a full disk fails with ENOSPC — without root or a
/// real full filesystem.
fn with_file_size_limit(mut cmd: Command, bytes: u64) -> Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: only async-signal-safe calls (setrlimit, signal) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: bytes as libc::rlim_t,
                rlim_max: bytes as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            Ok(())
        });
    }
    cmd
}

fn staging_folders(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".detwasm-staging-"))
        .collect()
}

#[test]
fn a_full_disk_while_writing_results_leaves_nothing_and_says_so() {
    let t = tempfile::tempdir().unwrap();
    let dest = t.path().join("res");
    // The guest writes 4 MB to /outputs/big.bin (in memory, within its quota); the host
    // can then write only 1 MiB per file. (Not much less: wasmtime sizes memfd-backed
    // memory images with ftruncate, which the same limit applies to.)
    for explicit in [true, false] {
        let mut cmd = detwasm();
        cmd.current_dir(t.path()).args(["run", "--no-cache"]);
        if explicit {
            cmd.arg("-o").arg(&dest);
        }
        cmd.arg(fixture("probe.wasm"))
            .args(["--", "write", "4000000"]);
        let out = with_file_size_limit(cmd, 1 << 20).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains("writing results into "), "{err}");
        assert!(err.contains("File too large (os error 27)"), "{err}");
        assert!(err.contains("nothing was delivered"), "{err}");
        if explicit {
            assert!(err.contains(&dest.display().to_string()), "{err}");
        }
        assert!(out.stdout.is_empty(), "no CID is printed");
        assert!(!err.contains("panicked"), "{err}");
        assert!(!dest.exists(), "no results folder");
        assert_eq!(
            std::fs::read_dir(t.path()).unwrap().count(),
            0,
            "nothing at all remains, no staging folder: {:?}",
            staging_folders(t.path())
        );
    }
}

/// Runs `detwasm run --no-cache -o DIR/res ARGS…` and returns (exit code, stderr).
fn run_expecting_error(dir: &Path, args: &[&std::ffi::OsStr]) -> (Option<i32>, String) {
    let dest = dir.join("res");
    let out = detwasm()
        .args(["run", "--no-cache", "-o"])
        .arg(&dest)
        .args(args)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        !dest.exists(),
        "a failed run left a results directory: {err}"
    );
    (out.status.code(), err)
}

#[test]
fn bad_module_bytes_are_named_with_their_cause() {
    let t = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let p = t.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let probe = std::fs::read(fixture("probe.wasm")).unwrap();
    let cases = [
        (
            write("truncated.wasm", &probe[..probe.len() / 2]),
            "invalid WebAssembly module: the file is truncated",
        ),
        (
            write("header.wasm", b"\0asm\x01\0"),
            "the file is truncated: 6 bytes",
        ),
        (
            write("component.wasm", b"\0asm\x0d\0\x01\0"),
            "this is a WebAssembly component",
        ),
        (write("empty.wasm", b""), "not a WebAssembly module"),
        (
            write("bad.wat", b"(module (func (export \"_start\") i32.add))"),
            "invalid WebAssembly module",
        ),
        (
            fixture("bad_import_type.wat"),
            "with the wrong type: the module expects (func (param i32) (result i32))",
        ),
    ];
    for (module, want) in cases {
        let (code, err) = run_expecting_error(t.path(), &[module.as_os_str()]);
        assert_eq!(code, Some(2), "{err}");
        assert!(err.contains(want), "{}: {err}", module.display());
        assert!(
            err.contains(&*module.to_string_lossy()),
            "the error names the file: {err}"
        );
    }
    // A missing module file: named, with the OS's reason.
    let missing = t.path().join("nope.wasm");
    let (code, err) = run_expecting_error(t.path(), &[missing.as_os_str()]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("nope.wasm") && err.contains("No such file or directory"),
        "{err}"
    );
}

#[test]
fn a_wrong_entry_point_is_refused_before_running() {
    let t = tempfile::tempdir().unwrap();
    let wat = |name: &str, text: &str| {
        let p = t.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let typed = wat(
        "typed.wat",
        r#"(module (func (export "_start") (param i32)))"#,
    );
    let (code, err) = run_expecting_error(t.path(), &[typed.as_os_str()]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("entry `_start` must take no parameters and return nothing"),
        "{err}"
    );
    // An export of that name that is not a function.
    let (code, err) = run_expecting_error(
        t.path(),
        &[
            "--entry".as_ref(),
            "memory".as_ref(),
            fixture("no_start.wat").as_os_str(),
        ],
    );
    assert_eq!(code, Some(2));
    assert!(err.contains("no exported function `memory`"), "{err}");
}

/// A module of `n` functions with long bodies whose only import is one detwasm does not
/// provide, and whose last function is invalid (`i32.add` on an empty stack): an error
/// about the import, not about the invalid code, shows that the import was checked
/// before compiling.
fn large_module_with_a_bad_import(n: u32) -> Vec<u8> {
    fn leb(mut v: u32, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }
    fn section(id: u8, body: &[u8], out: &mut Vec<u8>) {
        out.push(id);
        leb(body.len() as u32, out);
        out.extend_from_slice(body);
    }
    let mut m = b"\0asm\x01\0\0\0".to_vec();
    section(1, &[1, 0x60, 0, 0], &mut m); // type 0: () -> ()
    let mut imports = vec![1, 3];
    imports.extend_from_slice(b"env");
    imports.push(4);
    imports.extend_from_slice(b"nope");
    imports.extend_from_slice(&[0, 0]); // func, type 0
    section(2, &imports, &mut m);
    let mut funcs = Vec::new();
    leb(n, &mut funcs);
    funcs.extend(std::iter::repeat_n(0u8, n as usize));
    section(3, &funcs, &mut m);
    section(7, &[1, 6, b'_', b's', b't', b'a', b'r', b't', 0, 1], &mut m); // export func 1
                                                                           // Each body: no locals, 2000 × (i32.const 1; drop), end.
    let mut body = vec![0];
    for _ in 0..2000 {
        body.extend_from_slice(&[0x41, 1, 0x1a]);
    }
    body.push(0x0b);
    let mut code = Vec::new();
    leb(n, &mut code);
    for _ in 1..n {
        leb(body.len() as u32, &mut code);
        code.extend_from_slice(&body);
    }
    code.extend_from_slice(&[3, 0, 0x6a, 0x0b]); // (func i32.add): invalid
    section(10, &code, &mut m);
    m
}

#[test]
fn an_unknown_import_of_a_large_module_is_refused_before_compiling() {
    let t = tempfile::tempdir().unwrap();
    // 12 MB of code: seconds to compile (were it valid), milliseconds to refuse.
    let module = t.path().join("large.wasm");
    std::fs::write(&module, large_module_with_a_bad_import(2000)).unwrap();
    let start = std::time::Instant::now();
    let (code, err) = run_expecting_error(t.path(), &[module.as_os_str()]);
    let took = start.elapsed();
    assert_eq!(code, Some(2));
    assert!(err.contains("imports `env`.`nope`"), "{err}");
    assert!(
        !err.contains("invalid WebAssembly"),
        "compiled first: {err}"
    );
    assert!(
        took < std::time::Duration::from_secs(10),
        "took {took:?}: the module was compiled before its imports were checked"
    );
}

#[test]
fn an_unreadable_input_folder_is_named_with_the_os_cause() {
    let t = tempfile::tempdir().unwrap();
    let file = t.path().join("afile");
    std::fs::write(&file, "x").unwrap();
    for (input, cause) in [
        (t.path().join("missing"), "No such file or directory"),
        (file, "Not a directory"),
    ] {
        let (code, err) = run_expecting_error(
            t.path(),
            &[
                "--input".as_ref(),
                input.as_os_str(),
                fixture("probe.wasm").as_os_str(),
            ],
        );
        assert_eq!(code, Some(2));
        assert!(err.contains(&*input.to_string_lossy()), "{err}");
        assert!(err.contains(cause), "{err}");
    }
}

#[test]
fn numbers_out_of_range_on_the_command_line_are_clear_errors() {
    let t = tempfile::tempdir().unwrap();
    let probe = fixture("probe.wasm");
    let cases: [(&[&str], &str); 9] = [
        (&["--timeout", "1e300"], "at most 2592000 seconds"),
        (
            &["--timeout", "18446744073709551616"],
            "at most 2592000 seconds",
        ),
        (&["--timeout", "inf"], "must be a positive number"),
        (&["--timeout", "NaN"], "must be a positive number"),
        (&["--timeout", "-1"], "must be a positive number"),
        (&["--fuel", "0"], "--fuel: must be at least 1"),
        (&["--memory", "99999999999999999999"], "too large"),
        (&["--memory", "17179869184GiB"], "too large"),
        (&["--max-output", "18446744073709551615KiB"], "too large"),
    ];
    for (flags, want) in cases {
        let mut args: Vec<&std::ffi::OsStr> = flags.iter().map(|f| f.as_ref()).collect();
        args.push(probe.as_os_str());
        let (code, err) = run_expecting_error(t.path(), &args);
        assert_eq!(code, Some(2), "{flags:?}: {err}");
        assert!(err.contains(want), "{flags:?}: {err}");
    }
}

#[test]
fn json_into_a_closed_pipe_exits_quietly() {
    use std::os::fd::{FromRawFd, OwnedFd};
    let t = tempfile::tempdir().unwrap();
    let mut fds = [0; 2];
    // SAFETY: pipe writes two new descriptors into `fds`.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: both descriptors were just created and are owned here only.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(read); // the reader went away before detwasm writes
    let receipt = t.path().join("receipt.json");
    let out = detwasm()
        .args(["run", "--no-cache", "--json", "-o"])
        .arg(t.path().join("r"))
        .arg("--receipt")
        .arg(&receipt)
        .arg(fixture("probe.wasm"))
        .args(["--", "report"])
        .stdout(std::process::Stdio::from(write))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.is_empty(), "quiet: {err}");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{:?}", out.status);
    // What was done before the output stays done.
    assert!(t.path().join("r/exitCode").is_file());
    assert!(receipt.is_file());
}

#[test]
fn a_receipt_that_cannot_be_written_does_not_fail_a_delivered_run() {
    let t = tempfile::tempdir().unwrap();
    let not_a_dir = t.path().join("file");
    std::fs::write(&not_a_dir, "x").unwrap();
    // Under a regular file: unwritable even for root.
    let receipt = not_a_dir.join("receipt.json");
    let dest = t.path().join("r");
    let out = detwasm()
        .args(["run", "--no-cache", "-o"])
        .arg(&dest)
        .arg("--receipt")
        .arg(&receipt)
        .arg(fixture("probe.wasm"))
        .args(["--", "report"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "the exit code follows the run: {err}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("Qm"), "the CID is printed: {stdout}");
    assert!(
        err.contains(&format!(
            "detwasm: warning: the results were delivered at {}, but the receipt could not be written to {}",
            dest.display(),
            receipt.display()
        )),
        "{err}"
    );
    assert!(err.contains("Not a directory"), "{err}");
    assert!(!err.contains("error:"), "{err}");
    assert!(dest.join("exitCode").is_file());
    // A guest that exits 3: still 1, as without --receipt.
    let out = detwasm()
        .args(["run", "--no-cache", "-o"])
        .arg(t.path().join("r3"))
        .arg("--receipt")
        .arg(&receipt)
        .arg(fixture("probe.wasm"))
        .args(["--", "exit", "3"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

/// A module that writes `out` to stdout and `err` to stderr, then traps (`unreachable`)
/// or spins until its fuel ends.
fn writer(dir: &Path, out: &str, err: &str, then: &str) -> PathBuf {
    let wat = format!(
        r#"(module
          (import "wasi_snapshot_preview1" "fd_write"
            (func $w (param i32 i32 i32 i32) (result i32)))
          (memory (export "memory") 1)
          (data (i32.const 64) {out:?})
          (data (i32.const 512) {err:?})
          (func (export "_start")
            (i32.store (i32.const 0) (i32.const 64))
            (i32.store (i32.const 4) (i32.const {}))
            (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 16)))
            (i32.store (i32.const 0) (i32.const 512))
            (i32.store (i32.const 4) (i32.const {}))
            (drop (call $w (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 16)))
            {then}))"#,
        out.len(),
        err.len()
    );
    let path = dir.join("writer.wat");
    std::fs::write(&path, wat).unwrap();
    path
}

/// What a module prints is shown as it runs with --live (on detwasm's stderr, while the
/// run goes on; detwasm's stdout stays the CID), and is captured in the results either
/// way. A run that traps without --live shows the end of its stderr beside the trap (a
/// Rust panic's message is there); -q shows neither.
#[test]
fn output_is_shown_live_and_a_traps_stderr_tail_beside_it() {
    use std::io::BufRead;
    let t = tempfile::tempdir().unwrap();
    let spin = writer(t.path(), "ready\n", "working\n", "(loop br 0)");
    let mut child = detwasm()
        .current_dir(t.path())
        .args(["run", "--live", "--fuel", "100000000000", "--timeout", "60"])
        .arg(&spin)
        .args(["-o", "spun"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let mut line = String::new();
        assert!(err.read_line(&mut line).unwrap() > 0, "ended: {seen:?}");
        seen.push(line);
    }
    assert_eq!(seen, ["ready\n", "working\n"]);
    assert!(child.try_wait().unwrap().is_none(), "shown while it runs");
    child.kill().unwrap();
    child.wait().unwrap();

    let trap = writer(
        t.path(),
        "partial\n",
        "thread 'main' panicked at src/main.rs:3:5:\nboom\n",
        "unreachable",
    );
    let out = detwasm()
        .current_dir(t.path())
        .arg("run")
        .arg(&trap)
        .args(["-o", "trapped"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let cid = String::from_utf8(out.stdout.clone()).unwrap();
    assert!(
        cid.trim().starts_with("Qm") && cid.lines().count() == 1,
        "{cid}"
    );
    let shown = String::from_utf8_lossy(&out.stderr);
    assert!(
        shown.contains("ended by:     wasm trap: wasm `unreachable` instruction executed")
            && shown.contains("the end of its stderr")
            && shown.contains("  | thread 'main' panicked at src/main.rs:3:5:\n  | boom"),
        "{shown}"
    );
    assert!(
        !shown.contains("partial"),
        "stdout is not shown after the run"
    );
    assert_eq!(
        std::fs::read_to_string(t.path().join("trapped/stdout")).unwrap(),
        "partial\n"
    );
    let quiet = detwasm()
        .current_dir(t.path())
        .args(["run", "-q"])
        .arg(&trap)
        .args(["-o", "quiet"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&quiet.stderr).contains("boom"));
    let live = detwasm()
        .current_dir(t.path())
        .args(["run", "--live"])
        .arg(&trap)
        .args(["-o", "live"])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&live.stderr);
    assert!(
        shown.starts_with("partial\nthread 'main' panicked"),
        "{shown}"
    );
    assert!(!shown.contains("the end of its stderr"), "shown once, live");
}

/// `run --json` of a job that cannot run prints a JSON error on stdout (and the message
/// on stderr), exit 2.
#[test]
fn a_run_that_cannot_start_prints_a_json_error_with_json() {
    let t = tempfile::tempdir().unwrap();
    let out = detwasm()
        .current_dir(t.path())
        .args(["run", "missing.wasm", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["exit_code"], 2);
    assert!(v["error"].as_str().unwrap().contains("missing.wasm"), "{v}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("detwasm: error:"));
}

/// `--stdin -` gives the module detwasm's own stdin: the same job (and receipt) as
/// `--stdin FILE` of the same bytes.
#[test]
fn stdin_dash_is_detwasms_own_stdin() {
    use std::io::Write;
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("in.txt"), "piped bytes\n").unwrap();
    let probe = fixture("probe.wasm");
    let from_file = detwasm()
        .current_dir(t.path())
        .args(["run", "--json", "--stdin", "in.txt", "-o", "a"])
        .arg(&probe)
        .args(["--", "report"])
        .output()
        .unwrap();
    let mut child = detwasm()
        .current_dir(t.path())
        .args(["run", "--json", "--stdin", "-", "-o", "b"])
        .arg(&probe)
        .args(["--", "report"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Written from a thread: the child reads it once it has built the job.
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(b"piped bytes\n"));
    let from_pipe = child.wait_with_output().unwrap();
    let written = writer.join().unwrap();
    assert!(
        written.is_ok(),
        "{written:?}: {}",
        String::from_utf8_lossy(&from_pipe.stderr)
    );
    let (a, b) = (receipt(&from_file), receipt(&from_pipe));
    assert_eq!((&a["cid"], &a["job_id"]), (&b["cid"], &b["job_id"]));
    assert_eq!(b["job"]["stdin_bytes"], 12);
}

/// An input may be a CAR file of a folder (`hash --car`, `ipfs dag export`): `run`
/// mounts the folder it holds, with the CID and results of the folder itself, and
/// `verify --input x.car:GUEST` re-runs from the same CAR; a CAR of a file is refused
/// with the reason, and a corrupt one names the block.
#[test]
fn an_input_may_be_a_car_of_a_folder() {
    let t = tempfile::tempdir().unwrap();
    make_inputs(&t.path().join("data"), false);
    let car = t.path().join("data.car");
    ok(&detwasm()
        .args(["hash", "--hidden", "--car"])
        .arg(&car)
        .arg(t.path().join("data"))
        .output()
        .unwrap());
    let run = |input: &str, out: &str| {
        detwasm()
            .current_dir(t.path())
            .args(["run", "--json", "--input", input, "-o", out, "--receipt"])
            .arg(format!("{out}.json"))
            .arg(fixture("probe.wasm"))
            .args(["--", "report"])
            .output()
            .unwrap()
    };
    let folder = json(&run("data:/data", "a"));
    let from_car = json(&run("data.car:/data", "b"));
    assert_eq!(from_car["cid"], folder["cid"]);
    assert_eq!(from_car["job_id"], folder["job_id"]);
    assert_eq!(
        from_car["job"]["inputs"][0]["cid"],
        folder["job"]["inputs"][0]["cid"]
    );
    let verified = detwasm()
        .current_dir(t.path())
        .args(["verify", "b.json", "--input", "data.car:/data"])
        .output()
        .unwrap();
    assert!(ok(&verified).starts_with("verified"));

    ok(&detwasm()
        .args(["hash", "--car"])
        .arg(t.path().join("file.car"))
        .arg(t.path().join("data/a.txt"))
        .output()
        .unwrap());
    let e = failed(&run("file.car:/data", "c"));
    assert!(
        e.contains("holds a file") && e.contains("not a folder"),
        "{e}"
    );
    let mut bytes = std::fs::read(&car).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(t.path().join("bad.car"), bytes).unwrap();
    let e = failed(&run("bad.car:/data", "d"));
    assert!(e.contains("corrupt CAR"), "{e}");
}
