//! Differential test: detwasm renders module templates byte for byte as Lilypad does.
//!
//! The reference is Go itself: `tests/module_lilypad_render/main.go` is Lilypad's
//! LoadModule rendering (text/template + `subst`, inputs `json.Marshal`-ed, executed on
//! a `map[string]string`). The test builds it when `go` is on PATH (Debian's golang-go
//! is enough; `scripts/setup.sh` installs it) and compares `detwasm module render` with
//! it on every example template and on a template that uses every construct detwasm
//! supports. Without Go the test fails: a conformance check that silently passes proves
//! nothing.
//!
//! Inputs avoid `\b` and `\f`: Go before 1.22 escapes them as `\u0008`/`\u000c`, Lilypad
//! builds with a newer Go (short forms, as detwasm writes them).

mod cli_support;
use cli_support::*;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn go_renderer(dir: &Path) -> PathBuf {
    let ok = Command::new("go")
        .arg("version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "`go` is not installed: run scripts/setup.sh (it installs Debian's golang-go), \
         the reference renderer of this test is Go's text/template"
    );
    let bin = dir.join("lilypad-render");
    let status = Command::new("go")
        .args(["build", "-o"])
        .arg(&bin)
        .arg("main.go")
        .current_dir(root().join("tests/module_lilypad_render"))
        .env("GOFLAGS", "-mod=mod")
        .env("GO111MODULE", "off")
        .status()
        .unwrap();
    assert!(
        status.success(),
        "building the Go reference renderer failed"
    );
    bin
}

/// The stress template: every construct of the supported subset, Go 1.19-compatible.
const EVERY_CONSTRUCT: &str = r#"{{- /* every construct */ -}}
{
  "plain": {{.A}},
  "missing": "{{.Missing}}",
  "ifelse": {{if .A}}{{.A}}{{else}}"dflt"{{end}},
  "elseif": {{if .Missing}}1{{else if .B}}{{.B}}{{else}}3{{end}},
  "nested": "{{if .A}}{{if .Missing}}x{{else}}y{{end}}{{end}}",
  "with": {{with .B}}{{.}}{{else}}"none"{{end}},
  "subst": "{{subst "%s and %s, %5s|%-4s|%.2s" .A .B .A .B .A}}",
  "subst_missing_arg": "{{subst "%s %s" .A}}",
  "subst_extra": "{{subst "%s" .A .B}}",
  "printf": {{printf "%q" .A}},
  "printf_missing": "{{printf "%s %v" .Missing .Missing}}",
  "pipe": "{{.A | printf "%s!" | printf "<%s>"}}",
  "paren": "{{printf "%d-%d" (len .A) 7}}",
  "logic": "{{and .A .B}} {{or .Missing .B}} {{not .A}} {{not .Missing}}",
  "compare": "{{eq .A .A}} {{ne .A .B}} {{eq .Missing .A}} {{eq 1 2 1}}",
  "print": "{{print 1 2 "x" 3}}",
  "literals": "{{"s\t"}}{{`raw`}}{{3}}{{-1}}{{1.5}}{{true}}{{0x10}}",
  "trim": "a   {{- .A -}}   b",
  "nested_with": "{{with .A}}{{with .}}{{len .}}{{end}}{{end}}",
  "huge_widths": "{{printf "%999999999999d|gone" 1}} {{printf "%.99999999s" "x"}} {{printf "%*d" 99999999 1}} {{printf "%.*s" -1 "abc"}} {{printf "%*d|" -3 7}} {{printf "%5." 1}} {{printf "%-4z" 3}} {{len (printf "%1000001d" 1)}}"
}
"#;

#[test]
fn detwasm_renders_exactly_as_lilypads_go_code() {
    let tmp = tempfile::tempdir().unwrap();
    let go = go_renderer(tmp.path());
    let stress = tmp.path().join("every");
    fs::create_dir_all(&stress).unwrap();
    fs::write(stress.join("lilypad_module.json.tmpl"), EVERY_CONSTRUCT).unwrap();
    let stress = stress.to_str().unwrap().to_string();
    let mut broken = Vec::new();
    for (name, text) in [("unclosed", "{\n{{if .A}}\n}"), ("nofunc", "{{nosuch .A}}")] {
        let dir = tmp.path().join(name);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("lilypad_module.json.tmpl"), text).unwrap();
        broken.push(dir.to_str().unwrap().to_string());
    }

    let tricky = r#"quotes " and \ back, <tags> & amps, tab	é ü 日本 🐄, line
break, U+2028 [ ] and control "#;
    let cases: Vec<(String, Vec<String>)> = vec![
        ("cowsay".into(), vec![]),
        ("cowsay".into(), vec!["Message=moo".into()]),
        ("cowsay".into(), vec![format!("Message={tricky}")]),
        ("cowsay".into(), vec!["Message=".into()]),
        ("artgen".into(), vec![]),
        (
            "artgen".into(),
            vec![
                "Prompt=a lake at night".into(),
                "Seed=7".into(),
                "Width=64".into(),
            ],
        ),
        (
            "wordstats".into(),
            vec!["Input=some/dir".into(), "Top=5".into()],
        ),
        ("digits".into(), vec![]),
        ("digits".into(), vec!["Images=pics".into()]),
        (stress.clone(), vec!["A=x".into(), "B=why".into()]),
        (stress.clone(), vec![format!("A={tricky}"), "B=".into()]),
        (stress.clone(), vec!["A=".into()]),
        (broken[0].clone(), vec!["A=x".into()]),
        (broken[1].clone(), vec!["A=x".into()]),
    ];
    let mut checked_errors = 0;
    for (module, inputs) in cases {
        let dir = if module.starts_with('/') {
            PathBuf::from(&module)
        } else {
            root().join("modules").join(&module)
        };
        let expected = Command::new(&go)
            .arg(dir.join("lilypad_module.json.tmpl"))
            .args(&inputs)
            .output()
            .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_detwasm"));
        cmd.args(["module", "render", &module]);
        for kv in &inputs {
            cmd.arg("-i").arg(kv);
        }
        let ours = cmd.output().unwrap();
        if !expected.status.success() {
            // Go refuses to render: so must detwasm, for the same reason.
            let go_err = String::from_utf8_lossy(&expected.stderr);
            let reason = go_err.trim().rsplit(": ").next().unwrap();
            let our_err = String::from_utf8_lossy(&ours.stderr);
            assert!(
                !ours.status.success(),
                "Go failed ({go_err}) but detwasm rendered {module} {inputs:?}"
            );
            assert!(our_err.contains(reason), "Go: {go_err}\ndetwasm: {our_err}");
            checked_errors += 1;
            continue;
        }
        assert!(
            ours.status.success(),
            "detwasm failed on {module} {inputs:?}: {}",
            String::from_utf8_lossy(&ours.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&ours.stdout),
            String::from_utf8_lossy(&expected.stdout),
            "rendering differs from Lilypad's for {module} {inputs:?}"
        );
    }
    assert_eq!(
        checked_errors, 3,
        "a missing subst argument, an unclosed if and an unknown function fail in both"
    );
}
