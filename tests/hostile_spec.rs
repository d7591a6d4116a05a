//! Hostile job files and CAR inputs against `detwasm run JOB.yaml`, as a provider would
//! meet them: each test writes a small file that describes far more than it holds (YAML
//! aliases, CAR DAGs that link blocks over and over), runs a real detwasm process, checks
//! how it ends and how long it took, and measures its peak resident memory (`wait4`'s
//! `ru_maxrss`) and the temporary disk it left behind (its `TMPDIR` is the test's).
//! SECURITY.md lists these tests by name.

mod cli_support;
use cli_support::wait_with_rusage;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use detwasm_hasher::cid::{Cid, CidVersion, DAG_PB, RAW};
use detwasm_hasher::dagpb::{self, PbLink};
use detwasm_hasher::unixfs;

/// A guest that does nothing: these attacks are over before it could run.
const IDLE: &str = "(module (memory (export \"memory\") 1) (func (export \"_start\")))";

struct Ran {
    code: i32,
    stderr: String,
    stdout: String,
    peak_rss: u64,
    took: Duration,
    /// Entries left in the child's TMPDIR.
    left_in_tmp: usize,
}

/// Runs `detwasm run ARGS` in `dir` with its own TMPDIR, and measures it.
fn run_in(dir: &Path, args: &[&str]) -> Ran {
    run_command(dir, "run", args)
}

/// Runs `detwasm COMMAND ARGS` in `dir` with its own TMPDIR, and measures it.
fn run_command(dir: &Path, command: &str, args: &[&str]) -> Ran {
    let tmp = dir.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let out = dir.join("stdout");
    let err = dir.join("stderr");
    // `HOSTILE_SPEC_DETWASM` runs another build instead (to measure one from before a fix).
    let bin = std::env::var_os("HOSTILE_SPEC_DETWASM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_detwasm")));
    let mut cmd = Command::new(bin);
    cmd.env(
        "DETWASM_CACHE_DIR",
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("detwasm-hostile-spec-cache"),
    )
    .env_remove("DETWASM_ALLOW_INPUTS")
    .env("TMPDIR", &tmp)
    .current_dir(dir)
    .arg(command)
    .args(args)
    .stdin(Stdio::null())
    .stdout(File::create(&out).unwrap())
    .stderr(File::create(&err).unwrap());
    let start = Instant::now();
    // Waited for with wait4 below (std's wait would not report the peak RSS).
    #[allow(clippy::zombie_processes)]
    let child = cmd.spawn().unwrap();
    let (code, peak_rss) = wait_with_rusage(child.id() as libc::pid_t);
    let ran = Ran {
        code,
        stderr: std::fs::read_to_string(&err).unwrap(),
        stdout: std::fs::read_to_string(&out).unwrap(),
        peak_rss,
        took: start.elapsed(),
        left_in_tmp: std::fs::read_dir(&tmp).unwrap().count(),
    };
    eprintln!(
        "exit {}, {:?}, peak RSS {} KiB\n{}",
        ran.code,
        ran.took,
        ran.peak_rss >> 10,
        ran.stderr
    );
    assert!(!ran.stderr.contains("panicked"), "{}", ran.stderr);
    ran
}

/// A file of `mib` MiB of the byte `fill`: one 1 MiB raw leaf linked `mib` times (a CAR
/// of about 1 MiB).
fn repeated_file(fill: u8, mib: u64) -> (Cid, Vec<u8>) {
    let leaf = vec![fill; 1 << 20];
    let leaf_cid = Cid::of_block(CidVersion::V1, RAW, &leaf);
    let links: Vec<PbLink> = (0..mib)
        .map(|_| PbLink {
            cid: leaf_cid,
            name: String::new(),
            tsize: 1 << 20,
        })
        .collect();
    let node = dagpb::encode_node(
        &links,
        &unixfs::file_node(mib << 20, &vec![1 << 20; mib as usize]),
    );
    let root = Cid::of_block(CidVersion::V0, DAG_PB, &node);
    let bytes = detwasm_hasher::car::assemble_unchecked(&root, &[(root, node), (leaf_cid, leaf)]);
    (root, bytes)
}

