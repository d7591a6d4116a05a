//! The corpus of jobs that pins detwasm's rules: every example module, the probe, NaNs
//! scalar, vector and relaxed, recursion to the metered stack limit, memory growth and
//! running out of fuel. `tests/cross_arch.rs` runs it on x86-64 and aarch64;
//! `tests/protocol.rs` pins its receipts to the protocol version.

/// A job: `detwasm run` arguments (paths relative to the repository root).
pub struct Job {
    pub name: &'static str,
    pub args: Vec<&'static str>,
}

fn job(name: &'static str, args: &[&'static str]) -> Job {
    Job {
        name,
        args: args.to_vec(),
    }
}

pub fn jobs() -> Vec<Job> {
    vec![
        // Every example module.
        job("cowsay", &["cowsay", "-i", "Message=moo"]),
        job(
            "artgen",
            &["artgen", "-i", "Prompt=a quiet lake", "-i", "Seed=7"],
        ),
        job(
            "wordstats",
            &[
                "fixtures/modules/wordstats.wasm",
                "--input",
                "modules/wordstats/samples",
                "--",
                "--top",
                "5",
                "/inputs",
            ],
        ),
        job(
            "digits",
            &[
                "fixtures/modules/digits.wasm",
                "--input",
                "modules/digits/samples",
                "--",
                "/inputs",
            ],
        ),
        // The probe: every channel of the determinism contract, integer and float work.
        job(
            "probe report",
            &["fixtures/probes/probe.wasm", "--", "report"],
        ),
        job(
            "probe int",
            &["fixtures/probes/probe.wasm", "--", "int", "20000"],
        ),
        job(
            "probe float",
            &["fixtures/probes/probe.wasm", "--", "float", "2000"],
        ),
        // NaNs every way, scalar and SIMD, and relaxed SIMD.
        job("nan", &["fixtures/probes/nan.wat"]),
        job("nans", &["fixtures/probes/nans.wat"]),
        job("relaxed", &["fixtures/probes/relaxed.wat"]),
        // Recursion to the metered stack limit, with frames small and large.
        job("stack", &["fixtures/probes/stack.wat"]),
        job(
            "stack small frames",
            &["--entry", "small", "fixtures/probes/stack_frames.wat"],
        ),
        job(
            "stack v128 frames",
            &["--entry", "v128", "fixtures/probes/stack_frames.wat"],
        ),
        job(
            "stack v128 parameters",
            &["--entry", "params", "fixtures/probes/stack_frames.wat"],
        ),
        // Memory growth to the limit, and out of fuel at the same instruction.
        job(
            "memory growth",
            &["--memory", "8MiB", "fixtures/probes/grow.wat"],
        ),
        job(
            "out of fuel",
            &[
                "--fuel",
                "123457",
                "fixtures/probes/probe.wasm",
                "--",
                "int",
                "100000000",
            ],
        ),
    ]
}
