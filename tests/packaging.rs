//! The Debian package (docs/operations.md, "Installing"): `packaging/build-deb` builds it
//! from this build's binary, it installs into a throwaway root (extracted with dpkg-deb,
//! no package manager run), its binary runs there, and systemd checks its units there with
//! no complaint (a misspelt setting is a warning, which fails this test too).

use std::path::Path;
use std::process::Command;

const BINARY: &str = env!("CARGO_BIN_EXE_leasehold");

fn run(command: &mut Command) -> (bool, String) {
    let out = command.output().expect("the command runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn the_package_installs_into_a_root_where_it_runs_and_its_units_verify() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (built, said) = run(Command::new(repo.join("packaging/build-deb"))
        .arg(BINARY)
        .arg(dir.path().join("out")));
    assert!(built, "{said}");
    let deb = said.trim().to_owned();
    assert!(deb.ends_with(".deb"), "{said}");

    let (ok, info) = run(Command::new("dpkg-deb").args(["--field", &deb, "Package", "Version"]));
    assert!(ok, "{info}");
    assert!(info.contains("Package: leasehold"), "{info}");
    assert!(
        info.contains(&format!("Version: {}", env!("CARGO_PKG_VERSION"))),
        "{info}"
    );

    let root = dir.path().join("root");
    let (ok, said) = run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
    assert!(ok, "{said}");
    let (ok, version) = run(Command::new(root.join("usr/bin/leasehold")).arg("--version"));
    assert!(ok, "{version}");
    let mut lines = version.lines();
    assert_eq!(
        lines.next(),
        Some(format!("leasehold {}", env!("CARGO_PKG_VERSION")).as_str()),
        "{version}"
    );
    // The protocols, which say which releases can run side by side during an upgrade.
    assert_eq!(
        lines.next(),
        Some(
            "site to site: leasehold-site/1; node to gateway: leasehold-node/2, leasehold-node/1; envelope: wire version 1"
        ),
        "{version}"
    );
    for doc in [
        "usr/share/doc/leasehold/operations.md",
        "usr/share/doc/leasehold/examples/site-a.toml",
    ] {
        assert!(root.join(doc).is_file(), "{doc} is missing");
    }

    // A root as a system has it around the package: systemd's targets, and kill(1) for
    // ExecReload.
    let units = root.join("lib/systemd/system");
    for target in std::fs::read_dir("/lib/systemd/system").unwrap().flatten() {
        let name = target.file_name();
        if name.to_string_lossy().ends_with(".target") {
            std::fs::copy(target.path(), units.join(&name)).unwrap();
        }
    }
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy("/bin/kill", root.join("bin/kill")).unwrap();
    let (ok, said) = run(Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .args([
            "/lib/systemd/system/leasehold-gateway@site-a.service",
            "/lib/systemd/system/leasehold-node@a1.service",
        ]));
    assert!(
        ok && said.trim().is_empty(),
        "systemd-analyze verify: {said}"
    );
}
