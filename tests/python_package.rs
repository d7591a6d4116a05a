//! The Python package (python/): its pytest suite, run by the workspace's test command so
//! that CI runs it. The suite checks `detwasm.run/hash/verify` against the command line
//! and runs a two-node Ray cluster on loopback, kills the worker node mid-run and checks
//! every receipt against a serial `detwasm batch` (python/tests/test_ray_cluster.py).
//!
//! The package is reinstalled from this checkout first (`pip install ./python`: maturin,
//! the dev profile and the workspace's target/, so only the extension crate is compiled,
//! and nothing when it is fresh), so the suite never tests an extension older than the
//! source. Needs python3 with pip, maturin, pytest and ray: `scripts/setup.sh` installs
//! them.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

#[test]
fn pytest_suite_passes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let started = Instant::now();
    let install = Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-build-isolation",
            "--no-deps",
        ])
        .args([
            "--disable-pip-version-check",
            "--root-user-action=ignore",
            "./python",
        ])
        .current_dir(root)
        .output()
        .expect("python3 runs (scripts/setup.sh installs what the Python package needs)");
    assert!(
        install.status.success(),
        "pip install ./python failed:\n{}{}",
        String::from_utf8_lossy(&install.stdout),
        String::from_utf8_lossy(&install.stderr)
    );
    eprintln!(
        "pip install ./python: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    let pytest = Command::new("python3")
        .args([
            "-m",
            "pytest",
            "python/tests",
            "-q",
            "-p",
            "no:cacheprovider",
        ])
        .env("DETWASM_BIN", env!("CARGO_BIN_EXE_detwasm"))
        .env_remove("RAY_ADDRESS")
        .current_dir(root)
        .output()
        .expect("python3 runs");
    let out = String::from_utf8_lossy(&pytest.stdout);
    eprintln!("{out}{}", String::from_utf8_lossy(&pytest.stderr));
    eprintln!("pytest: {:.1} s", started.elapsed().as_secs_f64());
    assert!(
        pytest.status.success(),
        "the pytest suite failed (output above)"
    );
    assert!(
        !out.contains("skipped"),
        "no test may be skipped in the workspace run: {out}"
    );
}
