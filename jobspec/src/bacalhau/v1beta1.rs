//! The rendered module spec: Lilypad's `{machine, job}` around a Bacalhau v1beta1
//! `job.Spec`, read as Lilypad reads it (Go `encoding/json`: case-insensitive keys, see
//! [`crate::json`]) and checked against what detwasm can honour.
//!
//! Honoured: `Engine: "Wasm"`; `Wasm.EntryModule` (`CID` and/or `Path`), `EntryPoint`,
//! `Parameters`, `EnvironmentVariables`; `Inputs` from local directories; `Outputs`;
//! `Resources.Memory`; `Timeout`; `Network.Type: "None"`; the annotation
//! `"detwasm.fuel=N"` in `Annotations` (the job's fuel, [`crate::FUEL_KEY`]).
//!
//! Refused, each with an error that says why: `Engine: "Docker"` (or any engine but
//! Wasm), a network other than `None`, a GPU, `Wasm.ImportModules`, an entry module or
//! input that must be fetched (URL, or an IPFS CID not found locally), and values of the
//! wrong JSON type.
//!
//! Ignored, because they steer the network rather than the run: `Deal`, `Verifier`,
//! `Publisher`/`PublisherSpec`, other `Annotations`, `NodeSelectors`, `DoNotTrack`,
//! `Resources.CPU`/`Disk`, `machine.cpu`/`machine.ram`, `inputFiles`, `APIVersion`.

use std::time::Duration;

use crate::json::{self, Json, Obj, TypeMismatch};
use crate::SpecError;
use detwasm_job::job::{MAX_INPUTS, MAX_OUTPUTS};

/// Where an entry module or an input comes from (a Bacalhau `StorageSpec`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Storage {
    /// `StorageSource` as written (`IPFS`, `localDirectory`, `urlDownload`, ...).
    pub source: String,
    pub cid: String,
    pub url: String,
    /// `SourcePath`: a host path for `localDirectory`.
    pub source_path: String,
    /// `Path`: for an entry module, the .wasm file in the module folder; for an input,
    /// the guest path it is mounted at.
    pub path: String,
    pub name: String,
}

/// An output volume (`Outputs[{Name, Path}]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputSpec {
    pub name: String,
    pub path: String,
}

/// Everything detwasm takes from a rendered module spec.
#[derive(Debug, Clone, PartialEq)]
pub struct WasmSpec {
    pub entry_module: Storage,
    /// `EntryPoint` (default `_start`).
    pub entry_point: String,
    pub parameters: Vec<String>,
    /// `EnvironmentVariables`, sorted by key.
    pub env: Vec<(String, String)>,
    pub inputs: Vec<Storage>,
    /// `None` when the spec has no `Outputs` key (the job's default `outputs` volume
    /// applies); `Some(vec![])` when it lists none.
    pub outputs: Option<Vec<OutputSpec>>,
    /// `Resources.Memory` in bytes.
    pub memory: Option<u64>,
    /// `Timeout` (seconds in v1beta1): a wall-clock safety net for detwasm.
    pub timeout: Option<Duration>,
    /// `"detwasm.fuel=N"` in `Annotations` ([`crate::FUEL_KEY`]).
    pub fuel: Option<u64>,
}

impl WasmSpec {
    /// The parts every spec format shares ([`crate::assemble`]).
    pub fn parts(&self) -> crate::TaskParts {
        crate::TaskParts {
            entry_point: self.entry_point.clone(),
            parameters: self.parameters.clone(),
            env: self.env.clone(),
            outputs: self.outputs.clone(),
            memory: self.memory,
            timeout: self.timeout,
            fuel: self.fuel,
        }
    }
}

pub(crate) fn field_error(e: TypeMismatch) -> SpecError {
    SpecError::FieldType {
        path: e.path,
        expected: e.expected,
        found: e.found,
    }
}

/// Why a Docker job is refused (both spec formats).
pub(crate) const WHY_DOCKER: &str = "this is a Docker job; detwasm runs only WebAssembly jobs (Engine \"Wasm\"): a Docker image cannot be run deterministically here";
/// Why a network is refused (both spec formats).
pub(crate) const WHY_NETWORK: &str = "detwasm guests have no network: a result that depends on the network cannot be verified. Use Network.Type \"None\"";
/// Why a GPU is refused (both spec formats).
pub(crate) const WHY_GPU: &str = "detwasm runs WebAssembly on the CPU only";
/// Why import modules are refused (both spec formats).
pub(crate) const WHY_IMPORTS: &str = "linking extra modules is not supported: a detwasm module may import only wasi_snapshot_preview1; link them into one module first (e.g. with wasm-merge)";

