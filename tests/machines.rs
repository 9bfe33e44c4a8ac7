//! Machines end to end: a gateway whose servers are machines behind a real Redfish BMC (the
//! sushy-tools emulator), played by the harness as firmware would (power-on fetches the
//! iPXE script from the boot service and boots the image's node agent with its command
//! line; power-off kills it). Every check reads the evidence: the audit log, the BMC's
//! counts, the scripts the boot service gave, and each boot's node event log.

use std::path::PathBuf;
use std::time::Duration;

use leasehold_chaos_tests::harness::evidence::{mono_now_ns, running, violations};
use leasehold_chaos_tests::harness::machine_site::{
    BmcKind, MACHINE_SETTLE, MachineSite, MachineSpec,
};
use leasehold_chaos_tests::harness::machines::{Firmware, kernel_cmdline, whole_boot};
use leasehold_chaos_tests::harness::onesite::account;
use leasehold_chaos_tests::harness::wait_for;
use serde_json::Value;

const BINARY: &str = env!("CARGO_BIN_EXE_leasehold");

fn start(
    dir: &tempfile::TempDir,
    machines: &[MachineSpec],
    accounts: &[leasehold_chaos_tests::harness::site::AccountSpec],
    timings: &[(&str, u64)],
) -> MachineSite {
    MachineSite::start(
        std::path::Path::new(BINARY),
        dir.path(),
        machines,
        accounts,
        timings,
    )
    .unwrap_or_else(|error| panic!("{error}"))
}

/// Waits until `server` serves any account; its `/v1/servers` entry.
fn serving_any(site: &MachineSite, server: &str) -> Value {
    wait_for(&format!("{server} to serve"), MACHINE_SETTLE, || {
        let entry = site.server(server)?;
        if entry["state"] == "serving" {
            Ok(entry)
        } else {
            Err(entry.to_string())
        }
    })
    .unwrap_or_else(|error| panic!("{error}\n{}", site.output()))
}

fn kinds(audit: &[Value], server: &str, kind: &str) -> Vec<Value> {
    audit
        .iter()
        .filter(|record| record["server"] == server && record["kind"] == kind)
        .cloned()
        .collect()
}

fn epoch_arg(cmdline: &str) -> u64 {
    cmdline
        .split_whitespace()
        .find_map(|word| word.strip_prefix("leasehold.epoch="))
        .and_then(|epoch| epoch.parse().ok())
        .unwrap_or_else(|| panic!("no leasehold.epoch in {cmdline}"))
}

