//! Bacalhau's current job format (v1.x, `bacalhau job run job.yaml`) for wasm jobs,
//! run deterministically.
//!
//! A job file (YAML, or the same object as JSON, bare or wrapped in `{"Job": …}` as
//! `PUT /api/v1/orchestrator/jobs` takes it) is read as Bacalhau's CLI reads it
//! ([`crate::yaml`]: YAML 1.1 scalars, keys case-insensitive, sorted) and becomes the
//! same [`Job`] a Lilypad module spec becomes ([`crate::assemble`]), with its host paths
//! confined by the same [`InputPolicy`]. What is honoured:
//!
//! | field | becomes |
//! | --- | --- |
//! | `Type: batch` or `ops`, one task | the run (`service`/`daemon` never end: refused) |
//! | `Engine.Type: wasm`, `Params.EntryModule` | the module: the input whose `Target` it names (or a file in a folder input, or the single `.wasm` of a folder, as Bacalhau's loader finds it); the legacy form, `EntryModule` as an input source, is accepted as Bacalhau's transformer accepts it (default target `/wasm/entry.wasm`) |
//! | `Params.Entrypoint`, `Parameters` | the entry point, argv[1..] |
//! | `Task.Env` | the guest's environment (Bacalhau's name rules; `env:` values refused) |
//! | `InputSources` | read-only mounts at their `Target`: `local`/`localDirectory` (a file or a folder; `ReadWrite` folders are writable copy-on-write folders delivered as results volumes), `inline` data, `ipfs` CIDs found locally |
//! | `ResultPaths` | one output volume each, mounted at `/Name` as Bacalhau's wasm executor mounts it |
//! | `Resources.Memory` | the memory limit, rounded up to whole 64 KiB pages as Bacalhau rounds it |
//! | `Timeouts.ExecutionTimeout` (else `TotalTimeout`) | the wall-clock safety net |
//! | `Meta` of the job or its task: `detwasm.fuel` | the job's fuel ([`crate::FUEL_KEY`]) |
//! | `Network.Type: None` | (required) |
//!
//! Scheduling fields (`Count`, `Priority`, `Constraints`, `Labels`, other `Meta` keys, `Namespace`,
//! `Publisher`, `Resources.CPU`/`Disk`, `Timeouts.QueueTimeout`) are accepted and
//! reported as not applicable; keys Bacalhau does not know are reported with their line
//! and ignored, as Bacalhau's decoder ignores them (unknown keys at the top of the job
//! are errors, as in `bacalhau job run`). Everything else that cannot be honoured is an
//! error naming the file, the line and what to write instead.
//!
//! Two choices where Bacalhau leaves room:
//!
//! - **No default `Entrypoint`.** Bacalhau has none: its executor looks up the export
//!   named `""` and fails the job. detwasm refuses such a file, saying to add
//!   `Entrypoint: _start`. Rejected: defaulting to `_start` (as detwasm's own flags do),
//!   which would give a results CID for a job that Bacalhau cannot run, so that the same
//!   file would mean different things to the two.
//! - **Relative `SourcePath`s are taken from the job file's folder**, which is also the
//!   folder inputs may come from without `--allow-input`. Rejected: the working folder
//!   (as a Bacalhau compute node would take it, and as module specs do), which makes one
//!   file name different inputs depending on where it is run from, and a verifier's run
//!   differ from the provider's.
//!
//! What Bacalhau's wasm executor does that detwasm does not, on purpose: it passes the
//! guest real clocks, a host network when `Network.Type` is `Default` (its default for
//! wasm), and `BACALHAU_*` variables (job and execution ids, node id) in the
//! environment; each would make the results differ from run to run. Its `argv[0]` is
//! empty; detwasm's is `module.wasm`, as for every detwasm job, so that a job file and
//! the equivalent `detwasm run` flags give the same results CID.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::v1beta1::{refuse, OutputSpec, WHY_DOCKER, WHY_GPU, WHY_IMPORTS, WHY_NETWORK};
use crate::json::{Json, Obj, TypeMismatch};
use crate::resolve::{self, EntryModule, MAX_MODULE_FILE};
use crate::{assemble, car, yaml, InputPolicy, Mount, SpecError, TaskParts};
use detwasm_job::job::{Job, MAX_INPUTS, MAX_OUTPUTS, MAX_TIMEOUT};

/// File name endings that make a `detwasm run` argument a job file.
pub const JOB_FILE_EXTENSIONS: &[&str] = &["yaml", "yml", "json"];

/// The largest job file read: 1 MiB, some 30,000 lines of YAML. A job file describes a
/// job; its data travels as inputs. Parsing holds up to about 190 times a file's size
/// (the YAML parser's tokens of flow collections, then one value per node: 1 MiB of
/// `[a: b, a: b, …]` peaks at 200 MB). Found by review: at Bacalhau's own limit of
/// 10 MiB (`MaxSerializedStringInput`), rejected here, one job file took 1.8 GB to
/// parse, and `batch -j N` parses N at once.
pub const MAX_JOB_FILE: u64 = 1 << 20;

/// Where the legacy form's entry module is mounted when it names no `Target` (Bacalhau's
/// legacy transformer's default).
pub const LEGACY_ENTRY_TARGET: &str = "/wasm/entry.wasm";

/// A WebAssembly page: Bacalhau's wasm executor limits memory in whole pages, rounding
/// the job's `Resources.Memory` up.
pub const WASM_PAGE: u64 = 64 << 10;

/// The largest memory Bacalhau's wasm executor accepts: 65536 pages (4 GiB), all a
/// 32-bit memory can address. A larger `Resources.Memory` is an error there, and here.
pub const MAX_WASM_MEMORY: u64 = 65536 * WASM_PAGE;

/// The job-level keys `bacalhau job run` accepts.
const JOB_KEYS: &[&str] = &[
    "Name",
    "Namespace",
    "Type",
    "Priority",
    "Count",
    "Constraints",
    "Meta",
    "Labels",
    "Tasks",
];
/// The job-level keys `bacalhau job run` refuses: the orchestrator sets them.
const JOB_SYSTEM_KEYS: &[&str] = &[
    "ID",
    "State",
    "Version",
    "Revision",
    "CreateTime",
    "ModifyTime",
];
const TASK_KEYS: &[&str] = &[
    "Name",
    "Engine",
    "Publisher",
    "Env",
    "Meta",
    "InputSources",
    "ResultPaths",
    "Resources",
    "Network",
    "Timeouts",
];
const ENGINE_KEYS: &[&str] = &["Type", "Params"];
const WASM_KEYS: &[&str] = &["EntryModule", "Entrypoint", "Parameters", "ImportModules"];
const INPUT_KEYS: &[&str] = &["Source", "Alias", "Target"];
const SOURCE_KEYS: &[&str] = &["Type", "Params"];
const RESULT_KEYS: &[&str] = &["Name", "Path"];
const RESOURCE_KEYS: &[&str] = &["CPU", "Memory", "Disk", "GPU"];
const NETWORK_KEYS: &[&str] = &["Type", "Domains", "Ports"];
const TIMEOUT_KEYS: &[&str] = &["ExecutionTimeout", "QueueTimeout", "TotalTimeout"];

