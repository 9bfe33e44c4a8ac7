//! Every message kind round-trips through envelope, CBOR and frame, and reaches the typed
//! dispatcher as itself; golden encodings pin the wire format of version 1 and of the
//! management protocols `leasehold-node/2` and `leasehold-node/1`.

use std::collections::{BTreeMap, BTreeSet};

use leasehold_federation::ids::{AccountId, Epoch, ServerId, SiteId, Term};
use leasehold_federation::wire::catalogue::{
    DATAGRAM_KINDS, ONE_WAY_KINDS, REQUEST_KINDS, RESPONSE_KINDS, open_inbound_datagram,
    open_inbound_one_way, open_inbound_request,
};
use leasehold_federation::wire::common::*;
use leasehold_federation::wire::frame::DEFAULT_MAX_FRAME_BYTES;
use leasehold_federation::wire::node::*;
use leasehold_federation::wire::node_v1::*;
use leasehold_federation::wire::site::*;
use leasehold_federation::wire::{Envelope, Message, Sender};

fn server() -> ServerId {
    ServerId::parse("a1").unwrap()
}
fn site() -> SiteId {
    SiteId::parse("site-a").unwrap()
}
fn account() -> AccountId {
    AccountId::parse("shop").unwrap()
}
fn epoch() -> Epoch {
    Epoch::from_journal(7)
}
fn software() -> Software {
    Software {
        label: "shop-web 1.0".into(),
        command: "{leasehold}".into(),
        args: vec![
            "workload".into(),
            "--listen".into(),
            "{service_addr}".into(),
        ],
        env: BTreeMap::from([("GREETING".into(), "hello".into())]),
        health_path: Some("/health".into()),
        metrics_path: Some("/metrics".into()),
        load_metric: Some("leasehold_workload_load".into()),
        stop_timeout_ms: 2000,
    }
}
fn refusal() -> Refusal {
    Refusal {
        cause: RefusalCause::StaleEpoch { seen: epoch() },
        detail: "epoch e6 is older than e7".into(),
    }
}

/// Seals, frames, unframes and opens `message`; returns the envelope it travelled in.
fn round_trip<M: Message + PartialEq + std::fmt::Debug>(message: M) -> Envelope {
    let framed = Envelope::frame(99, &message, DEFAULT_MAX_FRAME_BYTES).unwrap();
    let envelope = Envelope::from_frame(&framed, DEFAULT_MAX_FRAME_BYTES).unwrap();
    assert_eq!(envelope.id, 99);
    assert_eq!(envelope.kind, M::KIND);
    assert_eq!(envelope.open::<M>().unwrap(), message);
    envelope
}

fn secrets() -> Secrets {
    Secrets::new(BTreeMap::from([(
        "DB_PASSWORD".to_owned(),
        "hunter2".to_owned(),
    )]))
}

/// A pointer's secrets never show in a log line: `Debug` names them, nothing more.
#[test]
fn secrets_are_named_but_never_shown_by_debug() {
    let shown = format!("{:?}", secrets());
    assert_eq!(shown, "{\"DB_PASSWORD\"}");
    let request = RequestLoan {
        account: account(),
        count: 1,
        handback: false,
        secrets: secrets(),
    };
    assert!(!format!("{request:?}").contains("hunter2"));
}

