//! `detwasm cache` end to end: what the module cache holds, and trimming it to a size.

mod cli_support;
use cli_support::*;

/// A run fills the cache; `cache info` counts it; `cache gc --max-size 0` empties it;
/// the next run compiles again and gives the same receipt.
#[test]
fn the_cache_is_counted_and_trimmed() {
    let t = tempfile::tempdir().unwrap();
    let cache = t.path().join("cache");
    let run = |out: &str| {
        detwasm()
            .env("DETWASM_CACHE_DIR", &cache)
            .current_dir(t.path())
            .args(["run", "--json", "-o", out])
            .arg(fixture("probes/probe.wasm"))
            .args(["--", "report"])
            .output()
            .unwrap()
    };
    let first = receipt(&run("a"));
    let info = |t: &std::path::Path| {
        let out = detwasm()
            .env("DETWASM_CACHE_DIR", &cache)
            .current_dir(t)
            .args(["cache", "info", "--json"])
            .output()
            .unwrap();
        serde_json::from_str::<serde_json::Value>(&ok(&out)).unwrap()
    };
    let before = info(t.path());
    assert_eq!(before["modules"], 1, "{before}");
    assert!(before["bytes"].as_u64().unwrap() > 0);
    assert_eq!(before["trusted"], true);
    let gc = detwasm()
        .env("DETWASM_CACHE_DIR", &cache)
        .args(["cache", "gc", "--max-size", "0"])
        .output()
        .unwrap();
    ok(&gc);
    assert!(String::from_utf8_lossy(&gc.stderr).contains("removed 1 compiled modules"));
    assert_eq!(info(t.path())["modules"], 0);
    let second = receipt(&run("b"));
    assert_eq!(
        (&first["cid"], &first["instructions"]),
        (&second["cid"], &second["instructions"])
    );
}
