//! `detwasm module check`: what a module author wants to know before publishing.
//!
//! Five steps, each reported with its evidence; a failed step stops the ones that need
//! it: the template renders; the rendered spec is a WASM job detwasm can honour (its
//! inputs inside the allowed folders: [`detwasm_jobspec::InputPolicy`]); the
//! entry module is found and matches its CID; the wasm loads and imports only
//! `wasi_snapshot_preview1` (with the types detwasm provides) and exports its entry
//! point; a test run with the given (default: no) inputs, done twice into different
//! folders, gives the same results CID, instruction count and exit code, and exits 0.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use detwasm_jobspec::{InputPolicy, ModuleDir};
use detwasm_runtime::run::{Destination, Runtime};

/// One step of a check.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CheckStep {
    pub step: &'static str,
    pub ok: bool,
    pub detail: String,
}

/// Runs the check; the steps done, in order (it stops at the first failure).
pub fn check(
    module: &ModuleDir,
    inputs: &BTreeMap<String, String>,
    cwd: &Path,
    policy: &InputPolicy,
    runtime: &Runtime,
) -> Vec<CheckStep> {
    let mut steps = Vec::new();
    let mut record = |step: &'static str, result: Result<String, String>| {
        let ok = result.is_ok();
        steps.push(CheckStep {
            step,
            ok,
            detail: result.unwrap_or_else(|e| e),
        });
        ok
    };

    let rendered = module.render(inputs);
    if !record(
        "template renders",
        rendered
            .as_ref()
            .map(|r| format!("{} bytes of JSON text", r.len()))
            .map_err(|e| e.to_string()),
    ) {
        return steps;
    }
    // Inputs are part of "can honour": a SourcePath outside the allowed folders is a
    // spec detwasm refuses to run, so it fails this step with the refusal's message.
    let spec =
        detwasm_jobspec::parse_rendered(rendered.as_ref().expect("checked above")).and_then(|s| {
            policy.resolve_inputs(&module.dir, cwd, &s)?;
            Ok(s)
        });
    if !record(
        "spec is a WASM job detwasm can honour",
        spec.as_ref()
            .map(|s| {
                format!(
                    "entry point {}, {} parameters, {} inputs",
                    s.entry_point,
                    s.parameters.len(),
                    s.inputs.len()
                )
            })
            .map_err(|e| e.to_string()),
    ) {
        return steps;
    }
    let prepared = module.job(inputs, cwd, policy);
    let detail = prepared.as_ref().map(|p| match &p.entry.matched {
        Some((cid, how)) => format!("{} is {cid} ({how})", p.entry.file.display()),
        None => format!(
            "{} (named by Path, no CID to check)",
            p.entry.file.display()
        ),
    });
    if !record(
        "entry module found and matches its CID",
        detail.map_err(|e| e.to_string()),
    ) {
        return steps;
    }
    let prepared = prepared.expect("checked above");
    // Loading compiles the module: the job's wall-clock safety net bounds it as it
    // bounds a run's compile (`Runtime::load_by`). Rejected: `Runtime::load`, no
    // deadline (a module inside the shape limits can compile for minutes).
    let deadline = detwasm_runtime::engine::Deadline::after(prepared.job.limits.safety_timeout());
    let loaded = runtime
        .load_by(&prepared.job.module.bytes, &prepared.job.entry, deadline)
        .map(|m| {
            // The module's own imports, not the one the fuel pass adds.
            let own = || {
                m.imports()
                    .filter(|i| !detwasm_runtime::meter::is_pass_import(i.module(), i.name()))
            };
            let namespaces: BTreeSet<String> = own().map(|i| i.module().to_string()).collect();
            let names: Vec<String> = own().map(|i| i.name().to_string()).collect();
            format!(
                "{} imports, all from {}: {}",
                names.len(),
                namespaces.into_iter().collect::<Vec<_>>().join(", "),
                names.join(" ")
            )
        });
    if !record(
        "wasm loads, imports only wasi_snapshot_preview1",
        loaded.map_err(|e| e.to_string()),
    ) {
        return steps;
    }
    let runs = (|| -> Result<String, String> {
        let tmp = crate::scratch::Scratch::new("detwasm-check-", "the check's runs")
            .map_err(|e| e.to_string())?;
        let first = runtime
            .run(&prepared.job, &Destination::At(tmp.path().join("first")))
            .map_err(|e| e.to_string())?;
        let second = runtime
            .run(
                &prepared.job,
                &Destination::At(tmp.path().join("second-run")),
            )
            .map_err(|e| e.to_string())?;
        let a = (&first.cid, first.instructions, first.exit_code);
        let b = (&second.cid, second.instructions, second.exit_code);
        if a != b {
            return Err(format!(
                "NOT reproducible: first run {} ({} instructions, exit {}), second run {} ({} instructions, exit {})",
                a.0, a.1, a.2, b.0, b.1, b.2
            ));
        }
        if first.exit_code != 0 {
            let why = first
                .trap
                .clone()
                .map(|t| format!(": {t}"))
                .unwrap_or_default();
            // The end of its stderr: a Rust panic's message is there, where the trap
            // only says `unreachable`.
            let tail = std::fs::read(tmp.path().join("first/stderr"))
                .map(|b| stderr_tail(&b, STDERR_TAIL_LINES))
                .unwrap_or_default();
            let tail: String = tail.lines().map(|l| format!("\n  | {l}")).collect();
            return Err(format!(
                "reproducible, but the test run exited {}{why} (results {}){}",
                first.exit_code,
                first.cid,
                if tail.is_empty() {
                    String::new()
                } else {
                    format!("; the end of its stderr:{tail}")
                }
            ));
        }
        Ok(format!(
            "twice {} ({} instructions, exit 0)",
            first.cid, first.instructions
        ))
    })();
    record("test run is reproducible", runs);
    steps
}

/// How many of the last lines of a failed run's stderr are shown (`detwasm run` and
/// `module check`).
pub const STDERR_TAIL_LINES: usize = 10;

/// The last `n` lines of `bytes` (within their last 4 KiB), as text: what is shown of a
/// failed run's stderr.
pub fn stderr_tail(bytes: &[u8], n: usize) -> String {
    let text = String::from_utf8_lossy(&bytes[bytes.len().saturating_sub(4096)..]);
    let lines: Vec<&str> = text.trim_end().lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_of_stderr_is_its_last_lines() {
        assert_eq!(stderr_tail(b"a\nb\nc\n\n", 2), "b\nc");
        assert_eq!(stderr_tail(b"only", 10), "only");
        assert_eq!(stderr_tail(b"", 10), "");
        let long = format!("first\n{}\nlast\n", "x".repeat(5000));
        assert_eq!(
            stderr_tail(long.as_bytes(), 10),
            format!("{}\nlast", "x".repeat(4090))
        );
    }
}
