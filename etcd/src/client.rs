//! Requests to an etcd cluster's endpoints, one after another until one answers.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use ureq::Agent;
use ureq::tls::{Certificate, ClientCert, PemItem, PrivateKey, RootCerts, TlsConfig, TlsProvider};

use crate::json::{self, int};
use crate::{Compare, Error, KeyValue, Lease, Op, TxnOutcome};

/// Keys read per request when a prefix is read; the pages are read at one revision.
const PAGE: usize = 1_000;

/// Where the cluster is and how to reach it.
#[derive(Clone, Debug)]
pub struct EtcdConfig {
    /// Client URLs, `http://host:port` or `https://host:port`, of one cluster.
    pub endpoints: Vec<String>,
    /// PEM: the CA that signed the cluster's certificates (https endpoints).
    pub ca_pem: Option<Vec<u8>>,
    /// PEM: a client certificate and its key, where the cluster asks for one.
    pub client_pem: Option<(Vec<u8>, Vec<u8>)>,
    /// How long one request may take on one endpoint, connecting included.
    pub timeout: Duration,
}

/// A client of one etcd cluster. Cheap to share: requests on several threads at once each
/// take a connection of the agent's pool.
pub struct Etcd {
    agent: Agent,
    endpoints: Vec<String>,
    /// The endpoint that answered last, tried first.
    preferred: AtomicUsize,
}

/// Why one endpoint did not answer: the next is tried.
struct Unanswered(String);

