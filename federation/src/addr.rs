//! An address to dial that may name its host: `10.0.0.7:7202`, `[2001:db8::7]:7202` or
//! `site-b.dc2.example.net:7202`. A name is resolved when it is dialled, and again on every
//! reconnect, so that a site whose address changes is found at the new one; an IP literal
//! is used as it is.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostPort {
    host: Host,
    port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Host {
    Ip(IpAddr),
    /// A DNS name as written (lower-cased), without a trailing dot.
    Name(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{given}` is not a HOST:PORT address ({why}); write e.g. `10.0.0.7:7202` or `site-b.example.net:7202`"
)]
pub struct BadAddress {
    given: String,
    why: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("cannot resolve `{host}`: {source}")]
    Lookup {
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{host}` resolves to no address")]
    Empty { host: String },
}

impl HostPort {
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The address itself, when the host is an IP literal.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        match self.host {
            Host::Ip(ip) => Some(SocketAddr::new(ip, self.port)),
            Host::Name(_) => None,
        }
    }

    /// The host's name, when it is not an IP literal.
    pub fn name(&self) -> Option<&str> {
        match &self.host {
            Host::Name(name) => Some(name),
            Host::Ip(_) => None,
        }
    }

    /// Every address the host has now (a literal's own at once; a name through the
    /// system's resolver, off the async threads).
    pub async fn resolve(&self) -> Result<Vec<SocketAddr>, ResolveError> {
        let name = match &self.host {
            Host::Ip(ip) => return Ok(vec![SocketAddr::new(*ip, self.port)]),
            Host::Name(name) => name,
        };
        collected(
            name,
            tokio::net::lookup_host((name.as_str(), self.port)).await,
        )
    }

    /// [`Self::resolve`] for a caller that may block (config checks).
    pub fn resolve_blocking(&self) -> Result<Vec<SocketAddr>, ResolveError> {
        use std::net::ToSocketAddrs as _;
        let name = match &self.host {
            Host::Ip(ip) => return Ok(vec![SocketAddr::new(*ip, self.port)]),
            Host::Name(name) => name,
        };
        collected(name, (name.as_str(), self.port).to_socket_addrs())
    }
}

/// What a lookup of `name` found: an error, also when it found no address.
fn collected(
    name: &str,
    found: std::io::Result<impl Iterator<Item = SocketAddr>>,
) -> Result<Vec<SocketAddr>, ResolveError> {
    let found: Vec<SocketAddr> = found
        .map_err(|source| ResolveError::Lookup {
            host: name.to_owned(),
            source,
        })?
        .collect();
    if found.is_empty() {
        return Err(ResolveError::Empty {
            host: name.to_owned(),
        });
    }
    Ok(found)
}

impl From<SocketAddr> for HostPort {
    fn from(addr: SocketAddr) -> Self {
        HostPort {
            host: Host::Ip(addr.ip()),
            port: addr.port(),
        }
    }
}

impl FromStr for HostPort {
    type Err = BadAddress;

    fn from_str(given: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| BadAddress {
            given: given.to_owned(),
            why: why.to_owned(),
        };
        if let Ok(addr) = given.parse::<SocketAddr>() {
            return Ok(addr.into());
        }
        let Some((host, port)) = given.rsplit_once(':') else {
            return Err(bad("no :PORT"));
        };
        let port: u16 = port
            .parse()
            .map_err(|_| bad("the port is not a number from 1 to 65535"))?;
        if port == 0 {
            return Err(bad("port 0 cannot be dialled"));
        }
        if host.starts_with('[') || host.contains(':') {
            return Err(bad("an IPv6 address goes in brackets: [2001:db8::7]:7202"));
        }
        let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
        if host.parse::<IpAddr>().is_ok() {
            return Err(bad("not an IP address"));
        }
        if host.is_empty() || host.len() > 253 {
            return Err(bad("a host name is 1 to 253 characters"));
        }
        for label in host.split('.') {
            let valid = (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-');
            if !valid {
                return Err(bad(&format!(
                    "`{label}` is not a DNS label: letters, digits and '-', 1 to 63 of them, not starting or ending with '-'"
                )));
            }
        }
        // A name made of digits and dots only would be read as an IP address by resolvers.
        if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return Err(bad("not an IP address, nor a name"));
        }
        Ok(HostPort {
            host: Host::Name(host),
            port,
        })
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::Ip(ip) => write!(f, "{}", SocketAddr::new(*ip, self.port)),
            Host::Name(name) => write!(f, "{name}:{}", self.port),
        }
    }
}

impl Serialize for HostPort {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HostPort {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_and_names_parse_and_print_as_written() {
        for given in [
            "10.0.0.7:7202",
            "[2001:db8::7]:7202",
            "site-b.dc2.example.net:7202",
            "localhost:1",
        ] {
            let parsed: HostPort = given.parse().unwrap();
            assert_eq!(parsed.to_string(), given);
        }
        let named: HostPort = "Site-B.Example.NET.:7202".parse().unwrap();
        assert_eq!(named.to_string(), "site-b.example.net:7202");
        assert_eq!(named.name(), Some("site-b.example.net"));
        assert_eq!(named.socket_addr(), None);
        let literal: HostPort = "10.0.0.7:7202".parse().unwrap();
        assert_eq!(
            literal.socket_addr(),
            Some("10.0.0.7:7202".parse().unwrap())
        );
    }

    #[test]
    fn bad_addresses_say_what_is_wrong() {
        for (given, why) in [
            ("site-b", "no :PORT"),
            ("site-b:http", "not a number"),
            ("site-b:0", "port 0"),
            ("2001:db8::7:7202", "in brackets"),
            ("-b.example:7202", "not a DNS label"),
            ("site_b.example:7202", "not a DNS label"),
            ("10.0.0:7202", "nor a name"),
            (":7202", "1 to 253"),
        ] {
            let error = given.parse::<HostPort>().unwrap_err().to_string();
            assert!(error.contains(why), "{given}: {error}");
            assert!(error.contains(&format!("`{given}`")), "{error}");
        }
    }

    #[tokio::test]
    async fn localhost_resolves_and_a_reserved_name_does_not() {
        let local: HostPort = "localhost:7202".parse().unwrap();
        let found = local.resolve().await.unwrap();
        assert!(
            found
                .iter()
                .all(|addr| addr.ip().is_loopback() && addr.port() == 7202)
        );
        // RFC 6761: `.invalid` never resolves.
        let nowhere: HostPort = "site-b.invalid:7202".parse().unwrap();
        let error = nowhere.resolve().await.unwrap_err().to_string();
        assert!(
            error.starts_with("cannot resolve `site-b.invalid`"),
            "{error}"
        );
    }
}
