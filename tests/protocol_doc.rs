//! docs/protocol.md documents every code the server can send: each error code
//! used under src/server/ (and in src/limits.rs) has a row in the doc's
//! "Error codes" table, each Close code of `CloseReason::code` a row in its
//! "Close codes" table, and the "Golden transcripts" section lists the flow
//! files. Std only: the doc and the sources are parsed as text.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use hummer_channel::ErrorCode;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn doc() -> String {
    read(&root().join("docs/protocol.md"))
}

/// The identifier starting at `s` (letters, digits, `_`).
fn ident(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// `ErrorCode::NAME` → number, for every code this version names.
fn error_table() -> BTreeMap<String, u32> {
    let table: BTreeMap<String, u32> = (0..100_000)
        .filter_map(|n| ErrorCode::new(n).name().map(|name| (name.to_owned(), n)))
        .collect();
    assert!(table.len() > 20, "ErrorCode names too few codes: {table:?}");
    table
}

/// The files whose `ErrorCode::X` uses are codes the server can send.
fn server_sources() -> Vec<PathBuf> {
    let dir = root().join("src/server");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .rs files under src/server/");
    files.push(root().join("src/limits.rs"));
    files
}

/// Every `ErrorCode::NAME` (an upper-case name: not `ErrorCode::new`)
/// in `src`.
fn error_code_uses(src: &str) -> BTreeSet<String> {
    src.split("ErrorCode::")
        .skip(1)
        .map(ident)
        .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        .map(str::to_owned)
        .collect()
}

/// The numbers of `CloseReason::X => NUMBER` arms of `fn code` in
/// src/server/conn.rs (0, "no frame", left out).
fn close_codes() -> BTreeSet<u32> {
    let src = read(&root().join("src/server/conn.rs"));
    let start = src
        .find("fn code")
        .expect("src/server/conn.rs has no `fn code`");
    let body = &src[start + "fn code".len()..];
    let body = &body[..body.find("fn ").unwrap_or(body.len())];
    let mut codes = BTreeSet::new();
    let mut arms = 0;
    for arm in body.split("=>").skip(1) {
        let number: String = arm
            .trim_start()
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        let Ok(n) = number.parse::<u32>() else {
            continue;
        };
        arms += 1;
        if n != 0 {
            codes.insert(n);
        }
    }
    assert!(
        arms > 0 && body.contains("CloseReason::"),
        "no `CloseReason::X => NUMBER` arms in `fn code` of src/server/conn.rs"
    );
    codes
}

/// A markdown heading: its level and text.
fn heading(line: &str) -> Option<(usize, &str)> {
    let level = line.chars().take_while(|&c| c == '#').count();
    (level > 0 && line[level..].starts_with(' ')).then(|| (level, line[level..].trim()))
}

/// The lines of the first section whose heading contains `title`, up to the
/// next heading of the same or a higher level (headings inside code fences
/// do not count). Panics when there is none.
fn section<'a>(doc: &'a str, title: &str) -> Vec<&'a str> {
    let mut in_fence = false;
    let mut level = None;
    let mut lines = Vec::new();
    for line in doc.lines() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
        }
        let h = if in_fence { None } else { heading(line) };
        match (level, h) {
            (None, Some((l, text))) if text.contains(title) => level = Some(l),
            (Some(open), Some((l, _))) if l <= open => break,
            (Some(_), _) => lines.push(line),
            (None, _) => {}
        }
    }
    assert!(
        level.is_some(),
        "docs/protocol.md has no heading containing {title:?}"
    );
    lines
}

/// The numbers in the first cell of the table rows (`| NUMBER | ...`) of the
/// section titled `title`. Panics when the section has no such row.
fn table_numbers(doc: &str, title: &str) -> BTreeSet<u32> {
    let numbers: BTreeSet<u32> = section(doc, title)
        .iter()
        .filter_map(|l| l.trim().strip_prefix('|'))
        .filter_map(|rest| rest.split('|').next()?.trim().parse().ok())
        .collect();
    assert!(
        !numbers.is_empty(),
        "the {title:?} section of docs/protocol.md has no table rows `| NUMBER | ...`"
    );
    numbers
}