impl Etcd {
    pub fn new(config: &EtcdConfig) -> Result<Etcd, Error> {
        if config.endpoints.is_empty() {
            return Err(Error::Config("no endpoint given".to_owned()));
        }
        let mut endpoints = Vec::new();
        for endpoint in &config.endpoints {
            let endpoint = endpoint.trim_end_matches('/');
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                return Err(Error::Config(format!(
                    "endpoint `{endpoint}` must start with http:// or https:// (etcd's client URL, e.g. http://127.0.0.1:2379)"
                )));
            }
            if endpoint.starts_with("https://") && config.ca_pem.is_none() {
                return Err(Error::Config(format!(
                    "endpoint `{endpoint}` is https: give the CA that signed the cluster's certificates (etcd_ca)"
                )));
            }
            endpoints.push(endpoint.to_owned());
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = TlsConfig::builder()
            .provider(TlsProvider::Rustls)
            .unversioned_rustls_crypto_provider(provider);
        if let Some(ca) = &config.ca_pem {
            let certs = certificates(ca, "etcd_ca")?;
            tls = tls.root_certs(RootCerts::Specific(Arc::new(certs)));
        }
        if let Some((cert, key)) = &config.client_pem {
            let chain = certificates(cert, "etcd_cert")?;
            let key = PrivateKey::from_pem(key).map_err(|error| {
                Error::Config(format!("etcd_key holds no PEM private key: {error}"))
            })?;
            tls = tls.client_cert(Some(ClientCert::new_with_certs(&chain, key)));
        }
        let agent: Agent = Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(config.timeout))
            .timeout_global(Some(config.timeout))
            .tls_config(tls.build())
            .max_redirects(0)
            .build()
            .into();
        Ok(Etcd {
            agent,
            endpoints,
            preferred: AtomicUsize::new(0),
        })
    }

    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// A lease of `ttl_s` seconds.
    pub fn grant(&self, ttl_s: i64) -> Result<Lease, Error> {
        let path = "/v3/lease/grant";
        let (endpoint, answer) = self.post(path, &json!({"TTL": ttl_s.to_string()}))?;
        let invalid = |detail| invalid(&endpoint, path, detail);
        let id = int(&answer["ID"]).map_err(invalid)?;
        let ttl_s = int(&answer["TTL"]).map_err(invalid)?;
        if id == 0 || ttl_s <= 0 {
            return Err(invalid(format!("no lease in {answer}")));
        }
        Ok(Lease { id, ttl_s })
    }

    /// Keep lease `id` alive: its time left, in whole seconds, renewed to its full TTL; or
    /// `None` if it has ended.
    pub fn keep_alive(&self, id: i64) -> Result<Option<i64>, Error> {
        let path = "/v3/lease/keepalive";
        let (endpoint, answer) = self.post(path, &json!({"ID": id.to_string()}))?;
        // A stream of one answer, wrapped in `result`; an ended lease has no TTL.
        let result = &answer["result"];
        let ttl = int(&result["TTL"]).map_err(|detail| invalid(&endpoint, path, detail))?;
        Ok((ttl > 0).then_some(ttl))
    }

    /// End lease `id` now; its keys go with it. An ended lease is not an error.
    pub fn revoke(&self, id: i64) -> Result<(), Error> {
        match self.post("/v3/lease/revoke", &json!({"ID": id.to_string()})) {
            Ok(_) => Ok(()),
            Err(Error::Refused { message, .. }) if message.contains("not found") => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// The value at `key`, if any.
    pub fn get(&self, key: &[u8]) -> Result<Option<KeyValue>, Error> {
        let path = "/v3/kv/range";
        let (endpoint, answer) = self.post(path, &json!({"key": json::bytes(key)}))?;
        let kvs =
            json::key_values(&answer["kvs"]).map_err(|detail| invalid(&endpoint, path, detail))?;
        Ok(kvs.into_iter().next())
    }

    /// Every key that starts with `prefix`, in key order, as of one revision (returned too),
    /// read a page at a time.
    pub fn get_prefix(&self, prefix: &[u8]) -> Result<(Vec<KeyValue>, i64), Error> {
        let path = "/v3/kv/range";
        let end = json::bytes(&crate::prefix_end(prefix));
        let mut from = prefix.to_vec();
        let mut revision = 0;
        let mut all = Vec::new();
        loop {
            let mut request = json!({
                "key": json::bytes(&from),
                "range_end": end,
                "limit": PAGE.to_string(),
            });
            if revision != 0 {
                request["revision"] = Value::String(revision.to_string());
            }
            let (endpoint, answer) = self.post(path, &request)?;
            let invalid = |detail| invalid(&endpoint, path, detail);
            if revision == 0 {
                revision = int(&answer["header"]["revision"]).map_err(invalid)?;
            }
            let page = json::key_values(&answer["kvs"]).map_err(invalid)?;
            let more = answer["more"].as_bool().unwrap_or(false);
            match page.last() {
                Some(last) if more => {
                    // The next page starts just after the last key read.
                    from = last.key.clone();
                    from.push(0);
                }
                _ => {
                    all.extend(page);
                    return Ok((all, revision));
                }
            }
            all.extend(page);
        }
    }

    /// At most `limit` keys from `from` (inclusive) to `end` (exclusive), in key order or,
    /// `descending`, from the last.
    pub fn range(
        &self,
        from: &[u8],
        end: &[u8],
        limit: usize,
        descending: bool,
    ) -> Result<Vec<KeyValue>, Error> {
        let path = "/v3/kv/range";
        let mut request = json!({
            "key": json::bytes(from),
            "range_end": json::bytes(end),
            "limit": limit.to_string(),
        });
        if descending {
            request["sort_order"] = json!("DESCEND");
            request["sort_target"] = json!("KEY");
        }
        let (endpoint, answer) = self.post(path, &request)?;
        json::key_values(&answer["kvs"]).map_err(|detail| invalid(&endpoint, path, detail))
    }

    /// Write `value` at `key`, with no lease; the store's revision after it.
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<i64, Error> {
        let path = "/v3/kv/put";
        let (endpoint, answer) = self.post(
            path,
            &json!({"key": json::bytes(key), "value": json::bytes(value)}),
        )?;
        int(&answer["header"]["revision"]).map_err(|detail| invalid(&endpoint, path, detail))
    }

    /// If every comparison holds, `success`; otherwise `failure`; atomically.
    pub fn txn(
        &self,
        compares: &[Compare],
        success: &[Op],
        failure: &[Op],
    ) -> Result<TxnOutcome, Error> {
        let path = "/v3/kv/txn";
        let request = json!({
            "compare": compares.iter().map(json::compare).collect::<Vec<_>>(),
            "success": success.iter().map(json::op).collect::<Vec<_>>(),
            "failure": failure.iter().map(json::op).collect::<Vec<_>>(),
        });
        let (endpoint, answer) = self.post(path, &request)?;
        let invalid = |detail| invalid(&endpoint, path, detail);
        let succeeded = answer["succeeded"].as_bool().unwrap_or(false);
        let revision = int(&answer["header"]["revision"]).map_err(invalid)?;
        let mut gets = Vec::new();
        if let Some(responses) = answer["responses"].as_array() {
            for response in responses {
                let range = &response["response_range"];
                if !range.is_null() {
                    gets.push(
                        json::key_values(&range["kvs"])
                            .map_err(invalid)?
                            .into_iter()
                            .next(),
                    );
                }
            }
        }
        Ok(TxnOutcome {
            succeeded,
            revision,
            gets,
        })
    }

    /// POST `body` to `path` on the preferred endpoint, then on each other in turn until one
    /// answers: the endpoint that did, and its answer.
    fn post(&self, path: &str, body: &Value) -> Result<(String, Value), Error> {
        let first = self.preferred.load(Ordering::Relaxed) % self.endpoints.len();
        let mut tried = Vec::new();
        for offset in 0..self.endpoints.len() {
            let at = (first + offset) % self.endpoints.len();
            let endpoint = &self.endpoints[at];
            match self.post_to(endpoint, path, body) {
                Ok(Ok(answer)) => {
                    self.preferred.store(at, Ordering::Relaxed);
                    return Ok((endpoint.clone(), answer));
                }
                Ok(Err(refused)) => return Err(refused),
                Err(Unanswered(detail)) => {
                    tracing::debug!(%endpoint, path, %detail, "etcd endpoint did not answer");
                    tried.push(format!("{endpoint}: {detail}"));
                }
            }
        }
        Err(Error::Unreachable {
            endpoints: self.endpoints.join(", "),
            detail: tried.join("; "),
        })
    }

    /// One endpoint's answer; `Err` where another endpoint may answer instead.
    fn post_to(
        &self,
        endpoint: &str,
        path: &str,
        body: &Value,
    ) -> Result<Result<Value, Error>, Unanswered> {
        let response = self
            .agent
            .post(format!("{endpoint}{path}"))
            .header("content-type", "application/json")
            .send(body.to_string());
        let mut response = match response {
            Ok(response) => response,
            Err(error) => return Err(Unanswered(error.to_string())),
        };
        let status = response.status().as_u16();
        let text = match response.body_mut().read_to_string() {
            Ok(text) => text,
            Err(error) => return Err(Unanswered(format!("reading the answer: {error}"))),
        };
        // A streamed answer (keep-alive) is one JSON object per line; one was asked for.
        let first = text
            .lines()
            .find(|line| !line.trim().is_empty())
            .unwrap_or("");
        let answer: Value = match serde_json::from_str(first) {
            Ok(answer) => answer,
            Err(error) => {
                return Ok(Err(invalid(
                    endpoint,
                    path,
                    format!("HTTP {status}, not JSON ({error}): {}", clip(&text)),
                )));
            }
        };
        // An error, at the top or inside a stream's envelope.
        let error = if answer["error"].is_object() {
            &answer["error"]
        } else {
            &answer
        };
        let message = error["message"]
            .as_str()
            .or_else(|| error["error"].as_str())
            .filter(|_| status != 200 || answer["error"].is_object());
        match message {
            None => Ok(Ok(answer)),
            Some(message) => {
                let code = error["code"].as_i64().unwrap_or(0);
                // gRPC's UNAVAILABLE and DEADLINE_EXCEEDED: this member has no leader or is
                // partitioned from it; another member may answer.
                if code == 14 || code == 4 || message.contains("no leader") {
                    Err(Unanswered(format!("{message} (code {code})")))
                } else {
                    Ok(Err(Error::Refused {
                        endpoint: endpoint.to_owned(),
                        path: path.to_owned(),
                        message: format!("{message} (HTTP {status}, code {code})"),
                    }))
                }
            }
        }
    }
}

fn invalid(endpoint: &str, path: &str, detail: String) -> Error {
    Error::Invalid {
        endpoint: endpoint.to_owned(),
        path: path.to_owned(),
        detail,
    }
}

fn clip(text: &str) -> String {
    text.chars().take(200).collect()
}

fn certificates(pem: &[u8], what: &str) -> Result<Vec<Certificate<'static>>, Error> {
    let certs = ureq::tls::parse_pem(pem)
        .filter_map(|item| match item {
            Ok(PemItem::Certificate(cert)) => Some(Ok(cert)),
            Ok(_) => None,
            Err(error) => Some(Err(error)),
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| Error::Config(format!("{what} is not PEM: {error}")))?;
    if certs.is_empty() {
        return Err(Error::Config(format!("{what} holds no certificate")));
    }
    Ok(certs)
}
