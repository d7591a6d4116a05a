//! Compiling a module in a child process that is killed at the job's deadline.
//!
//! wasmtime cannot cancel Cranelift. A compile run on a thread of the job's own process
//! and abandoned at its deadline goes on until it ends, with its CPU and its memory (a
//! review's `detwasm batch` of six hostile lines at `timeout: 1` held 4.5 GB, and the
//! honest lines after them missed their deadlines sharing the cores with it). A compile
//! in a child process is ended with the deadline: the child is killed, and everything it
//! held is the kernel's to take back at once. The child also runs under a memory limit
//! ([`compile_memory_limit`], `RLIMIT_DATA`), so SECURITY.md's compile term is a bound the
//! kernel enforces, not only an estimate.
//!
//! The child is a program the embedder names once ([`set_compile_worker`]): `detwasm`
//! names itself (`/proc/self/exe __compile-worker`), the Python bindings name their
//! interpreter importing the same extension. It calls [`serve`], which reads the module
//! on its stdin, compiles it with the same engine configuration and the same passes
//! ([`engine::compile_with`]) and writes the serialized module on its stdout; the parent
//! deserializes it. A process that named no worker (a library user, the runtime's own
//! tests) compiles on a thread of its own as before ([`crate::compile::compile_by`]).
//!
//! Rejected: `fork` without `exec` (the child of a multi-threaded process may inherit a
//! lock another thread held, wasmtime's or the allocator's, and hang until the deadline:
//! an honest job failing at random); a separate helper program shipped beside
//! `detwasm` (a second file to install and keep at the same version, for nothing the
//! program itself cannot do); sending the module by a temporary file (a pipe leaves
//! nothing behind when either side is killed).

use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Instant;

use wasmtime::{Engine, Module};

use crate::engine::{self, Deadline};
use crate::error::RunError;

/// The program started for each compile, and its arguments.
#[derive(Clone, Debug)]
struct Worker {
    program: PathBuf,
    args: Vec<OsString>,
}

static WORKER: OnceLock<Worker> = OnceLock::new();

/// Names the program that compiles modules for jobs with a deadline: `program args…` must
/// end up calling [`serve`] with this same build of detwasm (same wasmtime, same engine
/// configuration; a worker of another build is caught by wasmtime's compatibility check
/// when its module is deserialized, and the job fails with that error). The first call
/// wins; later ones return `false`.
pub fn set_compile_worker(program: PathBuf, args: Vec<OsString>) -> bool {
    WORKER.set(Worker { program, args }).is_ok()
}

/// Whether a compile worker was named ([`set_compile_worker`]).
pub fn has_compile_worker() -> bool {
    WORKER.get().is_some()
}

/// The first bytes a worker writes, before it reads anything: a worker that cannot start
/// (a Python interpreter that cannot import the extension) writes nothing, and the parent
/// tells that apart from a compile that failed.
const HELLO: &[u8; 8] = b"DTWCW1\0\n";

/// The largest request a worker reads: a module file is at most 256 MiB
/// (`jobspec::resolve::MAX_MODULE_FILE`), and a module given as text is translated before
/// it is sent.
const MAX_REQUEST: u64 = (256 << 20) + 64;

/// Outcome tags of a worker's answer: the module, or one of [`engine::compile_with`]'s
/// errors by kind, then its message.
const OK: u8 = 0;
const NOT_WASM: u8 = 1;
const INVALID: u8 = 2;
const TOO_COMPLEX: u8 = 3;
const OTHER: u8 = 4;

/// Bytes of data (`RLIMIT_DATA`: heap, anonymous and private writable mappings) a compile
/// worker may hold: 4 GiB + 512 MiB per core. SECURITY.md's compile term at the shape
/// limits is at most 3 GiB + 384 MiB per compile thread + 600 MiB of trampolines + 64 MiB
/// of memory images + the process, and wasmtime compiles on one thread per core; the
/// rest is room for the serialized copy of the module the worker sends back. A compile
/// that needs more ends with [`RunError::TooComplex`]. Rejected: `RLIMIT_AS` (it counts
/// address space only reserved, such as the allocator's per-thread arenas of 64 MiB, and
/// would refuse honest modules on machines with many cores).
pub fn compile_memory_limit() -> u64 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    (4 << 30) + cores * (512 << 20)
}

/// [`engine::compile_with`] in the worker, ended at `deadline` by killing it. `None` when
/// no worker is named or the named one could not start (it wrote no [`HELLO`]): the
/// caller then compiles in this process.
pub(crate) fn compile(
    engine: &Engine,
    bytes: &[u8],
    deadline: Deadline,
    unwind: bool,
) -> Option<Result<Module, RunError>> {
    compile_in(WORKER.get()?, engine, bytes, deadline, unwind)
}

