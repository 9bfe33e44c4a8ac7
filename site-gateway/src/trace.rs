//! The demand trace format, `leasehold-trace/1` (docs/replay.md): JSON lines. The first
//! line is the header (the step, each account's SLA fields, where the trace came from);
//! each line after it is one step: every account's load, in the unit of its load metric
//! (requests per second for the demo workload), from `t_s` to `t_s + step_s`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

pub const FORMAT: &str = "leasehold-trace/1";

/// An account as the trace describes it: its SLA fields when the trace was made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceAccount {
    pub name: String,
    pub min_servers: u32,
    pub max_servers: u32,
    /// The load one server carries at its target.
    pub target_load: f64,
    pub priority: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// Always [`FORMAT`].
    pub trace: String,
    pub step_s: u64,
    pub accounts: Vec<TraceAccount>,
    /// Where the numbers come from, and under what licence.
    pub source: String,
    pub licence: String,
}

/// One step: each account's load over `[t_s, t_s + step_s)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub t_s: u64,
    pub load: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    pub header: Header,
    pub steps: Vec<Step>,
}

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {detail}")]
    Bad {
        path: String,
        line: usize,
        detail: String,
    },
}

impl Trace {
    pub fn read(path: &Path) -> Result<Trace, TraceError> {
        let text = std::fs::read_to_string(path).map_err(|source| TraceError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Trace::parse(&text).map_err(|(line, detail)| TraceError::Bad {
            path: path.display().to_string(),
            line,
            detail,
        })
    }

    /// Parses a trace; an error names the line (from 1) and what is wrong there.
    pub fn parse(text: &str) -> Result<Trace, (usize, String)> {
        let mut lines = text
            .lines()
            .enumerate()
            .map(|(ix, line)| (ix + 1, line))
            .filter(|(_, line)| !line.trim().is_empty());
        let (at, first) = lines.next().ok_or((1, "the trace is empty".to_owned()))?;
        let header: Header = serde_json::from_str(first)
            .map_err(|error| (at, format!("not a trace header: {error}")))?;
        if header.trace != FORMAT {
            return Err((
                at,
                format!("format `{}`, this build reads `{FORMAT}`", header.trace),
            ));
        }
        if header.step_s == 0 {
            return Err((at, "step_s must be at least 1".into()));
        }
        if header.accounts.is_empty() {
            return Err((at, "the header names no account".into()));
        }
        for account in &header.accounts {
            if account.min_servers > account.max_servers
                || !(account.target_load > 0.0 && account.target_load.is_finite())
            {
                return Err((
                    at,
                    format!(
                        "account `{}`: min_servers above max_servers, or a target_load that is not a positive number",
                        account.name
                    ),
                ));
            }
        }
        let names: Vec<&str> = header.accounts.iter().map(|a| a.name.as_str()).collect();
        let mut steps = Vec::new();
        for (at, line) in lines {
            let step: Step =
                serde_json::from_str(line).map_err(|error| (at, format!("not a step: {error}")))?;
            let expected = steps.len() as u64 * header.step_s;
            if step.t_s != expected {
                return Err((
                    at,
                    format!(
                        "t_s {} where {expected} was due (one line per step, in order)",
                        step.t_s
                    ),
                ));
            }
            for name in &names {
                match step.load.get(*name) {
                    Some(load) if *load >= 0.0 && load.is_finite() => {}
                    Some(load) => {
                        return Err((
                            at,
                            format!("account `{name}`: load {load} is not a non-negative number"),
                        ));
                    }
                    None => return Err((at, format!("account `{name}` has no load"))),
                }
            }
            if let Some(extra) = step
                .load
                .keys()
                .find(|name| !names.contains(&name.as_str()))
            {
                return Err((at, format!("account `{extra}` is not in the header")));
            }
            steps.push(step);
        }
        if steps.is_empty() {
            return Err((at, "the trace has a header and no step".into()));
        }
        Ok(Trace { header, steps })
    }

    /// The trace as its file holds it.
    pub fn to_text(&self) -> String {
        let mut text = serde_json::to_string(&self.header).unwrap_or_default();
        text.push('\n');
        for step in &self.steps {
            text.push_str(&serde_json::to_string(step).unwrap_or_default());
            text.push('\n');
        }
        text
    }

    pub fn duration_s(&self) -> u64 {
        self.steps.len() as u64 * self.header.step_s
    }

    /// `account`'s load at `t_ms` (piecewise constant over each step; 0 past the end).
    pub fn load_at(&self, account: &str, t_ms: u64) -> f64 {
        let step = (t_ms / 1000 / self.header.step_s) as usize;
        self.steps
            .get(step)
            .and_then(|step| step.load.get(account).copied())
            .unwrap_or(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = r#"{"trace":"leasehold-trace/1","step_s":60,"accounts":[{"name":"shop","min_servers":1,"max_servers":4,"target_load":10.0,"priority":20}],"source":"hand-written","licence":"CC0-1.0"}"#;

    #[test]
    fn a_trace_round_trips_and_is_read_step_by_step() {
        let text = format!(
            "{HEADER}\n{}\n{}\n",
            r#"{"t_s":0,"load":{"shop":5.0}}"#, r#"{"t_s":60,"load":{"shop":25.0}}"#
        );
        let trace = Trace::parse(&text).unwrap();
        assert_eq!(trace.duration_s(), 120);
        assert_eq!(trace.load_at("shop", 59_999), 5.0);
        assert_eq!(trace.load_at("shop", 60_000), 25.0);
        assert_eq!(trace.load_at("shop", 120_000), 0.0);
        assert_eq!(Trace::parse(&trace.to_text()).unwrap(), trace);
    }

    #[test]
    fn a_bad_trace_is_refused_naming_the_line_and_what_is_wrong() {
        let cases = [
            ("", (1, "the trace is empty")),
            (r#"{"trace":"other/1"}"#, (1, "not a trace header")),
            (
                &format!("{HEADER}\n{}", r#"{"t_s":60,"load":{"shop":5.0}}"#),
                (2, "t_s 60 where 0 was due"),
            ),
            (
                &format!("{HEADER}\n{}", r#"{"t_s":0,"load":{}}"#),
                (2, "account `shop` has no load"),
            ),
            (
                &format!("{HEADER}\n{}", r#"{"t_s":0,"load":{"shop":-1.0}}"#),
                (2, "load -1 is not a non-negative number"),
            ),
            (
                &format!(
                    "{HEADER}\n{}",
                    r#"{"t_s":0,"load":{"shop":1.0,"wiki":2.0}}"#
                ),
                (2, "account `wiki` is not in the header"),
            ),
            (HEADER, (1, "no step")),
        ];
        for (text, (line, said)) in cases {
            let (at, detail) = Trace::parse(text).unwrap_err();
            assert_eq!(at, line, "{detail}");
            assert!(detail.contains(said), "{detail}");
        }
    }
}