pub(crate) fn refuse(what: impl Into<String>, why: impl Into<String>) -> SpecError {
    SpecError::Refused {
        what: what.into(),
        why: why.into(),
    }
}

fn storage(o: &Obj) -> Result<Storage, SpecError> {
    Ok(Storage {
        source: o.string("StorageSource").map_err(field_error)?,
        cid: o.string("CID").map_err(field_error)?,
        url: o.string("URL").map_err(field_error)?,
        source_path: o.string("SourcePath").map_err(field_error)?,
        path: o.string("Path").map_err(field_error)?,
        name: o.string("Name").map_err(field_error)?,
    })
}

/// The longest `Timeout` a spec may ask for: one year, in seconds.
///
/// `Duration::from_secs_f64` panics on values past `u64::MAX` seconds and the runtime's
/// `Instant::now() + timeout` panics on overflow long before that, so a number from spec
/// bytes must be bounded before it becomes a `Duration`. A wall-clock safety net longer
/// than a year protects nothing, and Lilypad modules ask for minutes.
pub const MAX_TIMEOUT_SECS: f64 = 365.0 * 24.0 * 3600.0;

/// Parses a size as Bacalhau does (`github.com/c2h5oh/datasize`): a number and an
/// optional unit B, K/KB, M/MB, G/GB, T/TB (case-insensitive, optional trailing `b`/`ib`),
/// all binary multiples: `"100Mb"` is 100 MiB.
pub fn parse_datasize(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().ok()?;
    let unit = unit.trim().to_ascii_lowercase();
    let unit = unit.trim_end_matches("ib").trim_end_matches('b');
    let mult: u64 = match unit {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => return None,
    };
    let bytes = n * mult as f64;
    (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64).then(|| bytes.round() as u64)
}

