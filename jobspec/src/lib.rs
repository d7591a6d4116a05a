//! detwasm-jobspec: job files, read as their own tools read them, turned into a [`Job`].
//!
//! What it owns: Lilypad module folders (`lilypad_module.json.tmpl`, rendered byte for
//! byte as Lilypad's Go `text/template` renders it), Bacalhau job specs (v1beta1, the
//! rendered Lilypad spec, and v1 job files in YAML or JSON), Go's JSON, fmt and YAML 1.1
//! rules as those tools apply them, content named by CID beside a job (folders, files,
//! CARs), and the confinement of every host path a job file names ([`InputPolicy`]).
//! What it does not: run anything or depend on an engine; a job file becomes a
//! [`Job`] (from `detwasm-job`), and `detwasm-runtime` runs it.
//!
//! A module folder is turned into a job in four steps, each its own module:
//!
//! 1. [`resolve`]: find the folder from a reference (`./dir`, `cowsay`, `cowsay:v0.1.0`;
//!    `github.com/owner/repo:tag` is an error that says to clone it first);
//! 2. [`gotemplate`]: render the template exactly as Lilypad does — Go `text/template`,
//!    every input JSON-encoded by Go's `json.Marshal` ([`gocompat`]) before it is
//!    substituted, and the `subst` helper;
//! 3. [`bacalhau::v1beta1`]: read the rendered JSON as Go's `encoding/json` would
//!    ([`json`]: keys case-insensitive, later keys win) and refuse what detwasm cannot
//!    honour (Docker, a network, a GPU, downloads) with an error saying why;
//! 4. [`ModuleDir::job`]: confine every input `SourcePath` to the folders the operator
//!    allowed ([`InputPolicy`]), find the entry module (by `Path`, or by `CID`, hashing
//!    each candidate as `ipfs add` would) and build the [`Job`].
//!
//! A Bacalhau v1 job file takes [`bacalhau::v1`] (with [`yaml`]) instead of steps 1–3.
//!
//! ```no_run
//! use std::collections::BTreeMap;
//! use detwasm_jobspec::ModuleDir;
//! let module = ModuleDir::open("cowsay")?;
//! let inputs = BTreeMap::from([("Message".to_string(), "moo".to_string())]);
//! println!("{}", module.render(&inputs)?);
//! let policy = detwasm_jobspec::InputPolicy::from_env_and(&[]);
//! let prepared = module.job(&inputs, &std::env::current_dir().unwrap(), &policy)?;
//! # Ok::<(), detwasm_jobspec::SpecError>(())
//! ```

pub mod bacalhau;
pub mod car;
pub mod fuzz;
pub mod gocompat;
pub mod gotemplate;
pub mod json;
pub mod resolve;
pub mod yaml;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use bacalhau::v1beta1::{parse_rendered, WasmSpec};
pub use gotemplate::{render_module_template, TemplateError};
pub use resolve::{
    find_module, is_module_reference, module_path, EntryModule, ModuleRef, MODULE_PATH_ENV,
    TEMPLATE_FILE,
};

use detwasm_job::job::{Job, Limits, Output, StatedLimits, DEFAULT_INPUT_PATH};

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

    #[error("module `{reference}`: the folder {} is version {}, not the tag asked for (use a folder NAME/TAG, or the matching VERSION)", dir.display(), found.as_deref().unwrap_or("unknown (no readable VERSION file of at most 4 KiB)"))]
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

    #[error("{}{}: {source}", file.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
    At {
        file: PathBuf,
        line: Option<usize>,
        source: Box<SpecError>,
    },

    #[error("not a valid job file: {0}")]
    Syntax(String),

    #[error("input SourcePath {source_path:?} resolves to {}, which is outside the folders module inputs may come from ({}); to allow it, pass `--allow-input DIR` or add the folder to {ALLOW_INPUTS_ENV} (a :-separated list)", resolved.display(), display_paths(allowed))]
    InputNotAllowed {
        source_path: String,
        resolved: PathBuf,
        allowed: Vec<PathBuf>,
    },
}

