//! The determinism contract, tested through the library: the probe module reads every
//! channel a host could leak through; runs under perturbed hosts must agree on the
//! results CID and the instruction count, and the values it sees must be the ones the
//! contract promises.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use detwasm_runtime::job::{Epoch, Limits};
use detwasm_runtime::{Destination, EngineOptions, Job, Outcome, Receipt, RunError, Runtime};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/probes")
        .join(name)
}

fn probe() -> Vec<u8> {
    std::fs::read(fixture("probe.wasm")).expect("fixtures/probes/probe.wasm")
}

/// A runtime with the module cache shared by the tests of this build.
fn cached_runtime() -> Runtime {
    Runtime::new(EngineOptions {
        cache_dir: Some(PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("detwasm-test-cache")),
        parallel_compilation: true,
    })
    .unwrap()
}

/// A runtime with the options that must not matter flipped: no cache, serial compilation.
fn uncached_runtime() -> Runtime {
    Runtime::new(EngineOptions {
        cache_dir: None,
        parallel_compilation: false,
    })
    .unwrap()
}

#[derive(Clone, Copy)]
enum Order {
    Forward,
    Reverse,
}

/// Creates the same input tree under `root`, in the given creation order and with the
/// given mtime, so that host inode numbers, directory hash order and times all differ.
fn make_inputs(root: &Path, order: Order, mtime: SystemTime) {
    let mut files: Vec<(&str, &[u8])> = vec![
        ("b.txt", b"bee\n"),
        ("a.txt", b"ay\n"),
        ("Z.txt", b"zed\n"),
        (".hid", b"hidden\n"),
        ("\u{e4}.txt", b"umlaut\n"),
        ("sub/deep.txt", b"deep\n"),
        ("sub/inner/x", b"x"),
        ("m/1", b"1"),
        ("m/10", b"10"),
        ("m/2", b"2"),
    ];
    // Enough entries that listing `many` takes several fd_readdir calls (cookies).
    for i in 0..600 {
        files.push((Box::leak(format!("many/f{i:03}").into_boxed_str()), b"n"));
    }
    if let Order::Reverse = order {
        files.reverse();
    }
    for (name, data) in &files {
        let p = root.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, data).unwrap();
    }
    std::os::unix::fs::symlink("../b.txt", root.join("sub/link")).unwrap();
    // Links that point out of the mount: never followed on the host.
    std::os::unix::fs::symlink("/etc/passwd", root.join("sub/abs")).unwrap();
    std::os::unix::fs::symlink("../../../../../../etc/passwd", root.join("sub/up")).unwrap();
    std::fs::create_dir_all(root.join("empty")).unwrap();
    for (name, _) in &files {
        let f = std::fs::File::options()
            .write(true)
            .open(root.join(name))
            .unwrap();
        f.set_modified(mtime).unwrap();
    }
}

fn report_job(input: &Path) -> Job {
    Job::new(probe())
        .push_input(input, "/inputs")
        .push_arg("report")
        .push_env("FOO", "bar")
        .push_env("LANG", "C")
        .with_stdin(b"to stdin\n".to_vec())
}

fn run(rt: &Runtime, job: &Job, dest: &Path) -> Receipt {
    rt.run(job, &Destination::At(dest.to_path_buf()))
        .unwrap_or_else(|e| panic!("run failed: {e}"))
}

fn parse_report(text: &str) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for line in text.lines() {
        for part in line.split(' ') {
            if let Some((k, v)) = part.split_once('=') {
                m.entry(k.to_string()).or_insert_with(|| v.to_string());
            }
        }
    }
    m
}

/// Names, contents and times of every file under `root` (to prove it is untouched).
fn snapshot(root: &Path) -> Vec<(PathBuf, Vec<u8>, SystemTime)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for p in entries {
            let md = std::fs::symlink_metadata(&p).unwrap();
            let data = if md.is_file() {
                std::fs::read(&p).unwrap()
            } else {
                Vec::new()
            };
            out.push((p.clone(), data, md.modified().unwrap()));
            if md.is_dir() {
                stack.push(p);
            }
        }
    }
    out
}

