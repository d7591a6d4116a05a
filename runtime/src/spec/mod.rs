//! Lilypad-style module specs: template rendering and Bacalhau job specs.
//!
//! A module is a folder with `lilypad_module.json.tmpl` (and its `.wasm`, or a `.car`
//! holding it). Running one is four steps, each its own sub-module:
//!
//! 1. [`resolve`]: find the folder from a reference (`./dir`, `cowsay`, `cowsay:v0.1.0`;
//!    `github.com/owner/repo:tag` is an error that says to clone it first);
//! 2. [`template`]: render the template exactly as Lilypad does — Go `text/template`,
//!    every input JSON-encoded by Go's `json.Marshal` ([`gofmt`]) before it is
//!    substituted, and the `subst` helper;
//! 3. [`bacalhau`]: read the rendered JSON as Go's `encoding/json` would ([`json`]:
//!    keys case-insensitive, later keys win) and refuse what detwasm cannot honour
//!    (Docker, a network, a GPU, downloads) with an error saying why;
//! 4. [`ModuleDir::job`]: find the entry module (by `Path`, or by `CID`, hashing each
//!    candidate as `ipfs add` would) and build the runtime's [`Job`].
//!
//! ```no_run
//! use std::collections::BTreeMap;
//! use detwasm_runtime::spec::ModuleDir;
//! let module = ModuleDir::open("cowsay")?;
//! let inputs = BTreeMap::from([("Message".to_string(), "moo".to_string())]);
//! println!("{}", module.render(&inputs)?);
//! let prepared = module.job(&inputs, &std::env::current_dir().unwrap())?;
//! # Ok::<(), detwasm_runtime::spec::SpecError>(())
//! ```

pub mod bacalhau;
pub mod car;
pub mod check;
pub mod gofmt;
pub mod json;
pub mod resolve;
pub mod template;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use bacalhau::{parse_rendered, WasmSpec};
pub use resolve::{
    find_module, is_module_reference, module_path, EntryModule, ModuleRef, MODULE_PATH_ENV,
    TEMPLATE_FILE,
};
pub use template::{render_module_template, TemplateError};

use crate::job::{Job, Output, DEFAULT_INPUT_PATH};

/// Why a module could not be loaded, rendered or turned into a job.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error(
        "module `{reference}` not found (looked in: {})",
        display_paths(searched)
    )]
    NotFound {
        reference: String,
        searched: Vec<PathBuf>,
    },

    #[error("module `{reference}` is a git repository: detwasm has no network and does not clone; clone it first, then run the folder: {hint}")]
    NeedsClone { reference: String, hint: String },

    #[error("module `{reference}`: the folder {} is version {}, not the tag asked for (use a folder NAME/TAG, or the matching VERSION)", dir.display(), found.as_deref().unwrap_or("unknown (no VERSION file)"))]
    WrongVersion {
        reference: String,
        dir: PathBuf,
        found: Option<String>,
    },

    #[error("{} holds no {TEMPLATE_FILE}: not a module folder", dir.display())]
    NoTemplate { dir: PathBuf },

    #[error("{}: {message}", path.display())]
    Io { path: PathBuf, message: String },

    #[error("bad input `{0}`: expected KEY=VALUE")]
    BadInput(String),

    #[error(transparent)]
    Template(#[from] TemplateError),

    #[error("the rendered template is not valid JSON (line {line}, column {column}): {message}")]
    Json {
        line: usize,
        column: usize,
        message: String,
    },

    #[error("{path}: expected {expected}, found {found}")]
    FieldType {
        path: String,
        expected: &'static str,
        found: &'static str,
    },

    #[error("{path} is missing: {hint}")]
    Missing { path: String, hint: String },

    #[error("{path} = {value:?} is not valid: expected {hint}")]
    BadValue {
        path: String,
        value: String,
        hint: String,
    },

    #[error("cannot honour {what}: {why}")]
    Refused { what: String, why: String },

    #[error("{}: its CID is not the spec's {expected}: the file hashes to {}; rebuild the module or update the template's CID", file.display(), got.join(", "))]
    CidMismatch {
        file: PathBuf,
        expected: String,
        got: Vec<String>,
    },

    #[error("no entry module with CID {cid} in {}: tried {}", dir.display(), if tried.is_empty() { "nothing (no .wasm or .car file there)".to_string() } else { tried.join("; ") })]
    EntryModuleNotFound {
        dir: PathBuf,
        cid: String,
        tried: Vec<String>,
    },

    #[error("hashing the entry module: {0}")]
    Hash(String),
}

