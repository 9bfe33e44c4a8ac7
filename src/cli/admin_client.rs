//! The client side of a gateway's admin API, shared by `leasehold status` and `leasehold
//! audit`: the URL, the CA that issued the admin certificate, and the token
//! (docs/operations.md, "Securing the admin address").

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use serde_json::Value;
use ureq::tls::{Certificate, RootCerts, TlsConfig, TlsProvider};

/// The example site-a's `admin_addr` (configs/site-a.toml), where the demo runs.
pub const DEFAULT_GATEWAY: &str = "http://127.0.0.1:7101";

/// Where Debian (and most Linux systems) keep the system's trusted CAs, for an admin
/// certificate from a public CA when no `--ca` is given.
const SYSTEM_CAS: &str = "/etc/ssl/certs/ca-certificates.crt";

#[derive(Debug, Clone, clap::Args)]
pub struct AdminArgs {
    /// The gateway's admin API: https:// (or http:// where the site says plain_http) and
    /// its admin_addr; a bare HOST:PORT means http://.
    #[arg(long, value_name = "URL", default_value = DEFAULT_GATEWAY)]
    pub gateway: String,
    /// A file holding an admin token (`leasehold token add` printed it); else the token in
    /// LEASEHOLD_TOKEN, if set.
    #[arg(long, value_name = "FILE", env = "LEASEHOLD_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// The CA that issued the admin address's certificate (PEM), e.g. the federation's
    /// certs/ca.crt; default: the system's CAs.
    #[arg(long, value_name = "FILE", env = "LEASEHOLD_ADMIN_CA")]
    pub ca: Option<PathBuf>,
}

/// A gateway's admin API.
pub struct Gateway {
    base: String,
    agent: ureq::Agent,
    token: Option<String>,
}

impl Gateway {
    pub fn new(args: &AdminArgs) -> anyhow::Result<Gateway> {
        let url = args.gateway.trim().trim_end_matches('/');
        let base = if url.contains("://") {
            url.to_owned()
        } else {
            format!("http://{url}")
        };
        let https = base.starts_with("https://");
        if !https && !base.starts_with("http://") {
            bail!("--gateway {base}: give https://HOST:PORT (or http:// for a plain_http site)");
        }
        let token = token(args)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = TlsConfig::builder()
            .provider(TlsProvider::Rustls)
            .unversioned_rustls_crypto_provider(provider);
        if https {
            tls = tls.root_certs(RootCerts::Specific(Arc::new(roots(args.ca.as_ref())?)));
        } else if args.ca.is_some() {
            bail!("--ca is for an https:// gateway; {base} is plain HTTP");
        }
        // Short timeouts: an operator asking for status wants an answer or an error now,
        // not a hung terminal behind a dead gateway.
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(5)))
            .http_status_as_error(false)
            .tls_config(tls.build())
            .build()
            .into();
        Ok(Gateway { base, agent, token })
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    /// GET `path` as JSON; any answer but 2xx is an error naming the gateway.
    pub fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.get_optional(path)?.ok_or_else(|| {
            anyhow!(
                "the gateway at {} has no {path} (404); is --gateway a Leasehold gateway's admin_addr?",
                self.base
            )
        })
    }

    /// POST `body` (JSON) to `path`; the answer as JSON, any answer but 2xx an error.
    pub fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut request = self.agent.post(&url);
        if let Some(token) = &self.token {
            request = request.header("Authorization", &format!("Bearer {token}"));
        }
        let sent = request
            .header("Content-Type", "application/json")
            .send(body.to_string());
        self.answer("POST", path, sent)?
            .ok_or_else(|| anyhow!("the gateway at {} answered POST {path} with 404", self.base))
    }

    /// GET `path` into `out` as it arrives, with no time limit on the body (a backup may
    /// be large); any answer but 2xx is an error, as for [`Self::get`]. Returns the bytes.
    pub fn download(&self, path: &str, out: &mut dyn std::io::Write) -> anyhow::Result<u64> {
        let url = format!("{}{path}", self.base);
        let mut request = self
            .agent
            .get(&url)
            .config()
            .timeout_global(None)
            .timeout_connect(Some(Duration::from_secs(5)))
            .timeout_recv_body(None)
            .build();
        if let Some(token) = &self.token {
            request = request.header("Authorization", &format!("Bearer {token}"));
        }
        let mut response = match request.call() {
            Ok(response) if response.status().is_success() => response,
            other => {
                self.answer("GET", path, other)?;
                bail!(
                    "the gateway at {} has no {path} (404); is it older than this leasehold?",
                    self.base
                );
            }
        };
        std::io::copy(&mut response.body_mut().as_reader(), out)
            .with_context(|| format!("reading the answer to GET {url}"))
    }

    /// GET `path` as JSON, or `None` when the gateway answers 404: an endpoint that an
    /// older gateway does not have yet (peers, loans).
    pub fn get_optional(&self, path: &str) -> anyhow::Result<Option<Value>> {
        let url = format!("{}{path}", self.base);
        let mut request = self.agent.get(&url);
        if let Some(token) = &self.token {
            request = request.header("Authorization", &format!("Bearer {token}"));
        }
        self.answer("GET", path, request.call())
    }

    /// An answer as JSON: `None` for a 404 of a GET, an error naming the gateway for any
    /// other answer but 2xx.
    fn answer(
        &self,
        method: &str,
        path: &str,
        sent: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> anyhow::Result<Option<Value>> {
        let url = format!("{}{path}", self.base);
        let mut response = sent.map_err(|error| {
            anyhow!(
                "cannot reach the gateway at {}: {error}; is `leasehold gateway run` running, \
                 and is --gateway its admin_addr (https:// needs --ca, the CA of its certificate)?",
                self.base
            )
        })?;
        let status = response.status();
        let body = response
            .body_mut()
            .read_to_string()
            .with_context(|| format!("reading the answer to {method} {url}"))?;
        if status == 404 && method == "GET" {
            return Ok(None);
        }
        if !status.is_success() {
            // The API's errors are {"error": "..."}; show that text, or the body as is.
            let said = serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|value| value["error"].as_str().map(str::to_owned))
                .unwrap_or(body);
            let hint = match status.as_u16() {
                // The gateway's own answer names the role this needs.
                403 if said.contains("needs the role") => "",
                401 if self.token.is_none() => {
                    "; give a token: --token-file FILE or LEASEHOLD_TOKEN"
                }
                401 | 403 if method == "GET" => {
                    "; this token will not do: ask for one with the role `read`"
                }
                401 | 403 => "; this token will not do: ask for one with the role `write`",
                _ => "",
            };
            bail!(
                "the gateway at {} answered {method} {path} with {status}: {}{hint}",
                self.base,
                said.trim()
            );
        }
        serde_json::from_str(&body)
            .map(Some)
            .with_context(|| format!("the answer to {method} {url} is not JSON"))
    }
}

