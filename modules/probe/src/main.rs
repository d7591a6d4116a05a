//! probe: a module that reads every channel through which a host could leak into a guest
//! and writes what it sees, as `key=value` lines, to stdout and `/outputs/report.txt`.
//! detwasm's tests run it under perturbed hosts and compare the results CIDs.
//!
//! Modes (argv[1]):
//! - `report` (default): everything below, one line per observation.
//! - `spin`: loop forever (fuel exhaustion).
//! - `write N`: write N bytes to /outputs/big.bin (output quota).
//! - `grow PAGES`: memory.grow by PAGES, print the result.
//! - `clockspin MS`: busy-wait until the wall clock advanced MS milliseconds.
//! - `int N`, `float N`: compute-heavy loops (benchmarks).
//! - `exit CODE`: exit with CODE.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[link(wasm_import_module = "wasi_snapshot_preview1")]
extern "C" {
    fn random_get(buf: *mut u8, len: usize) -> u16;
    fn sock_accept(fd: u32, flags: u16, out: *mut u32) -> u16;
    fn sock_shutdown(fd: u32, how: u8) -> u16;
    fn clock_time_get(id: u32, precision: u64, out: *mut u64) -> u16;
    fn path_filestat_get(fd: u32, flags: u32, path: *const u8, len: usize, out: *mut u64) -> u16;
    fn path_filestat_set_times(
        fd: u32,
        flags: u32,
        path: *const u8,
        len: usize,
        atim: u64,
        mtim: u64,
        fst_flags: u16,
    ) -> u16;
}

/// Sets the times of `name` in directory `dir` with the raw preview1 call (std never
/// passes the `*_NOW` flags), then returns its (atim, mtim, ctim).
fn set_times(dir: &str, name: &str, atim: u64, mtim: u64, flags: u16) -> (u16, u64, u64, u64) {
    let d = std::fs::File::open(dir).unwrap();
    let fd = d.as_raw_fd() as u32;
    let e = unsafe { path_filestat_set_times(fd, 0, name.as_ptr(), name.len(), atim, mtim, flags) };
    let mut st = [0u64; 8];
    unsafe { path_filestat_get(fd, 0, name.as_ptr(), name.len(), st.as_mut_ptr()) };
    (e, st[5], st[6], st[7])
}

/// (dev, ino, nlink, size) of `path` without following a final symlink, through the raw
/// preview1 call (std's wasi MetadataExt is unstable).
fn raw_stat(path: &std::path::Path) -> (u64, u64, u64, u64) {
    let parent = path.parent().unwrap();
    let name = path.file_name().unwrap().to_str().unwrap();
    let dir = std::fs::File::open(parent).unwrap();
    let mut st = [0u64; 8];
    let e = unsafe {
        path_filestat_get(
            dir.as_raw_fd() as u32,
            0,
            name.as_ptr(),
            name.len(),
            st.as_mut_ptr(),
        )
    };
    assert_eq!(e, 0, "path_filestat_get {}", path.display());
    (st[0], st[1], st[3], st[4])
}

fn wall_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn list(out: &mut String, dir: &str) {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) => {
            let _ = writeln!(out, "readdir {dir} error={e}");
            return;
        }
    };
    for entry in rd {
        let entry = entry.unwrap();
        let path = entry.path();
        let p = path.display().to_string();
        let md = std::fs::symlink_metadata(&path).unwrap();
        let kind = if md.is_dir() {
            "dir"
        } else if md.file_type().is_symlink() {
            "symlink"
        } else {
            "file"
        };
        let t = |r: std::io::Result<SystemTime>| {
            r.ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        };
        let (dev, ino, nlink, size) = raw_stat(&path);
        let _ = writeln!(
            out,
            "entry {p} kind={kind} ino={ino} dev={dev} nlink={nlink} size={size} atim={} mtim={} ctim={}",
            t(md.accessed()),
            t(md.modified()),
            t(md.created().or_else(|_| md.modified())),
        );
        if md.is_dir() {
            list(out, &p);
        } else if kind == "file" {
            match std::fs::read(&path) {
                Ok(bytes) => {
                    let sum: u64 = bytes.iter().map(|&b| b as u64).sum();
                    let _ = writeln!(out, "content {p} len={} sum={sum}", bytes.len());
                }
                Err(e) => {
                    let _ = writeln!(out, "content {p} error={e}");
                }
            }
        } else {
            let _ = writeln!(
                out,
                "readlink {p} target={:?} follow={}",
                std::fs::read_link(&path).map(|t| t.display().to_string()),
                std::fs::read(&path)
                    .map(|b| format!("ok len={}", b.len()))
                    .unwrap_or_else(|e| format!("error {e}"))
            );
        }
    }
}

