//! `leasehold bench gateway` end to end at a small size: it starts a gateway and a fleet,
//! waits for every server, and prints one JSON line with the gateway's measured cost.

use std::process::Command;

#[test]
fn bench_gateway_measures_a_small_fleet_and_prints_one_json_line() {
    let output = Command::new(env!("CARGO_BIN_EXE_leasehold"))
        .args([
            "bench",
            "gateway",
            "--servers",
            "20",
            "--seconds",
            "3",
            "--settle",
            "2",
        ])
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("all 20 registered in"), "{stderr}");
    let line: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(line["servers"], 20);
    assert_eq!(line["accounts"], 1);
    for field in [
        "registered_s",
        "cpu_core_fraction",
        "rss_mib",
        "cpu_us_per_server_s",
        "kib_per_server",
    ] {
        assert!(
            line[field].as_f64().is_some_and(|v| v >= 0.0),
            "{field}: {line}"
        );
    }
    assert!(line["rss_mib"].as_f64().unwrap() > 1.0, "{line}");
    // 16 of the 20 hold leases (the account's minimum), each renewed twice a second.
    assert!(line["renewals_per_s"].as_f64().unwrap() > 5.0, "{line}");
    assert!(line["errors_total"].is_u64(), "{line}");
    // The kinds that happened in the window add up to its errors (when the fleet printed a
    // status line before and after it: one every 5 s).
    if let Some(errors) = line["errors"].as_u64() {
        let kinds = line["errors_by_kind"].as_object().expect("errors_by_kind");
        let by_kind: u64 = kinds.values().filter_map(|count| count.as_u64()).sum();
        assert_eq!(by_kind, errors, "{line}");
    }
}
