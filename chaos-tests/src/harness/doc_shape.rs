//! A doc's shell commands, and the shape of what they print: the fenced blocks of a
//! Markdown section as `$ ` lines with the output the doc shows under each, and a check
//! that a command printed what the doc shows in shape, not in values (the same field
//! names, headings, table headers and first columns, JSON keys, sentences with their
//! numbers masked). `tests/operations_doc.rs` walks docs/operations.md with it.

use std::collections::{BTreeSet, VecDeque};

use serde_json::Value;

// ---------------------------------------------------------------------------------------
// The doc: its sections, their fenced blocks, the `$ ` lines and what the doc shows under
// each.

/// A `$ ` line and the lines the doc shows under it (up to the next `$ ` line or the end of
/// its block).
#[derive(Clone, Debug)]
pub struct DocCommand {
    pub line: String,
    pub shown: Vec<String>,
}

/// What a section's fenced blocks hold, in order: commands, and blocks of output alone
/// (which the prose around them attributes to a step).
#[derive(Debug)]
pub enum Item {
    Command(DocCommand),
    Output(Vec<String>),
}

/// The text from the line `from` (or the top, for `None`) to the line `to`.
pub fn section<'a>(doc: &'a str, from: Option<&str>, to: &str) -> &'a str {
    let start = match from {
        None => 0,
        Some(heading) => doc
            .find(&format!("\n{heading}\n"))
            .unwrap_or_else(|| panic!("docs/operations.md has no `{heading}` heading")),
    };
    let end = doc[start..]
        .find(&format!("\n{to}\n"))
        .map(|at| start + at)
        .unwrap_or_else(|| panic!("docs/operations.md has no `{to}` heading after {from:?}"));
    &doc[start..end]
}

/// The text from the line `from` to the end of the doc (its last section).
pub fn section_to_end<'a>(doc: &'a str, from: &str) -> &'a str {
    let start = doc
        .find(&format!("\n{from}\n"))
        .unwrap_or_else(|| panic!("docs/operations.md has no `{from}` heading"));
    &doc[start..]
}

/// The `## ` headings of `doc` whose sections show `$ ` commands in their fenced blocks.
pub fn sections_with_commands(doc: &str) -> Vec<String> {
    let mut found = Vec::new();
    let headings: Vec<(usize, &str)> = doc
        .match_indices("\n## ")
        .map(|(at, _)| {
            let line = doc[at + 1..].lines().next().unwrap_or_default();
            (at, line)
        })
        .collect();
    for (n, (at, heading)) in headings.iter().enumerate() {
        let end = headings.get(n + 1).map_or(doc.len(), |(next, _)| *next);
        if items(&doc[*at..end])
            .iter()
            .any(|item| matches!(item, Item::Command(_)))
        {
            found.push((*heading).to_owned());
        }
    }
    found
}

/// The items of the fenced blocks of `text`, in order.
pub fn items(text: &str) -> VecDeque<Item> {
    let mut found = VecDeque::new();
    let mut block: Option<Vec<String>> = None;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            match block.take() {
                None => block = Some(Vec::new()),
                Some(lines) => found.extend(block_items(lines)),
            }
        } else if let Some(lines) = &mut block {
            lines.push(line.to_owned());
        }
    }
    assert!(block.is_none(), "a fenced block is not closed");
    found
}

pub fn block_items(lines: Vec<String>) -> Vec<Item> {
    if !lines.iter().any(|line| line.trim_start().starts_with("$ ")) {
        return vec![Item::Output(lines)];
    }
    let mut commands: Vec<DocCommand> = Vec::new();
    for line in lines {
        match line.trim_start().strip_prefix("$ ") {
            Some(command) => commands.push(DocCommand {
                line: command.to_owned(),
                shown: Vec::new(),
            }),
            None => match commands.last_mut() {
                Some(command) => command.shown.push(line),
                None => panic!("output before the first `$ ` line of a block: {line}"),
            },
        }
    }
    commands.into_iter().map(Item::Command).collect()
}

/// `phrase`, after checking that the doc's `text` says it: what the test does on the
/// strength of a sentence of the prose fails here, naming it, once the prose changes.
pub fn quote<'a>(text: &str, phrase: &'a str) -> &'a str {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        flat.contains(phrase),
        "docs/operations.md no longer says \"{phrase}\": the step this test does on its \
         strength needs a look"
    );
    phrase
}

