//! HTTP to one BMC: authentication (a session where the BMC has a session service, basic
//! auth otherwise), one new login on a 401, and retries with backoff for the failures
//! vendors are known to give transiently (a BMC's web server restarting, a busy BMC's 503).

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::Value;
use ureq::Agent;
use ureq::tls::{Certificate, RootCerts, TlsConfig, TlsProvider};

use crate::{Credentials, Error};

/// How often and how patiently a request is retried when the BMC fails transiently.
#[derive(Clone, Debug)]
pub struct Retry {
    /// Attempts in all, the first included.
    pub attempts: u32,
    /// The first wait; each next one doubles, up to `max_wait`.
    pub first_wait: Duration,
    pub max_wait: Duration,
}

impl Default for Retry {
    fn default() -> Retry {
        Retry {
            attempts: 5,
            first_wait: Duration::from_millis(250),
            max_wait: Duration::from_secs(4),
        }
    }
}

impl Retry {
    pub(crate) fn wait(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt).unwrap_or(u32::MAX);
        self.first_wait
            .checked_mul(factor)
            .unwrap_or(self.max_wait)
            .min(self.max_wait)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Method {
    Get,
    Post,
    Patch,
    Delete,
}

impl Method {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }
}

enum Auth {
    Basic,
    Session {
        token: String,
        /// The session's own resource, deleted at logout (BMCs have few session slots).
        location: Option<String>,
    },
}

/// One answer, with what the client reads of its headers.
pub(crate) struct Reply {
    pub status: u16,
    pub etag: Option<String>,
    pub location: Option<String>,
    pub retry_after: Option<Duration>,
    /// A session login's `X-Auth-Token`.
    pub token: Option<String>,
    pub body: Value,
    pub text: String,
}

impl Reply {
    /// The BMC's own words for an error: Redfish's `error.message` and its extended info.
    pub(crate) fn message(&self) -> String {
        let error = &self.body["error"];
        let mut parts: Vec<String> = Vec::new();
        if let Some(message) = error["message"].as_str() {
            parts.push(message.to_owned());
        }
        if let Some(extended) = error["@Message.ExtendedInfo"].as_array() {
            parts.extend(
                extended
                    .iter()
                    .filter_map(|info| info["Message"].as_str().map(str::to_owned)),
            );
        }
        if parts.is_empty() {
            let text = self.text.trim();
            if text.is_empty() {
                "(no message)".to_owned()
            } else {
                text.chars().take(200).collect()
            }
        } else {
            parts.join("; ")
        }
    }
}

pub(crate) struct Transport {
    agent: Agent,
    /// `scheme://host:port`, no trailing slash; the URL errors name.
    base: String,
    credentials: Credentials,
    auth: Auth,
    retry: Retry,
    /// Where to log in, if the BMC has a session service.
    sessions: Option<String>,
}

impl Transport {
    pub(crate) fn new(
        base: &str,
        credentials: Credentials,
        trust: Option<&crate::TlsTrust>,
        retry: Retry,
        timeout: Duration,
    ) -> Result<Transport, Error> {
        let base = base.trim_end_matches('/').to_owned();
        let config_error = |detail: String| Error::Config {
            url: base.clone(),
            detail,
        };
        let https = if base.starts_with("https://") {
            true
        } else if base.starts_with("http://") {
            false
        } else {
            return Err(config_error(
                "the BMC URL must start with https:// or http://".to_owned(),
            ));
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = match (https, trust) {
            (false, _) => TlsConfig::builder()
                .provider(TlsProvider::Rustls)
                .unversioned_rustls_crypto_provider(provider)
                .build(),
            (true, None) => {
                return Err(config_error(
                    "an https BMC needs bmc_ca (the CA or certificate the BMC presents) or, knowingly, bmc_tls_verify = false".to_owned(),
                ));
            }
            (true, Some(crate::TlsTrust::Verify { ca_pem })) => {
                let certs = ureq::tls::parse_pem(ca_pem)
                    .filter_map(|item| match item {
                        Ok(ureq::tls::PemItem::Certificate(cert)) => Some(Ok(cert)),
                        Ok(_) => None,
                        Err(error) => Some(Err(error)),
                    })
                    .collect::<Result<Vec<Certificate<'static>>, _>>()
                    .map_err(|error| config_error(format!("bmc_ca is not PEM: {error}")))?;
                if certs.is_empty() {
                    return Err(config_error("bmc_ca holds no certificate".to_owned()));
                }
                TlsConfig::builder()
                    .provider(TlsProvider::Rustls)
                    .unversioned_rustls_crypto_provider(provider)
                    .root_certs(RootCerts::Specific(Arc::new(certs)))
                    .build()
            }
            (true, Some(crate::TlsTrust::NoVerify)) => TlsConfig::builder()
                .provider(TlsProvider::Rustls)
                .unversioned_rustls_crypto_provider(provider)
                .disable_verification(true)
                .build(),
        };
        let agent: Agent = Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(timeout.min(Duration::from_secs(5))))
            .timeout_global(Some(timeout))
            .tls_config(tls)
            // A BMC's Location headers are followed by hand (task monitors); a redirect
            // is followed only for GETs, as HTTP intends.
            .max_redirects(3)
            .build()
            .into();
        Ok(Transport {
            agent,
            base,
            credentials,
            auth: Auth::Basic,
            retry,
            sessions: None,
        })
    }

