//! Checks of what makes a server a machine (`driver = "redfish"` and its BMC keys) and of
//! `[account.image]`.

use std::path::PathBuf;

use toml::Spanned;

use super::raw::{RawImage, RawServer};
use super::types::{Image, Machine};
use super::validate::Checker;
use leasehold_federation::placeholders::{IMAGE_PLACEHOLDERS, braced, unknown_image_placeholders};

/// The kernel arguments the boot service appends for each boot, which `leasehold node run
/// --boot-args` reads: an image's own `cmdline` must not set them.
const BOOT_ARGS: [&str; 4] = [
    "leasehold.server=",
    "leasehold.gateway=",
    "leasehold.epoch=",
    "leasehold.token=",
];

/// The server's machine part: `Ok(None)` for a process server, `Err(())` when an error was
/// recorded.
pub(crate) fn machine(c: &mut Checker<'_>, s: &RawServer) -> Result<Option<Machine>, ()> {
    let id = s.id.get_ref();
    let subject = format!("server `{id}` at site `{}`", c.site);
    let driver = s
        .driver
        .as_ref()
        .map_or("process", |d| d.get_ref().as_str());
    let machine_keys: [(&str, Option<std::ops::Range<usize>>); 5] = [
        ("bmc_url", s.bmc_url.as_ref().map(Spanned::span)),
        (
            "bmc_credentials",
            s.bmc_credentials.as_ref().map(Spanned::span),
        ),
        ("bmc_ca", s.bmc_ca.as_ref().map(Spanned::span)),
        (
            "bmc_tls_verify",
            s.bmc_tls_verify.as_ref().map(Spanned::span),
        ),
        ("mac", s.mac.as_ref().map(Spanned::span)),
    ];
    match driver {
        "process" => {
            let mut ok = true;
            for (key, span) in machine_keys {
                if let Some(span) = span {
                    c.error(
                        span,
                        format!(
                            "{subject}: {key} is for machines; add driver = \"redfish\" or remove {key}"
                        ),
                    );
                    ok = false;
                }
            }
            if ok { Ok(None) } else { Err(()) }
        }
        "redfish" => redfish(c, s, &subject).map(Some).ok_or(()),
        other => {
            let span = s.driver.as_ref().map_or(0..0, Spanned::span);
            c.error(
                span,
                format!(
                    "{subject}: driver `{other}` is not known; use \"process\" (a node agent run as a process) or \"redfish\" (a machine behind a Redfish BMC)"
                ),
            );
            Err(())
        }
    }
}

fn redfish(c: &mut Checker<'_>, s: &RawServer, subject: &str) -> Option<Machine> {
    let mut ok = true;
    let driver_span = s.driver.as_ref().map_or(0..0, Spanned::span);
    let mut required = |c: &mut Checker<'_>, value: &Option<Spanned<String>>, key: &str| match value
    {
        Some(v) if !v.get_ref().trim().is_empty() => Some(v.get_ref().trim().to_owned()),
        Some(v) => {
            c.error(v.span(), format!("{subject}: {key} is empty"));
            ok = false;
            None
        }
        None => {
            c.error(
                driver_span.clone(),
                format!("{subject}: a machine needs {key}"),
            );
            ok = false;
            None
        }
    };
    let url = required(c, &s.bmc_url, "bmc_url");
    let credentials = required(
        c,
        &s.bmc_credentials,
        "bmc_credentials (a file of mode 0600)",
    );
    let mac = required(c, &s.mac, "mac (the NIC it boots from)");
    let https = url.as_deref().is_some_and(|u| u.starts_with("https://"));
    if let (Some(u), Some(raw)) = (&url, &s.bmc_url)
        && !(https || u.starts_with("http://"))
    {
        c.error(
            raw.span(),
            format!("{subject}: bmc_url `{u}` must start with https:// or http://"),
        );
        ok = false;
    }
    let tls_verify = s.bmc_tls_verify.as_ref().is_none_or(|v| *v.get_ref());
    if https && tls_verify && s.bmc_ca.is_none() {
        c.error(
            s.bmc_url.as_ref().map_or(0..0, Spanned::span),
            format!(
                "{subject}: an https BMC needs bmc_ca (the PEM file of its CA or its own certificate), or bmc_tls_verify = false to knowingly skip verification"
            ),
        );
        ok = false;
    }
    if let (false, Some(ca), Some(verify)) = (tls_verify, &s.bmc_ca, &s.bmc_tls_verify) {
        c.error(
            verify.span(),
            format!(
                "{subject}: bmc_tls_verify = false and bmc_ca `{}` contradict each other; keep bmc_ca to verify the BMC against it, or remove it to skip verification",
                ca.get_ref()
            ),
        );
        ok = false;
    }
    let normal = mac.as_deref().and_then(normal_mac);
    if let (Some(m), None, Some(raw)) = (&mac, &normal, &s.mac) {
        c.error(
            raw.span(),
            format!("{subject}: mac `{m}` is not a MAC address; write e.g. `52:54:00:12:34:56`"),
        );
        ok = false;
    }
    if !ok {
        return None;
    }
    Some(Machine {
        bmc_url: url?,
        bmc_credentials: PathBuf::from(credentials?),
        bmc_ca: s.bmc_ca.as_ref().map(|ca| PathBuf::from(ca.get_ref())),
        bmc_tls_verify: tls_verify,
        mac: normal?,
    })
}

/// A MAC as six hex pairs with `:` or `-`, in lower case with colons; `None` if it is not.
pub fn normal_mac(text: &str) -> Option<String> {
    let parts: Vec<&str> = text.split([':', '-']).collect();
    let valid = parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()));
    valid.then(|| parts.join(":").to_ascii_lowercase())
}

/// `[account.image]`, checked: `Err(())` when an error was recorded.
pub(crate) fn image(
    c: &mut Checker<'_>,
    subject: &str,
    raw: &Option<RawImage>,
) -> Result<Option<Image>, ()> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let mut ok = true;
    for (key, value) in [("kernel", &raw.kernel), ("initrd", &raw.initrd)] {
        if value.get_ref().trim().is_empty() {
            c.error(value.span(), format!("{subject}: image.{key} is empty"));
            ok = false;
        }
    }
    let templates = [
        ("kernel", Some(&raw.kernel)),
        ("initrd", Some(&raw.initrd)),
        ("cmdline", raw.cmdline.as_ref()),
    ];
    for (key, value) in templates {
        let Some(value) = value else { continue };
        for name in unknown_image_placeholders(value.get_ref()) {
            c.error(
                value.span(),
                format!(
                    "{subject}: unknown placeholder `{{{name}}}` in image.{key}; an image knows {}",
                    braced(IMAGE_PLACEHOLDERS)
                ),
            );
            ok = false;
        }
    }
    if let Some(cmdline) = &raw.cmdline {
        let ours = cmdline
            .get_ref()
            .split_whitespace()
            .find(|word| BOOT_ARGS.iter().any(|arg| word.starts_with(arg)));
        if let Some(word) = ours {
            c.error(
                cmdline.span(),
                format!(
                    "{subject}: image.cmdline sets `{word}`; the boot service adds leasehold.server, leasehold.gateway, leasehold.epoch and leasehold.token for each boot"
                ),
            );
            ok = false;
        }
    }
    if !ok {
        return Err(());
    }
    Ok(Some(Image {
        kernel: raw.kernel.get_ref().trim().to_owned(),
        initrd: raw.initrd.get_ref().trim().to_owned(),
        cmdline: raw
            .cmdline
            .as_ref()
            .map(|c| c.get_ref().trim().to_owned())
            .unwrap_or_default(),
    }))
}