/// Is this `detwasm run` argument a job file (by its name: `.yaml`, `.yml`, `.json`, and
/// not a folder)?
pub fn is_job_file(path: &Path) -> bool {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    JOB_FILE_EXTENSIONS.contains(&ext.as_str()) && !path.is_dir()
}

/// An error and the line it is about.
type Located = (Option<usize>, SpecError);

/// Something accepted but not applied, reported to the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub line: Option<usize>,
    pub text: String,
}

/// Where an input's content comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `local`/`localDirectory`: a host file or folder.
    Local {
        source_path: String,
        read_write: bool,
        create_as: String,
    },
    /// `inline`: the bytes of a data URL.
    Inline { bytes: Vec<u8> },
    /// `ipfs`: a CID, found in a local folder or CAR file.
    Ipfs { cid: String },
}

/// One input source of the task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputSpec {
    pub source: Source,
    /// The guest path, cleaned and absolute.
    pub target: String,
    /// `Source.Type` as written.
    pub kind: String,
    pub line: Option<usize>,
}

/// A job file, parsed and checked; nothing read from the host yet.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSpec {
    pub name: String,
    pub parts: TaskParts,
    /// The entry module's guest path, cleaned and absolute.
    pub entry_module: String,
    pub entry_line: Option<usize>,
    pub inputs: Vec<InputSpec>,
    pub notes: Vec<Note>,
}

/// Files a job mounts that are not folders on the host (a single local file, inline data,
/// a file out of a CAR): each is put into a private temporary folder, one per guest
/// folder, which is mounted in its place; and the files and folders of CAR inputs,
/// unpacked there once per CID. A host file is copied there once per job (by canonical
/// path) and a CID's content unpacked once, each input naming it getting a hard link;
/// everything written there is charged to one budget for the whole job, before it is
/// written ([`car::MAX_JOB_CAR_BYTES`], 1 GiB, and the limits beside it). Keep this
/// alive until the run has ended.
///
/// Rejected alternative: mounting the host file's own folder, which would show the guest
/// every file beside it. The copies are not kept: to `detwasm verify` a receipt of such a
/// job, run the job file again, or pass `--input` for the copied folders.
#[derive(Default)]
pub struct Staging {
    pub(super) _dirs: Vec<detwasm_job::scratch::Scratch>,
}

impl std::fmt::Debug for Staging {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self._dirs.iter().map(|d| d.path()))
            .finish()
    }
}

impl Staging {
    /// Keeps `dir` (removed when this is dropped) with the others: for a caller that
    /// stages content of its own (a CAR named as a `--input` folder).
    pub fn keep(&mut self, dir: detwasm_job::scratch::Scratch) {
        self._dirs.push(dir);
    }
}

/// A job file turned into a job.
#[derive(Debug)]
pub struct V1Job {
    pub job: Job,
    pub spec: JobSpec,
    pub entry: EntryModule,
    /// Notes as `FILE:LINE: text`.
    pub notes: Vec<String>,
    pub staging: Option<Staging>,
}

fn fe(obj: &Obj, field: &str) -> impl Fn(TypeMismatch) -> Located {
    let line = obj.line(field);
    move |e| (line, type_error(e))
}

/// A type error; a boolean or number where Go wants a string gets the YAML 1.1 hint.
fn type_error(e: TypeMismatch) -> SpecError {
    if e.expected.contains("string") && matches!(e.found, "bool" | "number") {
        return SpecError::BadValue {
            path: e.path,
            value: format!("a {}", e.found),
            hint: "a string: Bacalhau reads YAML as YAML 1.1, where unquoted yes/no/on/off/y/n are booleans and 10 or 0x1F are numbers; quote the value (\"on\")".into(),
        };
    }
    super::v1beta1::field_error(e)
}

fn at(line: Option<usize>) -> impl Fn(SpecError) -> Located {
    move |e| (line, e)
}

/// Cleans a guest path as Go's `filepath.Clean` does, rooted: `wasm.main` and
/// `/wasm.main` are the same target, as they are in Bacalhau's mounted file system.
pub fn clean_guest(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Go's `humanize.ParseBytes`, as Bacalhau reads `Resources.Memory` (after lowering the
/// case and removing spaces): decimal units (`kb`, `mb`, `gb`, also `k`, `m`, `g`) are
/// powers of 1000, binary ones (`kib`, `mib`, `gib`, `ki`, …) powers of 1024; `1,000`
/// is 1000.
pub fn parse_bytes(text: &str) -> Option<u64> {
    let t: String = text
        .to_lowercase()
        .chars()
        .filter(|&c| c != ' ' && c != '\n')
        .collect();
    let end = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ','))
        .unwrap_or(t.len());
    let number: String = t[..end].chars().filter(|&c| c != ',').collect();
    let f: f64 = number.parse().ok()?;
    let unit: u64 = match t[end..].trim() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "ki" | "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mi" | "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gi" | "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "ti" | "tib" => 1 << 40,
        "p" | "pb" => 1_000_000_000_000_000,
        "pi" | "pib" => 1 << 50,
        "e" | "eb" => 1_000_000_000_000_000_000,
        "ei" | "eib" => 1 << 60,
        _ => return None,
    };
    let bytes = f * unit as f64;
    (bytes.is_finite() && bytes < u64::MAX as f64).then_some(bytes as u64)
}

/// Decodes a data URL (`data:[type][;base64],data`) as Bacalhau's inline storage does
/// (`vincent-petithory/dataurl`): base64 (line breaks ignored, as Go's decoder ignores
/// them) or percent-encoded text. Returns the media type (lowercase) and the bytes.
pub fn decode_data_url(url: &str) -> Result<(String, Vec<u8>), String> {
    let rest = url
        .trim()
        .strip_prefix("data:")
        .ok_or("not a data URL (it must start with `data:`)")?;
    let (meta, data) = rest
        .split_once(',')
        .ok_or("a data URL needs a `,` before its data")?;
    let mut params = meta.split(';');
    let media = params.next().unwrap_or("").trim().to_ascii_lowercase();
    let base64 = params.any(|p| p.trim().eq_ignore_ascii_case("base64"));
    let media = if media.is_empty() {
        "text/plain".to_string()
    } else {
        media
    };
    let bytes = if base64 {
        decode_base64(data)?
    } else {
        percent_decode(data)?
    };
    Ok((media, bytes))
}

