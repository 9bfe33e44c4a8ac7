//! A machine's node agent learns who it is from the kernel command line the site's boot
//! service wrote (docs/machines.md): `leasehold.server=`, `leasehold.gateway=`,
//! `leasehold.epoch=` and `leasehold.token=`, among whatever else the image's command line
//! holds.

use std::net::SocketAddr;
use std::path::Path;

use leasehold_federation::ids::{Epoch, ServerId};
use leasehold_federation::wire::node::BootClaim;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootArgs {
    pub server: ServerId,
    pub gateway: SocketAddr,
    pub claim: BootClaim,
}

#[derive(Debug, thiserror::Error)]
#[error("boot arguments {path}: {detail}")]
pub struct BootArgsError {
    pub path: String,
    pub detail: String,
}

impl BootArgs {
    pub fn read(path: &Path) -> Result<BootArgs, BootArgsError> {
        let text = std::fs::read_to_string(path).map_err(|error| BootArgsError {
            path: path.display().to_string(),
            detail: format!("cannot read it: {error}"),
        })?;
        BootArgs::parse(&text).map_err(|detail| BootArgsError {
            path: path.display().to_string(),
            detail,
        })
    }

    pub fn parse(cmdline: &str) -> Result<BootArgs, String> {
        let value = |key: &str| {
            let prefix = format!("leasehold.{key}=");
            let found: Vec<&str> = cmdline
                .split_whitespace()
                .filter_map(|word| word.strip_prefix(prefix.as_str()))
                .collect();
            match found.as_slice() {
                [one] if !one.is_empty() => Ok(*one),
                [] | [_] => Err(format!(
                    "leasehold.{key}= is missing; was this machine booted by a Leasehold boot service?"
                )),
                _ => Err(format!("leasehold.{key}= is given {} times", found.len())),
            }
        };
        let server = ServerId::parse(value("server")?)
            .map_err(|error| format!("leasehold.server: {error}"))?;
        let gateway = value("gateway")?;
        let gateway: SocketAddr = gateway.parse().map_err(|error| {
            format!("leasehold.gateway `{gateway}` is not an IP:port ({error})")
        })?;
        let epoch = value("epoch")?;
        let epoch = epoch
            .parse::<u64>()
            .ok()
            .filter(|epoch| *epoch > 0)
            .map(Epoch::from_boot_args)
            .ok_or_else(|| format!("leasehold.epoch `{epoch}` is not a positive number"))?;
        let token = value("token")?.to_owned();
        Ok(BootArgs {
            server,
            gateway,
            claim: BootClaim { epoch, token },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_leasehold_arguments_are_read_among_the_images_own() {
        let args = BootArgs::parse(
            "BOOT_IMAGE=vmlinuz console=ttyS0 quiet leasehold.server=m1 leasehold.gateway=10.0.2.2:7103 leasehold.epoch=7 leasehold.token=abc_-9\n",
        )
        .unwrap();
        assert_eq!(args.server.as_str(), "m1");
        assert_eq!(args.gateway.to_string(), "10.0.2.2:7103");
        assert_eq!(args.claim.epoch.value(), 7);
        assert_eq!(args.claim.token, "abc_-9");
    }

    #[test]
    fn a_missing_or_bad_argument_is_named() {
        let error = BootArgs::parse("console=ttyS0 leasehold.server=m1").unwrap_err();
        assert!(error.contains("leasehold.gateway= is missing"), "{error}");
        let error = BootArgs::parse(
            "leasehold.server=m1 leasehold.gateway=x:1 leasehold.epoch=1 leasehold.token=t",
        )
        .unwrap_err();
        assert!(error.contains("not an IP:port"), "{error}");
        let error = BootArgs::parse(
            "leasehold.server=m1 leasehold.gateway=10.0.0.1:1 leasehold.epoch=0 leasehold.token=t",
        )
        .unwrap_err();
        assert!(error.contains("not a positive number"), "{error}");
        let error = BootArgs::parse(
            "leasehold.server=m1 leasehold.server=m2 leasehold.gateway=10.0.0.1:1 leasehold.epoch=1 leasehold.token=t",
        )
        .unwrap_err();
        assert!(error.contains("given 2 times"), "{error}");
    }
}
