//! Names of the things Leasehold talks about: sites, servers, accounts, epochs.
//!
//! Every id is a newtype that can only hold a valid value, so code past the edge of the
//! process never re-checks a name. Site and server ids end up in certificate DNS names
//! (see `transport::identity`), which is why all ids follow DNS label rules.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a string is not a valid id. The message says what to use instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid {what} `{value}`: {problem}; use 1 to 63 lowercase letters, digits and '-', starting with a letter or digit and not ending with '-'"
)]
pub struct InvalidId {
    pub what: &'static str,
    pub value: String,
    pub problem: &'static str,
}

fn check_label(what: &'static str, value: &str) -> Result<(), InvalidId> {
    let fail = |problem| {
        Err(InvalidId {
            what,
            value: value.to_owned(),
            problem,
        })
    };
    if value.is_empty() {
        return fail("it is empty");
    }
    if value.len() > 63 {
        return fail("it is longer than 63 characters");
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return fail("it has a character other than a-z, 0-9 and '-'");
    }
    if value.starts_with('-') || value.ends_with('-') {
        return fail("it starts or ends with '-'");
    }
    Ok(())
}

macro_rules! label_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn parse(value: &str) -> Result<Self, InvalidId> {
                check_label($what, value)?;
                Ok(Self(value.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidId;
            fn try_from(value: String) -> Result<Self, InvalidId> {
                check_label($what, &value)?;
                Ok(Self(value))
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = InvalidId;
            fn from_str(value: &str) -> Result<Self, InvalidId> {
                Self::parse(value)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

label_id!(
    /// A site (datacenter) of the federation, e.g. `site-a`.
    SiteId,
    "site name"
);
label_id!(
    /// A physical server. Unique across the federation, since loans move servers between sites.
    ServerId,
    "server id"
);
label_id!(
    /// A customer account, homed at one site.
    AccountId,
    "account name"
);

/// A fencing token, per server. Epochs only grow: a command carrying an epoch older than
/// the one a server has applied is refused (invariant S-2 in docs/invariants.md).
///
/// There is deliberately no `From<u64>`: an epoch comes from the lease table's counter
/// (`next`), from the journal, or from the wire, never from a literal in logic code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Epoch(u64);

impl Epoch {
    /// The epoch before any assignment; no command carries it.
    pub const NONE: Epoch = Epoch(0);

    pub fn next(self) -> Epoch {
        Epoch(self.0.saturating_add(1))
    }

    pub fn value(self) -> u64 {
        self.0
    }

    /// Rebuilds an epoch read back from durable storage (the journal).
    pub fn from_journal(value: u64) -> Epoch {
        Epoch(value)
    }

    /// Reads the epoch a machine's kernel command line carries (`leasehold.epoch=`), which
    /// the site's boot service wrote from its lease table.
    pub fn from_boot_args(value: u64) -> Epoch {
        Epoch(value)
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "e{}", self.0)
    }
}

/// An ownership term of an account (docs/ownership.md): grows with every change of owner,
/// so that records of ownership sort and a stale claim is recognised. As for [`Epoch`],
/// there is no `From<u64>`: a term comes from `next`, the wire or the journal.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Term(u64);

impl Term {
    /// The term before any owner.
    pub const NONE: Term = Term(0);

    pub fn next(self) -> Term {
        Term(self.0.saturating_add(1))
    }

    pub fn value(self) -> u64 {
        self.0
    }

    /// Rebuilds a term read back from durable storage.
    pub fn from_journal(value: u64) -> Term {
        Term(value)
    }
}

impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_dns_labels() {
        for ok in ["a", "site-a", "n17", "0x", "shop-eu-1"] {
            assert!(SiteId::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn refuses_non_labels_with_the_reason() {
        let cases = [
            ("", "it is empty"),
            ("Site-A", "it has a character other than a-z, 0-9 and '-'"),
            ("a_b", "it has a character other than a-z, 0-9 and '-'"),
            ("-a", "it starts or ends with '-'"),
            ("a-", "it starts or ends with '-'"),
        ];
        for (bad, problem) in cases {
            let err = ServerId::parse(bad).unwrap_err();
            assert_eq!(err.problem, problem, "{bad}");
            assert_eq!(err.what, "server id");
        }
        assert_eq!(
            AccountId::parse(&"x".repeat(64)).unwrap_err().problem,
            "it is longer than 63 characters"
        );
    }

    #[test]
    fn epochs_only_grow() {
        let e = Epoch::NONE.next();
        assert!(e > Epoch::NONE);
        assert!(e.next() > e);
        assert_eq!(
            Epoch::from_journal(u64::MAX).next(),
            Epoch::from_journal(u64::MAX)
        );
    }
}
