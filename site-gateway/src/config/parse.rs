//! TOML text to the raw layer. Syntax and type errors become one [`ConfigError`] with the
//! key path and, for a misspelt key, the nearest valid one.

use super::error::{ConfigError, Source};
use super::raw::RawSite;

/// How close a key must be to a valid one before we suggest it; below this the guess is
/// more likely to mislead than help.
const SUGGEST_THRESHOLD: f64 = 0.7;

pub(crate) fn parse(source: &Source) -> Result<RawSite, ConfigError> {
    let deserializer = toml::de::Deserializer::parse(&source.text).map_err(|e| {
        let message = format!("syntax error: {}", e.message().trim_end());
        locate(source, &e, message)
    })?;
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let message = describe(e.inner().message(), &key_path(e.path()));
        locate(source, e.inner(), message)
    })
}

fn locate(source: &Source, error: &toml::de::Error, message: String) -> ConfigError {
    match error.span() {
        Some(span) => source.error_at(span, message),
        None => source.error(message),
    }
}

/// Rewrites serde's message into the operator's terms: which key, what is wrong, and what
/// was probably meant.
fn describe(message: &str, path: &str) -> String {
    let message = message.trim_end();
    if let Some(rest) = message.strip_prefix("unknown field ") {
        let names = backticked(rest);
        if let Some((unknown, expected)) = names.split_first() {
            let key = join_key(path, unknown);
            let mut out = format!("unknown key `{key}`");
            match nearest(unknown, expected) {
                Some(near) => out.push_str(&format!("; did you mean `{near}`?")),
                None if !expected.is_empty() => {
                    out.push_str(&format!("; valid keys here: {}", expected.join(", ")))
                }
                None => {}
            }
            return out;
        }
    }
    if let Some(rest) = message.strip_prefix("missing field ")
        && let Some(name) = backticked(rest).first()
    {
        let table = if path.is_empty() {
            "the top level"
        } else {
            path
        };
        return format!("missing key `{name}` in {table}");
    }
    if path.is_empty() {
        message.to_owned()
    } else {
        format!("key `{path}`: {message}")
    }
}

/// The key path as the operator wrote it (`account[1].min_servers`), without the internal
/// fields `toml::Spanned` deserializes through.
fn key_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } if key.starts_with("$__") => {}
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Unknown => {}
        }
    }
    out
}

/// The path already ends with the unknown key when serde reached it as a map entry.
fn join_key(path: &str, key: &str) -> String {
    if path.is_empty() || path == key {
        key.to_owned()
    } else if path.ends_with(&format!(".{key}")) {
        path.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// The `names` quoted in backticks, in order: serde lists the offending field first, then
/// the expected ones.
fn backticked(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

fn nearest<'a>(unknown: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (strsim::jaro_winkler(unknown, c), *c))
        .filter(|(score, _)| *score >= SUGGEST_THRESHOLD)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_the_nearest_key() {
        assert_eq!(
            nearest("min_server", &["name", "min_servers", "max_servers"]),
            Some("min_servers")
        );
        assert_eq!(nearest("zzz", &["name", "min_servers"]), None);
    }

    #[test]
    fn rewrites_unknown_field() {
        let message =
            "unknown field `lease_tll_ms`, expected one of `lease_ttl_ms`, `renew_interval_ms`";
        assert_eq!(
            describe(message, "timings"),
            "unknown key `timings.lease_tll_ms`; did you mean `lease_ttl_ms`?"
        );
    }
}
