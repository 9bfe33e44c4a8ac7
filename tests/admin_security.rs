//! The admin address locked down (docs/operations.md, "Securing the admin address"): a
//! real gateway serving HTTPS with a certificate from `leasehold certs issue --admin`,
//! tokens from `leasehold token add`, read by a real HTTPS client, by `leasehold status`
//! and `leasehold audit`, scraped by a real Prometheus server, and signed in to from
//! headless Chromium that trusts the federation CA. Evidence is read from outside: status
//! codes and headers, the access log on disk, the gateway's log.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use leasehold_chaos_tests::harness::browser::{Browser, trust_ca};
use leasehold_chaos_tests::harness::onesite::{FAST_TIMINGS, account, gateway_args};
use leasehold_chaos_tests::harness::process::ProcessGuard;
use leasehold_chaos_tests::harness::site::{
    LOOPBACK_ADMIN, PortPicker, PreparedSite, SiteSpec, create_certs, prepare_site,
};
use leasehold_chaos_tests::harness::wait_for;
use serde_json::Value;
use tempfile::TempDir;
use ureq::tls::{RootCerts, TlsConfig, TlsProvider};

const BINARY: &str = env!("CARGO_BIN_EXE_leasehold");
const WAIT: Duration = Duration::from_secs(40);

/// A gateway of one site whose admin address has TLS and a token file.
struct Secured {
    dir: TempDir,
    site: PreparedSite,
    gateway: ProcessGuard,
    tokens: PathBuf,
    agent: ureq::Agent,
}

/// What an HTTP answer says.
#[derive(Debug)]
struct Answer {
    status: u16,
    challenge: Option<String>,
    allow: Option<String>,
    body: String,
}

fn leasehold(args: &[&str]) -> std::process::Output {
    Command::new(BINARY)
        .args(args)
        .output()
        .expect("the leasehold binary runs")
}

/// `leasehold token add`; returns the token it printed.
fn add_token(file: &Path, name: &str, role: &str) -> String {
    let token =
        leasehold_chaos_tests::harness::admin::add_token(Path::new(BINARY), file, name, role)
            .unwrap_or_else(|error| panic!("{error}"));
    assert!(
        token.starts_with("lh_") && !token.contains(char::is_whitespace),
        "{token}"
    );
    token
}

fn agent(ca: &Path) -> ureq::Agent {
    let pem = std::fs::read(ca).expect("the CA is readable");
    let roots: Vec<_> = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(cert)) => Some(cert.to_owned()),
            _ => None,
        })
        .collect();
    let tls = TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .root_certs(RootCerts::Specific(Arc::new(roots)))
        .build();
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .max_redirects(0)
        .tls_config(tls)
        .build()
        .into()
}

/// Site `site-a` with one server and one account, written into `dir` with the federation's
/// certificates and, from `leasehold certs issue --admin`, the admin address's.
fn prepared(dir: &Path) -> PreparedSite {
    let spec = SiteSpec {
        name: "site-a".into(),
        servers: vec!["a1".into()],
        accounts: vec![account("shop", 1, 1, 10)],
        timings: FAST_TIMINGS.to_vec(),
        lending: None,
    };
    let site = prepare_site(dir, &spec).expect("a site config");
    let certs = dir.join("certs");
    create_certs(&certs, &[("site-a", vec!["a1".into()])]).expect("certificates");
    issue_admin_certificate(&certs, &[]);
    site
}

