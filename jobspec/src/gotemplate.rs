//! A faithful subset of Go's `text/template`, the language of `lilypad_module.json.tmpl`.
//!
//! Lilypad renders a module template with `template.New(name).Funcs({"subst": subst})`
//! and executes it on a `map[string]string` whose values are the JSON-encoded inputs.
//! This module does the same, in three stages: a lexer that splits text from actions
//! (honouring `{{-`/`-}}` trimming and `{{/* comments */}}`), a parser that builds the
//! tree and checks function names at parse time as Go does, and an evaluator.
//!
//! # What is implemented, with Go's semantics
//!
//! - text, `{{.}}`, `{{.Key}}` (and `.Key.Field` chains, which fail on strings as in Go);
//! - `{{if}}` / `{{else if}}` / `{{else}}` / `{{end}}`, `{{with}}` / `{{else with}}`;
//! - pipelines `a | f b` and parenthesised pipelines;
//! - string (`"..."`, `` `raw` ``), integer, float, `true`/`false` literals;
//! - functions: Lilypad's `subst`, and Go's builtins `printf`, `print`, `println`, `len`,
//!   `not`, `and`, `or`, `eq`, `ne`;
//! - a missing key is Go's invalid value: false in `if`, written `<no value>`, `nil` when
//!   passed to `printf`, an error when passed to `subst` (whose parameters are strings).
//!
//! # What is refused
//!
//! Everything else a Go template may contain (`range`, `define`, `template`, `block`,
//! `break`, `continue`, variables, the other builtins) is a parse error that names the
//! construct and its line, never a silent mis-render. No module template seen in the
//! wild needs them.
//!
//! Why not a crate: `gtmpl` (unmaintained since 2021) and `gotmpl` were evaluated;
//! `gotmpl` 0.6 renders well but accepts an unterminated `{{if}}` without an error and its
//! errors carry no line, which are the two things a module author needs most here.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;

use crate::gocompat;
pub use crate::gocompat::Value;

/// How deep `if`/`with` blocks (each `else if`/`else with` counts as one more level, as
/// it is a nested block) and parenthesised pipelines may nest, all together.
///
/// The parser and the evaluator recurse once per level, so without a bound a template of
/// a few kilobytes of `{{if 1}}` or `((((` overflows the stack and kills the process.
/// Go's text/template/parse caps parenthesised pipelines at 10000 (`maxStackDepth`,
/// error "max expression depth exceeded") and leaves `if`/`with` to its growable
/// goroutine stacks; a Rust thread's stack is fixed (2 MiB for test threads), so one
/// lower cap covers both. Module templates in the wild nest two or three levels; 100
/// leaves room for long `else if` chains.
pub const MAX_NESTING: usize = 100;

/// The most bytes a rendered template, or any string made while rendering it, may have:
/// 4 MiB. A rendered spec is a few kilobytes of JSON, but `printf` widths reach ten
/// million (Go's own cap), and `with` can feed a function's result back to it, doubling
/// a string per level. Go has no such limit: a template that renders to more is refused
/// here with an error saying so, where Lilypad would render it.
pub const MAX_OUTPUT: usize = 4 << 20;

/// The most bytes all function calls of one rendering may produce together: 64 MiB.
/// [`MAX_OUTPUT`] bounds each string; this bounds how many of them a long template may
/// make (a thousand `{{if printf "%4000000d" 1}}` blocks write nothing, but would still
/// cost four gigabytes of formatting).
pub const MAX_WORK: usize = 64 << 20;

/// The largest template file read (1 MiB; module templates are a few kilobytes).
pub const MAX_TEMPLATE: usize = 1 << 20;

/// A template error: where (the template's name and line) and what, in Go's words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("template: {name}:{line}: {message}")]
pub struct TemplateError {
    /// The template's name (for module templates, the template file's path).
    pub name: String,
    /// 1-based line of the action at fault.
    pub line: usize,
    /// What went wrong.
    pub message: String,
}

impl Value {
    /// Go's `template.IsTrue`: the zero value of a type is false, and so is a missing key.
    fn truth(&self) -> bool {
        match self {
            Value::Missing | Value::Nil => false,
            Value::Bool(b) => *b,
            Value::Int(i) => *i != 0,
            Value::Float(f) => *f != 0.0,
            Value::Str(s) => !s.is_empty(),
            Value::Data(m) => !m.is_empty(),
        }
    }
}

/// The bytes a copy of `value` holds, as charged against [`MAX_WORK`]: a string's
/// length, or the data's keys and values.
fn weight(value: &Value) -> usize {
    match value {
        Value::Str(s) => s.len(),
        Value::Data(map) => map.iter().map(|(k, v)| k.len() + v.len()).sum(),
        _ => 0,
    }
}

/// A parsed template.
#[derive(Debug, Clone)]
pub struct Template {
    name: String,
    root: Vec<Node>,
    /// Bytes produced by function calls in the current execution ([`MAX_WORK`]).
    produced: Cell<usize>,
    /// Line of the last action executed, for an output-limit error in plain text.
    last_line: Cell<usize>,
}