/// A job file running the idle guest with these `ipfs` inputs (target, CID).
fn job_with_ipfs_inputs(dir: &Path, inputs: &[(&str, String)]) -> PathBuf {
    std::fs::write(dir.join("m.wat"), IDLE).unwrap();
    let mut text = String::from(
        "Type: batch\nTasks:\n  - Name: main\n    Engine:\n      Type: wasm\n      Params: {EntryModule: /m.wat, Entrypoint: _start}\n    InputSources:\n      - Target: /m.wat\n        Source: {Type: local, Params: {SourcePath: m.wat}}\n",
    );
    for (target, cid) in inputs {
        text.push_str(&format!(
            "      - Target: {target}\n        Source: {{Type: ipfs, Params: {{CID: {cid}}}}}\n"
        ));
    }
    text.push_str("    Network: {Type: None}\n");
    let file = dir.join("job.yaml");
    std::fs::write(&file, text).unwrap();
    file
}

/// One anchored 4 MiB string aliased 100 times (400 MiB when copied; 1,000 aliases took
/// 4 GB, 100,000 ended the process): refused by the bytes the aliases copy, with the
/// line, before the copies are made.
#[test]
fn aliases_of_a_large_scalar_are_refused_by_the_bytes_they_copy() {
    let t = tempfile::tempdir().unwrap();
    let aliases = vec!["*s"; 200].join(", ");
    let text = format!(
        "Name: &s {}\nMeta: {{copies: [{aliases}]}}\n",
        "x".repeat(1000 << 10)
    );
    std::fs::write(t.path().join("job.yaml"), text).unwrap();
    let ran = run_in(t.path(), &["job.yaml", "-o", "never"]);
    assert_eq!(ran.code, 2, "{}", ran.stderr);
    assert!(
        ran.stderr.contains("job.yaml")
            && ran.stderr.contains("line 2")
            && ran.stderr.contains("64 MiB"),
        "{}",
        ran.stderr
    );
    assert!(
        ran.peak_rss < 128 << 20,
        "peak RSS {} MiB",
        ran.peak_rss >> 20
    );
    assert!(ran.took < Duration::from_secs(30));
}

/// Flow collections of implicit pairs, the costliest YAML to parse per byte (the
/// parser's tokens, then a value per node): 9 MiB of `[a: b, …]` took 1.6 GB of memory
/// when job files could be 10 MiB (found by review). A file over 1 MiB is refused before
/// it is parsed; one at the limit parses within a few hundred MiB.
#[test]
fn job_files_of_flow_pairs_are_bounded_by_the_file_size() {
    let t = tempfile::tempdir().unwrap();
    let pairs = |bytes: usize| format!("[{}]", "a: b, ".repeat(bytes / 6));
    std::fs::write(t.path().join("big.yaml"), pairs(9 << 20)).unwrap();
    let ran = run_in(t.path(), &["big.yaml", "-o", "never"]);
    assert_eq!(ran.code, 2, "{}", ran.stderr);
    assert!(
        ran.stderr.contains("big.yaml") && ran.stderr.contains("1048576"),
        "{}",
        ran.stderr
    );
    assert!(
        ran.peak_rss < 64 << 20,
        "peak RSS {} MiB",
        ran.peak_rss >> 20
    );
    std::fs::write(t.path().join("job.yaml"), pairs((1 << 20) - 8)).unwrap();
    let ran = run_in(t.path(), &["job.yaml", "-o", "never"]);
    assert_eq!(ran.code, 2, "{}", ran.stderr);
    assert!(ran.stderr.contains("job.yaml"), "{}", ran.stderr);
    assert!(
        ran.peak_rss < 320 << 20,
        "peak RSS {} MiB",
        ran.peak_rss >> 20
    );
}

