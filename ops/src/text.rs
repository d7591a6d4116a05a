//! Text from untrusted parties (file names in CARs and results folders, lines of a
//! provider's or a guest's files, job files, templates, receipts, snapshots, servers'
//! answers) made fit for an operator's terminal, and JSON made so too.

/// The most bytes of one message shown ([`shown`]).
pub const MAX_SHOWN: usize = 4096;

/// `text` as the terminal is shown it: control characters other than newline and tab
/// (C0, DEL and C1) as `?`, and at most [`MAX_SHOWN`] bytes, its start and its end (where
/// an error's cause is) with what was left out between them said. Found by review: a
/// CAR's file name of escape sequences and a megabyte reached the terminal whole in an
/// error, as did a job file's field, a receipt's CID in `verify`'s reasons and a
/// template's field in `module check`. Applied where messages are printed, by the CLI,
/// `batch` and the Python package. Rejected: filtering at each source (every message
/// that quotes a name or a line would need it, and one missed is the hole); cutting at
/// the end only (a long quoted value hid the reason it was refused). The guest's own
/// stdout and stderr, shown live or as the end of its stderr, are left as written, as
/// `wasmtime run` shows them.
pub fn shown(text: &str) -> String {
    let clean: String = text
        .chars()
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                '?'
            } else {
                c
            }
        })
        .collect();
    if clean.len() <= MAX_SHOWN {
        return clean;
    }
    let head = floor(&clean, MAX_SHOWN / 2);
    let tail = ceil(&clean, clean.len() - MAX_SHOWN / 4);
    format!(
        "{} … ({} bytes not shown) … {}",
        &clean[..head],
        tail - head,
        &clean[tail..]
    )
}

/// JSON text (`serde_json`'s) with DEL and the C1 controls escaped as `\u00XX` too:
/// `serde_json` escapes only U+0000–U+001F, and a terminal may act on U+009B (found by
/// review: `batch`'s error lines passed them on). The same JSON value.
pub fn json_safe(json: String) -> String {
    if !json.chars().any(|c| ('\u{7f}'..='\u{9f}').contains(&c)) {
        return json;
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if ('\u{7f}'..='\u{9f}').contains(&c) {
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

fn floor(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn ceil(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untrusted_text_is_shown_without_control_characters_start_and_end() {
        assert_eq!(shown("a\x1b[2Jb\u{9b}c\u{7f}\nd\te"), "a?[2Jb?c?\nd\te");
        let long = format!("é{}the cause", "x".repeat(10_000));
        let s = shown(&long);
        assert!(s.len() < MAX_SHOWN + 64, "{}", s.len());
        assert!(s.starts_with("éxxx") && s.ends_with("xxxthe cause"), "{s}");
        assert!(s.contains("bytes not shown"));
        for n in 4090..4110 {
            let _ = shown(&"é".repeat(n)); // never a cut inside a character
        }
    }

    #[test]
    fn json_escapes_del_and_c1_and_stays_the_same_value() {
        let v = serde_json::json!({"e": "a\u{9b}2J\u{7f}b\u{1b}"});
        let text = json_safe(serde_json::to_string(&v).unwrap());
        assert!(!text.contains('\u{9b}') && !text.contains('\u{7f}') && !text.contains('\u{1b}'));
        assert_eq!(serde_json::from_str::<serde_json::Value>(&text).unwrap(), v);
    }
}