#[test]
fn machines_boot_their_accounts_images_and_a_move_re_images_one() {
    let dir = tempfile::tempdir().unwrap();
    let site = start(
        &dir,
        &[MachineSpec::new("m1"), MachineSpec::new("m2")],
        &[account("shop", 1, 1, 10), account("blog", 1, 1, 20)],
        &[("machine_power_timeout_ms", 40_000)],
    );
    let m1 = serving_any(&site, "m1");
    let first = m1["account"].as_str().unwrap().to_owned();
    let second = if first == "shop" { "blog" } else { "shop" };
    site.wait_serving("m2", second)
        .unwrap_or_else(|error| panic!("{error}"));
    let shop_machine = if first == "shop" { "m1" } else { "m2" };

    // Each machine booted its account's image once, through the steps, and says so.
    let audit = site.audit().unwrap();
    for server in ["m1", "m2"] {
        assert_eq!(kinds(&audit, server, "reimage").len(), 1, "{audit:#?}");
        let booted = kinds(&audit, server, "booted");
        assert_eq!(booted.len(), 1, "{audit:#?}");
        let reason = booted[0]["reason"].as_str().unwrap();
        let entry = site.server(server).unwrap();
        let steps: Vec<&str> = entry["machine"]["last_boot"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|step| step["step"].as_str())
            .collect();
        assert!(whole_boot(&steps), "{entry}");
        for step in &steps {
            assert!(reason.contains(step), "{reason}");
        }
        assert_eq!(entry["machine"]["power"], "on", "{entry}");
        // The script it booted carried the lease's epoch and a token.
        let boots = site.player.boots(server);
        assert_eq!(boots.len(), 1);
        assert_eq!(
            epoch_arg(&boots[0].cmdline),
            entry["epoch"].as_u64().unwrap()
        );
        assert!(
            boots[0].cmdline.contains("leasehold.token="),
            "{}",
            boots[0].cmdline
        );
        assert!(
            boots[0].cmdline.starts_with("console=ttyS0 quiet "),
            "{}",
            boots[0].cmdline
        );
    }

    // blog needs both: the machine serving shop drains, is re-imaged, and boots blog.
    let (shop_min, blog_min) = (0, 2);
    site.write_config(&[
        account("shop", shop_min, 1, 10),
        account("blog", blog_min, 2, 20),
    ])
    .unwrap();
    let before = site.server(shop_machine).unwrap()["epoch"]
        .as_u64()
        .unwrap();
    let moved = site
        .wait_serving(shop_machine, "blog")
        .unwrap_or_else(|error| panic!("{error}"));
    let after = moved["epoch"].as_u64().unwrap();
    assert!(after > before, "epochs only grow: {before} then {after}");

    // The BMC saw the move: the machine was powered off before it was powered on again.
    let stats = site.bmc.stats().unwrap();
    let resets: Vec<&str> = stats["stats"]["resets"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        resets.iter().filter(|r| **r == "ForceOff").count(),
        1,
        "{resets:?}"
    );
    assert_eq!(
        resets.iter().filter(|r| **r == "On").count(),
        3,
        "{resets:?}"
    );

    // From the node logs of its two boots: shop's workload had stopped before blog's
    // agent was even running, and each boot's log is sound on its own.
    let boots = site.player.boots(shop_machine);
    assert_eq!(boots.len(), 2, "{boots:?}");
    let now = mono_now_ns();
    let first_runs = running(&boots[0].work, boots[0].off_mono_ns.unwrap_or(now)).unwrap();
    let second_runs = running(&boots[1].work, now).unwrap();
    assert!(
        first_runs.iter().all(|run| run.account == "shop"),
        "{first_runs:?}"
    );
    assert!(
        second_runs.iter().all(|run| run.account == "blog"),
        "{second_runs:?}"
    );
    let shop_ended = first_runs.iter().map(|run| run.to_mono_ns).max().unwrap();
    let blog_started = second_runs
        .iter()
        .map(|run| run.from_mono_ns)
        .min()
        .unwrap();
    assert!(
        shop_ended < blog_started,
        "shop ran until {shop_ended}, blog started at {blog_started}"
    );
    assert_eq!(epoch_arg(&boots[1].cmdline), after);
    let works: Vec<&std::path::Path> = boots.iter().map(|boot| boot.work.as_path()).collect();
    let found = violations(&works, Duration::from_millis(500)).unwrap();
    assert!(found.is_empty(), "{found:?}");

    // The audit log tells the move in order: reclaim, lease ended, re-image, booted.
    let audit = site.audit().unwrap();
    let story: Vec<&str> = audit
        .iter()
        .filter(|r| r["server"] == shop_machine)
        .filter_map(|r| r["kind"].as_str())
        .collect();
    let tail: Vec<&str> = story
        .iter()
        .copied()
        .skip_while(|kind| *kind != "reclaim")
        .filter(|kind| ["reclaim", "lease_ended", "join", "reimage", "booted"].contains(kind))
        .collect();
    assert_eq!(
        tail,
        vec!["reclaim", "lease_ended", "join", "reimage", "booted"],
        "{story:?}"
    );
}