/// `leasehold certs issue --admin` for site-a at 127.0.0.1 and localhost, with `more`.
fn issue_admin_certificate(certs: &Path, more: &[&str]) {
    let mut args = vec![
        "certs".to_owned(),
        "issue".to_owned(),
        "--dir".to_owned(),
        certs.to_string_lossy().into_owned(),
    ];
    args.extend(
        [
            "--site",
            "site-a",
            "--admin",
            "--host",
            "127.0.0.1",
            "--host",
            "localhost",
        ]
        .iter()
        .chain(more)
        .map(|arg| (*arg).to_owned()),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = leasehold(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `leasehold gateway run` of `site`, prepared in `dir`.
fn spawn_gateway(dir: &Path, site: &PreparedSite) -> ProcessGuard {
    let args = gateway_args(&site.config, &dir.join("certs"), &dir.join("state"));
    ProcessGuard::spawn(
        "gateway",
        Path::new(BINARY),
        &args,
        &dir.join("gateway.log"),
    )
    .expect("the gateway starts")
}

/// The `[admin]` of a datacenter site: HTTPS and the token file.
const SECURED_ADMIN: &str = "[admin]\ntls_cert = \"certs/admin/site-a.crt\"\ntls_key = \"certs/admin/site-a.key\"\ntokens = \"admin-tokens\"\n\n";

impl Secured {
    fn start() -> Secured {
        let dir = TempDir::new().expect("a temp dir");
        let site = prepared(dir.path());
        let certs = dir.path().join("certs");
        let text = std::fs::read_to_string(&site.config).expect("the config");
        assert!(text.contains(LOOPBACK_ADMIN), "{text}");
        let text = text.replacen(LOOPBACK_ADMIN, SECURED_ADMIN, 1);
        std::fs::write(&site.config, text).expect("write the config");
        let tokens = dir.path().join("admin-tokens");
        // The gateway refuses to start on a token file it cannot read; one token to begin.
        add_token(&tokens, "first", "read");
        let args = gateway_args(&site.config, &certs, &dir.path().join("state"));
        let gateway = ProcessGuard::spawn(
            "gateway",
            Path::new(BINARY),
            &args,
            &dir.path().join("gateway.log"),
        )
        .expect("the gateway starts");
        let agent = agent(&certs.join("ca.crt"));
        let secured = Secured {
            dir,
            site,
            gateway,
            tokens,
            agent,
        };
        wait_for("the gateway to answer /ready over HTTPS", WAIT, || {
            let answer = secured.get("/ready", None)?;
            if answer.status == 200 {
                Ok(())
            } else {
                Err(format!("{answer:?}"))
            }
        })
        .unwrap_or_else(|error| panic!("{error}\n--- gateway ---\n{}", secured.gateway.output()));
        secured
    }

    /// `leasehold token add --role read`, once the gateway has read the file again.
    fn add_read_token(&self, name: &str) -> String {
        let token = add_token(&self.tokens, name, "read");
        wait_for("the new token to be read", WAIT, || {
            match status(self.get("/v1/status", Some(&token))) {
                200 => Ok(()),
                other => Err(other.to_string()),
            }
        })
        .unwrap_or_else(|error| panic!("{error}\n{}", self.gateway.output()));
        token
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.site.admin.port())
    }

    fn get(&self, path: &str, token: Option<&str>) -> Result<Answer, String> {
        let mut request = self.agent.get(&self.url(path));
        if let Some(token) = token {
            request = request.header("Authorization", &format!("Bearer {token}"));
        }
        answer(request.call())
    }

    fn access_log(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.path().join("state/access.log"))
            .unwrap_or_default()
            .lines()
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|error| panic!("not JSON ({error}): {line}"))
            })
            .collect()
    }

    /// Waits until the access log has an entry with these fields.
    fn wait_logged(&self, fields: &[(&str, Value)]) -> Value {
        wait_for("an access log entry", WAIT, || {
            self.access_log()
                .into_iter()
                .find(|entry| fields.iter().all(|(key, value)| &entry[*key] == value))
                .ok_or_else(|| format!("none with {fields:?}"))
        })
        .unwrap_or_else(|error| panic!("{error}"))
    }
}

fn answer(result: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Result<Answer, String> {
    let mut response = result.map_err(|error| error.to_string())?;
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    };
    let (challenge, allow) = (header("www-authenticate"), header("allow"));
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .read_to_string()
        .map_err(|error| error.to_string())?;
    Ok(Answer {
        status,
        challenge,
        allow,
        body,
    })
}

fn status(answer: Result<Answer, String>) -> u16 {
    answer
        .map(|answer| answer.status)
        .unwrap_or_else(|error| panic!("{error}"))
}