#[derive(Debug, Clone)]
enum Node {
    Text(String),
    Action(Pipeline),
    /// `if` and `with`, with their `else if` / `else with` chain and final `else`.
    Branch {
        kind: BranchKind,
        pipe: Pipeline,
        then: Vec<Node>,
        otherwise: Vec<Node>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum BranchKind {
    If,
    With,
}

#[derive(Debug, Clone)]
struct Pipeline {
    line: usize,
    /// The action's source text, for error messages (`at <.Key>`).
    source: String,
    commands: Vec<Vec<Operand>>,
}

#[derive(Debug, Clone)]
enum Operand {
    Dot,
    /// `.A.B`: a field chain on dot.
    Field(Vec<String>),
    Func(String),
    Literal(Value),
    Sub(Pipeline),
}

/// Functions the evaluator knows. Go checks names at parse time, so do we.
const FUNCTIONS: &[&str] = &[
    "subst", "printf", "print", "println", "len", "not", "and", "or", "eq", "ne",
];

/// Go builtins and keywords this subset refuses by name, so the error says what it is.
const UNSUPPORTED_FUNCTIONS: &[&str] = &[
    "call", "html", "index", "slice", "js", "urlquery", "lt", "le", "gt", "ge",
];

// ---------------------------------------------------------------------------------------
// Lexing: split the source into text and actions.

#[derive(Debug)]
enum Piece {
    Text(String),
    /// An action's inner text (delimiters and trim markers removed) and its line.
    Action(String, usize),
}

fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

fn split_actions(name: &str, src: &str) -> Result<Vec<Piece>, TemplateError> {
    let err = |line: usize, message: String| TemplateError {
        name: name.to_string(),
        line,
        message,
    };
    let mut pieces = Vec::new();
    let mut rest = src;
    let mut line = 1usize;
    let mut trim_next_text = false;
    while !rest.is_empty() {
        let (text, after) = match rest.find("{{") {
            Some(i) => (&rest[..i], Some(&rest[i + 2..])),
            None => (rest, None),
        };
        let mut text = text.to_string();
        if trim_next_text {
            text = text.trim_start_matches(is_space).to_string();
        }
        line += text_lines(&rest[..rest.len() - after.map_or(0, |a| a.len() + 2)]);
        let Some(after) = after else {
            if !text.is_empty() {
                pieces.push(Piece::Text(text));
            }
            break;
        };
        // `{{- ` trims the text before; the dash must be followed by a space.
        let mut body = after;
        if body.starts_with('-') && body[1..].starts_with(is_space) {
            text = text.trim_end_matches(is_space).to_string();
            body = &body[2..];
        }
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        let action_line = line;
        // As in Go's lexer, a comment starts right after `{{` or `{{- ` and its `*/` is
        // followed at once by `}}` or ` -}}`.
        let (inner, right_trim, tail) = if let Some(comment) = body.strip_prefix("/*") {
            let Some(end) = comment.find("*/") else {
                return Err(err(action_line, "unclosed comment".into()));
            };
            let after_comment = &comment[end + 2..];
            let (right_trim, tail) = if let Some(tail) = after_comment.strip_prefix("}}") {
                (false, tail)
            } else if after_comment.starts_with(is_space) && after_comment[1..].starts_with("-}}") {
                (true, &after_comment[4..])
            } else {
                return Err(err(
                    action_line,
                    "comment ends before closing delimiter".into(),
                ));
            };
            line += comment[..end].matches('\n').count();
            (None, right_trim, tail)
        } else {
            let Some(close) = find_close(body) else {
                return Err(err(action_line, "unclosed action".into()));
            };
            let inner = &body[..close];
            line += inner.matches('\n').count();
            match body[close..].strip_prefix("-}}") {
                Some(tail) => (Some(inner), true, tail),
                None => (Some(inner), false, &body[close + 2..]),
            }
        };
        trim_next_text = right_trim;
        if let Some(inner) = inner {
            pieces.push(Piece::Action(
                inner.trim_matches(is_space).to_string(),
                action_line,
            ));
        }
        rest = tail;
    }
    Ok(pieces)
}

fn text_lines(s: &str) -> usize {
    s.matches('\n').count()
}

/// Finds the end of an action: `}}` or ` -}}` outside string literals.
fn find_close(body: &str) -> Option<usize> {
    let bytes = body.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    if bytes[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'`' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'`' {
                    i += 1;
                }
            }
            b'-' if body[i..].starts_with("-}}") && i > 0 && is_space(bytes[i - 1] as char) => {
                return Some(i);
            }
            b'}' if body[i..].starts_with("}}") => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

// ---------------------------------------------------------------------------------------
// Tokens inside an action.

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Dot,
    Field(Vec<String>),
    Ident(String),
    Str(String),
    Int(i64),
    Float(f64),
    Pipe,
    Open,
    Close,
}

fn tokenize(
    action: &str,
    fail: &dyn Fn(String) -> TemplateError,
) -> Result<Vec<Token>, TemplateError> {
    let mut tokens = Vec::new();
    let chars: Vec<char> = action.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if is_space(c) => i += 1,
            '|' => {
                tokens.push(Token::Pipe);
                i += 1;
            }
            '(' => {
                tokens.push(Token::Open);
                i += 1;
            }
            ')' => {
                tokens.push(Token::Close);
                i += 1;
                if chars.get(i) == Some(&'.') {
                    return Err(fail(
                        "unsupported construct: field access on a parenthesised pipeline".into(),
                    ));
                }
            }
            '"' => {
                let mut s = String::new();
                i += 1;
                loop {
                    let Some(&c) = chars.get(i) else {
                        return Err(fail("unterminated quoted string".into()));
                    };
                    i += 1;
                    match c {
                        '"' => break,
                        '\n' => return Err(fail("unterminated quoted string".into())),
                        '\\' => {
                            let Some(&e) = chars.get(i) else {
                                return Err(fail("unterminated quoted string".into()));
                            };
                            i += 1;
                            match e {
                                'n' => s.push('\n'),
                                't' => s.push('\t'),
                                'r' => s.push('\r'),
                                'a' => s.push('\u{7}'),
                                'b' => s.push('\u{8}'),
                                'f' => s.push('\u{c}'),
                                'v' => s.push('\u{b}'),
                                '\\' => s.push('\\'),
                                '"' => s.push('"'),
                                '\'' => s.push('\''),
                                'x' | 'u' | 'U' => {
                                    let n = match e {
                                        'x' => 2,
                                        'u' => 4,
                                        _ => 8,
                                    };
                                    let hex: String = chars.iter().skip(i).take(n).collect();
                                    let code = u32::from_str_radix(&hex, 16)
                                        .ok()
                                        .filter(|_| hex.len() == n)
                                        .ok_or_else(|| {
                                            fail(format!("invalid escape \\{e}{hex} in string"))
                                        })?;
                                    i += n;
                                    s.push(char::from_u32(code).ok_or_else(|| {
                                        fail(format!("invalid code point \\{e}{hex}"))
                                    })?);
                                }
                                other => {
                                    return Err(fail(format!("invalid escape \\{other} in string")))
                                }
                            }
                        }
                        c => s.push(c),
                    }
                }
                tokens.push(Token::Str(s));
            }
            '`' => {
                let start = i + 1;
                let Some(len) = chars[start..].iter().position(|&c| c == '`') else {
                    return Err(fail("unterminated raw quoted string".into()));
                };
                tokens.push(Token::Str(chars[start..start + len].iter().collect()));
                i = start + len + 1;
            }
            '\'' => return Err(fail("unsupported construct: character constant".into())),
            '$' => return Err(fail("unsupported construct: variables ($)".into())),
            ':' | '=' => return Err(fail("unsupported construct: variable assignment".into())),
            '.' if !chars.get(i + 1).is_some_and(|c| c.is_ascii_digit()) => {
                let mut fields = Vec::new();
                while chars.get(i) == Some(&'.') {
                    let start = i + 1;
                    let mut j = start;
                    while chars
                        .get(j)
                        .is_some_and(|c| c.is_alphanumeric() || *c == '_')
                    {
                        j += 1;
                    }
                    if j == start {
                        break;
                    }
                    fields.push(chars[start..j].iter().collect());
                    i = j;
                }
                if fields.is_empty() {
                    tokens.push(Token::Dot);
                    i += 1;
                } else {
                    tokens.push(Token::Field(fields));
                }
            }
            c if c.is_ascii_digit() || c == '-' || c == '+' || c == '.' => {
                let start = i;
                i += 1;
                while chars
                    .get(i)
                    .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '_')
                {
                    i += 1;
                }
                let text: String = chars[start..i].iter().collect::<String>().replace('_', "");
                if let Ok(n) = text.parse::<i64>() {
                    tokens.push(Token::Int(n));
                } else if let Some(n) = parse_go_int(&text) {
                    tokens.push(Token::Int(n));
                } else if let Ok(f) = text.parse::<f64>() {
                    tokens.push(Token::Float(f));
                } else {
                    return Err(fail(format!("bad number syntax: {text:?}")));
                }
            }
            c if c.is_alphabetic() || c == '_' => {
                let start = i;
                while chars
                    .get(i)
                    .is_some_and(|c| c.is_alphanumeric() || *c == '_')
                {
                    i += 1;
                }
                tokens.push(Token::Ident(chars[start..i].iter().collect()));
                if chars.get(i) == Some(&'.') {
                    return Err(fail(
                        "unsupported construct: field access on a function result".into(),
                    ));
                }
            }
            other => return Err(fail(format!("unexpected {other:?} in command"))),
        }
    }
    Ok(tokens)
}

