//! YAML (and JSON) job files read the way Bacalhau's CLI reads them.
//!
//! `bacalhau job run FILE` does not decode YAML into the job: it converts the whole file
//! to JSON with `sigs.k8s.io/yaml` (`YAMLToJSON`, built on the YAML 1.1 library
//! `go-yaml` v2) and decodes that JSON with Go's `encoding/json`. JSON files take the
//! same road (JSON is YAML). Three consequences decide what a field receives, and this
//! reader reproduces each, so that a file means here what it means to Bacalhau:
//!
//! - **Plain scalars are resolved by YAML 1.1 rules.** `yes`, `no`, `on`, `off`, `y`,
//!   `n` (and their capitalised forms) are booleans, `0x1F` and `010` are integers (hex
//!   and octal), `1_000` is 1000, `1.0` is the number 1. A boolean or a number where Go
//!   wants a string (`Parameters: [on]`, `Env: {DEBUG: yes}`) is a type error in
//!   Bacalhau, and so it is here, with a hint to quote the value. YAML 1.2 readers
//!   (which is what the Rust YAML crates are) would read `on` as the string "on"; that
//!   is why scalars are resolved here and not by the crate.
//! - **Timestamps** (`2024-01-02`) would be rewritten by Go to RFC 3339 text
//!   (`2024-01-02T00:00:00Z`); rather than guess at that, such a plain scalar is an error
//!   asking to quote it.
//! - **Keys are sorted.** The converted JSON is a Go map, written with its keys in byte
//!   order; a key repeated exactly keeps its last value. Go's decoder then matches keys
//!   to fields case-insensitively, the later one winning ([`super::json`]): so of `Type`
//!   and `type` in one mapping, `type` wins (it sorts last), wherever they stand.
//!
//! What go-yaml v2 accepts and this reader refuses, each with an error saying so: merge
//! keys (`<<`), tags other than `!!str`, non-scalar keys, `.nan`/`.inf` (which the JSON
//! step cannot write either), and a second document (Bacalhau would silently read only
//! the first; a job split in two would lose half of itself). Anchors and aliases are
//! expanded, to at most [`MAX_NODES`] nodes and [`MAX_EXPANDED_BYTES`] in all, and
//! [`MAX_DEPTH`] levels deep with what aliases paste in.
//!
//! Every object member keeps its line ([`Member::line`]), so errors about a job file name
//! the line to change.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

use super::json::{Json, Member, MAX_DEPTH};

/// The most nodes a document may expand to, aliases included: 500,000, as many as a
/// job file of [`crate::bacalhau::v1::MAX_JOB_FILE`] can hold without aliases
/// (`[1,1,…]`). A few lines of YAML can alias an alias an alias ("billion laughs"); a
/// job file has hundreds of nodes.
pub const MAX_NODES: usize = 500_000;

/// The most bytes a document may expand to, aliases included: 64 MiB, counting every
/// scalar's and key's text plus [`NODE_BYTES`] per node, each time an alias or an anchor
/// copies it.
///
/// Counting nodes alone is not enough: one anchored 4 MiB string aliased 1,000 times is
/// 1,001 nodes and 4 GB of memory (100,000 aliases ended the process). Nor are aliases the
/// only copies: each anchor keeps a copy of its value, so 128 nested anchors around one
/// large value copy it 128 times without a single alias; those copies are counted too.
/// A job file without aliases is at most 1 MiB of text and [`MAX_NODES`] nodes, which
/// fits (1 MiB + 16 MiB). Rejected: sharing aliased values (reference-counted nodes),
/// which bounds the parse but not the consumers that copy strings out of the document
/// (parameters, environment), and would change every reader of [`Json`].
pub const MAX_EXPANDED_BYTES: usize = 64 << 20;

/// What each node adds to the expanded size besides its text: about the memory one
/// value takes.
pub const NODE_BYTES: usize = 32;

/// A YAML syntax error, or a construct detwasm does not read, at a line and column (both
/// 1-based).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {message}")]
pub struct YamlError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

fn err_at(span: &Span, message: impl Into<String>) -> YamlError {
    YamlError {
        line: span.start.line(),
        column: span.start.col() + 1,
        message: message.into(),
    }
}