#[test]
fn a_machine_that_never_registers_is_powered_off_and_marked_failed() {
    let dir = tempfile::tempdir().unwrap();
    let mut broken = MachineSpec::new("m1");
    broken.firmware = Firmware::NeverRegisters;
    let site = start(
        &dir,
        &[broken],
        &[account("shop", 1, 1, 10)],
        &[
            ("machine_power_timeout_ms", 40_000),
            ("machine_boot_timeout_ms", 3_000),
        ],
    );
    let entry = wait_for("m1 to be marked failed", MACHINE_SETTLE, || {
        let entry = site.server("m1")?;
        match entry["machine"]["failed"].as_str() {
            Some(_) if entry["machine"]["power"] == "off" => Ok(entry),
            _ => Err(entry.to_string()),
        }
    })
    .unwrap_or_else(|error| panic!("{error}\n{}", site.output()));
    let failed = entry["machine"]["failed"].as_str().unwrap();
    assert!(failed.contains("never registered"), "{entry}");
    // It did fetch the script of its re-image; its image just never came up.
    let scripts = site.player.scripts("m1");
    assert!(
        scripts.iter().any(|s| kernel_cmdline(s).is_some()),
        "{scripts:?}"
    );
    assert!(!site.player.powered("m1"), "powered off through the BMC");
    let audit = site.audit().unwrap();
    let failures = kinds(&audit, "m1", "machine_failed");
    assert_eq!(failures.len(), 1, "{audit:#?}");
    assert!(
        failures[0]["reason"]
            .as_str()
            .unwrap()
            .contains("did not register within"),
        "{failures:?}"
    );
    // Out of use: not re-imaged again.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(kinds(&site.audit().unwrap(), "m1", "reimage").len(), 1);
}

