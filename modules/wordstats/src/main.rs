//! wordstats: a data job over `/inputs`.
//!
//! Walks the input tree in the order the directory listing gives (detwasm sorts listings
//! by name bytes, so the walk is the same on every host), and writes
//! `/outputs/wordstats.json`:
//! - per text file: bytes, lines, words;
//! - for the whole tree: totals, distinct words and the most frequent words;
//! - per CSV file (`.csv`): rows and, for each column, how many values are numeric and
//!   their min / max / mean.
//!
//! Usage: `wordstats [--top N] [DIR]` (defaults: 20, `/inputs`). A missing or empty
//! input tree is not an error: the statistics are simply empty.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::Path;

#[derive(Default)]
struct FileStats {
    path: String,
    bytes: u64,
    lines: u64,
    words: u64,
}

#[derive(Default)]
struct Column {
    name: String,
    values: u64,
    numeric: u64,
    sum: f64,
    min: f64,
    max: f64,
}

struct CsvStats {
    path: String,
    rows: u64,
    columns: Vec<Column>,
}

#[derive(Default)]
struct Stats {
    files: Vec<FileStats>,
    csv: Vec<CsvStats>,
    words: BTreeMap<String, u64>,
    skipped: Vec<String>,
}

fn walk(dir: &Path, rel: &str, stats: &mut Stats) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    // Deliberately no sort here: the listing order is the runtime's to make stable.
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let rel_path = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        let path = entry.path();
        let Ok(file_type) = entry.file_type() else {
            continue;
        };
        if file_type.is_dir() {
            walk(&path, &rel_path, stats);
        } else if file_type.is_file() {
            match fs::read(&path) {
                Ok(bytes) => add_file(&rel_path, &bytes, stats),
                Err(_) => stats.skipped.push(rel_path),
            }
        }
    }
}

fn add_file(rel_path: &str, bytes: &[u8], stats: &mut Stats) {
    let Ok(text) = std::str::from_utf8(bytes) else {
        stats.skipped.push(rel_path.to_string());
        return;
    };
    let mut words = 0;
    for word in text
        .split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .map(|w| w.trim_matches('\''))
        .filter(|w| w.chars().any(char::is_alphabetic))
    {
        words += 1;
        *stats.words.entry(word.to_lowercase()).or_default() += 1;
    }
    stats.files.push(FileStats {
        path: rel_path.to_string(),
        bytes: bytes.len() as u64,
        lines: text.lines().count() as u64,
        words,
    });
    if rel_path.to_ascii_lowercase().ends_with(".csv") {
        stats.csv.push(csv_stats(rel_path, text));
    }
}

/// Splits one CSV line, honouring double-quoted fields ("" is a quote inside one).
fn split_csv(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(std::mem::take(&mut field)),
            c => field.push(c),
        }
    }
    fields.push(field);
    fields
}

fn csv_stats(path: &str, text: &str) -> CsvStats {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header = lines.next().map(split_csv).unwrap_or_default();
    let mut columns: Vec<Column> = header
        .into_iter()
        .map(|name| Column {
            name: name.trim().to_string(),
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            ..Column::default()
        })
        .collect();
    let mut rows = 0;
    for line in lines {
        rows += 1;
        for (i, value) in split_csv(line).into_iter().enumerate() {
            let Some(col) = columns.get_mut(i) else { break };
            col.values += 1;
            if let Ok(v) = value.trim().parse::<f64>() {
                if v.is_finite() {
                    col.numeric += 1;
                    col.sum += v;
                    col.min = col.min.min(v);
                    col.max = col.max.max(v);
                }
            }
        }
    }
    CsvStats {
        path: path.to_string(),
        rows,
        columns,
    }
}

fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Numbers with at most 6 decimals, trailing zeros removed: stable and readable.
fn json_num(v: f64) -> String {
    let s = format!("{v:.6}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.to_string()
    }
}

fn report(stats: &Stats, top: usize) -> String {
    let mut o = String::from("{\n  \"files\": [");
    for (i, f) in stats.files.iter().enumerate() {
        let sep = if i == 0 { "" } else { "," };
        let _ = write!(
            o,
            "{sep}\n    {{\"path\": {}, \"bytes\": {}, \"lines\": {}, \"words\": {}}}",
            json_str(&f.path),
            f.bytes,
            f.lines,
            f.words
        );
    }
    o.push_str(if stats.files.is_empty() {
        "],\n"
    } else {
        "\n  ],\n"
    });
    let total_words: u64 = stats.words.values().sum();
    let _ = writeln!(
        o,
        "  \"totals\": {{\"files\": {}, \"bytes\": {}, \"lines\": {}, \"words\": {}, \"distinct_words\": {}}},",
        stats.files.len(),
        stats.files.iter().map(|f| f.bytes).sum::<u64>(),
        stats.files.iter().map(|f| f.lines).sum::<u64>(),
        total_words,
        stats.words.len()
    );
    let mut ranked: Vec<(&String, &u64)> = stats.words.iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    o.push_str("  \"top_words\": [");
    for (i, (w, n)) in ranked.iter().take(top).enumerate() {
        let sep = if i == 0 { "" } else { ", " };
        let _ = write!(o, "{sep}[{}, {n}]", json_str(w));
    }
    o.push_str("],\n  \"csv\": [");
    for (i, c) in stats.csv.iter().enumerate() {
        let sep = if i == 0 { "" } else { "," };
        let _ = write!(
            o,
            "{sep}\n    {{\"path\": {}, \"rows\": {}, \"columns\": [",
            json_str(&c.path),
            c.rows
        );
        for (j, col) in c.columns.iter().enumerate() {
            let sep = if j == 0 { "" } else { "," };
            let _ = write!(
                o,
                "{sep}\n      {{\"name\": {}, \"values\": {}, \"numeric\": {}",
                json_str(&col.name),
                col.values,
                col.numeric
            );
            if col.numeric > 0 {
                let _ = write!(
                    o,
                    ", \"min\": {}, \"max\": {}, \"mean\": {}",
                    json_num(col.min),
                    json_num(col.max),
                    json_num(col.sum / col.numeric as f64)
                );
            }
            o.push('}');
        }
        o.push_str(if c.columns.is_empty() {
            "]}"
        } else {
            "\n    ]}"
        });
    }
    o.push_str(if stats.csv.is_empty() {
        "],\n"
    } else {
        "\n  ],\n"
    });
    o.push_str("  \"skipped\": [");
    for (i, s) in stats.skipped.iter().enumerate() {
        let sep = if i == 0 { "" } else { ", " };
        let _ = write!(o, "{sep}{}", json_str(s));
    }
    o.push_str("]\n}\n");
    o
}

fn main() {
    let mut top = 20;
    let mut dir = "/inputs".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--top" {
            top = args.next().and_then(|n| n.parse().ok()).unwrap_or_else(|| {
                eprintln!("wordstats: --top needs a number");
                std::process::exit(2)
            });
        } else {
            dir = arg;
        }
    }
    let mut stats = Stats::default();
    walk(Path::new(&dir), "", &mut stats);
    let json = report(&stats, top);
    if Path::new("/outputs").is_dir() {
        fs::write("/outputs/wordstats.json", &json).expect("write /outputs/wordstats.json");
    }
    let total: u64 = stats.words.values().sum();
    println!(
        "wordstats: {} files, {} words ({} distinct), {} CSV tables",
        stats.files.len(),
        total,
        stats.words.len(),
        stats.csv.len()
    );
    print!("{json}");
}