fn parse_go_int(text: &str) -> Option<i64> {
    let (neg, body) = match text.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let lower = body.to_ascii_lowercase();
    let n = if let Some(h) = lower.strip_prefix("0x") {
        i64::from_str_radix(h, 16).ok()?
    } else if let Some(o) = lower.strip_prefix("0o") {
        i64::from_str_radix(o, 8).ok()?
    } else if let Some(b) = lower.strip_prefix("0b") {
        i64::from_str_radix(b, 2).ok()?
    } else if lower.len() > 1 && lower.starts_with('0') && lower.chars().all(|c| c.is_ascii_digit())
    {
        i64::from_str_radix(&lower[1..], 8).ok()?
    } else {
        return None;
    };
    Some(if neg { -n } else { n })
}

// ---------------------------------------------------------------------------------------
// Parsing.

struct Parser<'a> {
    name: &'a str,
    pieces: Vec<Piece>,
    pos: usize,
    /// Open `if`/`with` blocks ([`MAX_NESTING`]).
    depth: usize,
}

/// What ended a list of nodes.
enum Stop {
    Eof,
    End(usize),
    Else { line: usize, rest: String },
}

impl Parser<'_> {
    fn error(&self, line: usize, message: impl Into<String>) -> TemplateError {
        TemplateError {
            name: self.name.to_string(),
            line,
            message: message.into(),
        }
    }

    fn parse_list(&mut self) -> Result<(Vec<Node>, Stop), TemplateError> {
        let mut nodes = Vec::new();
        while self.pos < self.pieces.len() {
            let piece = &self.pieces[self.pos];
            self.pos += 1;
            match piece {
                Piece::Text(t) => nodes.push(Node::Text(t.clone())),
                Piece::Action(action, line) => {
                    let (action, line) = (action.clone(), *line);
                    let (keyword, rest) = split_keyword(&action);
                    match keyword {
                        "end" => {
                            if !rest.is_empty() {
                                return Err(self.error(line, format!("unexpected {rest:?} in end")));
                            }
                            return Ok((nodes, Stop::End(line)));
                        }
                        "else" => {
                            return Ok((
                                nodes,
                                Stop::Else {
                                    line,
                                    rest: rest.to_string(),
                                },
                            ));
                        }
                        "if" => nodes.push(self.parse_branch(BranchKind::If, rest, line)?),
                        "with" => nodes.push(self.parse_branch(BranchKind::With, rest, line)?),
                        "range" | "define" | "template" | "block" | "break" | "continue" => {
                            return Err(self.error(
                                line,
                                format!(
                                    "unsupported construct `{keyword}` (detwasm renders the text/template subset that module templates use: fields, if/else, with, pipelines, subst, printf)"
                                ),
                            ));
                        }
                        _ => {
                            if action.is_empty() {
                                return Err(self.error(line, "missing value for command"));
                            }
                            nodes.push(Node::Action(self.parse_pipeline(&action, line)?));
                        }
                    }
                }
            }
        }
        Ok((nodes, Stop::Eof))
    }

    fn parse_branch(
        &mut self,
        kind: BranchKind,
        pipe_src: &str,
        line: usize,
    ) -> Result<Node, TemplateError> {
        if self.depth >= MAX_NESTING {
            return Err(self.error(
                line,
                format!("max nesting depth exceeded: more than {MAX_NESTING} levels of if/with/else if and parentheses"),
            ));
        }
        self.depth += 1;
        let node = self.parse_branch_body(kind, pipe_src, line);
        self.depth -= 1;
        node
    }

    fn parse_branch_body(
        &mut self,
        kind: BranchKind,
        pipe_src: &str,
        line: usize,
    ) -> Result<Node, TemplateError> {
        let kw = if kind == BranchKind::If { "if" } else { "with" };
        if pipe_src.is_empty() {
            return Err(self.error(line, format!("missing value for {kw}")));
        }
        let pipe = self.parse_pipeline(pipe_src, line)?;
        let (then, stop) = self.parse_list()?;
        let otherwise = match stop {
            Stop::Eof => {
                return Err(self.error(line, format!("unexpected EOF: `{kw}` has no `{{{{end}}}}`")))
            }
            Stop::End(_) => Vec::new(),
            Stop::Else {
                line: else_line,
                rest,
            } => {
                let (next_kw, next_rest) = split_keyword(&rest);
                if rest.is_empty() {
                    let (otherwise, stop) = self.parse_list()?;
                    match stop {
                        Stop::End(_) => otherwise,
                        Stop::Eof => {
                            return Err(self.error(
                                line,
                                format!("unexpected EOF: `{kw}` has no `{{{{end}}}}`"),
                            ))
                        }
                        Stop::Else { line, .. } => {
                            return Err(self.error(line, "expected end; found {{else}}"))
                        }
                    }
                } else if next_kw == "if" || next_kw == "with" {
                    // `{{else if x}}` is `{{else}}{{if x}}...{{end}}` sharing the outer end.
                    let next = if next_kw == "if" {
                        BranchKind::If
                    } else {
                        BranchKind::With
                    };
                    vec![self.parse_branch(next, next_rest, else_line)?]
                } else {
                    return Err(self.error(else_line, format!("unexpected {rest:?} in else")));
                }
            }
        };
        Ok(Node::Branch {
            kind,
            pipe,
            then,
            otherwise,
        })
    }

    fn parse_pipeline(&self, src: &str, line: usize) -> Result<Pipeline, TemplateError> {
        let fail = |m: String| self.error(line, m);
        let tokens = tokenize(src, &fail)?;
        let mut pos = 0;
        let pipe = self.pipeline_tokens(&tokens, &mut pos, src, line, self.depth)?;
        if pos != tokens.len() {
            return Err(self.error(line, format!("unexpected {:?} in operand", tokens[pos])));
        }
        Ok(pipe)
    }

    fn pipeline_tokens(
        &self,
        tokens: &[Token],
        pos: &mut usize,
        src: &str,
        line: usize,
        depth: usize,
    ) -> Result<Pipeline, TemplateError> {
        let mut commands = Vec::new();
        let mut command = Vec::new();
        while *pos < tokens.len() {
            let tok = &tokens[*pos];
            *pos += 1;
            match tok {
                Token::Close => {
                    *pos -= 1;
                    break;
                }
                Token::Pipe => {
                    if command.is_empty() {
                        return Err(self.error(line, "missing command before `|`"));
                    }
                    commands.push(std::mem::take(&mut command));
                }
                Token::Open => {
                    if depth >= MAX_NESTING {
                        return Err(self.error(
                            line,
                            format!("max expression depth exceeded: more than {MAX_NESTING} levels of if/with/else if and parentheses"),
                        ));
                    }
                    let sub = self.pipeline_tokens(tokens, pos, src, line, depth + 1)?;
                    if tokens.get(*pos) != Some(&Token::Close) {
                        return Err(self.error(line, "unclosed left paren"));
                    }
                    *pos += 1;
                    command.push(Operand::Sub(sub));
                }
                Token::Dot => command.push(Operand::Dot),
                Token::Field(f) => command.push(Operand::Field(f.clone())),
                Token::Str(s) => command.push(Operand::Literal(Value::Str(s.clone()))),
                Token::Int(n) => command.push(Operand::Literal(Value::Int(*n))),
                Token::Float(f) => command.push(Operand::Literal(Value::Float(*f))),
                Token::Ident(id) => match id.as_str() {
                    "true" => command.push(Operand::Literal(Value::Bool(true))),
                    "false" => command.push(Operand::Literal(Value::Bool(false))),
                    "nil" => command.push(Operand::Literal(Value::Nil)),
                    f if FUNCTIONS.contains(&f) => command.push(Operand::Func(f.to_string())),
                    f if UNSUPPORTED_FUNCTIONS.contains(&f) => {
                        return Err(self.error(
                            line,
                            format!("unsupported construct: builtin function {f:?}"),
                        ));
                    }
                    f => return Err(self.error(line, format!("function {f:?} not defined"))),
                },
            }
        }
        if command.is_empty() {
            return Err(self.error(
                line,
                if commands.is_empty() {
                    "missing value for command"
                } else {
                    "missing command after `|`"
                },
            ));
        }
        commands.push(command);
        Ok(Pipeline {
            line,
            source: src.to_string(),
            commands,
        })
    }
}