fn decode_base64(text: &str) -> Result<Vec<u8>, String> {
    let clean: Vec<u8> = text.bytes().filter(|&b| b != b'\n' && b != b'\r').collect();
    if !clean.len().is_multiple_of(4) {
        return Err("base64 data of a length that is not a multiple of 4 (padding missing)".into());
    }
    let value = |b: u8| -> Option<u32> {
        Some(match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(clean.len() / 4 * 3);
    let chunks = clean.len() / 4;
    for (i, chunk) in clean.chunks(4).enumerate() {
        let pad = chunk.iter().rev().take_while(|&&b| b == b'=').count();
        if pad > 2 || (pad > 0 && i + 1 != chunks) {
            return Err(format!("illegal base64 data at input byte {}", i * 4));
        }
        let mut n = 0u32;
        for (j, &b) in chunk.iter().enumerate() {
            let v = if j >= 4 - pad {
                0
            } else {
                value(b)
                    .ok_or_else(|| format!("illegal base64 data at input byte {}", i * 4 + j))?
            };
            n = n << 6 | v;
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Ok(out)
}

fn percent_decode(text: &str) -> Result<Vec<u8>, String> {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("a bad %-escape at byte {i} of the data URL"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(out)
}

fn note(notes: &mut Vec<Note>, line: Option<usize>, text: impl Into<String>) {
    notes.push(Note {
        line,
        text: text.into(),
    });
}

/// Reports the keys of `obj` that Bacalhau does not know (and ignores).
fn note_unknown(notes: &mut Vec<Note>, obj: &Obj, known: &[&str]) {
    for m in obj.unknown(known) {
        let path = if obj.path().is_empty() {
            m.key.clone()
        } else {
            format!("{}.{}", obj.path(), m.key)
        };
        note(
            notes,
            m.line,
            format!("{path} is not a field Bacalhau knows: ignored, as Bacalhau ignores it (misspelled?)"),
        );
    }
}

/// The job's fuel from `obj`'s `Meta` ([`crate::FUEL_KEY`]), with the line it is on;
/// the other keys of `Meta` are noted as not applicable.
fn meta_fuel(obj: &Obj, notes: &mut Vec<Note>) -> Result<Option<(u64, Option<usize>)>, Located> {
    if !obj.has("Meta") {
        return Ok(None);
    }
    let meta = obj.obj("Meta").map_err(fe(obj, "Meta"))?;
    let pairs = obj.string_map("Meta").map_err(|e| {
        let key = e.path.rsplit('.').next().unwrap_or_default().to_string();
        (meta.line(&key), type_error(e))
    })?;
    let mut fuel = None;
    let mut others = false;
    for (key, value) in &pairs {
        if key != crate::FUEL_KEY {
            others = true;
            continue;
        }
        let line = meta.line(key);
        let f = crate::parse_fuel(value).ok_or_else(|| {
            (
                line,
                SpecError::BadValue {
                    path: format!("{}.{key}", meta.path()),
                    value: value.clone(),
                    hint: "a whole number of instructions, at least 1, as a string: \"600000000000\" or \"6e11\"".into(),
                },
            )
        })?;
        fuel = Some((f, line));
    }
    if others {
        note(
            notes,
            obj.line("Meta"),
            format!(
                "Meta: only {} applies to a local run (the job's fuel); the other keys are ignored",
                crate::FUEL_KEY
            ),
        );
    }
    Ok(fuel)
}

/// Parses a job file's text (see the module docs). Nothing is read from the host.
pub fn parse(text: &str) -> Result<JobSpec, Located> {
    let doc = yaml::parse(text).map_err(|e| (Some(e.line), SpecError::Syntax(e.to_string())))?;
    let top = Obj::root(&doc).map_err(|e| (None, type_error(e)))?;
    let mut notes = Vec::new();
    // `{"Job": {...}}`, as the orchestrator's API takes it.
    let root = if top.has("Job") && !top.has("Tasks") {
        let job = top.obj("Job").map_err(fe(&top, "Job"))?;
        note_unknown(&mut notes, &top, &["Job"]);
        job
    } else {
        top
    };

    if let Some(m) = root.unknown(JOB_KEYS).first() {
        let e = if JOB_SYSTEM_KEYS
            .iter()
            .any(|k| k.eq_ignore_ascii_case(&m.key))
        {
            refuse(
                m.key.clone(),
                "the orchestrator sets this field; `bacalhau job run` refuses a job that sets it: remove the line",
            )
        } else {
            refuse(
                m.key.clone(),
                format!(
                    "not a field of a Bacalhau job (`bacalhau job run` refuses unknown fields); a job has {}",
                    JOB_KEYS.join(", ")
                ),
            )
        };
        return Err((m.line, e));
    }
    let job_type = root.string("Type").map_err(fe(&root, "Type"))?;
    match job_type.as_str() {
        "batch" | "ops" => {}
        "service" | "daemon" => {
            return Err((
                root.line("Type"),
                refuse(
                    format!("Type = \"{job_type}\""),
                    "a service or daemon job runs until stopped; detwasm runs a job once to completion and hashes its results: use Type: batch",
                ),
            ))
        }
        "" => {
            return Err((
                root.first_line(),
                SpecError::Missing {
                    path: "Type".into(),
                    hint: "add `Type: batch` (Bacalhau requires a job type)".into(),
                },
            ))
        }
        other => {
            return Err((
                root.line("Type"),
                SpecError::BadValue {
                    path: "Type".into(),
                    value: other.into(),
                    hint: "batch or ops (lower case, as Bacalhau requires)".into(),
                },
            ))
        }
    }
    let name = root.string("Name").map_err(fe(&root, "Name"))?;
    if let Some(count) = root.int("Count").map_err(fe(&root, "Count"))? {
        if count < 0 {
            return Err((
                root.line("Count"),
                SpecError::BadValue {
                    path: "Count".into(),
                    value: count.to_string(),
                    hint: "a count of at least 0".into(),
                },
            ));
        }
        if count > 1 {
            note(&mut notes, root.line("Count"), format!("Count = {count}: detwasm runs the job once; every run of it gives the same results CID"));
        }
    }
    let job_fuel = meta_fuel(&root, &mut notes)?;
    for field in ["Namespace", "Priority", "Constraints", "Labels"] {
        if root.has(field) {
            note(
                &mut notes,
                root.line(field),
                format!(
                    "{field} steers Bacalhau's scheduler: not applicable to a local run, ignored"
                ),
            );
        }
    }

    let tasks = root.objects("Tasks").map_err(fe(&root, "Tasks"))?;
    if tasks.len() != 1 {
        return Err((
            root.line("Tasks"),
            SpecError::BadValue {
                path: "Tasks".into(),
                value: format!("{} tasks", tasks.len()),
                hint: "exactly one task (Bacalhau runs one task per job)".into(),
            },
        ));
    }
    let task = &tasks[0];
    note_unknown(&mut notes, task, TASK_KEYS);
    if task
        .string("Name")
        .map_err(fe(task, "Name"))?
        .trim()
        .is_empty()
    {
        return Err((
            task.first_line(),
            SpecError::Missing {
                path: format!("{}.Name", task.path()),
                hint: "add `Name: main` (Bacalhau requires a task name)".into(),
            },
        ));
    }

    // Engine.
    let engine = task.obj("Engine").map_err(fe(task, "Engine"))?;
    note_unknown(&mut notes, &engine, ENGINE_KEYS);
    let engine_type = engine.string("Type").map_err(fe(&engine, "Type"))?;
    let engine_type = engine_type.trim();
    if engine_type.eq_ignore_ascii_case("docker") {
        return Err((
            engine.line("Type"),
            refuse(
                format!("{}.Type = \"{engine_type}\"", engine.path()),
                WHY_DOCKER,
            ),
        ));
    }
    if !engine_type.eq_ignore_ascii_case("wasm") {
        let e = if engine_type.is_empty() {
            SpecError::Missing {
                path: format!("{}.Type", engine.path()),
                hint: "add `Type: wasm`".into(),
            }
        } else {
            refuse(
                format!("{}.Type = \"{engine_type}\"", engine.path()),
                "detwasm runs only jobs whose engine is wasm",
            )
        };
        return Err((engine.line("Type").or(task.line("Engine")), e));
    }
    let params = engine.obj("Params").map_err(fe(&engine, "Params"))?;
    for m in params.unknown(WASM_KEYS) {
        if m.key.eq_ignore_ascii_case("EnvironmentVariables") {
            if !matches!(&m.value, Json::Null) && m.value != Json::Object(Vec::new()) {
                note(&mut notes, m.line, format!("{}.{} is not read by Bacalhau's wasm executor (v1 jobs set the environment in the task's Env): ignored, as Bacalhau ignores it", params.path(), m.key));
            }
        } else {
            note(
                &mut notes,
                m.line,
                format!("{}.{} is not a field Bacalhau knows: ignored, as Bacalhau ignores it (misspelled?)", params.path(), m.key),
            );
        }
    }
    let mut inputs = Vec::new();
    let entry_line = params.line("EntryModule");
    let entry_module = match params.get("EntryModule") {
        None => {
            return Err((
                params.first_line().or(engine.line("Params")),
                SpecError::Missing {
                    path: format!("{}.EntryModule", params.path()),
                    hint: "the Target of the input source that holds the .wasm (e.g. `EntryModule: /app/main.wasm`)".into(),
                },
            ))
        }
        Some(Json::String(s)) if !s.trim().is_empty() => clean_guest(s.trim()),
        Some(Json::Object(_)) => {
            // The legacy form: the entry module is itself an input source.
            let legacy = params.obj("EntryModule").map_err(fe(&params, "EntryModule"))?;
            let mut input = input_source(&legacy, &mut notes, true)?;
            if input.target == "/" {
                input.target = LEGACY_ENTRY_TARGET.to_string();
            }
            let target = input.target.clone();
            inputs.push(input);
            target
        }
        Some(other) => {
            return Err((
                entry_line,
                SpecError::FieldType {
                    path: format!("{}.EntryModule", params.path()),
                    expected: "a target path (string) or an input source",
                    found: other.kind(),
                },
            ))
        }
    };
    let entry_point = params
        .string("Entrypoint")
        .map_err(fe(&params, "Entrypoint"))?;
    if entry_point.is_empty() {
        return Err((
            params.first_line(),
            SpecError::Missing {
                path: format!("{}.Entrypoint", params.path()),
                hint: "add `Entrypoint: _start` (the entry of a WASI command). Bacalhau has no default and fails a job without one; detwasm does not guess either, so that a job file means the same in both".into(),
            },
        ));
    }
    let parameters = params
        .strings("Parameters")
        .map_err(fe(&params, "Parameters"))?;
    if let Some(Json::Array(items)) = params.get("ImportModules") {
        if !items.is_empty() {
            return Err((
                params.line("ImportModules"),
                refuse(format!("{}.ImportModules", params.path()), WHY_IMPORTS),
            ));
        }
    }

    if let Ok(publisher) = task.obj("Publisher") {
        if task.has("Publisher") && !publisher.string("Type").unwrap_or_default().is_empty() {
            note(&mut notes, task.line("Publisher"), "Publisher: detwasm delivers the results directory locally and prints its CID; publish it with `--publish --ipfs-api URL` (an IPFS node), or `ipfs dag import` of `detwasm hash --car`");
        }
    }
    let task_fuel = meta_fuel(task, &mut notes)?;

    // Env.
    let env_obj = task.obj("Env").map_err(fe(task, "Env"))?;
    let env = task.string_map("Env").map_err(|e| {
        let key = e.path.rsplit('.').next().unwrap_or_default().to_string();
        (env_obj.line(&key), type_error(e))
    })?;
    for (k, v) in &env {
        let line = env_obj.line(k);
        check_env(k, v).map_err(at(line))?;
    }

    // Inputs. Counted (with the legacy entry module's) before any is built, before the
    // pairwise checks below and before anything is staged; the job itself is checked
    // against the same limit (`Job::validate`).
    let sources = inputs.len() + task.count("InputSources");
    if sources > MAX_INPUTS {
        return Err((
            task.line("InputSources"),
            refuse(
                format!("{}.InputSources", task.path()),
                format!(
                    "{sources} input sources, more than the {MAX_INPUTS} a job may have (MAX_INPUTS: each input is scanned and hashed on its own); put files that belong together in one folder and mount that folder once",
                ),
            ),
        ));
    }
    for o in task
        .objects("InputSources")
        .map_err(fe(task, "InputSources"))?
    {
        inputs.push(input_source(&o, &mut notes, false)?);
    }
    for (i, a) in inputs.iter().enumerate() {
        for b in &inputs[i + 1..] {
            if a.target == b.target {
                return Err((
                    b.line,
                    refuse(
                        format!("Target = \"{}\"", b.target),
                        "another input source has this target already (Bacalhau refuses two inputs at one target)",
                    ),
                ));
            }
            for (outer, inner) in [(a, b), (b, a)] {
                if inner
                    .target
                    .starts_with(&format!("{}/", outer.target.trim_end_matches('/')))
                {
                    return Err((
                        inner.line,
                        refuse(
                            format!("Target = \"{}\"", inner.target),
                            format!("it lies inside the input mounted at {}, and Bacalhau's wasm executor cannot mount one input inside another: give it a target of its own", outer.target),
                        ),
                    ));
                }
            }
        }
    }

    // Results. Counted before any is built (a review's 80,000 result paths took 25 s of
    // pairwise name checks); names checked for duplicates with a hash set.
    let results = task.count("ResultPaths");
    if results > MAX_OUTPUTS {
        return Err((
            task.line("ResultPaths"),
            refuse(
                format!("{}.ResultPaths", task.path()),
                format!(
                    "{results} result paths, more than the {MAX_OUTPUTS} a job may have (MAX_OUTPUTS: each is a mount and a results folder of its own); write files that belong together into one result path",
                ),
            ),
        ));
    }
    let mut outputs = Vec::new();
    let mut names = std::collections::HashSet::new();
    for o in task
        .objects("ResultPaths")
        .map_err(fe(task, "ResultPaths"))?
    {
        note_unknown(&mut notes, &o, RESULT_KEYS);
        let name = o.string("Name").map_err(fe(&o, "Name"))?.trim().to_string();
        let path = o.string("Path").map_err(fe(&o, "Path"))?.trim().to_string();
        if name.is_empty() || path.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err((
                o.first_line(),
                SpecError::BadValue {
                    path: o.path().to_string(),
                    value: format!("Name \"{name}\", Path \"{path}\""),
                    hint: "a Name (a plain folder name: the results folder) and a Path".into(),
                },
            ));
        }
        let guest = format!("/{name}");
        if clean_guest(&path) != guest {
            note(&mut notes, o.line("Path"), format!("{}: Bacalhau's wasm executor mounts a result path at /Name, so the guest writes this one at {guest}, not at {path}; detwasm does the same", o.path()));
        }
        for input in &inputs {
            if input.target == guest || input.target.starts_with(&format!("{guest}/")) {
                return Err((
                    o.line("Name"),
                    refuse(
                        format!("{}.Name = \"{name}\"", o.path()),
                        format!("the result path would be mounted at {guest}, where the input {} is mounted: rename one of them", input.target),
                    ),
                ));
            }
        }
        if !names.insert(name.clone()) {
            return Err((
                o.line("Name"),
                refuse(
                    format!("{}.Name = \"{name}\"", o.path()),
                    "another result path has this name already",
                ),
            ));
        }
        outputs.push(OutputSpec { name, path: guest });
    }

    // Resources.
    let resources = task.obj("Resources").map_err(fe(task, "Resources"))?;
    note_unknown(&mut notes, &resources, RESOURCE_KEYS);
    let gpu = resources.string("GPU").map_err(fe(&resources, "GPU"))?;
    let gpu = gpu.trim();
    if !gpu.is_empty() && gpu != "0" {
        return Err((
            resources.line("GPU"),
            refuse(format!("{}.GPU = \"{gpu}\"", resources.path()), WHY_GPU),
        ));
    }
    for field in ["CPU", "Disk"] {
        if !resources
            .string(field)
            .map_err(fe(&resources, field))?
            .is_empty()
        {
            note(&mut notes, resources.line(field), format!("Resources.{field}: not applicable (fuel bounds a detwasm job's work, --max-output its results), ignored"));
        }
    }
    let memory_text = resources
        .string("Memory")
        .map_err(fe(&resources, "Memory"))?;
    let memory = if memory_text.trim().is_empty() {
        None
    } else {
        let bytes = parse_bytes(&memory_text).ok_or_else(|| {
            (
                resources.line("Memory"),
                SpecError::BadValue {
                    path: format!("{}.Memory", resources.path()),
                    value: memory_text.clone(),
                    hint: "a size such as \"256MB\" (10^6 bytes) or \"256MiB\" (2^20 bytes)".into(),
                },
            )
        })?;
        let rounded = bytes.div_ceil(WASM_PAGE).saturating_mul(WASM_PAGE);
        if rounded > MAX_WASM_MEMORY {
            return Err((
                resources.line("Memory"),
                SpecError::BadValue {
                    path: format!("{}.Memory", resources.path()),
                    value: memory_text.clone(),
                    hint: "at most 4GiB (65536 pages of 64 KiB), the most Bacalhau's wasm executor accepts".into(),
                },
            ));
        }
        (rounded > 0).then_some(rounded)
    };

    // Network.
    let network = task.obj("Network").map_err(fe(task, "Network"))?;
    note_unknown(&mut notes, &network, NETWORK_KEYS);
    let net = match network.get("Type") {
        None => "Default".to_string(),
        Some(Json::String(s)) => s.trim().to_string(),
        Some(Json::Number(n)) => match n.as_u64() {
            Some(0) => "Default".into(),
            Some(1) => "None".into(),
            _ => n.to_string(),
        },
        Some(other) => {
            return Err((
                network.line("Type"),
                SpecError::FieldType {
                    path: format!("{}.Type", network.path()),
                    expected: "string",
                    found: other.kind(),
                },
            ))
        }
    };
    if net.eq_ignore_ascii_case("default") {
        let line = network
            .line("Type")
            .or(task.line("Network"))
            .or(task.first_line());
        return Err((
            line,
            refuse(
                format!("{}.Network.Type = Default", task.path()),
                "for a wasm job Bacalhau's Default network is the host's network (and it is the default when Network is left out); detwasm guests have no network. Add `Network: {Type: None}` to the task",
            ),
        ));
    }
    if !net.eq_ignore_ascii_case("none") {
        return Err((
            network.line("Type"),
            refuse(format!("{}.Network.Type = {net}", task.path()), WHY_NETWORK),
        ));
    }

    // Timeouts.
    let timeouts = task.obj("Timeouts").map_err(fe(task, "Timeouts"))?;
    note_unknown(&mut notes, &timeouts, TIMEOUT_KEYS);
    let mut timeout = None;
    for field in ["ExecutionTimeout", "TotalTimeout"] {
        let secs = timeouts
            .int(field)
            .map_err(fe(&timeouts, field))?
            .unwrap_or(0);
        if secs < 0 || secs as u64 > MAX_TIMEOUT.as_secs() {
            return Err((
                timeouts.line(field),
                SpecError::BadValue {
                    path: format!("{}.{field}", timeouts.path()),
                    value: secs.to_string(),
                    hint: format!("seconds, from 0 to {} (30 days)", MAX_TIMEOUT.as_secs()),
                },
            ));
        }
        if timeout.is_none() && secs > 0 {
            timeout = Some(Duration::from_secs(secs as u64));
        }
    }
    if timeouts
        .int("QueueTimeout")
        .map_err(fe(&timeouts, "QueueTimeout"))?
        .unwrap_or(0)
        != 0
    {
        note(
            &mut notes,
            timeouts.line("QueueTimeout"),
            "Timeouts.QueueTimeout: a local run does not queue, ignored",
        );
    }

    // The task's Meta or the job's: both are Bacalhau's free-form metadata.
    let fuel = match (job_fuel, task_fuel) {
        (Some((a, _)), Some((b, line))) if a != b => {
            return Err((
                line,
                SpecError::BadValue {
                    path: format!("{}.Meta.{}", task.path(), crate::FUEL_KEY),
                    value: b.to_string(),
                    hint: format!(
                        "the job's Meta gives another fuel ({a}): give it once, in one of them"
                    ),
                },
            ))
        }
        (job, task) => task.or(job).map(|(f, _)| f),
    };

    Ok(JobSpec {
        name,
        parts: TaskParts {
            entry_point,
            parameters,
            env,
            outputs: Some(outputs),
            memory,
            timeout,
            fuel,
        },
        entry_module,
        entry_line,
        inputs,
        notes,
    })
}

/// Bacalhau's rules for `Task.Env` names and values, and detwasm's one more: no `env:`
/// value, which Bacalhau's compute node replaces with a variable of the host's
/// environment. A host's environment differs from host to host, so such a job could not
/// be verified; and it would hand the guest a provider's secrets.
fn check_env(name: &str, value: &str) -> Result<(), SpecError> {
    let bad = |hint: &str| SpecError::BadValue {
        path: format!("Env.{name}"),
        value: value.to_string(),
        hint: hint.to_string(),
    };
    if name.is_empty()
        || name != name.to_uppercase()
        || !name.chars().next().is_some_and(char::is_alphabetic)
        || !name.chars().all(|c| c.is_alphanumeric() || c == '_')
    {
        return Err(bad(
            "an upper-case name of letters, digits and _, starting with a letter (Bacalhau's rule)",
        ));
    }
    if name.to_uppercase().starts_with("BACALHAU_") {
        return Err(bad(
            "a name not starting with BACALHAU_ (Bacalhau reserves them)",
        ));
    }
    if value.is_empty() {
        return Err(bad("a value that is not empty (Bacalhau's rule)"));
    }
    if value.starts_with("env:") {
        return Err(refuse(
            format!("Env.{name} = \"{value}\""),
            "an env: value takes a variable of the host's environment, which differs from host to host (and may be a secret): write the value itself",
        ));
    }
    Ok(())
}

/// One `InputSources` entry (or the legacy `EntryModule`).
fn input_source(o: &Obj, notes: &mut Vec<Note>, legacy: bool) -> Result<InputSpec, Located> {
    note_unknown(notes, o, INPUT_KEYS);
    let source = o.obj("Source").map_err(fe(o, "Source"))?;
    note_unknown(notes, &source, SOURCE_KEYS);
    let kind = source
        .string("Type")
        .map_err(fe(&source, "Type"))?
        .trim()
        .to_string();
    let line = source.line("Type").or(o.first_line());
    let target = o
        .string("Target")
        .map_err(fe(o, "Target"))?
        .trim()
        .to_string();
    if target.is_empty() && !legacy {
        return Err((
            o.first_line(),
            SpecError::Missing {
                path: format!("{}.Target", o.path()),
                hint: "the guest path to mount the input at (Bacalhau requires a target)".into(),
            },
        ));
    }
    let target = clean_guest(&target);
    if target == "/" && !legacy {
        return Err((
            o.line("Target"),
            refuse(
                format!("{}.Target = \"/\"", o.path()),
                "Bacalhau's wasm executor cannot mount an input at /: give it a folder of its own",
            ),
        ));
    }
    let params = source.obj("Params").map_err(fe(&source, "Params"))?;
    let what = format!("{}.Source.Type = \"{kind}\"", o.path());
    let string_param = |field: &str| -> Result<String, Located> {
        match params.get_preferring_exact(field) {
            None => Ok(String::new()),
            Some(Json::String(s)) => Ok(s.clone()),
            Some(other) => Err((
                params.line(field),
                type_error(TypeMismatch {
                    path: format!("{}.{field}", params.path()),
                    expected: "string",
                    found: other.kind(),
                }),
            )),
        }
    };
    let lower = kind.to_ascii_lowercase();
    let source = match lower.as_str() {
        "local" | "localdirectory" => {
            note_unknown(notes, &params, &["SourcePath", "ReadWrite", "CreateAs"]);
            let source_path = string_param("SourcePath")?;
            if source_path.is_empty() {
                return Err((
                    params.first_line().or(line),
                    SpecError::Missing {
                        path: format!("{}.SourcePath", params.path()),
                        hint: "the host file or folder to mount (relative paths are taken from the job file's folder)".into(),
                    },
                ));
            }
            let read_write = match params.get_preferring_exact("ReadWrite") {
                None => false,
                Some(Json::Bool(b)) => *b,
                // Bacalhau's decoder takes the string "true" as true, any other as false.
                Some(Json::String(s)) => s == "true",
                Some(other) => {
                    return Err((
                        params.line("ReadWrite"),
                        SpecError::FieldType {
                            path: format!("{}.ReadWrite", params.path()),
                            expected: "bool",
                            found: other.kind(),
                        },
                    ))
                }
            };
            let create_as = string_param("CreateAs")?;
            if !["", "dir", "file", "nocreate"].contains(&create_as.to_ascii_lowercase().as_str()) {
                return Err((
                    params.line("CreateAs"),
                    SpecError::BadValue {
                        path: format!("{}.CreateAs", params.path()),
                        value: create_as,
                        hint: "one of dir, file, noCreate".into(),
                    },
                ));
            }
            Source::Local {
                source_path,
                read_write,
                create_as,
            }
        }
        "inline" => {
            note_unknown(notes, &params, &["URL"]);
            let url = string_param("URL")?;
            let (media, bytes) = decode_data_url(&url).map_err(|why| {
                (
                    params.line("URL"),
                    SpecError::BadValue {
                        path: format!("{}.URL", params.path()),
                        value: url.chars().take(40).collect::<String>() + "…",
                        hint: format!("a data URL, data:[type][;base64],DATA ({why})"),
                    },
                )
            })?;
            if media == "application/gzip" {
                return Err((
                    params.line("URL"),
                    refuse(
                        format!("{}.URL (application/gzip)", params.path()),
                        "inline tar.gz archives are not unpacked by detwasm: unpack the archive into a folder beside the job file and mount it with a `local` source (Type: local, Params: {SourcePath: FOLDER})",
                    ),
                ));
            }
            Source::Inline { bytes }
        }
        "ipfs" => {
            note_unknown(notes, &params, &["CID"]);
            let cid = string_param("CID")?;
            if cid.trim().is_empty() {
                return Err((
                    params.first_line().or(line),
                    SpecError::Missing {
                        path: format!("{}.CID", params.path()),
                        hint: "the CID of the input".into(),
                    },
                ));
            }
            Source::Ipfs {
                cid: cid.trim().to_string(),
            }
        }
        "urldownload" => {
            return Err((
                line,
                refuse(what, "detwasm guests and detwasm itself have no network, and a download can change between runs: download the file, put it beside the job file, and use a `local` source (Type: local, Params: {SourcePath: FILE}); or, if you know its CID, an `ipfs` source with the file in a local folder or CAR"),
            ))
        }
        "s3" | "s3managed" | "s3presigned" => {
            return Err((
                line,
                refuse(what, "detwasm has no network, and an S3 object can change between runs: copy the objects into a folder beside the job file and use a `local` source (Type: local, Params: {SourcePath: FOLDER})"),
            ))
        }
        "" => {
            return Err((
                o.first_line(),
                SpecError::Missing {
                    path: format!("{}.Source.Type", o.path()),
                    hint: "the source type: local, inline or ipfs".into(),
                },
            ))
        }
        _ => {
            return Err((
                line,
                refuse(what, "detwasm reads inputs of type local (or localDirectory), inline and ipfs (from a local folder or CAR file) only"),
            ))
        }
    };
    Ok(InputSpec {
        source,
        target,
        kind,
        line,
    })
}

mod stage;
pub use stage::*;

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal job that runs; `{input}`, `{task}` and `{params}` are where tests add or
    /// change lines.
    fn job(params: &str, input: &str, task: &str) -> String {
        format!(
            "Name: t\nType: batch\nTasks:\n  - Name: main\n    Engine:\n      Type: wasm\n      Params:\n        EntryModule: /app/m.wasm\n        Entrypoint: _start\n{params}    InputSources:\n      - Target: /app/m.wasm\n        Source:\n          Type: local\n          Params:\n            SourcePath: m.wasm\n{input}    Network:\n      Type: None\n{task}"
        )
    }

    fn base() -> String {
        job("", "", "")
    }

    /// The error and line of a job that must not parse.
    fn refused(text: &str) -> (Option<usize>, String) {
        match parse(text) {
            Err((line, e)) => (line, e.to_string()),
            Ok(spec) => panic!("expected an error, parsed {spec:?}"),
        }
    }

    #[test]
    fn a_minimal_job_parses() {
        let spec = parse(&base()).unwrap();
        assert_eq!(spec.entry_module, "/app/m.wasm");
        assert_eq!(spec.parts.entry_point, "_start");
        assert_eq!(spec.parts.outputs, Some(vec![]));
        assert_eq!(spec.inputs.len(), 1);
        assert!(spec.notes.is_empty(), "{:?}", spec.notes);
    }

    /// A job file may name at most [`MAX_INPUTS`] input sources (the entry module's
    /// included); one more is refused at `InputSources`, with the count and the limit,
    /// before the inputs are compared pairwise or anything is staged.
    #[test]
    fn a_job_file_may_name_at_most_max_inputs_input_sources() {
        let more = |n: usize| -> String {
            (0..n)
                .map(|i| {
                    format!("      - Target: /d/in{i}\n        Source:\n          Type: inline\n          Params:\n            URL: \"data:,x\"\n")
                })
                .collect()
        };
        let spec = parse(&job("", &more(MAX_INPUTS - 1), "")).unwrap();
        assert_eq!(spec.inputs.len(), MAX_INPUTS);
        let (line, e) = refused(&job("", &more(MAX_INPUTS), ""));
        assert_eq!(line, Some(10), "the InputSources line");
        assert!(
            e.contains("257 input sources") && e.contains("256") && e.contains("MAX_INPUTS"),
            "{e}"
        );
    }

    /// A job file may name at most [`MAX_OUTPUTS`] result paths: the list is counted
    /// before any is built, so 80,000 of them (25 s of pairwise name checks before) are
    /// refused at `ResultPaths` with the count and the limit; at the cap they parse, and
    /// a repeated name is still refused, naming its line.
    #[test]
    fn a_job_file_may_name_at_most_max_outputs_result_paths() {
        let results = |n: usize| -> String {
            let mut t = String::from("    ResultPaths:\n");
            for i in 0..n {
                t.push_str(&format!("      - {{Name: r{i}, Path: /r{i}}}\n"));
            }
            t
        };
        let spec = parse(&job("", "", &results(MAX_OUTPUTS))).unwrap();
        assert_eq!(spec.parts.outputs.as_ref().map(Vec::len), Some(MAX_OUTPUTS));
        for n in [MAX_OUTPUTS + 1, 80_000] {
            let (line, e) = refused(&job("", "", &results(n)));
            assert_eq!(line, Some(18), "the ResultPaths line");
            assert!(
                e.contains(&format!("{n} result paths"))
                    && e.contains("256")
                    && e.contains("MAX_OUTPUTS"),
                "{e}"
            );
        }
        let twice = results(MAX_OUTPUTS).replace("{Name: r9, ", "{Name: r1, ");
        let (line, e) = refused(&job("", "", &twice));
        assert_eq!(line, Some(28), "the line of the second r1");
        assert!(e.contains("another result path has this name"), "{e}");
    }

    #[test]
    fn network_default_or_missing_is_refused_naming_the_line() {
        let text = base().replace("    Network:\n      Type: None\n", "");
        let (line, e) = refused(&text);
        assert!(
            e.contains("Network: {Type: None}") && e.contains("host's network"),
            "{e}"
        );
        assert_eq!(line, Some(4));
        let (line, e) = refused(&base().replace("Type: None", "Type: Default"));
        assert_eq!(line, Some(17));
        assert!(e.contains("Default"), "{e}");
        for net in ["Host", "Full", "HTTP", "Bridge"] {
            let (_, e) = refused(&base().replace("Type: None", &format!("Type: {net}")));
            assert!(e.contains("no network"), "{net}: {e}");
        }
        // Bacalhau's network names are case-insensitive.
        parse(&base().replace("Type: None", "Type: none")).unwrap();
    }

    #[test]
    fn every_unsupported_source_is_refused_with_what_to_use_instead() {
        for (kind, want) in [
            ("urlDownload", "download the file"),
            ("s3", "copy the objects"),
            ("s3PreSigned", "copy the objects"),
            ("noop", "local (or localDirectory), inline and ipfs"),
        ] {
            let text = base().replace("Type: local", &format!("Type: {kind}"));
            let (line, e) = refused(&text);
            assert_eq!(line, Some(13), "{kind}");
            assert!(e.contains(want) && e.contains(kind), "{kind}: {e}");
        }
        let gz = base().replace(
            "Type: local\n          Params:\n            SourcePath: m.wasm",
            "Type: inline\n          Params:\n            URL: data:application/gzip;base64,H4sI",
        );
        let (_, e) = refused(&gz);
        assert!(e.contains("tar.gz") && e.contains("local"), "{e}");
    }

    #[test]
    fn engine_settings_detwasm_cannot_honour_are_refused() {
        let (line, e) = refused(&base().replace("Type: wasm", "Type: docker"));
        assert_eq!(line, Some(6));
        assert!(e.contains("Docker"), "{e}");
        let (line, e) = refused(&job("        ImportModules: [/lib/a.wasm]\n", "", ""));
        assert_eq!(line, Some(10));
        assert!(
            e.contains("ImportModules") && e.contains("wasi_snapshot_preview1"),
            "{e}"
        );
        let (_, e) = refused(&base().replace("        Entrypoint: _start\n", ""));
        assert!(e.contains("Entrypoint: _start"), "{e}");
        let (_, e) = refused(&base().replace("EntryModule: /app/m.wasm", "EntryModule: ''"));
        assert!(e.contains("EntryModule"), "{e}");
        let gpu = "    Resources:\n      GPU: \"1\"\n";
        let (_, e) = refused(&job("", "", gpu));
        assert!(e.contains("CPU only"), "{e}");
        let (_, e) = refused(&job("", "", "    Resources:\n      Memory: 5GiB\n"));
        assert!(e.contains("4GiB"), "{e}");
        let (_, e) = refused(&base().replace("Type: batch", "Type: service"));
        assert!(e.contains("Type: batch"), "{e}");
        let (_, e) = refused(&base().replace("Type: batch", "Type: Batch"));
        assert!(e.contains("lower case"), "{e}");
        let (line, e) = refused(&format!("ID: j-1\n{}", base()));
        assert_eq!(line, Some(1));
        assert!(e.contains("remove the line"), "{e}");
        let (line, e) = refused(&format!("{}Sepc: {{}}\n", base()));
        assert_eq!(line, Some(18));
        assert!(e.contains("Sepc") && e.contains("unknown fields"), "{e}");
    }

    #[test]
    fn env_follows_bacalhau_rules_and_never_reads_the_host() {
        let env = |k: &str, v: &str| job("", "", &format!("    Env:\n      {k}: {v}\n"));
        let spec = parse(&env("GREETING", "hello")).unwrap();
        assert_eq!(spec.parts.env, vec![("GREETING".into(), "hello".into())]);
        for (k, v, want) in [
            ("greeting", "hi", "upper-case"),
            ("BACALHAU_JOB_ID", "x", "BACALHAU_"),
            ("1X", "x", "starting with a letter"),
            ("HOME", "env:HOME", "host's environment"),
            ("DEBUG", "yes", "quote the value"),
            ("LEVEL", "3", "quote the value"),
            ("EMPTY", "''", "not empty"),
        ] {
            let (line, e) = refused(&env(k, v));
            assert_eq!(line, Some(19), "{k}");
            assert!(e.contains(want), "{k}={v}: {e}");
        }
    }

    #[test]
    fn legacy_entry_modules_and_targets_are_read_as_bacalhau_reads_them() {
        let legacy = base().replace(
            "EntryModule: /app/m.wasm",
            "EntryModule:\n          Source: {Type: local, Params: {SourcePath: e.wasm}}",
        );
        let spec = parse(&legacy).unwrap();
        assert_eq!(spec.entry_module, LEGACY_ENTRY_TARGET);
        assert_eq!(spec.inputs[0].target, LEGACY_ENTRY_TARGET);
        // A target without its leading slash names the same path.
        let spec =
            parse(&base().replace("EntryModule: /app/m.wasm", "EntryModule: app//m.wasm")).unwrap();
        assert_eq!(spec.entry_module, "/app/m.wasm");
        // One input inside another cannot be mounted by Bacalhau either.
        let nested =
            "      - Target: /app\n        Source: {Type: local, Params: {SourcePath: d}}\n";
        let (_, e) = refused(&job("", nested, ""));
        assert!(e.contains("inside the input mounted at /app"), "{e}");
        let (_, e) = refused(&job("", &nested.replace("/app", "/app/m.wasm"), ""));
        assert!(e.contains("this target already"), "{e}");
    }

    #[test]
    fn the_jobs_fuel_is_read_from_meta_of_the_task_or_the_job() {
        let task = |meta: &str| job("", "", &format!("    Meta:\n{meta}"));
        let spec = parse(&task("      detwasm.fuel: \"6e11\"\n      owner: me\n")).unwrap();
        assert_eq!(spec.parts.fuel, Some(600_000_000_000));
        assert!(
            spec.notes
                .iter()
                .any(|n| n.text.contains("only detwasm.fuel applies")),
            "{:?}",
            spec.notes
        );
        assert_eq!(parse(&base()).unwrap().parts.fuel, None);
        let top = format!("Meta:\n  detwasm.fuel: \"123\"\n{}", base());
        assert_eq!(parse(&top).unwrap().parts.fuel, Some(123));
        // Both, the same value: fine; two values: which one would be the job's?
        let both = format!(
            "Meta:\n  detwasm.fuel: \"123\"\n{}",
            task("      detwasm.fuel: \"123\"\n")
        );
        assert_eq!(parse(&both).unwrap().parts.fuel, Some(123));
        let two = format!(
            "Meta:\n  detwasm.fuel: \"123\"\n{}",
            task("      detwasm.fuel: \"124\"\n")
        );
        let (line, e) = refused(&two);
        assert!(e.contains("another fuel"), "{e}");
        assert!(line.is_some());
        for bad in ["0", "-1", "1.5", "lots", "1e20", "99999999999999999999", ""] {
            let (line, e) = refused(&task(&format!("      detwasm.fuel: \"{bad}\"\n")));
            assert!(e.contains("Meta.detwasm.fuel"), "{bad}: {e}");
            assert_eq!(line, Some(19), "{bad}");
        }
    }

    #[test]
    fn result_paths_are_mounted_at_their_name_and_limits_map() {
        let task = "    ResultPaths:\n      - {Name: results, Path: /outputs}\n    Resources:\n      Memory: 100MB\n    Timeouts:\n      ExecutionTimeout: 90\n      QueueTimeout: 5\n    Publisher:\n      Type: ipfs\n";
        let spec = parse(&job("", "", task)).unwrap();
        assert_eq!(
            spec.parts.outputs,
            Some(vec![OutputSpec {
                name: "results".into(),
                path: "/results".into()
            }])
        );
        // 100 MB = 10^8 bytes, rounded up to whole pages as Bacalhau's executor does.
        assert_eq!(spec.parts.memory, Some(1526 * WASM_PAGE));
        assert_eq!(spec.parts.timeout, Some(Duration::from_secs(90)));
        let notes: Vec<&str> = spec.notes.iter().map(|n| n.text.as_str()).collect();
        assert!(
            notes
                .iter()
                .any(|n| n.contains("at /results, not at /outputs")),
            "{notes:?}"
        );
        assert!(
            notes.iter().any(|n| n.contains("QueueTimeout")),
            "{notes:?}"
        );
        assert!(
            notes.iter().any(|n| n.starts_with("Publisher")),
            "{notes:?}"
        );
        let clash = "    ResultPaths:\n      - {Name: app, Path: /app}\n";
        let (_, e) = refused(&job("", "", clash));
        assert!(e.contains("rename one"), "{e}");
    }

    #[test]
    fn unknown_nested_keys_are_notes_with_their_line() {
        let spec = parse(&job("        Entrypont: main\n", "", "")).unwrap();
        assert_eq!(spec.notes.len(), 1);
        assert_eq!(spec.notes[0].line, Some(10));
        assert!(spec.notes[0].text.contains("Entrypont"), "{:?}", spec.notes);
    }

    #[test]
    fn sizes_data_urls_and_paths_parse_as_in_go() {
        assert_eq!(parse_bytes("1GB"), Some(1_000_000_000));
        assert_eq!(parse_bytes("1 GiB"), Some(1 << 30));
        assert_eq!(parse_bytes("512mb"), Some(512_000_000));
        assert_eq!(parse_bytes("1,000"), Some(1000));
        assert_eq!(parse_bytes("1.5k"), Some(1500));
        assert_eq!(parse_bytes("12XB"), None);
        assert_eq!(parse_bytes("99999999999EB"), None);
        assert_eq!(
            decode_data_url("data:text/plain;base64,aGVs\nbG8K").unwrap(),
            ("text/plain".into(), b"hello\n".to_vec())
        );
        assert_eq!(decode_data_url("data:,a%20b").unwrap().1, b"a b");
        assert!(decode_data_url("data:;base64,aGV").is_err());
        assert!(decode_data_url("http://x").is_err());
        assert_eq!(clean_guest("wasm.main"), "/wasm.main");
        assert_eq!(clean_guest("/a/./b/../c/"), "/a/c");
        assert_eq!(clean_guest("/../x"), "/x");
    }
}
