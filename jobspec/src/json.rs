//! JSON read the way Go's `encoding/json` reads it into a struct, which is how Lilypad
//! reads a rendered module template.
//!
//! Two rules matter and a map-based JSON value would lose both:
//! - object keys match struct fields case-insensitively (an exact match is not needed:
//!   `"engine"`, `"Engine"` and `"ENGINE"` all set `Engine`);
//! - keys are applied in document order, so when two keys match the same field the
//!   later one wins, and for a nested struct the later object is merged field by field
//!   into what the earlier one set. A `null` leaves a field as it was.
//!
//! [`Json`] keeps objects as ordered entry lists; [`Obj`] is a view over every object
//! that sets one struct, in order, and answers field look-ups by those rules.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// A JSON value with objects in document order.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Array(Vec<Json>),
    Object(Vec<Member>),
}

/// One key of an object, with the line it stands on where the reader knows it (the YAML
/// reader of job files does, [`super::yaml`]; serde_json's reader of rendered templates
/// does not: `None`).
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub key: String,
    pub value: Json,
    pub line: Option<usize>,
}

impl Member {
    pub fn new(key: impl Into<String>, value: Json, line: Option<usize>) -> Member {
        Member {
            key: key.into(),
            value,
            line,
        }
    }
}

impl Json {
    /// Go's name for the JSON kind, as its unmarshal errors print it.
    pub fn kind(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool(_) => "bool",
            Json::Number(_) => "number",
            Json::String(_) => "string",
            Json::Array(_) => "array",
            Json::Object(_) => "object",
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Json, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Json;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_unit<E>(self) -> Result<Json, E> {
                Ok(Json::Null)
            }
            fn visit_bool<E>(self, b: bool) -> Result<Json, E> {
                Ok(Json::Bool(b))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Json, E> {
                Ok(Json::Number(n.into()))
            }
            fn visit_u64<E>(self, n: u64) -> Result<Json, E> {
                Ok(Json::Number(n.into()))
            }
            fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<Json, E> {
                serde_json::Number::from_f64(n)
                    .map(Json::Number)
                    .ok_or_else(|| E::custom("number out of range"))
            }
            fn visit_str<E>(self, s: &str) -> Result<Json, E> {
                Ok(Json::String(s.to_string()))
            }
            fn visit_string<E>(self, s: String) -> Result<Json, E> {
                Ok(Json::String(s))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Json::Array(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
                let mut entries = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Json>()? {
                    entries.push(Member::new(k, v, None));
                }
                Ok(Json::Object(entries))
            }
        }
        d.deserialize_any(V)
    }
}

/// How deep arrays and objects may nest: 128, serde_json's recursion limit, which
/// [`parse`] keeps.
///
/// Parsing, the [`Json`] value and dropping it all recurse once per level, so nesting
/// must be bounded or a rendered spec of `[[[[...` overflows the stack. Go's
/// encoding/json allows 10000 levels on goroutine stacks that grow; a fixed Rust stack
/// does not, and a Lilypad spec nests six levels. So a spec nested deeper than 128 is a
/// JSON error ("recursion limit exceeded") here where Go would read it: rejected
/// alternative, matching Go's 10000, would need serde_json's `unbounded_depth` and a
/// guard of our own, for documents no module writes.
pub const MAX_DEPTH: usize = 128;

/// Parses JSON text, keeping object order and duplicate keys (at most [`MAX_DEPTH`]
/// levels deep).
pub fn parse(text: &str) -> Result<Json, serde_json::Error> {
    serde_json::from_str(text)
}

/// A type error while reading the spec: the JSON path, what Go expects there, and what
/// the document has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeMismatch {
    pub path: String,
    pub expected: &'static str,
    pub found: &'static str,
}

/// A view of one Go struct: every JSON object that sets it, in document order.
#[derive(Debug, Clone)]
pub struct Obj<'a> {
    path: String,
    layers: Vec<&'a [Member]>,
}