/// Splits `if .A` into (`if`, `.A`); a non-keyword action returns ("", action).
fn split_keyword(action: &str) -> (&str, &str) {
    let end = action.find(is_space).unwrap_or(action.len());
    let word = &action[..end];
    match word {
        "if" | "else" | "end" | "with" | "range" | "define" | "template" | "block" | "break"
        | "continue" => (word, action[end..].trim_matches(is_space)),
        _ => ("", action),
    }
}

impl Template {
    /// Parses `src`; `name` is used in error messages, as Go uses the template's name.
    pub fn parse(name: &str, src: &str) -> Result<Template, TemplateError> {
        let pieces = split_actions(name, src)?;
        let mut parser = Parser {
            name,
            pieces,
            pos: 0,
            depth: 0,
        };
        let (root, stop) = parser.parse_list()?;
        match stop {
            Stop::Eof => Ok(Template {
                name: name.to_string(),
                root,
                produced: Cell::new(0),
                last_line: Cell::new(1),
            }),
            Stop::End(line) => Err(parser.error(line, "unexpected {{end}}")),
            Stop::Else { line, .. } => Err(parser.error(line, "unexpected {{else}}")),
        }
    }

    /// Executes the template on `data` (Lilypad passes the JSON-encoded inputs).
    pub fn execute(&self, data: &BTreeMap<String, String>) -> Result<String, TemplateError> {
        self.produced.set(0);
        self.last_line.set(1);
        let root = Value::Data(data.clone());
        let mut out = String::new();
        self.exec_list(&self.root, &root, &mut out)?;
        Ok(out)
    }

