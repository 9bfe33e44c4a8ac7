//! (g) Member changes took effect and settled, from the founders' audit logs: each
//! founder journaled and audited the step to the founders and the spare after the change
//! began, and the step back to the founders alone once its config left the spare out
//! (docs/ownership.md, "Members"). That no account had two owners meanwhile is (b), from
//! the node logs, the spare's included.

use serde_json::Value;

use super::{Evidence, Verdict, verdict};

/// The `members` records of an audit log whose step is to `set`, within [from, to] (wall ms).
fn steps_to(records: &[Value], set: &str, from: u64, to: u64) -> usize {
    let wanted = format!("now need a majority of [{set}]");
    records
        .iter()
        .filter(|record| record["kind"] == "members")
        .filter(|record| {
            record["wall_ms"]
                .as_u64()
                .is_some_and(|at| (from..=to).contains(&at))
        })
        .filter(|record| {
            record["reason"]
                .as_str()
                .is_some_and(|r| r.contains(&wanted))
        })
        .count()
}

pub(super) fn member_changes_took_effect(evidence: &Evidence) -> Verdict {
    let mut failures = Vec::new();
    let mut passes = Vec::new();
    let sites: Vec<&str> = evidence
        .federation
        .sites
        .iter()
        .map(|site| site.name.as_str())
        .collect();
    for record in &evidence.faults {
        let Some(change) = &record.member else {
            continue;
        };
        let founders = sites[..change.spare].join(", ");
        let all = sites[..=change.spare].join(", ");
        let (Some(removed), Some(left)) = (change.removed_wall_ms, change.left_wall_ms) else {
            failures.push(format!(
                "{} {}: never removed",
                record.fault.kind, record.fault.target
            ));
            continue;
        };
        if let Err(error) = &change.settled {
            failures.push(format!("{}: {error}", record.fault.target));
        }
        for (site, audit) in &evidence.audits {
            let name = sites[*site];
            let Ok(records) = audit else {
                failures.push(format!("{name}: its audit log could not be read"));
                continue;
            };
            let added = steps_to(records, &all, change.added_wall_ms, removed);
            let back = steps_to(records, &founders, removed, left);
            if added == 0 || back == 0 {
                failures.push(format!(
                    "{name} audited {added} steps to [{all}] while {} was added and {back} to [{founders}] once it was left out",
                    record.fault.target
                ));
            } else {
                passes.push(format!(
                    "{name} stepped to [{all}] and back to [{founders}]"
                ));
            }
        }
    }
    verdict("member-changes-took-effect", failures, passes)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::steps_to;

    #[test]
    fn a_step_counts_only_to_its_set_and_within_its_window() {
        let step = |at: u64, set: &str| {
            json!({
                "kind": "members",
                "wall_ms": at,
                "reason": format!("site-a's ownership claims now need a majority of [{set}] (were: [x])"),
            })
        };
        let records = vec![
            step(100, "site-a, site-b, site-c, site-d"),
            step(300, "site-a, site-b, site-c"),
            json!({"kind": "ownership_lost", "wall_ms": 150, "reason": "now need a majority of [site-a, site-b, site-c]"}),
        ];
        assert_eq!(
            steps_to(&records, "site-a, site-b, site-c, site-d", 50, 200),
            1
        );
        assert_eq!(
            steps_to(&records, "site-a, site-b, site-c, site-d", 101, 400),
            0
        );
        // A prefix of a larger set is not the set.
        assert_eq!(steps_to(&records, "site-a, site-b, site-c", 0, 200), 0);
        assert_eq!(steps_to(&records, "site-a, site-b, site-c", 200, 400), 1);
    }
}
