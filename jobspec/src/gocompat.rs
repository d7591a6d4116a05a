//! The parts of Go's `fmt` and `encoding/json` that module templates reach: `printf` (and
//! Lilypad's `subst`, which is `fmt.Sprintf` over JSON-decoded strings), the default
//! formatting of a value (`{{.Key}}`), and `json.Marshal` of a string (how Lilypad encodes
//! every input before it is substituted).
//!
//! Only the value kinds a template can hold are covered: strings, integers, floats,
//! booleans, the absent value of a missing map key, and the inputs map itself.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// A value a template holds during execution, and what the formatting here takes (its
/// truth and the rest of its meaning in a template are [`crate::gotemplate`]'s).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Go's invalid `reflect.Value`: the result of reading a key that is not in the map.
    Missing,
    /// The untyped `nil` (only as a `printf` argument).
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    /// The data the template runs on: the inputs, `map[string]string` in Lilypad.
    Data(BTreeMap<String, String>),
}

/// `json.Marshal(s)` for a Go string, byte for byte (Go 1.22 and later).
///
/// Go escapes more than most JSON encoders: `<`, `>` and `&` become `\u003c`, `\u003e`,
/// `\u0026` (HTML safety, on by default in `json.Marshal`), U+2028 and U+2029 are escaped,
/// and `\b`/`\f` use their short forms (since Go 1.22). Other control characters are
/// `\u00XX` with lowercase hex; DEL and every other character are written as they are.
pub fn json_marshal_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Go's name of a value's dynamic type, as `fmt` prints it in `%!v(TYPE=...)` diagnostics.
pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Str(_) => "string",
        Value::Int(_) => "int",
        Value::Float(_) => "float64",
        Value::Bool(_) => "bool",
        Value::Data(_) => "map[string]string",
        Value::Missing | Value::Nil => "<nil>",
    }
}