/// One sample of every kind (two for some responses), each checked by `round_trip`.
fn samples() -> Vec<Envelope> {
    let running = Some(RunningWorkload {
        account: account(),
        epoch: epoch(),
    });
    let pointer = InitPointer {
        account: account(),
        software: software(),
        data: DataRef {
            dir: "data/shop".into(),
        },
        epoch: epoch(),
        secrets: secrets(),
    };
    vec![
        // node → gateway
        round_trip(RegisterServer {
            server: server(),
            agent_version: "0.1.0".into(),
            running: running.clone(),
            highest_epoch: epoch(),
            boot: None,
        }),
        round_trip(RegisterServer {
            server: server(),
            agent_version: "0.1.0".into(),
            running: None,
            highest_epoch: Epoch::NONE,
            boot: Some(BootClaim {
                epoch: epoch(),
                token: "k3Yq_token-1".into(),
            }),
        }),
        round_trip(Registration::Accepted {
            site: site(),
            heartbeat_interval_ms: 250,
            lease_ttl_ms: 2000,
            renew_interval_ms: 500,
            service_addr: "127.0.0.1:8101".into(),
            generation: None,
        }),
        round_trip(Registration::Accepted {
            site: site(),
            heartbeat_interval_ms: 250,
            lease_ttl_ms: 8000,
            renew_interval_ms: 500,
            service_addr: "127.0.0.1:8101".into(),
            generation: Some(41),
        }),
        round_trip(Registration::Refused(refusal())),
        // node → gateway, protocol 1 only
        round_trip(RenewLease {
            server: server(),
            epoch: epoch(),
        }),
        round_trip(LeaseRenewal::Renewed {
            epoch: epoch(),
            ttl_ms: 2000,
        }),
        round_trip(LeaseRenewal::Refused(refusal())),
        round_trip(Heartbeat {
            server: server(),
            seq: 12,
            running: running.clone(),
            health: Health::Unhealthy {
                reason: "GET /health answered 503".into(),
            },
            load: Some(17.5),
        }),
        round_trip(Pulse {
            seq: 12,
            health: Health::Unhealthy {
                reason: "GET /health answered 503".into(),
            },
            load: Some(17.5),
            renew: Some(epoch()),
        }),
        round_trip(WorkloadJoined {
            server: server(),
            account: account(),
            epoch: epoch(),
            start_ms: 120,
        }),
        round_trip(WorkloadFailed {
            server: server(),
            account: account(),
            epoch: epoch(),
            reason: "exited with 1 before its health check passed".into(),
        }),
        round_trip(WorkloadStopped {
            server: server(),
            account: account(),
            epoch: epoch(),
            cause: StopCause::Exited { code: Some(1) },
        }),
        // gateway → node
        round_trip(PulseAnswer {
            seq: 12,
            renewal: LeaseRenewal::Renewed {
                epoch: epoch(),
                ttl_ms: 2000,
            },
            generation: None,
        }),
        round_trip(PulseAnswer {
            seq: 13,
            renewal: LeaseRenewal::Refused(refusal()),
            generation: Some(41),
        }),
        round_trip(ApplyPointer {
            server: server(),
            pointer: pointer.clone(),
            generation: None,
        }),
        round_trip(ApplyPointer {
            server: server(),
            pointer,
            generation: Some(41),
        }),
        round_trip(PointerApplication::Accepted { epoch: epoch() }),
        round_trip(PointerApplication::Refused(refusal())),
        round_trip(StopWorkload {
            server: server(),
            epoch: epoch(),
            drain_ms: 1000,
            reason: "moving to blog".into(),
            generation: Some(41),
        }),
        round_trip(StopOutcome::Stopped { epoch: epoch() }),
        // site ↔ site
        round_trip(PeerHello {
            site: site(),
            config_version: 3,
            generation: None,
        }),
        round_trip(PeerHello {
            site: site(),
            config_version: 3,
            generation: Some(41),
        }),
        round_trip(PeerWelcome {
            site: SiteId::parse("site-b").unwrap(),
            config_version: 5,
            generation: None,
        }),
        round_trip(Ping {
            seq: 1,
            sent_at_us: 123_456,
        }),
        round_trip(Pong {
            seq: 1,
            sent_at_us: 123_456,
        }),
        round_trip(AccountCatalogue {
            site: site(),
            version: 4,
            accounts: vec![AccountSpec {
                name: account(),
                home: site(),
                min_servers: 1,
                max_servers: 4,
                priority: 20,
                target_load: 20.0,
                failover: vec![SiteId::parse("site-b").unwrap()],
                pinned: false,
                software: software(),
                data: DataRef {
                    dir: "data/shop".into(),
                },
            }],
        }),
        round_trip(RequestLoan {
            account: account(),
            count: 2,
            handback: false,
            secrets: secrets(),
        }),
        round_trip(LoanOffer::Granted {
            servers: vec![LentServer {
                server: ServerId::parse("b1").unwrap(),
                epoch: epoch(),
                service_addr: "127.0.0.1:8201".into(),
                ttl_ms: 2000,
            }],
        }),
        round_trip(LoanOffer::Refused(Refusal {
            cause: RefusalCause::NothingToSpare,
            detail: "reserve of 1 reached".into(),
        })),
        round_trip(RenewLoan {
            server: server(),
            epoch: epoch(),
        }),
        round_trip(LoanRenewal::Renewed {
            epoch: epoch(),
            ttl_ms: 2000,
        }),
        round_trip(ReturnLoan {
            server: server(),
            epoch: epoch(),
        }),
        round_trip(LoanReturned {
            server: server(),
            epoch: epoch(),
        }),
        round_trip(RecallLoan {
            server: server(),
            epoch: epoch(),
            grace_ms: 3000,
        }),
        round_trip(LentServerStatus {
            server: server(),
            epoch: epoch(),
            account: account(),
            health: Health::Healthy,
            load: None,
        }),
        round_trip(ClaimOwnership {
            claims: vec![OwnershipClaim {
                account: account(),
                term: Term::NONE.next(),
                round: 7,
            }],
            members: None,
        }),
        round_trip(ClaimOwnership {
            claims: Vec::new(),
            members: Some(MembershipReport {
                running: vec![
                    SiteId::parse("site-a").unwrap(),
                    SiteId::parse("site-b").unwrap(),
                ],
                wanted: ["site-a", "site-b", "site-c"]
                    .map(|s| SiteId::parse(s).unwrap())
                    .to_vec(),
                change: 9,
                seen: vec![(SiteId::parse("site-b").unwrap(), 4)],
            }),
        }),
        round_trip(OwnershipVotes {
            votes: vec![
                OwnershipVote {
                    account: account(),
                    round: 7,
                    vote: Vote::Granted {
                        term: Term::NONE.next(),
                    },
                },
                OwnershipVote {
                    account: account(),
                    round: 8,
                    vote: Vote::Held {
                        holder: site(),
                        term: Term::NONE.next(),
                        for_ms: 1200,
                    },
                },
            ],
        }),
        round_trip(ReleaseOwnership {
            releases: vec![OwnershipRelease {
                successor: None,
                account: account(),
                term: Term::NONE.next(),
            }],
        }),
    ]
}

