//! Admin tokens and roles, as plain data: the token file's format, what a path needs, and
//! whether a presented token grants it. No I/O beyond [`Tokens::load`], no clock: the
//! caller passes the time, so expiry is tested without waiting.
//!
//! The file holds one token per line, `NAME ROLE sha256:HEX [expires=RFC3339]`, and only
//! the SHA-256 of each token: a copy of the file (a backup, a config repository) lets no
//! one in. Tokens are 32 random bytes, so an unsalted hash is enough (nothing to guess
//! from); a lookup by hash leaks nothing about a token through its timing.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// What a token may do. Each role grants what the ones before it grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Only `/metrics`: what a Prometheus server gets.
    Metrics,
    /// The JSON API, the status page and `/metrics`.
    Read,
    /// Everything `read` may, and the write API: a server's maintenance (docs/api.md,
    /// "Tokens and roles").
    Write,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Metrics, Role::Read, Role::Write];

    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|role| role.as_str() == text)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Metrics => "metrics",
            Role::Read => "read",
            Role::Write => "write",
        }
    }

    /// Whether this role may make a request that needs `need`.
    pub fn grants(self, need: Need) -> bool {
        match need {
            Need::Open => true,
            Need::Metrics => true,
            Need::Read => self >= Role::Read,
            Need::Write => self >= Role::Write,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a request needs, by its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Probes and the login form: no token.
    Open,
    /// `/metrics`.
    Metrics,
    /// The API and the page.
    Read,
    /// Changes: a server's maintenance (`POST /v1/servers/{id}/drain`, `/undrain`).
    Write,
}

/// What a request of `method` on `path` needs. Unknown paths need `read`, so that a
/// passer-by learns nothing, not even which endpoints exist; another method on a read-only
/// path needs `read` too, and gets its 405.
pub fn need(method: &str, path: &str) -> Need {
    match path {
        "/live" | "/ready" | "/login" | "/logout" => Need::Open,
        "/metrics" => Need::Metrics,
        // A backup carries the boot key, a secret: for operators, not for readers.
        "/v1/journal/backup" => Need::Write,
        _ if method == "POST" && is_write_path(path) => Need::Write,
        _ => Need::Read,
    }
}

/// `/v1/servers/{id}/drain` and `/v1/servers/{id}/undrain`.
fn is_write_path(path: &str) -> bool {
    path.strip_prefix("/v1/servers/")
        .and_then(|rest| rest.rsplit_once('/'))
        .is_some_and(|(id, action)| {
            !id.is_empty() && !id.contains('/') && matches!(action, "drain" | "undrain")
        })
}

/// One line of the token file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub role: Role,
    /// Hex SHA-256 of the token.
    pub hash: String,
    pub expires: Option<OffsetDateTime>,
}

impl Entry {
    /// The entry as a line of the file.
    pub fn line(&self) -> String {
        let mut line = format!("{} {} sha256:{}", self.name, self.role, self.hash);
        if let Some(expires) = self.expires {
            line.push_str(" expires=");
            line.push_str(&rfc3339(expires));
        }
        line
    }
}

/// An instant as the file and messages write it (RFC 3339, UTC, seconds).
pub fn rfc3339(at: OffsetDateTime) -> String {
    let at = at
        .to_offset(time::UtcOffset::UTC)
        .replace_nanosecond(0)
        .unwrap_or(at);
    at.format(&Rfc3339)
        .unwrap_or_else(|_| at.unix_timestamp().to_string())
}

/// An instant with microseconds, as the access log writes it (like `--log-format json`).
pub fn rfc3339_precise(at: OffsetDateTime) -> String {
    let at = at.replace_microsecond(at.microsecond()).unwrap_or(at);
    at.format(&Rfc3339)
        .unwrap_or_else(|_| at.unix_timestamp().to_string())
}

/// What a presented token is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check<'a> {
    Valid(&'a Entry),
    /// In the file, but past its expiry.
    Expired(&'a Entry),
    /// Not in the file (never made, removed, or mistyped).
    Unknown,
}

/// The token file, parsed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tokens {
    entries: Vec<Entry>,
    by_hash: HashMap<String, usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("token file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "token file {path} has mode {mode:04o}: others could read its hashes; `chmod 600 {path}` (the gateway reads only a file no one else may)"
    )]
    Mode { path: PathBuf, mode: u32 },
    #[error("token file {path}:\n{}", .errors.join("\n"))]
    Invalid { path: PathBuf, errors: Vec<String> },
}

