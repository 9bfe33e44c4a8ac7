//! A gateway's loans (`GET /v1/loans`): the servers it borrows and lends now, its counts
//! since it started, and every loan's latency; summed over the federation for the report.

use std::net::SocketAddr;

use leasehold_chaos_tests::harness::admin::get_json;
use serde_json::Value;

/// `counts` of `/v1/loans`, as the gateway defines them.
pub use leasehold_site_gateway::model::site::LoanCounts;

/// One site's `/v1/loans`, as far as the demo shows and reports it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Loans {
    /// Servers lent to this site now (`borrowed` entries, as the API gives them).
    pub borrowed: Vec<Value>,
    /// Servers this site lends out now.
    pub lent: Vec<Value>,
    pub counts: LoanCounts,
    /// Request → lent server serving, per loan, oldest first.
    pub latencies_ms: Vec<f64>,
}

/// What a gateway said about its loans.
#[derive(Debug, Clone, PartialEq)]
pub enum LoanView {
    Served(Loans),
    /// The gateway has no `/v1/loans` (a build from before loans): nothing to show.
    NotServed,
    /// It did not answer, or not as documented; the text says how.
    Unreadable(String),
}

impl LoanView {
    pub fn loans(&self) -> Option<&Loans> {
        match self {
            LoanView::Served(loans) => Some(loans),
            _ => None,
        }
    }
}

/// `GET /v1/loans` of the gateway at `admin`.
pub fn read(admin: SocketAddr) -> LoanView {
    match get_json(admin, "/v1/loans") {
        Ok(value) => parse(&value),
        // The admin API answers 404 for a route it does not have.
        Err(error) if error.starts_with("GET /v1/loans: 404") => LoanView::NotServed,
        Err(error) => LoanView::Unreadable(error),
    }
}

/// The loans in a `/v1/loans` answer; a body without `counts` is not one.
pub fn parse(value: &Value) -> LoanView {
    if !value["counts"].is_object() {
        return LoanView::Unreadable(format!("GET /v1/loans: no `counts` in {value}"));
    }
    let list = |key: &str| value[key].as_array().cloned().unwrap_or_default();
    LoanView::Served(Loans {
        borrowed: list("borrowed"),
        lent: list("lent"),
        counts: serde_json::from_value(value["counts"].clone()).unwrap_or_default(),
        latencies_ms: list("latencies_ms")
            .iter()
            .filter_map(Value::as_f64)
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_documented_answer_parses() {
        let body = json!({"site": "site-a",
            "borrowed": [{"server": "b3", "lender": "site-b", "account": "shop", "epoch": 4,
                "state": "serving", "service_addr": "127.0.0.1:8203",
                "expires_in_ms": 1800, "latency_ms": 35},
                {"server": "c2", "lender": "site-c", "account": "shop", "epoch": 2,
                "state": "starting", "service_addr": "127.0.0.1:8302",
                "expires_in_ms": 1900, "latency_ms": null}],
            "lent": [],
            "counts": {"borrowed": 2, "returned": 1, "recalled": 0, "expired": 0, "lent": 0},
            "latencies_ms": [35, 41]});
        let LoanView::Served(loans) = parse(&body) else {
            panic!("not parsed: {:?}", parse(&body));
        };
        assert_eq!(loans.counts.borrowed, 2);
        assert_eq!(loans.counts.returned, 1);
        assert_eq!(loans.latencies_ms, vec![35.0, 41.0]);
        assert_eq!(loans.borrowed.len(), 2);
        assert_eq!(loans.borrowed[0]["state"], "serving");
    }

    #[test]
    fn an_answer_without_counts_is_unreadable_and_says_so() {
        match parse(&json!({"site": "site-a"})) {
            LoanView::Unreadable(why) => assert!(why.contains("no `counts`"), "{why}"),
            other => panic!("{other:?}"),
        }
    }
}
