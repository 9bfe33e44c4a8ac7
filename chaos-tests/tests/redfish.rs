//! The Redfish client against a real Redfish service: the sushy-tools emulator (fake driver)
//! that OpenStack Ironic and Metal3 test with, behind the quirk layer that plays what
//! vendors' BMCs do and the emulator does not (sessions, ETags, 409, task monitors, 503).
//! Every assertion reads the emulator's state or the layer's counts, not the client's word.

use std::path::Path;
use std::time::Duration;

use leasehold_chaos_tests::harness::bmc::{
    BmcOptions, EmulatedBmc, FakeMachine, emulator_available,
};
use leasehold_redfish::{
    Bmc, BmcConfig, BootTarget, Credentials, Error, PowerState, ResetType, Retry, TlsTrust,
};
use serde_json::json;

/// The emulator applies a power change 1 to 11 s after it is asked, as real hardware takes
/// its time: waits are bounded well past that.
const POWER: Duration = Duration::from_secs(40);

fn start(dir: &Path, machines: &[FakeMachine]) -> EmulatedBmc {
    if let Err(why) = emulator_available() {
        panic!("{why}");
    }
    EmulatedBmc::start(dir, machines, &BmcOptions::default())
        .unwrap_or_else(|error| panic!("{error}"))
}

fn config(bmc: &EmulatedBmc, mac: Option<&str>) -> BmcConfig {
    let mut config = BmcConfig::new(&bmc.url, Credentials::new("admin", "bmc-password"));
    config.mac = mac.map(str::to_owned);
    config.poll_interval = Duration::from_millis(200);
    config.retry = Retry {
        attempts: 4,
        first_wait: Duration::from_millis(50),
        max_wait: Duration::from_millis(400),
    };
    config
}

fn connect(bmc: &EmulatedBmc, mac: &str) -> Bmc {
    Bmc::connect(&config(bmc, Some(mac)))
        .unwrap_or_else(|error| panic!("{error}\n{}", bmc.output()))
}

/// A BMC with one machine, and a client connected to it.
fn one_machine() -> (tempfile::TempDir, EmulatedBmc, Bmc) {
    let dir = tempfile::tempdir().unwrap();
    let machine = FakeMachine::numbered("rack1-u1", 1);
    let bmc = start(dir.path(), std::slice::from_ref(&machine));
    let client = connect(&bmc, &machine.mac);
    (dir, bmc, client)
}

fn stats(bmc: &EmulatedBmc) -> serde_json::Value {
    bmc.stats().unwrap()["stats"].clone()
}