enum Frame {
    Seq {
        items: Vec<Json>,
        anchor: usize,
        /// The most levels of collections among the items so far (see [`parse`]).
        height: usize,
    },
    Map {
        members: Vec<Member>,
        key: Option<(String, usize)>,
        anchor: usize,
        height: usize,
    },
}

/// Parses a job file (YAML or JSON) into a [`Json`] value, as `YAMLToJSON` would convert
/// it (see the module docs).
///
/// Depth is bounded at [`MAX_DEPTH`] levels of collections, aliases included. An alias
/// pastes a copy of its anchored value with all its nesting, so checking depth only
/// where `[` or `{` opens let a chain of anchors, each nested 126 levels around an alias
/// of the one before, build values 16,000 levels deep within the node and byte limits;
/// every step after the parser recurses over the value (clone, drop, each reader of
/// [`Json`]) and overflowed a 2 MiB worker thread's stack, aborting a whole batch. So each
/// anchored value's height (levels of collections in it) is kept beside it, and an alias
/// is refused where the open collections around it plus that height pass the limit.
/// Rejected: recursion-free clone, drop and readers, which would touch every consumer of
/// [`Json`] and still hand them values no job file needs.
pub fn parse(text: &str) -> Result<Json, YamlError> {
    let mut stack: Vec<Frame> = Vec::new();
    // Each anchored value and its height.
    let mut anchors: HashMap<usize, (Json, usize)> = HashMap::new();
    let mut root: Option<Json> = None;
    let mut documents = 0usize;
    let mut nodes = 0usize;
    let mut bytes = 0usize;
    let mut charge = |span: &Span, size: usize| -> Result<(), YamlError> {
        bytes = bytes.saturating_add(size);
        if bytes > MAX_EXPANDED_BYTES {
            return Err(err_at(
                span,
                format!(
                    "the document expands to more than {} MiB (aliases and anchors count the bytes they copy)",
                    MAX_EXPANDED_BYTES >> 20
                ),
            ));
        }
        Ok(())
    };
    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(|e| YamlError {
            line: e.marker().line(),
            column: e.marker().col() + 1,
            message: e.info().to_string(),
        })?;
        // The value completed by this event, its anchor and its height.
        let (value, anchor, height) = match event {
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => continue,
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    return Err(err_at(&span, "a second YAML document: a job file holds one job (Bacalhau would silently read only the first document)"));
                }
                continue;
            }
            Event::SequenceStart(anchor, tag) => {
                stack.push(open_collection(
                    &span,
                    tag.as_deref(),
                    stack.len(),
                    Frame::Seq {
                        items: Vec::new(),
                        anchor,
                        height: 0,
                    },
                )?);
                continue;
            }
            Event::MappingStart(anchor, tag) => {
                stack.push(open_collection(
                    &span,
                    tag.as_deref(),
                    stack.len(),
                    Frame::Map {
                        members: Vec::new(),
                        key: None,
                        anchor,
                        height: 0,
                    },
                )?);
                continue;
            }
            Event::SequenceEnd => match stack.pop() {
                Some(Frame::Seq {
                    items,
                    anchor,
                    height,
                }) => (Json::Array(items), anchor, height + 1),
                _ => return Err(err_at(&span, "unbalanced sequence")),
            },
            Event::MappingEnd => match stack.pop() {
                Some(Frame::Map {
                    members,
                    anchor,
                    height,
                    ..
                }) => (Json::Object(go_map_order(members)), anchor, height + 1),
                _ => return Err(err_at(&span, "unbalanced mapping")),
            },
            Event::Alias(id) => {
                let (anchored, height) = anchors
                    .get(&id)
                    .ok_or_else(|| err_at(&span, "an alias to an unknown anchor"))?;
                // Checked before the copy is made (and before anything recurses over it).
                if stack.len() + height > MAX_DEPTH {
                    return Err(err_at(
                        &span,
                        format!(
                            "this alias nests its anchor's {height} levels inside {} more, deeper than {MAX_DEPTH} levels in all",
                            stack.len()
                        ),
                    ));
                }
                nodes = nodes.saturating_add(count_nodes(anchored));
                charge(&span, expanded_bytes(anchored))?;
                (anchored.clone(), 0, *height)
            }
            Event::Scalar(text, style, anchor, tag) => {
                let value = match tag {
                    None => resolve(&text, style).map_err(|m| err_at(&span, m))?,
                    Some(tag) if tag.is_yaml_core_schema() && tag.suffix == "str" => {
                        Json::String(text.into_owned())
                    }
                    Some(tag) => {
                        return Err(err_at(
                            &span,
                            format!(
                                "the tag {}{} is not supported (only !!str is)",
                                tag.handle, tag.suffix
                            ),
                        ))
                    }
                };
                charge(&span, text_bytes(&value))?;
                (value, anchor, 0)
            }
        };
        charge(&span, NODE_BYTES)?;
        nodes += 1;
        if nodes > MAX_NODES {
            return Err(err_at(
                &span,
                format!("the document expands to more than {MAX_NODES} nodes"),
            ));
        }
        if anchor != 0 {
            charge(&span, expanded_bytes(&value))?;
            anchors.insert(anchor, (value.clone(), height));
        }
        match stack.last_mut() {
            None => root = Some(value),
            Some(Frame::Seq {
                items,
                height: above,
                ..
            }) => {
                *above = (*above).max(height);
                items.push(value)
            }
            Some(Frame::Map {
                members,
                key,
                height: above,
                ..
            }) => match key.take() {
                Some((k, line)) => {
                    *above = (*above).max(height);
                    members.push(Member::new(k, value, Some(line)))
                }
                None => {
                    *key = Some((
                        key_text(value).map_err(|m| err_at(&span, m))?,
                        span.start.line(),
                    ))
                }
            },
        }
    }
    Ok(root.unwrap_or(Json::Null))
}

