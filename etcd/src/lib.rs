//! A small etcd v3 client: what a site's standby gateways need of etcd (docs/ha.md) and no
//! more. Keys and values, ranges read at one revision, transactions guarded by comparisons,
//! and leases (grant, keep-alive, revoke).
//!
//! It speaks to etcd's JSON gateway (`POST /v3/...`, which etcd serves on its client URLs
//! beside gRPC, documented as the API for languages without gRPC), not to gRPC: the project
//! then needs neither a protobuf compiler at build time nor an HTTP/2 stack of a second
//! kind, and a request is one HTTP/1.1 exchange (D-46).
//!
//! The client is blocking, like the Redfish client: the gateway calls it from threads of
//! its own. Every request has a deadline; a request that fails on one endpoint (refused,
//! timed out, or answered "no leader") is tried on the next, so losing one member of a
//! cluster costs one timeout at most, and the endpoint that answered is tried first next
//! time.

mod client;
mod json;

pub use client::{Etcd, EtcdConfig};

/// A key and its value as etcd holds them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// The revision that created the key; it is new each time the key is created again.
    pub create_revision: i64,
    pub mod_revision: i64,
    /// The lease the key is attached to, 0 for none.
    pub lease: i64,
}

/// One comparison of a transaction; the transaction's success branch runs only if all hold.
#[derive(Clone, Debug)]
pub enum Compare {
    /// The key was created at `revision`: it still exists, and was not deleted and created
    /// again since. `revision` 0: the key does not exist.
    CreatedAt { key: Vec<u8>, revision: i64 },
}

/// One request of a transaction's branch.
#[derive(Clone, Debug)]
pub enum Op {
    /// Write `value` at `key`, attached to `lease` (0: no lease).
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
        lease: i64,
    },
    Delete {
        key: Vec<u8>,
    },
    /// Read `key`; its answer is in [`TxnOutcome::gets`], in the branch's order.
    Get {
        key: Vec<u8>,
    },
}

/// What a transaction did.
#[derive(Clone, Debug)]
pub struct TxnOutcome {
    /// Whether every comparison held (the success branch ran) or not (the failure branch).
    pub succeeded: bool,
    /// The store's revision after the transaction.
    pub revision: i64,
    /// The answers of the branch's `Get`s, in order.
    pub gets: Vec<Option<KeyValue>>,
}

/// A lease etcd granted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    pub id: i64,
    /// Seconds; etcd may grant more than was asked (its minimum TTL).
    pub ttl_s: i64,
}

/// Why etcd did not do what was asked. Each names the endpoint or endpoints, so a log line
/// says which cluster and what to check.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "etcd is unreachable at {endpoints}: {detail}; check that the cluster runs and that this host reaches it"
    )]
    Unreachable { endpoints: String, detail: String },
    #[error("etcd at {endpoint} refused {path}: {message}")]
    Refused {
        endpoint: String,
        path: String,
        message: String,
    },
    #[error("etcd at {endpoint}: unexpected answer to {path}: {detail}")]
    Invalid {
        endpoint: String,
        path: String,
        detail: String,
    },
    #[error("etcd client configuration: {0}")]
    Config(String),
}

impl Error {
    /// Whether no endpoint answered (as opposed to etcd answering no).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Error::Unreachable { .. })
    }
}

/// The first key after every key that starts with `prefix`: a prefix's `range_end`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte 0xff (or empty): to the end of the key space, as etcd spells it.
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn a_prefix_ends_at_the_next_key_after_all_its_keys() {
        assert_eq!(prefix_end(b"/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
        assert_eq!(prefix_end(b""), vec![0]);
    }
}