    fn exec_list(
        &self,
        nodes: &[Node],
        dot: &Value,
        out: &mut String,
    ) -> Result<(), TemplateError> {
        for node in nodes {
            match node {
                Node::Text(t) => self.write(out, t)?,
                Node::Action(pipe) => {
                    let v = self.eval_pipeline(pipe, dot)?;
                    self.last_line.set(pipe.line);
                    self.write(out, &gocompat::sprint_value(&v))?;
                }
                Node::Branch {
                    kind,
                    pipe,
                    then,
                    otherwise,
                } => {
                    let v = self.eval_pipeline(pipe, dot)?;
                    if v.truth() {
                        let inner_dot = if *kind == BranchKind::With { &v } else { dot };
                        self.exec_list(then, inner_dot, out)?;
                    } else {
                        self.exec_list(otherwise, dot, out)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Appends to the output, refusing to grow it past [`MAX_OUTPUT`].
    fn write(&self, out: &mut String, text: &str) -> Result<(), TemplateError> {
        if out.len().saturating_add(text.len()) > MAX_OUTPUT {
            return Err(TemplateError {
                name: self.name.clone(),
                line: self.last_line.get(),
                message: format!(
                    "the rendered template would exceed {} MiB, detwasm's limit for a module spec",
                    MAX_OUTPUT >> 20
                ),
            });
        }
        out.push_str(text);
        Ok(())
    }

    /// Counts a string a function made against [`MAX_WORK`].
    fn charge(&self, pipe: &Pipeline, value: Value) -> Result<Value, TemplateError> {
        if let Value::Str(s) = &value {
            self.charge_bytes(pipe, s.len())?;
        }
        Ok(value)
    }

    /// Counts `bytes` made or copied against [`MAX_WORK`], before they are kept.
    fn charge_bytes(&self, pipe: &Pipeline, bytes: usize) -> Result<(), TemplateError> {
        let total = self.produced.get().saturating_add(bytes);
        if total > MAX_WORK {
            return Err(self.exec_error(
                pipe,
                format!(
                    "the template's functions made more than {} MiB of text, detwasm's limit for one rendering",
                    MAX_WORK >> 20
                ),
            ));
        }
        self.produced.set(total);
        Ok(())
    }

    fn too_long(&self, pipe: &Pipeline, name: &str) -> TemplateError {
        self.exec_error(
            pipe,
            format!(
                "error calling {name}: its result would exceed {} MiB, detwasm's limit for a string in a module spec",
                MAX_OUTPUT >> 20
            ),
        )
    }

    fn exec_error(&self, pipe: &Pipeline, message: impl fmt::Display) -> TemplateError {
        TemplateError {
            name: self.name.clone(),
            line: pipe.line,
            message: format!("executing {:?} at <{}>: {message}", self.name, pipe.source),
        }
    }

    fn eval_pipeline(&self, pipe: &Pipeline, dot: &Value) -> Result<Value, TemplateError> {
        let mut previous: Option<Value> = None;
        for command in &pipe.commands {
            previous = Some(self.eval_command(pipe, command, dot, previous)?);
        }
        Ok(previous.expect("a pipeline has at least one command"))
    }

    /// Evaluates one operand, charging the bytes of the value it yields against
    /// [`MAX_WORK`].
    ///
    /// Every evaluation of `.`, a field or a literal copies its string, so a `with` that
    /// sets `.` to a 4 MiB string once (one 4 MiB charge for the `printf`) would
    /// otherwise make `{{eq . . …}}` with 2,000 dots hold 8 GB, and `and` with 500,000
    /// dots copy 2 TB, uncharged. Charging each copy here bounds both by the same 64 MiB
    /// budget, with the same error naming the line. A template within bounds renders as
    /// Go does: only the budget check is new, no value changes. Rejected: making strings
    /// cheap to clone (`Rc<str>`) and charging the arguments `eq`/`and`/`or`/`printf`
    /// collect — a change to every function and to [`Value`]'s public type, for the
    /// same bound.
    fn eval_operand(
        &self,
        pipe: &Pipeline,
        op: &Operand,
        dot: &Value,
    ) -> Result<Value, TemplateError> {
        let value = match op {
            Operand::Dot => dot.clone(),
            Operand::Literal(v) => v.clone(),
            // Not charged again: its value was charged inside, when the operand or the
            // function that made it ran, and is moved here, not copied.
            Operand::Sub(p) => return self.eval_pipeline(p, dot),
            Operand::Field(fields) => {
                // Walked by reference: the map is not copied per field access.
                let mut v: Result<&str, &Value> = Err(dot);
                for field in fields {
                    v = match v {
                        Err(Value::Data(map)) => match map.get(field) {
                            Some(s) => Ok(s.as_str()),
                            None => Err(&Value::Missing),
                        },
                        // Go: a field of an invalid value is the invalid value.
                        Err(Value::Missing) => Err(&Value::Missing),
                        Err(Value::Nil) => {
                            return Err(self.exec_error(
                                pipe,
                                format!("nil pointer evaluating interface {{}}.{field}"),
                            ))
                        }
                        Ok(_) => {
                            return Err(self.exec_error(
                                pipe,
                                format!("can't evaluate field {field} in type string"),
                            ))
                        }
                        Err(other) => {
                            return Err(self.exec_error(
                                pipe,
                                format!(
                                    "can't evaluate field {field} in type {}",
                                    gocompat::type_name(other)
                                ),
                            ))
                        }
                    };
                }
                match v {
                    Ok(s) => {
                        self.charge_bytes(pipe, s.len())?;
                        return Ok(Value::Str(s.to_string()));
                    }
                    Err(other) => other.clone(),
                }
            }
            Operand::Func(f) => return self.call(pipe, f, &[]),
        };
        self.charge_bytes(pipe, weight(&value))?;
        Ok(value)
    }

    fn eval_command(
        &self,
        pipe: &Pipeline,
        command: &[Operand],
        dot: &Value,
        piped: Option<Value>,
    ) -> Result<Value, TemplateError> {
        match &command[0] {
            Operand::Func(name) => {
                // `and`/`or` short-circuit (Go 1.18+): evaluate lazily.
                if name == "and" || name == "or" {
                    let mut last = Value::Missing;
                    let count = command.len() - 1 + usize::from(piped.is_some());
                    if count == 0 {
                        return Err(self.exec_error(
                            pipe,
                            format!("wrong number of args for {name}: want at least 1 got 0"),
                        ));
                    }
                    for op in &command[1..] {
                        last = self.eval_operand(pipe, op, dot)?;
                        if last.truth() != (name == "and") {
                            return Ok(last);
                        }
                    }
                    if let Some(p) = piped {
                        last = p;
                    }
                    return Ok(last);
                }
                let mut args = Vec::with_capacity(command.len());
                for op in &command[1..] {
                    args.push(self.eval_operand(pipe, op, dot)?);
                }
                if let Some(p) = piped {
                    args.push(p);
                }
                let value = self.call(pipe, name, &args)?;
                self.charge(pipe, value)
            }
            first => {
                if command.len() > 1 || piped.is_some() {
                    let what = match first {
                        Operand::Field(f) => format!(".{}", f.join(".")),
                        Operand::Dot => ".".to_string(),
                        _ => "a constant".to_string(),
                    };
                    return Err(self
                        .exec_error(pipe, format!("can't give argument to non-function {what}")));
                }
                self.eval_operand(pipe, first, dot)
            }
        }
    }

    /// The format string and the operands of `subst` or `printf` (`name`): the first
    /// argument must be present and a string.
    fn format_and_operands<'v>(
        &self,
        pipe: &Pipeline,
        name: &str,
        args: &'v [Value],
    ) -> Result<(&'v str, &'v [Value]), TemplateError> {
        let Some((format, rest)) = args.split_first() else {
            return Err(self.exec_error(
                pipe,
                format!("wrong number of args for {name}: want at least 1 got 0"),
            ));
        };
        let Value::Str(format) = format else {
            return Err(self.exec_error(
                pipe,
                format!(
                    "wrong type for value; expected string; got {}",
                    gocompat::type_name(format)
                ),
            ));
        };
        Ok((format, rest))
    }

    fn call(&self, pipe: &Pipeline, name: &str, args: &[Value]) -> Result<Value, TemplateError> {
        let want = |n: usize| -> Result<(), TemplateError> {
            if args.len() != n {
                return Err(self.exec_error(
                    pipe,
                    format!(
                        "wrong number of args for {name}: want {n} got {}",
                        args.len()
                    ),
                ));
            }
            Ok(())
        };
        // Missing values passed to `...any` parameters become nil interfaces (Go's
        // validateType); `subst` takes strings, so for it a missing value is an error.
        let as_any = |v: &Value| {
            if *v == Value::Missing {
                Value::Nil
            } else {
                v.clone()
            }
        };
        match name {
            "subst" => {
                let (format, rest) = self.format_and_operands(pipe, name, args)?;
                let mut decoded = Vec::with_capacity(rest.len());
                for arg in rest {
                    match arg {
                        Value::Str(s) => match serde_json::from_str::<String>(s) {
                            Ok(d) => decoded.push(Value::Str(d)),
                            // Lilypad's subst panics ("subst: invalid input"); text/template
                            // turns a panic in a function into this error.
                            Err(_) => return Err(self.exec_error(pipe, format!("error calling subst: subst: invalid input ({s:?} is not a JSON-encoded string)"))),
                        },
                        Value::Missing => return Err(self.exec_error(pipe, "invalid value; expected string")),
                        other => return Err(self.exec_error(pipe, format!("wrong type for value; expected string; got {}", gocompat::type_name(other)))),
                    }
                }
                gocompat::sprintf_limited(format, &decoded, MAX_OUTPUT)
                    .map(Value::Str)
                    .map_err(|_| self.too_long(pipe, name))
            }
            "printf" => {
                let (format, rest) = self.format_and_operands(pipe, name, args)?;
                let rest: Vec<Value> = rest.iter().map(as_any).collect();
                gocompat::sprintf_limited(format, &rest, MAX_OUTPUT)
                    .map(Value::Str)
                    .map_err(|_| self.too_long(pipe, name))
            }
            "print" | "println" => {
                let args: Vec<Value> = args.iter().map(as_any).collect();
                let mut out = String::new();
                for (i, a) in args.iter().enumerate() {
                    // Sprint adds a space between operands when neither is a string;
                    // Sprintln always does.
                    let both_non_strings = i > 0
                        && !matches!(a, Value::Str(_))
                        && !matches!(args[i - 1], Value::Str(_));
                    if i > 0 && (name == "println" || both_non_strings) {
                        out.push(' ');
                    }
                    let text = match a {
                        Value::Nil => "<nil>".to_string(),
                        other => gocompat::sprint_value(other),
                    };
                    if out.len().saturating_add(text.len()) >= MAX_OUTPUT {
                        return Err(self.too_long(pipe, name));
                    }
                    out.push_str(&text);
                }
                if name == "println" {
                    out.push('\n');
                }
                Ok(Value::Str(out))
            }
            "len" => {
                want(1)?;
                match &args[0] {
                    Value::Str(s) => Ok(Value::Int(s.len() as i64)),
                    Value::Data(m) => Ok(Value::Int(m.len() as i64)),
                    other => Err(self.exec_error(
                        pipe,
                        format!(
                            "error calling len: len of type {}",
                            gocompat::type_name(other)
                        ),
                    )),
                }
            }
            "not" => {
                want(1)?;
                Ok(Value::Bool(!args[0].truth()))
            }
            "eq" | "ne" => {
                if args.len() < 2 {
                    return Err(self.exec_error(
                        pipe,
                        format!(
                            "wrong number of args for {name}: want at least 2 got {}",
                            args.len()
                        ),
                    ));
                }
                let first = &args[0];
                let mut any_equal = false;
                for other in &args[1..] {
                    let equal = match (first, other) {
                        // Go's eq: a missing value (invalid kind) equals only another
                        // missing value, and comparing it is not an error.
                        (Value::Missing, b) => *b == Value::Missing,
                        (_, Value::Missing) => false,
                        (Value::Str(a), Value::Str(b)) => a == b,
                        (Value::Int(a), Value::Int(b)) => a == b,
                        (Value::Float(a), Value::Float(b)) => a == b,
                        (Value::Bool(a), Value::Bool(b)) => a == b,
                        (Value::Nil, Value::Nil) => true,
                        _ => {
                            return Err(self.exec_error(
                                pipe,
                                format!("error calling {name}: incompatible types for comparison"),
                            ))
                        }
                    };
                    any_equal |= equal;
                    if name == "ne" {
                        break;
                    }
                }
                Ok(Value::Bool(if name == "eq" {
                    any_equal
                } else {
                    !any_equal
                }))
            }
            other => Err(self.exec_error(pipe, format!("function {other:?} not defined"))),
        }
    }
}

/// Renders a module template exactly as Lilypad does: every input is JSON-encoded
/// (`json.Marshal` of the string) and the template runs on that map, with `subst`.
pub fn render_module_template(
    name: &str,
    src: &str,
    inputs: &BTreeMap<String, String>,
) -> Result<String, TemplateError> {
    let template = Template::parse(name, src)?;
    let encoded = inputs
        .iter()
        .map(|(k, v)| (k.clone(), gocompat::json_marshal_string(v)))
        .collect();
    template.execute(&encoded)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn render(src: &str, pairs: &[(&str, &str)]) -> String {
        render_module_template("t", src, &inputs(pairs)).unwrap()
    }

    fn render_err(src: &str, pairs: &[(&str, &str)]) -> TemplateError {
        render_module_template("t", src, &inputs(pairs)).unwrap_err()
    }

    #[test]
    fn inputs_are_json_encoded_before_substitution() {
        assert_eq!(
            render(r#"{"P":[{{.Message}}]}"#, &[("Message", "moo")]),
            r#"{"P":["moo"]}"#
        );
        assert_eq!(
            render(
                "{{.Message}}",
                &[("Message", "say \"hi\" <now> & \\ later\n")]
            ),
            r#""say \"hi\" \u003cnow\u003e \u0026 \\ later\n""#
        );
    }

    #[test]
    fn missing_keys_render_as_go_renders_them() {
        assert_eq!(render("[{{.Nope}}]", &[]), "[<no value>]");
        assert_eq!(render("[{{.Nope.Deeper}}]", &[]), "[<no value>]");
        assert_eq!(
            render(r#"{{printf "%s|%v" .Nope .Nope}}"#, &[]),
            "%!s(<nil>)|<nil>"
        );
    }

    #[test]
    fn if_else_with_defaults() {
        let src = r#"[{{if .Message}}{{.Message}}{{else}}"default"{{end}}]"#;
        assert_eq!(render(src, &[]), r#"["default"]"#);
        assert_eq!(render(src, &[("Message", "hi")]), r#"["hi"]"#);
        // An empty input is `""` after JSON encoding: a non-empty string, so true (as in Lilypad).
        assert_eq!(render(src, &[("Message", "")]), r#"[""]"#);
        let chain = "{{if .A}}a{{else if .B}}b{{else if .C}}c{{else}}none{{end}}";
        assert_eq!(render(chain, &[("B", "x"), ("C", "y")]), "b");
        assert_eq!(render(chain, &[("C", "y")]), "c");
        assert_eq!(render(chain, &[]), "none");
        assert_eq!(
            render("{{if .A}}{{if .B}}ab{{end}}a{{end}}.", &[("A", "1")]),
            "a."
        );
    }

    #[test]
    fn with_rebinds_dot() {
        assert_eq!(
            render("{{with .A}}<{{.}}>{{else}}none{{end}}", &[("A", "x")]),
            r#"<"x">"#
        );
        assert_eq!(
            render(
                "{{with .A}}<{{.}}>{{else with .B}}b={{.}}{{end}}",
                &[("B", "y")]
            ),
            r#"b="y""#
        );
        let e = render_err("{{with .A}}{{.Field}}{{end}}", &[("A", "x")]);
        assert!(
            e.message
                .contains("can't evaluate field Field in type string"),
            "{e}"
        );
    }

    #[test]
    fn subst_is_printf_over_json_decoded_inputs() {
        assert_eq!(
            render(
                r#"{{ subst "PROMPT=%s seed=%s" .Prompt .Seed }}"#,
                &[("Prompt", "a \"cat\""), ("Seed", "7")]
            ),
            r#"PROMPT=a "cat" seed=7"#
        );
        // Lilypad's subst panics on an argument that is not a JSON string.
        let e = render_err(r#"{{ subst "%s" "raw" }}"#, &[]);
        assert!(e.message.contains("error calling subst"), "{e}");
        let e = render_err(r#"{{ subst "%s" .Missing }}"#, &[]);
        assert!(e.message.contains("invalid value; expected string"), "{e}");
        assert_eq!(
            render(r#"{{ subst "%s-%s" .A }}"#, &[("A", "x")]),
            "x-%!s(MISSING)"
        );
    }

    #[test]
    fn whitespace_trimming() {
        assert_eq!(render("a  \n\t{{- .A -}}\n  b", &[("A", "x")]), "a\"x\"b");
        assert_eq!(render("a {{- .A}} b", &[("A", "x")]), "a\"x\" b");
        assert_eq!(render("a {{.A -}} b", &[("A", "x")]), "a \"x\"b");
        // `{{-3}}` is the number -3, not a trim marker.
        assert_eq!(render("a {{-3}}", &[]), "a -3");
        assert_eq!(render("x {{- /* note */ -}} y", &[]), "xy");
    }

    #[test]
    fn comments_and_literals() {
        assert_eq!(render("a{{/* a comment\nover lines */}}b", &[]), "ab");
        assert_eq!(
            render(r#"{{"q\"\n"}}{{`raw\n`}}{{3}}{{1.5}}{{true}}"#, &[]),
            "q\"\nraw\\n31.5true"
        );
        assert_eq!(render("{{0x1F}} {{-0}}", &[]), "31 0");
    }

    #[test]
    fn pipelines_and_builtins() {
        assert_eq!(render(r#"{{.A | printf "%s!"}}"#, &[("A", "x")]), r#""x"!"#);
        assert_eq!(render(r#"{{printf "%s" (printf "%d" 4)}}"#, &[]), "4");
        assert_eq!(
            render(
                r#"{{len .A}} {{not .B}} {{and .A .B}} {{or .B "z"}}"#,
                &[("A", "xy")]
            ),
            "4 true <no value> z"
        );
        assert_eq!(
            render(
                r#"{{if eq .A "\"x\"" "y"}}eq{{end}}{{if ne 1 2}}ne{{end}}"#,
                &[("A", "x")]
            ),
            "eqne"
        );
        assert_eq!(
            render(r#"{{print 1 2 "a" "b" 3}}|{{println "a" 1}}"#, &[]),
            "1 2ab3|a 1\n"
        );
        assert_eq!(
            render("{{.}}", &[("B", "2"), ("A", "1")]),
            r#"map[A:"1" B:"2"]"#
        );
    }

    #[test]
    fn errors_name_the_construct_and_line() {
        let e = render_err("line 1\n{{range .A}}x{{end}}", &[]);
        assert_eq!(e.line, 2);
        assert!(e.message.contains("unsupported construct `range`"), "{e}");
        assert!(e.to_string().starts_with("template: t:2: "), "{e}");
        let e = render_err("a\nb\n{{$x := .A}}", &[]);
        assert_eq!(e.line, 3);
        assert!(e.message.contains("variables"), "{e}");
        let e = render_err("{{define \"x\"}}{{end}}", &[]);
        assert!(e.message.contains("`define`"), "{e}");
        let e = render_err("\n{{index .A 1}}", &[]);
        assert_eq!((e.line, e.message.contains("\"index\"")), (2, true), "{e}");
        let e = render_err("{{nosuch .A}}", &[]);
        assert!(e.message.contains("function \"nosuch\" not defined"), "{e}");
        let e = render_err("x\n{{if .A}}\nopen", &[]);
        assert_eq!(e.line, 2);
        assert!(e.message.contains("unexpected EOF"), "{e}");
        let e = render_err("{{end}}", &[]);
        assert!(e.message.contains("unexpected {{end}}"), "{e}");
        let e = render_err("{{.A", &[]);
        assert!(e.message.contains("unclosed action"), "{e}");
        let e = render_err("{{/* open", &[]);
        assert!(e.message.contains("unclosed comment"), "{e}");
        let e = render_err("{{.A 1}}", &[("A", "x")]);
        assert!(
            e.message.contains("can't give argument to non-function .A"),
            "{e}"
        );
        let e = render_err("{{}}", &[]);
        assert!(e.message.contains("missing value"), "{e}");
    }

    #[test]
    fn lines_are_counted_across_text_and_multiline_actions() {
        let e = render_err("a\n{{/* c\nc */}}\n{{ .A\n}}\n{{range}}", &[]);
        assert_eq!(e.line, 6, "{e}");
    }

    #[test]
    fn the_classic_cowsay_template_renders_byte_for_byte() {
        let src = r#"{"machine":{"gpu":0,"cpu":1000,"ram":100},"job":{"Spec":{"Docker":{"Entrypoint":["cowsay",{{ .Message }}]}}}}"#;
        assert_eq!(
            render(src, &[("Message", "Hello, world!")]),
            r#"{"machine":{"gpu":0,"cpu":1000,"ram":100},"job":{"Spec":{"Docker":{"Entrypoint":["cowsay","Hello, world!"]}}}}"#
        );
    }

    #[test]
    fn deep_nesting_is_an_error_with_a_line_not_a_stack_overflow() {
        let ok = format!(
            "{}x{}",
            "{{if 1}}".repeat(MAX_NESTING),
            "{{end}}".repeat(MAX_NESTING)
        );
        assert_eq!(render(&ok, &[]), "x");
        let deep = format!(
            "\n{}x{}",
            "{{with 1}}".repeat(MAX_NESTING + 1),
            "{{end}}".repeat(MAX_NESTING + 1)
        );
        let e = render_err(&deep, &[]);
        assert!(e.message.contains("max nesting depth exceeded"), "{e}");
        assert_eq!(e.line, 2);
        // A very deep one fails the same way, quickly.
        let e = render_err(&"{{if 1}}".repeat(1_000_000), &[]);
        assert!(e.message.contains("max nesting depth exceeded"), "{e}");
        let chain = format!(
            "{{{{if 0}}}}{}{{{{end}}}}",
            "{{else if 0}}".repeat(MAX_NESTING)
        );
        assert!(render_err(&chain, &[]).message.contains("max nesting"));
        let parens = format!(
            "{{{{print {}1{}}}}}",
            "(".repeat(MAX_NESTING),
            ")".repeat(MAX_NESTING)
        );
        assert_eq!(render(&parens, &[]), "1");
        let parens = format!(
            "a\n{{{{print {}1{}}}}}",
            "(".repeat(100_000),
            ")".repeat(100_000)
        );
        let e = render_err(&parens, &[]);
        assert!(e.message.contains("max expression depth exceeded"), "{e}");
        assert_eq!(e.line, 2);
        // Blocks and parentheses count together.
        let both = format!(
            "{}{{{{print {}1{}}}}}{}",
            "{{if 1}}".repeat(60),
            "(".repeat(60),
            ")".repeat(60),
            "{{end}}".repeat(60)
        );
        assert!(render_err(&both, &[]).message.contains("depth exceeded"));
    }

    #[test]
    fn output_and_work_are_bounded() {
        // Go's own width cap: the rest of the format is dropped, nothing allocated.
        assert_eq!(
            render(r#"{{printf "%999999999999d" 1}}"#, &[]),
            "%!(NOVERB)%!(EXTRA int=1)"
        );
        // A width Go accepts (ten million) but over detwasm's output limit.
        let e = render_err(r#"{{printf "%9999999d" 1}}"#, &[]);
        assert!(e.message.contains("exceed 4 MiB"), "{e}");
        let e = render_err(&r#"{{printf "%1000000d" 1}}"#.repeat(5), &[]);
        assert!(e.message.contains("exceed 4 MiB"), "{e}");
        // `with` feeding a result back: doubling per level stops at the limit.
        let doubling = format!(
            "{{{{with printf \"%1000000d\" 1}}}}{}{}{{{{end}}}}",
            r#"{{with printf "%s%s" . .}}"#.repeat(10),
            "{{end}}".repeat(10)
        );
        let e = render_err(&doubling, &[]);
        assert!(e.message.contains("exceed 4 MiB"), "{e}");
        // Many big strings written nowhere: the work budget.
        let e = render_err(&r#"{{if printf "%3000000d" 1}}{{end}}"#.repeat(100), &[]);
        assert!(e.message.contains("64 MiB"), "{e}");
        let e = render_err(r#"{{with printf "%3000000d" 1}}{{print . .}}{{end}}"#, &[]);
        assert!(e.message.contains("exceed 4 MiB"), "{e}");
        // Each `.` is a copy of a 4 MB string, charged: `eq` with 2,000 of them (8 GB
        // held at once, the process aborted) and `and` with 500,000 (a 1 MiB template,
        // minutes of copying) stop at the work budget, naming the line.
        let started = std::time::Instant::now();
        for (func, dots) in [("eq", 2000), ("and", 500_000)] {
            let template = format!(
                "\n{{{{with printf \"%4000000d\" 1}}}}{{{{if {func} .{}}}}}x{{{{end}}}}{{{{end}}}}",
                " .".repeat(dots)
            );
            assert!(template.len() <= MAX_TEMPLATE);
            let e = render_err(&template, &[]);
            assert!(e.message.contains("64 MiB"), "{e}");
            assert_eq!(e.line, 2, "{e}");
        }
        // Fields and literals are copies too.
        let fields = format!("{{{{if eq .A{}}}}}{{{{end}}}}", " .A".repeat(20));
        let big = "x".repeat(4_000_000);
        let e = render_err(&fields, &[("A", &big)]);
        assert!(e.message.contains("64 MiB"), "{e}");
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
        // Within the budget, nothing changes.
        assert_eq!(
            render(
                r#"{{with printf "%1000d" 1}}{{if eq . . .}}x{{end}}{{end}}"#,
                &[]
            ),
            "x"
        );
    }
}