/// A sequence or mapping about to open at `depth`: refused if tagged or nested deeper
/// than [`MAX_DEPTH`].
fn open_collection(
    span: &Span,
    tag: Option<&saphyr_parser::Tag>,
    depth: usize,
    frame: Frame,
) -> Result<Frame, YamlError> {
    if let Some(tag) = tag {
        return Err(err_at(
            span,
            format!("the tag {}{} is not supported", tag.handle, tag.suffix),
        ));
    }
    if depth >= MAX_DEPTH {
        return Err(err_at(
            span,
            format!("nested deeper than {MAX_DEPTH} levels"),
        ));
    }
    Ok(frame)
}

/// A mapping key as Go's conversion writes it: strings as they are, numbers and booleans
/// as their text (`YAMLToJSON` stringifies them); anything else is refused.
fn key_text(value: Json) -> Result<String, String> {
    match value {
        Json::String(s) => {
            if s == "<<" {
                Err("merge keys (<<) are not supported: write the keys out".into())
            } else {
                Ok(s)
            }
        }
        Json::Bool(b) => Ok(b.to_string()),
        Json::Number(n) => Ok(n.to_string()),
        Json::Null => Err("a null mapping key".into()),
        _ => Err("a mapping key that is not a scalar".into()),
    }
}

/// The members of a Go map written as JSON: a key given twice keeps its last value, and
/// keys come out in byte order.
fn go_map_order(members: Vec<Member>) -> Vec<Member> {
    let mut last: HashMap<String, usize> = HashMap::new();
    for (i, m) in members.iter().enumerate() {
        last.insert(m.key.clone(), i);
    }
    let mut kept: Vec<Member> = members
        .into_iter()
        .enumerate()
        .filter(|(i, m)| last.get(&m.key) == Some(i))
        .map(|(_, m)| m)
        .collect();
    kept.sort_by(|a, b| a.key.as_bytes().cmp(b.key.as_bytes()));
    kept
}

/// The text of a scalar value (a string's bytes; numbers and booleans are small).
fn text_bytes(value: &Json) -> usize {
    match value {
        Json::String(s) => s.len(),
        _ => 0,
    }
}

/// What a copy of `value` adds to [`MAX_EXPANDED_BYTES`]: its text, its keys and
/// [`NODE_BYTES`] per node.
fn expanded_bytes(value: &Json) -> usize {
    match value {
        Json::Array(items) => items
            .iter()
            .fold(NODE_BYTES, |n, v| n.saturating_add(expanded_bytes(v))),
        Json::Object(members) => members.iter().fold(NODE_BYTES, |n, m| {
            n.saturating_add(m.key.len())
                .saturating_add(expanded_bytes(&m.value))
        }),
        other => NODE_BYTES + text_bytes(other),
    }
}

