//! `detwasm batch` end to end: every receipt equals what `detwasm run --json` of the same
//! options gives, in input order, whatever the parallelism; a line that is not a job, or
//! a job that cannot run, gets an error line naming it and the others go on.

mod cli_support;
use cli_support::*;

use std::path::{Path, PathBuf};

fn root(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

/// The jobs as batch lines and as the `detwasm run` flags that mean the same.
fn jobs(t: &Path) -> Vec<(String, Vec<String>)> {
    let probe = root("fixtures/probes/probe.wasm").display().to_string();
    let cowsay = root("fixtures/modules/cowsay.wasm").display().to_string();
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    std::fs::create_dir_all(t.join("data/sub")).unwrap();
    std::fs::write(t.join("data/a.txt"), "ay").unwrap();
    std::fs::write(t.join("data/sub/b.txt"), "bee").unwrap();
    std::fs::write(t.join("stdin.txt"), "from stdin\n").unwrap();
    let mut out = vec![
        (
            // Written out: an `env` object's key order is the job's (json! would sort it).
            format!(
                r#"{{"module": {probe:?}, "args": ["report"], "inputs": ["data"],
                "env": {{"ZED": "1", "ALPHA": "2"}}, "seed": 9, "epoch": "2030-01-01T00:00:00Z"}}"#
            )
            .replace('\n', " "),
            [
                s(&[
                    "--input", "data", "-e", "ZED=1", "-e", "ALPHA=2", "--seed", "9",
                ]),
                s(&["--epoch", "2030-01-01T00:00:00Z", &probe, "--", "report"]),
            ]
            .concat(),
        ),
        (
            serde_json::json!({"module": cowsay, "args": ["batch", "moo"], "memory": "64MiB",
                "max_output": 100000, "fuel": 5000000, "profile": "unixfs-v1-2025"})
            .to_string(),
            s(&[
                "--memory",
                "64MiB",
                "--max-output",
                "100000",
                "--fuel",
                "5000000",
                "--profile",
                "unixfs-v1-2025",
                &cowsay,
                "--",
                "batch",
                "moo",
            ]),
        ),
        (
            serde_json::json!({"module": probe, "args": ["exit", "3"], "stdin": "stdin.txt",
                "epoch": 1700000000, "no_outputs": true})
            .to_string(),
            s(&[
                "--stdin",
                "stdin.txt",
                "--epoch",
                "1700000000",
                "--no-outputs",
                &probe,
                "--",
                "exit",
                "3",
            ]),
        ),
        (
            serde_json::json!({"module": "cowsay", "input_values": {"Message": "from a spec"}})
                .to_string(),
            s(&["cowsay", "-i", "Message=from a spec"]),
        ),
        (
            serde_json::json!({"module": probe, "args": ["spin"], "fuel": 100000}).to_string(),
            s(&["--fuel", "100000", &probe, "--", "spin"]),
        ),
    ];
    // A Bacalhau v1 job file, as `detwasm run JOB.yaml` runs it.
    let job_file = root("fixtures/bacalhau-v1/wordstats.yaml")
        .display()
        .to_string();
    let allowed = root("fixtures/modules").display().to_string();
    out.push((
        serde_json::json!({ "module": job_file }).to_string(),
        s(&["--allow-input", &allowed, &job_file]),
    ));
    // More of the same, so that the workers finish out of order.
    for i in 0..10 {
        out.push((
            serde_json::json!({"module": cowsay, "args": [format!("job {i}")]}).to_string(),
            s(&[&cowsay, "--", &format!("job {i}")]),
        ));
    }
    out
}

/// The receipt without where its results went and its host statistics (the fields two
/// runs into different folders may not share), and without the host paths of a job file's staged file
/// inputs (a fresh temporary folder per run; their CIDs stay).
fn comparable(mut r: serde_json::Value) -> serde_json::Value {
    r.as_object_mut().unwrap().remove("results_dir");
    r.as_object_mut().unwrap().remove("host");
    for input in r["job"]["inputs"].as_array_mut().unwrap() {
        if input["host"]
            .as_str()
            .unwrap()
            .contains("detwasm-job-inputs-")
        {
            input["host"] = "(staged)".into();
        }
    }
    r
}

