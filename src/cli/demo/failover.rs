//! `--kill-site NAME --at SECONDS`: the kill of one site's gateway during the run, and what
//! it leads to. The site's evidence is read just before the kill (its gateway cannot answer
//! after it); each of its accounts is then followed until another site owns it (the
//! `takeover` record in that site's audit log) and serves it with at least its minimum (the
//! demo's own polling of that site's `/v1/accounts`), which gives `failovers` and
//! `recovery_ms` in the report.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use super::summary::{Move, percentile};

/// What the arguments asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct KillPlan {
    pub site: String,
    /// After the load starts.
    pub at: Duration,
}

/// A kill that was done.
#[derive(Debug, Clone, PartialEq)]
pub struct Killed {
    pub site: String,
    pub pid: u32,
    /// Wall-clock ms after the load began, just before the SIGKILL.
    pub at_ms: u64,
    /// The accounts it owned just before the kill (its `/v1/accounts`, `owner` itself).
    pub owned: Vec<String>,
}

impl Killed {
    /// The accounts that `accounts` (a `/v1/accounts` answer of `site`) says `site` owns.
    pub fn owned_in(site: &str, accounts: &Value) -> Vec<String> {
        accounts
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["owner"] == site)
            .filter_map(|a| a["name"].as_str().map(str::to_owned))
            .collect()
    }
}

/// When each surviving site was first seen serving each of the killed site's accounts:
/// owner itself in its `/v1/accounts`, with `servers >= min_servers`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServingWatch {
    /// (site, account) → ms after the load began, when the answer came back.
    first: BTreeMap<(String, String), u64>,
}

impl ServingWatch {
    /// One `/v1/accounts` answer (`accounts`) of `site`, received `at_ms` after the load
    /// began.
    pub fn observe(&mut self, killed: &Killed, site: &str, accounts: &[Value], at_ms: u64) {
        if site == killed.site {
            return;
        }
        for account in accounts {
            let Some(name) = account["name"].as_str() else {
                continue;
            };
            let serving = account["servers"].as_u64().unwrap_or(0);
            let min = account["min_servers"].as_u64().unwrap_or(1);
            if killed.owned.iter().any(|owned| owned == name)
                && account["owner"] == site
                && serving >= min
            {
                self.first
                    .entry((site.to_owned(), name.to_owned()))
                    .or_insert(at_ms);
            }
        }
    }

    /// Whether some account of the killed site is not yet seen served anywhere.
    pub fn pending(&self, killed: &Killed) -> bool {
        killed
            .owned
            .iter()
            .any(|account| !self.first.keys().any(|(_, seen)| seen == account))
    }

    pub fn first(&self, site: &str, account: &str) -> Option<u64> {
        self.first
            .get(&(site.to_owned(), account.to_owned()))
            .copied()
    }
}

/// One account of the killed site, from the kill to serving elsewhere; ms after the load
/// began.
#[derive(Debug, Clone, PartialEq)]
pub struct Failover {
    pub account: String,
    pub from: String,
    /// The site whose `takeover` record names the account, first after the kill.
    pub to: Option<String>,
    pub term: Option<u64>,
    pub killed_at_ms: u64,
    pub owned_at_ms: Option<u64>,
    pub serving_at_ms: Option<u64>,
    pub recovery_ms: Option<u64>,
}

/// One entry per account `killed` owned, from the surviving sites' `takeover` records
/// among `events` (every site's audit events) and what `watch` saw.
pub fn failovers(
    killed: &Killed,
    events: &[&Move],
    watch: &ServingWatch,
    load_start_wall_ms: u64,
) -> Vec<Failover> {
    let killed_wall_ms = load_start_wall_ms + killed.at_ms;
    killed
        .owned
        .iter()
        .map(|account| {
            let takeover = events
                .iter()
                .filter(|m| {
                    m.kind == "takeover"
                        && m.to == *account
                        && m.site != killed.site
                        && m.wall_ms >= killed_wall_ms
                })
                .min_by_key(|m| m.wall_ms);
            let to = takeover.map(|m| m.site.clone());
            let serving_at_ms = to.as_deref().and_then(|to| watch.first(to, account));
            Failover {
                account: account.clone(),
                from: killed.site.clone(),
                to,
                term: takeover.and_then(|m| m.term),
                killed_at_ms: killed.at_ms,
                owned_at_ms: takeover.map(|m| m.wall_ms.saturating_sub(load_start_wall_ms)),
                serving_at_ms,
                recovery_ms: serving_at_ms.map(|at| at.saturating_sub(killed.at_ms)),
            }
        })
        .collect()
}

/// Recovery times, sorted.
pub fn recoveries(failovers: &[Failover]) -> Vec<f64> {
    let mut sorted: Vec<f64> = failovers
        .iter()
        .filter_map(|f| f.recovery_ms.map(|ms| ms as f64))
        .collect();
    sorted.sort_by(f64::total_cmp);
    sorted
}

pub fn failover_json(f: &Failover) -> Value {
    json!({
        "account": f.account,
        "from": f.from,
        "to": f.to,
        "term": f.term,
        "killed_at_ms": f.killed_at_ms,
        "owned_at_ms": f.owned_at_ms,
        "serving_at_ms": f.serving_at_ms,
        "recovery_ms": f.recovery_ms,
    })
}