/// The token from `--token-file`, else `LEASEHOLD_TOKEN`; never from the command line,
/// where `ps` and shell history would show it.
fn token(args: &AdminArgs) -> anyhow::Result<Option<String>> {
    let token = match &args.token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("--token-file {}", path.display()))?,
        ),
        None => std::env::var("LEASEHOLD_TOKEN").ok(),
    };
    match token.map(|token| token.trim().to_owned()) {
        Some(token) if token.is_empty() => bail!(
            "the token is empty ({}); `leasehold token add` prints one",
            args.token_file
                .as_ref()
                .map_or("LEASEHOLD_TOKEN".to_owned(), |path| path
                    .display()
                    .to_string())
        ),
        Some(token) if token.chars().any(|c| c.is_whitespace() || c.is_control()) => {
            bail!("the token holds spaces or control characters; give one token, as printed")
        }
        token => Ok(token),
    }
}

fn roots(ca: Option<&PathBuf>) -> anyhow::Result<Vec<Certificate<'static>>> {
    let path = ca.cloned().unwrap_or_else(|| PathBuf::from(SYSTEM_CAS));
    let pem = std::fs::read(&path).with_context(|| match ca {
        Some(_) => format!("--ca {}", path.display()),
        None => format!(
            "no --ca given, and the system's CAs ({SYSTEM_CAS}) cannot be read; give --ca FILE"
        ),
    })?;
    let certs = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(cert)) => Some(Ok(cert.to_owned())),
            Ok(_) => None,
            Err(error) => Some(Err(error)),
        })
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{} is not PEM", path.display()))?;
    if certs.is_empty() {
        bail!("{} holds no certificate", path.display());
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(url: &str) -> AdminArgs {
        AdminArgs {
            gateway: url.to_owned(),
            token_file: None,
            ca: None,
        }
    }

    #[test]
    fn gateway_urls_take_a_bare_address_and_name_a_bad_scheme() {
        assert_eq!(
            Gateway::new(&args("127.0.0.1:7101/")).map(|g| g.base).ok(),
            Some("http://127.0.0.1:7101".to_owned())
        );
        let error = Gateway::new(&args("ftp://127.0.0.1:7101"))
            .err()
            .expect("refused");
        assert!(error.to_string().contains("give https://"), "{error}");
        let mut with_ca = args("http://127.0.0.1:7101");
        with_ca.ca = Some(PathBuf::from("ca.crt"));
        assert!(
            Gateway::new(&with_ca).is_err(),
            "--ca with http:// is a mistake"
        );
        let mut missing = args("https://127.0.0.1:7101");
        missing.ca = Some(PathBuf::from("/nonexistent/ca.crt"));
        let error = Gateway::new(&missing).err().expect("refused");
        assert!(
            error.to_string().contains("--ca /nonexistent/ca.crt"),
            "{error:#}"
        );
    }
}