impl Tokens {
    /// Reads `path`, refusing a file that its group or others may read or write.
    pub fn load(path: &Path) -> Result<Tokens, TokenFileError> {
        use std::os::unix::fs::PermissionsExt as _;
        let read = |source| TokenFileError::Read {
            path: path.to_path_buf(),
            source,
        };
        let metadata = std::fs::metadata(path).map_err(read)?;
        let mode = metadata.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(TokenFileError::Mode {
                path: path.to_path_buf(),
                mode,
            });
        }
        let text = std::fs::read_to_string(path).map_err(read)?;
        Tokens::parse(&text).map_err(|errors| TokenFileError::Invalid {
            path: path.to_path_buf(),
            errors,
        })
    }

    /// Parses the file's text; every bad line is reported, with its number.
    pub fn parse(text: &str) -> Result<Tokens, Vec<String>> {
        let mut tokens = Tokens::default();
        let mut errors = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match parse_line(line) {
                Ok(entry) => {
                    if let Err(error) = tokens.insert(entry) {
                        errors.push(format!("line {}: {error}", index + 1));
                    }
                }
                Err(error) => errors.push(format!("line {}: {error}", index + 1)),
            }
        }
        if errors.is_empty() {
            Ok(tokens)
        } else {
            Err(errors)
        }
    }

    /// Adds an entry; its name and hash must be new.
    pub fn insert(&mut self, entry: Entry) -> Result<(), String> {
        if self.entries.iter().any(|known| known.name == entry.name) {
            return Err(format!(
                "a token named `{}` is already there; names are unique, so the access log says who",
                entry.name
            ));
        }
        if self.by_hash.contains_key(&entry.hash) {
            return Err(format!(
                "`{}` has the same hash as another token: the same token twice",
                entry.name
            ));
        }
        self.by_hash.insert(entry.hash.clone(), self.entries.len());
        self.entries.push(entry);
        Ok(())
    }

    /// Removes the entry named `name`; false if there is none.
    pub fn remove(&mut self, name: &str) -> bool {
        let before = self.entries.len();
        self.entries.retain(|entry| entry.name != name);
        self.by_hash = self
            .entries
            .iter()
            .enumerate()
            .map(|(index, entry)| (entry.hash.clone(), index))
            .collect();
        self.entries.len() != before
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// What `presented` is at `now`.
    pub fn check(&self, presented: &str, now: OffsetDateTime) -> Check<'_> {
        match self.by_hash.get(&hash(presented)) {
            None => Check::Unknown,
            Some(&index) => {
                let entry = &self.entries[index];
                match entry.expires {
                    Some(expires) if expires <= now => Check::Expired(entry),
                    _ => Check::Valid(entry),
                }
            }
        }
    }

    /// The file's text: a header, then one line per token.
    pub fn render(&self) -> String {
        let mut text = String::from(
            "# Leasehold admin tokens: NAME ROLE sha256:HASH [expires=RFC3339]. Roles: metrics, read, write.\n\
             # Only hashes are kept here. Manage with `leasehold token add|remove|list --file THIS`.\n",
        );
        for entry in &self.entries {
            text.push_str(&entry.line());
            text.push('\n');
        }
        text
    }
}

