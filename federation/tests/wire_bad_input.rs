//! Bad bytes from a peer get a typed error naming what is wrong, never a panic.

use leasehold_federation::ids::{Epoch, ServerId};
use leasehold_federation::wire::catalogue::{open_inbound_one_way, open_inbound_request};
use leasehold_federation::wire::codec;
use leasehold_federation::wire::frame::{FrameError, encode_frame};
use leasehold_federation::wire::node::RegisterServer;
use leasehold_federation::wire::{Envelope, Sender, WIRE_VERSION, WireError};
use proptest::prelude::*;

const LIMIT: u32 = 64 * 1024;

fn register() -> RegisterServer {
    RegisterServer {
        server: ServerId::parse("a1").unwrap(),
        agent_version: "0.1.0".into(),
        running: None,
        highest_epoch: Epoch::NONE.next(),
        boot: None,
    }
}

fn framed(envelope: &Envelope) -> Vec<u8> {
    encode_frame(&envelope.to_bytes().unwrap(), LIMIT).unwrap()
}

#[test]
fn a_truncated_frame_is_refused_as_truncated() {
    let whole = Envelope::frame(1, &register(), LIMIT).unwrap();
    let cut = &whole[..whole.len() - 3];
    match Envelope::from_frame(cut, LIMIT) {
        Err(WireError::Frame(FrameError::Truncated { expected, received })) => {
            assert_eq!(expected, received + 3);
        }
        other => panic!("expected Truncated, got {other:?}"),
    }
}

#[test]
fn an_oversized_frame_is_refused_before_reading_its_body() {
    // Only the header: the limit is checked on the announced length alone.
    let header = (LIMIT + 1).to_be_bytes();
    match Envelope::from_frame(&header, LIMIT) {
        Err(WireError::Frame(FrameError::Oversized { announced, limit })) => {
            assert_eq!((announced, limit), (u64::from(LIMIT) + 1, LIMIT));
        }
        other => panic!("expected Oversized, got {other:?}"),
    }
}

#[test]
fn bytes_that_are_not_cbor_are_refused_as_not_an_envelope() {
    // 0x1c is a reserved CBOR initial byte: no decoder may accept it.
    let frame = encode_frame(b"\x1c hello, not cbor", LIMIT).unwrap();
    match Envelope::from_frame(&frame, LIMIT) {
        Err(WireError::NotAnEnvelope(detail)) => {
            assert!(detail.detail.contains("syntax error"), "{detail}")
        }
        other => panic!("expected NotAnEnvelope, got {other:?}"),
    }
    // Valid CBOR, but not an envelope.
    let frame = encode_frame(&codec::encode(&vec![1u8, 2, 3]).unwrap(), LIMIT).unwrap();
    assert!(matches!(
        Envelope::from_frame(&frame, LIMIT),
        Err(WireError::NotAnEnvelope(_))
    ));
}

#[test]
fn an_envelope_of_another_version_is_refused_naming_both_versions() {
    let mut envelope = Envelope::seal(1, &register()).unwrap();
    envelope.v = WIRE_VERSION + 1;
    let error = Envelope::from_frame(&framed(&envelope), LIMIT).unwrap_err();
    assert!(
        matches!(error, WireError::UnsupportedVersion { got, supported } if got == WIRE_VERSION + 1 && supported == WIRE_VERSION)
    );
    assert_eq!(
        error.to_string(),
        "wire version 2 is not supported (this build speaks version 1)"
    );
}

#[test]
fn an_unknown_kind_is_refused_by_name() {
    let mut envelope = Envelope::seal(1, &register()).unwrap();
    envelope.kind = "LaunchMissiles".into();
    let envelope = Envelope::from_frame(&framed(&envelope), LIMIT).unwrap();
    let error = open_inbound_request(&envelope, Sender::Node, ()).unwrap_err();
    assert!(matches!(&error, WireError::UnknownKind { kind } if kind == "LaunchMissiles"));
    let error = open_inbound_one_way(&envelope, Sender::Node).unwrap_err();
    assert!(matches!(&error, WireError::UnknownKind { kind } if kind == "LaunchMissiles"));
}

#[test]
fn a_known_kind_with_a_bad_body_is_refused_as_malformed() {
    let mut envelope = Envelope::seal(1, &register()).unwrap();
    envelope.body = codec::encode(&"just a string").unwrap();
    let error = open_inbound_request(&envelope, Sender::Node, ()).unwrap_err();
    assert!(matches!(&error, WireError::MalformedBody { kind, .. } if kind == "RegisterServer"));
    // An id that breaks the rules for ids is malformed too, not accepted.
    let mut envelope = Envelope::seal(1, &register()).unwrap();
    envelope.body = envelope
        .body
        .iter()
        .map(|byte| if *byte == b'a' { b'A' } else { *byte })
        .collect();
    let error = open_inbound_request(&envelope, Sender::Node, ()).unwrap_err();
    assert!(
        error.to_string().contains("invalid server id `A1`"),
        "{error}"
    );
}

fn open_anything(bytes: &[u8]) {
    if let Ok(envelope) = Envelope::from_frame(bytes, LIMIT) {
        for sender in [Sender::Node, Sender::Gateway, Sender::Site] {
            let _ = open_inbound_request(&envelope, sender, ());
            let _ = open_inbound_one_way(&envelope, sender);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        open_anything(&bytes);
    }

    #[test]
    fn arbitrary_payloads_in_a_valid_frame_never_panic(payload in proptest::collection::vec(any::<u8>(), 0..512)) {
        open_anything(&encode_frame(&payload, LIMIT).unwrap());
    }

    #[test]
    fn arbitrary_bodies_under_every_known_kind_never_panic(
        kind_index in 0usize..64,
        body in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        let kinds: Vec<&str> = leasehold_federation::wire::catalogue::REQUEST_KINDS
            .iter()
            .chain(leasehold_federation::wire::catalogue::ONE_WAY_KINDS)
            .map(|(kind, _)| *kind)
            .collect();
        let envelope = Envelope {
            v: WIRE_VERSION,
            kind: kinds[kind_index % kinds.len()].to_owned(),
            id: 1,
            body,
        };
        open_anything(&framed(&envelope));
    }

    #[test]
    fn every_cut_of_a_valid_frame_is_refused_not_accepted(cut in 0usize..200) {
        let whole = Envelope::frame(1, &register(), LIMIT).unwrap();
        let cut = cut % whole.len();
        prop_assert!(Envelope::from_frame(&whole[..cut], LIMIT).is_err());
    }
}
