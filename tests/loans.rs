//! Loans between three real gateways with real node agents and workloads on loopback:
//! borrow, renew, return, recall, a lender that vanishes and a borrower that vanishes, and
//! a replayed loan message. Every test ends by checking every node's event log: no server
//! ever ran two accounts' workloads, epochs only grew, and leases were kept (S-1..S-3).
//!
//! site-a (a1, a2) homes `shop` and lends nothing; site-b (b1..b3, `wiki`) lends up to 2,
//! site-c (c1, c2, `mail`) up to 1. Raising shop's minimum to 3 by a live edit leaves
//! site-a one server short, so it borrows one from whichever peer it asks first.

use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::os::unix::fs::PermissionsExt;

use leasehold_chaos_tests::harness::admin::{get_json, get_text};
use leasehold_chaos_tests::harness::evidence::{files_containing, node_events};
use leasehold_chaos_tests::harness::federation::Federation;
use leasehold_chaos_tests::harness::onesite::{FAST_TIMINGS, account};
use leasehold_chaos_tests::harness::site::{AccountSpec, SiteSpec};
use leasehold_node::event_log::EventKind;
use serde_json::Value;

const BINARY: &str = env!("CARGO_BIN_EXE_leasehold");
/// Generous: two cores run every process of every test of this binary at once.
const SETTLE: Duration = Duration::from_secs(40);
/// FAST_TIMINGS' lease TTL and renew interval.
const TTL: Duration = Duration::from_millis(1000);
const RENEW: Duration = Duration::from_millis(250);
const A: usize = 0;

/// shop's secret, in `shop.secrets` beside the configs; only site-a's config names it as
/// its own (the others in `[failover_secrets]`).
const SECRET: &str = "DB_PASSWORD=the shop's database password";

fn shop_with_secrets() -> AccountSpec {
    AccountSpec {
        secrets: Some("shop.secrets".into()),
        ..account("shop", 1, 4, 20)
    }
}