#[test]
fn receipts_equal_detwasm_run_in_input_order_and_bad_lines_are_named() {
    let t = tempfile::tempdir().unwrap();
    let jobs = jobs(t.path());
    let mut text = String::new();
    for (i, (line, _)) in jobs.iter().enumerate() {
        text.push_str(&format!("{line}\n"));
        if i == 1 {
            text.push_str("\n{\"module\": \"x.wasm\", \"sed\": 1}\n");
            text.push_str("{\"module\": \"missing.wasm\"}\n");
        }
    }
    std::fs::write(t.path().join("jobs.jsonl"), &text).unwrap();
    let batch = detwasm()
        .current_dir(t.path())
        .env("DETWASM_MODULE_PATH", root("modules"))
        .args([
            "batch",
            "jobs.jsonl",
            "--parallel",
            "3",
            "--output-dir",
            "out",
        ])
        .arg("--allow-input")
        .arg(root("fixtures/modules"))
        .output()
        .unwrap();
    assert_eq!(
        batch.status.code(),
        Some(2),
        "some jobs could not run: {}",
        String::from_utf8_lossy(&batch.stderr)
    );
    let stderr = String::from_utf8_lossy(&batch.stderr);
    assert!(stderr.contains("18 jobs in"), "{stderr}");
    assert!(
        stderr.contains("2 could not run"),
        "{stderr}{}",
        String::from_utf8_lossy(&batch.stdout)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(batch.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(lines.len(), 18);
    assert_eq!(lines[2]["line"], 4, "blank lines count: {}", lines[2]);
    let e = lines[2]["error"].as_str().unwrap();
    assert!(e.starts_with("line 4: unknown field `sed`"), "{e}");
    assert_eq!(lines[3]["line"], 5);
    let e = lines[3]["error"].as_str().unwrap();
    assert!(e.contains("missing.wasm"), "{e}");

    let receipts: Vec<&serde_json::Value> =
        lines.iter().filter(|l| l.get("error").is_none()).collect();
    assert_eq!(receipts.len(), jobs.len());
    for ((_, flags), got) in jobs.iter().zip(receipts) {
        let run = detwasm()
            .current_dir(t.path())
            .env("DETWASM_MODULE_PATH", root("modules"))
            .args(["run", "--json", "-o"])
            .arg(t.path().join("runs").join(got["job_id"].as_str().unwrap()))
            .args(flags)
            .output()
            .unwrap();
        let want: serde_json::Value = serde_json::from_slice(&run.stdout)
            .unwrap_or_else(|_| panic!("{flags:?}: {}", String::from_utf8_lossy(&run.stderr)));
        assert_eq!(comparable(got.clone()), comparable(want), "{flags:?}");
        let dir = Path::new(got["results_dir"].as_str().unwrap());
        assert!(dir.starts_with(t.path().join("out")), "{dir:?}");
        assert!(dir.join("exitCode").is_file());
    }
    // Nothing but results folders is left in the output folder (no staging folders).
    for entry in std::fs::read_dir(t.path().join("out")).unwrap() {
        let name = entry.unwrap().file_name();
        assert!(
            !name.to_string_lossy().starts_with('.'),
            "left behind: {name:?}"
        );
    }
}

#[test]
fn exit_status_says_whether_every_job_succeeded() {
    let t = tempfile::tempdir().unwrap();
    let probe = root("fixtures/probes/probe.wasm");
    let line = |args: &str| format!("{{\"module\": {:?}, \"args\": [{args}]}}\n", probe);
    let run = |text: String| {
        std::fs::write(t.path().join("j.jsonl"), text).unwrap();
        detwasm()
            .current_dir(t.path())
            .args(["batch", "j.jsonl", "--json", "--output-dir", "o"])
            .output()
            .unwrap()
    };
    let ok = run(line("\"exit\", \"0\"").repeat(3));
    assert_eq!(ok.status.code(), Some(0));
    let summary: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&ok.stderr).lines().last().unwrap()).unwrap();
    assert_eq!(summary["jobs"], 3);
    assert_eq!(summary["exited_0"], 3);
    let nonzero = run(line("\"exit\", \"0\"") + &line("\"exit\", \"4\""));
    assert_eq!(nonzero.status.code(), Some(1));
    // Output into a folder that exists and is not empty is refused for that job only.
    std::fs::create_dir_all(t.path().join("taken")).unwrap();
    std::fs::write(t.path().join("taken/x"), "").unwrap();
    let taken = run(format!(
        "{{\"module\": {:?}, \"output\": \"taken\"}}\n{}",
        probe,
        line("\"exit\", \"0\"")
    ));
    assert_eq!(taken.status.code(), Some(2));
    let out = String::from_utf8(taken.stdout).unwrap();
    let first: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert!(
        first["error"].as_str().unwrap().contains("taken"),
        "{first}"
    );
    assert_eq!(
        std::fs::read_to_string(t.path().join("taken/x")).unwrap(),
        ""
    );
}

/// Jobs of the probe's float work, `n` of them, each a few hundred milliseconds.
fn slow_jobs(t: &Path, n: usize) -> PathBuf {
    let probe = root("fixtures/probes/probe.wasm").display().to_string();
    let text: String = (0..n)
        .map(|i| {
            format!(
                "{}\n",
                serde_json::json!({"module": probe, "args": ["float", (2_000_000 + i).to_string()]})
            )
        })
        .collect();
    let path = t.join("jobs.jsonl");
    std::fs::write(&path, text).unwrap();
    path
}

