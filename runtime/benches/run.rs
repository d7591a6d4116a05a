//! Criterion benchmarks of detwasm's runtime (not run in CI: `cargo bench -p detwasm-runtime`).
//!
//! - `job/*`: the per-job overhead of `Runtime::run` with a warm module cache (hash the
//!   module, grant capabilities, instantiate, run, write the results directory, hash it),
//!   for the probe module's `exit 0` (no work) and `report` (every channel) modes.
//! - `cost/*`: what the determinism settings cost on compute-heavy code. The same probe
//!   loops (`int`, `float`) run on five engines that differ only in fuel metering (the
//!   fuel pass, [`detwasm_runtime::passes::fuel`], or none), how
//!   NaNs are canonicalized (detwasm's pass, Cranelift after every operation, not at all)
//!   and stack metering; everything else is detwasm's pinned configuration and its WASI
//!   host. `detwasm` is what `detwasm run` uses; `plain` is close to wasmtime's defaults.
//! - `checkpoints/*`: CPython 3.12 running `benches/workloads/py/intloop.py` (fetched by
//!   the set-up) as a job: without the unwind pass, with it and no checkpoint taken, and
//!   with a checkpoint every 10^9 and 10^8 instructions (each unwinds the whole stack and
//!   rewinds it in place), modules compiled beforehand. First measured in the test
//!   profile (one run each, 2 cores): 2.0 s, 7.7 s, 7.9 s (14 checkpoints) and 9.6 s
//!   (144): the pass makes CPython's interpreter about 4 times slower, against a target
//!   of 1.25 (issue "checkpoints").

use std::path::PathBuf;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use detwasm_runtime::engine::{deterministic_config, EngineOptions};
use detwasm_runtime::passes;
use detwasm_runtime::wasi::{add_to_linker, Ctx};
use detwasm_runtime::{capabilities, Destination, Job, Runtime};
use wasmtime::{Engine, Linker, Module, Store};

fn probe() -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/probes/probe.wasm");
    std::fs::read(p).unwrap()
}

fn job_overhead(c: &mut Criterion) {
    let cache = tempfile::tempdir().unwrap();
    let rt = Runtime::new(EngineOptions {
        cache_dir: Some(cache.path().to_path_buf()),
        parallel_compilation: true,
    })
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut g = c.benchmark_group("job");
    g.sample_size(30).measurement_time(Duration::from_secs(5));
    for mode in [vec!["exit", "0"], vec!["report"]] {
        let mut job = Job::new(probe());
        job.args = mode.iter().map(|s| s.to_string()).collect();
        // Warm the cache.
        let name = mode.join("_");
        let warm = out.path().join(format!("warm-{name}"));
        rt.run(&job, &Destination::At(warm)).unwrap();
        let mut i = 0u64;
        g.bench_function(BenchmarkId::new("warm_cache", &name), |b| {
            b.iter(|| {
                i += 1;
                let dest = out.path().join(format!("{name}-{i}"));
                rt.run(&job, &Destination::At(dest)).unwrap()
            })
        });
    }
    g.finish();
}

/// How a variant makes NaNs deterministic.
#[derive(Clone, Copy, PartialEq)]
enum Nan {
    /// detwasm's pass ([`detwasm_runtime::passes::nan`]): only where observable.
    Pass,
    /// Cranelift's canonicalization after every float operation (detwasm before
    /// `detwasm-nan-1`).
    Eager,
    None,
}

struct Variant {
    name: &'static str,
    fuel: bool,
    nan: Nan,
    /// The stack-metering pass ([`detwasm_runtime::passes::stack`]).
    stack: bool,
}

const VARIANTS: [Variant; 5] = [
    Variant {
        name: "detwasm",
        fuel: true,
        nan: Nan::Pass,
        stack: true,
    },
    Variant {
        name: "eager_nan",
        fuel: true,
        nan: Nan::Eager,
        stack: true,
    },
    Variant {
        name: "no_fuel",
        fuel: false,
        nan: Nan::Pass,
        stack: true,
    },
    Variant {
        name: "no_nan",
        fuel: true,
        nan: Nan::None,
        stack: true,
    },
    Variant {
        name: "plain",
        fuel: false,
        nan: Nan::None,
        stack: false,
    },
];