impl<'a> Obj<'a> {
    /// The view of a top-level value; `null` is an empty struct.
    pub fn root(value: &'a Json) -> Result<Obj<'a>, TypeMismatch> {
        match value {
            Json::Object(entries) => Ok(Obj {
                path: String::new(),
                layers: vec![entries.as_slice()],
            }),
            Json::Null => Ok(Obj {
                path: String::new(),
                layers: Vec::new(),
            }),
            other => Err(TypeMismatch {
                path: "(top level)".into(),
                expected: "object",
                found: other.kind(),
            }),
        }
    }

    /// The JSON path of this struct, for messages (`job.Spec.Wasm`).
    pub fn path(&self) -> &str {
        &self.path
    }

    fn child_path(&self, field: &str) -> String {
        if self.path.is_empty() {
            field.to_string()
        } else {
            format!("{}.{field}", self.path)
        }
    }

    /// Every non-null member set for `field`, in order. Go matches the exact key first and
    /// falls back to a case-insensitive match; both set the same field, so for a single
    /// field the two are the same list. (Go folds Unicode case too, with special cases
    /// such as the Kelvin sign; Bacalhau's field names are ASCII, and an ASCII fold is what
    /// matters for them.)
    fn members(&self, field: &str) -> Vec<&'a Member> {
        self.layers
            .iter()
            .flat_map(|entries| entries.iter())
            .filter(|m| m.key.eq_ignore_ascii_case(field) && m.value != Json::Null)
            .collect()
    }