#[test]
fn tokens_and_roles_decide_who_reads_what_over_https() {
    let site = Secured::start();
    let prom = add_token(&site.tokens, "prom", "metrics");
    let alice = add_token(&site.tokens, "alice", "read");
    // The gateway reads the file again when it changes.
    let bob = site.add_read_token("bob");

    // No token: 401 with a Bearer challenge; probes stay open.
    let none = site.get("/v1/accounts", None).expect("an answer");
    assert_eq!(none.status, 401, "{none:?}");
    assert_eq!(
        none.challenge.as_deref(),
        Some("Bearer realm=\"leasehold site-a\"")
    );
    assert!(none.body.contains("needs a token"), "{}", none.body);
    assert_eq!(status(site.get("/live", None)), 200);
    assert_eq!(status(site.get("/ready", None)), 200);
    // A metrics token reads /metrics and nothing else.
    let forbidden = site.get("/v1/accounts", Some(&prom)).expect("an answer");
    assert_eq!(forbidden.status, 403, "{forbidden:?}");
    assert!(
        forbidden.body.contains("`prom` has the role `metrics`"),
        "{}",
        forbidden.body
    );
    let metrics = site.get("/metrics", Some(&prom)).expect("an answer");
    assert_eq!(metrics.status, 200);
    assert!(metrics.body.contains("leasehold_"), "{}", metrics.body);
    // A read token reads the API.
    let accounts = site.get("/v1/accounts", Some(&alice)).expect("an answer");
    assert_eq!(accounts.status, 200, "{accounts:?}");
    assert!(accounts.body.contains("\"shop\""), "{}", accounts.body);
    // A made-up token: 401, saying the token is invalid.
    let wrong = site
        .get("/v1/status", Some("lh_not-a-token"))
        .expect("an answer");
    assert_eq!(wrong.status, 401);
    assert!(
        wrong
            .challenge
            .as_deref()
            .is_some_and(|c| c.contains("error=\"invalid_token\"")),
        "{wrong:?}"
    );
    // Plain HTTP to the HTTPS address gets no answer of the API.
    let plain = ureq::get(&format!(
        "http://127.0.0.1:{}/v1/status",
        site.site.admin.port()
    ))
    .config()
    .timeout_global(Some(Duration::from_secs(10)))
    .build()
    .call();
    assert!(
        plain.is_err() || plain.is_ok_and(|r| r.status() == 400),
        "plain HTTP was answered"
    );

    // Removed: `leasehold token remove`, and the gateway refuses it once it has read the file.
    let out = leasehold(&[
        "token",
        "remove",
        "--file",
        &site.tokens.to_string_lossy(),
        "--name",
        "bob",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("bob's token to be refused", WAIT, || {
        match status(site.get("/v1/accounts", Some(&bob))) {
            401 => Ok(()),
            other => Err(other.to_string()),
        }
    })
    .unwrap_or_else(|error| panic!("{error}"));
    // Expired: an edit gives alice's token an expiry in the past.
    let text = std::fs::read_to_string(&site.tokens).expect("the token file");
    let line = text
        .lines()
        .find(|line| line.starts_with("alice "))
        .expect("alice's line")
        .to_owned();
    std::fs::write(
        &site.tokens,
        text.replace(&line, &format!("{line} expires=2026-01-01T00:00:00Z")),
    )
    .expect("edit the token file");
    let expired = wait_for("alice's token to be refused as expired", WAIT, || {
        let answer = site.get("/v1/accounts", Some(&alice))?;
        if answer.status == 401 && answer.body.contains("expired at 2026-01-01T00:00:00Z") {
            Ok(answer)
        } else {
            Err(format!("{answer:?}"))
        }
    })
    .unwrap_or_else(|error| panic!("{error}"));
    assert!(expired.body.contains("`alice`"), "{}", expired.body);
    // A file others may read is refused, and the tokens stay as they were.
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&site.tokens, std::fs::Permissions::from_mode(0o644))
            .expect("chmod");
    }
    wait_for("the token file to be refused", WAIT, || {
        let log = site.gateway.output();
        if log.contains("admin token file refused") && log.contains("chmod 600") {
            Ok(())
        } else {
            Err("not yet".to_owned())
        }
    })
    .unwrap_or_else(|error| panic!("{error}\n{}", site.gateway.output()));
    assert_eq!(
        status(site.get("/metrics", Some(&prom))),
        200,
        "the last good tokens still hold"
    );
    // Fixed, and read again on SIGHUP as well as on a change.
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&site.tokens, std::fs::Permissions::from_mode(0o600))
            .expect("chmod");
    }
    let pid = site.gateway.pid().expect("the gateway's pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .expect("SIGHUP");
    wait_for("the token file to be read on SIGHUP", WAIT, || {
        let log = site.gateway.output();
        let read = log
            .lines()
            .any(|line| line.contains("admin token file read again") && line.contains("SIGHUP"));
        if read {
            Ok(())
        } else {
            Err("not yet".to_owned())
        }
    })
    .unwrap_or_else(|error| panic!("{error}\n{}", site.gateway.output()));

    // The access log names who read what; no line holds a token.
    site.wait_logged(&[
        ("token", "prom".into()),
        ("path", "/v1/accounts".into()),
        ("status", 403.into()),
    ]);
    let read = site.wait_logged(&[
        ("token", "alice".into()),
        ("path", "/v1/accounts".into()),
        ("status", 200.into()),
    ]);
    assert_eq!(read["role"], "read");
    assert!(
        read["remote"]
            .as_str()
            .is_some_and(|remote| remote.starts_with("127.0.0.1:")),
        "{read}"
    );
    site.wait_logged(&[
        ("token", "-".into()),
        ("path", "/v1/accounts".into()),
        ("status", 401.into()),
    ]);
    let log =
        std::fs::read_to_string(site.dir.path().join("state/access.log")).expect("the access log");
    for token in [&prom, &alice, &bob] {
        assert!(!log.contains(token.as_str()), "a token in the access log");
        assert!(
            !site.gateway.output().contains(token.as_str()),
            "a token in the gateway log"
        );
    }
}