fn specs() -> Vec<SiteSpec> {
    let site = |name: &str, servers: &[&str], account_spec, lending| SiteSpec {
        name: name.into(),
        servers: servers.iter().map(|s| s.to_string()).collect(),
        accounts: vec![account_spec],
        timings: FAST_TIMINGS.to_vec(),
        lending,
    };
    vec![
        site("site-a", &["a1", "a2"], shop_with_secrets(), None),
        site(
            "site-b",
            &["b1", "b2", "b3"],
            account("wiki", 1, 3, 15),
            Some((0, 2)),
        ),
        site(
            "site-c",
            &["c1", "c2"],
            account("mail", 1, 1, 10),
            Some((0, 1)),
        ),
    ]
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// One federation at a time: each runs 17 processes, and four at once on two cores starve
/// node agents past the 100 ms the safety check allows them to stop late.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Every site at its minimum, then shop's minimum raised to 3: site-a borrows one server.
/// Returns the federation, the lender's index and the borrowed server's `/v1/loans` entry
/// (and the guard that keeps other tests of this file waiting).
fn borrowing() -> (MutexGuard<'static, ()>, Federation, usize, Value) {
    let turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut federation = Federation::prepare(std::path::Path::new(BINARY), specs()).unwrap();
    let secrets = federation.path("shop.secrets");
    std::fs::write(&secrets, format!("{SECRET}\n")).unwrap();
    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o600)).unwrap();
    for index in 0..3 {
        federation.start_gateway(index).unwrap();
    }
    federation.start_all_nodes().unwrap();
    for (index, name) in [(0, "shop"), (1, "wiki"), (2, "mail")] {
        federation
            .wait_json(
                index,
                "/v1/accounts",
                &format!("{name} at its minimum"),
                SETTLE,
                |v| v[0]["servers"] == 1,
            )
            .unwrap();
    }
    // Every site sees its peers up before it may choose a lender.
    federation
        .wait_json(A, "/v1/peers", "both peers up", SETTLE, |v| {
            v.as_array()
                .is_some_and(|peers| peers.len() == 2 && peers.iter().all(|p| p["state"] == "up"))
        })
        .unwrap();
    federation.specs[A].accounts[0].min_servers = 3;
    federation.edit(A).unwrap();
    let shop = federation
        .wait_json(
            A,
            "/v1/accounts",
            "shop served by 2 own + 1 borrowed",
            SETTLE,
            |v| v[0]["servers"] == 3 && v[0]["borrowed"] == 1,
        )
        .unwrap();
    let loans = get_json(federation.admin(A), "/v1/loans").unwrap();
    let loan = loans["borrowed"][0].clone();
    assert_eq!(loan["state"], "serving", "{loans}");
    assert!(loan["latency_ms"].as_u64().is_some(), "{loans}");
    let lender = federation.index(loan["lender"].as_str().unwrap());
    assert_ne!(lender, A);
    // The borrowed server is one of shop's endpoints and serves shop.
    let addr = loan["service_addr"].as_str().unwrap().to_owned();
    assert!(
        shop[0]["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == addr.as_str()),
        "{shop}"
    );
    let page = get_text(addr.parse::<SocketAddr>().unwrap(), "/").unwrap();
    assert!(page.contains("account: shop"), "{page}");
    // The lender lists it with the borrower's account.
    let server = loan["server"].as_str().unwrap();
    let servers = get_json(federation.admin(lender), "/v1/servers").unwrap();
    let listed = servers
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == server)
        .unwrap();
    assert_eq!(listed["account"], "shop", "{listed}");
    assert_eq!(listed["lent_to"], "site-a", "{listed}");
    // The borrower's secret reached the lent server's workload (in the loan request, then
    // in its pointer): the kernel's copy of the process's environment has it. No file of
    // the federation but the secret's own holds it: not a log, journal or event log.
    let pid = workload_pid(&federation, server);
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    assert!(
        environ
            .split(|byte| *byte == 0)
            .any(|pair| pair == SECRET.as_bytes()),
        "{server}'s workload (pid {pid}) lacks shop's secret"
    );
    let value = SECRET.split_once('=').unwrap().1;
    assert_eq!(
        files_containing(federation.dir(), value),
        ["shop.secrets"],
        "the secret was written down"
    );
    (turn, federation, lender, loan)
}