fn compile_in(
    worker: &Worker,
    engine: &Engine,
    bytes: &[u8],
    deadline: Deadline,
    unwind: bool,
) -> Option<Result<Module, RunError>> {
    let mut child = match spawn(worker) {
        Ok(child) => child,
        Err(_) => return None,
    };
    let (mut stdin, mut stdout, mut stderr) = (
        child.stdin.take()?,
        child.stdout.take()?,
        child.stderr.take()?,
    );
    let mut request = Vec::with_capacity(bytes.len() + 9);
    request.push(u8::from(unwind));
    request.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    // The request is written on a thread of its own, so that a worker that stops reading
    // (it died, or was killed at the deadline) cannot block this one past the deadline.
    // SIGPIPE is blocked on that thread: a write into a dead worker then fails with
    // EPIPE, which the answer shows, instead of raising SIGPIPE, whose default action
    // (`detwasm` restores it, to end quietly when its own stdout is closed) would end
    // this whole process (found under qemu-user, where the worker cannot start). A
    // SIGPIPE left pending on the thread goes with it. Rejected: ignoring SIGPIPE in the
    // whole process (it is the program's choice, not the runtime's).
    let module = bytes.to_vec();
    std::thread::spawn(move || {
        block_sigpipe_on_this_thread();
        let _ = stdin.write_all(&request);
        let _ = stdin.write_all(&module);
    });
    let (tx, rx) = std::sync::mpsc::sync_channel(2);
    let tx_err = tx.clone();
    std::thread::spawn(move || {
        let mut answer = Vec::new();
        let read = stdout.read_to_end(&mut answer);
        let _ = tx.send(Stream::Out(read.map(|_| answer)));
    });
    std::thread::spawn(move || {
        let mut text = Vec::new();
        // A worker's messages are short (a panic); more is not read.
        let _ = stderr.by_ref().take(64 << 10).read_to_end(&mut text);
        let _ = tx_err.send(Stream::Err(text));
    });
    let (mut answer, mut errors) = (None, None);
    while answer.is_none() || errors.is_none() {
        let left = deadline.at.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(Stream::Out(a)) => answer = Some(a),
            Ok(Stream::Err(e)) => errors = Some(e),
            Err(_) => {
                // The deadline: the compile and all it holds end now.
                let _ = child.kill();
                let _ = child.wait();
                return Some(Err(deadline.expired()));
            }
        }
    }
    let status = child.wait();
    let answer = answer.unwrap_or_else(|| Ok(Vec::new())).unwrap_or_default();
    let errors = String::from_utf8_lossy(&errors.unwrap_or_default()).into_owned();
    let Some(answer) = answer.strip_prefix(HELLO.as_slice()) else {
        // Not started: the caller compiles here, as a process with no worker does.
        tracing::warn!(
            "the compile worker {} did not start ({}): compiling in this process",
            worker.program.display(),
            status.ok().map(describe_status).unwrap_or_default()
        );
        return None;
    };
    Some(read_answer(engine, answer).unwrap_or_else(|| {
        Err(ended_without_answer(
            status.ok().map(describe_status),
            &errors,
        ))
    }))
}