#[test]
fn status_and_audit_read_with_a_token_file_and_the_ca() {
    let site = Secured::start();
    let token = add_token(&site.tokens, "ops", "read");
    let token_file = site.dir.path().join("ops.token");
    std::fs::write(&token_file, format!("{token}\n")).expect("write the token file");
    let gateway = site.url("");
    let ca = site.dir.path().join("certs/ca.crt");
    let (gateway, ca, token_file) = (
        gateway.as_str(),
        ca.to_string_lossy(),
        token_file.to_string_lossy(),
    );
    let status = wait_for("leasehold status to read the site", WAIT, || {
        let out = leasehold(&[
            "status",
            "--gateway",
            gateway,
            "--ca",
            &ca,
            "--token-file",
            &token_file,
        ]);
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    })
    .unwrap_or_else(|error| panic!("{error}"));
    assert!(status.contains("site-a"), "{status}");
    let out = Command::new(BINARY)
        .args(["audit", "--gateway", gateway, "--ca", &ca])
        .env("LEASEHOLD_TOKEN", &token)
        .output()
        .expect("leasehold audit runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Without a token: refused, and told how to give one.
    let out = leasehold(&["status", "--gateway", gateway, "--ca", &ca]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && said.contains("401") && said.contains("--token-file"),
        "{said}"
    );
    // Without the CA: the certificate is not trusted, and nothing is read.
    let out = leasehold(&["status", "--gateway", gateway, "--token-file", &token_file]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && said.contains("cannot reach"),
        "{said}"
    );
    site.wait_logged(&[
        ("token", "ops".into()),
        ("path", "/v1/status".into()),
        ("status", 200.into()),
    ]);
}

#[test]
fn http_conventions_on_the_admin_address() {
    let site = Secured::start();
    let token = site.add_read_token("ops");
    let bearer = format!("Bearer {token}");
    // A wrong method: 405 with Allow (the gate runs first, so a token is needed to learn it).
    let post = answer(
        site.agent
            .post(&site.url("/v1/accounts"))
            .header("Authorization", &bearer)
            .send(""),
    )
    .expect("an answer");
    assert_eq!(
        (post.status, post.allow.as_deref()),
        (405, Some("GET")),
        "{post:?}"
    );
    let delete = answer(site.agent.delete(&site.url("/login")).call()).expect("an answer");
    assert_eq!(
        (delete.status, delete.allow.as_deref()),
        (405, Some("GET, POST")),
        "{delete:?}"
    );
    // A 100 KB header: 431; a body over 4 KiB: 413.
    let big = "x".repeat(100 * 1024);
    let answer_big = answer(
        site.agent
            .get(&site.url("/v1/status"))
            .header("Authorization", &bearer)
            .header("X-Big", &big)
            .call(),
    );
    match answer_big {
        Ok(refused) => assert_eq!(refused.status, 431, "{refused:?}"),
        Err(error) => panic!("a 100 KB header must get 431, not: {error}"),
    }
    let body = answer(
        site.agent
            .post(&site.url("/login"))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .send(format!("token={}", "t".repeat(8000))),
    )
    .expect("an answer");
    assert_eq!(body.status, 413, "{body:?}");
    // HTTP/2 where the client offers it (ALPN), as a browser does.
    let ca = site.dir.path().join("certs/ca.crt");
    let out = Command::new("curl")
        .args([
            "--http2",
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} %{http_code}",
            "--cacert",
        ])
        .arg(&ca)
        .args([
            "-H",
            &format!("Authorization: {bearer}"),
            &site.url("/v1/status"),
        ])
        .output()
        .expect("curl runs (.ci/run installs it)");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "2 200",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A connection that never finishes its TLS handshake is closed, not kept.
    let started = std::time::Instant::now();
    let mut idle = std::net::TcpStream::connect(site.site.admin).expect("connect");
    idle.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("a read timeout");
    let mut buffer = [0u8; 64];
    let read = std::io::Read::read(&mut idle, &mut buffer);
    assert!(
        matches!(read, Ok(0))
            || read
                .as_ref()
                .is_err_and(|e| e.kind() != std::io::ErrorKind::WouldBlock),
        "{read:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "an idle connection was kept for {:?}",
        started.elapsed()
    );
}

