//! Two real QUIC endpoints on loopback, with certificates made by `leasehold certs`:
//! every message kind crosses as a request/response or one-way message on its own ALPN,
//! and peers that should not get in (a foreign CA, a site the config does not list, a node
//! on the wrong listener, a node outside the inventory) are refused with the reason.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use leasehold_federation::ids::{AccountId, Epoch, ServerId, SiteId};
use leasehold_federation::transport::Alpn;
use leasehold_federation::transport::certs::{Identity, load_node_identity, load_site_identity};
use leasehold_federation::transport::connection::{
    Connection, Inbox, InboxError, ReplyPort, RequestError, close_code,
};
use leasehold_federation::transport::endpoint::{AcceptError, Endpoint, Limits};
use leasehold_federation::transport::identity::{PeerName, PeerPolicy};
use leasehold_federation::transport::tls;
use leasehold_federation::wire::common::*;
use leasehold_federation::wire::node::*;
use leasehold_federation::wire::site::*;
use leasehold_federation::wire::{Inbound, InboundOneWay, InboundRequest};
use tempfile::TempDir;

fn leasehold(args: &[&str]) {
    let output = Command::new(env!("CARGO_BIN_EXE_leasehold"))
        .args(args)
        .output()
        .expect("run leasehold");
    assert!(
        output.status.success(),
        "leasehold {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A federation CA with certificates for site-a, site-b, site-z and nodes a1, a9 of site-a.
fn federation_certs() -> TempDir {
    let dir = TempDir::new().unwrap();
    let d = dir.path().to_str().unwrap();
    leasehold(&["certs", "init", "--dir", d]);
    for site in ["site-a", "site-b", "site-z"] {
        leasehold(&["certs", "issue", "--dir", d, "--site", site]);
    }
    for node in ["a1", "a9"] {
        leasehold(&[
            "certs", "issue", "--dir", d, "--site", "site-a", "--node", node,
        ]);
    }
    dir
}

/// Another federation's CA, which issued its own `site-b`.
fn foreign_certs() -> TempDir {
    let dir = TempDir::new().unwrap();
    let d = dir.path().to_str().unwrap();
    leasehold(&["certs", "init", "--dir", d]);
    leasehold(&["certs", "issue", "--dir", d, "--site", "site-b"]);
    dir
}

fn site(name: &str) -> SiteId {
    SiteId::parse(name).unwrap()
}
fn server(name: &str) -> ServerId {
    ServerId::parse(name).unwrap()
}
fn account() -> AccountId {
    AccountId::parse("shop").unwrap()
}
fn epoch() -> Epoch {
    Epoch::NONE.next()
}
fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}
fn limits() -> Limits {
    Limits {
        request_timeout: Duration::from_secs(5),
        ..Limits::default()
    }
}

fn site_identity(dir: &Path, name: &str) -> Identity {
    load_site_identity(dir, &site(name)).unwrap()
}

fn listen_as_site(dir: &Path, name: &str, peers: &[&str]) -> Endpoint {
    let policy = PeerPolicy::Sites(peers.iter().map(|peer| site(peer)).collect());
    Endpoint::listen(
        loopback(),
        &site_identity(dir, name),
        Alpn::Site,
        policy,
        limits(),
    )
    .unwrap()
}

/// site-a's management listener, with a1 as its whole inventory.
fn listen_as_gateway(dir: &Path) -> Endpoint {
    let policy = PeerPolicy::Nodes {
        site: site("site-a"),
        servers: BTreeSet::from([server("a1")]),
    };
    Endpoint::listen(
        loopback(),
        &site_identity(dir, "site-a"),
        Alpn::Node,
        policy,
        limits(),
    )
    .unwrap()
}

fn dial_as_node(dir: &Path, name: &str) -> Endpoint {
    let identity = load_node_identity(dir, &server(name)).unwrap();
    Endpoint::dial_only(loopback(), &identity, Alpn::Node, limits()).unwrap()
}

fn software() -> Software {
    Software {
        label: "shop-web 1.0".into(),
        command: "{leasehold}".into(),
        args: vec!["workload".into()],
        env: BTreeMap::new(),
        health_path: None,
        metrics_path: None,
        load_metric: None,
        stop_timeout_ms: 1000,
    }
}

/// Answers every site-to-site request with a recognisable response, and records one-way
/// messages, until the inbox ends.
async fn serve_site(mut inbox: Inbox) -> Vec<InboundOneWay> {
    let mut one_way = Vec::new();
    while let Some(message) = inbox.next().await {
        match message {
            Ok(Inbound::OneWay(message)) => one_way.push(message),
            Ok(Inbound::Request(request)) => answer_site_request(request).await,
            Err(InboxError::Closed { .. }) => break,
            Err(error) => panic!("unexpected inbox error: {error}"),
        }
    }
    one_way
}

async fn answer_site_request(request: InboundRequest<ReplyPort>) {
    match request {
        InboundRequest::PeerHello(hello, reply) => reply
            .send(&PeerWelcome {
                site: site("site-a"),
                config_version: hello.config_version + 1,
                generation: None,
            })
            .await
            .unwrap(),
        InboundRequest::Ping(ping, reply) => reply
            .send(&Pong {
                seq: ping.seq,
                sent_at_us: ping.sent_at_us,
            })
            .await
            .unwrap(),
        InboundRequest::RequestLoan(loan, reply) => reply
            .send(&LoanOffer::Granted {
                servers: (0..loan.count)
                    .map(|index| LentServer {
                        server: server(&format!("a{index}")),
                        epoch: epoch(),
                        service_addr: format!("127.0.0.1:{}", 8100 + index),
                        ttl_ms: 2000,
                    })
                    .collect(),
            })
            .await
            .unwrap(),
        InboundRequest::RenewLoan(renew, reply) => reply
            .send(&LoanRenewal::Renewed {
                epoch: renew.epoch,
                ttl_ms: 2000,
            })
            .await
            .unwrap(),
        InboundRequest::ReturnLoan(back, reply) => reply
            .send(&LoanReturned {
                server: back.server,
                epoch: back.epoch,
            })
            .await
            .unwrap(),
        other => panic!("a site peer sent {}", other.kind()),
    }
}

async fn accept_one(endpoint: &Endpoint) -> (Connection, Inbox) {
    let handshake = tokio::time::timeout(Duration::from_secs(10), endpoint.accept())
        .await
        .expect("a connection within 10 s")
        .expect("endpoint open");
    handshake.finish().await.expect("connection accepted")
}

/// Dials `listener` from `dialer` while the listener accepts: a QUIC handshake needs both.
async fn connect_pair(
    dialer: &Endpoint,
    listener: &Endpoint,
    expected: &PeerName,
) -> ((Connection, Inbox), (Connection, Inbox)) {
    let (dialled, accepted) = tokio::join!(
        dialer.connect(listener.local_addr().unwrap(), expected),
        accept_one(listener)
    );
    (dialled.unwrap(), accepted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sites_exchange_every_site_message_both_ways() {
    let certs = federation_certs();
    let a = listen_as_site(certs.path(), "site-a", &["site-b"]);
    let b = listen_as_site(certs.path(), "site-b", &["site-a"]);
    let ((to_a, b_inbox), (to_b, a_inbox)) =
        connect_pair(&b, &a, &PeerName::Site(site("site-a"))).await;
    assert_eq!(to_b.peer(), &PeerName::Site(site("site-b")));
    assert_eq!(to_a.peer(), &PeerName::Site(site("site-a")));
    let a_served = tokio::spawn(serve_site(a_inbox));
    let b_served = tokio::spawn(serve_site(b_inbox));

    // b → a, every request kind.
    let welcome = to_a
        .request(&PeerHello {
            site: site("site-b"),
            config_version: 4,
            generation: None,
        })
        .await
        .unwrap();
    assert_eq!(welcome.config_version, 5);
    let pong = to_a
        .request(&Ping {
            seq: 9,
            sent_at_us: 77,
        })
        .await
        .unwrap();
    assert_eq!((pong.seq, pong.sent_at_us), (9, 77));
    match to_a
        .request(&RequestLoan {
            account: account(),
            count: 2,
            handback: false,
            secrets: Default::default(),
        })
        .await
        .unwrap()
    {
        LoanOffer::Granted { servers } => assert_eq!(servers.len(), 2),
        other => panic!("expected a grant, got {other:?}"),
    }
    let renewal = to_a
        .request(&RenewLoan {
            server: server("a0"),
            epoch: epoch(),
        })
        .await
        .unwrap();
    assert_eq!(
        renewal,
        LoanRenewal::Renewed {
            epoch: epoch(),
            ttl_ms: 2000
        }
    );
    let returned = to_a
        .request(&ReturnLoan {
            server: server("a0"),
            epoch: epoch(),
        })
        .await
        .unwrap();
    assert_eq!(returned.server, server("a0"));
    // a → b over the same connection: requests go both ways.
    let pong = to_b
        .request(&Ping {
            seq: 1,
            sent_at_us: 2,
        })
        .await
        .unwrap();
    assert_eq!(pong.seq, 1);

    // b → a, every one-way kind.
    let catalogue = AccountCatalogue {
        site: site("site-b"),
        version: 1,
        accounts: vec![AccountSpec {
            name: account(),
            home: site("site-b"),
            min_servers: 1,
            max_servers: 3,
            priority: 5,
            target_load: 10.0,
            failover: vec![site("site-a")],
            pinned: false,
            software: software(),
            data: DataRef {
                dir: "data/shop".into(),
            },
        }],
    };
    to_a.send(&catalogue).await.unwrap();
    to_a.send(&RecallLoan {
        server: server("a0"),
        epoch: epoch(),
        grace_ms: 100,
    })
    .await
    .unwrap();
    to_a.send(&LentServerStatus {
        server: server("a0"),
        epoch: epoch(),
        account: account(),
        health: Health::Healthy,
        load: Some(3.0),
    })
    .await
    .unwrap();

    // One-way messages are unacknowledged; a final request on the same connection
    // gives them time to land before we close.
    to_a.request(&Ping {
        seq: 2,
        sent_at_us: 0,
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    to_a.close(close_code::DONE, "test over");
    let received = a_served.await.unwrap();
    let kinds: BTreeSet<&str> = received.iter().map(|message| message.kind()).collect();
    assert_eq!(
        kinds,
        BTreeSet::from(["AccountCatalogue", "LentServerStatus", "RecallLoan"])
    );
    assert!(received.contains(&InboundOneWay::AccountCatalogue(catalogue)));
    b_served.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_and_its_gateway_exchange_every_management_message() {
    let certs = federation_certs();
    let gateway = listen_as_gateway(certs.path());
    let node = dial_as_node(certs.path(), "a1");
    let ((to_gateway, mut node_inbox), (to_node, mut gateway_inbox)) =
        connect_pair(&node, &gateway, &PeerName::Site(site("site-a"))).await;
    assert_eq!(
        to_node.peer(),
        &PeerName::Node {
            site: site("site-a"),
            server: server("a1")
        }
    );

    // The gateway answers the node's requests and renewals and collects its one-way
    // messages.
    let answering = to_node.clone();
    let gateway_side = tokio::spawn(async move {
        let mut one_way = Vec::new();
        while let Some(message) = gateway_inbox.next().await {
            match message {
                Ok(Inbound::Request(InboundRequest::RegisterServer(register, reply))) => {
                    assert_eq!(register.server, server("a1"));
                    reply
                        .send(&Registration::Accepted {
                            site: site("site-a"),
                            heartbeat_interval_ms: 250,
                            lease_ttl_ms: 2000,
                            renew_interval_ms: 500,
                            service_addr: "127.0.0.1:8101".into(),
                            generation: None,
                        })
                        .await
                        .unwrap();
                }
                Ok(Inbound::Request(other)) => panic!("node sent {}", other.kind()),
                Ok(Inbound::OneWay(InboundOneWay::Pulse(pulse))) => {
                    if let Some(epoch) = pulse.renew {
                        let answer = PulseAnswer {
                            seq: pulse.seq,
                            renewal: LeaseRenewal::Renewed {
                                epoch,
                                ttl_ms: 2000,
                            },
                            generation: None,
                        };
                        answering.send_datagram(&answer).unwrap();
                    }
                    one_way.push("Pulse");
                }
                Ok(Inbound::OneWay(message)) => one_way.push(message.kind()),
                Err(_) => break,
            }
        }
        one_way
    });
    // The node answers the gateway's commands and passes on its answers to renewals.
    let (answers, mut answered) = tokio::sync::mpsc::unbounded_channel();
    let node_side = tokio::spawn(async move {
        let mut applied = Vec::new();
        while let Some(Ok(message)) = node_inbox.next().await {
            match message {
                Inbound::OneWay(InboundOneWay::PulseAnswer(answer)) => {
                    answers.send(answer).unwrap();
                }
                Inbound::Request(InboundRequest::ApplyPointer(apply, reply)) => {
                    applied.push(apply.pointer.epoch);
                    reply
                        .send(&PointerApplication::Accepted {
                            epoch: apply.pointer.epoch,
                        })
                        .await
                        .unwrap();
                }
                Inbound::Request(InboundRequest::StopWorkload(stop, reply)) => reply
                    .send(&StopOutcome::Stopped { epoch: stop.epoch })
                    .await
                    .unwrap(),
                other => panic!("gateway sent {other:?}"),
            }
        }
        applied
    });

    let registration = to_gateway
        .request(&RegisterServer {
            server: server("a1"),
            agent_version: "test".into(),
            running: None,
            highest_epoch: Epoch::NONE,
            boot: None,
        })
        .await
        .unwrap();
    assert!(matches!(
        registration,
        Registration::Accepted {
            lease_ttl_ms: 2000,
            ..
        }
    ));
    let application = to_node
        .request(&ApplyPointer {
            server: server("a1"),
            pointer: InitPointer {
                account: account(),
                software: software(),
                data: DataRef {
                    dir: "data/shop".into(),
                },
                epoch: epoch(),
                secrets: Default::default(),
            },
            generation: None,
        })
        .await
        .unwrap();
    assert_eq!(application, PointerApplication::Accepted { epoch: epoch() });
    // A pulse that asks for a renewal is answered in a datagram repeating its seq. A
    // datagram may be lost, so the node pulses again until answered, as agents do.
    let mut seq = 0;
    let answer = loop {
        seq += 1;
        to_gateway
            .send_datagram(&Pulse {
                seq,
                health: Health::Healthy,
                load: Some(1.5),
                renew: Some(epoch()),
            })
            .unwrap();
        match tokio::time::timeout(Duration::from_millis(500), answered.recv()).await {
            Ok(Some(answer)) => break answer,
            Ok(None) => panic!("the node side ended"),
            Err(_) => assert!(seq < 20, "no answer to 20 pulses"),
        }
    };
    assert!(answer.seq <= seq, "{answer:?}");
    assert!(matches!(answer.renewal, LeaseRenewal::Renewed { .. }));
    to_gateway
        .send(&WorkloadJoined {
            server: server("a1"),
            account: account(),
            epoch: epoch(),
            start_ms: 40,
        })
        .await
        .unwrap();
    to_gateway
        .send(&WorkloadFailed {
            server: server("a1"),
            account: account(),
            epoch: epoch(),
            reason: "health check failed".into(),
        })
        .await
        .unwrap();
    to_gateway
        .send(&WorkloadStopped {
            server: server("a1"),
            account: account(),
            epoch: epoch(),
            cause: StopCause::Commanded,
        })
        .await
        .unwrap();
    let stopped = to_node
        .request(&StopWorkload {
            server: server("a1"),
            epoch: epoch(),
            drain_ms: 0,
            reason: "test".into(),
            generation: None,
        })
        .await
        .unwrap();
    assert_eq!(stopped, StopOutcome::Stopped { epoch: epoch() });

    tokio::time::sleep(Duration::from_millis(200)).await;
    to_node.close(close_code::DONE, "test over");
    let mut one_way = gateway_side.await.unwrap();
    one_way.sort();
    one_way.dedup();
    assert_eq!(
        one_way,
        [
            "Pulse",
            "WorkloadFailed",
            "WorkloadJoined",
            "WorkloadStopped"
        ]
    );
    assert_eq!(node_side.await.unwrap(), vec![epoch()]);
}

/// Dials `listener` as `identity` and expects the listener to refuse it. Returns the
/// listener's refusal reason, after checking the dialer could not use the connection.
async fn refused_reason(
    listener: &Endpoint,
    identity: &Identity,
    alpn: Alpn,
    expected: &PeerName,
) -> String {
    let dialer = Endpoint::dial_only(loopback(), identity, alpn, limits()).unwrap();
    let addr = listener.local_addr().unwrap();
    let dialed = tokio::spawn({
        let expected = expected.clone();
        async move {
            match dialer.connect(addr, &expected).await {
                // TLS 1.3: the client may finish its handshake before the server refuses its
                // certificate; then its first request fails.
                Ok((connection, _inbox)) => {
                    let answer = connection
                        .request_within(
                            &Ping {
                                seq: 1,
                                sent_at_us: 0,
                            },
                            Duration::from_secs(5),
                        )
                        .await;
                    assert!(answer.is_err(), "a refused peer got an answer: {answer:?}");
                    answer.unwrap_err().to_string()
                }
                Err(error) => error.to_string(),
            }
        }
    });
    let handshake = tokio::time::timeout(Duration::from_secs(10), listener.accept())
        .await
        .expect("an attempt within 10 s")
        .expect("endpoint open");
    let reason = match handshake.finish().await {
        Err(AcceptError::Refused { reason, .. }) => reason,
        Ok((connection, _)) => panic!("{} was let in", connection.peer()),
    };
    let client_side = dialed.await.unwrap();
    assert!(!client_side.is_empty());
    reason
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_with_a_certificate_from_a_foreign_ca_is_refused() {
    let certs = federation_certs();
    let foreign = foreign_certs();
    let a = listen_as_site(certs.path(), "site-a", &["site-b"]);
    let impostor = site_identity(foreign.path(), "site-b");
    let reason = refused_reason(&a, &impostor, Alpn::Site, &PeerName::Site(site("site-a"))).await;
    assert!(reason.contains("UnknownIssuer"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_certificate_for_a_site_the_config_does_not_list_is_refused() {
    let certs = federation_certs();
    let a = listen_as_site(certs.path(), "site-a", &["site-b"]);
    let stranger = site_identity(certs.path(), "site-z");
    let reason = refused_reason(&a, &stranger, Alpn::Site, &PeerName::Site(site("site-a"))).await;
    assert!(
        reason.contains(
            "certificate names site `site-z`, which this site's config does not list as a peer"
        ),
        "{reason}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_are_refused_on_the_site_listener_and_outside_the_inventory() {
    let certs = federation_certs();
    let a1 = load_node_identity(certs.path(), &server("a1")).unwrap();
    let federation = listen_as_site(certs.path(), "site-a", &["site-b"]);
    // Same CA, valid node certificate, wrong listener: the ALPN differs, and even with the
    // site ALPN the policy refuses a node.
    let reason = refused_reason(
        &federation,
        &a1,
        Alpn::Site,
        &PeerName::Site(site("site-a")),
    )
    .await;
    assert!(
        reason.contains("this is the site-to-site listener"),
        "{reason}"
    );
    let reason = refused_reason(
        &federation,
        &a1,
        Alpn::Node,
        &PeerName::Site(site("site-a")),
    )
    .await;
    assert!(
        reason.contains("peer doesn't support any known protocol"),
        "{reason}"
    );

    let management = listen_as_gateway(certs.path());
    let a9 = load_node_identity(certs.path(), &server("a9")).unwrap();
    let reason = refused_reason(
        &management,
        &a9,
        Alpn::Node,
        &PeerName::Site(site("site-a")),
    )
    .await;
    assert!(
        reason.contains("node `a9` is not in site-a's inventory"),
        "{reason}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_dials_the_wrong_site_name_is_not_fooled() {
    let certs = federation_certs();
    let a = listen_as_site(certs.path(), "site-a", &["site-b"]);
    let b = listen_as_site(certs.path(), "site-b", &["site-a"]);
    // b thinks it dials site-z; site-a's certificate does not name site-z.
    let wrong_name = PeerName::Site(site("site-z"));
    let (dialled, accepted) =
        tokio::join!(b.connect(a.local_addr().unwrap(), &wrong_name), async {
            a.accept().await.expect("endpoint open").finish().await
        });
    let error = dialled.unwrap_err();
    assert!(
        error
            .to_string()
            .contains("certificate not valid for name \"site-z.site.leasehold\""),
        "{error}"
    );
    assert!(
        accepted.is_err(),
        "site-a kept a connection its dialler gave up"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_the_peers_role_may_not_send_closes_the_connection_with_the_reason() {
    let certs = federation_certs();
    let gateway = listen_as_gateway(certs.path());
    let node = dial_as_node(certs.path(), "a1");
    let ((to_gateway, _node_inbox), (_to_node, mut gateway_inbox)) =
        connect_pair(&node, &gateway, &PeerName::Site(site("site-a"))).await;

    // A node asking for a loan: a real message kind, but only sites may send it.
    let answer = to_gateway
        .request(&RequestLoan {
            account: account(),
            count: 1,
            handback: false,
            secrets: Default::default(),
        })
        .await;
    match gateway_inbox.next().await {
        Some(Err(InboxError::ProtocolViolation { source, .. })) => assert_eq!(
            source.to_string(),
            "message `RequestLoan` is not valid here: the peer's role may not send it"
        ),
        other => panic!("expected a protocol violation, got {other:?}"),
    }
    match answer {
        Err(RequestError::Read { .. }) | Err(RequestError::ConnectionLost { .. }) => {}
        other => panic!("the node should have lost its request, got {other:?}"),
    }
    match to_gateway.closed().await {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(close.error_code, close_code::PROTOCOL_VIOLATION.into());
            assert!(String::from_utf8_lossy(&close.reason).contains("RequestLoan"));
        }
        other => panic!("expected an application close, got {other}"),
    }
}

/// Bytes that are not a message (garbage, a truncated frame, an oversized frame) close the
/// connection with a reason that names the problem. Sent through a raw quinn connection
/// built from the same TLS config, since our own API cannot send malformed frames.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_close_the_connection_with_the_reason() {
    let certs = federation_certs();
    let cases: [(&str, Vec<u8>); 3] = [
        ("not a CBOR envelope", {
            let mut frame = 12u32.to_be_bytes().to_vec();
            frame.extend_from_slice(b"\x1cgarbage!!!!");
            frame
        }),
        ("frame truncated", {
            let mut frame = 100u32.to_be_bytes().to_vec();
            frame.extend_from_slice(b"short");
            frame
        }),
        (
            "more than the limit",
            (64 * 1024 * 1024u32).to_be_bytes().to_vec(),
        ),
    ];
    for (expected, bytes) in cases {
        let a = listen_as_site(certs.path(), "site-a", &["site-b"]);
        let raw = raw_client(&site_identity(certs.path(), "site-b"));
        let connecting = raw
            .connect(
                a.local_addr().unwrap(),
                &PeerName::Site(site("site-a")).dns_name(),
            )
            .unwrap();
        let (connection, (_peer, mut inbox)) = tokio::join!(connecting, accept_one(&a));
        let connection = connection.unwrap();
        let mut stream = connection.open_uni().await.unwrap();
        stream.write_all(&bytes).await.unwrap();
        stream.finish().unwrap();
        match inbox.next().await {
            Some(Err(InboxError::ProtocolViolation { source, .. })) => {
                assert!(
                    source.to_string().contains(expected),
                    "{expected}: {source}"
                )
            }
            other => panic!("{expected}: expected a protocol violation, got {other:?}"),
        }
        match connection.closed().await {
            quinn::ConnectionError::ApplicationClosed(close) => {
                assert_eq!(close.error_code, close_code::PROTOCOL_VIOLATION.into());
                let reason = String::from_utf8_lossy(&close.reason).to_string();
                assert!(reason.contains(expected), "{expected}: {reason}");
            }
            other => panic!("{expected}: expected an application close, got {other}"),
        }
    }
}

fn raw_client(identity: &Identity) -> quinn::Endpoint {
    let tls = tls::client_config(identity, Alpn::Site).unwrap();
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut endpoint = quinn::Endpoint::client(loopback()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    endpoint
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_request_times_out_as_maybe_done() {
    let certs = federation_certs();
    let a = listen_as_site(certs.path(), "site-a", &["site-b"]);
    let b = listen_as_site(certs.path(), "site-b", &["site-a"]);
    let ((to_a, _b_inbox), (_to_b, mut a_inbox)) =
        connect_pair(&b, &a, &PeerName::Site(site("site-a"))).await;
    let held = tokio::spawn(async move {
        // Hold the reply without answering until the requester has given up.
        let request = a_inbox.next().await;
        tokio::time::sleep(Duration::from_millis(800)).await;
        drop(request);
    });
    let answer = to_a
        .request_within(
            &Ping {
                seq: 1,
                sent_at_us: 0,
            },
            Duration::from_millis(300),
        )
        .await;
    assert!(
        matches!(answer, Err(RequestError::TimedOut { kind: "Ping", .. })),
        "{answer:?}"
    );
    held.await.unwrap();
}