fn resets(bmc: &EmulatedBmc) -> Vec<String> {
    stats(bmc)["resets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|reset| reset.as_str().unwrap_or("").to_owned())
        .collect()
}

#[test]
fn a_machine_is_found_by_its_mac_and_set_to_boot_from_the_network_after_a_verified_power_cycle() {
    let dir = tempfile::tempdir().unwrap();
    let machines = [
        FakeMachine::numbered("rack1-u1", 1),
        FakeMachine::numbered("rack1-u2", 2),
    ];
    let bmc = start(dir.path(), &machines);

    // Two systems and no MAC: the client will not guess.
    let error = Bmc::connect(&config(&bmc, None)).err().expect("refused");
    let text = error.to_string();
    assert!(text.contains("serves 2 systems"), "{text}");
    assert!(text.contains("give the machine's mac"), "{text}");
    // A MAC no system has: refused, naming the MACs there are.
    let error = Bmc::connect(&config(&bmc, Some("52:54:00:ff:ff:ff")))
        .err()
        .expect("refused");
    let text = error.to_string();
    assert!(text.contains("52:54:00:6c:00:01"), "{text}");
    assert!(text.contains("52:54:00:6c:00:02"), "{text}");

    // Spelled as a vendor might: found all the same.
    let mut second = connect(&bmc, "52-54-00-6C-00-02");
    assert!(
        second.system_path().ends_with(&machines[1].uuid),
        "{}",
        second.system_path()
    );
    assert!(!second.uses_session(), "this BMC has no session service");

    let state = second.set_one_time_boot(&BootTarget::Pxe).unwrap();
    assert_eq!(state.boot_target.as_deref(), Some("Pxe"));
    second.power_cycle(POWER).unwrap();
    assert_eq!(second.system().unwrap().power, PowerState::On);
    // Off already, so the cycle is just On; from On it is ForceOff, then On.
    second.power_cycle(POWER).unwrap();
    assert_eq!(second.system().unwrap().power, PowerState::On);
    assert_eq!(resets(&bmc), vec!["On", "ForceOff", "On"]);

    // The other machine was not touched.
    let mut first = connect(&bmc, &machines[0].mac);
    let state = first.system().unwrap();
    assert_eq!(state.power, PowerState::Off);
    assert_ne!(state.boot_target.as_deref(), Some("Pxe"));
}

#[test]
fn sessions_are_used_where_the_bmc_offers_them_renewed_once_on_401_and_ended() {
    let dir = tempfile::tempdir().unwrap();
    let machine = FakeMachine::numbered("rack1-u1", 1);
    let bmc = start(dir.path(), std::slice::from_ref(&machine));

    // Basic auth, wrong password: refused, naming where the credentials came from.
    let mut wrong = config(&bmc, Some(&machine.mac));
    wrong.credentials = Credentials::new("admin", "not-it");
    let error = Bmc::connect(&wrong).err().expect("refused");
    assert!(matches!(error, Error::Unauthorized { .. }), "{error}");

    bmc.quirks(&json!({ "sessions": true })).unwrap();
    let error = Bmc::connect(&wrong).err().expect("refused");
    assert!(matches!(error, Error::Unauthorized { .. }), "{error}");
    assert_eq!(stats(&bmc)["logins"], 0);

    let mut client = connect(&bmc, &machine.mac);
    assert!(client.uses_session());
    assert_eq!(stats(&bmc)["logins"], 1);
    client.system().unwrap();
    // The BMC forgets every session (a timeout, a BMC reboot): one new login, then on.
    bmc.quirks(&json!({ "expire_sessions": true })).unwrap();
    client.system().unwrap();
    assert_eq!(stats(&bmc)["logins"], 2);
    let used = stats(&bmc)["session_requests"].as_u64().unwrap();
    assert!(used >= 3, "requests went with the token: {used}");
    drop(client);
    assert_eq!(
        stats(&bmc)["logouts"],
        1,
        "the session is deleted at the end"
    );
}

#[test]
fn a_stale_etag_is_read_again_once_and_then_refused() {
    let dir = tempfile::tempdir().unwrap();
    let machine = FakeMachine::numbered("rack1-u1", 1);
    let bmc = start(dir.path(), std::slice::from_ref(&machine));
    bmc.quirks(&json!({ "etags": true, "stale_etags": 1 }))
        .unwrap();
    let mut client = connect(&bmc, &machine.mac);
    assert!(client.system().unwrap().etag.is_some());

    // Someone changed the system between the read and the write, once: read again, write.
    let state = client.set_one_time_boot(&BootTarget::Pxe).unwrap();
    assert_eq!(state.boot_target.as_deref(), Some("Pxe"));
    assert_eq!(stats(&bmc)["precondition_failed"], 1);
    assert_eq!(stats(&bmc)["patches"], 2);

    // Changed under every attempt: refused, and said so.
    bmc.quirks(&json!({ "stale_etags": 2 })).unwrap();
    let error = client.set_one_time_boot(&BootTarget::Pxe).unwrap_err();
    assert!(matches!(error, Error::StaleEtag { .. }), "{error}");
    assert_eq!(stats(&bmc)["precondition_failed"], 3);
}

#[test]
fn a_reset_refused_with_409_is_retried_and_reported_when_it_stays_refused() {
    let (_dir, bmc, mut client) = one_machine();

    // Busy for every attempt: reported, and the machine is as it was.
    bmc.quirks(&json!({ "reset_conflicts": 10 })).unwrap();
    let error = client.power_on(POWER).unwrap_err();
    assert!(
        matches!(error, Error::Conflict { attempts: 4, .. }),
        "{error}"
    );
    assert!(error.to_string().contains("already in progress"), "{error}");
    assert_eq!(resets(&bmc).len(), 4);
    assert_eq!(client.system().unwrap().power, PowerState::Off);

    // Busy twice: the third attempt powers it on.
    bmc.quirks(&json!({ "reset_conflicts": 2 })).unwrap();
    client.power_on(POWER).unwrap();
    assert_eq!(resets(&bmc).len(), 7);
    assert_eq!(client.system().unwrap().power, PowerState::On);

    // A 409 for a machine already as asked costs no retry.
    bmc.quirks(&json!({ "reset_conflicts": 1 })).unwrap();
    client.reset(ResetType::On).unwrap();
    assert_eq!(resets(&bmc).len(), 8);
}

#[test]
fn a_reset_answered_with_202_is_followed_to_its_task_end() {
    let (_dir, bmc, mut client) = one_machine();

    bmc.quirks(&json!({ "reset_task_polls": 3 })).unwrap();
    client.power_on(POWER).unwrap();
    assert_eq!(client.system().unwrap().power, PowerState::On);

    bmc.quirks(&json!({ "reset_task_polls": 1, "reset_task_fails": true }))
        .unwrap();
    let error = client.power_off(POWER).unwrap_err();
    assert!(matches!(error, Error::TaskFailed { .. }), "{error}");
    assert!(
        error
            .to_string()
            .contains("The power controller reported a fault"),
        "{error}"
    );
}

#[test]
fn values_the_bmc_does_not_allow_are_refused_before_anything_changes() {
    let (_dir, bmc, mut client) = one_machine();

    let error = client.reset(ResetType::PushPowerButton).unwrap_err();
    match &error {
        Error::NotAllowed { allowed, .. } => assert!(allowed.contains(&"ForceOff".to_owned())),
        other => panic!("{other}"),
    }
    assert!(resets(&bmc).is_empty(), "no reset was sent");

    // A machine in legacy boot mode: the emulator then allows only Pxe, Cd and Hdd.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let answer = agent
        .patch(format!("{}{}", bmc.url, client.system_path()))
        .header("Authorization", "Basic YWRtaW46Ym1jLXBhc3N3b3Jk")
        .header("Content-Type", "application/json")
        .send(json!({"Boot": {"BootSourceOverrideMode": "Legacy"}}).to_string())
        .unwrap();
    assert_eq!(answer.status().as_u16(), 204);
    let before = client.system().unwrap();
    let error = client
        .set_one_time_boot(&BootTarget::UefiHttp(
            "http://127.0.0.1:1/boot.efi".to_owned(),
        ))
        .unwrap_err();
    assert!(matches!(error, Error::NotAllowed { .. }), "{error}");
    assert!(error.to_string().contains("nothing was changed"), "{error}");
    let after = client.system().unwrap();
    assert_eq!(before.boot_target, after.boot_target);
    // And the legacy machine's Pxe override leaves its mode alone.
    client.set_one_time_boot(&BootTarget::Pxe).unwrap();
    assert_eq!(
        client.system().unwrap().boot_mode.as_deref(),
        Some("Legacy")
    );
}

#[test]
fn transient_503s_are_retried_and_an_unreachable_bmc_is_named() {
    let (_dir, bmc, mut client) = one_machine();
    bmc.quirks(&json!({ "unavailable": 2 })).unwrap();
    client.system().unwrap();
    assert_eq!(bmc.stats().unwrap()["settings"]["unavailable"], 0);

    // Past the retries: the error says so and names the BMC.
    bmc.quirks(&json!({ "unavailable": 10 })).unwrap();
    let error = client.system().unwrap_err();
    assert!(error.is_unreachable(), "{error}");
    assert!(error.to_string().contains("503"), "{error}");

    let port = leasehold_chaos_tests::harness::site::free_port().unwrap();
    let mut nowhere = config(&bmc, None);
    nowhere.url = format!("http://127.0.0.1:{port}");
    let error = Bmc::connect(&nowhere).err().expect("unreachable");
    let text = error.to_string();
    assert!(error.is_unreachable(), "{text}");
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert!(text.contains("after 4 attempts"), "{text}");
}

#[test]
fn an_https_bmc_is_verified_against_the_ca_given() {
    let dir = tempfile::tempdir().unwrap();
    let issued = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let cert = dir.path().join("bmc.pem");
    let key = dir.path().join("bmc.key");
    std::fs::write(&cert, issued.cert.pem()).unwrap();
    std::fs::write(&key, issued.signing_key.serialize_pem()).unwrap();
    let machine = FakeMachine::numbered("rack1-u1", 1);
    if let Err(why) = emulator_available() {
        panic!("{why}");
    }
    let options = BmcOptions {
        tls: Some((cert.clone(), key)),
        ..BmcOptions::default()
    };
    let bmc = EmulatedBmc::start(
        &dir.path().join("bmc"),
        std::slice::from_ref(&machine),
        &options,
    )
    .unwrap();

    let mut trusted = config(&bmc, Some(&machine.mac));
    let error = Bmc::connect(&trusted).err().expect("needs a CA");
    assert!(error.to_string().contains("bmc_ca"), "{error}");

    trusted.tls = Some(TlsTrust::Verify {
        ca_pem: issued.cert.pem().into_bytes(),
    });
    let mut client = Bmc::connect(&trusted).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(client.system().unwrap().power, PowerState::Off);

    let other = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    trusted.tls = Some(TlsTrust::Verify {
        ca_pem: other.cert.pem().into_bytes(),
    });
    let error = Bmc::connect(&trusted).err().expect("not trusted");
    assert!(matches!(error, Error::Tls { .. }), "{error}");

    trusted.tls = Some(TlsTrust::NoVerify);
    Bmc::connect(&trusted).unwrap_or_else(|error| panic!("{error}"));
}