/// The pid of the newest workload started on `server`, from its node's event log.
fn workload_pid(federation: &Federation, server: &str) -> u32 {
    node_events(&federation.work(server))
        .unwrap()
        .iter()
        .rev()
        .find_map(|event| match event.kind {
            EventKind::WorkloadStarted { pid, .. } => Some(pid),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{server} started no workload"))
}

fn audit(federation: &Federation, index: usize) -> Vec<Value> {
    get_json(federation.admin(index), "/v1/audit?limit=1000")
        .unwrap()
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn audits_of<'a>(records: &'a [Value], kind: &str) -> Vec<&'a Value> {
    records.iter().filter(|r| r["kind"] == kind).collect()
}

fn assert_safe(federation: &Federation) {
    // 100 ms: how much later than its lease's end a node may log its workload stopped.
    let violations = federation.violations(Duration::from_millis(100)).unwrap();
    assert!(violations.is_empty(), "{violations:#?}");
}

#[test]
fn a_short_site_borrows_renews_and_returns_a_server_drained_first() {
    let (_turn, mut federation, lender, loan) = borrowing();
    // Renewed: it outlives several TTLs under the same epoch.
    std::thread::sleep(TTL * 3);
    let loans = get_json(federation.admin(A), "/v1/loans").unwrap();
    assert_eq!(loans["borrowed"][0]["epoch"], loan["epoch"], "{loans}");
    assert_eq!(loans["borrowed"][0]["state"], "serving", "{loans}");
    assert!(audits_of(&audit(&federation, A), "loan_expired").is_empty());
    assert!(audits_of(&audit(&federation, lender), "loan_expired").is_empty());

    // The need falls: site-a drains the server, returns it, and it comes home.
    federation.specs[A].accounts[0].min_servers = 1;
    federation.edit(A).unwrap();
    federation
        .wait_json(A, "/v1/loans", "the server returned", SETTLE, |v| {
            v["counts"]["returned"] == 1 && v["borrowed"].as_array().is_some_and(|b| b.is_empty())
        })
        .unwrap();
    let server = loan["server"].as_str().unwrap().to_owned();
    federation
        .wait_json(lender, "/v1/servers", "the server home", SETTLE, |v| {
            v.as_array().unwrap().iter().any(|s| {
                s["id"] == server.as_str() && s["lent_to"].is_null() && s["account"] != "shop"
            })
        })
        .unwrap();
    let returned = audits_of(&audit(&federation, lender), "loan_return").len();
    assert_eq!(returned, 1, "the lender audited the return");
    // The borrower's return came after its drain: the node log shows the workload
    // stopped after its `loan_return` decision (the drain keeps traffic off it first).
    let borrower_return = audits_of(&audit(&federation, A), "loan_return")[0]["wall_ms"]
        .as_u64()
        .unwrap();
    let lender_return = audits_of(&audit(&federation, lender), "loan_return")[0]["wall_ms"]
        .as_u64()
        .unwrap();
    assert!(
        lender_return >= borrower_return + 200,
        "returned {} ms after the decision; the drain is 200 ms",
        lender_return.saturating_sub(borrower_return)
    );

    // A replay of the old loan's renewal, as site-a, is refused and changes nothing.
    let refusal = replay_renewal(
        &federation,
        lender,
        &server,
        loan["epoch"].as_u64().unwrap(),
    );
    assert!(refusal.contains("refused"), "{refusal}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        federation.output(lender).contains("loan renewal refused"),
        "the lender logs the refusal"
    );
    let servers = get_json(federation.admin(lender), "/v1/servers").unwrap();
    assert!(
        servers
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["lent_to"].is_null()),
        "{servers}"
    );
    assert_safe(&federation);
}