pub fn recovery_json(failovers: &[Failover]) -> Value {
    let sorted = recoveries(failovers);
    json!({
        "source": "per account of the killed site: its new owner's /v1/accounts first showing servers >= min_servers (the demo's polling, every 100 ms until then), less the kill's time",
        "count": sorted.len(),
        "p50": percentile(&sorted, 0.50),
        "p99": percentile(&sorted, 0.99),
        "max": sorted.last().copied(),
    })
}

/// `shop: site-a → site-b (t2), killed t+20.0s, owned t+23.2s, serving t+23.5s: 3512 ms`.
pub fn failover_line(f: &Failover) -> String {
    let at = |ms: Option<u64>| {
        ms.map_or("never".to_owned(), |ms| {
            format!("t+{:.1}s", ms as f64 / 1000.0)
        })
    };
    let term = f.term.map(|t| format!(" (t{t})")).unwrap_or_default();
    format!(
        "{}: {} → {}{term}, killed {}, owned {}, serving {}: {}",
        f.account,
        f.from,
        f.to.as_deref().unwrap_or("nobody"),
        at(Some(f.killed_at_ms)),
        at(f.owned_at_ms),
        at(f.serving_at_ms),
        f.recovery_ms
            .map_or("not recovered".to_owned(), |ms| format!(
                "recovered in {ms} ms"
            )),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn killed() -> Killed {
        Killed {
            site: "site-a".into(),
            pid: 7,
            at_ms: 20_050,
            owned: vec!["shop".into(), "blog".into()],
        }
    }

    fn row(name: &str, owner: &str, servers: u64) -> Value {
        json!({"name": name, "home": "site-a", "owner": owner, "min_servers": 1,
            "servers": servers})
    }

    fn takeover(site: &str, account: &str, wall_ms: u64, term: u64) -> Move {
        Move {
            site: site.into(),
            seq: 1,
            wall_ms,
            t_s: 0.0,
            kind: "takeover".into(),
            server: "-".into(),
            from: "free".into(),
            to: account.into(),
            peer: Some("site-a".into()),
            epoch: None,
            term: Some(term),
            reason: String::new(),
            joined_t_s: None,
        }
    }

    #[test]
    fn owned_accounts_are_those_the_site_names_itself_owner_of() {
        let accounts = json!([row("shop", "site-a", 1), row("blog", "site-a", 1),
            {"name": "wiki", "owner": "site-b"}]);
        assert_eq!(Killed::owned_in("site-a", &accounts), ["shop", "blog"]);
    }

    #[test]
    fn a_failover_runs_from_the_kill_to_the_new_owner_serving_its_minimum() {
        let killed = killed();
        let mut watch = ServingWatch::default();
        // Not yet serving, then not owner, then serving: the first that counts is 23_600.
        watch.observe(&killed, "site-b", &[row("shop", "site-b", 0)], 23_300);
        watch.observe(&killed, "site-b", &[row("shop", "site-c", 1)], 23_400);
        watch.observe(&killed, "site-a", &[row("shop", "site-a", 1)], 23_500);
        assert!(watch.pending(&killed));
        watch.observe(&killed, "site-b", &[row("shop", "site-b", 1)], 23_600);
        watch.observe(&killed, "site-b", &[row("shop", "site-b", 2)], 24_600);
        assert!(watch.pending(&killed), "blog is not served yet");
        watch.observe(&killed, "site-c", &[row("blog", "site-c", 1)], 24_000);
        assert!(!watch.pending(&killed));

        let start = 1_000_000;
        // An earlier takeover (before the kill) and one by the killed site do not count.
        let events = [
            takeover("site-c", "shop", start + 5_000, 1),
            takeover("site-a", "shop", start + 21_000, 2),
            takeover("site-b", "shop", start + 23_200, 3),
            takeover("site-c", "blog", start + 23_900, 2),
        ];
        let refs: Vec<&Move> = events.iter().collect();
        let found = failovers(&killed, &refs, &watch, start);
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].to.as_deref(), Some("site-b"));
        assert_eq!(found[0].term, Some(3));
        assert_eq!(found[0].owned_at_ms, Some(23_200));
        assert_eq!(found[0].serving_at_ms, Some(23_600));
        assert_eq!(found[0].recovery_ms, Some(3_550));
        assert_eq!(found[1].to.as_deref(), Some("site-c"));
        assert_eq!(found[1].recovery_ms, Some(3_950));
        assert_eq!(recoveries(&found), [3_550.0, 3_950.0]);
        let summary = recovery_json(&found);
        assert_eq!(summary["count"], 2);
        assert_eq!(summary["max"], 3_950.0);
        assert!(failover_line(&found[0]).contains("site-a → site-b (t3)"));
        assert!(failover_line(&found[0]).ends_with("recovered in 3550 ms"));
    }

    #[test]
    fn an_account_nobody_took_over_says_so() {
        let killed = killed();
        let found = failovers(&killed, &[], &ServingWatch::default(), 0);
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].to, None);
        assert_eq!(found[0].recovery_ms, None);
        assert_eq!(recovery_json(&found)["count"], 0);
        assert_eq!(failover_json(&found[0])["to"], Value::Null);
        assert!(failover_line(&found[0]).contains("→ nobody"));
        assert!(failover_line(&found[0]).ends_with("not recovered"));
    }
}
