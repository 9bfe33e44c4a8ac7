//! Config errors and how they are shown: `FILE:LINE:COL: message` plus a caret snippet.

use std::ops::Range;
use std::path::{Path, PathBuf};

/// One thing wrong with a config file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", render(self))]
pub struct ConfigError {
    /// The file the error is in (as the caller named it, so the operator recognises it).
    pub file: PathBuf,
    /// 1-based line and column (in characters), when the error points at a place.
    pub line_col: Option<(usize, usize)>,
    /// What is wrong, naming the site, account or server concerned.
    pub message: String,
    /// The offending source line with a caret under the place, ready to print.
    pub snippet: Option<String>,
}

impl ConfigError {
    /// An error about the file as a whole (unreadable, or no single place to point at).
    pub fn whole_file(file: &Path, message: impl Into<String>) -> Self {
        Self {
            file: file.to_path_buf(),
            line_col: None,
            message: message.into(),
            snippet: None,
        }
    }

    /// `FILE:LINE:COL` or just `FILE`, the prefix editors and terminals can jump to.
    pub fn location(&self) -> String {
        match self.line_col {
            Some((line, col)) => format!("{}:{line}:{col}", self.file.display()),
            None => self.file.display().to_string(),
        }
    }
}

fn render(error: &ConfigError) -> String {
    let mut out = format!("{}: {}", error.location(), error.message);
    if let Some(snippet) = &error.snippet {
        out.push('\n');
        out.push_str(snippet);
    }
    out
}

/// Every error found in a run, in file order. A run reports all of them, never only the
/// first, so that one edit-check cycle fixes as much as possible.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", render_all(self))]
pub struct ConfigErrors {
    errors: Vec<ConfigError>,
}

impl ConfigErrors {
    pub(crate) fn new(errors: Vec<ConfigError>) -> Self {
        Self { errors }
    }

    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.errors.iter()
    }

    pub fn len(&self) -> usize {
        self.errors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    /// How many distinct files the errors are in.
    pub fn file_count(&self) -> usize {
        let mut files: Vec<&Path> = self.errors.iter().map(|e| e.file.as_path()).collect();
        files.sort();
        files.dedup();
        files.len()
    }
}

impl IntoIterator for ConfigErrors {
    type Item = ConfigError;
    type IntoIter = std::vec::IntoIter<ConfigError>;
    fn into_iter(self) -> Self::IntoIter {
        self.errors.into_iter()
    }
}

impl<'a> IntoIterator for &'a ConfigErrors {
    type Item = &'a ConfigError;
    type IntoIter = std::slice::Iter<'a, ConfigError>;
    fn into_iter(self) -> Self::IntoIter {
        self.errors.iter()
    }
}

fn render_all(errors: &ConfigErrors) -> String {
    let mut out = String::new();
    for error in &errors.errors {
        out.push_str(&error.to_string());
        out.push_str("\n\n");
    }
    out.push_str(&format!(
        "{} in {}",
        plural(errors.len(), "error"),
        plural(errors.file_count(), "file")
    ));
    out
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// A config file's path and text, kept so errors found after parsing can still point at
/// the line they are about.
#[derive(Debug, Clone)]
pub(crate) struct Source {
    pub path: PathBuf,
    pub text: String,
}

impl Source {
    pub fn error_at(&self, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        let (line, col) = self.line_col(span.start);
        ConfigError {
            file: self.path.clone(),
            line_col: Some((line, col)),
            message: message.into(),
            snippet: Some(self.snippet(line, col, &span)),
        }
    }

    pub fn error(&self, message: impl Into<String>) -> ConfigError {
        ConfigError::whole_file(&self.path, message)
    }

    /// `path:line`, for messages that refer to a second place ("first listed at ...").
    pub fn place(&self, span: &Range<usize>) -> String {
        format!("{}:{}", self.path.display(), self.line_col(span.start).0)
    }

    /// 1-based line and character column of a byte offset. Offsets inside a multi-byte
    /// character or past the end are clamped, since spans come from another crate.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let col = before[line_start..].chars().count() + 1;
        (line, col)
    }

    fn snippet(&self, line: usize, col: usize, span: &Range<usize>) -> String {
        let text = self.text.lines().nth(line - 1).unwrap_or("");
        let text = text.trim_end_matches('\r');
        let rest = text.chars().count().saturating_sub(col - 1);
        let span_chars = self
            .text
            .get(span.clone())
            .map_or(1, |s| s.lines().next().unwrap_or("").chars().count());
        let width = span_chars.clamp(1, rest.max(1));
        let gutter = " ".repeat(line.to_string().len());
        let pad: String = text
            .chars()
            .take(col - 1)
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        format!(
            "{gutter} |\n{line} | {text}\n{gutter} | {pad}{}",
            "^".repeat(width)
        )
    }
}
