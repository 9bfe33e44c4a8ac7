//! The site store and the election against a real etcd (Debian's `etcd-server`) on
//! loopback: one member, or three with members killed. What is checked comes from etcd
//! itself (the keys, their revisions) and from polling both gateways' `acting()` side by
//! side: two gateways never act at once, and a deposed gateway's writes are refused.

use std::sync::Arc;
use std::time::{Duration, Instant};

use leasehold_chaos_tests::harness::etcd::{EtcdCluster, EtcdTls, etcd_available};
use leasehold_chaos_tests::harness::wait_for;
use leasehold_etcd::{Compare, Etcd, EtcdConfig, Op};
use leasehold_federation::ids::{AccountId, Epoch, ServerId, SiteId, Term};
use leasehold_site_gateway::ha::{Elector, ElectorConfig, EtcdJournal, StoreError};
use leasehold_site_gateway::model::effects::{AuditEntry, AuditKind, JournalOp};
use leasehold_site_gateway::model::election::Generation;

fn require_etcd() {
    if let Err(why) = etcd_available() {
        panic!("these tests need etcd: {why}");
    }
}

fn client(endpoints: Vec<String>) -> Arc<Etcd> {
    Arc::new(
        Etcd::new(&EtcdConfig {
            endpoints,
            ca_pem: None,
            client_pem: None,
            timeout: Duration::from_secs(1),
        })
        .expect("a client"),
    )
}

fn site() -> SiteId {
    SiteId::parse("site-a").expect("a site name")
}

fn elector(etcd: Arc<Etcd>, name: &str, ttl_s: i64) -> Elector {
    Elector::start(
        etcd,
        ElectorConfig {
            site: site(),
            name: name.to_owned(),
            record: serde_json::json!({"name": name, "management_addr": format!("127.0.0.1:{}", if name == "gw-1" { 7301 } else { 7311 })}),
            ttl_s,
            margin: Duration::from_millis(500),
            poll: Duration::from_millis(100),
        },
    )
}

fn grant(server: &str, epoch: u64) -> JournalOp {
    JournalOp::LeaseGranted {
        server: ServerId::parse(server).expect("a server name"),
        account: AccountId::parse("shop").expect("an account name"),
        epoch: Epoch::from_journal(epoch),
        lent_to: None,
    }
}

fn audit(reason: &str) -> AuditEntry {
    AuditEntry::site_wide(AuditKind::Assign, reason.to_owned())
}