fn parse_line(line: &str) -> Result<Entry, String> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let [name, role, hashed, rest @ ..] = fields.as_slice() else {
        return Err(format!(
            "`{line}` has {} fields; a token line is NAME ROLE sha256:HASH [expires=RFC3339]",
            fields.len()
        ));
    };
    check_name(name)?;
    let role = Role::parse(role).ok_or_else(|| {
        format!("`{name}`: unknown role `{role}`; the roles are metrics, read and write")
    })?;
    let hex = hashed
        .strip_prefix("sha256:")
        .filter(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| {
            format!(
                "`{name}`: `{hashed}` is not sha256: and 64 hex digits (the file keeps hashes, never tokens)"
            )
        })?;
    let mut expires = None;
    for field in rest {
        let Some(at) = field.strip_prefix("expires=") else {
            return Err(format!(
                "`{name}`: unknown field `{field}`; after the hash only expires=RFC3339 may follow"
            ));
        };
        if expires.is_some() {
            return Err(format!("`{name}`: expires= is given twice"));
        }
        expires = Some(OffsetDateTime::parse(at, &Rfc3339).map_err(|error| {
            format!("`{name}`: expires={at} is not an RFC 3339 time such as 2027-06-01T00:00:00Z ({error})")
        })?);
    }
    Ok(Entry {
        name: (*name).to_owned(),
        role,
        hash: hex.to_ascii_lowercase(),
        expires,
    })
}

/// A token's name: what the access log shows as "who".
pub fn check_name(name: &str) -> Result<(), String> {
    let good = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'));
    if good {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a token name: 1 to 64 of letters, digits and - _ . @"
        ))
    }
}