#[test]
fn prometheus_scrapes_metrics_with_a_bearer_token_over_tls() {
    let site = Secured::start();
    let token = add_token(&site.tokens, "prometheus", "metrics");
    let credentials = site.dir.path().join("prometheus.token");
    std::fs::write(&credentials, &token).expect("write the credentials file");
    let ca = site.dir.path().join("certs/ca.crt");
    let web = PortPicker::default().pick().expect("a port");
    let config = site.dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: leasehold\n    scheme: https\n    authorization:\n      type: Bearer\n      credentials_file: {}\n    tls_config:\n      ca_file: {}\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n",
            credentials.display(),
            ca.display(),
            site.site.admin.port()
        ),
    )
    .expect("write prometheus.yml");
    let check = Command::new("promtool")
        .arg("check")
        .arg("config")
        .arg(&config)
        .output()
        .expect("promtool runs (.ci/run installs it)");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    let args: Vec<String> = vec![
        format!("--config.file={}", config.display()),
        format!(
            "--storage.tsdb.path={}",
            site.dir.path().join("tsdb").display()
        ),
        format!("--web.listen-address=127.0.0.1:{web}"),
    ];
    let prometheus = ProcessGuard::spawn(
        "prometheus",
        Path::new("prometheus"),
        &args,
        &site.dir.path().join("prometheus.log"),
    )
    .expect("prometheus starts (.ci/run installs it)");
    let query = |q: &str| -> Result<Value, String> {
        let mut response = ureq::get(&format!("http://127.0.0.1:{web}/api/v1/query"))
            .query("query", q)
            .call()
            .map_err(|error| error.to_string())?;
        let body = response
            .body_mut()
            .read_to_string()
            .map_err(|error| error.to_string())?;
        serde_json::from_str(&body).map_err(|error| error.to_string())
    };
    let site_metric = wait_for(
        "Prometheus to scrape the gateway",
        Duration::from_secs(90),
        || {
            let up = query("up{job=\"leasehold\"}")?;
            if up["data"]["result"][0]["value"][1] != "1" {
                return Err(format!("up: {up}"));
            }
            let servers = query("leasehold_servers")?;
            match servers["data"]["result"].as_array() {
                Some(series) if !series.is_empty() => Ok(servers),
                _ => Err(format!("leasehold_servers: {servers}")),
            }
        },
    )
    .unwrap_or_else(|error| panic!("{error}\n--- prometheus ---\n{}", prometheus.output()));
    assert!(site_metric.to_string().contains("site-a"), "{site_metric}");
    site.wait_logged(&[
        ("token", "prometheus".into()),
        ("path", "/metrics".into()),
        ("status", 200.into()),
    ]);
}