fn report() -> String {
    let mut out = String::new();
    let o = &mut out;
    // Clocks: the first wall-clock read, before anything else reads a clock.
    let w1 = wall_ns();
    let w2 = wall_ns();
    let _ = writeln!(o, "wall.first={w1}");
    let _ = writeln!(o, "wall.second={w2}");
    let mut mono = [0u64; 2];
    unsafe {
        clock_time_get(1, 1, &mut mono[0]);
        clock_time_get(1, 1, &mut mono[1]);
    }
    let _ = writeln!(o, "mono.first={}", mono[0]);
    let _ = writeln!(o, "mono.second={}", mono[1]);
    let mut res = 0u64;
    let e = unsafe { clock_time_get(99, 1, &mut res) };
    let _ = writeln!(o, "clock.bad_id.errno={e}");

    // Sleep: virtual time jumps, no real waiting.
    let i0 = Instant::now();
    let s0 = wall_ns();
    std::thread::sleep(Duration::from_secs(10));
    let slept = i0.elapsed();
    let s1 = wall_ns();
    let _ = writeln!(o, "sleep.mono_elapsed_ms={}", slept.as_millis());
    let _ = writeln!(o, "sleep.wall_advance_ms={}", (s1 - s0) / 1_000_000);

    // Random.
    let mut buf = [0u8; 16];
    let e = unsafe { random_get(buf.as_mut_ptr(), buf.len()) };
    let hex: String = buf.iter().map(|b| format!("{b:02x}")).collect();
    let _ = writeln!(o, "random.errno={e} random.bytes={hex}");
    let map: HashMap<u32, u32> = (0..16).map(|i| (i, i)).collect();
    let order: Vec<String> = map.keys().map(|k| k.to_string()).collect();
    let _ = writeln!(o, "hashmap.order={}", order.join(","));

    // Args and env.
    let args: Vec<String> = std::env::args().collect();
    let _ = writeln!(o, "args={args:?}");
    let mut env: Vec<(String, String)> = std::env::vars().collect();
    env.sort();
    let _ = writeln!(o, "env={env:?}");

    // stdin.
    let mut input = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut input);
    let _ = writeln!(
        o,
        "stdin.len={} stdin={:?}",
        input.len(),
        String::from_utf8_lossy(&input)
    );

    // NaN bits of 0.0/0.0, stored to memory.
    let z64 = std::hint::black_box(0.0f64);
    let z32 = std::hint::black_box(0.0f32);
    let n64 = std::hint::black_box(z64 / z64);
    let n32 = std::hint::black_box(z32 / z32);
    let _ = writeln!(o, "nan.f64=0x{:016x}", n64.to_bits());
    let _ = writeln!(o, "nan.f32=0x{:08x}", n32.to_bits());
    let inf = std::hint::black_box(f64::INFINITY);
    let _ = writeln!(o, "nan.inf_minus_inf=0x{:016x}", (inf - inf).to_bits());
    let sq = std::hint::black_box(-1.0f64).sqrt();
    let _ = writeln!(o, "nan.sqrt_neg1=0x{:016x}", sq.to_bits());

    // Sockets.
    let mut fd = 0u32;
    let e1 = unsafe { sock_accept(3, 0, &mut fd) };
    let e2 = unsafe { sock_shutdown(3, 3) };
    let _ = writeln!(o, "sock_accept.errno={e1} sock_shutdown.errno={e2}");
    let tcp = std::net::TcpStream::connect("127.0.0.1:80");
    let _ = writeln!(o, "tcp.connect.ok={}", tcp.is_ok());

    // memory.grow beyond the limit fails (returns -1), the same way every time.
    let before = core::arch::wasm32::memory_size(0);
    let g = core::arch::wasm32::memory_grow(0, 60_000);
    let _ = writeln!(o, "grow.60000_pages={} pages_before={before}", g as isize);

    // Filesystem: inputs, read-only, no escape.
    for dir in ["/inputs", "/inputs2"] {
        if let Ok(md) = std::fs::metadata(dir) {
            let f = std::fs::File::open(dir).unwrap();
            let mut st = [0u64; 8];
            unsafe {
                path_filestat_get(f.as_raw_fd() as u32, 0, ".".as_ptr(), 1, st.as_mut_ptr());
            }
            let _ = writeln!(
                o,
                "root {dir} ino={} nlink={} size={} mtim={:?}",
                st[1],
                st[3],
                st[4],
                md.modified()
                    .ok()
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            );
            list(o, dir);
        }
    }
    let ro = std::fs::write("/inputs/new.txt", b"x");
    let _ = writeln!(o, "inputs.write.error={:?}", ro.err().map(|e| e.kind()));
    let esc = std::fs::read("/inputs/../etc/passwd");
    let _ = writeln!(o, "escape.dotdot.ok={}", esc.is_ok());
    let abs = std::fs::read("/etc/passwd");
    let _ = writeln!(o, "escape.abs.ok={}", abs.is_ok());

    // Outputs: write, stat, list.
    std::fs::create_dir_all("/outputs/sub/deeper").unwrap();
    std::fs::write("/outputs/sub/b.txt", b"bee").unwrap();
    std::fs::write("/outputs/sub/a.txt", b"ay").unwrap();
    std::fs::write("/outputs/.hidden", b"hidden").unwrap();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open("/outputs/sub/a.txt")
        .unwrap();
    f.write_all(b"-appended").unwrap();
    drop(f);
    std::fs::rename("/outputs/sub/b.txt", "/outputs/sub/c.txt").unwrap();
    // Set times: explicit values are kept; "now" is the virtual clock, never the host's.
    let (e, a, m, c) = set_times("/outputs/sub", "c.txt", 1_000, 2_000, 1 | 4);
    let _ = writeln!(o, "settimes.explicit errno={e} atim={a} mtim={m} ctim={c}");
    let (e, a, m, c) = set_times("/outputs/sub", "c.txt", 0, 0, 2 | 8);
    let _ = writeln!(o, "settimes.now errno={e} atim={a} mtim={m} ctim={c}");
    if std::fs::metadata("/inputs/a.txt").is_ok() {
        let (e, _, _, _) = set_times("/inputs", "a.txt", 0, 0, 2 | 8);
        let _ = writeln!(o, "settimes.input errno={e}");
    }
    let _ = writeln!(o, "outputs:");
    list(o, "/outputs");
    let now = wall_ns();
    let _ = writeln!(o, "wall.last={now}");
    out
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map(String::as_str).unwrap_or("report");
    let n: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(0);
    match mode {
        "report" => {
            let r = report();
            std::fs::write("/outputs/report.txt", &r).unwrap();
            print!("{r}");
        }
        "spin" => {
            let mut x: u64 = 1;
            loop {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        }
        "write" => {
            let chunk = vec![b'x'; 4096];
            let mut f = std::fs::File::create("/outputs/big.bin").unwrap();
            let mut left = n as usize;
            while left > 0 {
                let k = left.min(chunk.len());
                f.write_all(&chunk[..k]).unwrap();
                left -= k;
            }
            println!("wrote {n}");
        }
        "grow" => {
            let g = core::arch::wasm32::memory_grow(0, n as usize);
            println!("grow={}", g as isize);
            // An allocation that cannot be served aborts (a trap), deterministically.
            if args.get(3).map(String::as_str) == Some("alloc") {
                let v: Vec<u8> = vec![1u8; (n as usize) * 65536];
                println!("allocated {}", v.len());
            }
        }
        "clockspin" => {
            let start = wall_ns();
            let mut reads = 0u64;
            while wall_ns() - start < n as u128 * 1_000_000 {
                reads += 1;
            }
            println!("clock reads={reads}");
        }
        "int" => {
            // xorshift + integer mixing: pure integer work.
            let mut x: u64 = 88172645463325252;
            let mut acc: u64 = 0;
            for i in 0..n {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                acc = acc.wrapping_add(x % (i | 1)).rotate_left(5);
            }
            println!("int={acc}");
        }
        "float" => {
            // A small n-body-like loop: multiplies, divides, square roots.
            let mut p = [[0.1f64, 0.2, 0.3], [1.0, -0.5, 0.25], [-0.7, 0.9, 0.4]];
            let mut v = [[0.0f64; 3]; 3];
            for _ in 0..n {
                for i in 0..3 {
                    for j in 0..3 {
                        if i == j {
                            continue;
                        }
                        let d = [p[j][0] - p[i][0], p[j][1] - p[i][1], p[j][2] - p[i][2]];
                        let r2 = d[0] * d[0] + d[1] * d[1] + d[2] * d[2] + 1e-3;
                        let inv = 1.0 / (r2 * r2.sqrt());
                        for k in 0..3 {
                            v[i][k] += d[k] * inv * 1e-4;
                        }
                    }
                }
                for i in 0..3 {
                    for k in 0..3 {
                        p[i][k] += v[i][k] * 1e-2;
                    }
                }
            }
            println!(
                "float={:016x}",
                p[0][0].to_bits() ^ p[1][1].to_bits() ^ p[2][2].to_bits()
            );
        }
        "exit" => std::process::exit(n as i32),
        other => {
            eprintln!("probe: unknown mode {other}");
            std::process::exit(2);
        }
    }
}