/// Parses rendered template text into a [`WasmSpec`], refusing what cannot be honoured.
pub fn parse_rendered(text: &str) -> Result<WasmSpec, SpecError> {
    let doc: Json = json::parse(text).map_err(|e| SpecError::Json {
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    })?;
    let root = Obj::root(&doc).map_err(field_error)?;

    let machine = root.obj("machine").map_err(field_error)?;
    if let Some(gpu) = machine.number("gpu").map_err(field_error)? {
        if gpu > 0.0 {
            return Err(refuse(
                format!("machine.gpu = {gpu}"),
                "detwasm runs WebAssembly on the CPU only; a module that needs a GPU cannot run here",
            ));
        }
    }

    let job = root.obj("job").map_err(field_error)?;
    let spec = job.obj("Spec").map_err(field_error)?;
    if !job.has("Spec") {
        return Err(SpecError::Missing {
            path: "job.Spec".into(),
            hint: "a Lilypad module spec is {\"machine\": {...}, \"job\": {\"APIVersion\": \"V1beta1\", \"Spec\": {...}}}".into(),
        });
    }

    let engine = spec.string("Engine").map_err(field_error)?;
    if engine.eq_ignore_ascii_case("docker") {
        let image = spec
            .obj("Docker")
            .ok()
            .map(|d| d.string("Image").unwrap_or_default())
            .unwrap_or_default();
        let image = if image.is_empty() {
            String::new()
        } else {
            format!(" (image {image})")
        };
        return Err(refuse(
            format!("job.Spec.Engine = \"{engine}\"{image}"),
            WHY_DOCKER,
        ));
    }
    if !engine.eq_ignore_ascii_case("wasm") {
        return Err(refuse(
            format!("job.Spec.Engine = \"{engine}\""),
            "detwasm runs only jobs with Engine \"Wasm\"",
        ));
    }

    let network = spec.obj("Network").map_err(field_error)?;
    let net_type = network.string("Type").map_err(field_error)?;
    if !(net_type.is_empty() || net_type.eq_ignore_ascii_case("none")) {
        return Err(refuse(
            format!("job.Spec.Network.Type = \"{net_type}\""),
            WHY_NETWORK,
        ));
    }

    let resources = spec.obj("Resources").map_err(field_error)?;
    let gpu = resources.string("GPU").map_err(field_error)?;
    if !(gpu.is_empty() || gpu.trim() == "0") {
        return Err(refuse(
            format!("job.Spec.Resources.GPU = \"{gpu}\""),
            WHY_GPU,
        ));
    }
    // parse_datasize refuses what does not fit in u64; a larger limit than the CLI's is
    // harmless (the CLI keeps the smaller of the two).
    let memory_text = resources.string("Memory").map_err(field_error)?;
    let memory = if memory_text.is_empty() {
        None
    } else {
        Some(
            parse_datasize(&memory_text).ok_or_else(|| SpecError::BadValue {
                path: "job.Spec.Resources.Memory".into(),
                value: memory_text.clone(),
                hint: "a size such as \"512Mb\" or \"1Gb\"".into(),
            })?,
        )
    };

    let timeout = match spec.number("Timeout").map_err(field_error)? {
        None => None,
        Some(0.0) => None,
        Some(t) if t.is_finite() && t > 0.0 && t <= MAX_TIMEOUT_SECS => {
            Some(Duration::from_secs_f64(t))
        }
        Some(t) => {
            return Err(SpecError::BadValue {
                path: "job.Spec.Timeout".into(),
                value: t.to_string(),
                hint: format!(
                    "a positive number of seconds, at most {MAX_TIMEOUT_SECS} (one year)"
                ),
            })
        }
    };

    let mut fuel = None;
    for a in spec.strings("Annotations").map_err(field_error)? {
        let Some((key, value)) = a.split_once('=') else {
            continue;
        };
        if key.trim() != crate::FUEL_KEY {
            continue;
        }
        let bad = |hint: &str| SpecError::BadValue {
            path: "job.Spec.Annotations".into(),
            value: a.clone(),
            hint: hint.into(),
        };
        let f = crate::parse_fuel(value).ok_or_else(|| {
            bad("\"detwasm.fuel=N\": N a whole number of instructions, at least 1, such as 600000000000 or 6e11")
        })?;
        if fuel.is_some_and(|g| g != f) {
            return Err(bad("the job's fuel is given twice, with two values"));
        }
        fuel = Some(f);
    }

    let wasm = spec.obj("Wasm").map_err(field_error)?;
    if !spec.has("Wasm") {
        return Err(SpecError::Missing {
            path: "job.Spec.Wasm".into(),
            hint: "an Engine \"Wasm\" job needs Wasm.EntryModule".into(),
        });
    }
    let entry_module = storage(&wasm.obj("EntryModule").map_err(field_error)?)?;
    if entry_module.cid.is_empty() && entry_module.path.is_empty() {
        if !entry_module.url.is_empty() {
            return Err(refuse(
                format!("job.Spec.Wasm.EntryModule.URL = \"{}\"", entry_module.url),
                "detwasm does not download modules (no network): put the .wasm in the module folder and name it by CID or Path",
            ));
        }
        return Err(SpecError::Missing {
            path: "job.Spec.Wasm.EntryModule".into(),
            hint: "give the module's CID (as `ipfs add` prints it) and/or its Path in the module folder".into(),
        });
    }
    let imports = wasm.objects("ImportModules").map_err(field_error)?;
    if !imports.is_empty() {
        return Err(refuse("job.Spec.Wasm.ImportModules", WHY_IMPORTS));
    }
    let mut entry_point = wasm.string("EntryPoint").map_err(field_error)?;
    if entry_point.is_empty() {
        entry_point = "_start".into();
    }

    // The job's caps (`Job::validate` checks them too), from the lists' lengths before
    // any input or output is built.
    let (n_inputs, n_outputs) = (spec.count("Inputs"), spec.count("Outputs"));
    if n_inputs > MAX_INPUTS {
        return Err(refuse(
            "job.Spec.Inputs",
            format!("{n_inputs} inputs, more than the {MAX_INPUTS} a job may have (MAX_INPUTS: each input is scanned and hashed on its own); put files that belong together in one folder and mount that folder once"),
        ));
    }
    if n_outputs > MAX_OUTPUTS {
        return Err(refuse(
            "job.Spec.Outputs",
            format!("{n_outputs} outputs, more than the {MAX_OUTPUTS} a job may have (MAX_OUTPUTS: each is a mount and a results folder of its own); write files that belong together into one output"),
        ));
    }
    let mut inputs = Vec::new();
    for o in spec.objects("Inputs").map_err(field_error)? {
        let s = storage(&o)?;
        let source = s.source.to_ascii_lowercase();
        if !s.url.is_empty() || source == "urldownload" || source == "url" {
            return Err(refuse(
                format!("{}.URL = \"{}\"", o.path(), s.url),
                "detwasm does not download inputs (no network): fetch the data and pass a local directory",
            ));
        }
        if !s.source_path.is_empty()
            && (source.is_empty() || source == "localdirectory" || source == "local")
        {
            inputs.push(s);
        } else if !s.cid.is_empty() {
            return Err(refuse(
                format!("{}.CID = \"{}\"", o.path(), s.cid),
                "detwasm cannot fetch inputs from IPFS (no network): export them and mount the folder instead (StorageSource \"localDirectory\" with SourcePath, or `detwasm run --input DIR`)",
            ));
        } else {
            return Err(refuse(
                o.path().to_string(),
                format!("input source \"{}\" is not supported: use StorageSource \"localDirectory\" with a SourcePath", s.source),
            ));
        }
    }

    let outputs = if spec.has("Outputs") {
        let mut outs = Vec::new();
        for o in spec.objects("Outputs").map_err(field_error)? {
            let name = o.string("Name").map_err(field_error)?;
            let path = o.string("Path").map_err(field_error)?;
            if name.is_empty() || !path.starts_with('/') {
                return Err(SpecError::BadValue {
                    path: o.path().to_string(),
                    value: format!("Name \"{name}\", Path \"{path}\""),
                    hint: "an output needs a Name (its results folder) and an absolute Path".into(),
                });
            }
            outs.push(OutputSpec { name, path });
        }
        Some(outs)
    } else {
        None
    };

    Ok(WasmSpec {
        entry_module,
        entry_point,
        parameters: wasm.strings("Parameters").map_err(field_error)?,
        env: wasm
            .string_map("EnvironmentVariables")
            .map_err(field_error)?,
        inputs,
        outputs,
        memory,
        timeout,
        fuel,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const COWSAY: &str = r#"{"machine":{"gpu":0,"cpu":1000,"ram":100},"job":{"APIVersion":"V1beta1","Spec":{"Deal":{"Concurrency":1},"Docker":null,"Engine":"Wasm","Wasm":{"EntryModule":{"CID":"QmX","Path":"cowsay.wasm"},"EntryPoint":"_start","Parameters":["moo"],"EnvironmentVariables":{"B":"2","A":"1"}},"Network":{"Type":"None"},"Outputs":[{"Name":"outputs","Path":"/outputs"}],"Resources":{"GPU":"","Memory":"100Mb"},"Timeout":1800,"Verifier":"Noop","PublisherSpec":{"Type":"IPFS"}}}}"#;

    #[test]
    fn a_lilypad_wasm_spec_parses() {
        let s = parse_rendered(COWSAY).unwrap();
        assert_eq!(s.entry_module.cid, "QmX");
        assert_eq!(s.entry_module.path, "cowsay.wasm");
        assert_eq!(s.entry_point, "_start");
        assert_eq!(s.parameters, vec!["moo"]);
        assert_eq!(
            s.env,
            vec![("A".into(), "1".into()), ("B".into(), "2".into())]
        );
        assert_eq!(
            s.outputs,
            Some(vec![OutputSpec {
                name: "outputs".into(),
                path: "/outputs".into()
            }])
        );
        assert_eq!(s.memory, Some(100 << 20));
        assert_eq!(s.timeout, Some(Duration::from_secs(1800)));
    }

    #[test]
    fn keys_are_case_insensitive() {
        let lower = r#"{"MACHINE":{"GPU":0},"Job":{"spec":{"engine":"wasm","wasm":{"entrymodule":{"cid":"QmY"},"entrypoint":"run","parameters":["a"]},"network":{"type":"none"},"outputs":[{"name":"o","path":"/o"}],"timeout":5}}}"#;
        let s = parse_rendered(lower).unwrap();
        assert_eq!(s.entry_module.cid, "QmY");
        assert_eq!(s.entry_point, "run");
        assert_eq!(s.parameters, vec!["a"]);
        assert_eq!(s.outputs.unwrap()[0].name, "o");
    }

    fn refused(text: &str) -> String {
        match parse_rendered(text) {
            Err(e @ SpecError::Refused { .. }) => e.to_string(),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    /// A module spec's `Outputs` and `Inputs` are counted before any is built: at
    /// [`MAX_OUTPUTS`] they parse, one more (or 80,000) is refused with the count and the
    /// limit.
    #[test]
    fn outputs_and_inputs_over_the_jobs_caps_are_refused_from_their_count() {
        let outputs = |n: usize| -> String {
            let list: Vec<String> = (0..n)
                .map(|i| format!(r#"{{"Name":"o{i}","Path":"/o{i}"}}"#))
                .collect();
            COWSAY.replace(
                r#""Outputs":[{"Name":"outputs","Path":"/outputs"}]"#,
                &format!(r#""Outputs":[{}]"#, list.join(",")),
            )
        };
        let s = parse_rendered(&outputs(MAX_OUTPUTS)).unwrap();
        assert_eq!(s.outputs.map(|o| o.len()), Some(MAX_OUTPUTS));
        for n in [MAX_OUTPUTS + 1, 80_000] {
            let e = refused(&outputs(n));
            assert!(
                e.contains(&format!("{n} outputs")) && e.contains("MAX_OUTPUTS"),
                "{e}"
            );
        }
        let inputs: Vec<String> = (0..=MAX_INPUTS)
            .map(|i| {
                format!(r#"{{"StorageSource":"localDirectory","SourcePath":"d","Path":"/i{i}"}}"#)
            })
            .collect();
        let e = refused(&COWSAY.replace(
            r#""Deal""#,
            &format!(r#""Inputs":[{}],"Deal""#, inputs.join(",")),
        ));
        assert!(e.contains("257 inputs") && e.contains("MAX_INPUTS"), "{e}");
    }

    #[test]
    fn docker_network_gpu_imports_and_downloads_are_refused_with_reasons() {
        let docker = r#"{"job":{"Spec":{"Engine":"Docker","Docker":{"Image":"grycap/cowsay:latest","Entrypoint":["/usr/games/cowsay","moo"]}}}}"#;
        let e = refused(docker);
        assert!(
            e.contains("Docker")
                && e.contains("grycap/cowsay:latest")
                && e.contains("only WebAssembly"),
            "{e}"
        );
        let e = refused(&COWSAY.replace(r#""Type":"None""#, r#""Type":"Full""#));
        assert!(
            e.contains("Network.Type = \"Full\"") && e.contains("no network"),
            "{e}"
        );
        let e = refused(&COWSAY.replace(r#""gpu":0"#, r#""gpu":1"#));
        assert!(e.contains("GPU"), "{e}");
        let e = refused(&COWSAY.replace(
            r#""EntryPoint""#,
            r#""ImportModules":[{"CID":"QmZ"}],"EntryPoint""#,
        ));
        assert!(e.contains("ImportModules"), "{e}");
        let e = refused(&COWSAY.replace(r#""Deal""#, r#""Inputs":[{"StorageSource":"urlDownload","URL":"https://x/y","Path":"/inputs"}],"Deal""#));
        assert!(e.contains("does not download"), "{e}");
        let e = refused(&COWSAY.replace(
            r#""Deal""#,
            r#""Inputs":[{"StorageSource":"IPFS","CID":"QmData","Path":"/inputs"}],"Deal""#,
        ));
        assert!(e.contains("QmData") && e.contains("no network"), "{e}");
        let e = refused(&COWSAY.replace(r#""Engine":"Wasm""#, r#""Engine":"Noop""#));
        assert!(e.contains("Noop"), "{e}");
    }

    #[test]
    fn local_directory_inputs_are_kept() {
        let s = parse_rendered(&COWSAY.replace(r#""Deal""#, r#""Inputs":[{"StorageSource":"localDirectory","SourcePath":"data","Path":"/inputs"}],"Deal""#)).unwrap();
        assert_eq!(s.inputs.len(), 1);
        assert_eq!(
            (s.inputs[0].source_path.as_str(), s.inputs[0].path.as_str()),
            ("data", "/inputs")
        );
    }

    #[test]
    fn wrong_types_and_bad_json_are_errors_that_say_where() {
        let e = parse_rendered(&COWSAY.replace(r#""Timeout":1800"#, r#""Timeout":"1800""#))
            .unwrap_err();
        assert!(e.to_string().contains("job.Spec.Timeout"), "{e}");
        let e = parse_rendered("{\"job\": <no value>}").unwrap_err();
        assert!(matches!(e, SpecError::Json { line: 1, .. }), "{e:?}");
        let e = parse_rendered(r#"{"job":{"Spec":{"Engine":"Wasm","Wasm":{}}}}"#).unwrap_err();
        assert!(e.to_string().contains("EntryModule"), "{e}");
    }

    #[test]
    fn the_jobs_fuel_is_an_annotation() {
        let with = |a: &str| {
            COWSAY.replace(
                r#""Timeout":1800"#,
                &format!(r#""Timeout":1800,"Annotations":{a}"#),
            )
        };
        assert_eq!(parse_rendered(COWSAY).unwrap().fuel, None);
        let s = parse_rendered(&with(r#"["team=x","detwasm.fuel=6e11"]"#)).unwrap();
        assert_eq!(s.fuel, Some(600_000_000_000));
        assert_eq!(s.parts().stated().fuel, Some(600_000_000_000));
        let s = parse_rendered(&with(r#"["detwasm.fuel=1_000","detwasm.fuel=1000"]"#)).unwrap();
        assert_eq!(s.fuel, Some(1000));
        for bad in [
            r#"["detwasm.fuel=0"]"#,
            r#"["detwasm.fuel=many"]"#,
            r#"["detwasm.fuel=1e30"]"#,
            r#"["detwasm.fuel=5","detwasm.fuel=6"]"#,
        ] {
            let e = parse_rendered(&with(bad)).unwrap_err().to_string();
            assert!(e.contains("job.Spec.Annotations"), "{bad}: {e}");
        }
    }

    #[test]
    fn fuel_parses_whole_numbers_only() {
        assert_eq!(crate::parse_fuel("600000000000"), Some(600_000_000_000));
        assert_eq!(crate::parse_fuel(" 6e11 "), Some(600_000_000_000));
        assert_eq!(crate::parse_fuel("6E11"), Some(600_000_000_000));
        assert_eq!(crate::parse_fuel("1_000"), Some(1000));
        assert_eq!(crate::parse_fuel("18446744073709551615"), Some(u64::MAX));
        for bad in [
            "",
            "0",
            "0e5",
            "-1",
            "+1",
            "1.5",
            "1e",
            "e5",
            "_1",
            "1_",
            "1e-3",
            "2e19",
            "18446744073709551616",
            "0x10",
        ] {
            assert_eq!(crate::parse_fuel(bad), None, "{bad}");
        }
    }

    #[test]
    fn datasize_is_binary_like_bacalhau() {
        assert_eq!(parse_datasize("100Mb"), Some(100 << 20));
        assert_eq!(parse_datasize("1GB"), Some(1 << 30));
        assert_eq!(parse_datasize("512"), Some(512));
        assert_eq!(parse_datasize("2 GiB"), Some(2 << 30));
        assert_eq!(parse_datasize("1.5k"), Some(1536));
        assert_eq!(parse_datasize("lots"), None);
    }

    #[test]
    fn huge_numbers_are_refused_naming_the_field() {
        for t in ["1e300", "18446744073709551616", "-1", "31536001", "1e19"] {
            let e =
                parse_rendered(&COWSAY.replace(r#""Timeout":1800"#, &format!(r#""Timeout":{t}"#)))
                    .unwrap_err();
            assert!(e.to_string().contains("job.Spec.Timeout"), "{t}: {e}");
        }
        let s =
            parse_rendered(&COWSAY.replace(r#""Timeout":1800"#, r#""Timeout":31536000"#)).unwrap();
        assert_eq!(s.timeout, Some(Duration::from_secs(31_536_000)));
        for m in [
            "99999999999999999999T",
            "1e30",
            "18446744073709551616",
            "-5Mb",
            "NaN",
        ] {
            let e = parse_rendered(&COWSAY.replace(r#""100Mb""#, &format!("{m:?}"))).unwrap_err();
            assert!(
                e.to_string().contains("job.Spec.Resources.Memory"),
                "{m}: {e}"
            );
        }
        // A number JSON cannot hold as a float is a JSON error, not a panic.
        let e =
            parse_rendered(&COWSAY.replace(r#""Timeout":1800"#, r#""Timeout":1e400"#)).unwrap_err();
        assert!(matches!(e, SpecError::Json { .. }), "{e}");
    }

    #[test]
    fn deeply_nested_json_is_an_error_not_a_stack_overflow() {
        for depth in [200, 100_000] {
            let text = format!(r#"{{"job":{}{}}}"#, "[".repeat(depth), "]".repeat(depth));
            let e = parse_rendered(&text).unwrap_err();
            assert!(e.to_string().contains("recursion limit"), "{e}");
            let text = format!(
                r#"{{"job":{}1{}}}"#,
                r#"{"a":"#.repeat(depth),
                "}".repeat(depth)
            );
            assert!(matches!(parse_rendered(&text), Err(SpecError::Json { .. })));
        }
        let ok = format!(r#"{{"machine":{}{}}}"#, "[".repeat(100), "]".repeat(100));
        assert!(!matches!(parse_rendered(&ok), Err(SpecError::Json { .. })));
    }
}