#[test]
fn the_page_signs_in_and_refreshes_in_chromium_over_https() {
    let site = Secured::start();
    let token = site.add_read_token("alice");
    let home = site.dir.path().join("browser-home");
    trust_ca(&home, &site.dir.path().join("certs/ca.crt"))
        .unwrap_or_else(|error| panic!("{error}"));
    let mut browser = Browser::start(&home).unwrap_or_else(|error| panic!("{error}"));
    let url = site.url("/");
    browser
        .navigate(&url)
        .unwrap_or_else(|error| panic!("{error}\n{}", browser.log()));
    let shown = "document.getElementById('login') ? 'login' : document.getElementById('live') ? 'live' : 'other: ' + document.title + ' ' + document.body.innerText.slice(0, 300)";
    wait_for("the sign-in form", WAIT, || match browser.eval(shown)? {
        Value::String(page) if page == "login" => Ok(()),
        other => Err(other.to_string()),
    })
    .unwrap_or_else(|error| panic!("{error}\n{}", browser.log()));
    browser
        .eval(&format!(
            "document.getElementById('token').value = {}; document.querySelector('#login form').submit(); 'sent'",
            Value::String(token.clone())
        ))
        .unwrap_or_else(|error| panic!("{error}"));
    let signed_in = wait_for("the page, signed in", WAIT, || {
        match browser.eval(
            "document.getElementById('viewer') ? document.getElementById('viewer').textContent.replace(/\\s+/g, ' ') : ''",
        )? {
            Value::String(text) if text.contains("signed in as alice") => Ok(text),
            other => Err(other.to_string()),
        }
    })
    .unwrap_or_else(|error| panic!("{error}\n{}", browser.log()));
    assert!(signed_in.contains("read"), "{signed_in}");
    // The page's script refreshes it with the cookie: its footer says when.
    wait_for("the page to refresh itself", WAIT, || {
        match browser.eval("document.getElementById('conn').innerText")? {
            Value::String(text) if text.starts_with("live · updated") => Ok(()),
            other => Err(other.to_string()),
        }
    })
    .unwrap_or_else(|error| panic!("{error}\n{}", browser.log()));
    // The cookie is out of scripts' reach, and the token is in no URL.
    assert_eq!(
        browser.eval("document.cookie").expect("eval"),
        Value::String(String::new())
    );
    let href = browser.eval("location.href").expect("eval");
    assert_eq!(href, Value::String(url.clone()));
    // The browser spoke HTTP/2, and the access log names the token, never shows it.
    let page = site.wait_logged(&[
        ("token", "alice".into()),
        ("path", "/".into()),
        ("status", 200.into()),
    ]);
    assert_eq!(page["protocol"], "HTTP/2.0", "{page}");
    site.wait_logged(&[
        ("token", "alice".into()),
        ("path", "/login".into()),
        ("status", 303.into()),
    ]);
    let log =
        std::fs::read_to_string(site.dir.path().join("state/access.log")).expect("the access log");
    assert!(!log.contains(&token), "a token in the access log");
    // Signing out drops the cookie: the page asks for a token again.
    browser
        .eval("document.querySelector('form.signout').submit(); 'out'")
        .unwrap_or_else(|error| panic!("{error}"));
    wait_for("the sign-in form again", WAIT, || {
        match browser.eval(shown)? {
            Value::String(page) if page == "login" => Ok(()),
            other => Err(other.to_string()),
        }
    })
    .unwrap_or_else(|error| panic!("{error}\n{}", browser.log()));
}