/// The first `code span` of `text` that starts with `start`.
pub fn code_span<'a>(text: &'a str, start: &str) -> &'a str {
    text.split('`')
        .skip(1)
        .step_by(2)
        .find(|span| span.starts_with(start))
        .unwrap_or_else(|| panic!("docs/operations.md has no `{start}...` code span"))
}

// ---------------------------------------------------------------------------------------
// Shapes: what of a printed line the doc's copy must match.

#[derive(Clone, Debug, PartialEq)]
pub enum Shape {
    Blank,
    /// `...`: lines left out.
    Gap,
    /// `Name      = value`: the name.
    Field(String),
    /// A table line without numbers (a header): all of it, spaces collapsed.
    Header(String),
    /// A table row: its first cell.
    Row(String),
    /// One or more table rows whose first cell is a number (audit records): how many
    /// depends on timing.
    Records,
    /// A JSON object: each key, with its value where it is a string without digits.
    Json(Vec<(String, String)>),
    /// An HTTP response's status line (`HTTP/2 401`): all of it, the code included.
    HttpStatus(String),
    /// A header of an HTTP response: its name, and its value where it has no digits.
    HttpHeader(String, String),
    /// Any other line: all of it, numbers masked.
    Text(String),
}

pub fn has_digit(text: &str) -> bool {
    text.chars().any(|c| c.is_ascii_digit())
}