#[test]
fn a_machine_that_hangs_is_fenced_by_power_after_its_lease_ended_then_re_imaged() {
    let dir = tempfile::tempdir().unwrap();
    let site = start(
        &dir,
        &[MachineSpec::new("m1")],
        &[account("shop", 1, 1, 10)],
        &[("machine_power_timeout_ms", 40_000)],
    );
    let first = site
        .wait_serving("m1", "shop")
        .unwrap_or_else(|error| panic!("{error}"));
    let first_epoch = first["epoch"].as_u64().unwrap();
    // Its OS hangs: nothing answers, the power stays on. Only its BMC can stop it.
    assert!(site.player.hang("m1"), "m1 ran an agent");
    let hung_at = mono_now_ns();
    assert!(site.player.powered("m1"));

    // The site needs it back: fenced (powered off) once its lease ended, then re-imaged.
    let second = wait_for("m1 to serve shop again", MACHINE_SETTLE, || {
        let entry = site.server("m1")?;
        if entry["state"] == "serving" && entry["epoch"].as_u64() > Some(first_epoch) {
            Ok(entry)
        } else {
            Err(entry.to_string())
        }
    })
    .unwrap_or_else(|error| panic!("{error}\n{}", site.output()));
    assert_eq!(second["account"], "shop");

    // The audit log: the lease ended, then the fence, then the re-image and its boot.
    let audit = site.audit().unwrap();
    let story: Vec<&str> = audit
        .iter()
        .filter(|r| r["server"] == "m1")
        .filter_map(|r| r["kind"].as_str())
        .skip_while(|kind| *kind != "booted")
        .skip(1)
        .filter(|kind| ["lease_ended", "fence", "reimage", "booted"].contains(kind))
        .collect();
    assert_eq!(
        story,
        vec!["lease_ended", "fence", "reimage", "booted"],
        "{audit:#?}"
    );
    let fence = kinds(&audit, "m1", "fence");
    assert!(
        fence
            .last()
            .and_then(|r| r["reason"].as_str())
            .is_some_and(|reason| reason.contains("powered off through its BMC")),
        "{fence:?}"
    );

    // From the evidence of the BMC and of the hung boot's own log: the power went off
    // only after the lease had ended on the node's own clock.
    let boots = site.player.boots("m1");
    assert_eq!(boots.len(), 2, "{boots:?}");
    let lease_end = leasehold_chaos_tests::harness::evidence::node_events(&boots[0].work)
        .unwrap()
        .iter()
        .filter_map(|event| match &event.kind {
            leasehold_node::event_log::EventKind::LeaseExtended { until_mono_ns, .. } => {
                Some(*until_mono_ns)
            }
            _ => None,
        })
        .max()
        .expect("the first boot's node extended its lease");
    let stats = site.bmc.stats().unwrap();
    let fenced_at = stats["stats"]["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|change| change["reset"] == "ForceOff")
        .filter_map(|change| change["mono_ns"].as_u64())
        .find(|at| *at > hung_at)
        .unwrap_or_else(|| panic!("no ForceOff after the hang: {stats}"));
    assert!(
        lease_end < fenced_at,
        "the node's lease ran until {lease_end} ns, the power went off at {fenced_at} ns"
    );
    assert!(fenced_at < boots[1].on_mono_ns, "{boots:?}");
    let works: Vec<&std::path::Path> = boots.iter().map(|boot| boot.work.as_path()).collect();
    let found = violations(&works, Duration::from_millis(500)).unwrap();
    assert!(found.is_empty(), "{found:?}");
}

#[test]
fn a_machine_that_boots_a_stale_script_is_refused_and_powered_off() {
    let dir = tempfile::tempdir().unwrap();
    let mut stale = MachineSpec::new("m1");
    stale.firmware = Firmware::KeepsFirstScript;
    let site = start(
        &dir,
        &[stale, MachineSpec::new("m2")],
        &[account("shop", 1, 1, 10), account("blog", 0, 1, 20)],
        &[
            ("machine_power_timeout_ms", 40_000),
            ("machine_boot_timeout_ms", 20_000),
        ],
    );
    let serving = wait_for("one machine to serve", MACHINE_SETTLE, || {
        for server in ["m1", "m2"] {
            let entry = site.server(server)?;
            if entry["state"] == "serving" {
                return Ok(server);
            }
        }
        Err("none yet".to_owned())
    })
    .unwrap_or_else(|error| panic!("{error}\n{}", site.output()));
    // Make m1 serve first if m2 won the first grant: the stale firmware needs a first boot.
    if serving == "m2" {
        site.write_config(&[account("shop", 1, 1, 10), account("blog", 1, 1, 20)])
            .unwrap();
        serving_any(&site, "m1");
    }
    let first = site.server("m1").unwrap();
    let first_account = first["account"].as_str().unwrap().to_owned();
    // Move m1 to the other account: its firmware boots its first script again.
    let (shop, blog) = if first_account == "shop" {
        (account("shop", 0, 1, 10), account("blog", 2, 2, 20))
    } else {
        (account("shop", 2, 2, 30), account("blog", 0, 1, 20))
    };
    site.write_config(&[shop, blog]).unwrap();
    let audit = wait_for("a stale boot to be refused", MACHINE_SETTLE, || {
        let audit = site.audit()?;
        if kinds(&audit, "m1", "stale_boot").is_empty() {
            Err(format!("{} records", audit.len()))
        } else {
            Ok(audit)
        }
    })
    .unwrap_or_else(|error| panic!("{error}\n{}", site.output()));
    let refused = kinds(&audit, "m1", "stale_boot");
    assert!(
        refused[0]["reason"]
            .as_str()
            .unwrap()
            .contains("booted the image of"),
        "{refused:?}"
    );
    // Refused and powered off: its stale agent got no pointer, and the power went.
    wait_for("m1's power to go off", MACHINE_SETTLE, || {
        if site.player.powered("m1") {
            Err("still on".to_owned())
        } else {
            Ok(())
        }
    })
    .unwrap_or_else(|error| panic!("{error}"));
    // Powered on for its re-image, it came up stale: that re-image failed at once (not at
    // the boot timeout), and the machine is out of use.
    let failed = wait_for("m1's re-image to fail", MACHINE_SETTLE, || {
        let audit = site.audit()?;
        kinds(&audit, "m1", "machine_failed")
            .first()
            .cloned()
            .ok_or_else(|| format!("{} records", audit.len()))
    })
    .unwrap_or_else(|error| panic!("{error}"));
    assert!(
        failed["reason"]
            .as_str()
            .is_some_and(|reason| reason.contains("came up with another boot")),
        "{failed}"
    );
    let entry = site.server("m1").unwrap();
    assert!(
        entry["machine"]["failed"]
            .as_str()
            .is_some_and(|why| why.contains("stale image")),
        "{entry}"
    );
    let boots = site.player.boots("m1");
    let last = boots.last().unwrap();
    let runs = running(&last.work, mono_now_ns()).unwrap();
    assert!(
        boots.len() >= 2 && runs.is_empty(),
        "the stale boot ran nothing: {boots:?} {runs:?}"
    );
    assert_eq!(
        epoch_arg(&boots[0].cmdline),
        epoch_arg(&last.cmdline),
        "it booted its first script again"
    );
}

#[test]
fn a_bmc_that_does_not_answer_or_refuses_the_password_leaves_its_machine_out_of_use() {
    let dir = tempfile::tempdir().unwrap();
    let mut silent = MachineSpec::new("m1");
    silent.bmc = BmcKind::Unreachable;
    let mut refusing = MachineSpec::new("m2");
    refusing.bmc = BmcKind::WrongPassword;
    let site = start(
        &dir,
        &[silent, refusing],
        &[account("shop", 1, 1, 10)],
        &[("machine_power_timeout_ms", 40_000)],
    );
    let (m1, m2) = wait_for("both BMCs to be judged", MACHINE_SETTLE, || {
        let (m1, m2) = (site.server("m1")?, site.server("m2")?);
        let unreachable = m1["machine"]["bmc"]
            .as_str()
            .is_some_and(|bmc| bmc.starts_with("unreachable"));
        if unreachable && m2["machine"]["failed"].is_string() {
            Ok((m1, m2))
        } else {
            Err(format!("{m1}\n{m2}"))
        }
    })
    .unwrap_or_else(|error| panic!("{error}\n{}", site.output()));
    assert!(
        m2["machine"]["failed"]
            .as_str()
            .unwrap()
            .contains("refused the credentials"),
        "{m2}"
    );
    for entry in [&m1, &m2] {
        assert_ne!(entry["state"], "serving", "{entry}");
        assert!(
            entry["account"].is_null(),
            "never assigned on a guess: {entry}"
        );
    }
    let audit = site.audit().unwrap();
    assert_eq!(
        kinds(&audit, "m1", "bmc_unreachable").len(),
        1,
        "{audit:#?}"
    );
    assert!(kinds(&audit, "m1", "reimage").is_empty());
    assert!(kinds(&audit, "m2", "reimage").is_empty());
    // The shortfall says the site has nothing to give shop.
    assert!(
        audit
            .iter()
            .any(|r| r["kind"] == "shortfall" && r["account"] == "shop"),
        "{audit:#?}"
    );
}

#[test]
fn a_credentials_file_others_can_read_stops_the_gateway_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let site = start(
        &dir,
        &[MachineSpec::new("m1")],
        &[account("shop", 1, 1, 10)],
        &[],
    );
    let config = site.config.clone();
    let credentials = PathBuf::from(dir.path()).join("bmc-m1.toml");
    drop(site);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&credentials, std::fs::Permissions::from_mode(0o644)).unwrap();
    let output = std::process::Command::new(BINARY)
        .args([
            "gateway",
            "run",
            "--config",
            &config.display().to_string(),
            "--certs",
            &dir.path().join("certs").display().to_string(),
            "--state",
            &dir.path().join("state").display().to_string(),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains(&credentials.display().to_string()),
        "{stderr}"
    );
    assert!(stderr.contains("chmod 600"), "{stderr}");
    assert!(!stderr.contains("bmc-password"), "{stderr}");
}