#[test]
fn plain_http_off_loopback_is_warned_at_start_and_on_the_page() {
    let dir = TempDir::new().expect("a temp dir");
    let site = prepared(dir.path());
    // Every address of this host, not only loopback.
    let text = std::fs::read_to_string(&site.config).expect("the config");
    let loopback = format!("admin_addr = \"{}\"", site.admin);
    assert!(text.contains(&loopback), "{text}");
    let everywhere = format!("0.0.0.0:{}", site.admin.port());
    std::fs::write(
        &site.config,
        text.replacen(&loopback, &format!("admin_addr = \"{everywhere}\""), 1),
    )
    .expect("write the config");
    let gateway = spawn_gateway(dir.path(), &site);
    let page = wait_for("the status page", WAIT, || {
        let mut response = ureq::get(&format!("http://127.0.0.1:{}/", site.admin.port()))
            .call()
            .map_err(|error| error.to_string())?;
        response
            .body_mut()
            .read_to_string()
            .map_err(|error| error.to_string())
    })
    .unwrap_or_else(|error| panic!("{error}\n{}", gateway.output()));
    let warning = format!("the admin address {everywhere} serves plain HTTP");
    assert!(
        page.contains("id=\"admin-insecure\"") && page.contains(&warning),
        "{page}"
    );
    assert!(gateway.output().contains(&warning), "{}", gateway.output());
    assert!(
        gateway
            .output()
            .contains("without a token (anonymous_role)"),
        "{}",
        gateway.output()
    );
}

#[test]
fn a_bad_certificate_key_or_token_file_stops_the_start_and_is_named() {
    let dir = TempDir::new().expect("a temp dir");
    let site = prepared(dir.path());
    let certs = dir.path().join("certs");
    let tokens = dir.path().join("admin-tokens");
    add_token(&tokens, "first", "read");
    let original = std::fs::read_to_string(&site.config).expect("the config");
    let start = |admin: &str| -> String {
        std::fs::write(&site.config, original.replacen(LOOPBACK_ADMIN, admin, 1))
            .expect("write the config");
        let args = gateway_args(&site.config, &certs, &dir.path().join("state"));
        // A gateway that starts after all would run for ever: the guard kills it, and the
        // wait below fails the test instead of hanging it.
        let log = dir.path().join("refused.log");
        let mut gateway = ProcessGuard::spawn("gateway", Path::new(BINARY), &args, &log)
            .expect("the gateway runs");
        wait_for("the gateway to refuse to start", WAIT, || {
            if gateway.exited() {
                Ok(())
            } else {
                Err("still running".to_owned())
            }
        })
        .unwrap_or_else(|error| panic!("{error} with {admin}:\n{}", gateway.output()));
        gateway.output()
    };
    let said = start(
        "[admin]\ntls_cert = \"certs/admin/missing.crt\"\ntls_key = \"certs/admin/site-a.key\"\ntokens = \"admin-tokens\"\n\n",
    );
    assert!(
        said.contains("[admin] tls_cert") && said.contains("certs/admin/missing.crt"),
        "{said}"
    );
    // The site's federation key is not the admin certificate's.
    let said = start(
        "[admin]\ntls_cert = \"certs/admin/site-a.crt\"\ntls_key = \"certs/sites/site-a.key\"\ntokens = \"admin-tokens\"\n\n",
    );
    assert!(said.contains("are they a pair?"), "{said}");
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    }
    let said = start(
        "[admin]\ntls_cert = \"certs/admin/site-a.crt\"\ntls_key = \"certs/admin/site-a.key\"\ntokens = \"admin-tokens\"\n\n",
    );
    assert!(
        said.contains("admin-tokens has mode 0640") && said.contains("chmod 600"),
        "{said}"
    );
}