/// Polls both electors until `until` holds or `timeout` passes, failing the moment both
/// act at once; returns what `until` returned.
fn watch_pair<T>(
    electors: [&Elector; 2],
    timeout: Duration,
    what: &str,
    mut until: impl FnMut([Option<Generation>; 2]) -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        let acting = [electors[0].acting(), electors[1].acting()];
        assert!(
            acting[0].is_none() || acting[1].is_none(),
            "two gateways act at once: {acting:?}"
        );
        if let Some(value) = until(acting) {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "waited {timeout:?} for {what}; last seen {acting:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn the_client_reads_writes_pages_and_fences_against_a_real_etcd() {
    require_etcd();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let cluster = EtcdCluster::start(dir.path(), 1).expect("etcd starts");
    let etcd = client(cluster.endpoints());
    // 1,500 keys, written a transaction of 100 at a time, read back in pages of 1,000.
    for chunk in 0..15 {
        let puts: Vec<Op> = (0..100)
            .map(|ix| Op::Put {
                key: format!("/t/k{:05}", chunk * 100 + ix).into_bytes(),
                value: format!("v{}", chunk * 100 + ix).into_bytes(),
                lease: 0,
            })
            .collect();
        let outcome = etcd.txn(&[], &puts, &[]).expect("a transaction");
        assert!(outcome.succeeded);
    }
    let (all, revision) = etcd.get_prefix(b"/t/").expect("a prefix read");
    assert_eq!(all.len(), 1_500);
    assert!(revision >= 15, "revision {revision}");
    assert_eq!(all[1_499].value, b"v1499");
    assert!(all.windows(2).all(|pair| pair[0].key < pair[1].key));
    // A comparison that fails runs the failure branch and writes nothing.
    let created = etcd.get(b"/t/k00007").expect("a read").expect("the key");
    let outcome = etcd
        .txn(
            &[Compare::CreatedAt {
                key: b"/t/k00007".to_vec(),
                revision: created.create_revision + 1,
            }],
            &[Op::Put {
                key: b"/t/k00007".to_vec(),
                value: b"changed".to_vec(),
                lease: 0,
            }],
            &[Op::Get {
                key: b"/t/k00007".to_vec(),
            }],
        )
        .expect("a transaction");
    assert!(!outcome.succeeded);
    assert_eq!(
        outcome.gets[0].as_ref().map(|kv| kv.value.clone()),
        Some(b"v7".to_vec())
    );
    // A lease ends its keys.
    let lease = etcd.grant(2).expect("a lease");
    assert!(lease.ttl_s >= 2);
    etcd.txn(
        &[],
        &[Op::Put {
            key: b"/t/leased".to_vec(),
            value: b"x".to_vec(),
            lease: lease.id,
        }],
        &[],
    )
    .expect("a leased put");
    assert!(etcd.keep_alive(lease.id).expect("a keep-alive").is_some());
    etcd.revoke(lease.id).expect("revoked");
    assert_eq!(etcd.get(b"/t/leased").expect("a read"), None);
    assert_eq!(etcd.keep_alive(lease.id).expect("a keep-alive"), None);
    // An endpoint that is not etcd is named in the error.
    let nowhere = client(vec!["http://127.0.0.1:9".to_owned()]);
    let error = nowhere
        .get(b"/t/k00001")
        .expect_err("nothing listens there");
    assert!(error.is_unreachable(), "{error}");
    assert!(error.to_string().contains("127.0.0.1:9"), "{error}");
}

#[test]
fn one_gateway_acts_a_handover_moves_it_and_the_deposed_ones_writes_are_refused() {
    require_etcd();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let cluster = EtcdCluster::start(dir.path(), 1).expect("etcd starts");
    let etcd = client(cluster.endpoints());
    let first = elector(etcd.clone(), "gw-1", 2);
    let second = elector(etcd.clone(), "gw-2", 2);
    let (leader, generation) = watch_pair(
        [&first, &second],
        Duration::from_secs(10),
        "a gateway to act",
        |acting| {
            acting
                .iter()
                .enumerate()
                .find_map(|(ix, g)| g.map(|g| (ix, g)))
        },
    );
    let (active, standby) = if leader == 0 {
        (&first, &second)
    } else {
        (&second, &first)
    };
    // The standby knows who is active, from the key.
    let seen = watch_pair(
        [&first, &second],
        Duration::from_secs(5),
        "the standby to name the active",
        |_| standby.active_record(),
    );
    let active_name = if leader == 0 { "gw-1" } else { "gw-2" };
    assert_eq!(seen["name"], active_name);

    // The active writes; a standby's store reads what it wrote.
    let (mut journal, recovered) =
        EtcdJournal::load(etcd.clone(), &site()).expect("an empty journal");
    assert!(recovered.leases.is_empty());
    let records = journal
        .persist(
            generation,
            &[grant("a1", 1), grant("a2", 1)],
            &[audit("a1 and a2 to shop")],
            1,
        )
        .expect("the active writes");
    assert_eq!(records[0].seq, 1);
    let (warm, recovered) = EtcdJournal::load(etcd.clone(), &site()).expect("a standby's view");
    assert_eq!(recovered.leases.len(), 2);
    assert_eq!(warm.audit_tail(10).expect("the audit log").len(), 1);

    // A handover: the other gateway acts under a higher generation.
    active.handover();
    let taken = watch_pair(
        [&first, &second],
        Duration::from_secs(10),
        "the standby to take over",
        |acting| {
            if leader == 0 { acting[1] } else { acting[0] }
        },
    );
    assert!(taken > generation, "{taken} after {generation}");
    // The deposed gateway's write is refused by etcd and changes nothing.
    let refused = journal
        .persist(generation, &[grant("a3", 1)], &[audit("a3 to shop")], 2)
        .expect_err("a deposed gateway's write");
    assert!(matches!(refused, StoreError::Fenced { .. }), "{refused}");
    let (mut current, recovered) = EtcdJournal::load(etcd.clone(), &site()).expect("the journal");
    assert_eq!(recovered.leases.len(), 2, "a3 was not written");
    // The new active writes on from the same journal; the audit log continues.
    let records = current
        .persist(taken, &[grant("a3", 2)], &[audit("a3 to shop")], 3)
        .expect("the new active writes");
    assert_eq!(records[0].seq, 2);
    assert_eq!(current.audit_after(1, 10).expect("the audit log").len(), 1);
}

#[test]
fn an_active_cut_off_from_etcd_stops_before_its_lease_ends_and_one_member_lost_stops_nothing() {
    require_etcd();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut cluster = EtcdCluster::start(dir.path(), 3).expect("three etcd members start");
    let endpoints = cluster.endpoints();
    // The first gateway reaches only member 0; the second, the others.
    let first = elector(client(vec![endpoints[0].clone()]), "gw-1", 3);
    wait_for("gw-1 to act", Duration::from_secs(10), || {
        first.acting().ok_or_else(|| "standby".to_owned())
    })
    .expect("gw-1 acts");
    let second = elector(client(endpoints[1..].to_vec()), "gw-2", 3);
    let generation = first.acting().expect("gw-1 still acts");
    std::thread::sleep(Duration::from_millis(500));
    assert!(second.acting().is_none());

    // Member 0 gone: gw-1 cannot confirm its lease and stops; gw-2 acts once etcd has
    // ended it, never before gw-1 stopped.
    let cut = Instant::now();
    cluster.kill_member(0).expect("member 0 killed");
    let mut stopped = None;
    let taken = watch_pair(
        [&first, &second],
        Duration::from_secs(20),
        "gw-2 to take over",
        |acting| {
            if acting[0].is_none() && stopped.is_none() {
                stopped = Some(cut.elapsed());
            }
            acting[1]
        },
    );
    let stopped = stopped.expect("gw-1 stopped first");
    assert!(taken > generation);
    assert!(
        stopped <= Duration::from_secs(3),
        "gw-1 acted {stopped:?} after it was cut off, past its 3 s lease"
    );
    eprintln!(
        "gw-1 stopped {stopped:?} after it was cut off; gw-2 acted {:?} after",
        cut.elapsed()
    );

    // One more member lost of three would leave no quorum; one lost (and back) must not
    // stop the site: with members 1 and 2 up, gw-2 keeps acting while member 0 restarts.
    cluster.start_member(0).expect("member 0 back");
    cluster
        .wait_healthy(Duration::from_secs(30))
        .expect("the cluster healthy again");
    let held = Instant::now();
    watch_pair(
        [&first, &second],
        Duration::from_secs(3),
        "three seconds",
        |acting| {
            assert_eq!(
                acting[1],
                Some(taken),
                "gw-2 stopped acting while a member came back"
            );
            (held.elapsed() >= Duration::from_secs(2)).then_some(())
        },
    );
}

#[test]
fn the_store_in_etcd_recovers_what_the_redb_journal_recovers_from_the_same_records() {
    require_etcd();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let cluster = EtcdCluster::start(&dir.path().join("etcd"), 1).expect("etcd starts");
    let etcd = client(cluster.endpoints());
    let only = elector(etcd.clone(), "gw-1", 2);
    let generation = wait_for("gw-1 to act", Duration::from_secs(10), || {
        only.acting().ok_or_else(|| "standby".to_owned())
    })
    .expect("gw-1 acts");
    let server = |name: &str| ServerId::parse(name).expect("a server name");
    let peer = SiteId::parse("site-b").expect("a site name");
    let batches = [
        vec![grant("a1", 1), grant("a2", 3)],
        vec![
            // A late end of an older lease leaves the newer one.
            JournalOp::LeaseEnded {
                server: server("a2"),
                epoch: Epoch::from_journal(2),
            },
            JournalOp::LeaseEnded {
                server: server("a1"),
                epoch: Epoch::from_journal(1),
            },
            JournalOp::EpochSeen {
                server: server("a3"),
                epoch: Epoch::from_journal(7),
            },
            // A lower epoch seen later does not lower it.
            JournalOp::EpochSeen {
                server: server("a3"),
                epoch: Epoch::from_journal(4),
            },
        ],
        vec![
            JournalOp::Borrowed {
                server: server("b1"),
                lender: peer.clone(),
                account: AccountId::parse("shop").expect("an account name"),
                epoch: Epoch::from_journal(2),
                service_addr: "127.0.0.1:9000".into(),
            },
            JournalOp::Borrowed {
                server: server("b2"),
                lender: peer.clone(),
                account: AccountId::parse("shop").expect("an account name"),
                epoch: Epoch::from_journal(5),
                service_addr: "127.0.0.1:9001".into(),
            },
            JournalOp::BorrowEnded {
                server: server("b2"),
                epoch: Epoch::from_journal(5),
            },
            JournalOp::Members {
                running: vec![site(), peer.clone()],
            },
            // The later term of an account replaces the earlier.
            JournalOp::Owned {
                account: AccountId::parse("shop").expect("an account name"),
                term: Term::from_journal(4),
            },
            JournalOp::Owned {
                account: AccountId::parse("shop").expect("an account name"),
                term: Term::from_journal(6),
            },
        ],
    ];
    let (mut store, _) = EtcdJournal::load(etcd.clone(), &site()).expect("an empty journal");
    let (mut redb, _) =
        leasehold_site_gateway::journal::Journal::open(&dir.path().join("redb"), &site())
            .expect("a redb journal");
    for (ix, batch) in batches.iter().enumerate() {
        let audits = [audit(&format!("batch {ix}"))];
        let ours = store
            .persist(generation, batch, &audits, ix as u64)
            .expect("etcd takes it");
        let theirs = redb
            .persist(batch, &audits, ix as u64)
            .expect("redb takes it");
        assert_eq!(
            ours.iter().map(|r| r.seq).collect::<Vec<_>>(),
            theirs.iter().map(|r| r.seq).collect::<Vec<_>>()
        );
    }
    drop(redb);
    let (_, mut from_etcd) = EtcdJournal::load(etcd.clone(), &site()).expect("the journal in etcd");
    let (_, mut from_redb) =
        leasehold_site_gateway::journal::Journal::open(&dir.path().join("redb"), &site())
            .expect("the redb journal reopens");
    for recovered in [&mut from_etcd, &mut from_redb] {
        recovered.leases.sort();
        recovered.epochs.sort();
        recovered.borrowed.sort_by(|a, b| a.server.cmp(&b.server));
    }
    assert_eq!(from_etcd, from_redb);
    assert_eq!(from_etcd.leases.len(), 1, "{from_etcd:?}");
    assert_eq!(
        from_etcd.terms,
        vec![(
            AccountId::parse("shop").expect("an account name"),
            Term::from_journal(6)
        )]
    );

    // Retention: the audit records written before the cutoff go, oldest first, and the
    // removal is itself audited; the active gateway's generation only.
    let pruned = store
        .prune_audit(generation, 2, 10, 9, "older than the test's cutoff")
        .expect("pruned")
        .expect("something was old enough");
    assert_eq!((pruned.first_seq, pruned.last_seq, pruned.count), (1, 2, 2));
    let left: Vec<u64> = store
        .audit_tail(10)
        .expect("the audit log")
        .iter()
        .map(|record| record.seq)
        .collect();
    assert_eq!(left, [3, 4]);
    assert!(
        store
            .prune_audit(Generation(generation.0 + 1), 10, 10, 9, "not ours")
            .is_err(),
        "another generation's removal"
    );
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files.
fn tls_files(dir: &std::path::Path) -> (EtcdTls, Vec<u8>, (Vec<u8>, Vec<u8>)) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    };
    let ca_key = KeyPair::generate().expect("a CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "etcd test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("the CA");
    let issuer = Issuer::from_params(&ca_params, &ca_key);
    let issue = |names: Vec<String>, usages: Vec<ExtendedKeyUsagePurpose>| {
        let key = KeyPair::generate().expect("a key");
        let mut params = CertificateParams::new(names).expect("parameters");
        params.extended_key_usages = usages;
        let cert = params.signed_by(&key, &issuer).expect("a certificate");
        (cert.pem().into_bytes(), key.serialize_pem().into_bytes())
    };
    // etcd's JSON gateway calls etcd's own gRPC with the server's certificate: with
    // client certificates required, that certificate must allow client authentication too.
    let (server_cert, server_key) = issue(
        vec!["127.0.0.1".to_owned()],
        vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
    );
    let client = issue(
        vec!["gateway".to_owned()],
        vec![ExtendedKeyUsagePurpose::ClientAuth],
    );
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.join(name);
        std::fs::write(&path, bytes).expect("write a PEM file");
        path
    };
    let tls = EtcdTls {
        ca: write("ca.crt", ca.pem().as_bytes()),
        cert: write("server.crt", &server_cert),
        key: write("server.key", &server_key),
    };
    (tls, ca.pem().into_bytes(), client)
}

