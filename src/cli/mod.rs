//! The subcommands of `leasehold`, one module each. Each parses its own arguments and calls
//! into the library crates; no decision logic lives here.

pub mod admin_client;
pub mod audit;
pub mod bench;
pub mod certs;
pub mod chaos;
pub mod config;
pub mod demo;
pub mod fleet;
pub mod gateway;
pub mod journal;
pub mod node;
pub mod replay;
pub mod server;
pub mod sim;
pub mod status;
pub mod token;
pub mod workload;

/// `--node-protocol N`: a version of the management protocol this build speaks, or an
/// error that lists them.
pub fn node_protocol(text: &str) -> Result<u16, String> {
    use leasehold_federation::transport::Alpn;
    let spoken: Vec<String> = Alpn::Node
        .versions()
        .iter()
        .map(|version| version.to_string())
        .collect();
    match text.parse::<u16>() {
        Ok(version) if Alpn::Node.versions().contains(&version) => Ok(version),
        _ => Err(format!(
            "this build speaks management protocol {} (leasehold-node/N), not `{text}`",
            spoken.join(" or ")
        )),
    }
}
