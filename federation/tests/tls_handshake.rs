//! Mutual TLS over real quinn endpoints on 127.0.0.1: who gets in, who is refused, and
//! that the refusal's reason is readable in the connection error.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use leasehold_federation::ids::{ServerId, SiteId};
use leasehold_federation::transport::Alpn;
use leasehold_federation::transport::certs::{self, Identity};
use leasehold_federation::transport::identity::{PeerName, PeerPolicy};
use leasehold_federation::transport::tls::{client_config, peer_name_of, server_config};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use time::OffsetDateTime;

/// Long enough for a loaded CI machine, short enough that a hang fails the test.
const TIMEOUT: Duration = Duration::from_secs(10);

fn site(s: &str) -> SiteId {
    SiteId::parse(s).unwrap()
}

fn node_name(server: &str, of: &str) -> PeerName {
    PeerName::Node {
        site: site(of),
        server: ServerId::parse(server).unwrap(),
    }
}

fn site_identity(dir: &Path, name: &str) -> Identity {
    certs::issue(dir, &PeerName::Site(site(name)), false).unwrap();
    certs::load_site_identity(dir, &site(name)).unwrap()
}

fn ca_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    certs::init_ca(dir.path(), false).unwrap();
    dir
}

fn server(identity: &Identity, alpn: Alpn, policy: PeerPolicy) -> quinn::Endpoint {
    let tls = server_config(identity, alpn, Arc::new(RwLock::new(policy))).unwrap();
    let config =
        quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(tls).unwrap()));
    quinn::Endpoint::server(config, "127.0.0.1:0".parse().unwrap()).unwrap()
}

/// What each side saw of one connection attempt.
struct Outcome {
    server: Result<PeerName, String>,
    client: Result<PeerName, String>,
}

/// Connects `client` to `server` (dialing `expected`'s DNS name) and exchanges one message.
async fn attempt(
    server: &quinn::Endpoint,
    client: &Identity,
    alpn: Alpn,
    expected: &PeerName,
) -> Outcome {
    let addr: SocketAddr = server.local_addr().unwrap();
    let accept = {
        let server = server.clone();
        tokio::spawn(async move {
            let incoming = server.accept().await.ok_or("endpoint closed")?;
            let conn = incoming.await.map_err(|e| e.to_string())?;
            let peer = peer_name_of(&*conn.peer_identity().ok_or("no peer identity")?)
                .map_err(|e| e.to_string())?;
            let (mut send, mut recv) = conn.accept_bi().await.map_err(|e| e.to_string())?;
            let msg = recv.read_to_end(64).await.map_err(|e| e.to_string())?;
            send.write_all(&msg).await.map_err(|e| e.to_string())?;
            send.finish().map_err(|e| e.to_string())?;
            // Wait for the client to close, so the reply is not cut off.
            conn.closed().await;
            Ok::<_, String>(peer)
        })
    };

    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let tls = client_config(client, alpn).unwrap();
    let config = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls).unwrap()));
    let client_side = async {
        let conn = endpoint
            .connect_with(config, addr, &expected.dns_name())
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        let peer = peer_name_of(&*conn.peer_identity().ok_or("no peer identity")?)
            .map_err(|e| e.to_string())?;
        // With TLS 1.3 the client may finish its handshake before the server has judged its
        // certificate; a refusal shows up on the first stream, and its cause on the
        // connection, not on the stream error ("connection lost").
        let exchange = async {
            let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
            send.write_all(b"hello").await.map_err(|e| e.to_string())?;
            send.finish().map_err(|e| e.to_string())?;
            let reply = recv.read_to_end(64).await.map_err(|e| e.to_string())?;
            assert_eq!(reply, b"hello");
            Ok::<_, String>(())
        };
        if let Err(stream_error) = exchange.await {
            return Err(format!("{stream_error}; {}", conn.closed().await));
        }
        conn.close(0u32.into(), b"done");
        Ok::<_, String>(peer)
    };
    let client = tokio::time::timeout(TIMEOUT, client_side)
        .await
        .expect("client timed out");
    let server = tokio::time::timeout(TIMEOUT, accept)
        .await
        .expect("server timed out")
        .unwrap();
    endpoint.wait_idle().await;
    Outcome { server, client }
}