fn count_nodes(value: &Json) -> usize {
    match value {
        Json::Array(items) => 1 + items.iter().map(count_nodes).sum::<usize>(),
        Json::Object(members) => 1 + members.iter().map(|m| count_nodes(&m.value)).sum::<usize>(),
        _ => 1,
    }
}

/// go-yaml v2's YAML 1.1 booleans.
const TRUE: &[&str] = &[
    "y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON",
];
const FALSE: &[&str] = &[
    "n", "N", "no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF",
];
const NULL: &[&str] = &["", "~", "null", "Null", "NULL"];
const NOT_JSON: &[&str] = &[
    ".nan", ".NaN", ".NAN", ".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF", "-.inf", "-.Inf",
    "-.INF",
];

/// Resolves a scalar as go-yaml v2 does: quoted and block scalars are strings; a plain
/// scalar may be null, a boolean, an integer or a float (see the module docs).
pub fn resolve(text: &str, style: ScalarStyle) -> Result<Json, String> {
    if style != ScalarStyle::Plain {
        return Ok(Json::String(text.to_string()));
    }
    if NULL.contains(&text) {
        return Ok(Json::Null);
    }
    if TRUE.contains(&text) {
        return Ok(Json::Bool(true));
    }
    if FALSE.contains(&text) {
        return Ok(Json::Bool(false));
    }
    if NOT_JSON.contains(&text) {
        return Err(format!(
            "{text} is not a number JSON can hold (Bacalhau's YAML-to-JSON step fails on it too); quote it if a string is meant"
        ));
    }
    if text == "<<" {
        return Ok(Json::String(text.to_string()));
    }
    let first = text.as_bytes()[0];
    if !(first.is_ascii_digit() || matches!(first, b'-' | b'+' | b'.')) {
        return Ok(Json::String(text.to_string()));
    }
    if looks_like_timestamp(text) {
        return Err(format!(
            "{text} is a timestamp in YAML 1.1, which Bacalhau's YAML reader rewrites to RFC 3339 text; quote it (\"{text}\") to keep it as written"
        ));
    }
    let plain: String = text.chars().filter(|&c| c != '_').collect();
    if let Some(n) = go_parse_int(&plain) {
        return Ok(Json::Number(n));
    }
    if is_yaml_float(&plain) {
        if let Ok(f) = plain.parse::<f64>() {
            // Go's json.Marshal writes an integral float64 below 1e21 without a fraction
            // (`1.0` becomes `1`), so it then decodes into an integer field.
            if f.fract() == 0.0 && f.abs() < 1e21 && f.abs() <= i64::MAX as f64 {
                return Ok(Json::Number((f as i64).into()));
            }
            if let Some(n) = serde_json::Number::from_f64(f) {
                return Ok(Json::Number(n));
            }
        }
    }
    Ok(Json::String(text.to_string()))
}

/// `YYYY-M-D`, the start of every timestamp form go-yaml v2 accepts.
fn looks_like_timestamp(text: &str) -> bool {
    let b = text.as_bytes();
    let digits = |from: usize| b[from..].iter().take_while(|c| c.is_ascii_digit()).count();
    if b.len() < 8 || digits(0) != 4 || b[4] != b'-' {
        return false;
    }
    let m = digits(5);
    if !(1..=2).contains(&m) || b.get(5 + m) != Some(&b'-') {
        return false;
    }
    let d = digits(6 + m);
    (1..=2).contains(&d)
}

/// `strconv.ParseInt(s, 0, 64)`, falling back to `ParseUint`: an optional sign, then a
/// `0x`, `0o`, `0b` or `0` (octal) prefix or decimal digits.
fn go_parse_int(s: &str) -> Option<serde_json::Number> {
    let (negative, rest) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let lower = rest.to_ascii_lowercase();
    let (radix, digits) = if let Some(d) = lower.strip_prefix("0x") {
        (16, d)
    } else if let Some(d) = lower.strip_prefix("0o") {
        (8, d)
    } else if let Some(d) = lower.strip_prefix("0b") {
        (2, d)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, &lower[1..])
    } else {
        (10, lower.as_str())
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let magnitude = u64::from_str_radix(digits, radix).ok()?;
    if negative {
        if magnitude <= i64::MAX as u64 + 1 {
            Some(((magnitude as i128).wrapping_neg() as i64).into())
        } else {
            None
        }
    } else if magnitude <= i64::MAX as u64 {
        Some((magnitude as i64).into())
    } else {
        Some(magnitude.into())
    }
}