struct Busy(Arc<AtomicBool>, Option<std::thread::JoinHandle<()>>);
impl Busy {
    /// Keeps one core busy until dropped.
    fn start() -> Busy {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let h = std::thread::spawn(move || {
            let mut x = 1u64;
            while !s.load(Ordering::Relaxed) {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
        });
        Busy(stop, Some(h))
    }
}
impl Drop for Busy {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
        if let Some(h) = self.1.take() {
            let _ = h.join();
        }
    }
}

#[test]
fn same_results_cid_and_instructions_on_perturbed_hosts() {
    // Host A: disk (ext4 under the temp dir), files created in one order, old mtimes,
    // module cache on, parallel compilation.
    let a = tempfile::tempdir().unwrap();
    let in_a = a.path().join("in");
    make_inputs(
        &in_a,
        Order::Forward,
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000),
    );
    let before_a = snapshot(&in_a);
    let rt_a = cached_runtime();
    let r_a = run(&rt_a, &report_job(&in_a), &a.path().join("results"));

    // Host B: tmpfs (/dev/shm), a longer, different path, reverse creation order, other
    // mtimes, no cache, serial compilation, another core busy, other TZ in the process.
    let shm = Path::new("/dev/shm");
    let b = if shm.is_dir() {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    };
    let in_b = b.path().join("some/other/place/inputs-b");
    make_inputs(
        &in_b,
        Order::Reverse,
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_900_000_000),
    );
    std::env::set_var("TZ", "Pacific/Kiritimati");
    std::env::set_var("DETWASM_PROBE_NOISE", "host-b");
    let busy = Busy::start();
    let rt_b = uncached_runtime();
    let r_b = run(
        &rt_b,
        &report_job(&in_b),
        &b.path().join("out/deeper/results"),
    );
    drop(busy);

    assert_eq!(r_a.cid, r_b.cid, "results CID differs between hosts");
    assert_eq!(
        r_a.instructions, r_b.instructions,
        "instruction count differs"
    );
    assert_eq!(r_a.job_id, r_b.job_id, "job id depends on host paths");
    assert_eq!(r_a.module_cid, r_b.module_cid);
    assert_eq!(r_a.job.inputs[0].cid, r_b.job.inputs[0].cid);
    assert_eq!(r_a.exit_code, 0);
    assert!(r_a.verifiable && r_b.verifiable);
    let out_a = std::fs::read_to_string(a.path().join("results/stdout")).unwrap();
    let out_b = std::fs::read_to_string(b.path().join("out/deeper/results/stdout")).unwrap();
    assert_eq!(out_a, out_b);

    // The inputs were read, never written.
    assert_eq!(
        before_a,
        snapshot(&in_a),
        "the host input directory changed"
    );

    // The results CID is the hasher's CID of the delivered directory, hidden files
    // included.
    let opts =
        detwasm_hasher::Options::profile(detwasm_hasher::Profile::UnixfsV0_2015).with_hidden(true);
    let direct = detwasm_hasher::hash_path(&a.path().join("results"), &opts).unwrap();
    assert_eq!(direct.root.to_string(), r_a.cid);
}

