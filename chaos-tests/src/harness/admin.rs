//! Reading a gateway's admin API: plain HTTP GETs with short timeouts.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;

/// GET `http://addr{path}` and parse the body as JSON.
pub fn get_json(addr: SocketAddr, path: &str) -> Result<Value, String> {
    let body = get_text(addr, path)?;
    serde_json::from_str(&body).map_err(|error| format!("GET {path}: not JSON ({error}): {body}"))
}

/// GET `http://addr{path}` and return the body of a 2xx answer.
pub fn get_text(addr: SocketAddr, path: &str) -> Result<String, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(2)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent
        .get(&format!("http://{addr}{path}"))
        .call()
        .map_err(|error| format!("GET {path}: {error}"))?;
    let status = response.status();
    let body = response
        .body_mut()
        .read_to_string()
        .map_err(|error| format!("GET {path}: {error}"))?;
    if status.is_success() {
        Ok(body)
    } else {
        Err(format!("GET {path}: {status}: {body}"))
    }
}

/// The value of the series `name` with each of `labels` in Prometheus text `text` (the
/// first such line), if there is one.
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .find(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
                && labels
                    .iter()
                    .all(|(key, value)| line.contains(&format!("{key}=\"{value}\"")))
        })
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

/// The `/v1/servers` entry of `server`, as JSON.
pub fn server_state(addr: SocketAddr, server: &str) -> Result<Value, String> {
    let servers = get_json(addr, "/v1/servers")?;
    servers
        .as_array()
        .and_then(|servers| servers.iter().find(|entry| entry["id"] == server))
        .cloned()
        .ok_or_else(|| format!("no server {server} in {servers}"))
}

/// The `/v1/accounts` entry of `account`, as JSON.
pub fn account_state(addr: SocketAddr, account: &str) -> Result<Value, String> {
    let accounts = get_json(addr, "/v1/accounts")?;
    accounts
        .as_array()
        .and_then(|accounts| accounts.iter().find(|entry| entry["name"] == account))
        .cloned()
        .ok_or_else(|| format!("no account {account} in {accounts}"))
}

/// `leasehold token add --file FILE --name NAME --role ROLE` with `binary`: the token it
/// printed (the file keeps only its hash).
pub fn add_token(
    binary: &std::path::Path,
    file: &std::path::Path,
    name: &str,
    role: &str,
) -> Result<String, String> {
    let out = std::process::Command::new(binary)
        .args(["token", "add", "--file"])
        .arg(file)
        .args(["--name", name, "--role", role])
        .output()
        .map_err(|error| format!("cannot run {}: {error}", binary.display()))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Makes the test site's config at `config` take tokens from the file `tokens` (a name
/// beside the config): reads stay open on loopback, as in every test site; writes (drain,
/// backup) need a token of role `write`.
pub fn writes_need_tokens(config: &std::path::Path, tokens: &str) -> Result<(), String> {
    let loopback = super::site::LOOPBACK_ADMIN;
    let text = std::fs::read_to_string(config)
        .map_err(|error| format!("cannot read {}: {error}", config.display()))?;
    if !text.contains(loopback) {
        return Err(format!("{} has no test [admin] table", config.display()));
    }
    let admin =
        format!("[admin]\nplain_http = true\nanonymous_role = \"read\"\ntokens = \"{tokens}\"\n\n");
    std::fs::write(config, text.replacen(loopback, &admin, 1))
        .map_err(|error| format!("cannot write {}: {error}", config.display()))
}

/// The tokens most tests need, made with `binary` in `dir/admin-tokens`: `ops` (role
/// `write`) in `dir/ops.token` and `viewer` (role `read`) in `dir/viewer.token`; the site's
/// config at `config` (in `dir`) then asks writes for a token ([`writes_need_tokens`]).
pub fn ops_and_viewer_tokens(
    binary: &std::path::Path,
    dir: &std::path::Path,
    config: &std::path::Path,
) -> Result<(), String> {
    let tokens = dir.join("admin-tokens");
    for (name, role) in [("ops", "write"), ("viewer", "read")] {
        let token = add_token(binary, &tokens, name, role)?;
        let out = dir.join(format!("{name}.token"));
        std::fs::write(&out, token)
            .map_err(|error| format!("cannot write {}: {error}", out.display()))?;
    }
    writes_need_tokens(config, "admin-tokens")
}