/// Eight inputs naming one CID of 32 MiB of zeros (a 1 MiB CAR): unpacked once to disk,
/// shared by the eight (each input was unpacked, read whole into memory and copied:
/// 256 MiB of memory and disk for 32 MiB of content).
#[test]
fn a_cid_named_by_many_inputs_is_unpacked_once_to_disk() {
    let t = tempfile::tempdir().unwrap();
    let (root, bytes) = repeated_file(0, 32);
    std::fs::write(t.path().join(format!("{root}.car")), bytes).unwrap();
    let targets = ["/a", "/b", "/c", "/d", "/e", "/f", "/g", "/h"];
    let inputs: Vec<(&str, String)> = targets.iter().map(|t| (*t, root.to_string())).collect();
    job_with_ipfs_inputs(t.path(), &inputs);
    let ran = run_in(t.path(), &["job.yaml", "--json", "-o", "results"]);
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    let receipt: serde_json::Value = serde_json::from_str(&ran.stdout).unwrap();
    let mounted = receipt["job"]["inputs"].as_array().unwrap();
    assert!(!mounted.is_empty(), "{receipt}");
    assert!(
        ran.peak_rss < 160 << 20,
        "peak RSS {} MiB",
        ran.peak_rss >> 20
    );
    assert_eq!(
        ran.left_in_tmp, 0,
        "the staging folder is removed after the run"
    );
}

/// Four CIDs of 300 MiB each (1 MiB CARs): 1.2 GB together, over the job's budget of
/// 1 GiB for all its CAR inputs. Refused from the DAGs' sizes before anything is
/// unpacked (each had its own 1 GiB budget: 1.2 GB of memory and disk).
#[test]
fn a_jobs_car_inputs_share_one_budget_charged_before_unpacking() {
    let t = tempfile::tempdir().unwrap();
    let mut inputs = Vec::new();
    for (i, target) in ["/a", "/b", "/c", "/d"].into_iter().enumerate() {
        let (root, bytes) = repeated_file(i as u8, 300);
        std::fs::write(t.path().join(format!("{root}.car")), bytes).unwrap();
        inputs.push((target, root.to_string()));
    }
    job_with_ipfs_inputs(t.path(), &inputs);
    let ran = run_in(t.path(), &["job.yaml", "-o", "never"]);
    assert_eq!(ran.code, 2, "{}", ran.stderr);
    let e = &ran.stderr;
    assert!(
        e.contains("job.yaml:")
            && e.contains("/d")
            && e.contains(&inputs[3].1)
            && e.contains("MAX_JOB_CAR_BYTES"),
        "{e}"
    );
    assert_eq!(ran.left_in_tmp, 0, "nothing was unpacked");
    assert!(
        ran.peak_rss < 160 << 20,
        "peak RSS {} MiB",
        ran.peak_rss >> 20
    );
    assert!(ran.took < Duration::from_secs(30), "{:?}", ran.took);
    assert!(!t.path().join("never").exists());
}

/// 19 levels of folders, each linking the one below twice, over one file: a 2 KB CAR of
/// 524,288 files and as many folders (unpacked in 90 s, 2 GB of temporary files).
/// Refused at once from its size, nothing written.
#[test]
fn a_car_of_folders_linking_twice_is_refused_before_unpacking() {
    let t = tempfile::tempdir().unwrap();
    let leaf = b"x".to_vec();
    let mut below = Cid::of_block(CidVersion::V1, RAW, &leaf);
    let mut blocks = vec![(below, leaf)];
    for _ in 0..19 {
        let links: Vec<PbLink> = ["a", "b"]
            .iter()
            .map(|n| PbLink {
                cid: below,
                name: (*n).into(),
                tsize: 1,
            })
            .collect();
        let dir = dagpb::encode_node(&links, &unixfs::directory());
        below = Cid::of_block(CidVersion::V0, DAG_PB, &dir);
        blocks.push((below, dir));
    }
    blocks.reverse();
    let bytes = detwasm_hasher::car::assemble_unchecked(&below, &blocks);
    assert!(bytes.len() < 4096);
    std::fs::write(t.path().join(format!("{below}.car")), bytes).unwrap();
    job_with_ipfs_inputs(t.path(), &[("/data", below.to_string())]);
    let ran = run_in(t.path(), &["job.yaml", "-o", "never"]);
    assert_eq!(ran.code, 2, "{}", ran.stderr);
    assert!(
        ran.stderr.contains("MAX_JOB_CAR_ENTRIES") && ran.stderr.contains("/data"),
        "{}",
        ran.stderr
    );
    assert_eq!(ran.left_in_tmp, 0, "nothing was unpacked");
    assert!(ran.took < Duration::from_secs(10), "{:?}", ran.took);
    assert!(
        ran.peak_rss < 128 << 20,
        "peak RSS {} MiB",
        ran.peak_rss >> 20
    );
}