#[test]
fn every_kind_in_the_catalogue_has_a_round_tripping_sample() {
    let sampled: BTreeSet<String> = samples()
        .into_iter()
        .map(|envelope| envelope.kind)
        .collect();
    let catalogue: BTreeSet<String> = REQUEST_KINDS
        .iter()
        .chain(ONE_WAY_KINDS)
        .chain(DATAGRAM_KINDS)
        .map(|(kind, _)| kind.to_string())
        .chain(RESPONSE_KINDS.iter().map(|kind| kind.to_string()))
        .collect();
    assert_eq!(
        sampled, catalogue,
        "every message kind needs a sample here, and every sample a catalogue entry"
    );
}

#[test]
fn the_dispatcher_opens_every_kind_as_itself_from_its_sender() {
    for (kind, sender) in REQUEST_KINDS {
        let envelope = sample_envelope(kind);
        let request = open_inbound_request(&envelope, *sender, ()).unwrap();
        assert_eq!(request.kind(), *kind);
    }
    for (kind, sender) in ONE_WAY_KINDS {
        let envelope = sample_envelope(kind);
        let message = open_inbound_one_way(&envelope, *sender).unwrap();
        assert_eq!(message.kind(), *kind);
    }
    for (kind, sender) in DATAGRAM_KINDS {
        let envelope = sample_envelope(kind);
        let message = open_inbound_datagram(&envelope, *sender).unwrap();
        assert_eq!(message.kind(), *kind);
    }
}

#[test]
fn a_kind_from_the_wrong_role_is_refused_by_name() {
    let pulse = sample_envelope("Pulse");
    let error = open_inbound_datagram(&pulse, Sender::Gateway).unwrap_err();
    assert_eq!(
        error.to_string(),
        "message `Pulse` is not valid here: the peer's role may not send it"
    );
    let apply = sample_envelope("ApplyPointer");
    let error = open_inbound_request(&apply, Sender::Node, ()).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("the peer's role may not send it"),
        "{error}"
    );
    // A request sent as a one-way message, a response sent as a request, a datagram kind
    // on a stream and a stream kind in a datagram.
    let error = open_inbound_one_way(&sample_envelope("RegisterServer"), Sender::Node).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("it does not travel on a one-way stream"),
        "{error}"
    );
    let error = open_inbound_request(&sample_envelope("Pong"), Sender::Site, ()).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("it does not travel on a request stream"),
        "{error}"
    );
    let error = open_inbound_one_way(&pulse, Sender::Node).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("it does not travel on a one-way stream"),
        "{error}"
    );
    let joined = sample_envelope("WorkloadJoined");
    let error = open_inbound_datagram(&joined, Sender::Node).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("it does not travel in a datagram"),
        "{error}"
    );
}