fn folders(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.count())
}

/// A batch killed part-way has printed (to a redirected stdout) and written to
/// --receipts the receipt of every job it delivered; --resume then runs only the rest,
/// prints every receipt in input order, and gives the receipts of a batch that was
/// never killed. A receipts file is never written over without --resume, and a batch
/// run again without it says that it delivered beside the earlier results.
#[test]
fn a_killed_batch_keeps_every_delivered_receipt_and_resumes_where_it_stopped() {
    let t = tempfile::tempdir().unwrap();
    slow_jobs(t.path(), 12);
    let stdout = std::fs::File::create(t.path().join("printed.jsonl")).unwrap();
    let mut child = detwasm()
        .current_dir(t.path())
        .args(["batch", "jobs.jsonl", "-j", "1", "--output-dir", "out"])
        .args(["--receipts", "receipts.jsonl"])
        .stdout(stdout)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    // Killed once three receipts are kept (counting folders raced: staging folders
    // counted, and a kill before the first receipt left nothing to refuse to overwrite).
    let kept_lines = || {
        std::fs::read_to_string(t.path().join("receipts.jsonl")).map_or(0, |s| s.lines().count())
    };
    while kept_lines() < 3 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the batch ended before the kill"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(120));
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let read = |name: &str| std::fs::read_to_string(t.path().join(name)).unwrap();
    let delivered = std::fs::read_dir(t.path().join("out"))
        .unwrap()
        .filter(|e| {
            !e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with('.')
        })
        .count();
    let printed = read("printed.jsonl");
    let kept = read("receipts.jsonl");
    assert!(kept.starts_with(&printed) || printed.starts_with(&kept));
    // One job may have been published and not yet printed when the kill came.
    let n = kept.lines().count();
    assert!(
        n + 1 >= delivered && n <= delivered && n < 12,
        "{n} of {delivered}"
    );
    for line in kept.lines() {
        let r: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(Path::new(r["results_dir"].as_str().unwrap()).is_dir());
    }

    let again = detwasm()
        .current_dir(t.path())
        .args(["batch", "jobs.jsonl", "--receipts", "receipts.jsonl"])
        .output()
        .unwrap();
    assert!(failed(&again).contains("receipts.jsonl already holds receipts: --resume"));

    let resumed = detwasm()
        .current_dir(t.path())
        .args(["batch", "jobs.jsonl", "--output-dir", "rest", "--receipts"])
        .args(["receipts.jsonl", "--resume"])
        .output()
        .unwrap();
    let all = ok(&resumed);
    assert!(String::from_utf8_lossy(&resumed.stderr)
        .contains(&format!("{n} of 12 jobs already delivered")));
    assert_eq!(all, read("receipts.jsonl"));
    assert_eq!(folders(&t.path().join("rest")), 12 - n);

    let whole = detwasm()
        .current_dir(t.path())
        .args(["batch", "jobs.jsonl", "--output-dir", "whole"])
        .output()
        .unwrap();
    let cids = |text: &str| -> Vec<(String, u64)> {
        text.lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .map(|r| {
                (
                    r["cid"].as_str().unwrap().to_string(),
                    r["instructions"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(cids(&ok(&whole)), cids(&all));
    let twice = detwasm()
        .current_dir(t.path())
        .args(["batch", "jobs.jsonl", "--output-dir", "whole"])
        .output()
        .unwrap();
    ok(&twice);
    assert!(String::from_utf8_lossy(&twice.stderr)
        .contains("12 jobs found a results folder named after their job id already there"));
}

/// `--resume` keeps a line only if it is its job's (found by review: lines of
/// `{"results_dir": "/"}` skipped every job, and a jobs file named as the receipts file
/// was emptied): a forged or another batch's first line is refused and the file left as
/// it was; a link is not followed; a receipt of another job at a job's place is run
/// again from there.
#[test]
fn resume_keeps_only_lines_that_are_their_jobs() {
    let t = tempfile::tempdir().unwrap();
    let probe = root("fixtures/probes/probe.wasm").display().to_string();
    let line = |n: u32| serde_json::json!({"module": probe, "args": ["float", n.to_string()]});
    let jobs = format!("{}\n{}\n", line(1000), line(2000));
    std::fs::write(t.path().join("jobs.jsonl"), &jobs).unwrap();
    let batch = |receipts: &str| {
        detwasm()
            .current_dir(t.path())
            .args([
                "batch",
                "jobs.jsonl",
                "--output-dir",
                "out",
                "--resume",
                "--receipts",
            ])
            .arg(receipts)
            .output()
            .unwrap()
    };
    let forged = "{\"results_dir\": \"/\"}\n{\"results_dir\": \"/\"}\n";
    std::fs::write(t.path().join("forged.jsonl"), forged).unwrap();
    let out = batch("forged.jsonl");
    assert_eq!(out.status.code(), Some(2));
    assert!(failed(&out).contains("is not a receipt or error line of this batch's first job"));
    assert_eq!(
        std::fs::read_to_string(t.path().join("forged.jsonl")).unwrap(),
        forged
    );
    let out = batch("jobs.jsonl");
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        std::fs::read_to_string(t.path().join("jobs.jsonl")).unwrap(),
        jobs
    );
    std::os::unix::fs::symlink("jobs.jsonl", t.path().join("link.jsonl")).unwrap();
    assert!(failed(&batch("link.jsonl")).contains("a symlink; not followed"));

    // The receipts of the two jobs in the other order: the first is not job 1's.
    let whole = batch("r.jsonl");
    let printed = ok(&whole);
    let swapped: Vec<&str> = printed.lines().rev().collect();
    std::fs::write(t.path().join("swapped.jsonl"), swapped.join("\n") + "\n").unwrap();
    let out = batch("swapped.jsonl");
    assert!(failed(&out).contains("not touched"));
    // Job 1's receipt, then job 1's again at job 2's place: job 2 runs again.
    let first = printed.lines().next().unwrap();
    std::fs::write(t.path().join("twice.jsonl"), format!("{first}\n{first}\n")).unwrap();
    let out = batch("twice.jsonl");
    let again = ok(&out);
    let cid = |l: &str| serde_json::from_str::<serde_json::Value>(l).unwrap()["cid"].clone();
    let (a, b): (Vec<&str>, Vec<&str>) = (again.lines().collect(), printed.lines().collect());
    assert_eq!(a[0], b[0], "kept as written");
    assert_eq!(cid(a[1]), cid(b[1]), "run again");
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 of 2 jobs already delivered"));
}

/// Found by review: a receipts file's lines were parsed whole into JSON values before
/// being judged (1.12 GB for one 64 MiB line) and every kept line was held; a receipt
/// line whose `cid` is not a CID was kept; `--receipts` without `--resume` followed a
/// link planted at FILE. Now: lines are judged on a few fields (`cid` must parse), kept
/// lines are copied from the file when printed, and a link or FIFO at FILE is refused.
#[test]
fn receipts_files_are_judged_on_their_fields_and_never_followed() {
    let t = tempfile::tempdir().unwrap();
    let probe = root("fixtures/probes/probe.wasm").display().to_string();
    let jobs = format!(
        "{}\n",
        serde_json::json!({"module": probe, "args": ["float", "1000"]})
    );
    std::fs::write(t.path().join("jobs.jsonl"), &jobs).unwrap();
    let batch = |receipts: &str, resume: bool| {
        let mut c = detwasm();
        c.current_dir(t.path())
            .args(["batch", "jobs.jsonl", "--output-dir", "out", "--receipts"])
            .arg(receipts);
        if resume {
            c.arg("--resume");
        }
        c.output().unwrap()
    };
    let printed = ok(&batch("r.jsonl", false));
    // Its receipt with a forged results CID is not this job's delivery.
    let mut forged: serde_json::Value = serde_json::from_str(printed.trim()).unwrap();
    forged["cid"] = "x".into();
    std::fs::write(t.path().join("forged.jsonl"), format!("{forged}\n")).unwrap();
    assert!(failed(&batch("forged.jsonl", true)).contains("not touched"));
    // A first line that is no receipt is refused unparsed, however long.
    let mut big = Vec::from(&b"[0"[..]);
    big.extend(std::iter::repeat_n(&b",0"[..], 4 << 20).flatten());
    big.extend(b"]\n");
    std::fs::write(t.path().join("big.jsonl"), &big).unwrap();
    assert!(failed(&batch("big.jsonl", true)).contains("not touched"));
    // The kept line is printed as it was written, from the file.
    let again = ok(&batch("r.jsonl", true));
    assert_eq!(again, printed);
    // A link at FILE is not followed, to a file or nowhere; a FIFO does not block.
    std::os::unix::fs::symlink("elsewhere.txt", t.path().join("link.jsonl")).unwrap();
    assert!(failed(&batch("link.jsonl", false)).contains("a symlink; not followed"));
    assert!(!t.path().join("elsewhere.txt").exists());
    let fifo = std::ffi::CString::new(
        t.path()
            .join("fifo.jsonl")
            .into_os_string()
            .into_encoded_bytes(),
    )
    .unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    assert!(failed(&batch("fifo.jsonl", false)).contains("not a regular file"));
}