fn sites(names: &[&str]) -> PeerPolicy {
    PeerPolicy::Sites(names.iter().map(|n| site(n)).collect::<BTreeSet<_>>())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn good_pair_sees_each_others_names() {
    let dir = ca_dir();
    let a = site_identity(dir.path(), "site-a");
    let b = site_identity(dir.path(), "site-b");
    let listener = server(&a, Alpn::Site, sites(&["site-b"]));

    let outcome = attempt(&listener, &b, Alpn::Site, &a.name).await;
    assert_eq!(outcome.server, Ok(PeerName::Site(site("site-b"))));
    assert_eq!(outcome.client, Ok(PeerName::Site(site("site-a"))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_joins_its_sites_management_channel() {
    let dir = ca_dir();
    let a = site_identity(dir.path(), "site-a");
    let a1 = node_name("a1", "site-a");
    certs::issue(dir.path(), &a1, false).unwrap();
    let node = certs::load_node_identity(dir.path(), &ServerId::parse("a1").unwrap()).unwrap();
    let listener = server(
        &a,
        Alpn::Node,
        PeerPolicy::Nodes {
            site: site("site-a"),
            servers: [ServerId::parse("a1").unwrap()].into(),
        },
    );

    let outcome = attempt(&listener, &node, Alpn::Node, &a.name).await;
    assert_eq!(outcome.server, Ok(a1));
    assert_eq!(outcome.client, Ok(PeerName::Site(site("site-a"))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_from_a_foreign_ca_is_refused() {
    let ours = ca_dir();
    let theirs = ca_dir();
    let a = site_identity(ours.path(), "site-a");
    // Same name as a listed peer, but vouched for by another CA.
    let mut impostor = site_identity(theirs.path(), "site-b");
    // It trusts our CA, so it accepts our server and gets to present its own certificate.
    impostor.ca = a.ca.clone();
    let listener = server(&a, Alpn::Site, sites(&["site-b"]));

    let outcome = attempt(&listener, &impostor, Alpn::Site, &a.name).await;
    let server_err = outcome.server.unwrap_err();
    assert!(server_err.contains("UnknownIssuer"), "{server_err}");
    // quinn carries the server's reason to the client in the CONNECTION_CLOSE frame.
    let client_err = outcome.client.unwrap_err();
    assert!(client_err.contains("UnknownIssuer"), "{client_err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn site_not_in_the_policy_is_refused_with_the_reason() {
    let dir = ca_dir();
    let a = site_identity(dir.path(), "site-a");
    let z = site_identity(dir.path(), "site-z");
    let listener = server(&a, Alpn::Site, sites(&["site-b"]));

    let outcome = attempt(&listener, &z, Alpn::Site, &a.name).await;
    let server_err = outcome.server.unwrap_err();
    assert!(
        server_err.contains(
            "certificate names site `site-z`, which this site's config does not list as a peer"
        ),
        "{server_err}"
    );
    let client_err = outcome.client.unwrap_err();
    assert!(
        client_err.contains("which this site's config does not list as a peer"),
        "{client_err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_certificate_is_refused() {
    let dir = ca_dir();
    let a = site_identity(dir.path(), "site-a");
    let now = OffsetDateTime::now_utc();
    certs::issue_with_validity(
        dir.path(),
        &PeerName::Site(site("site-b")),
        now - time::Duration::days(30),
        now - time::Duration::days(1),
        false,
    )
    .unwrap();
    let b = certs::load_site_identity(dir.path(), &site("site-b")).unwrap();
    let listener = server(&a, Alpn::Site, sites(&["site-b"]));

    let outcome = attempt(&listener, &b, Alpn::Site, &a.name).await;
    let server_err = outcome.server.unwrap_err();
    assert!(server_err.contains("certificate expired"), "{server_err}");
    let client_err = outcome.client.unwrap_err();
    assert!(client_err.contains("certificate expired"), "{client_err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_certificate_cannot_open_a_site_session() {
    let dir = ca_dir();
    let a = site_identity(dir.path(), "site-a");
    let b1 = node_name("b1", "site-b");
    certs::issue(dir.path(), &b1, false).unwrap();
    let node = certs::load_node_identity(dir.path(), &ServerId::parse("b1").unwrap()).unwrap();
    let listener = server(&a, Alpn::Site, sites(&["site-b"]));

    // Speaking the site ALPN, as a stolen node key would: the policy refuses the name.
    let outcome = attempt(&listener, &node, Alpn::Site, &a.name).await;
    let server_err = outcome.server.unwrap_err();
    assert!(
        server_err.contains("certificate names a node, but this is the site-to-site listener"),
        "{server_err}"
    );
    assert!(outcome.client.is_err());

    // Speaking its own ALPN, it does not even get to present its certificate.
    let outcome = attempt(&listener, &node, Alpn::Node, &a.name).await;
    let server_err = outcome.server.unwrap_err();
    assert!(
        server_err.contains("peer doesn't support any known protocol"),
        "{server_err}"
    );
    assert!(outcome.client.is_err());
}