impl SpecError {
    /// This error, placed at a file and line.
    pub fn at(self, file: &Path, line: Option<usize>) -> SpecError {
        SpecError::At {
            file: file.to_path_buf(),
            line,
            source: Box::new(self),
        }
    }
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

/// The environment variable that lists extra folders module inputs may come from: a
/// `:`-separated list of folders, like `PATH` (empty entries are ignored; they do not
/// mean the current folder as they would in `PATH`).
pub const ALLOW_INPUTS_ENV: &str = "DETWASM_ALLOW_INPUTS";

/// Where a module spec may take its inputs from.
///
/// A module template is written by whoever published the module, not by the operator
/// who runs it, and its `Inputs[].SourcePath` (often an `-i` value substituted into the
/// template) names a host folder that is mounted into the guest. Left unchecked, a
/// template could mount `/etc`, `~/.ssh` or `../..` and the module would publish them in
/// its results. So a spec may name inputs only inside these roots:
///
/// - the module folder itself (always: a module may ship sample data, as `digits` and
///   `wordstats` do);
/// - the folders the operator opts in explicitly, with `--allow-input DIR` (repeatable)
///   or [`ALLOW_INPUTS_ENV`].
///
/// A `SourcePath` is resolved as before (a relative one against the current folder) and
/// then canonicalized, following every symlink; the canonical path must lie inside the
/// canonical form of one of the roots, compared component by component. Absolute paths,
/// `..` and symlinks are not refused by their spelling but by where they lead, so
/// `modules/wordstats/samples` run from the repository root is fine while a symlink in
/// the module folder pointing at `/home` is not. The job mounts the canonical path, so
/// the runtime serves exactly the folder that was checked.
///
/// Rejected alternative: allowing the current folder by default, which is what a CLI
/// user might expect from `-i Input=data`. A template naming `.` (or an `-i` default of
/// `.`) would then mount the operator's whole working folder, and for a provider that is
/// wherever the daemon was started. Opting in one flag per folder is a small cost for
/// the person who knows which folder they meant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InputPolicy {
    /// Folders allowed besides the module folder, as the operator gave them (relative
    /// ones are taken against the current folder when checking).
    pub roots: Vec<PathBuf>,
}

impl InputPolicy {
    /// Only the module folder.
    pub fn module_only() -> InputPolicy {
        InputPolicy::default()
    }

    /// The module folder, the folders of [`ALLOW_INPUTS_ENV`], and `extra` (the
    /// `--allow-input` flags).
    pub fn from_env_and(extra: &[PathBuf]) -> InputPolicy {
        let mut roots = Self::env_roots(std::env::var_os(ALLOW_INPUTS_ENV).as_deref());
        roots.extend(extra.iter().cloned());
        InputPolicy { roots }
    }