/// `word` with each run of 12 or more hex digits that holds a digit (a hash, a digest) as
/// one digit: a hash is a value, like a number.
fn hashes_as_digits(word: &str) -> String {
    let mut out = String::new();
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        let hash = run.len() >= 12
            && run.chars().all(|c| c.is_ascii_hexdigit())
            && has_digit(run.as_str());
        out.push_str(if hash { "0" } else { run.as_str() });
        run.clear();
    };
    for c in word.chars() {
        if c.is_ascii_alphanumeric() {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

/// `text` with each number (digits, with or without a decimal part) and each hash as `#`,
/// a size's unit after a number as `B` (`941 B`, `11.9 KiB`), and runs of spaces as one.
pub fn masked(text: &str) -> String {
    let mut out = String::new();
    for word in text.split_whitespace() {
        let unit = word.trim_end_matches([',', ';', ')', '.']);
        if ["B", "KiB", "MiB", "GiB"].contains(&unit) && out.ends_with('#') {
            out.push_str(" B");
            out.push_str(&word[unit.len()..]);
            continue;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        let chars: Vec<char> = hashes_as_digits(word).chars().collect();
        let mut in_number = false;
        for (at, c) in chars.iter().enumerate() {
            let decimal_point = *c == '.'
                && in_number
                && chars.get(at + 1).is_some_and(|next| next.is_ascii_digit());
            if c.is_ascii_digit() || decimal_point {
                if !in_number {
                    out.push('#');
                }
                in_number = true;
            } else {
                out.push(*c);
                in_number = false;
            }
        }
    }
    out
}

/// The name of a `Name   = value` line (names are words, as `leasehold status` prints).
pub fn field_name(line: &str) -> Option<&str> {
    let (name, _) = line.split_once(" = ")?;
    let name = name.trim_end();
    (!line.starts_with(' ')
        && !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphabetic() || c == ' '))
    .then_some(name)
}

pub fn shape(line: &str) -> Shape {
    let trimmed = line.trim();
    if trimmed.is_empty() {
        return Shape::Blank;
    }
    if trimmed == "..." {
        return Shape::Gap;
    }
    if trimmed.starts_with('{')
        && let Ok(Value::Object(object)) = serde_json::from_str::<Value>(trimmed)
    {
        return Shape::Json(
            object
                .into_iter()
                .map(|(key, value)| {
                    let value = match value.as_str() {
                        Some(text) if !has_digit(text) => text.to_owned(),
                        _ => "*".to_owned(),
                    };
                    (key, value)
                })
                .collect(),
        );
    }
    if let Some(name) = field_name(line) {
        return Shape::Field(name.to_owned());
    }
    if trimmed.contains("  ") {
        let first = trimmed.split_whitespace().next().unwrap_or_default();
        return if !has_digit(trimmed) {
            Shape::Header(masked(trimmed))
        } else if first.chars().all(|c| c.is_ascii_digit()) {
            Shape::Records
        } else {
            Shape::Row(first.to_owned())
        };
    }
    Shape::Text(masked(trimmed))
}

/// The shape of a line of an HTTP response's head (`curl -i`), after its status line.
fn http_header(line: &str) -> Shape {
    match line.split_once(':') {
        Some((name, value)) => {
            let value = value.trim();
            let value = if has_digit(value) { "*" } else { value };
            Shape::HttpHeader(name.trim().to_ascii_lowercase(), value.to_owned())
        }
        None => Shape::Text(masked(line)),
    }
}

/// The shapes of `lines`, a run of records as one. The headers of an HTTP response come in
/// no promised order: they are sorted.
pub fn shapes<S: AsRef<str>>(lines: &[S]) -> Vec<(Shape, usize)> {
    let mut out: Vec<(Shape, usize)> = Vec::new();
    let mut head_from: Option<usize> = None;
    for (at, line) in lines.iter().enumerate() {
        let line = line.as_ref();
        let next = if line.starts_with("HTTP/") {
            head_from = Some(out.len() + 1);
            Shape::HttpStatus(line.trim().to_owned())
        } else if head_from.is_some() && !line.trim().is_empty() {
            http_header(line)
        } else {
            if let Some(from) = head_from.take() {
                out[from..].sort_by(|a, b| format!("{:?}", a.0).cmp(&format!("{:?}", b.0)));
            }
            shape(line)
        };
        if next == Shape::Records && out.last().is_some_and(|(last, _)| *last == Shape::Records) {
            continue;
        }
        out.push((next, at));
    }
    if let Some(from) = head_from {
        out[from..].sort_by(|a, b| format!("{:?}", a.0).cmp(&format!("{:?}", b.0)));
    }
    out
}

/// `shapes` with every run of table rows as one: for an output the doc took from another
/// run, whose tables hold other rows.
pub fn layout(shapes: Vec<(Shape, usize)>) -> Vec<(Shape, usize)> {
    let mut out: Vec<(Shape, usize)> = Vec::new();
    for (shape, at) in shapes {
        let shape = match shape {
            Shape::Row(_) => Shape::Records,
            other => other,
        };
        if shape == Shape::Records && out.last().is_some_and(|(last, _)| *last == Shape::Records) {
            continue;
        }
        out.push((shape, at));
    }
    out
}

/// Whether `doc` matches `real` from its start: `...` skips any number of lines; with
/// `open_end`, `real` may go on after `doc` ends.
pub fn matches(doc: &[(Shape, usize)], real: &[(Shape, usize)], open_end: bool) -> bool {
    match doc.split_first() {
        None => open_end || real.is_empty(),
        Some(((Shape::Gap, _), rest)) => {
            (0..=real.len()).any(|skip| matches(rest, &real[skip..], open_end))
        }
        Some(((expected, _), rest)) => {
            real.first().is_some_and(|(seen, _)| seen == expected)
                && matches(rest, &real[1..], open_end)
        }
    }
}

/// How the printed output is held against the doc's copy.
#[derive(Clone, Copy)]
pub enum Fit {
    /// Line by line, from the first line to the last.
    Whole,
    /// A log: the doc's lines in order, other lines around and between them.
    Log,
    /// The doc's block is an excerpt of a longer output (it starts and ends anywhere).
    Excerpt,
    /// Line by line, but the doc's output is from another run (the demo's): its tables may
    /// hold other rows, and its audit records other kinds; its fields, headings, table
    /// headers and other lines may not differ.
    OtherRun,
}

/// Checks `printed` against the doc's `shown` lines; the error is a diff-like account of
/// where they part.
pub fn same_shape(what: &str, shown: &[String], printed: &str, fit: Fit) -> Result<(), String> {
    // A blank line at the end is one a fenced block cannot show.
    let shown: Vec<&str> = without_trailing_blanks(shown.iter().map(String::as_str));
    let real_lines: Vec<&str> = without_trailing_blanks(printed.lines());
    let mut doc = shapes(&shown);
    let mut real = shapes(&real_lines);
    if matches!(fit, Fit::Log | Fit::Excerpt) {
        let with_gaps = doc.drain(..).flat_map(|item| [(Shape::Gap, item.1), item]);
        doc = with_gaps.collect();
    }
    if matches!(fit, Fit::OtherRun) {
        doc = layout(doc);
        real = layout(real);
    }
    let open_end = matches!(fit, Fit::Log | Fit::Excerpt);
    if matches(&doc, &real, open_end) {
        return match fit {
            Fit::OtherRun => Ok(()),
            _ => kinds_shown_are_printed(what, &shown, &real_lines),
        };
    }
    // Where a plain walk (`...` skipping to the next line that fits) parts from the doc.
    let (mut d, mut r) = (0, 0);
    let parted = loop {
        match (doc.get(d), real.get(r)) {
            (None, None) => break None,
            (None, Some(_)) if open_end => break None,
            (Some((Shape::Gap, _)), _) => {
                d += 1;
                if let Some((next, _)) = doc.get(d) {
                    match real[r..].iter().position(|(seen, _)| seen == next) {
                        Some(skip) => r += skip,
                        None => break Some((d, r)),
                    }
                }
            }
            (Some((expected, _)), Some((seen, _))) if expected == seen => {
                d += 1;
                r += 1;
            }
            _ => break Some((d, r)),
        }
    };
    let doc_line = |d: usize| doc.get(d).map(|(shape, at)| (shape, shown[*at]));
    let real_line = |r: usize| real.get(r).map(|(shape, at)| (shape, real_lines[*at]));
    let mut diff =
        format!("{what}: the output does not have the shape docs/operations.md shows\n--- doc\n");
    for line in &shown {
        diff.push_str(&format!("  {line}\n"));
    }
    diff.push_str("+++ printed\n");
    for line in &real_lines {
        diff.push_str(&format!("  {line}\n"));
    }
    match parted {
        Some((d, r)) => diff.push_str(&format!(
            "first difference:\n- doc:     {:?}\n+ printed: {:?}\n",
            doc_line(d),
            real_line(r)
        )),
        None => diff.push_str("(they part only where `...` could skip differently)\n"),
    }
    Err(diff)
}

pub fn without_trailing_blanks<'a>(lines: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut lines: Vec<&str> = lines.collect();
    while lines.last().is_some_and(|line| line.trim().is_empty()) {
        lines.pop();
    }
    lines
}

/// The audit kinds of a table with a `Kind` column, one per record row.
pub fn kinds<S: AsRef<str>>(lines: &[S]) -> BTreeSet<String> {
    let mut column = None;
    let mut found = BTreeSet::new();
    for line in lines {
        let line = line.as_ref();
        let cells: Vec<&str> = line.split_whitespace().collect();
        match shape(line) {
            Shape::Header(_) => {
                column = line
                    .split("  ")
                    .map(str::trim)
                    .filter(|cell| !cell.is_empty())
                    .position(|cell| cell.eq_ignore_ascii_case("kind"));
            }
            Shape::Records => {
                if let Some(kind) = column.and_then(|at| cells.get(at)) {
                    found.insert((*kind).to_owned());
                }
            }
            Shape::Blank => column = None,
            _ => {}
        }
    }
    found
}

/// Every audit kind the doc shows is among those printed: the story the doc tells (a
/// borrow, a loan returned) happened, in whatever order and number timing gave.
pub fn kinds_shown_are_printed(what: &str, shown: &[&str], printed: &[&str]) -> Result<(), String> {
    let wanted = kinds(shown);
    let seen = kinds(printed);
    let missing: Vec<&String> = wanted.difference(&seen).collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{what}: the doc shows audit records of kinds {missing:?} that were not printed \
             (printed: {seen:?})\n{}",
            printed.join("\n")
        ))
    }
}

