//! cowsay for detwasm: the classic first Lilypad module, as a WASI program.
//!
//! Usage: `cowsay [MESSAGE...]` — the words are joined with spaces, wrapped at 40 columns
//! as the original `cowsay` does, and the cow is written to stdout and, when `/outputs`
//! is mounted, to `/outputs/cowsay.txt`.

use std::io::Write;

/// The original's default wrap width (`cowsay -W 40`).
const WRAP: usize = 40;

const COW: &str = r"        \   ^__^
         \  (oo)\_______
            (__)\       )\/\
                ||----w |
                ||     ||
";

/// Greedy word wrap at `width` columns; words longer than a line are split.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    for paragraph in text.split('\n') {
        let mut line = String::new();
        for word in paragraph.split_whitespace() {
            let mut word: Vec<char> = word.chars().collect();
            while word.len() > width {
                if !line.is_empty() {
                    lines.push(std::mem::take(&mut line));
                }
                lines.push(word.drain(..width).collect());
            }
            let word: String = word.into_iter().collect();
            let needed = if line.is_empty() { 0 } else { 1 } + word.chars().count();
            if line.chars().count() + needed > width && !line.is_empty() {
                lines.push(std::mem::take(&mut line));
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(&word);
        }
        lines.push(line);
    }
    lines
}

fn cowsay(message: &str) -> String {
    let lines = wrap(message, WRAP);
    let width = lines.iter().map(|l| l.chars().count()).max().unwrap_or(0);
    let mut out = String::new();
    out.push_str(&format!(" {}\n", "_".repeat(width + 2)));
    for (i, line) in lines.iter().enumerate() {
        let (open, close) = match (lines.len(), i) {
            (1, _) => ('<', '>'),
            (_, 0) => ('/', '\\'),
            (n, i) if i == n - 1 => ('\\', '/'),
            _ => ('|', '|'),
        };
        let pad = width - line.chars().count();
        out.push_str(&format!("{open} {line}{} {close}\n", " ".repeat(pad)));
    }
    out.push_str(&format!(" {}\n", "-".repeat(width + 2)));
    out.push_str(COW);
    out
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let message = if args.is_empty() {
        "Hello, Lilypad!".to_string()
    } else {
        args.join(" ")
    };
    let cow = cowsay(&message);
    std::io::stdout()
        .write_all(cow.as_bytes())
        .expect("write stdout");
    if std::path::Path::new("/outputs").is_dir() {
        std::fs::write("/outputs/cowsay.txt", &cow).expect("write /outputs/cowsay.txt");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line() {
        assert_eq!(cowsay("moo"), " _____\n< moo >\n -----\n".to_string() + COW);
    }

    #[test]
    fn several_lines() {
        let text =
            cowsay("the quick brown fox jumps over the lazy dog and keeps on running far away");
        assert!(text.starts_with(" ___"));
        assert!(
            text.contains("\n/ the quick brown fox jumps over the lazy \\\n"),
            "{text}"
        );
        assert!(text.contains("\n\\ "), "{text}");
    }
}