    /// The folders of a `DETWASM_ALLOW_INPUTS` value.
    pub fn env_roots(value: Option<&std::ffi::OsStr>) -> Vec<PathBuf> {
        value
            .map(|v| {
                std::env::split_paths(v)
                    .filter(|p| !p.as_os_str().is_empty())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The canonical allowed roots: the module folder (for a Bacalhau v1 job file, the
    /// job file's folder, [`v1`]) first. A root that cannot be resolved (it does not
    /// exist) is an error naming it, not silently skipped: the operator meant to allow
    /// something.
    pub(crate) fn canonical_roots(
        &self,
        module_dir: &Path,
        cwd: &Path,
    ) -> Result<Vec<PathBuf>, SpecError> {
        let mut out = Vec::with_capacity(self.roots.len() + 1);
        let module = module_dir.canonicalize().map_err(|e| SpecError::Io {
            path: module_dir.to_path_buf(),
            message: format!("resolving the module folder: {e}"),
        })?;
        out.push(module);
        for root in &self.roots {
            let canonical = cwd.join(root).canonicalize().map_err(|e| SpecError::Io {
                path: root.clone(),
                message: format!(
                    "this folder is allowed for inputs (--allow-input or {ALLOW_INPUTS_ENV}) but cannot be resolved: {e}"
                ),
            })?;
            out.push(canonical);
        }
        Ok(out)
    }

    /// Resolves one `SourcePath` (relative to `cwd`) to the canonical host folder to
    /// mount, or refuses it (see the type's docs).
    pub fn resolve(
        &self,
        module_dir: &Path,
        cwd: &Path,
        source_path: &str,
    ) -> Result<PathBuf, SpecError> {
        let roots = self.canonical_roots(module_dir, cwd)?;
        self.resolve_in(&roots, cwd, source_path)
    }

    pub(crate) fn resolve_in(
        &self,
        roots: &[PathBuf],
        cwd: &Path,
        source_path: &str,
    ) -> Result<PathBuf, SpecError> {
        let joined = cwd.join(source_path);
        let canonical = joined.canonicalize().map_err(|e| SpecError::Io {
            path: joined.clone(),
            message: format!("input SourcePath {source_path:?} cannot be used: {e}"),
        })?;
        if roots.iter().any(|root| canonical.starts_with(root)) {
            Ok(canonical)
        } else {
            Err(SpecError::InputNotAllowed {
                source_path: source_path.to_string(),
                resolved: canonical,
                allowed: roots.to_vec(),
            })
        }
    }

    /// Resolves every input of a spec: (canonical host folder, guest path) pairs.
    pub fn resolve_inputs(
        &self,
        module_dir: &Path,
        cwd: &Path,
        spec: &WasmSpec,
    ) -> Result<Vec<(PathBuf, String)>, SpecError> {
        if spec.inputs.is_empty() {
            return Ok(Vec::new());
        }
        let roots = self.canonical_roots(module_dir, cwd)?;
        spec.inputs
            .iter()
            .map(|input| {
                let host = self.resolve_in(&roots, cwd, &input.source_path)?;
                let guest = if input.path.is_empty() {
                    DEFAULT_INPUT_PATH.to_string()
                } else {
                    input.path.clone()
                };
                Ok((host, guest))
            })
            .collect()
    }
}

/// What a spec gives a job besides its module and its mounts. Both spec formats, the
/// Lilypad module's v1beta1 spec ([`bacalhau`]) and a Bacalhau v1 job file ([`v1`]),
/// fill one in, and [`assemble`] turns it into the runtime's [`Job`], so that the two
/// formats cannot drift apart in how a field becomes part of a job.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TaskParts {
    /// The exported function to call.
    pub entry_point: String,
    /// argv[1..].
    pub parameters: Vec<String>,
    /// Sorted by key.
    pub env: Vec<(String, String)>,
    /// `None`: the job's default `outputs` volume; `Some(vec![])`: no output volume.
    pub outputs: Option<Vec<bacalhau::v1beta1::OutputSpec>>,
    /// Memory limit in bytes.
    pub memory: Option<u64>,
    /// The wall-clock safety net.
    pub timeout: Option<std::time::Duration>,
    /// The instruction budget ([`FUEL_KEY`]).
    pub fuel: Option<u64>,
}

impl TaskParts {
    /// The limits this spec states, for [`Limits::combine`] with the operator's.
    pub fn stated(&self) -> StatedLimits {
        StatedLimits {
            fuel: self.fuel,
            memory: self.memory,
            max_output: None,
            timeout: self.timeout,
        }
    }
}

/// The key that carries a job's fuel (its instruction budget) in a spec, where Bacalhau
/// keeps free-form metadata that it passes through and ignores: `"detwasm.fuel=N"` in a
/// Lilypad template's `job.Spec.Annotations`, `detwasm.fuel: "N"` in a Bacalhau v1 job
/// file's task `Meta`. So a spec carries its budget and stays a valid Bacalhau job.
/// Rejected: a new field (`Resources.Fuel`; Bacalhau v1 refuses unknown task fields) and
/// a flag only (provider and verifier would have to agree on it out of band).
pub const FUEL_KEY: &str = "detwasm.fuel";

/// Parses a spec's fuel: a whole number of instructions, at least 1, as digits
/// (`600000000000`, `_` allowed between digits) or as `<digits>e<exponent>` (`6e11`).
pub fn parse_fuel(text: &str) -> Option<u64> {
    let t = text.trim();
    let (mantissa, exp) = match t.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<u32>().ok()?),
        None => (t, 0),
    };
    if mantissa.is_empty()
        || mantissa.starts_with('_')
        || mantissa.ends_with('_')
        || !mantissa.bytes().all(|b| b.is_ascii_digit() || b == b'_')
    {
        return None;
    }
    let m: u64 = mantissa.replace('_', "").parse().ok()?;
    let fuel = 10u64.checked_pow(exp)?.checked_mul(m)?;
    (fuel > 0).then_some(fuel)
}

/// A host path a spec mounts in the guest, after [`InputPolicy`] confined it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Canonical host path (a folder).
    pub host: PathBuf,
    /// Absolute guest path.
    pub guest: String,
    /// A writable (copy-on-write) folder, delivered as a results volume.
    pub writable: bool,
}