#[test]
fn a_certificate_that_expires_within_30_days_is_on_the_page_and_in_the_metrics() {
    use leasehold_federation::ids::SiteId;
    use leasehold_federation::transport::certs;
    use leasehold_federation::transport::identity::PeerName;
    let dir = TempDir::new().expect("a temp dir");
    let site = prepared(dir.path());
    // The site's certificate, issued again to run out in ten days.
    let now = time::OffsetDateTime::now_utc();
    certs::issue_with_validity(
        &dir.path().join("certs"),
        &PeerName::Site(SiteId::parse("site-a").expect("a site id")),
        now - time::Duration::hours(1),
        now + time::Duration::days(10),
        true,
    )
    .expect("a short certificate");
    let gateway = spawn_gateway(dir.path(), &site);
    let admin = site.admin;
    let page = wait_for("the status page", WAIT, || {
        leasehold_chaos_tests::harness::admin::get_text(admin, "/")
    })
    .unwrap_or_else(|error| panic!("{error}\n{}", gateway.output()));
    assert!(page.contains("id=\"certificates-expiring\""), "{page}");
    // Ten days, to the second as the certificate writes it.
    assert!(
        page.contains("the site certificate expires in 9d 23h")
            || page.contains("the site certificate expires in 10d 00h"),
        "{page}"
    );
    assert!(!page.contains("the ca certificate"), "{page}");
    let metrics = leasehold_chaos_tests::harness::admin::get_text(admin, "/metrics")
        .unwrap_or_else(|error| panic!("{error}"));
    let expiry = leasehold_chaos_tests::harness::admin::metric_value(
        &metrics,
        "leasehold_certificate_expiry_timestamp_seconds",
        &[("certificate", "site")],
    )
    .unwrap_or_else(|| panic!("{metrics}"));
    let left = expiry - now.unix_timestamp() as f64;
    assert!(
        (9.9 * 86_400.0..=10.0 * 86_400.0 + 60.0).contains(&left),
        "{left}"
    );
}

/// The admin address's certificate, renewed with `leasehold certs issue --admin --force`
/// while the gateway runs: a new HTTPS connection gets the renewed one (as curl sees it),
/// the page warns of it by its new expiry, and the gateway was never restarted.
#[test]
fn a_renewed_admin_certificate_is_presented_from_the_next_handshake() {
    let site = Secured::start();
    let certs = site.dir.path().join("certs");
    let ca = certs.join("ca.crt");
    let presented = || -> Result<String, String> {
        let out = Command::new("curl")
            .args(["-v", "-sS", "-o", "/dev/null", "--cacert"])
            .arg(&ca)
            .arg(site.url("/live"))
            .output()
            .map_err(|error| format!("curl: {error}"))?;
        let said = String::from_utf8_lossy(&out.stderr).into_owned();
        said.lines()
            .find_map(|line| {
                line.trim_start_matches(['*', ' '])
                    .strip_prefix("expire date: ")
                    .map(str::to_owned)
            })
            .ok_or(said)
    };
    let before = presented().unwrap();
    let pid = site.gateway.pid();
    issue_admin_certificate(&certs, &["--force", "--days", "20"]);
    let after = wait_for("HTTPS to present the renewed certificate", WAIT, || {
        let now = presented()?;
        (now != before)
            .then_some(now)
            .ok_or_else(|| format!("still expires {before}"))
    })
    .unwrap_or_else(|error| panic!("{error}\n{}", site.gateway.output()));
    eprintln!("presented before: {before}; after: {after}");
    let token = site.add_read_token("viewer");
    wait_for("the page to warn of the admin certificate", WAIT, || {
        let page = site.get("/", Some(&token))?.body;
        page.contains("the admin certificate expires in 19d 23h")
            .then_some(())
            .ok_or_else(|| "no warning of the admin certificate yet".to_owned())
    })
    .unwrap_or_else(|error| panic!("{error}\n{}", site.gateway.output()));
    assert_eq!(site.gateway.pid(), pid);
    assert!(
        site.gateway
            .output()
            .contains("admin certificate read again"),
        "{}",
        site.gateway.output()
    );
}