fn run_variant(engine: &Engine, linker: &Linker<Ctx>, module: &Module, args: &[&str]) {
    let mut job = Job::new(Vec::new());
    job.args = args.iter().map(|s| s.to_string()).collect();
    let host = capabilities::grant(&job).unwrap();
    let mut store = Store::new(
        engine,
        Ctx {
            host,
            limits: detwasm_runtime::limiter::JobLimiter::new(u64::MAX),
            memory: None,
            meter: detwasm_runtime::meter::Meter::new(u64::MAX / 2, None),
        },
    );
    let inst = linker.instantiate(&mut store, module).unwrap();
    let start = inst.get_typed_func::<(), ()>(&mut store, "_start").unwrap();
    start.call(&mut store, ()).unwrap();
    assert!(!store.data().host.stdout.is_empty());
}

fn determinism_costs(c: &mut Criterion) {
    let bytes = probe();
    let mut g = c.benchmark_group("cost");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    for v in &VARIANTS {
        let mut cfg = deterministic_config(true);
        cfg.cranelift_nan_canonicalization(v.nan == Nan::Eager);
        let engine = Engine::new(&cfg).unwrap();
        // The passes as the engine applies them (fuel, relaxed SIMD, NaN, stack), those of
        // the variant.
        let mut prepared = bytes.clone();
        if v.fuel {
            prepared = passes::fuel::meter(&prepared).unwrap();
        }
        prepared = passes::relaxed::lower(&prepared).unwrap();
        if v.nan == Nan::Pass {
            prepared = passes::nan::canonicalize(&prepared).unwrap();
        }
        let module = if v.stack {
            detwasm_runtime::engine::compile_rewritten(&engine, &bytes, &prepared).unwrap()
        } else {
            Module::from_binary(&engine, &prepared).unwrap()
        };
        let mut linker = Linker::new(&engine);
        add_to_linker(&mut linker).unwrap();
        detwasm_runtime::meter::define(&mut linker).unwrap();
        for (work, n) in [("int", "20000000"), ("float", "2000000")] {
            g.bench_function(BenchmarkId::new(work, v.name), |b| {
                b.iter(|| run_variant(&engine, &linker, &module, &[work, n]))
            });
        }
    }
    g.finish();
}

fn checkpoint_costs(c: &mut Criterion) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let Ok(python) = std::fs::read(root.join("target/workloads/python-3.12.0.wasm")) else {
        eprintln!(
            "checkpoints: target/workloads/python-3.12.0.wasm is missing: run scripts/setup.sh"
        );
        return;
    };
    let job = Job::new(python)
        .push_input(root.join("benches/workloads/py"), "/inputs")
        .push_arg("/inputs/intloop.py");
    let cache = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let runtime = || {
        Runtime::new(EngineOptions {
            cache_dir: Some(cache.path().to_path_buf()),
            parallel_compilation: true,
        })
        .unwrap()
    };
    let variants = [
        ("plain", runtime()),
        (
            "pass_no_checkpoint",
            runtime().with_checkpoints(u64::MAX / 2),
        ),
        ("every_1e9", runtime().with_checkpoints(1_000_000_000)),
        ("every_1e8", runtime().with_checkpoints(100_000_000)),
    ];
    let mut g = c.benchmark_group("checkpoints");
    g.sample_size(10).measurement_time(Duration::from_secs(60));
    for (name, rt) in &variants {
        rt.load(&job.module.bytes, "_start").unwrap();
        let mut i = 0u64;
        g.bench_function(BenchmarkId::new("cpython_intloop", name), |b| {
            b.iter(|| {
                i += 1;
                let dest = out.path().join(format!("{name}-{i}"));
                rt.run(&job, &Destination::At(dest)).unwrap()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, job_overhead, determinism_costs, checkpoint_costs);
criterion_main!(benches);