#[test]
fn every_error_code_the_server_sends_is_documented() {
    let table = error_table();
    let doc = doc();
    let documented = table_numbers(&doc, "Error codes");
    let mut missing = Vec::new();
    let mut used = 0;
    for file in server_sources() {
        for name in error_code_uses(&read(&file)) {
            let number = *table.get(&name).unwrap_or_else(|| {
                panic!(
                    "ErrorCode::{name} (used in {}) is not in the TABLE of src/error.rs",
                    file.display()
                )
            });
            used += 1;
            if !documented.contains(&number) {
                missing.push(format!(
                    "error code {number} (ErrorCode::{name}, used in {})",
                    file.strip_prefix(root()).unwrap_or(&file).display()
                ));
            }
        }
    }
    assert!(used > 0, "no ErrorCode:: uses found under src/server/");
    assert!(
        missing.is_empty(),
        "missing from the \"Error codes\" table of docs/protocol.md:\n{}",
        missing.join("\n")
    );
}

#[test]
fn every_close_code_is_documented() {
    let doc = doc();
    let documented = table_numbers(&doc, "Close codes");
    let missing: Vec<String> = close_codes()
        .into_iter()
        .filter(|c| !documented.contains(c))
        .map(|c| format!("Close code {c} (CloseReason::code in src/server/conn.rs)"))
        .collect();
    assert!(
        missing.is_empty(),
        "missing from the \"Close codes\" table of docs/protocol.md:\n{}",
        missing.join("\n")
    );
}

#[test]
fn golden_transcripts_are_listed() {
    let doc = doc();
    let files: Vec<&str> = section(&doc, "Golden transcripts")
        .iter()
        .filter_map(|l| {
            l.trim()
                .strip_prefix("- ")
                .or_else(|| l.trim().strip_prefix("* "))
        })
        .map(|item| item.trim().trim_matches('`'))
        .filter(|item| item.ends_with(".jsonl"))
        .collect();
    assert!(
        !files.is_empty(),
        "the \"Golden transcripts\" section of docs/protocol.md lists no NAME.jsonl files"
    );
    for f in &files {
        assert!(
            !f.contains(char::is_whitespace),
            "golden transcript entry {f:?} is not a bare file name"
        );
    }
}

/// `(number, name)` of the table rows `| NUMBER | NAME | ...` of the
/// section titled `title`.
fn table_names(doc: &str, title: &str) -> BTreeMap<u32, String> {
    section(doc, title)
        .iter()
        .filter_map(|l| l.trim().strip_prefix('|'))
        .filter_map(|rest| {
            let mut cells = rest.split('|').map(str::trim);
            let number = cells.next()?.parse().ok()?;
            Some((number, cells.next()?.to_owned()))
        })
        .collect()
}

#[test]
fn error_code_names_are_the_specs_names() {
    let doc = doc();
    let documented = table_names(&doc, "Error codes");
    assert!(documented.len() > 20, "too few rows: {documented:?}");
    let wrong: Vec<String> = documented
        .iter()
        .filter(|(&code, name)| ErrorCode::new(code).name() != Some(name.as_str()))
        .map(|(code, name)| {
            format!(
                "{code}: docs say {name}, ErrorCode::name says {:?}",
                ErrorCode::new(*code).name()
            )
        })
        .collect();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // Every name the crate knows is a row of the spec, and displays as one.
    for (name, code) in error_table() {
        assert_eq!(documented.get(&code), Some(&name), "ErrorCode::{name}");
        assert_eq!(ErrorCode::new(code).to_string(), format!("{name} ({code})"));
        assert_eq!(
            format!("{:?}", ErrorCode::new(code)),
            format!("ErrorCode::{name}")
        );
        assert_eq!(u32::from(ErrorCode::from(code)), code);
    }
    assert_eq!(ErrorCode::new(9999).to_string(), "code 9999");
    assert_eq!(format!("{:?}", ErrorCode::new(9999)), "ErrorCode(9999)");
}