/// For an output the doc took from another site (Maintenance's two servers): each of the
/// doc's lines has a printed line of its shape (its headings, its table headers, a row for
/// each server it names), wherever it is.
pub fn rows_present(what: &str, shown: &[String], printed: &str) -> Result<(), String> {
    let printed_lines: Vec<&str> = printed.lines().collect();
    for line in shown {
        let ok = match shape(line) {
            Shape::Gap | Shape::Blank => true,
            expected => printed_lines.iter().any(|seen| shape(seen) == expected),
        };
        if !ok {
            return Err(format!(
                "{what}: no printed line has the shape of the doc's `{line}`\n--- doc\n{}\n\
                 +++ printed\n{printed}",
                shown.join("\n")
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The judge itself: values may differ, names and wording may not.
    #[test]
    fn the_shape_check_takes_other_values_and_refuses_other_names() {
        let doc: Vec<String> = [
            "Site           = site-a",
            "Uptime         = 58s",
            "",
            "Servers",
            "ID  State    Account  Epoch",
            "a1  serving  shop     3",
            "a2  free     -        0",
            "since start: borrowed 5, returned 2",
        ]
        .map(str::to_owned)
        .to_vec();
        let same = "Site           = site-b\nUptime         = 3s\n\nServers\n\
                    ID  State    Account  Epoch\na1  free     -        0\n\
                    a2  serving  blog     7\nsince start: borrowed 0, returned 0\n";
        assert_eq!(same_shape("same", &doc, same, Fit::Whole), Ok(()));
        for (what, printed) in [
            ("a renamed column", same.replace("Epoch", "Term")),
            ("a renamed field", same.replace("Uptime ", "Up     ")),
            ("another server", same.replace("a2  ", "b2  ")),
            ("a reworded line", same.replace("returned", "given back")),
            ("a line more", format!("{same}extra line\n")),
            ("a line fewer", same.replace("Servers\n", "")),
        ] {
            assert!(
                same_shape(what, &doc, &printed, Fit::Whole).is_err(),
                "{what} passed"
            );
        }
        let json = vec![r#"{"name":"shop","owner":"site-a","term":13}"#.to_owned()];
        let other_term = r#"{"name":"shop","owner":"site-a","term":2}"#;
        assert_eq!(same_shape("json", &json, other_term, Fit::Whole), Ok(()));
        let no_owner = r#"{"name":"shop","owner":null,"term":2}"#;
        assert!(same_shape("json", &json, no_owner, Fit::Whole).is_err());
        let missing_key = r#"{"name":"shop","term":2}"#;
        assert!(same_shape("json", &json, missing_key, Fit::Whole).is_err());
    }

    /// Hashes and sizes are values; HTTP heads compare by status and header names, in any
    /// order; an output from another run keeps its layout but not its rows.
    #[test]
    fn hashes_sizes_http_heads_and_other_runs() {
        assert_eq!(
            masked("941 B, sha256 76ba42a3f4d7b9a3"),
            masked("11.9 KiB, sha256 9dff9bdbcfaa2100")
        );
        assert_ne!(masked("941 B"), masked("941 s"));
        let head: Vec<String> = ["HTTP/2 401", "content-type: application/json", "", "{}"]
            .map(str::to_owned)
            .to_vec();
        let same = "HTTP/2 401 \ncontent-type: application/json\n\n{}\n";
        assert_eq!(same_shape("head", &head, same, Fit::Whole), Ok(()));
        let other_code = same.replace("401", "403");
        assert!(same_shape("head", &head, &other_code, Fit::Whole).is_err());
        let other_type = same.replace("json", "html");
        assert!(same_shape("head", &head, &other_type, Fit::Whole).is_err());
        let two: Vec<String> = ["HTTP/2 401", "a: x", "b: 1"].map(str::to_owned).to_vec();
        assert_eq!(
            same_shape("order", &two, "HTTP/2 401\nb: 2\na: x\n", Fit::Whole),
            Ok(())
        );
        let table: Vec<String> = ["Servers", "ID  State", "a1  serving 1", "a2  free 0"]
            .map(str::to_owned)
            .to_vec();
        let other_rows = "Servers\nID  State\nb7  serving 3\n";
        assert!(same_shape("rows", &table, other_rows, Fit::Whole).is_err());
        assert_eq!(
            same_shape("rows", &table, other_rows, Fit::OtherRun),
            Ok(())
        );
        let other_header = "Servers\nID  Status\nb7  serving 3\n";
        assert!(same_shape("rows", &table, other_header, Fit::OtherRun).is_err());
    }
}