#[test]
fn the_guest_sees_the_values_the_contract_promises() {
    let t = tempfile::tempdir().unwrap();
    let input = t.path().join("in");
    make_inputs(&input, Order::Reverse, SystemTime::now());
    let rt = cached_runtime();
    // Compile first, so the time bound below is about the run (the 10 s sleep), not about
    // compiling on a loaded machine.
    rt.load(&probe(), "_start").unwrap();
    let started = Instant::now();
    let r = run(&rt, &report_job(&input), &t.path().join("res"));
    let took = started.elapsed();
    let text = std::fs::read_to_string(t.path().join("res/stdout")).unwrap();
    let m = parse_report(&text);
    let epoch = 1_640_995_200_000_000_000u64;

    // Clocks: the first wall read is the epoch, each read +1 ms; monotonic from 0.
    assert_eq!(m["wall.first"], epoch.to_string());
    assert_eq!(m["wall.second"], (epoch + 1_000_000).to_string());
    assert_eq!(m["mono.first"], "0");
    assert_eq!(m["mono.second"], "1000000");
    assert_eq!(m["clock.bad_id.errno"], "28"); // EINVAL
                                               // A 10 s sleep advanced virtual time by 10 s and did not wait (generous bound: the
                                               // whole run, compile included, in well under the 10 s it asked for).
    let slept: u64 = m["sleep.mono_elapsed_ms"].parse().unwrap();
    let wall_adv: u64 = m["sleep.wall_advance_ms"].parse().unwrap();
    assert!((10_000..10_010).contains(&slept), "slept {slept} ms");
    assert!(
        (10_000..10_010).contains(&wall_adv),
        "wall advanced {wall_adv} ms"
    );
    assert!(took < Duration::from_secs(8), "run took {took:?}");

    // NaNs are canonical.
    assert_eq!(m["nan.f64"], "0x7ff8000000000000");
    assert_eq!(m["nan.f32"], "0x7fc00000");
    assert_eq!(m["nan.inf_minus_inf"], "0x7ff8000000000000");
    assert_eq!(m["nan.sqrt_neg1"], "0x7ff8000000000000");

    // No network.
    // fd 3 is a preopened folder: ENOTSOCK, as wasmtime answers (no fd is a socket).
    assert_eq!(m["sock_accept.errno"], "57");
    assert_eq!(m["sock_shutdown.errno"], "57");
    assert_eq!(m["tcp.connect.ok"], "false");

    // memory.grow beyond the limit fails.
    assert_eq!(m["grow.60000_pages"], "-1");

    // Args and env are the job's only; argv[0] fixed.
    assert!(text.contains(r#"args=["module.wasm", "report"]"#), "{text}");
    assert!(
        text.contains(r#"env=[("FOO", "bar"), ("LANG", "C")]"#),
        "{text}"
    );
    assert!(text.contains(r#"stdin.len=9 stdin="to stdin\n""#));

    // Random: the seeded stream (seed 0), the same HashMap order every run.
    assert_eq!(m["random.errno"], "0");

    // Directory listing sorted by name bytes.
    let entries: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("entry /inputs/"))
        .map(|l| l.split(' ').next().unwrap())
        .filter(|p| !p.contains('/'))
        .collect();
    let mut sorted = entries.clone();
    sorted.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    assert_eq!(entries, sorted);
    assert_eq!(
        entries,
        [
            ".hid",
            "Z.txt",
            "a.txt",
            "b.txt",
            "empty",
            "m",
            "many",
            "sub",
            "\u{e4}.txt"
        ]
    );
    let many: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("entry /inputs/many/"))
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    let want: Vec<String> = (0..600).map(|i| format!("f{i:03}")).collect();
    assert_eq!(many, want);
    let m_dir: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("entry /inputs/m/"))
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    assert_eq!(m_dir, ["1", "10", "2"]);

    // Stat: inodes in first-seen (sorted) order, nlink 1, dir size constant, times = epoch.
    let line = |prefix: &str| {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line {prefix}"))
            .to_string()
    };
    assert!(line("root /inputs ").contains("ino=1 nlink=1 size=4096"));
    assert!(line("entry /inputs/.hid ").contains("ino=2 dev=1 nlink=1 size=7"));
    assert!(line("entry /inputs/Z.txt ").contains("ino=3 "));
    let e = line("entry /inputs/empty ");
    assert!(
        e.contains("kind=dir") && e.contains("nlink=1 size=4096"),
        "{e}"
    );
    for l in text.lines().filter(|l| l.starts_with("entry /inputs/")) {
        assert!(
            l.contains(&format!("atim={epoch} mtim={epoch} ctim={epoch}")),
            "host time leaked: {l}"
        );
    }
    // Files the guest writes carry virtual-clock times, after the 10 s sleep.
    let out = line("entry /outputs/sub/c.txt ");
    let mt: u64 = out
        .split(' ')
        .find_map(|p| p.strip_prefix("mtim="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        mt > epoch + 10_000_000_000 && mt < epoch + 11_000_000_000,
        "{out}"
    );

    // Read-only inputs, no escape.
    assert_eq!(m["inputs.write.error"], "Some(ReadOnlyFilesystem)");
    assert_eq!(m["escape.dotdot.ok"], "false");
    assert_eq!(m["escape.abs.ok"], "false");
    assert!(line("readlink /inputs/sub/link").contains("follow=ok len=4"));
    for escaping in ["readlink /inputs/sub/abs", "readlink /inputs/sub/up"] {
        let l = line(escaping);
        assert!(
            l.contains("follow=error") && l.contains("os error 76"),
            "{l}"
        );
    }

    // Setting times: explicit values kept, "now" is the virtual clock (after the 10 s
    // sleep), inputs refuse (read-only file system, errno 69).
    assert!(line("settimes.explicit ").contains("errno=0 atim=1000 mtim=2000"));
    let now = line("settimes.now ");
    let field = |l: &str, k: &str| -> u64 {
        l.split(' ')
            .find_map(|p| p.strip_prefix(k))
            .unwrap()
            .parse()
            .unwrap()
    };
    for k in ["atim=", "mtim=", "ctim="] {
        let v = field(&now, k);
        assert!(
            v > epoch + 10_000_000_000 && v < epoch + 11_000_000_000,
            "{now}"
        );
    }
    assert_eq!(line("settimes.input "), "settimes.input errno=69");

    // The outputs folder holds what the guest wrote, hidden file included.
    let res = t.path().join("res");
    assert_eq!(
        std::fs::read(res.join("outputs/sub/c.txt")).unwrap(),
        b"bee"
    );
    assert_eq!(
        std::fs::read(res.join("outputs/sub/a.txt")).unwrap(),
        b"ay-appended"
    );
    assert!(res.join("outputs/.hidden").is_file());
    assert!(res.join("outputs/sub/deeper").is_dir());
    assert_eq!(std::fs::read_to_string(res.join("exitCode")).unwrap(), "0");
    assert_eq!(r.outcome, "exited");
    assert!(r.trap.is_none());
}

#[test]
fn seed_and_epoch_are_the_only_sources_of_time_and_randomness() {
    let t = tempfile::tempdir().unwrap();
    let rt = cached_runtime();
    let job = |seed: u64, epoch: u64| {
        Job::new(probe())
            .push_arg("report")
            .with_seed(seed)
            .with_epoch(Epoch::from_unix_secs(epoch))
    };
    let run_report = |j: Job, name: &str| {
        let dest = t.path().join(name);
        let r = run(&rt, &j, &dest);
        (
            r,
            parse_report(&std::fs::read_to_string(dest.join("stdout")).unwrap()),
        )
    };
    let (r0, m0) = run_report(job(0, 1_640_995_200), "s0");
    let (r0b, m0b) = run_report(job(0, 1_640_995_200), "s0b");
    let (r1, m1) = run_report(job(1, 1_640_995_200), "s1");
    let (r2, m2) = run_report(job(0, 1_000), "e1000");
    assert_eq!(r0.cid, r0b.cid);
    assert_eq!(m0["random.bytes"], m0b["random.bytes"]);
    assert_eq!(m0["hashmap.order"], m0b["hashmap.order"]);
    assert_ne!(m0["random.bytes"], m1["random.bytes"]);
    assert_ne!(r0.job_id, r1.job_id);
    assert_ne!(r0.cid, r1.cid);
    assert_eq!(m2["wall.first"], "1000000000000");
    assert_ne!(r0.job_id, r2.job_id);
    // The random stream is ChaCha20 keyed by the seed (key = seed little-endian, zero
    // padded; nonce 0): for seed 0 the guest's first bytes are RFC 8439's test vector
    // A.1 #1 keystream. A dependency upgrade that changed the stream fails here.
    assert_eq!(m0["random.bytes"], "76b8e0ada0f13d90405d6ae55386bd28");
    let mut rng = <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::from_seed(
        detwasm_runtime::wasi::host::chacha_key(0),
    );
    let mut want = [0u8; 16];
    rand_core::RngCore::fill_bytes(&mut rng, &mut want);
    let hex: String = want.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(m0["random.bytes"], hex);
    assert!(r2.verifiable);
}

#[test]
fn fuel_exhaustion_is_deterministic() {
    let t = tempfile::tempdir().unwrap();
    let job = Job::new(probe()).push_arg("spin").with_limits(Limits {
        fuel: 3_000_000,
        ..Limits::default()
    });
    let r1 = run(&cached_runtime(), &job, &t.path().join("a"));
    let busy = Busy::start();
    let r2 = run(&uncached_runtime(), &job, &t.path().join("b"));
    drop(busy);
    assert_eq!(r1.outcome, "out_of_fuel");
    assert_eq!(r1.instructions, 3_000_000);
    assert_eq!(r1.exit_code, 134);
    assert_eq!(r1.cid, r2.cid);
    assert_eq!(r1.instructions, r2.instructions);
    assert!(r1.verifiable);
    let stderr = std::fs::read_to_string(t.path().join("a/stderr")).unwrap();
    assert!(stderr.contains("out of fuel"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(t.path().join("a/exitCode")).unwrap(),
        "134"
    );
}

#[test]
fn output_quota_is_deterministic() {
    let t = tempfile::tempdir().unwrap();
    let job = Job::new(probe())
        .push_arg("write")
        .push_arg("100000")
        .with_limits(Limits {
            max_output: 50_000,
            ..Limits::default()
        });
    let r1 = run(&cached_runtime(), &job, &t.path().join("a"));
    let r2 = run(&uncached_runtime(), &job, &t.path().join("b"));
    assert_eq!(r1.outcome, "output_quota");
    assert_eq!(
        (r1.cid.as_str(), r1.instructions),
        (r2.cid.as_str(), r2.instructions)
    );
    // Whole 4 KiB writes that fit are kept; the one that did not fit is refused.
    let big = std::fs::metadata(t.path().join("a/outputs/big.bin")).unwrap();
    assert_eq!(big.len(), 12 * 4096);
    let stderr = std::fs::read_to_string(t.path().join("a/stderr")).unwrap();
    assert!(stderr.contains("output quota exceeded"), "{stderr}");
    // Under the quota the same module finishes normally.
    let ok = Job::new(probe()).push_arg("write").push_arg("10000");
    let r3 = run(&cached_runtime(), &ok, &t.path().join("c"));
    assert_eq!(r3.outcome, "exited");
}

#[test]
fn memory_limit_is_deterministic() {
    let t = tempfile::tempdir().unwrap();
    let limits = Limits {
        memory: 4 << 20,
        ..Limits::default()
    };
    // memory.grow past the limit returns -1 ...
    let grow = Job::new(probe())
        .push_arg("grow")
        .push_arg("100")
        .with_limits(limits);
    let r = run(&cached_runtime(), &grow, &t.path().join("g"));
    assert_eq!(r.exit_code, 0);
    assert_eq!(
        std::fs::read_to_string(t.path().join("g/stdout")).unwrap(),
        "grow=-1\n"
    );
    // ... and an allocation that needs it aborts, the same way on every run.
    let alloc = grow.clone().push_arg("alloc");
    let r1 = run(&cached_runtime(), &alloc, &t.path().join("a1"));
    let r2 = run(&uncached_runtime(), &alloc, &t.path().join("a2"));
    assert_eq!(r1.outcome, "trap");
    assert_eq!(
        (r1.cid.as_str(), r1.instructions),
        (r2.cid.as_str(), r2.instructions)
    );
}

#[test]
fn stack_overflow_and_nan_and_relaxed_simd_probes_agree_across_engines() {
    let t = tempfile::tempdir().unwrap();
    let wat = |n: &str| Job::new(std::fs::read(fixture(n)).unwrap());
    let (c, u) = (cached_runtime(), uncached_runtime());

    let s1 = run(&c, &wat("stack.wat"), &t.path().join("s1"));
    let s2 = run(&u, &wat("stack.wat"), &t.path().join("s2"));
    assert_eq!(s1.outcome, "trap");
    assert!(s1.trap.as_deref().unwrap().contains("call stack exhausted"));
    assert_eq!(
        (s1.cid.as_str(), s1.instructions),
        (s2.cid.as_str(), s2.instructions)
    );

    let n = run(&c, &wat("nan.wat"), &t.path().join("n"));
    assert_eq!(n.exit_code, 0);
    let bytes = std::fs::read(t.path().join("n/stdout")).unwrap();
    let vals: Vec<u64> = bytes
        .chunks(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(
        vals,
        [
            0x7ff8000000000000,
            0x7fc00000,
            0x7ff8000000000000,
            0x7ff8000000000000,
            0x7ff8000000000000,
            0x7ff8000000000000,
            0x7ff8000000000000,
            0x7ff8000000000000
        ]
    );

    let r = run(&c, &wat("relaxed.wat"), &t.path().join("r"));
    assert_eq!(r.exit_code, 0);
    let b = std::fs::read(t.path().join("r/stdout")).unwrap();
    let lanes: Vec<i32> = b[..16]
        .chunks(4)
        .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    // Deterministic relaxed truncation saturates: NaN -> 0, 3e9 -> i32::MAX.
    assert_eq!(lanes, [0, i32::MAX, 0, 0]);
    // Deterministic relaxed swizzle: out-of-range indices give 0.
    assert_eq!(&b[32..40], &[1, 0, 0, 0, 0, 4, 0, 2]);
    // The deterministic profile's relaxed madd is unfused: 0, not 2^-24.
    assert_eq!(&b[48..64], &[0; 16]);
    // Its relaxed dot product saturates each pair's sum: 32767, not -32768.
    assert_eq!(&b[64..80], &i16::MAX.to_le_bytes().repeat(8)[..]);
}

#[test]
fn spin_waits_on_the_clock_terminate() {
    let t = tempfile::tempdir().unwrap();
    let job = Job::new(probe()).push_arg("clockspin").push_arg("1000");
    let r = run(&cached_runtime(), &job, &t.path().join("c"));
    assert_eq!(r.exit_code, 0);
    // 1 ms per read: after the start read, the k-th check reads start + k ms, so the loop
    // body runs for k = 1..=999 and the 1000th check ends it.
    assert_eq!(
        std::fs::read_to_string(t.path().join("c/stdout")).unwrap(),
        "clock reads=999\n"
    );
}

#[test]
fn timeout_marks_the_run_unverifiable() {
    let t = tempfile::tempdir().unwrap();
    let job = Job::new(probe()).push_arg("spin").with_limits(Limits {
        fuel: u64::MAX,
        timeout: Some(Duration::from_millis(200)),
        ..Limits::default()
    });
    let r = run(&cached_runtime(), &job, &t.path().join("t"));
    assert_eq!(r.outcome, "timeout");
    assert!(!r.verifiable);
    assert_eq!(r.exit_code, 134);
}

#[test]
fn exit_codes_are_recorded() {
    let t = tempfile::tempdir().unwrap();
    let job = Job::new(probe()).push_arg("exit").push_arg("3");
    let r = run(&cached_runtime(), &job, &t.path().join("x"));
    assert_eq!(r.exit_code, 3);
    assert_eq!(r.outcome, "exited");
    assert_eq!(
        std::fs::read_to_string(t.path().join("x/exitCode")).unwrap(),
        "3"
    );
}

#[test]
fn failed_runs_leave_no_results_directory() {
    let t = tempfile::tempdir().unwrap();
    let rt = cached_runtime();
    let dest = t.path().join("res");
    let cases: Vec<(Job, &str)> = vec![
        (
            Job::new(b"not a module at all".to_vec()),
            "not a WebAssembly module",
        ),
        (
            Job::new(std::fs::read(fixture("bad_import.wat")).unwrap()),
            "`env`.`host_time`",
        ),
        (
            Job::new(std::fs::read(fixture("bad_import_type.wat")).unwrap()),
            "wrong type",
        ),
        (
            Job::new(std::fs::read(fixture("no_start.wat")).unwrap()),
            "no exported function `_start`",
        ),
        (
            Job::new(probe()).push_input(t.path().join("missing"), "/inputs"),
            "does not exist",
        ),
        (
            Job::new(vec![0, b'a', b's', b'm', 0x0d, 0, 1, 0]),
            "component",
        ),
    ];
    for (job, want) in cases {
        let err = rt
            .run(&job, &Destination::At(dest.clone()))
            .expect_err("the run must fail");
        assert!(err.to_string().contains(want), "{err} (wanted {want})");
        assert!(!dest.exists(), "a failed run left {}", dest.display());
    }
    // Nothing else either: no staging folder left behind.
    let left: Vec<_> = std::fs::read_dir(t.path()).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");

    // An existing, non-empty destination is refused before running.
    std::fs::create_dir(&dest).unwrap();
    std::fs::write(dest.join("keep"), b"mine").unwrap();
    let err = rt
        .run(&Job::new(probe()), &Destination::At(dest.clone()))
        .unwrap_err();
    assert!(matches!(err, RunError::OutputExists(_)), "{err}");
    assert_eq!(std::fs::read(dest.join("keep")).unwrap(), b"mine");
}

#[test]
fn skip_hidden_reproduces_ipfs_add_without_hidden_files() {
    let t = tempfile::tempdir().unwrap();
    let rt = cached_runtime();
    let mut job = Job::new(probe()).push_arg("report");
    let all = run(&rt, &job, &t.path().join("all"));
    job.results.skip_hidden = true;
    let vis = run(&rt, &job, &t.path().join("vis"));
    // The probe writes /outputs/.hidden: only the default CID covers it.
    assert_ne!(all.cid, vis.cid);
    let opts = detwasm_hasher::Options::profile(detwasm_hasher::Profile::UnixfsV0_2015);
    let ipfs_add = detwasm_hasher::hash_path(&t.path().join("vis"), &opts).unwrap();
    assert_eq!(ipfs_add.root.to_string(), vis.cid);
    // A v1 profile gives a CIDv1.
    job.results.profile = detwasm_hasher::Profile::UnixfsV1_2025;
    let v1 = run(&rt, &job, &t.path().join("v1"));
    assert!(v1.cid.starts_with("bafy"), "{}", v1.cid);
    let _ = Outcome::Exited(0);
}

#[test]
fn concurrent_jobs_agree_and_one_jobs_timeout_does_not_stop_another() {
    let t = tempfile::tempdir().unwrap();
    let rt = cached_runtime();
    let work = Job::new(probe()).push_arg("int").push_arg("20000000");
    let solo = run(&rt, &work, &t.path().join("solo"));
    let spin = Job::new(probe()).push_arg("spin").with_limits(Limits {
        fuel: u64::MAX,
        timeout: Some(Duration::from_millis(300)),
        ..Limits::default()
    });
    // While one job spins into its wall-clock timeout (each store checks its own
    // deadline when its guest pauses on fuel), the same runtime runs other jobs: they
    // must neither be interrupted nor see a different instruction count.
    let (timed_out, others) = std::thread::scope(|s| {
        let spinner = s.spawn(|| run(&rt, &spin, &t.path().join("spin")));
        let worker = s.spawn(|| {
            (0..4)
                .map(|i| run(&rt, &work, &t.path().join(format!("w{i}"))))
                .collect::<Vec<_>>()
        });
        (spinner.join().unwrap(), worker.join().unwrap())
    });
    assert_eq!(timed_out.outcome, "timeout");
    for r in others {
        assert_eq!(r.outcome, "exited");
        assert!(r.verifiable);
        assert_eq!(
            (r.cid.as_str(), r.instructions),
            (solo.cid.as_str(), solo.instructions)
        );
    }
}