/// Hex SHA-256 of a token, as the file keeps it.
pub fn hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// A new token from 32 bytes of the system's secure random source: `lh_` and 43
/// URL-safe base64 characters (the prefix lets secret scanners and people spot one).
pub fn generate() -> Result<String, ring::error::Unspecified> {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new().fill(&mut bytes)?;
    Ok(format!(
        "lh_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

/// A token as a request presents it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presented<'a> {
    None,
    /// `Authorization: Bearer TOKEN`.
    Bearer(&'a str),
    /// The status page's login cookie.
    Cookie(&'a str),
    /// An `Authorization` header of another scheme, or empty.
    Malformed,
}

/// Who made a request, as the access log and the page name them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's name; `anonymous` without a token, `-` on an open path.
    pub name: String,
    pub role: Option<Role>,
}

/// What to do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow(Caller),
    /// 401: no token where one is needed, or one that is not valid; says which.
    Unauthenticated(String),
    /// 403: a valid token whose role does not reach.
    Forbidden(Caller),
}

/// The gate every request passes: the token file (`None`: no file configured), the role
/// of a request without a token, what was presented, what the path needs, and the time.
pub fn decide(
    tokens: Option<&Tokens>,
    anonymous: Option<Role>,
    presented: Presented<'_>,
    need: Need,
    now: OffsetDateTime,
) -> Decision {
    let known = |token: &str| match tokens.map(|tokens| tokens.check(token, now)) {
        Some(Check::Valid(entry)) => Ok(Caller {
            name: entry.name.clone(),
            role: Some(entry.role),
        }),
        Some(Check::Expired(entry)) => Err(format!(
            "the token `{}` expired at {}; make a new one (leasehold token add)",
            entry.name,
            entry.expires.map(rfc3339).unwrap_or_default()
        )),
        Some(Check::Unknown) | None => {
            Err("that token is not valid here (mistyped, removed, or of another site)".to_owned())
        }
    };
    let caller = match presented {
        Presented::None => match anonymous {
            Some(role) => Ok(Caller {
                name: "anonymous".to_owned(),
                role: Some(role),
            }),
            None => Err("this needs a token: send Authorization: Bearer TOKEN".to_owned()),
        },
        Presented::Bearer(token) | Presented::Cookie(token) => known(token),
        Presented::Malformed => Err("the Authorization header must be `Bearer TOKEN`".to_owned()),
    };
    match (need, caller) {
        // Probes and the login form answer anyone; a caller is still named if known.
        (Need::Open, Ok(caller)) => Decision::Allow(caller),
        (Need::Open, Err(_)) => Decision::Allow(Caller {
            name: "-".to_owned(),
            role: None,
        }),
        (_, Err(why)) => Decision::Unauthenticated(why),
        (need, Ok(caller)) => {
            if caller.role.is_some_and(|role| role.grants(need)) {
                Decision::Allow(caller)
            } else {
                Decision::Forbidden(caller)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> OffsetDateTime {
        OffsetDateTime::parse(text, &Rfc3339).expect("a test time")
    }

    fn file(lines: &[String]) -> String {
        lines.join("\n")
    }

    #[test]
    fn roles_grant_what_the_table_in_the_docs_says() {
        let table = [
            ("/live", [true, true, true]),
            ("/ready", [true, true, true]),
            ("/login", [true, true, true]),
            ("/metrics", [true, true, true]),
            ("/", [false, true, true]),
            ("/v1/accounts", [false, true, true]),
            ("/v1/audit", [false, true, true]),
            ("/no/such/path", [false, true, true]),
        ];
        for (method, path, grants) in [
            ("POST", "/v1/servers/a1/drain", [false, false, true]),
            ("POST", "/v1/servers/a1/undrain", [false, false, true]),
            ("GET", "/v1/servers/a1/drain", [false, true, true]),
            ("POST", "/v1/accounts", [false, true, true]),
            ("POST", "/v1/servers//drain", [false, true, true]),
        ] {
            for (role, expected) in Role::ALL.into_iter().zip(grants) {
                assert_eq!(
                    role.grants(need(method, path)),
                    expected,
                    "{role} on {method} {path}"
                );
            }
        }
        for (path, grants) in table {
            for (role, expected) in Role::ALL.into_iter().zip(grants) {
                assert_eq!(
                    role.grants(need("GET", path)),
                    expected,
                    "{role} on {path} should be {expected}"
                );
            }
        }
    }

    #[test]
    fn a_token_is_valid_until_it_expires_and_unknown_once_removed() {
        let (prom, alice) = ("lh_prom", "lh_alice");
        let text = file(&[
            "# comment".to_owned(),
            String::new(),
            format!(
                "prometheus metrics sha256:{} expires=2027-01-01T00:00:00Z",
                hash(prom)
            ),
            format!("alice read sha256:{}", hash(alice)),
        ]);
        let mut tokens = Tokens::parse(&text).expect("a valid file");
        let before = at("2026-12-31T23:59:59Z");
        let after = at("2027-01-01T00:00:00Z");
        match tokens.check(prom, before) {
            Check::Valid(entry) => assert_eq!(
                (entry.name.as_str(), entry.role),
                ("prometheus", Role::Metrics)
            ),
            other => panic!("{other:?}"),
        }
        assert!(matches!(tokens.check(prom, after), Check::Expired(_)));
        assert!(matches!(tokens.check(alice, after), Check::Valid(_)));
        assert_eq!(tokens.check("lh_other", before), Check::Unknown);
        assert!(tokens.remove("alice"));
        assert_eq!(tokens.check(alice, before), Check::Unknown);
        assert!(matches!(tokens.check(prom, before), Check::Valid(_)));
        assert!(!tokens.remove("alice"));
    }

    #[test]
    fn render_and_parse_round_trip() {
        let mut tokens = Tokens::default();
        tokens
            .insert(Entry {
                name: "ci@build-1".to_owned(),
                role: Role::Write,
                hash: hash("lh_x"),
                expires: Some(at("2027-06-01T12:30:00Z")),
            })
            .expect("new");
        tokens
            .insert(Entry {
                name: "grafana".to_owned(),
                role: Role::Read,
                hash: hash("lh_y"),
                expires: None,
            })
            .expect("new");
        let text = tokens.render();
        assert!(text.contains("ci@build-1 write sha256:"), "{text}");
        assert!(text.contains("expires=2027-06-01T12:30:00Z"), "{text}");
        assert!(
            !text.contains("lh_x"),
            "the file never holds a token: {text}"
        );
        assert_eq!(Tokens::parse(&text).expect("parses"), tokens);
    }

    #[test]
    fn every_bad_line_is_named_with_its_number() {
        let good = format!("a read sha256:{}", hash("1"));
        let text = file(&[
            good.clone(),
            "b read".to_owned(),
            format!("c admin sha256:{}", hash("2")),
            "d read sha256:xyz".to_owned(),
            format!("e read sha256:{} expires=tomorrow", hash("3")),
            format!("f read sha256:{} colour=blue", hash("4")),
            format!("a metrics sha256:{}", hash("5")),
            format!("g read sha256:{}", hash("1")),
            format!("bad/name read sha256:{}", hash("6")),
        ]);
        let errors = Tokens::parse(&text).expect_err("invalid");
        let expected = [
            ("line 2:", "has 2 fields"),
            ("line 3:", "unknown role `admin`"),
            ("line 4:", "not sha256: and 64 hex digits"),
            ("line 5:", "not an RFC 3339 time"),
            ("line 6:", "unknown field `colour=blue`"),
            ("line 7:", "already there"),
            ("line 8:", "same hash"),
            ("line 9:", "not a token name"),
        ];
        assert_eq!(errors.len(), expected.len(), "{errors:#?}");
        for (error, (line, says)) in errors.iter().zip(expected) {
            assert!(
                error.starts_with(line) && error.contains(says),
                "{error}: expected {line} {says}"
            );
        }
        assert!(
            errors.iter().all(|error| !error.contains(&hash("1"))),
            "errors may name a line but need not repeat hashes: {errors:#?}"
        );
    }

    #[test]
    fn a_file_others_may_read_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("tokens");
        std::fs::write(&path, format!("a read sha256:{}\n", hash("t"))).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let error = Tokens::load(&path).expect_err("mode 0644");
        assert!(error.to_string().contains("chmod 600"), "{error}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert_eq!(Tokens::load(&path).expect("mode 0600").entries().len(), 1);
    }

    #[test]
    fn generated_tokens_are_distinct_and_url_safe() {
        let a = generate().expect("random");
        let b = generate().expect("random");
        assert_ne!(a, b);
        assert_eq!(a.len(), 3 + 43);
        assert!(
            a[3..]
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'),
            "{a}"
        );
    }

    #[test]
    fn the_gate_answers_401_403_or_allows_as_the_issue_asks() {
        let tokens = Tokens::parse(&file(&[
            format!("prom metrics sha256:{}", hash("lh_p")),
            format!(
                "alice read sha256:{} expires=2027-01-01T00:00:00Z",
                hash("lh_a")
            ),
        ]))
        .expect("valid");
        let now = at("2026-12-05T00:00:00Z");
        let later = at("2027-02-01T00:00:00Z");
        let gate =
            |presented, path, now| decide(Some(&tokens), None, presented, need("GET", path), now);
        assert!(matches!(
            gate(Presented::None, "/v1/accounts", now),
            Decision::Unauthenticated(_)
        ));
        assert!(
            matches!(gate(Presented::Bearer("lh_p"), "/v1/accounts", now), Decision::Forbidden(c) if c.name == "prom")
        );
        assert!(
            matches!(gate(Presented::Bearer("lh_p"), "/metrics", now), Decision::Allow(c) if c.name == "prom")
        );
        assert!(
            matches!(gate(Presented::Bearer("lh_a"), "/v1/accounts", now), Decision::Allow(c) if c.name == "alice")
        );
        assert!(matches!(
            gate(Presented::Cookie("lh_a"), "/", now),
            Decision::Allow(_)
        ));
        match gate(Presented::Bearer("lh_a"), "/v1/accounts", later) {
            Decision::Unauthenticated(why) => {
                assert!(why.contains("expired at 2027-01-01T00:00:00Z"), "{why}")
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            gate(Presented::Bearer("lh_x"), "/metrics", now),
            Decision::Unauthenticated(_)
        ));
        assert!(matches!(
            gate(Presented::Malformed, "/v1/status", now),
            Decision::Unauthenticated(_)
        ));
        assert!(matches!(gate(Presented::None, "/live", now), Decision::Allow(c) if c.name == "-"));
        assert!(matches!(
            gate(Presented::Bearer("lh_x"), "/ready", now),
            Decision::Allow(_)
        ));
        // anonymous_role: a request without a token gets it; a wrong token is still an error.
        let open =
            |presented, path| decide(None, Some(Role::Metrics), presented, need("GET", path), now);
        assert!(
            matches!(open(Presented::None, "/metrics"), Decision::Allow(c) if c.name == "anonymous")
        );
        assert!(matches!(
            open(Presented::None, "/v1/status"),
            Decision::Forbidden(_)
        ));
        assert!(matches!(
            open(Presented::Bearer("lh_p"), "/metrics"),
            Decision::Unauthenticated(_)
        ));
    }
}