/// The sample envelope of `kind`.
fn sample_envelope(kind: &str) -> Envelope {
    samples()
        .into_iter()
        .find(|envelope| envelope.kind == kind)
        .unwrap_or_else(|| panic!("no sample for {kind}"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Golden samples: if one of these changes, the wire format changed, and peers of an
/// older build would misread us. Bump `WIRE_VERSION` (or, for the management channel, its
/// protocol `leasehold-node/N`) instead.
#[test]
fn golden_encodings_do_not_change() {
    let ping = Envelope::seal(
        42,
        &Ping {
            seq: 3,
            sent_at_us: 1_000_000,
        },
    )
    .unwrap();
    assert_eq!(hex(&ping.to_bytes().unwrap()), GOLDEN_PING);
    let pulse = Envelope::seal(
        0,
        &Pulse {
            seq: 12,
            health: Health::Healthy,
            load: Some(17.5),
            renew: Some(epoch()),
        },
    )
    .unwrap();
    assert_eq!(hex(&pulse.to_bytes().unwrap()), GOLDEN_PULSE);
    let answer = Envelope::seal(
        0,
        &PulseAnswer {
            seq: 12,
            renewal: LeaseRenewal::Renewed {
                epoch: epoch(),
                ttl_ms: 2000,
            },
            generation: None,
        },
    )
    .unwrap();
    assert_eq!(hex(&answer.to_bytes().unwrap()), GOLDEN_PULSE_ANSWER);
}

/// The messages of `leasehold-node/1` that protocol 2 replaced, as that protocol's builds
/// encode them: a gateway of this build reads an agent of the previous protocol, and an
/// agent of this build that lands on a gateway of it writes what that gateway reads. The
/// first two are the encodings that protocol 1's own golden test pinned (commit c3acba1^).
#[test]
fn golden_encodings_of_management_protocol_1_do_not_change() {
    let renew = Envelope::seal(
        42,
        &RenewLease {
            server: server(),
            epoch: epoch(),
        },
    )
    .unwrap();
    assert_eq!(hex(&renew.to_bytes().unwrap()), GOLDEN_RENEW_LEASE);
    let renewed = Envelope::seal(
        42,
        &LeaseRenewal::Renewed {
            epoch: epoch(),
            ttl_ms: 2000,
        },
    )
    .unwrap();
    assert_eq!(hex(&renewed.to_bytes().unwrap()), GOLDEN_LEASE_RENEWED);
    let heartbeat = Envelope::seal(
        0,
        &Heartbeat {
            server: server(),
            seq: 12,
            running: None,
            health: Health::Healthy,
            load: Some(17.5),
        },
    )
    .unwrap();
    assert_eq!(hex(&heartbeat.to_bytes().unwrap()), GOLDEN_HEARTBEAT);
    // And each decodes from those bytes as itself.
    let bytes = (0..GOLDEN_RENEW_LEASE.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&GOLDEN_RENEW_LEASE[at..at + 2], 16).unwrap())
        .collect::<Vec<u8>>();
    let envelope = Envelope::from_bytes(&bytes).unwrap();
    assert_eq!(
        envelope.open::<RenewLease>().unwrap(),
        RenewLease {
            server: server(),
            epoch: epoch()
        }
    );
}

const GOLDEN_RENEW_LEASE: &str = "a4617601646b696e646a52656e65774c65617365626964182a64626f647952a2667365727665726261316565706f636807";
const GOLDEN_LEASE_RENEWED: &str = "a4617601646b696e646c4c6561736552656e6577616c626964182a64626f6479581ba16752656e65776564a26565706f6368076674746c5f6d731907d0";
const GOLDEN_HEARTBEAT: &str = "a4617601646b696e64694865617274626561746269640064626f64795830a566736572766572626131637365710c6772756e6e696e67f6666865616c7468674865616c746879646c6f6164f94c60";

const GOLDEN_PING: &str = "a4617601646b696e646450696e67626964182a64626f647956a263736571036a73656e745f61745f75731a000f4240";
const GOLDEN_PULSE: &str = "a4617601646b696e646550756c73656269640064626f64795824a4637365710c666865616c7468674865616c746879646c6f6164f94c606572656e657707";
const GOLDEN_PULSE_ANSWER: &str = "a4617601646b696e646b50756c7365416e737765726269640064626f64795829a2637365710c6772656e6577616ca16752656e65776564a26565706f6368076674746c5f6d731907d0";

/// Fields added within version 1 default when a peer built before them leaves them out.
#[test]
fn fields_added_in_version_1_default_when_an_older_peer_leaves_them_out() {
    use leasehold_federation::wire::codec::{decode, encode};
    #[derive(serde::Serialize)]
    struct OlderRequestLoan {
        account: AccountId,
        count: u32,
    }
    let older = encode(&OlderRequestLoan {
        account: account(),
        count: 2,
    })
    .unwrap();
    let request: RequestLoan = decode(&older).unwrap();
    assert_eq!(
        request,
        RequestLoan {
            account: account(),
            count: 2,
            handback: false,
            secrets: Secrets::default(),
        }
    );
    #[derive(serde::Serialize)]
    struct OlderSpec {
        name: AccountId,
        home: SiteId,
        min_servers: u32,
        max_servers: u32,
        priority: u32,
        target_load: f64,
        failover: Vec<SiteId>,
        software: Software,
        data: DataRef,
    }
    let older = encode(&OlderSpec {
        name: account(),
        home: site(),
        min_servers: 1,
        max_servers: 2,
        priority: 3,
        target_load: 4.0,
        failover: vec![],
        software: software(),
        data: DataRef { dir: "d".into() },
    })
    .unwrap();
    let spec: AccountSpec = decode(&older).unwrap();
    assert!(!spec.pinned);
    #[derive(serde::Serialize)]
    struct OlderRegisterServer {
        server: ServerId,
        agent_version: String,
        running: Option<RunningWorkload>,
        highest_epoch: Epoch,
    }
    let older = encode(&OlderRegisterServer {
        server: server(),
        agent_version: "0.1.0".into(),
        running: None,
        highest_epoch: epoch(),
    })
    .unwrap();
    let register: RegisterServer = decode(&older).unwrap();
    assert_eq!(register.boot, None);
    // A process agent's registration (no claim) is an older build's bytes exactly.
    assert_eq!(encode(&register).unwrap(), older);
}

/// Fields added within a version, read both ways across builds: a newer receiver takes an
/// older sender's message without the field as absent, and an older receiver (a struct
/// without the field, as its build had it) reads a newer sender's message, ignoring it.
#[test]
fn added_fields_are_read_both_ways_between_builds_one_apart() {
    use leasehold_federation::wire::codec::{decode, encode};
    // Site channel: `members` on ownership claims.
    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct OlderClaimOwnership {
        claims: Vec<OwnershipClaim>,
    }
    let claims = vec![OwnershipClaim {
        account: account(),
        term: Term::NONE.next(),
        round: 3,
    }];
    let older = encode(&OlderClaimOwnership {
        claims: claims.clone(),
    })
    .unwrap();
    let claim: ClaimOwnership = decode(&older).unwrap();
    assert_eq!(claim.members, None);
    assert_eq!(claim.claims, claims);
    let newer = encode(&ClaimOwnership {
        claims: claims.clone(),
        members: Some(MembershipReport {
            running: vec![site()],
            wanted: vec![site()],
            change: 2,
            seen: Vec::new(),
        }),
    })
    .unwrap();
    let read_by_older: OlderClaimOwnership = decode(&newer).unwrap();
    assert_eq!(read_by_older, OlderClaimOwnership { claims });

    // Management channel: the gateway's generation on commands and renewals.
    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct OlderStopWorkload {
        server: ServerId,
        epoch: Epoch,
        drain_ms: u64,
        reason: String,
    }
    let older = OlderStopWorkload {
        server: server(),
        epoch: epoch(),
        drain_ms: 500,
        reason: "moving".into(),
    };
    let stop: StopWorkload = decode(&encode(&older).unwrap()).unwrap();
    assert_eq!(stop.generation, None);
    // A site of one gateway sends an older build's bytes exactly.
    assert_eq!(encode(&stop).unwrap(), encode(&older).unwrap());
    let stamped = StopWorkload {
        generation: Some(12),
        ..stop
    };
    let read_by_older: OlderStopWorkload = decode(&encode(&stamped).unwrap()).unwrap();
    assert_eq!(read_by_older, older);
}