/// Sends `RenewLoan` for `server` under `epoch` to site `lender` with site-a's certificate
/// over a connection of our own, and returns the answer as text.
fn replay_renewal(federation: &Federation, lender: usize, server: &str, epoch: u64) -> String {
    use leasehold_federation::ids::{Epoch, ServerId, SiteId};
    use leasehold_federation::transport::Alpn;
    use leasehold_federation::transport::certs::load_site_identity;
    use leasehold_federation::transport::endpoint::{Endpoint, Limits};
    use leasehold_federation::transport::identity::PeerName;
    use leasehold_federation::wire::site::RenewLoan;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let identity =
        load_site_identity(&federation.path("certs"), &SiteId::parse("site-a").unwrap()).unwrap();
    let target = federation.sites[lender].federation;
    let name = PeerName::Site(SiteId::parse(&federation.sites[lender].name).unwrap());
    runtime.block_on(async move {
        let endpoint = Endpoint::dial_only(
            "127.0.0.1:0".parse().unwrap(),
            &identity,
            Alpn::Site,
            Limits::default(),
        )
        .unwrap();
        let mut epoch_value = Epoch::NONE;
        for _ in 0..epoch {
            epoch_value = epoch_value.next();
        }
        let request = RenewLoan {
            server: ServerId::parse(server).unwrap(),
            epoch: epoch_value,
        };
        // The lender keeps one connection per peer: when the real site-a redials meanwhile,
        // ours is closed as replaced before the answer comes. Ask again on a new one.
        let mut failures = Vec::new();
        while failures.len() < 5 {
            let (connection, _inbox) = endpoint.connect(target, &name).await.unwrap();
            match connection
                .request_within(&request, Duration::from_secs(5))
                .await
            {
                Ok(answer) => return format!("{answer:?}").to_lowercase(),
                Err(error) => failures.push(error.to_string()),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("no answer to RenewLoan in 5 tries: {failures:#?}")
    })
}

#[test]
fn a_lender_short_of_servers_recalls_its_server_after_a_grace() {
    let (_turn, mut federation, lender, loan) = borrowing();
    // The lender's own account now needs every server it has.
    let servers = federation.sites[lender].servers.len() as u32;
    federation.specs[lender].accounts[0].min_servers = servers;
    federation.specs[lender].accounts[0].max_servers = servers;
    federation.edit(lender).unwrap();
    federation
        .wait_json(A, "/v1/loans", "the server recalled", SETTLE, |v| {
            v["counts"]["recalled"] == 1
        })
        .unwrap();
    federation
        .wait_json(
            lender,
            "/v1/accounts",
            "its account at its new minimum",
            SETTLE,
            |v| v[0]["servers"] == servers,
        )
        .unwrap();
    let recalls = audits_of(&audit(&federation, lender), "loan_recall")
        .into_iter()
        .filter(|r| r["server"] == loan["server"])
        .count();
    assert!(recalls >= 1, "the lender audited the recall");
    assert_eq!(audits_of(&audit(&federation, A), "loan_recall").len(), 1);
    assert_safe(&federation);
}

#[test]
fn when_the_lender_vanishes_the_borrower_stops_counting_at_lease_end_and_asks_elsewhere() {
    let (_turn, mut federation, lender, loan) = borrowing();
    let killed_at = now_ms();
    federation.kill_gateway(lender).unwrap();
    let loans = federation
        .wait_json(A, "/v1/loans", "the loan expired", SETTLE, |v| {
            v["counts"]["expired"] == 1
        })
        .unwrap();
    let expired = audits_of(&audit(&federation, A), "loan_expired")[0]["wall_ms"]
        .as_u64()
        .unwrap();
    // Counted until its lease ran out: at least TTL after its last renewal.
    assert!(
        expired + RENEW.as_millis() as u64 >= killed_at + TTL.as_millis() as u64 - 50,
        "stopped counting {} ms after the kill: {loans}",
        expired.saturating_sub(killed_at)
    );
    // And asks the other peer, which lends.
    let other = 3 - lender; // the sites are 0, 1, 2 and A is 0
    let other_name = federation.sites[other].name.clone();
    federation
        .wait_json(
            A,
            "/v1/loans",
            "a server from the other peer",
            SETTLE,
            |v| {
                v["borrowed"]
                    .as_array()
                    .is_some_and(|b| b.iter().any(|l| l["lender"] == other_name.as_str()))
            },
        )
        .unwrap();
    federation
        .wait_json(A, "/v1/accounts", "shop back at 3", SETTLE, |v| {
            v[0]["servers"] == 3
        })
        .unwrap();
    assert_ne!(loan["lender"], other_name.as_str());
    assert_safe(&federation);
}

#[test]
fn when_the_borrower_vanishes_the_lent_server_comes_home_when_its_loan_expires_never_before() {
    let (_turn, mut federation, lender, loan) = borrowing();
    let killed_at = now_ms();
    federation.kill_gateway(A).unwrap();
    let server = loan["server"].as_str().unwrap().to_owned();
    federation
        .wait_json(lender, "/v1/servers", "the lent server home", SETTLE, |v| {
            v.as_array()
                .unwrap()
                .iter()
                .any(|s| s["id"] == server.as_str() && s["lent_to"].is_null())
        })
        .unwrap();
    let records = audit(&federation, lender);
    let expired = audits_of(&records, "loan_expired");
    assert_eq!(expired.len(), 1, "{expired:?}");
    let at = expired[0]["wall_ms"].as_u64().unwrap();
    // The loan was renewed at most one renew interval before the kill, and runs a TTL
    // from then; the node's lease runs no longer than the loan, and the node stops its
    // workload LEASE_END_MARGIN before its lease ends (S-1): not home before.
    let margin = leasehold_node::model::LEASE_END_MARGIN.as_millis() as u64;
    assert!(
        at + RENEW.as_millis() as u64 + margin + 50 >= killed_at + TTL.as_millis() as u64,
        "home {} ms after the borrower died, before its loan ran out",
        at.saturating_sub(killed_at)
    );
    assert_safe(&federation);
}