/// `CID.car` beside the job file as a symlink leading out of the folders inputs may come
/// from is refused as a `CID` folder leading out is (it was opened and parsed: a link to
/// `/etc/shadow` was read); another `.car` leading out is passed over and named. Allowed
/// with `--allow-input`.
#[test]
fn a_car_leading_outside_the_allowed_folders_is_not_read() {
    let t = tempfile::tempdir().unwrap();
    let job_dir = t.path().join("job");
    let elsewhere = t.path().join("elsewhere");
    std::fs::create_dir_all(&job_dir).unwrap();
    std::fs::create_dir_all(&elsewhere).unwrap();
    let (root, bytes) = repeated_file(7, 1);
    let outside = elsewhere.join("content.car");
    std::fs::write(&outside, bytes).unwrap();
    job_with_ipfs_inputs(&job_dir, &[("/data", root.to_string())]);
    let named = job_dir.join(format!("{root}.car"));
    std::os::unix::fs::symlink(&outside, &named).unwrap();
    let ran = run_in(&job_dir, &["job.yaml", "-o", "never"]);
    assert_eq!(ran.code, 2, "{}", ran.stderr);
    assert!(
        ran.stderr.contains("outside the folders") && ran.stderr.contains("--allow-input"),
        "{}",
        ran.stderr
    );
    std::fs::remove_file(&named).unwrap();
    std::os::unix::fs::symlink(&outside, job_dir.join("other.car")).unwrap();
    let ran = run_in(&job_dir, &["job.yaml", "-o", "never"]);
    assert_eq!(ran.code, 2, "{}", ran.stderr);
    assert!(
        ran.stderr
            .contains("other.car: leads outside the folders inputs may come from, not read"),
        "{}",
        ran.stderr
    );
    let ran = run_in(
        &job_dir,
        &[
            "job.yaml",
            "--allow-input",
            elsewhere.to_str().unwrap(),
            "-o",
            "results",
        ],
    );
    assert_eq!(ran.code, 0, "{}", ran.stderr);
}

/// A chain of 90 anchors, each nested 126 levels around an alias of the one before: a
/// value 11,000 levels deep in a 30 KB job file. The YAML depth limit was checked only
/// where `[` opened, so it parsed, and `detwasm batch` (worker threads with 2 MiB stacks)
/// died with "thread 'detwasm-batch' has overflowed its stack" (SIGABRT), losing every
/// job of the batch. The alias that passes the limit is refused, naming its line, and the
/// batch goes on with its other lines.
#[test]
fn aliases_nesting_past_the_depth_limit_are_refused_and_the_batch_goes_on() {
    let t = tempfile::tempdir().unwrap();
    let d = 126;
    let mut text = format!("x0: &a0 {}1{}\n", "[".repeat(d), "]".repeat(d));
    for k in 1..90 {
        text.push_str(&format!(
            "x{k}: &a{k} {}*a{}{}\n",
            "[".repeat(d),
            k - 1,
            "]".repeat(d)
        ));
    }
    text.push_str("Name: *a89\nType: batch\n");
    std::fs::write(t.path().join("deep.yaml"), text).unwrap();
    std::fs::write(t.path().join("m.wat"), IDLE).unwrap();
    std::fs::write(
        t.path().join("j.jsonl"),
        "{\"module\": \"deep.yaml\"}\n{\"module\": \"m.wat\"}\n",
    )
    .unwrap();
    let ran = run_command(
        t.path(),
        "batch",
        &["j.jsonl", "--json", "--output-dir", "o"],
    );
    assert!(!ran.stderr.contains("overflowed"), "{}", ran.stderr);
    assert_eq!(ran.code, 2, "{}", ran.stderr);
    let lines: Vec<serde_json::Value> = ran
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{}", ran.stdout);
    let error = lines[0]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("deep.yaml")
            && error.contains("line 2")
            && error.contains("deeper than 128"),
        "{}",
        lines[0]
    );
    assert!(lines[1].get("error").is_none(), "{}", lines[1]);
    assert!(ran.took < Duration::from_secs(30));
}

