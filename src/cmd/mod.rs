pub mod batch;
pub mod cache;
pub mod fetch;
pub mod fuzz;
pub mod hash;
pub mod module;
pub mod resume;
pub mod run;
pub mod unpack;
pub mod verify;

/// The most bytes of one message shown on the terminal ([`shown`]).
pub const MAX_SHOWN: usize = 4096;

/// Text that may come from untrusted parties (file names in CARs and results folders,
/// lines of a provider's or a guest's files, job files, servers' answers), as the
/// terminal is shown it: control characters other than newline and tab as `?`, at most
/// [`MAX_SHOWN`] bytes with a note of what was left out. Found by review: a CAR's file
/// name of escape sequences and a megabyte reached the terminal whole in an error, as
/// did a job file's field. Rejected: filtering at each source (every message that quotes
/// a name or a line would need it, and one missed is the hole); the guest's own output,
/// shown live or as the end of its stderr, is left as it is, as `wasmtime run` shows it.
pub fn shown(text: &str) -> String {
    let mut out: String = text
        .chars()
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                '?'
            } else {
                c
            }
        })
        .collect();
    if out.len() > MAX_SHOWN {
        let mut cut = MAX_SHOWN;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        let left = out.len() - cut;
        out.truncate(cut);
        out.push_str(&format!("… ({left} more bytes not shown)"));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn untrusted_text_is_shown_without_control_characters_and_cut() {
        assert_eq!(super::shown("a\x1b[2Jb\u{9b}c\nd\te"), "a?[2Jb?c\nd\te");
        let long = format!("é{}", "x".repeat(10_000));
        let s = super::shown(&long);
        assert!(s.len() < super::MAX_SHOWN + 64, "{}", s.len());
        assert!(s.ends_with("more bytes not shown)"), "{s}");
    }
}