#[test]
fn over_tls_the_client_proves_itself_with_its_certificate_and_checks_etcds() {
    require_etcd();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (tls, ca, client_pem) = tls_files(dir.path());
    let cluster =
        EtcdCluster::start_with(&dir.path().join("etcd"), 1, Some(tls)).expect("etcd over TLS");
    let endpoints = cluster.endpoints();
    assert!(endpoints[0].starts_with("https://"), "{endpoints:?}");
    let config = |ca: Option<Vec<u8>>, client: Option<(Vec<u8>, Vec<u8>)>| EtcdConfig {
        endpoints: endpoints.clone(),
        ca_pem: ca,
        client_pem: client,
        timeout: Duration::from_secs(1),
    };
    let etcd = Etcd::new(&config(Some(ca.clone()), Some(client_pem))).expect("a TLS client");
    etcd.put(b"/tls/k", b"v").expect("a put over TLS");
    assert_eq!(
        etcd.get(b"/tls/k")
            .expect("a get over TLS")
            .map(|kv| kv.value),
        Some(b"v".to_vec())
    );
    // Without a client certificate etcd refuses the connection.
    let anonymous = Etcd::new(&config(Some(ca), None)).expect("a client");
    let refused = anonymous.get(b"/tls/k").expect_err("no client certificate");
    assert!(refused.to_string().contains(&endpoints[0]), "{refused}");
    // A CA that did not sign etcd's certificate: the client refuses etcd.
    let (_, other_ca, other_client) = tls_files(&dir.path().join("other").tap_create());
    let distrusting = Etcd::new(&config(Some(other_ca), Some(other_client))).expect("a client");
    assert!(distrusting.get(b"/tls/k").is_err());
    // An https endpoint without a CA is refused before any request, saying what to give.
    let error = Etcd::new(&config(None, None))
        .err()
        .expect("no CA for an https endpoint");
    assert!(error.to_string().contains("etcd_ca"), "{error}");
}

trait TapCreate {
    fn tap_create(self) -> Self;
}

impl TapCreate for std::path::PathBuf {
    fn tap_create(self) -> Self {
        std::fs::create_dir_all(&self).expect("make a directory");
        self
    }
}