    fn values(&self, field: &str) -> Vec<&'a Json> {
        self.members(field).into_iter().map(|m| &m.value).collect()
    }

    /// The line of the member that sets `field` (the last one), where known; else the
    /// line of the first member of this struct, where known.
    pub fn line(&self, field: &str) -> Option<usize> {
        self.members(field)
            .last()
            .and_then(|m| m.line)
            .or_else(|| self.first_line())
    }

    /// The line this struct starts on (its members' first line), where known.
    pub fn first_line(&self) -> Option<usize> {
        self.layers
            .iter()
            .flat_map(|entries| entries.iter())
            .filter_map(|m| m.line)
            .min()
    }

    /// The members whose key matches none of `known` (case-insensitively, as Go's decoder
    /// matches them), null ones included: the keys a Go struct with those fields would
    /// silently drop.
    pub fn unknown(&self, known: &[&str]) -> Vec<&'a Member> {
        self.layers
            .iter()
            .flat_map(|entries| entries.iter())
            .filter(|m| !known.iter().any(|k| k.eq_ignore_ascii_case(&m.key)))
            .collect()
    }

    /// The value of a scalar or list field: the last non-null one.
    pub fn get(&self, field: &str) -> Option<&'a Json> {
        self.values(field).pop()
    }

    /// The value of a field as `mapstructure` reads it from a `map[string]interface{}`
    /// (Bacalhau's storage `Params`): a key spelled exactly as the field wins over one
    /// that differs in case.
    pub fn get_preferring_exact(&self, field: &str) -> Option<&'a Json> {
        let members = self.members(field);
        members
            .iter()
            .rev()
            .find(|m| m.key == field)
            .or(members.last())
            .map(|m| &m.value)
    }

    /// Was the field given at all (other than `null`)?
    pub fn has(&self, field: &str) -> bool {
        self.get(field).is_some()
    }

    /// A nested struct: all objects set for it, merged by the later-wins rule.
    pub fn obj(&self, field: &str) -> Result<Obj<'a>, TypeMismatch> {
        let path = self.child_path(field);
        let mut layers = Vec::new();
        for v in self.values(field) {
            match v {
                Json::Object(entries) => layers.push(entries.as_slice()),
                other => {
                    return Err(TypeMismatch {
                        path,
                        expected: "object",
                        found: other.kind(),
                    })
                }
            }
        }
        Ok(Obj { path, layers })
    }

    /// A string field (`""` when absent, as Go leaves it).
    pub fn string(&self, field: &str) -> Result<String, TypeMismatch> {
        match self.get(field) {
            None => Ok(String::new()),
            Some(Json::String(s)) => Ok(s.clone()),
            Some(other) => Err(self.mismatch(field, "string", other)),
        }
    }

    /// A number field, as f64 (Go's int64 fields refuse fractions: see [`Obj::int`]).
    pub fn number(&self, field: &str) -> Result<Option<f64>, TypeMismatch> {
        match self.get(field) {
            None => Ok(None),
            Some(Json::Number(n)) => Ok(n.as_f64()),
            Some(other) => Err(self.mismatch(field, "number", other)),
        }
    }

    /// An integer field.
    pub fn int(&self, field: &str) -> Result<Option<i64>, TypeMismatch> {
        match self.get(field) {
            None => Ok(None),
            Some(Json::Number(n)) => n
                .as_i64()
                .map(Some)
                .ok_or_else(|| self.mismatch(field, "integer", &Json::Number(n.clone()))),
            Some(other) => Err(self.mismatch(field, "integer", other)),
        }
    }

    /// A `[]string` field.
    pub fn strings(&self, field: &str) -> Result<Vec<String>, TypeMismatch> {
        match self.get(field) {
            None => Ok(Vec::new()),
            Some(Json::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, item)| match item {
                    Json::String(s) => Ok(s.clone()),
                    // Go leaves a null element as the zero value.
                    Json::Null => Ok(String::new()),
                    other => Err(TypeMismatch {
                        path: format!("{}[{i}]", self.child_path(field)),
                        expected: "string",
                        found: other.kind(),
                    }),
                })
                .collect(),
            Some(other) => Err(self.mismatch(field, "array of strings", other)),
        }
    }

    /// A `[]Struct` field: one view per element.
    /// The number of items of array `field` (0 when absent or not an array), without
    /// building anything of them: for a cap to be checked before [`Obj::objects`] builds
    /// a view (and a path) per item.
    pub fn count(&self, field: &str) -> usize {
        match self.get(field) {
            Some(Json::Array(items)) => items.len(),
            _ => 0,
        }
    }

    pub fn objects(&self, field: &str) -> Result<Vec<Obj<'a>>, TypeMismatch> {
        match self.get(field) {
            None => Ok(Vec::new()),
            Some(Json::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    let path = format!("{}[{i}]", self.child_path(field));
                    match item {
                        Json::Object(entries) => Ok(Obj {
                            path,
                            layers: vec![entries.as_slice()],
                        }),
                        Json::Null => Ok(Obj {
                            path,
                            layers: Vec::new(),
                        }),
                        other => Err(TypeMismatch {
                            path,
                            expected: "object",
                            found: other.kind(),
                        }),
                    }
                })
                .collect(),
            Some(other) => Err(self.mismatch(field, "array of objects", other)),
        }
    }

    /// A `map[string]string` field. Go decodes a map key by key (exact keys: maps are
    /// not case-insensitive), later duplicates replacing earlier ones; the result is
    /// sorted by key, so that the order of a JSON object never matters.
    pub fn string_map(&self, field: &str) -> Result<Vec<(String, String)>, TypeMismatch> {
        let mut map = std::collections::BTreeMap::new();
        for v in self.values(field) {
            let Json::Object(entries) = v else {
                return Err(self.mismatch(field, "object of strings", v));
            };
            for Member {
                key: k, value: v, ..
            } in entries
            {
                match v {
                    Json::String(s) => {
                        map.insert(k.clone(), s.clone());
                    }
                    Json::Null => {
                        map.insert(k.clone(), String::new());
                    }
                    other => {
                        return Err(TypeMismatch {
                            path: format!("{}.{k}", self.child_path(field)),
                            expected: "string",
                            found: other.kind(),
                        })
                    }
                }
            }
        }
        Ok(map.into_iter().collect())
    }

    fn mismatch(&self, field: &str, expected: &'static str, found: &Json) -> TypeMismatch {
        TypeMismatch {
            path: self.child_path(field),
            expected,
            found: found.kind(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_case_insensitively_and_later_keys_win() {
        let doc = parse(r#"{"engine":"Docker","ENGINE":"Wasm","Wasm":{"EntryPoint":"a","Parameters":["x"]},"wasm":{"entrypoint":"b"}}"#).unwrap();
        let root = Obj::root(&doc).unwrap();
        assert_eq!(root.string("Engine").unwrap(), "Wasm");
        let wasm = root.obj("Wasm").unwrap();
        assert_eq!(wasm.string("EntryPoint").unwrap(), "b");
        // Merged field by field: Parameters from the first object survive.
        assert_eq!(wasm.strings("Parameters").unwrap(), vec!["x".to_string()]);
        assert_eq!(wasm.path(), "Wasm");
    }

    #[test]
    fn null_leaves_a_field_as_it_was() {
        let doc = parse(r#"{"Docker":null,"A":"x","a":null}"#).unwrap();
        let root = Obj::root(&doc).unwrap();
        assert!(!root.has("Docker"));
        assert_eq!(root.string("A").unwrap(), "x");
    }

    #[test]
    fn type_errors_name_the_path() {
        let doc = parse(r#"{"Spec":{"Timeout":"10","Parameters":["a",3]}}"#).unwrap();
        let spec = Obj::root(&doc).unwrap().obj("Spec").unwrap();
        let e = spec.number("Timeout").unwrap_err();
        assert_eq!(
            (e.path.as_str(), e.expected, e.found),
            ("Spec.Timeout", "number", "string")
        );
        let e = spec.strings("Parameters").unwrap_err();
        assert_eq!(e.path, "Spec.Parameters[1]");
    }

    #[test]
    fn maps_are_exact_keyed_and_sorted() {
        let doc = parse(r#"{"Env":{"b":"2","a":"1","B":"3","a":"4"}}"#).unwrap();
        let env = Obj::root(&doc).unwrap().string_map("env").unwrap();
        let expect: Vec<(String, String)> = [("B", "3"), ("a", "4"), ("b", "2")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(env, expect);
    }
}