/// The job a spec describes: its entry module, its parts and its mounts, in order, with
/// the limits the spec states ([`TaskParts::stated`]) within the defaults. Seed, epoch and
/// results options keep the job's defaults: the caller (the CLI) sets them, and combines
/// the limits with its flags.
pub fn assemble(entry: &EntryModule, source: String, parts: &TaskParts, mounts: &[Mount]) -> Job {
    let mut job = Job::new(entry.bytes.clone())
        .with_source(source)
        .with_entry(parts.entry_point.clone());
    job.args = parts.parameters.clone();
    job.env = parts.env.clone();
    for m in mounts {
        job = if m.writable {
            job.push_dir(&m.host, &m.guest)
        } else {
            job.push_input(&m.host, &m.guest)
        };
    }
    if let Some(outputs) = &parts.outputs {
        job.outputs = outputs
            .iter()
            .map(|o| Output {
                name: o.name.clone(),
                guest: o.path.clone(),
            })
            .collect();
    }
    // The spec's own limits within the defaults; the caller (the CLI) combines them with
    // the operator's flags the same way.
    job.limits = Limits::combine(&StatedLimits::default(), &parts.stated()).0;
    job
}

/// A module folder and its template.
#[derive(Debug, Clone)]
pub struct ModuleDir {
    pub dir: PathBuf,
    pub template_path: PathBuf,
    pub template: String,
    /// A folder holding the entry module fetched by its CID (a CAR), looked in when the
    /// module folder has no entry module of the template's CID: set by whoever fetched
    /// it (`detwasm run --gateway`), never by the template.
    pub fetched: Option<PathBuf>,
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
        let bytes = resolve::read_bounded(&template_path, gotemplate::MAX_TEMPLATE as u64)?;
        let template = String::from_utf8(bytes).map_err(|e| SpecError::Io {
            path: template_path.clone(),
            message: format!("not UTF-8 text: {e}"),
        })?;
        Ok(ModuleDir {
            dir,
            template_path,
            template,
            fetched: None,
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
    /// `SourcePath`s resolved against `cwd`, as a CLI user expects, and each confined by
    /// `policy`: see [`InputPolicy`]), outputs and limits from the spec. Seed, epoch and
    /// results options keep the job's defaults: the caller (the CLI) sets them.
    pub fn job(
        &self,
        inputs: &BTreeMap<String, String>,
        cwd: &Path,
        policy: &InputPolicy,
    ) -> Result<PreparedModule, SpecError> {
        let (rendered, spec) = self.spec(inputs)?;
        // Inputs first: a refused SourcePath is reported before any module is hashed.
        let mounts = policy.resolve_inputs(&self.dir, cwd, &spec)?;
        let cid = &spec.entry_module.cid;
        let entry = match resolve::entry_module(&self.dir, cid, &spec.entry_module.path) {
            Err(e) => match &self.fetched {
                Some(fetched) if !cid.trim().is_empty() => {
                    resolve::entry_module(fetched, cid, "").map_err(|_| e)?
                }
                _ => return Err(e),
            },
            found => found?,
        };
        let mounts: Vec<Mount> = mounts
            .into_iter()
            .map(|(host, guest)| Mount {
                host,
                guest,
                writable: false,
            })
            .collect();
        let job = assemble(
            &entry,
            entry.file.display().to_string(),
            &spec.parts(),
            &mounts,
        );
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
        let p = module
            .job(&inputs, &dir, &InputPolicy::module_only())
            .unwrap();
        assert_eq!(p.job.args, vec!["hi \"you\""]);
        assert_eq!(p.job.env, vec![("K".to_string(), "hi \"you\"".to_string())]);
        assert_eq!(p.job.entry, "_start");
        assert_eq!(p.job.inputs[0].guest, "/in");
        assert_eq!(
            p.job.inputs[0].host,
            dir.join("data").canonicalize().unwrap()
        );
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

    /// A module folder whose template mounts `SOURCE` at /in, with a `data` folder.
    fn module_with_input(source: &str) -> (tempfile::TempDir, ModuleDir) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("m");
        std::fs::create_dir_all(dir.join("data")).unwrap();
        std::fs::write(dir.join("m.wasm"), b"hello\n").unwrap();
        let template = format!(
            r#"{{"job":{{"Spec":{{"Engine":"Wasm","Wasm":{{"EntryModule":{{"Path":"m.wasm"}}}},"Inputs":[{{"SourcePath":{},"Path":"/in"}}]}}}}}}"#,
            gocompat::json_marshal_string(source)
        );
        std::fs::write(dir.join(TEMPLATE_FILE), template).unwrap();
        let module = ModuleDir::open_in(dir.to_str().unwrap(), &[]).unwrap();
        (tmp, module)
    }

    fn refused_input(module: &ModuleDir, cwd: &Path, policy: &InputPolicy) -> String {
        match module.job(&BTreeMap::new(), cwd, policy) {
            Err(e @ SpecError::InputNotAllowed { .. }) => e.to_string(),
            other => panic!("expected the input to be refused, got {other:?}"),
        }
    }

    #[test]
    fn an_absolute_source_path_outside_the_module_is_refused() {
        let (_tmp, module) = module_with_input("/etc");
        let e = refused_input(&module, &module.dir, &InputPolicy::module_only());
        assert!(
            e.contains("\"/etc\"")
                && e.contains("resolves to /etc")
                && e.contains("--allow-input DIR")
                && e.contains(ALLOW_INPUTS_ENV),
            "{e}"
        );
    }

    #[test]
    fn dot_dot_out_of_the_module_is_refused_and_inside_it_is_fine() {
        let (tmp, module) = module_with_input("../");
        let e = refused_input(&module, &module.dir, &InputPolicy::module_only());
        let parent = tmp.path().canonicalize().unwrap();
        assert!(
            e.contains(&format!("resolves to {}", parent.display())),
            "{e}"
        );
        // `..` that stays inside the module folder leads somewhere allowed.
        let (_tmp, module) = module_with_input("data/../data");
        let p = module
            .job(&BTreeMap::new(), &module.dir, &InputPolicy::module_only())
            .unwrap();
        assert_eq!(
            p.job.inputs[0].host,
            module.dir.join("data").canonicalize().unwrap()
        );
        // The current folder is not allowed by default, even when the spec names `.`.
        let (tmp, module) = module_with_input(".");
        refused_input(&module, tmp.path(), &InputPolicy::module_only());
    }

    #[cfg(unix)]
    #[test]
    fn a_symlink_in_the_module_folder_leading_outside_is_refused() {
        let (tmp, module) = module_with_input("link");
        let outside = tmp.path().join("secret");
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, module.dir.join("link")).unwrap();
        let e = refused_input(&module, &module.dir, &InputPolicy::module_only());
        assert!(
            e.contains(&format!(
                "resolves to {}",
                outside.canonicalize().unwrap().display()
            )),
            "{e}"
        );
        // A symlink inside the folder to a subfolder of it is fine, and the job mounts
        // the folder it leads to, not the link.
        std::fs::remove_file(module.dir.join("link")).unwrap();
        std::os::unix::fs::symlink(module.dir.join("data"), module.dir.join("link")).unwrap();
        let p = module
            .job(&BTreeMap::new(), &module.dir, &InputPolicy::module_only())
            .unwrap();
        assert_eq!(
            p.job.inputs[0].host,
            module.dir.join("data").canonicalize().unwrap()
        );
    }

    #[test]
    fn an_opted_in_folder_is_accepted_by_flag_or_environment() {
        let (tmp, module) = module_with_input("../shared/x");
        let shared = tmp.path().join("shared");
        std::fs::create_dir_all(shared.join("x")).unwrap();
        refused_input(&module, &module.dir, &InputPolicy::module_only());
        let by_flag = InputPolicy {
            roots: vec![shared.clone()],
        };
        let p = module.job(&BTreeMap::new(), &module.dir, &by_flag).unwrap();
        assert_eq!(
            p.job.inputs[0].host,
            shared.join("x").canonicalize().unwrap()
        );
        // DETWASM_ALLOW_INPUTS: a PATH-like list; empty entries allow nothing (in PATH
        // they would mean the current folder).
        let value = std::env::join_paths([Path::new("/nonexistent-a"), &shared]).unwrap();
        let value = format!(":{}:", value.to_str().unwrap());
        let roots = InputPolicy::env_roots(Some(std::ffi::OsStr::new(&value)));
        assert_eq!(roots, vec![PathBuf::from("/nonexistent-a"), shared.clone()]);
        assert!(InputPolicy::env_roots(Some(std::ffi::OsStr::new("::"))).is_empty());
        // An allowed root that does not exist is an error naming it.
        let by_env = InputPolicy { roots };
        let e = module
            .job(&BTreeMap::new(), &module.dir, &by_env)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/nonexistent-a") && e.contains(ALLOW_INPUTS_ENV),
            "{e}"
        );
        let by_env = InputPolicy {
            roots: InputPolicy::env_roots(Some(shared.as_os_str())),
        };
        let p = module.job(&BTreeMap::new(), &module.dir, &by_env).unwrap();
        assert_eq!(
            p.job.inputs[0].host,
            shared.join("x").canonicalize().unwrap()
        );
        // A sibling whose name starts with the root's name is not inside it.
        std::fs::create_dir_all(tmp.path().join("shared-not")).unwrap();
        let (_t, other) = module_with_input(tmp.path().join("shared-not").to_str().unwrap());
        refused_input(&other, &other.dir, &by_flag);
    }

    #[test]
    fn input_values_are_checked_after_rendering() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("m");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("m.wasm"), b"x").unwrap();
        std::fs::write(
            dir.join(TEMPLATE_FILE),
            r#"{"job":{"Spec":{"Engine":"Wasm","Wasm":{"EntryModule":{"Path":"m.wasm"}},"Inputs":[{"SourcePath":{{.Input}},"Path":"/in"}]}}}"#,
        )
        .unwrap();
        let module = ModuleDir::open_in(dir.to_str().unwrap(), &[]).unwrap();
        let inputs = parse_inputs(&["Input=/"]).unwrap();
        let e = module
            .job(&inputs, &dir, &InputPolicy::module_only())
            .unwrap_err();
        assert!(matches!(e, SpecError::InputNotAllowed { .. }), "{e}");
    }
}