/// go-yaml v2's float syntax: `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`.
fn is_yaml_float(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    if matches!(b.first(), Some(b'-' | b'+')) {
        i += 1;
    }
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - start
    };
    if b.get(i) == Some(&b'.') {
        i += 1;
        if digits(&mut i) == 0 {
            return false;
        }
    } else {
        if digits(&mut i) == 0 {
            return false;
        }
        if b.get(i) == Some(&b'.') {
            i += 1;
            digits(&mut i);
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'-' | b'+')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::Obj;

    fn plain(text: &str) -> Json {
        resolve(text, ScalarStyle::Plain).unwrap()
    }

    #[test]
    fn plain_scalars_resolve_as_yaml_1_1() {
        for t in ["yes", "Y", "on", "ON", "true"] {
            assert_eq!(plain(t), Json::Bool(true), "{t}");
        }
        for t in ["no", "n", "Off", "FALSE"] {
            assert_eq!(plain(t), Json::Bool(false), "{t}");
        }
        for t in ["~", "null", ""] {
            assert_eq!(plain(t), Json::Null, "{t}");
        }
        assert_eq!(plain("0x1F"), Json::Number(31.into()));
        assert_eq!(plain("010"), Json::Number(8.into()));
        assert_eq!(plain("0b101"), Json::Number(5.into()));
        assert_eq!(plain("1_000"), Json::Number(1000.into()));
        assert_eq!(plain("-7"), Json::Number((-7).into()));
        assert_eq!(plain("1.0"), Json::Number(1.into()));
        assert_eq!(plain("18446744073709551615"), Json::Number(u64::MAX.into()));
        assert!(matches!(plain("1.5"), Json::Number(n) if n.as_f64() == Some(1.5)));
        for t in ["yess", "0x", "1.2.3", "_start", "/outputs", "-", "1e", "v1"] {
            assert_eq!(plain(t), Json::String(t.into()), "{t}");
        }
        // Quoted and block scalars are strings whatever they spell.
        assert_eq!(
            resolve("yes", ScalarStyle::DoubleQuoted).unwrap(),
            Json::String("yes".into())
        );
        assert!(resolve("2024-01-02", ScalarStyle::Plain)
            .unwrap_err()
            .contains("quote it"));
        assert!(resolve(".inf", ScalarStyle::Plain).is_err());
    }

    #[test]
    fn keys_are_sorted_exact_duplicates_keep_the_last_and_lines_are_kept() {
        let doc = parse("type: a\nType: b\nName: first\nName: second\n").unwrap();
        let Json::Object(members) = &doc else {
            panic!("{doc:?}")
        };
        let keys: Vec<(&str, Option<usize>)> =
            members.iter().map(|m| (m.key.as_str(), m.line)).collect();
        assert_eq!(
            keys,
            vec![("Name", Some(4)), ("Type", Some(2)), ("type", Some(1))]
        );
        let root = Obj::root(&doc).unwrap();
        // `type` sorts after `Type`: it wins, as in Bacalhau.
        assert_eq!(root.string("Type").unwrap(), "a");
        assert_eq!(root.string("Name").unwrap(), "second");
        assert_eq!(root.line("Type"), Some(1));
    }

    #[test]
    fn json_is_read_the_same_way() {
        let doc =
            parse("{\"Tasks\": [{\"Name\": \"main\", \"Env\": {\"A\": \"yes\"}}],\n \"Count\": 1}")
                .unwrap();
        let root = Obj::root(&doc).unwrap();
        let task = &root.objects("Tasks").unwrap()[0];
        assert_eq!(task.string("Name").unwrap(), "main");
        assert_eq!(task.string_map("Env").unwrap()[0].1, "yes");
        assert_eq!(root.int("Count").unwrap(), Some(1));
        assert_eq!(root.line("Count"), Some(2));
    }

    #[test]
    fn anchors_expand_within_bounds_and_refusals_name_the_line() {
        let doc = parse("a: &x [1, 2]\nb: *x\n").unwrap();
        let root = Obj::root(&doc).unwrap();
        assert_eq!(root.get("a"), root.get("b"));
        let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..8 {
            let prev = format!("*a{}", i - 1);
            bomb.push_str(&format!(
                "a{i}: &a{i} [{}]\n",
                std::iter::repeat_n(prev.as_str(), 10)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        assert!(parse(&bomb).unwrap_err().message.contains("nodes"));
        let e = parse("a: 1\nb: !!int 3\n").unwrap_err();
        assert_eq!(e.line, 2);
        let e = parse("a: 1\n---\nb: 2\n").unwrap_err();
        assert!(e.message.contains("second YAML document"), "{e}");
        let e = parse("a:\n  <<: {b: 1}\n").unwrap_err();
        assert!(e.message.contains("merge keys"), "{e}");
        let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        assert!(parse(&deep).unwrap_err().message.contains("deeper"));
        assert!(parse("a: [1\n").is_err());
    }

    /// A chain of anchors, each nested 126 levels around an alias of the one before, built
    /// values thousands of levels deep (the depth was checked only where `[` opened) and
    /// overflowed the stack of whatever recursed over them. The alias that would pass
    /// [`MAX_DEPTH`] is refused, naming its line; one that fits is expanded.
    #[test]
    fn aliases_cannot_nest_deeper_than_the_depth_limit() {
        let d = 126;
        let mut text = format!("x0: &a0 {}1{}\n", "[".repeat(d), "]".repeat(d));
        for k in 1..90 {
            text.push_str(&format!(
                "x{k}: &a{k} {}*a{}{}\n",
                "[".repeat(d),
                k - 1,
                "]".repeat(d)
            ));
        }
        text.push_str("Name: *a89\nType: batch\n");
        let e = parse(&text).unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        assert!(e.message.contains("deeper than 128 levels"), "{e}");
        // Exactly at the limit: 2 levels around an alias of 126.
        let fits = format!("a: &a {}1{}\nb: [*a]\n", "[".repeat(d), "]".repeat(d));
        parse(&fits).unwrap();
        let over = format!("a: &a {}1{}\nb: [[*a]]\n", "[".repeat(d), "]".repeat(d));
        assert_eq!(parse(&over).unwrap_err().line, 2);
        // A mapping's height counts too.
        let map = format!(
            "a: &a {}1{}\nb: {{c: *a}}\n",
            "{k: ".repeat(d),
            "}".repeat(d)
        );
        parse(&map).unwrap();
        let map = format!(
            "a: &a {}1{}\nb: {{c: [*a]}}\n",
            "{k: ".repeat(d),
            "}".repeat(d)
        );
        assert_eq!(parse(&map).unwrap_err().line, 2);
    }

    /// One anchored 4 MiB string aliased 1,000 times is 1,001 nodes and 4 GB: refused by
    /// its bytes, before the copies are made; so are nested anchors copying one large
    /// value at every level. A few aliases of it are fine.
    #[test]
    fn aliases_and_anchors_are_bounded_by_the_bytes_they_copy() {
        let big = "x".repeat(4 << 20);
        let aliases = vec!["*s"; 1000].join(", ");
        let start = std::time::Instant::now();
        let e = parse(&format!(
            "s: &s {big}
l: [{aliases}]
"
        ))
        .unwrap_err();
        assert!(e.message.contains("64 MiB") && e.line == 2, "{e}");
        assert!(start.elapsed() < std::time::Duration::from_secs(10));
        let doc = parse(&format!(
            "s: &s {big}
l: [*s, *s, *s]
"
        ))
        .unwrap();
        let Json::Object(members) = &doc else {
            panic!("not a mapping")
        };
        assert!(
            matches!(&members[0].value, Json::Array(items) if items.len() == 3 && items[2] == Json::String(big.clone()))
        );
        let depth = 100;
        let mut nested = String::from("a: ");
        for i in 0..depth {
            nested.push_str(&format!("&a{i} ["));
        }
        nested.push_str(&"y".repeat(1 << 20));
        nested.push_str(&"]".repeat(depth));
        let e = parse(&nested).unwrap_err();
        assert!(e.message.contains("64 MiB"), "{e}");
    }
}