fn block_sigpipe_on_this_thread() {
    // SAFETY: `sigset_t` is plain data, initialised by `sigemptyset` before use; the
    // calls change only this thread's signal mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGPIPE);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

enum Stream {
    Out(std::io::Result<Vec<u8>>),
    Err(Vec<u8>),
}

fn spawn(worker: &Worker) -> std::io::Result<Child> {
    let mut command = Command::new(&worker.program);
    command
        .args(&worker.args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let limit = compile_memory_limit();
    use std::os::unix::process::CommandExt;
    // SAFETY: runs in the child between fork and exec, and calls only `setrlimit` and
    // `prctl`, which are async-signal-safe and touch no memory of the parent's.
    unsafe {
        command.pre_exec(move || {
            let rlimit = libc::rlimit {
                rlim_cur: limit as libc::rlim_t,
                rlim_max: limit as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_DATA, &rlimit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // A worker outlives no parent: a killed `detwasm batch` takes its compile
            // with it.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    command.spawn()
}

/// The module or the error a worker answered, `None` if the answer is cut short.
fn read_answer(engine: &Engine, answer: &[u8]) -> Option<Result<Module, RunError>> {
    let (&tag, payload) = answer.split_first()?;
    let (len, payload) = payload.split_first_chunk::<8>()?;
    let len = usize::try_from(u64::from_le_bytes(*len)).ok()?;
    let payload = payload.get(..len)?;
    let message = || String::from_utf8_lossy(payload).into_owned();
    Some(match tag {
        // SAFETY: the bytes are `Module::serialize`'s output in a child of this process
        // running this same program (`set_compile_worker`), read from a pipe only the
        // two share. A worker of another build is refused by wasmtime's own check of the
        // engine configuration and version, which `deserialize` makes first.
        OK => unsafe { Module::deserialize(engine, payload) }
            .map_err(|e| RunError::Engine(format!("loading the compiled module: {e:#}"))),
        NOT_WASM => Err(RunError::NotWasm(message())),
        INVALID => Err(RunError::InvalidModule(message())),
        TOO_COMPLEX => Err(RunError::TooComplex(message())),
        OTHER => Err(RunError::Engine(message())),
        _ => return None,
    })
}

/// The error of a worker that started and then ended without an answer.
fn ended_without_answer(status: Option<String>, errors: &str) -> RunError {
    // Rust's allocator reports a refused allocation in these words, then aborts.
    if errors.contains("memory allocation of") {
        return RunError::TooComplex(format!(
            "compiling the module needs more than the compile memory limit of {} MiB",
            compile_memory_limit() >> 20
        ));
    }
    let last = errors.lines().rev().find(|l| !l.trim().is_empty());
    RunError::Engine(format!(
        "the compile process ended without an answer ({}){}",
        status.unwrap_or_else(|| "status unknown".into()),
        last.map(|l| format!(": {l}")).unwrap_or_default()
    ))
}

fn describe_status(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => status.to_string(),
    }
}

/// The worker's side: reads one request on stdin, compiles it and writes the answer on
/// stdout. Returns the process's exit status (0 when an answer was written, whether the
/// module compiled or not).
pub fn serve() -> i32 {
    let mut stdout = std::io::stdout().lock();
    if stdout
        .write_all(HELLO)
        .and_then(|_| stdout.flush())
        .is_err()
    {
        return 1;
    }
    let mut request = Vec::new();
    if std::io::stdin()
        .lock()
        .take(MAX_REQUEST)
        .read_to_end(&mut request)
        .is_err()
    {
        return 1;
    }
    let Some((&unwind, rest)) = request.split_first() else {
        return 1;
    };
    let Some((len, module)) = rest.split_first_chunk::<8>() else {
        return 1;
    };
    if usize::try_from(u64::from_le_bytes(*len)).ok() != Some(module.len()) {
        return 1;
    }
    let engine = match engine::new_engine(&engine::EngineOptions {
        cache_dir: None,
        parallel_compilation: true,
    }) {
        Ok(engine) => engine,
        Err(e) => return answer(&mut stdout, OTHER, e.to_string().as_bytes()),
    };
    match engine::compile_with(&engine, module, unwind != 0) {
        Ok(module) => match module.serialize() {
            Ok(bytes) => answer(&mut stdout, OK, &bytes),
            Err(e) => answer(&mut stdout, OTHER, format!("{e:#}").as_bytes()),
        },
        Err(e) => {
            let (tag, message) = match e {
                RunError::NotWasm(m) => (NOT_WASM, m),
                RunError::InvalidModule(m) => (INVALID, m),
                RunError::TooComplex(m) => (TOO_COMPLEX, m),
                RunError::Engine(m) => (OTHER, m),
                other => (OTHER, other.to_string()),
            };
            answer(&mut stdout, tag, message.as_bytes())
        }
    }
}

fn answer(out: &mut impl Write, tag: u8, payload: &[u8]) -> i32 {
    let written = out
        .write_all(&[tag])
        .and_then(|_| out.write_all(&(payload.len() as u64).to_le_bytes()))
        .and_then(|_| out.write_all(payload))
        .and_then(|_| out.flush());
    i32::from(written.is_err())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn script(dir: &std::path::Path, script: &str) -> Worker {
        Worker {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into(), dir.as_os_str().to_owned()],
        }
    }

    fn engine() -> Engine {
        engine::new_engine(&engine::EngineOptions {
            cache_dir: None,
            parallel_compilation: false,
        })
        .unwrap()
    }

    const MODULE: &[u8] = b"\0asm\x01\0\0\0";

    fn deadline(secs: f64) -> Deadline {
        Deadline::after(Duration::from_secs_f64(secs)).unwrap()
    }

    /// The point of the worker: at the deadline the compile is killed and reaped, not
    /// left running (a worker that never answers stands for a slow compile).
    #[test]
    fn a_worker_still_compiling_at_the_deadline_is_killed() {
        let dir = tempfile::tempdir().unwrap();
        let worker = script(
            dir.path(),
            "echo $$ > \"$0/pid\"; printf 'DTWCW1\\000\\n'; exec sleep 600",
        );
        let started = Instant::now();
        let result = compile_in(&worker, &engine(), MODULE, deadline(0.5), false).unwrap();
        assert!(
            matches!(result, Err(RunError::CompileTimeout { .. })),
            "{result:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(30));
        let pid = std::fs::read_to_string(dir.path().join("pid")).unwrap();
        let pid = pid.trim();
        // Killed and waited for: no such process any more, not even a zombie.
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "worker {pid} is still there"
        );
    }

    /// The worker runs with the compile memory limit.
    #[test]
    fn a_worker_runs_under_the_compile_memory_limit() {
        let dir = tempfile::tempdir().unwrap();
        let worker = script(
            dir.path(),
            "cat /proc/self/limits > \"$0/limits\"; printf 'DTWCW1\\000\\n'",
        );
        let _ = compile_in(&worker, &engine(), MODULE, deadline(60.0), false);
        let limits = std::fs::read_to_string(dir.path().join("limits")).unwrap();
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max data size"))
            .unwrap();
        let limit = compile_memory_limit().to_string();
        assert_eq!(
            line.split_whitespace().filter(|w| *w == limit).count(),
            2,
            "{line}"
        );
    }

    /// A worker that cannot start (it answers nothing, as a Python that cannot import
    /// the extension) leaves the compile to this process.
    #[test]
    fn a_worker_that_cannot_start_leaves_the_compile_here() {
        let dir = tempfile::tempdir().unwrap();
        let worker = script(dir.path(), "echo 'no such module' >&2; exit 1");
        assert!(compile_in(&worker, &engine(), MODULE, deadline(60.0), false).is_none());
        let missing = Worker {
            program: dir.path().join("missing"),
            args: vec![],
        };
        assert!(compile_in(&missing, &engine(), MODULE, deadline(60.0), false).is_none());
    }

    /// A worker that started and died says how, and a refused allocation (the memory
    /// limit) is a refusal of the module, not a result.
    #[test]
    fn a_worker_that_dies_is_an_error_that_says_how() {
        let dir = tempfile::tempdir().unwrap();
        let crash = script(
            dir.path(),
            "printf 'DTWCW1\\000\\n'; echo 'thread panicked: boom' >&2; exit 101",
        );
        let e = compile_in(&crash, &engine(), MODULE, deadline(60.0), false)
            .unwrap()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("ended without an answer (exit status 101): thread panicked: boom"),
            "{e}"
        );
        let oom = script(
            dir.path(),
            "printf 'DTWCW1\\000\\n'; echo 'memory allocation of 4096 bytes failed' >&2; kill -ABRT $$",
        );
        let e = compile_in(&oom, &engine(), MODULE, deadline(60.0), false)
            .unwrap()
            .unwrap_err();
        assert!(
            matches!(&e, RunError::TooComplex(m) if m.contains("compile memory limit")),
            "{e}"
        );
    }

    /// A worker that dies without reading its request does not take this process with
    /// it, even with SIGPIPE's default action (what `detwasm` sets): the write fails
    /// instead (found under qemu-user, where `detwasm`'s worker cannot start).
    #[test]
    fn a_worker_that_dies_unread_does_not_end_this_process() {
        // SAFETY: this test's own process (nextest runs each test in one); no other
        // thread of it is writing to a pipe.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
        let dir = tempfile::tempdir().unwrap();
        let module = vec![0u8; 4 << 20];
        for script in ["exit 0", "printf 'DTWCW1\\000\\n'; exit 3"] {
            let worker = self::script(dir.path(), script);
            let _ = compile_in(&worker, &engine(), &module, deadline(60.0), false);
        }
    }

    /// The answers a worker gives, read back: a module, and each kind of error.
    #[test]
    fn answers_are_read_back() {
        let engine = engine();
        let module = engine::compile(&engine, b"(module)").unwrap();
        let mut out = Vec::new();
        assert_eq!(answer(&mut out, OK, &module.serialize().unwrap()), 0);
        assert!(read_answer(&engine, &out).unwrap().is_ok());
        for (tag, check) in [
            (NOT_WASM, "not a WebAssembly module: why"),
            (INVALID, "invalid WebAssembly module: why"),
            (TOO_COMPLEX, "module refused: why"),
            (OTHER, "engine: why"),
        ] {
            let mut out = Vec::new();
            answer(&mut out, tag, b"why");
            let e = read_answer(&engine, &out).unwrap().unwrap_err();
            assert_eq!(e.to_string(), check);
            // Cut short: not an answer.
            assert!(read_answer(&engine, &out[..out.len() - 1]).is_none());
        }
    }
}