/// 200 `ipfs` inputs naming small files of one 50 MiB CAR: each CID read the CAR whole
/// and checked every block's SHA-256 again (the number of CIDs times the CAR's size,
/// outside the run's deadline: 200 inputs of a 100 MB CAR took over 100 s). Now the CAR
/// is read and checked once for the job.
#[test]
fn many_inputs_naming_one_large_car_read_it_once() {
    let t = tempfile::tempdir().unwrap();
    let mut blocks: Vec<(Cid, Vec<u8>)> = (0..50u32)
        .map(|i| {
            let data: Vec<u8> = (0..1u32 << 20)
                .map(|j| (j.wrapping_mul(2_654_435_761) >> 24) as u8 ^ i as u8)
                .collect();
            (Cid::of_block(CidVersion::V1, RAW, &data), data)
        })
        .collect();
    let small: Vec<(Cid, Vec<u8>)> = (0..200u32)
        .map(|i| {
            let data = format!("input {i}\n").into_bytes();
            (Cid::of_block(CidVersion::V1, RAW, &data), data)
        })
        .collect();
    blocks.extend(small.iter().cloned());
    let bytes = detwasm_hasher::car::assemble_unchecked(&blocks[0].0, &blocks);
    std::fs::write(t.path().join("all.car"), bytes).unwrap();
    let targets: Vec<String> = (0..small.len()).map(|i| format!("/in/f{i}")).collect();
    let inputs: Vec<(&str, String)> = targets
        .iter()
        .zip(&small)
        .map(|(target, (cid, _))| (target.as_str(), cid.to_string()))
        .collect();
    job_with_ipfs_inputs(t.path(), &inputs);
    let ran = run_in(t.path(), &["job.yaml", "--json", "-o", "results"]);
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    let receipt: serde_json::Value = serde_json::from_str(&ran.stdout).unwrap();
    assert!(
        receipt["job"]["inputs"]
            .as_array()
            .is_some_and(|i| !i.is_empty()),
        "{receipt}"
    );
    assert!(ran.took < Duration::from_secs(10), "took {:?}", ran.took);
    assert!(
        ran.peak_rss < 256 << 20,
        "peak RSS {} MiB",
        ran.peak_rss >> 20
    );
    assert_eq!(ran.left_in_tmp, 0);
}