fn display_paths(paths: &[PathBuf]) -> String {
    if paths.is_empty() {
        return format!("nowhere: set {MODULE_PATH_ENV} or give a folder path");
    }
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Parses `-i KEY=VALUE` (split at the first `=`, as Lilypad does; the value may be
/// empty and may hold further `=`).
pub fn parse_input(kv: &str) -> Result<(String, String), SpecError> {
    match kv.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(SpecError::BadInput(kv.to_string())),
    }
}

/// Collects `-i` values into the inputs map (a later value for a key replaces an earlier
/// one, as with Lilypad's map).
pub fn parse_inputs<S: AsRef<str>>(values: &[S]) -> Result<BTreeMap<String, String>, SpecError> {
    values.iter().map(|kv| parse_input(kv.as_ref())).collect()
}

/// A module folder and its template.
#[derive(Debug, Clone)]
pub struct ModuleDir {
    pub dir: PathBuf,
    pub template_path: PathBuf,
    pub template: String,
}

/// A job built from a module, with what it was built from.
#[derive(Debug, Clone)]
pub struct PreparedModule {
    pub job: Job,
    pub rendered: String,
    pub spec: WasmSpec,
    pub entry: EntryModule,
}

impl ModuleDir {
    /// Opens a module by reference, searching [`module_path`] for bare names.
    pub fn open(reference: &str) -> Result<ModuleDir, SpecError> {
        Self::open_in(reference, &module_path())
    }

    /// Opens a module by reference, searching `search` for bare names.
    pub fn open_in(reference: &str, search: &[PathBuf]) -> Result<ModuleDir, SpecError> {
        let dir = find_module(reference, search)?;
        let template_path = dir.join(TEMPLATE_FILE);
        let template = std::fs::read_to_string(&template_path).map_err(|e| SpecError::Io {
            path: template_path.clone(),
            message: e.to_string(),
        })?;
        Ok(ModuleDir {
            dir,
            template_path,
            template,
        })
    }

    /// The rendered template text, byte for byte what Lilypad would produce.
    pub fn render(&self, inputs: &BTreeMap<String, String>) -> Result<String, SpecError> {
        let name = self.template_path.display().to_string();
        Ok(render_module_template(&name, &self.template, inputs)?)
    }

    /// Renders and parses the spec, refusing what cannot be honoured.
    pub fn spec(&self, inputs: &BTreeMap<String, String>) -> Result<(String, WasmSpec), SpecError> {
        let rendered = self.render(inputs)?;
        let spec = parse_rendered(&rendered)?;
        Ok((rendered, spec))
    }

    /// Builds the job: the entry module found and checked, args, env, inputs (relative
    /// `SourcePath`s resolved against `cwd`, as a CLI user expects), outputs, memory
    /// limit and timeout from the spec. Seed, epoch, fuel and results options keep the
    /// job's defaults: the caller (the CLI) sets them.
    pub fn job(
        &self,
        inputs: &BTreeMap<String, String>,
        cwd: &Path,
    ) -> Result<PreparedModule, SpecError> {
        let (rendered, spec) = self.spec(inputs)?;
        let entry =
            resolve::entry_module(&self.dir, &spec.entry_module.cid, &spec.entry_module.path)?;
        let mut job = Job::new(entry.bytes.clone())
            .with_source(entry.file.display().to_string())
            .with_entry(spec.entry_point.clone());
        job.args = spec.parameters.clone();
        job.env = spec.env.clone();
        for input in &spec.inputs {
            let host = cwd.join(&input.source_path);
            if !host.exists() {
                return Err(SpecError::Io {
                    path: host,
                    message: "input SourcePath does not exist".into(),
                });
            }
            let guest = if input.path.is_empty() {
                DEFAULT_INPUT_PATH.to_string()
            } else {
                input.path.clone()
            };
            job = job.push_input(host, guest);
        }
        if let Some(outputs) = &spec.outputs {
            job.outputs = outputs
                .iter()
                .map(|o| Output {
                    name: o.name.clone(),
                    guest: o.path.clone(),
                })
                .collect();
        }
        if let Some(memory) = spec.memory {
            job.limits.memory = memory;
        }
        job.limits.timeout = spec.timeout;
        Ok(PreparedModule {
            job,
            rendered,
            spec,
            entry,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_split_at_the_first_equals() {
        assert_eq!(
            parse_input("Message=a=b").unwrap(),
            ("Message".into(), "a=b".into())
        );
        assert_eq!(
            parse_input("Empty=").unwrap(),
            ("Empty".into(), String::new())
        );
        assert!(parse_input("novalue").is_err());
        assert!(parse_input("=x").is_err());
        let m = parse_inputs(&["A=1", "A=2"]).unwrap();
        assert_eq!(m["A"], "2");
    }

    #[test]
    fn a_module_folder_becomes_a_job() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("m");
        std::fs::create_dir_all(dir.join("data")).unwrap();
        std::fs::write(dir.join("m.wasm"), b"hello\n").unwrap();
        std::fs::write(
            dir.join(TEMPLATE_FILE),
            r#"{"job":{"Spec":{"Engine":"Wasm","Wasm":{"EntryModule":{"CID":"QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN"},"Parameters":[{{if .Msg}}{{.Msg}}{{else}}"dflt"{{end}}],"EnvironmentVariables":{"K":{{if .Msg}}{{.Msg}}{{else}}""{{end}}}},"Inputs":[{"StorageSource":"localDirectory","SourcePath":"data","Path":"/in"}],"Outputs":[{"Name":"out","Path":"/out"}],"Resources":{"Memory":"64Mb"},"Timeout":10}}}"#,
        )
        .unwrap();
        let module = ModuleDir::open_in(dir.to_str().unwrap(), &[]).unwrap();
        let inputs = parse_inputs(&["Msg=hi \"you\""]).unwrap();
        let p = module.job(&inputs, &dir).unwrap();
        assert_eq!(p.job.args, vec!["hi \"you\""]);
        assert_eq!(p.job.env, vec![("K".to_string(), "hi \"you\"".to_string())]);
        assert_eq!(p.job.entry, "_start");
        assert_eq!(p.job.inputs[0].guest, "/in");
        assert_eq!(p.job.inputs[0].host, dir.join("data"));
        assert_eq!(
            (
                p.job.outputs[0].name.as_str(),
                p.job.outputs[0].guest.as_str()
            ),
            ("out", "/out")
        );
        assert_eq!(p.job.limits.memory, 64 << 20);
        assert_eq!(
            p.job.limits.timeout,
            Some(std::time::Duration::from_secs(10))
        );
        assert_eq!(&p.job.module.bytes[..], b"hello\n");
        let defaults = module.spec(&BTreeMap::new()).unwrap().1;
        assert_eq!(defaults.parameters, vec!["dflt"]);
    }
}