/// `fmt.Sprint(v)` for one value: what `{{.Key}}` writes.
///
/// A missing key (an invalid `reflect.Value` in Go) is written `<no value>`, exactly as
/// text/template does; a nil interface (only reachable through `printf`) is `<nil>`.
pub fn sprint_value(v: &Value) -> String {
    match v {
        Value::Missing => "<no value>".to_string(),
        Value::Nil => "<nil>".to_string(),
        Value::Str(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => format_float_g(*f),
        Value::Bool(b) => b.to_string(),
        Value::Data(map) => {
            let mut out = String::from("map[");
            for (i, (k, v)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                out.push_str(k);
                out.push(':');
                out.push_str(v);
            }
            out.push(']');
            out
        }
    }
}

/// Go's `%v` for a float64: `strconv.FormatFloat(f, 'g', -1, 64)` with fmt's rule that
/// the shortest form switches to an exponent at 21 digits, as `%v` does.
pub fn format_float_g(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    if f == 0.0 {
        return if f.is_sign_negative() {
            "-0".into()
        } else {
            "0".into()
        };
    }
    // Rust's `{:e}` gives the shortest round-tripping digits, as strconv does with -1.
    let e = format!("{f:e}");
    let (mantissa, exp) = e.split_once('e').expect("`{:e}` always has an exponent");
    let exp: i32 = exp.parse().expect("exponent is an integer");
    let negative = mantissa.starts_with('-');
    let digits: String = mantissa.chars().filter(|c| c.is_ascii_digit()).collect();
    // strconv: "if precision was the shortest possible, use precision 6 for this decision".
    let eprec = 6;
    let mut out = String::new();
    if negative {
        out.push('-');
    }
    if exp < -4 || exp >= eprec {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let sign = if exp < 0 { '-' } else { '+' };
        let _ = write!(out, "e{sign}{:02}", exp.abs());
    } else if exp < 0 {
        out.push_str("0.");
        for _ in 0..(-exp - 1) {
            out.push('0');
        }
        out.push_str(&digits);
    } else {
        let int_len = exp as usize + 1;
        if digits.len() <= int_len {
            out.push_str(&digits);
            for _ in digits.len()..int_len {
                out.push('0');
            }
        } else {
            out.push_str(&digits[..int_len]);
            out.push('.');
            out.push_str(&digits[int_len..]);
        }
    }
    out
}

/// `strconv.Quote(s)`: a double-quoted Go string literal.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() => {
                let cp = c as u32;
                if cp < 0x10000 {
                    let _ = write!(out, "\\u{cp:04x}");
                } else {
                    let _ = write!(out, "\\U{cp:08x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// One parsed `%` directive.
#[derive(Default)]
struct Directive {
    minus: bool,
    plus: bool,
    zero: bool,
    width: Option<usize>,
    precision: Option<usize>,
}

impl Directive {
    fn pad(&self, body: String) -> String {
        let Some(width) = self.width else { return body };
        let len = body.chars().count();
        if len >= width {
            return body;
        }
        let fill = width - len;
        if self.minus {
            body + &" ".repeat(fill)
        } else if self.zero {
            // Zero padding goes after a sign, as in Go.
            let (sign, rest) = match body.strip_prefix('-') {
                Some(rest) => ("-", rest.to_string()),
                None => match body.strip_prefix('+') {
                    Some(rest) => ("+", rest.to_string()),
                    None => ("", body.clone()),
                },
            };
            format!("{sign}{}{rest}", "0".repeat(fill))
        } else {
            " ".repeat(fill) + &body
        }
    }
}

/// Go's `tooLarge` (fmt/print.go): a width or precision whose magnitude is over 1e6 is
/// not used. Go checks it before each digit it reads, so a literal width can still reach
/// 10_000_009 (`%9999999d`, 7 digits) while an eighth digit gives `%!(NOVERB)`; a `*`
/// argument over 1e6 gives `%!(BADWIDTH)` / `%!(BADPREC)`. This is what bounds the
/// output of one verb, here as in Go.
const TOO_LARGE: i64 = 1_000_000;

fn too_large(x: i64) -> bool {
    !(-TOO_LARGE..=TOO_LARGE).contains(&x)
}

/// Go's `parsenum`: the number at `b[start..]`, whether there was one, and where parsing
/// stopped; a number that gets too large consumes the rest of the format, as in Go.
fn parse_num(b: &[u8], start: usize) -> (i64, bool, usize) {
    let (mut num, mut present, mut i) = (0i64, false, start);
    while i < b.len() && b[i].is_ascii_digit() {
        if too_large(num) {
            return (0, false, b.len());
        }
        num = num * 10 + i64::from(b[i] - b'0');
        present = true;
        i += 1;
    }
    (num, present, i)
}

/// Go's `intFromArg`: the next argument as a `*` width or precision (an `int` not too
/// large), consuming it if there is one.
fn int_from_arg(args: &[Value], arg_num: &mut usize) -> (i64, bool) {
    let Some(arg) = args.get(*arg_num) else {
        return (0, false);
    };
    *arg_num += 1;
    match arg {
        Value::Int(n) if !too_large(*n) => (*n, true),
        _ => (0, false),
    }
}

/// The rendered text would be longer than the limit given to [`sprintf_limited`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLong {
    pub limit: usize,
}

/// `fmt.Sprintf(format, args...)` for the verbs a template is likely to use: `%s %v %q
/// %d %t %x %X %f %e %g %c %%`, with flags `-+0`, width and precision (literal or `*`).
/// Everything Go reports inline (a wrong type, a missing or an extra argument, a bad
/// verb, a width or precision too large) is reported inline here too, in Go's words:
/// `%!d(string=moo)`, `%!s(MISSING)`, `%!(EXTRA string=x)`, `%!z(int=3)`,
/// `%!(NOVERB)`, `%!(BADWIDTH)`, `%!(BADPREC)`.
pub fn sprintf(format: &str, args: &[Value]) -> String {
    // Without a limit the only error cannot happen; the empty string is never returned.
    sprintf_limited(format, args, usize::MAX).unwrap_or_default()
}

/// [`sprintf`] that stops, before allocating, as soon as the text would exceed `limit`
/// bytes (Go has no such limit: the template renderer uses it to bound its output).
pub fn sprintf_limited(format: &str, args: &[Value], limit: usize) -> Result<String, TooLong> {
    let b = format.as_bytes();
    let end = b.len();
    let mut out = String::new();
    let push = |out: &mut String, s: &str| {
        if out.len().saturating_add(s.len()) > limit {
            return Err(TooLong { limit });
        }
        out.push_str(s);
        Ok(())
    };
    let mut arg_num = 0usize;
    let mut i = 0usize;
    while i < end {
        let last = i;
        while i < end && b[i] != b'%' {
            i += 1;
        }
        push(&mut out, &format[last..i])?;
        if i >= end {
            break;
        }
        i += 1;
        let mut d = Directive::default();
        while i < end {
            match b[i] {
                b'-' => {
                    d.minus = true;
                    d.zero = false;
                }
                b'+' => d.plus = true,
                b'0' => d.zero = !d.minus,
                b' ' | b'#' => {}
                _ => break,
            }
            i += 1;
        }
        if i < end && b[i] == b'*' {
            i += 1;
            let (w, ok) = int_from_arg(args, &mut arg_num);
            if !ok {
                push(&mut out, "%!(BADWIDTH)")?;
            }
            if w < 0 {
                d.minus = true;
                d.zero = false;
            }
            d.width = ok.then_some(w.unsigned_abs() as usize);
        } else {
            let (w, present, next) = parse_num(b, i);
            i = next;
            d.width = present.then_some(w as usize);
        }
        // As in Go, a `.` is a precision only when something follows it.
        if i + 1 < end && b[i] == b'.' {
            i += 1;
            if b[i] == b'*' {
                i += 1;
                let (p, ok) = int_from_arg(args, &mut arg_num);
                let ok = ok && p >= 0;
                if !ok {
                    push(&mut out, "%!(BADPREC)")?;
                }
                d.precision = ok.then_some(p as usize);
            } else {
                let (p, present, next) = parse_num(b, i);
                i = next;
                d.precision = Some(if present { p as usize } else { 0 });
            }
        }
        // `i` is at a character boundary: only ASCII bytes were skipped.
        let Some(verb) = format.get(i..).and_then(|rest| rest.chars().next()) else {
            push(&mut out, "%!(NOVERB)")?;
            break;
        };
        i += verb.len_utf8();
        if verb == '%' {
            push(&mut out, "%")?;
            continue;
        }
        let Some(arg) = args.get(arg_num) else {
            push(&mut out, &format!("%!{verb}(MISSING)"))?;
            continue;
        };
        arg_num += 1;
        if verb == 'v' {
            // `%+v` is Go's struct-field syntax, not a sign (Go moves plus to plusV).
            d.plus = false;
        }
        // Padding and float digits are at least width / precision bytes: refuse them
        // before they are allocated.
        let room = limit.saturating_sub(out.len());
        if d.width.unwrap_or(0) > room
            || (matches!(verb, 'f' | 'e') && d.precision.unwrap_or(0) > room)
        {
            return Err(TooLong { limit });
        }
        push(&mut out, &format_one(verb, &d, arg))?;
    }
    if arg_num < args.len() {
        let mut extra = String::from("%!(EXTRA ");
        for (i, arg) in args[arg_num..].iter().enumerate() {
            if i > 0 {
                extra.push_str(", ");
            }
            match arg {
                Value::Missing | Value::Nil => extra.push_str("<nil>"),
                other => {
                    let _ = write!(extra, "{}={}", type_name(other), sprint_value(other));
                }
            }
            if extra.len() > limit {
                return Err(TooLong { limit });
            }
        }
        extra.push(')');
        push(&mut out, &extra)?;
    }
    Ok(out)
}

/// Go's `badVerb`: the value is printed with `%v` under the directive's flags, width and
/// precision (`%5z` of 3 is `%!z(int=    3)`).
fn bad_verb(verb: char, d: &Directive, arg: &Value) -> String {
    match arg {
        Value::Missing | Value::Nil => format!("%!{verb}(<nil>)"),
        other => {
            let value = format_body('v', d, other)
                .map(|body| d.pad(body))
                .unwrap_or_else(|| sprint_value(other));
            format!("%!{verb}({}={value})", type_name(other))
        }
    }
}

fn truncate(s: &str, precision: Option<usize>) -> String {
    match precision {
        Some(p) => s.chars().take(p).collect(),
        None => s.to_string(),
    }
}

fn format_one(verb: char, d: &Directive, arg: &Value) -> String {
    match format_body(verb, d, arg) {
        Some(body) => d.pad(body),
        None => bad_verb(verb, d, arg),
    }
}

/// The text of one verb before padding, or `None` for a bad verb.
fn format_body(verb: char, d: &Directive, arg: &Value) -> Option<String> {
    let body = match (verb, arg) {
        ('v', Value::Missing | Value::Nil) => "<nil>".to_string(),
        (_, Value::Missing | Value::Nil) => return None,
        ('s' | 'v', Value::Str(s)) => truncate(s, d.precision),
        ('q', Value::Str(s)) => go_quote(&truncate(s, d.precision)),
        ('x', Value::Str(s)) => s.bytes().map(|b| format!("{b:02x}")).collect(),
        ('X', Value::Str(s)) => s.bytes().map(|b| format!("{b:02X}")).collect(),
        ('v' | 'd', Value::Int(i)) => {
            if d.plus && *i >= 0 {
                format!("+{i}")
            } else {
                i.to_string()
            }
        }
        ('x', Value::Int(i)) => {
            if *i < 0 {
                format!("-{:x}", i.unsigned_abs())
            } else {
                format!("{i:x}")
            }
        }
        ('X', Value::Int(i)) => {
            if *i < 0 {
                format!("-{:X}", i.unsigned_abs())
            } else {
                format!("{i:X}")
            }
        }
        ('c', Value::Int(i)) => u32::try_from(*i)
            .ok()
            .and_then(char::from_u32)
            .unwrap_or('\u{fffd}')
            .to_string(),
        ('v' | 'g', Value::Float(f)) => match d.precision {
            None => format_float_g(*f),
            Some(_) => return None,
        },
        ('f', Value::Float(f)) => format!("{:.*}", d.precision.unwrap_or(6), f),
        ('e', Value::Float(f)) => {
            let s = format!("{:.*e}", d.precision.unwrap_or(6), f);
            // Go writes at least two exponent digits with a sign: 1.5e+00.
            let (m, e) = s.split_once('e').expect("`{:e}` has an exponent");
            let e: i32 = e.parse().expect("exponent is an integer");
            format!("{m}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs())
        }
        ('v' | 't', Value::Bool(b)) => b.to_string(),
        ('v' | 's', Value::Data(_)) => sprint_value(arg),
        _ => return None,
    };
    Some(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Value {
        Value::Str(v.to_string())
    }

    #[test]
    fn json_marshal_matches_go() {
        assert_eq!(json_marshal_string("moo"), r#""moo""#);
        assert_eq!(json_marshal_string(r#"a "b" \c"#), r#""a \"b\" \\c""#);
        assert_eq!(
            json_marshal_string("<a&b>"),
            r#""\u003ca\u0026b\u003e""#,
            "json.Marshal escapes HTML characters by default"
        );
        assert_eq!(
            json_marshal_string("x\ny\tz\r\u{8}\u{c}\u{1}\u{7f}é\u{2028}"),
            "\"x\\ny\\tz\\r\\b\\f\\u0001\u{7f}é\\u2028\""
        );
        assert_eq!(json_marshal_string(""), r#""""#);
    }

    #[test]
    fn sprintf_verbs_and_diagnostics() {
        assert_eq!(sprintf("Hello, %s!", &[s("hiro")]), "Hello, hiro!");
        assert_eq!(
            sprintf(
                "%v|%q|%5s|%-4s|%.2s",
                &[s("a"), s("b\"c"), s("d"), s("e"), s("xyz")]
            ),
            "a|\"b\\\"c\"|    d|e   |xy"
        );
        assert_eq!(
            sprintf(
                "%d %03d %x %t",
                &[
                    Value::Int(7),
                    Value::Int(5),
                    Value::Int(255),
                    Value::Bool(true)
                ]
            ),
            "7 005 ff true"
        );
        assert_eq!(sprintf("%d", &[s("moo")]), "%!d(string=moo)");
        assert_eq!(sprintf("%s %s", &[s("a")]), "a %!s(MISSING)");
        assert_eq!(
            sprintf("%s", &[s("a"), s("b"), Value::Int(3)]),
            "a%!(EXTRA string=b, int=3)"
        );
        assert_eq!(sprintf("%s", &[Value::Missing]), "%!s(<nil>)");
        assert_eq!(sprintf("%v", &[Value::Missing]), "<nil>");
        assert_eq!(sprintf("100%%", &[]), "100%");
        assert_eq!(sprintf("%", &[]), "%!(NOVERB)");
        assert_eq!(sprintf("%z", &[Value::Int(3)]), "%!z(int=3)");
        assert_eq!(
            sprintf("%.3f %e", &[Value::Float(1.5), Value::Float(1500.0)]),
            "1.500 1.500000e+03"
        );
    }

    #[test]
    fn floats_print_as_go_prints_them() {
        assert_eq!(format_float_g(3.5), "3.5");
        assert_eq!(format_float_g(1e6), "1e+06");
        assert_eq!(format_float_g(123456.0), "123456");
        assert_eq!(format_float_g(1e21), "1e+21");
        assert_eq!(format_float_g(0.0001), "0.0001");
        assert_eq!(format_float_g(0.00001), "1e-05");
        assert_eq!(format_float_g(-2.0), "-2");
    }

    #[test]
    fn quote_matches_strconv() {
        assert_eq!(go_quote("a\u{0}b\u{7f}é"), "\"a\\x00b\\x7fé\"");
    }

    #[test]
    fn widths_and_precisions_are_capped_as_go_caps_them() {
        let one = [Value::Int(1)];
        // An eighth digit: Go's parsenum gives up and the rest of the format is gone.
        assert_eq!(
            sprintf("%999999999999d|after", &one),
            "%!(NOVERB)%!(EXTRA int=1)"
        );
        assert_eq!(
            sprintf("%.99999999s", &[s("x")]),
            "%!(NOVERB)%!(EXTRA string=x)"
        );
        // Seven digits are still a width (Go checks before each digit).
        assert_eq!(sprintf("%9999999d", &one).len(), 9_999_999);
        assert_eq!(
            sprintf("%*d", &[Value::Int(1_000_001), Value::Int(1)]),
            "%!(BADWIDTH)1"
        );
        assert_eq!(sprintf("%*d|", &[Value::Int(-3), Value::Int(7)]), "7  |");
        assert_eq!(sprintf("%*d", &[s("3"), Value::Int(7)]), "%!(BADWIDTH)7");
        assert_eq!(
            sprintf("%.*s", &[Value::Int(-1), s("abc")]),
            "%!(BADPREC)abc"
        );
        assert_eq!(sprintf("%.*s", &[Value::Int(2), s("abc")]), "ab");
        assert_eq!(sprintf("%*d", &[]), "%!(BADWIDTH)%!d(MISSING)");
        // A `.` with nothing after it is the verb.
        assert_eq!(sprintf("%5.", &one), "%!.(int=    1)");
        assert_eq!(
            sprintf("%-4z|%.2z", &[Value::Int(3), s("abc")]),
            "%!z(int=3   )|%!z(string=ab)"
        );
        assert_eq!(sprintf("%+v %+d", &[Value::Int(1), Value::Int(1)]), "1 +1");
    }

    #[test]
    fn a_limited_sprintf_stops_before_allocating() {
        let one = [Value::Int(1)];
        assert_eq!(
            sprintf_limited("%9999999d", &one, 1 << 20),
            Err(TooLong { limit: 1 << 20 })
        );
        assert!(sprintf_limited("%.9999999f", &[Value::Float(1.0)], 1000).is_err());
        assert!(sprintf_limited("%s%s", &[s("abc"), s("def")], 5).is_err());
        assert_eq!(
            sprintf_limited("%s%s", &[s("abc"), s("def")], 6).as_deref(),
            Ok("abcdef")
        );
        assert!(sprintf_limited("%s", &[s("a"), s(&"x".repeat(100))], 50).is_err());
    }
}