    pub(crate) fn url(&self) -> &str {
        &self.base
    }

    pub(crate) fn retry(&self) -> &Retry {
        &self.retry
    }

    /// A link from the BMC (`/redfish/v1/...` or a whole URL) as a URL to call.
    fn absolute(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_owned()
        } else if path.starts_with('/') {
            format!("{}{path}", self.base)
        } else {
            format!("{}/{path}", self.base)
        }
    }

    /// Logs in through the session service at `sessions`; a BMC that has none, or refuses
    /// sessions for a reason other than the credentials, is spoken to with basic auth.
    pub(crate) fn login(&mut self, sessions: Option<String>) -> Result<(), Error> {
        self.sessions = sessions;
        let Some(sessions) = self.sessions.clone() else {
            self.auth = Auth::Basic;
            return Ok(());
        };
        let body = serde_json::json!({
            "UserName": self.credentials.username(),
            "Password": self.credentials.password(),
        });
        let reply = self.send_once(Method::Post, &sessions, Some(&body), None, false)?;
        match reply.status {
            200 | 201 | 204 => {}
            401 | 403 => return Err(self.unauthorized()),
            status => {
                tracing::warn!(
                    bmc = %self.base,
                    status,
                    "session login refused; using basic auth"
                );
                self.auth = Auth::Basic;
                return Ok(());
            }
        }
        let Some(token) = reply.token.clone() else {
            tracing::warn!(bmc = %self.base, "session login gave no X-Auth-Token; using basic auth");
            self.auth = Auth::Basic;
            return Ok(());
        };
        self.auth = Auth::Session {
            token,
            location: reply.location.clone(),
        };
        Ok(())
    }

    /// Ends the session, if any; best effort (the BMC expires it on its own otherwise).
    pub(crate) fn logout(&mut self) {
        if let Auth::Session {
            location: Some(location),
            ..
        } = &self.auth
        {
            let location = location.clone();
            let _ = self.send_once(Method::Delete, &location, None, None, true);
        }
        self.auth = Auth::Basic;
    }

    pub(crate) fn is_session(&self) -> bool {
        matches!(self.auth, Auth::Session { .. })
    }

    fn unauthorized(&self) -> Error {
        Error::Unauthorized {
            url: self.base.clone(),
            credentials: self.credentials.source().to_owned(),
        }
    }

    /// One request with retries for transient failures and one new login on a 401. Any
    /// other status is the caller's to read.
    pub(crate) fn request(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        if_match: Option<&str>,
    ) -> Result<Reply, Error> {
        let mut logged_in_again = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let outcome = self.send_once(method, path, body, if_match, true);
            let transient = match &outcome {
                Err(Error::Unreachable { .. }) => true,
                Ok(reply) => {
                    matches!(reply.status, 502..=504)
                        || (reply.status == 500 && method == Method::Get)
                }
                Err(_) => false,
            };
            if transient {
                if attempt >= self.retry.attempts {
                    return match outcome {
                        Err(Error::Unreachable { detail, .. }) => Err(Error::Unreachable {
                            url: self.base.clone(),
                            attempts: attempt,
                            detail,
                        }),
                        Ok(reply) => Err(Error::Unreachable {
                            url: self.base.clone(),
                            attempts: attempt,
                            detail: format!(
                                "{} {path} answered {}: {}",
                                method.name(),
                                reply.status,
                                reply.message()
                            ),
                        }),
                        Err(other) => Err(other),
                    };
                }
                let wait = match &outcome {
                    Ok(reply) => reply
                        .retry_after
                        .unwrap_or_else(|| self.retry.wait(attempt - 1))
                        .min(self.retry.max_wait),
                    Err(_) => self.retry.wait(attempt - 1),
                };
                tracing::debug!(bmc = %self.base, path, attempt, ?wait, "transient failure; retrying");
                std::thread::sleep(wait);
                continue;
            }
            let reply = outcome?;
            if reply.status == 401 {
                if self.is_session() && !logged_in_again {
                    // Sessions expire on the BMC's clock (and on a BMC reboot): log in again,
                    // once; a second 401 means the credentials themselves are refused.
                    logged_in_again = true;
                    tracing::info!(bmc = %self.base, "session refused (401); logging in again");
                    self.login(self.sessions.clone())?;
                    attempt -= 1;
                    continue;
                }
                return Err(self.unauthorized());
            }
            return Ok(reply);
        }
    }

    fn send_once(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        if_match: Option<&str>,
        authenticated: bool,
    ) -> Result<Reply, Error> {
        let url = self.absolute(path);
        let mut headers: Vec<(&str, String)> = vec![("Accept", "application/json".to_owned())];
        // OData-Version is what DMTF asks clients to send; some BMCs refuse requests without it.
        headers.push(("OData-Version", "4.0".to_owned()));
        if authenticated {
            match &self.auth {
                Auth::Basic => headers.push((
                    "Authorization",
                    format!(
                        "Basic {}",
                        BASE64.encode(format!(
                            "{}:{}",
                            self.credentials.username(),
                            self.credentials.password()
                        ))
                    ),
                )),
                Auth::Session { token, .. } => headers.push(("X-Auth-Token", token.clone())),
            }
        }
        if let Some(etag) = if_match {
            headers.push(("If-Match", etag.to_owned()));
        }
        // A certificate that does not verify is not transient: retrying would only delay
        // the operator's fix.
        let unreachable = |error: ureq::Error| match tls_failure(&error) {
            Some(detail) => Error::Tls {
                url: self.base.clone(),
                detail,
            },
            None => Error::Unreachable {
                url: self.base.clone(),
                attempts: 1,
                detail: format!("{} {url}: {error}", method.name()),
            },
        };
        let mut request = ureq::http::Request::builder()
            .method(method.name())
            .uri(&url);
        for (name, value) in &headers {
            request = request.header(*name, value);
        }
        let result = match body {
            None => request
                .body(())
                .map_err(ureq::Error::from)
                .and_then(|request| self.agent.run(request)),
            Some(body) => request
                .header("Content-Type", "application/json")
                .body(body.to_string())
                .map_err(ureq::Error::from)
                .and_then(|request| self.agent.run(request)),
        };
        let mut response = result.map_err(unreachable)?;
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned)
        };
        let status = response.status().as_u16();
        let etag = header("etag");
        let location = header("location");
        let token = header("x-auth-token");
        let retry_after = header("retry-after")
            .and_then(|value| value.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = response
            .body_mut()
            .with_config()
            .limit(4 * 1024 * 1024)
            .read_to_string()
            .map_err(unreachable)?;
        let body: Value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::Null)
        };
        Ok(Reply {
            status,
            etag,
            location,
            retry_after,
            token: token.filter(|token| !token.is_empty()),
            body,
            text,
        })
    }
}

fn tls_failure(error: &ureq::Error) -> Option<String> {
    match error {
        ureq::Error::Rustls(error) => Some(error.to_string()),
        ureq::Error::Tls(error) => Some((*error).to_owned()),
        ureq::Error::Pem(error) => Some(error.to_string()),
        ureq::Error::Io(io) => io
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .map(ToString::to_string),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let retry = Retry {
            attempts: 10,
            first_wait: Duration::from_millis(100),
            max_wait: Duration::from_millis(500),
        };
        let waits: Vec<u128> = (0..5).map(|n| retry.wait(n).as_millis()).collect();
        assert_eq!(waits, vec![100, 200, 400, 500, 500]);
        assert_eq!(retry.wait(40), Duration::from_millis(500));
    }
}
