//! `detwasm run --checkpoints`, `detwasm resume` and `detwasm verify --sample` end to end:
//! a job resumed from one of its snapshots ends with the uninterrupted run's receipt; a
//! spot check of an honest trace is verified; a fabricated result, a fabricated
//! snapshot and a trace that skips work are caught, with the segment named; a dispute
//! between two traces is settled by re-running the one segment where they part.

mod cli_support;
use cli_support::*;

use std::path::{Path, PathBuf};

fn probe() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/probes/probe.wasm")
}

/// A provider's run with checkpoints: the probe's float work (238 M instructions) with a
/// checkpoint every 20 M instructions and an input folder. Returns (workdir, receipt).
fn provider_run() -> (tempfile::TempDir, serde_json::Value) {
    let t = tempfile::tempdir().unwrap();
    std::fs::create_dir(t.path().join("in")).unwrap();
    std::fs::write(t.path().join("in/data.txt"), "some input\n").unwrap();
    std::fs::copy(probe(), t.path().join("probe.wasm")).unwrap();
    let out = detwasm()
        .current_dir(t.path())
        .args([
            "run",
            "probe.wasm",
            "--input",
            "in",
            "--checkpoints",
            "cp",
            "--checkpoint-every",
            "20000000",
            "-o",
            "results",
            "--receipt",
            "receipt.json",
            "--",
            "float",
            "200000",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let receipt: serde_json::Value =
        serde_json::from_slice(&std::fs::read(t.path().join("receipt.json")).unwrap()).unwrap();
    (t, receipt)
}

fn snapshots(r: &serde_json::Value) -> Vec<String> {
    r["trace"]["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// `detwasm verify RECEIPT --sample K --snapshots cp --json` in `dir`.
fn spot_check(dir: &Path, receipt: &str, k: &str, seed: &str) -> (i32, serde_json::Value) {
    let out = detwasm()
        .current_dir(dir)
        .args([
            "verify",
            receipt,
            "--sample",
            k,
            "--snapshots",
            "cp",
            "--seed",
            seed,
            "--json",
        ])
        .output()
        .unwrap();
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no report ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap(), report)
}

#[test]
fn a_job_resumed_from_a_snapshot_ends_with_the_uninterrupted_receipt() {
    let (t, full) = provider_run();
    let trace = snapshots(&full);
    assert!(trace.len() >= 10, "{full}");
    assert!(t.path().join("cp/job.json").is_file());
    // The snapshot folders hash (as `detwasm hash` does) to the trace's CIDs.
    let hashed = detwasm()
        .current_dir(t.path())
        .args(["hash", "cp/000004"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&hashed.stdout).trim(), trace[3]);
    // From another folder: job.json names the module and the input by absolute paths.
    let elsewhere = tempfile::tempdir().unwrap();
    let snapshot = t.path().join("cp/000004");
    let out = detwasm()
        .current_dir(elsewhere.path())
        .arg("resume")
        .arg(&snapshot)
        .args(["--json", "-o", "resumed", "--checkpoints", "more"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let resumed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in ["cid", "instructions", "exit_code", "job_id", "trace"] {
        assert_eq!(resumed[key], full[key], "{key}");
    }
    // The same job, its host paths made absolute by job.json.
    assert_eq!(resumed["job"]["args"], full["job"]["args"]);
    assert_eq!(
        resumed["job"]["inputs"][0]["cid"],
        full["job"]["inputs"][0]["cid"]
    );
    // The rest of the run's snapshots were made again, the first after the one resumed.
    let remade: Vec<_> = std::fs::read_dir(elsewhere.path().join("more"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().is_dir())
        .collect();
    assert_eq!(remade.len(), trace.len() - 4);
    // Another job's snapshot is refused with the reason.
    let out = detwasm()
        .current_dir(t.path())
        .args(["resume", "cp/000004", "--module"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/modules/cowsay.wasm"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not the module the job ran"), "{err}");
    // A job.json whose module is a FIFO is refused at once (no writer is waited for),
    // and a job.json that is itself a FIFO is ignored as if it were absent.
    let fifo = |p: &Path| {
        let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a NUL-terminated path that outlives the call.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    };
    let job_json = t.path().join("cp/job.json");
    let mut record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&job_json).unwrap()).unwrap();
    record["module"] = t.path().join("module-fifo").display().to_string().into();
    fifo(&t.path().join("module-fifo"));
    std::fs::write(&job_json, serde_json::to_vec(&record).unwrap()).unwrap();
    let refused = |out: std::process::Output| {
        assert_eq!(out.status.code(), Some(2));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = refused(resume_within_a_minute(&snapshot));
    assert!(err.contains("not a regular file"), "{err}");
    std::fs::remove_file(&job_json).unwrap();
    fifo(&job_json);
    let err = refused(resume_within_a_minute(&snapshot));
    assert!(err.contains("module"), "{err}");
}

/// `detwasm resume SNAPSHOT --json`, in a folder of its own, which must end within a
/// minute (it is killed and the test fails otherwise).
fn resume_within_a_minute(snapshot: &Path) -> std::process::Output {
    let out = tempfile::tempdir().unwrap();
    let mut child = detwasm()
        .current_dir(out.path())
        .arg("resume")
        .arg(snapshot)
        .arg("--json")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > std::time::Duration::from_secs(60) {
            child.kill().unwrap();
            panic!("resume still running after a minute");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// Found by review: the fuel a snapshot's innermost frame saved was restored as it was,
/// so a forged positive fuel skipped the `refuel` the rewind ends at and every later
/// check of the budget and the deadline: a resumed endless loop ran for good. Every
/// rewinding frame now takes its fuel from the fuel global, which the host checks
/// against the snapshot's meter before the rewind and again at its `refuel`.
#[test]
fn a_forged_fuel_in_a_snapshot_neither_escapes_the_timeout_nor_makes_a_result() {
    let t = tempfile::tempdir().unwrap();
    std::fs::write(
        t.path().join("loop.wat"),
        r#"(module (func (export "_start") (loop (br 0))))"#,
    )
    .unwrap();
    let out = detwasm()
        .current_dir(t.path())
        // A budget no host runs in 2 s: the timeout ends the run, never the fuel (with
        // the default of 1e9 a second, a fast host ran out of fuel first: flaky).
        .args([
            "run",
            "--timeout",
            "2",
            "--fuel",
            "1000000000000",
            "--checkpoints",
            "cp",
        ])
        .args(["--checkpoint-every", "20000000", "-o", "r", "loop.wat"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", failed(&out));
    let snapshot = t.path().join("cp/000002");
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(snapshot.join("state.json")).unwrap()).unwrap();
    let handed = state["meter"]["handed"].as_u64().unwrap();
    let at = state["instructions"].as_u64().unwrap();
    let fuel = (handed as i64 - at as i64).to_le_bytes();
    // The innermost frame's fuel, made huge: ignored, the run ends at the job's timeout.
    let frames = std::fs::read(snapshot.join("frames")).unwrap();
    let i = frames
        .windows(8)
        .position(|w| w == fuel)
        .expect("the fuel in the frames");
    let mut forged = frames.clone();
    forged[i..i + 8].copy_from_slice(&i64::MAX.to_le_bytes());
    std::fs::write(snapshot.join("frames"), &forged).unwrap();
    let out = resume_within_a_minute(&snapshot);
    assert_eq!(out.status.code(), Some(1), "{}", failed(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["outcome"], "timeout", "{r}");
    // The fuel global, made huge: refused before the guest runs, as a forged snapshot.
    std::fs::write(snapshot.join("frames"), &frames).unwrap();
    let mut forged = state.clone();
    let globals = forged["globals"].as_array_mut().unwrap();
    let g = globals
        .iter_mut()
        .find(|g| g["bits"] == format!("{:#x}", i64::from_le_bytes(fuel)))
        .expect("the fuel global");
    g["bits"] = format!("{:#x}", i64::MAX).into();
    std::fs::write(
        snapshot.join("state.json"),
        serde_json::to_vec(&forged).unwrap(),
    )
    .unwrap();
    let out = resume_within_a_minute(&snapshot);
    assert_eq!(out.status.code(), Some(2), "{}", failed(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not a snapshot this run can resume") && err.contains("fuel"),
        "{err}"
    );
    // A trace padded with empty entries (found by review: 1.5 GiB parsed, and carried
    // into the resumed receipt), or longer than the checkpoints taken: refused.
    for (trace, why) in [
        (serde_json::json!(["", "", ""]), "not a CID"),
        (
            serde_json::json!([state["trace"][0].clone(), state["trace"][0].clone()]),
            "a trace of 2",
        ),
    ] {
        let mut forged = state.clone();
        forged["trace"] = trace;
        std::fs::write(
            snapshot.join("state.json"),
            serde_json::to_vec(&forged).unwrap(),
        )
        .unwrap();
        let out = resume_within_a_minute(&snapshot);
        assert_eq!(out.status.code(), Some(2), "{}", failed(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(why), "{err}");
    }
}

/// A run stopped by its timeout before its first checkpoint saved a snapshot off the
/// trace, with no checkpoint taken: it is resumed (it was refused as a meter no run can
/// reach).
#[test]
fn a_timeout_before_the_first_checkpoint_is_resumed() {
    let t = tempfile::tempdir().unwrap();
    std::fs::write(
        t.path().join("loop.wat"),
        r#"(module (func (export "_start") (loop (br 0))))"#,
    )
    .unwrap();
    let out = detwasm()
        .current_dir(t.path())
        .args(["run", "--timeout", "1", "--checkpoints", "cp", "--json"])
        // Fuel far above what a second runs (the default, 1e9 per second of the
        // timeout, can run out first on a fast machine).
        .args(["--fuel", "1000000000000000"])
        .args([
            "--checkpoint-every",
            "1000000000000000",
            "-o",
            "r",
            "loop.wat",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", failed(&out));
    let first: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let out = resume_within_a_minute(&t.path().join("cp/timeout"));
    assert_eq!(out.status.code(), Some(1), "{}", failed(&out));
    let resumed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(resumed["outcome"], "timeout");
    assert!(
        resumed["instructions"].as_u64() > first["instructions"].as_u64(),
        "{resumed}"
    );
}

#[test]
fn a_spot_check_verifies_an_honest_trace_and_catches_fabrications() {
    let (t, full) = provider_run();
    let trace = snapshots(&full);
    let n = trace.len();
    // Honest: three segments, the last always among them; and all of them.
    let (code, report) = spot_check(t.path(), "receipt.json", "3", "7");
    assert_eq!(code, 0, "{report}");
    let checked = report["checked"].as_array().unwrap();
    assert_eq!(checked.len(), 3);
    assert_eq!(checked[2]["segment"], n);
    assert_eq!(report["segments"], n + 1);
    let (code, report) = spot_check(t.path(), "receipt.json", "1000", "7");
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["checked"].as_array().unwrap().len(), n + 1);

    // A fabricated result: the claimed CID is caught by the last segment.
    let mut fake = full.clone();
    fake["cid"] = serde_json::json!("QmWUXBndMuq2G6B6ndQCmkRHjZ6CvyJ8qLxXBG3YsSFzQG");
    std::fs::write(t.path().join("fake_result.json"), fake.to_string()).unwrap();
    let (code, report) = spot_check(t.path(), "fake_result.json", "1", "7");
    assert_eq!(code, 1, "{report}");
    let reason = report["checked"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("the receipt claims"), "{reason}");

    // Skipped work: the provider made snapshot 6 up (here: snapshot 5's state with a
    // byte of memory changed) and put its CID in the trace. Snapshot 6 hashes to the
    // trace, so only the segment that should lead to it finds out: 5 to 6.
    let forged = t.path().join("cp/000006");
    std::fs::remove_dir_all(&forged).unwrap();
    copy_dir(&t.path().join("cp/000005"), &forged);
    let memory = forged.join("memory/0");
    let mut bytes = std::fs::read(&memory).unwrap();
    bytes[70_000] ^= 1;
    std::fs::write(&memory, bytes).unwrap();
    let forged_cid = detwasm().args(["hash"]).arg(&forged).output().unwrap();
    let forged_cid = String::from_utf8_lossy(&forged_cid.stdout)
        .trim()
        .to_string();
    let mut skipped = full.clone();
    skipped["trace"]["snapshots"][5] = serde_json::json!(forged_cid);
    std::fs::write(t.path().join("skipped.json"), skipped.to_string()).unwrap();
    let (code, report) = spot_check(t.path(), "skipped.json", "1000", "7");
    assert_eq!(code, 1, "{report}");
    let bad: Vec<u64> = report["checked"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] == false)
        .map(|c| c["segment"].as_u64().unwrap())
        .collect();
    // Segment 5 ends at a state the job does not reach; segment 6 starts from the forged
    // snapshot, which does not lead to snapshot 7.
    assert!(bad.contains(&5), "{report}");
    // The dispute between the honest receipt and the one that skipped work, settled by
    // re-running only segment 5 (from snapshot 5, which both traces name).
    for (a, b, right, code) in [
        ("receipt.json", "skipped.json", "a", 0),
        ("skipped.json", "receipt.json", "b", 1),
    ] {
        let out = detwasm()
            .current_dir(t.path())
            .args(["verify", a, "--bisect", b, "--snapshots", "cp", "--json"])
            .output()
            .unwrap();
        let report: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        assert_eq!(report["segment"], 5, "{report}");
        assert_eq!(report["right"], right, "{report}");
        assert_eq!(report["actual"], trace[5].as_str());
        assert_eq!(out.status.code(), Some(code));
    }
    // Against the honest receipt, the forged folder no longer hashes to the trace.
    let (code, report) = spot_check(t.path(), "receipt.json", "1000", "7");
    assert_eq!(code, 1, "{report}");
    let reason = report["checked"][6]["reason"].as_str().unwrap();
    assert!(reason.contains("not the trace's"), "{reason}");
}

/// Found by review: a spot check compared only the trace, so a receipt relabelled with
/// another job's id (or saying its run was not verifiable) was verified; and every
/// failure of the verifier's own machine was reported as a MISMATCH against the provider.
#[test]
fn a_spot_check_holds_the_receipt_to_its_job_and_leaves_this_machines_failures_open() {
    let (t, full) = provider_run();
    let n = snapshots(&full).len();
    let write = |name: &str, r: &serde_json::Value| {
        std::fs::write(t.path().join(name), r.to_string()).unwrap();
    };
    // The receipt's own claims about its job, each caught before any segment runs.
    for (field, value, says) in [
        ("job_id", serde_json::json!("0".repeat(64)), "job id"),
        ("verifiable", serde_json::json!(false), "not verifiable"),
        (
            "module_cid",
            serde_json::json!("QmWUXBndMuq2G6B6ndQCmkRHjZ6CvyJ8qLxXBG3YsSFzQG"),
            "module CID",
        ),
    ] {
        let mut forged = full.clone();
        forged[field] = value;
        write("forged.json", &forged);
        let (code, report) = spot_check(t.path(), "forged.json", "3", "7");
        assert_eq!(code, 1, "{field}: {report}");
        assert_eq!(report["verified"], false);
        assert_eq!(report["job_id"], full["job_id"], "{report}");
        let reasons = report["reasons"].as_array().unwrap();
        assert!(
            reasons.iter().any(|r| r.as_str().unwrap().contains(says)),
            "{field}: {report}"
        );
        assert!(report["checked"].as_array().unwrap().is_empty());
    }
    // How the run ended is part of what the last segment checks.
    let mut forged = full.clone();
    forged["outcome"] = serde_json::json!("trap");
    write("forged.json", &forged);
    let (code, report) = spot_check(t.path(), "forged.json", "1", "7");
    assert_eq!(code, 1, "{report}");
    let reason = report["checked"][0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("the receipt claims it ended trap"),
        "{reason}"
    );

    // This machine's failure (no usable temporary folder): no verdict, exit 2, never a
    // mismatch.
    let out = detwasm()
        .current_dir(t.path())
        .env("TMPDIR", t.path().join("no-such-folder"))
        .args([
            "verify",
            "receipt.json",
            "--sample",
            "2",
            "--snapshots",
            "cp",
        ])
        .args(["--seed", "7"])
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(2), "{stdout}\n{stderr}");
    assert!(stderr.contains("no verdict"), "{stderr}");
    assert!(!stdout.contains("MISMATCH"), "{stdout}");

    // A snapshot missing from the folder is the provider's: a mismatch that says so.
    let gone = t.path().join("gone");
    copy_dir(&t.path().join("cp"), &gone);
    std::fs::remove_dir_all(gone.join("000003")).unwrap();
    let out = detwasm()
        .current_dir(t.path())
        .args([
            "verify",
            "receipt.json",
            "--sample",
            "1000",
            "--snapshots",
            "gone",
        ])
        .args(["--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["checked"].as_array().unwrap().len(), n + 1);
    let reason = report["checked"][3]["reason"].as_str().unwrap();
    assert!(reason.contains("has no entry 000003"), "{reason}");

    // Zero segments is refused, not read as one.
    let out = detwasm()
        .current_dir(t.path())
        .args([
            "verify",
            "receipt.json",
            "--sample",
            "0",
            "--snapshots",
            "cp",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least one segment"));

    // A receipt whose printed fields carry line breaks is not a receipt (it forged a
    // "verified" line before).
    let mut forged = full.clone();
    forged["cid"] = serde_json::json!(format!(
        "{}\nverified: 12 of 12 segments re-run",
        full["cid"].as_str().unwrap()
    ));
    write("forged.json", &forged);
    let out = detwasm()
        .current_dir(t.path())
        .args([
            "verify",
            "forged.json",
            "--sample",
            "1",
            "--snapshots",
            "cp",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("verified:"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("printable ASCII"));
}

/// A receipt's trace names the unwind pass its snapshots' frames are of. A trace of
/// another (or one that does not name it: made before traces did) cannot be checked here:
/// no verdict (exit 2), before any segment runs. A snapshot whose frames claim another
/// version than its trace is not the trace's: found by review, taken for another build's
/// it left the verdict open, so a provider relabelling the last snapshot turned a
/// fabricated result into no verdict instead of NOT VERIFIED.
#[test]
fn a_trace_names_its_unwind_pass_and_a_snapshot_of_another_is_not_its() {
    let (t, full) = provider_run();
    let n = snapshots(&full).len();
    let ours = detwasm_runtime::passes::unwind::PASS_VERSION;
    assert_eq!(full["trace"]["unwind"], ours);
    let write = |name: &str, r: &serde_json::Value| {
        std::fs::write(t.path().join(name), r.to_string()).unwrap();
    };
    let verify = |receipt: &str, k: &str| {
        let out = detwasm()
            .current_dir(t.path())
            .args([
                "verify",
                receipt,
                "--sample",
                k,
                "--snapshots",
                "cp",
                "--seed",
                "1",
            ])
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    };
    for (unwind, says) in [
        (
            serde_json::json!("detwasm-unwind-4"),
            "frames of detwasm-unwind-4;",
        ),
        (serde_json::Value::Null, "detwasm-unwind-4 or older"),
    ] {
        let mut other = full.clone();
        match unwind {
            serde_json::Value::Null => {
                other["trace"].as_object_mut().unwrap().remove("unwind");
            }
            v => other["trace"]["unwind"] = v,
        }
        write("other.json", &other);
        let (code, text) = verify("other.json", "3");
        assert_eq!(code, Some(2), "{text}");
        assert!(text.contains(says), "{text}");
        assert!(!text.contains("MISMATCH"), "{text}");
    }

    // The provider fabricates the result and relabels the last snapshot's frames (its
    // CID put in the trace): the last segment, always checked, counts it against it.
    let last = t.path().join(format!("cp/{n:06}/state.json"));
    let text = std::fs::read_to_string(&last).unwrap();
    assert!(text.contains(ours));
    std::fs::write(&last, text.replace(ours, "detwasm-unwind-0")).unwrap();
    let cid = detwasm()
        .args(["hash"])
        .arg(t.path().join(format!("cp/{n:06}")))
        .output()
        .unwrap();
    let mut forged = full.clone();
    forged["trace"]["snapshots"][n - 1] =
        serde_json::json!(String::from_utf8_lossy(&cid.stdout).trim());
    forged["cid"] = serde_json::json!("QmWUXBndMuq2G6B6ndQCmkRHjZ6CvyJ8qLxXBG3YsSFzQG");
    forged["instructions"] = serde_json::json!(1);
    write("forged.json", &forged);
    let (code, text) = verify("forged.json", "1");
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("its frames are of detwasm-unwind-0"),
        "{text}"
    );
    assert!(text.contains("NOT VERIFIED"), "{text}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// A run the wall-clock timeout stops saves a snapshot there (off the trace, or the
/// checkpoint it stopped at), and its receipt says where to resume; resumed again and
/// again (each resume has the job's timeout too), the job ends as one run without a
/// timeout ends: same results CID, instruction count, outcome and number of checkpoints.
#[test]
fn a_run_stopped_by_its_timeout_is_resumed_to_the_end() {
    let t = tempfile::tempdir().unwrap();
    std::fs::copy(probe(), t.path().join("probe.wasm")).unwrap();
    let run = |args: &[&str]| -> serde_json::Value {
        let out = detwasm().current_dir(t.path()).args(args).output().unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{args:?}: no receipt ({e}): {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
    };
    let job = ["--checkpoint-every", "100000000", "--fuel", "3000000000"];
    let whole = run(&[
        &[
            "run",
            "--json",
            "-o",
            "whole",
            "--checkpoints",
            "whole-cp",
            "--timeout",
            "600",
        ][..],
        &job,
        &["probe.wasm", "--", "spin"],
    ]
    .concat());
    assert_eq!(whole["outcome"], "out_of_fuel");
    let mut r = run(&[
        &[
            "run",
            "--json",
            "-o",
            "r0",
            "--checkpoints",
            "cp0",
            "--timeout",
            "0.2",
        ][..],
        &job,
        &["probe.wasm", "--", "spin"],
    ]
    .concat());
    assert_eq!(r["outcome"], "timeout", "{r}");
    assert_eq!(r["verifiable"], false);
    let mut stops = 0;
    while let Some(at) = r["trace"]["resume"].as_str() {
        stops += 1;
        assert!(stops < 100, "no progress: {r}");
        let snapshot = format!("cp{}/{at}", stops - 1);
        let (out, cp) = (format!("r{stops}"), format!("cp{stops}"));
        r = run(&[
            "resume",
            &snapshot,
            "--json",
            "-o",
            &out,
            "--checkpoints",
            &cp,
        ]);
    }
    assert!(stops >= 1);
    for key in ["cid", "instructions", "outcome", "exit_code"] {
        assert_eq!(r[key], whole[key], "{key} after {stops} stops");
    }
    assert_eq!(
        r["trace"]["snapshots"].as_array().unwrap().len(),
        whole["trace"]["snapshots"].as_array().unwrap().len()
    );
}

/// A snapshot moves as a CAR: one CAR of the whole checkpoints folder (`--cid` picks the
/// snapshot) or of one snapshot, each resumed to the uninterrupted receipt with the
/// module and inputs named (a CAR's job.json is not used: its host paths are the
/// sender's). A CAR whose snapshot holds more than its state accounts for (a memory of
/// 64 MiB of zeros, a few blocks linked over and over, where the state says 17 pages),
/// or anything a snapshot does not have (a folder of its own), is refused before
/// anything is unpacked; `--cid` with a folder is an error.
#[test]
fn a_snapshot_is_resumed_from_a_car() {
    let (t, receipt) = provider_run();
    let dir = t.path();
    let trace = snapshots(&receipt);
    let run = |args: &[&str]| detwasm().current_dir(dir).args(args).output().unwrap();
    let ok = |out: std::process::Output| {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let car_of = |car: &str, folder: &str| {
        let out = run(&["hash", "--car", car, folder]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    car_of("all.car", "cp");
    let out = run(&["resume", "all.car", "--cid", &trace[2], "-o", "r0"]);
    assert_eq!(out.status.code(), Some(2), "the CAR's job.json is not used");
    let r = ok(run(&[
        "resume",
        "all.car",
        "--cid",
        &trace[2],
        "--module",
        "probe.wasm",
        "--input",
        "in",
        "-o",
        "r1",
        "--json",
    ]));
    assert_eq!(r["cid"], receipt["cid"]);
    assert_eq!(r["instructions"], receipt["instructions"]);
    assert_eq!(r["trace"], receipt["trace"]);

    assert_eq!(car_of("s2.car", "cp/000002"), trace[1]);
    let r = ok(run(&[
        "resume",
        "s2.car",
        "--module",
        "probe.wasm",
        "--input",
        "in",
        "-o",
        "r2",
        "--json",
    ]));
    assert_eq!(r["cid"], receipt["cid"]);
    assert_eq!(r["trace"], receipt["trace"]);

    // The same snapshot with a memory far larger than its state says.
    copy_dir(&dir.join("cp/000002"), &dir.join("big"));
    let f = std::fs::File::create(dir.join("big/memory/0")).unwrap();
    f.set_len(64 << 20).unwrap();
    car_of("big.car", "big");
    let out = run(&["resume", "big.car", "--module", "probe.wasm", "-o", "r3"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("more than the") && err.contains("its state accounts for"),
        "{err}"
    );
    assert!(!dir.join("r3").exists());

    copy_dir(&dir.join("cp/000002"), &dir.join("extra"));
    std::fs::create_dir_all(dir.join("extra/more/folders")).unwrap();
    car_of("extra.car", "extra");
    let out = run(&["resume", "extra.car", "--module", "probe.wasm", "-o", "r3"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("an entry \"more\", which no snapshot has"),
        "{err}"
    );

    // A spot check takes the provider's snapshots as one CAR too.
    let out = run(&[
        "verify",
        "receipt.json",
        "--sample",
        "100",
        "--snapshots",
        "all.car",
        "--json",
    ]);
    let report = ok(out);
    assert_eq!(report["verified"], true, "{report:#}");
    assert_eq!(
        report["checked"].as_array().unwrap().len(),
        trace.len() + 1,
        "{report:#}"
    );
    // A CAR with a block that is not its CID's is parsed once and refused as a whole:
    // the provider's, so not verified (exit 1), with no segment re-run.
    let mut bytes = std::fs::read(t.path().join("all.car")).unwrap();
    let at = bytes.len() - 100;
    bytes[at] ^= 1;
    std::fs::write(t.path().join("bad.car"), bytes).unwrap();
    let out = run(&[
        "verify",
        "receipt.json",
        "--sample",
        "100",
        "--snapshots",
        "bad.car",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        report["checked"].as_array().unwrap().is_empty(),
        "{report:#}"
    );
    assert!(
        report["reasons"][0]
            .as_str()
            .unwrap()
            .contains("not a snapshot CAR detwasm can resume"),
        "{report:#}"
    );

    // An empty file is no snapshot CAR (the provider's: not verified); a path that is
    // not there is this machine's (no verdict).
    std::fs::write(t.path().join("empty.car"), b"").unwrap();
    let out = run(&[
        "verify",
        "receipt.json",
        "--sample",
        "2",
        "--snapshots",
        "empty.car",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let out = run(&[
        "verify",
        "receipt.json",
        "--sample",
        "2",
        "--snapshots",
        "gone.car",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--snapshots gone.car"));

    let out = run(&["resume", "cp/000002", "--cid", &trace[1], "-o", "r4"]);
    assert_eq!(out.status.code(), Some(2));
    let out = run(&["resume", "all.car", "--cid", "QmNotACid", "-o", "r4"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(err.contains("is not a CID"), "{err}");
}

/// A snapshot folder must hold exactly what its state claims before it is hashed or read
/// (found by review: a 16 GiB sparse file beside a snapshot's own was hashed whole, 40 s
/// with a 3 s job timeout): an extra file, a memory of another length and a `memory`
/// that is a link are each refused by `resume` at once, naming the entry, and a spot
/// check over the forged folder finds it not verified.
#[test]
fn a_snapshot_folder_holds_exactly_what_its_state_claims() {
    let (t, receipt) = provider_run();
    let snap = t.path().join("cp/000002");
    let refused = |why: &str| {
        let out = resume_within_a_minute(&snap);
        assert_eq!(out.status.code(), Some(2), "{why}");
        let e = String::from_utf8_lossy(&out.stderr);
        assert!(e.contains(why), "{e}");
    };
    std::fs::File::create(snap.join("junk"))
        .unwrap()
        .set_len(16 << 30)
        .unwrap();
    refused("junk: no snapshot has it");
    let started = std::time::Instant::now();
    let (code, report) = spot_check(t.path(), "receipt.json", "100", "1");
    assert_eq!(code, 1, "{report}");
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    std::fs::remove_file(snap.join("junk")).unwrap();
    let memory = snap.join("memory/0");
    let len = std::fs::metadata(&memory).unwrap().len();
    std::fs::File::options()
        .write(true)
        .open(&memory)
        .unwrap()
        .set_len(len + 65536)
        .unwrap();
    refused(&format!(
        "memory/0 has {} bytes, not the {len} saved",
        len + 65536
    ));
    std::fs::rename(snap.join("memory"), t.path().join("memory")).unwrap();
    std::os::unix::fs::symlink(t.path().join("memory"), snap.join("memory")).unwrap();
    refused("memory: no snapshot has it");
    assert!(receipt["trace"].is_object());
}

/// `resume --cap-*` refuses a snapshot whose job asks for more than the caps, before a
/// CAR is unpacked (its claims are bounded by the job's limits, so the caps bound what
/// it may write) and before a folder is read.
#[test]
fn resume_refuses_a_snapshot_above_the_verifiers_caps_before_unpacking() {
    let (t, _) = provider_run();
    let car = t.path().join("s.car");
    let hashed = detwasm()
        .current_dir(t.path())
        .arg("hash")
        .arg("--car")
        .arg(&car)
        .arg("cp/000002")
        .output()
        .unwrap();
    ok(&hashed);
    for snapshot in ["s.car", "cp/000002"] {
        let out = detwasm()
            .current_dir(t.path())
            .args([
                "resume",
                snapshot,
                "--module",
                "probe.wasm",
                "--input",
                "in",
            ])
            .args(["--cap-output", "1KiB", "-o", "never"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        let e = String::from_utf8_lossy(&out.stderr);
        assert!(
            e.contains("more than the 1024 allowed here"),
            "{snapshot}: {e}"
        );
        assert!(!t.path().join("never").exists());
    }
}
