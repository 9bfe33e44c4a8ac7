//! Checks of machines (`driver = "redfish"`), the boot service and account images.

use super::{BASE, check, edit, errors, one_error};

/// `BASE` with server a2 a machine, a boot address and an image for shop.
fn machines() -> String {
    let text = edit(
        BASE,
        "management_addr = \"127.0.0.1:7301\"",
        "management_addr = \"127.0.0.1:7301\"\nboot_addr = \"127.0.0.1:7181\"",
    );
    let text = edit(
        &text,
        "id = \"a2\"\nservice_addr = \"127.0.0.1:8102\"",
        "id = \"a2\"\nservice_addr = \"127.0.0.1:8102\"\ndriver = \"redfish\"\nbmc_url = \"http://10.1.0.2\"\nbmc_credentials = \"/etc/leasehold/bmc/a2.toml\"\nmac = \"52-54-00-AA-00-02\"",
    );
    format!(
        "{text}\n[account.image]\nkernel = \"http://10.0.0.1/shop/vmlinuz\"\ninitrd = \"http://10.0.0.1/shop/initrd.img\"\ncmdline = \"console=ttyS0 shop.epoch={{epoch}}\"\n"
    )
}

#[test]
fn a_machine_and_an_image_are_read_with_the_mac_in_one_spelling() {
    let config = match check(&machines()) {
        Ok(config) => config,
        Err(errors) => panic!("{errors:#?}"),
    };
    let machine = config.servers[1].machine.as_ref().unwrap();
    assert_eq!(machine.mac, "52:54:00:aa:00:02");
    assert!(machine.bmc_tls_verify);
    assert!(config.servers[0].machine.is_none());
    let image = config.accounts[0].image.as_ref().unwrap();
    assert_eq!(image.cmdline, "console=ttyS0 shop.epoch={epoch}");
    assert_eq!(
        config.site.machine_gateway_addr().to_string(),
        "127.0.0.1:7301"
    );
}

#[test]
fn bmc_keys_on_a_process_server_say_to_add_the_driver() {
    let text = edit(&machines(), "driver = \"redfish\"\n", "");
    let all = errors(&text).join("\n");
    assert!(
        all.contains("server `a2` at site `site-a`: bmc_url is for machines; add driver = \"redfish\" or remove bmc_url"),
        "{all}"
    );
}

#[test]
fn an_unknown_driver_is_named_with_the_known_ones() {
    let text = edit(&machines(), "driver = \"redfish\"", "driver = \"ipmi\"");
    one_error(
        &text,
        "server `a2` at site `site-a`: driver `ipmi` is not known; use \"process\"",
    );
}

#[test]
fn a_machine_needs_a_mac_and_a_boot_address() {
    let text = edit(&machines(), "mac = \"52-54-00-AA-00-02\"\n", "");
    one_error(&text, "server `a2` at site `site-a`: a machine needs mac");
    let text = edit(&machines(), "boot_addr = \"127.0.0.1:7181\"\n", "");
    one_error(
        &text,
        "site `site-a`: server `a2` is a machine, so [site] needs boot_addr",
    );
    let text = edit(
        &machines(),
        "mac = \"52-54-00-AA-00-02\"",
        "mac = \"52:54:00\"",
    );
    one_error(&text, "mac `52:54:00` is not a MAC address");
}

#[test]
fn an_https_bmc_needs_its_ca_or_an_explicit_no() {
    let text = edit(&machines(), "http://10.1.0.2", "https://10.1.0.2");
    one_error(&text, "an https BMC needs bmc_ca");
    let text = edit(&text, "mac = ", "bmc_tls_verify = false\nmac = ");
    assert!(check(&text).is_ok(), "{:?}", errors(&text));
    // Both a CA and no verification: which was meant cannot be told.
    let text = edit(
        &text,
        "mac = ",
        "bmc_ca = \"/etc/leasehold/bmc/ca.pem\"\nmac = ",
    );
    one_error(
        &text,
        "bmc_tls_verify = false and bmc_ca `/etc/leasehold/bmc/ca.pem` contradict each other",
    );
}

#[test]
fn two_machines_with_one_mac_are_refused() {
    let text = edit(
        &machines(),
        "id = \"a1\"\nservice_addr = \"127.0.0.1:8101\"",
        "id = \"a1\"\nservice_addr = \"127.0.0.1:8101\"\ndriver = \"redfish\"\nbmc_url = \"http://10.1.0.1\"\nbmc_credentials = \"a1.toml\"\nmac = \"52:54:00:aa:00:02\"",
    );
    one_error(
        &text,
        "server `a2` at site `site-a` has the mac of server `a1`",
    );
}

#[test]
fn machines_cannot_dial_an_unspecified_management_address() {
    let text = edit(&machines(), "127.0.0.1:7301", "0.0.0.0:7301");
    one_error(&text, "give advertise_management_addr");
    let text = edit(
        &text,
        "boot_addr =",
        "advertise_management_addr = \"10.0.0.1:7301\"\nboot_addr =",
    );
    let config = check(&text).unwrap_or_else(|errors| panic!("{errors:#?}"));
    assert_eq!(
        config.site.machine_gateway_addr().to_string(),
        "10.0.0.1:7301"
    );
    // Or a name, which the machine's agent resolves when it dials (docs/operations.md).
    let named = edit(
        &text,
        "\"10.0.0.1:7301\"",
        "\"gw.site-a.dc1.example.net:7301\"",
    );
    let config = check(&named).unwrap_or_else(|errors| panic!("{errors:#?}"));
    assert_eq!(
        config.site.machine_gateway_addr().to_string(),
        "gw.site-a.dc1.example.net:7301"
    );
    let bad = edit(&text, "\"10.0.0.1:7301\"", "\"gw.site-a.dc1.example.net\"");
    one_error(&bad, "advertise_management_addr");
}

#[test]
fn an_image_command_line_may_not_set_leasehold_arguments_or_unknown_placeholders() {
    let text = edit(&machines(), "shop.epoch={epoch}", "leasehold.epoch=3");
    one_error(&text, "image.cmdline sets `leasehold.epoch=3`");
    let text = edit(&machines(), "shop.epoch={epoch}", "x={nope}");
    one_error(&text, "unknown placeholder `{nope}` in image.cmdline");
    // A workload's placeholder means nothing to the boot service: refused, not left as text.
    let text = edit(&machines(), "shop.epoch={epoch}", "x={data_dir}");
    one_error(&text, "unknown placeholder `{data_dir}` in image.cmdline");
    let text = edit(&machines(), "/shop/vmlinuz", "/{service_addr}/vmlinuz");
    one_error(
        &text,
        "unknown placeholder `{service_addr}` in image.kernel",
    );
    // Words that merely start like ours are the image's own.
    let text = edit(
        &machines(),
        "shop.epoch={epoch}",
        "ntp=leasehold.example.net",
    );
    assert!(check(&text).is_ok(), "{:?}", check(&text).err());
}