/// `detwasm batch --help` says what a jobs file can reach: it is the operator's, and its
/// own paths are not confined (it said a jobs file "cannot grant" --allow-input, while a
/// line may mount /etc itself).
#[test]
fn batch_help_says_a_jobs_file_is_the_operators_and_unconfined() {
    let out = Command::new(env!("CARGO_BIN_EXE_detwasm"))
        .args(["batch", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(!help.contains("cannot grant"), "{help}");
    assert!(
        help.contains("A jobs file is the operator's")
            && help.contains("unconfined")
            && help.contains("Never run a jobs file from someone you do not trust"),
        "{help}"
    );
}

/// A 4 KB module template whose `with` sets `.` to a 4 MB string and whose `eq` then
/// takes 2,000 copies of it (8 GB held at once: "memory allocation failed" and SIGABRT,
/// which would end a whole `batch`): `module check` reports the work-limit error with
/// the line, at small peak RSS (each `.` copy is charged against the 64 MiB budget).
#[test]
fn a_template_copying_a_large_dot_many_times_is_refused_by_the_bytes_it_copies() {
    let t = tempfile::tempdir().unwrap();
    let m = t.path().join("m");
    std::fs::create_dir_all(&m).unwrap();
    let template = format!(
        "{{\n{{{{with printf \"%4000000d\" 1}}}}{{{{if eq .{}}}}}x{{{{end}}}}{{{{end}}}}}}\n",
        " .".repeat(2000)
    );
    std::fs::write(m.join("lilypad_module.json.tmpl"), template).unwrap();
    std::fs::write(m.join("m.wasm"), b"\0asm\x01\0\0\0").unwrap();
    let ran = run_command(t.path(), "module", &["check", "m"]);
    let said = format!("{}{}", ran.stdout, ran.stderr);
    assert!(ran.code == 1 || ran.code == 2, "exit {}: {said}", ran.code);
    assert!(
        said.contains("lilypad_module.json.tmpl:2") && said.contains("64 MiB"),
        "{said}"
    );
    assert!(
        ran.peak_rss < 128 << 20,
        "peak RSS {} MiB",
        ran.peak_rss >> 20
    );
    assert!(ran.took < Duration::from_secs(30));
}

/// A job file field of escape sequences and half a megabyte, quoted by the refusal: the
/// message reaches the terminal without control characters and cut to 4 KiB (found by
/// review: 500 KB of raw escapes were printed, setting the terminal's title and clearing
/// its screen). The same holds for every error message, which may quote a CAR's names
/// or a server's answer too.
#[test]
fn a_hostile_job_files_text_is_shown_short_and_without_control_characters() {
    let t = tempfile::tempdir().unwrap();
    let text = format!(
        "Type: batch\nTasks:\n  - Name: main\n    Engine:\n      Type: \"\\e]0;TITLE\\a\\e[2J{}\"\n",
        "J".repeat(500_000)
    );
    std::fs::write(t.path().join("job.yaml"), text).unwrap();
    let ran = run_in(t.path(), &["job.yaml", "-o", "never"]);
    assert_eq!(ran.code, 2, "{}", &ran.stderr[..200.min(ran.stderr.len())]);
    assert!(
        ran.stderr.contains("?]0;TITLE??[2JJJJ"),
        "{}",
        &ran.stderr[..300]
    );
    assert!(!ran.stderr.contains('\x1b'));
    assert!(ran.stderr.len() < 5000, "{} bytes", ran.stderr.len());
    assert!(ran.stderr.contains("bytes not shown"));
    // Its end, where the cause is, is shown too.
    assert!(
        ran.stderr
            .trim_end()
            .ends_with("detwasm runs only jobs whose engine is wasm"),
        "{}",
        &ran.stderr[ran.stderr.len() - 300..]
    );
    // The same job in a batch: its error line, JSON, also without C1 controls (U+009B
    // is a terminal's one-byte CSI), and short.
    let c1 =
        "Type: batch\nTasks:\n  - Name: main\n    Engine:\n      Type: \"A\\u009b2J\\u007fB\"\n";
    std::fs::write(t.path().join("c1.yaml"), c1).unwrap();
    std::fs::write(
        t.path().join("jobs.jsonl"),
        "{\"module\": \"job.yaml\"}\n{\"module\": \"c1.yaml\"}\n",
    )
    .unwrap();
    let ran = run_command(t.path(), "batch", &["jobs.jsonl", "-j", "1"]);
    assert_eq!(ran.stdout.lines().count(), 2, "{}", ran.stdout);
    for line in ran.stdout.lines() {
        assert!(line.len() < 5000, "{} bytes", line.len());
        assert!(!line.chars().any(|c| c.is_control()), "{line}");
    }
}
