//! The parts of Go's `fmt` and `encoding/json` that module templates reach: `printf` (and
//! Lilypad's `subst`, which is `fmt.Sprintf` over JSON-decoded strings), the default
//! formatting of a value (`{{.Key}}`), and `json.Marshal` of a string (how Lilypad encodes
//! every input before it is substituted).
//!
//! Only the value kinds a template can hold are covered: strings, integers, floats,
//! booleans, the absent value of a missing map key, and the inputs map itself.

use std::fmt::Write as _;

use super::template::Value;

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

/// `fmt.Sprintf(format, args...)` for the verbs a template is likely to use: `%s %v %q
/// %d %t %x %X %f %e %g %c %%`, with flags `-+0`, width and precision. Everything Go
/// reports inline (a wrong type, a missing or an extra argument, a bad verb) is reported
/// inline here too, in Go's words: `%!d(string=moo)`, `%!s(MISSING)`,
/// `%!(EXTRA string=x)`, `%!z(int=3)`, `%!(NOVERB)`.
pub fn sprintf(format: &str, args: &[Value]) -> String {
    let mut out = String::new();
    let mut next_arg = 0usize;
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut d = Directive::default();
        while let Some(&f) = chars.peek() {
            match f {
                '-' => d.minus = true,
                '+' => d.plus = true,
                '0' => d.zero = !d.minus,
                ' ' | '#' => {}
                _ => break,
            }
            chars.next();
        }
        let mut width = String::new();
        while let Some(&w) = chars.peek().filter(|w| w.is_ascii_digit()) {
            width.push(w);
            chars.next();
        }
        if !width.is_empty() {
            d.width = width.parse().ok();
        }
        if chars.peek() == Some(&'.') {
            chars.next();
            let mut prec = String::new();
            while let Some(&p) = chars.peek().filter(|p| p.is_ascii_digit()) {
                prec.push(p);
                chars.next();
            }
            d.precision = Some(prec.parse().unwrap_or(0));
        }
        let Some(verb) = chars.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(arg) = args.get(next_arg) else {
            let _ = write!(out, "%!{verb}(MISSING)");
            continue;
        };
        next_arg += 1;
        out.push_str(&format_one(verb, &d, arg));
    }
    if next_arg < args.len() {
        out.push_str("%!(EXTRA ");
        for (i, arg) in args[next_arg..].iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            match arg {
                Value::Missing | Value::Nil => out.push_str("<nil>"),
                other => {
                    let _ = write!(out, "{}={}", type_name(other), sprint_value(other));
                }
            }
        }
        out.push(')');
    }
    out
}

fn bad_verb(verb: char, arg: &Value) -> String {
    match arg {
        Value::Missing | Value::Nil => format!("%!{verb}(<nil>)"),
        other => format!("%!{verb}({}={})", type_name(other), sprint_value(other)),
    }
}

fn truncate(s: &str, precision: Option<usize>) -> String {
    match precision {
        Some(p) => s.chars().take(p).collect(),
        None => s.to_string(),
    }
}

fn format_one(verb: char, d: &Directive, arg: &Value) -> String {
    let body = match (verb, arg) {
        ('v', Value::Missing | Value::Nil) => "<nil>".to_string(),
        (_, Value::Missing | Value::Nil) => return bad_verb(verb, arg),
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
            Some(_) => return bad_verb(verb, arg),
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
        _ => return bad_verb(verb, arg),
    };
    d.pad(body)
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
}
