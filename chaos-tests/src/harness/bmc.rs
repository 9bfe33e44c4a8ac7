//! An emulated BMC for tests and the demo: the sushy-tools Redfish emulator (fake driver,
//! from PyPI) behind the quirk layer in `bmc/quirky_bmc.py`, run as a real process on a
//! loopback port. The emulator keeps each machine's power and boot state (and, as real
//! hardware does, takes a few seconds to apply a power change); the layer adds the vendor
//! behaviour a test switches on: sessions, ETags, 409s, task monitors, 503s.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::process::ProcessGuard;
use super::site::free_port;

/// The quirk layer, written into each BMC's folder so a built binary needs no checkout.
const SCRIPT: &str = include_str!("../../bmc/quirky_bmc.py");

/// One machine the emulated BMC serves.
#[derive(Clone, Debug)]
pub struct FakeMachine {
    pub name: String,
    pub uuid: String,
    pub mac: String,
}

impl FakeMachine {
    /// A machine with a name, a UUID and a MAC all derived from `index`.
    pub fn numbered(name: &str, index: u8) -> FakeMachine {
        FakeMachine {
            name: name.to_owned(),
            uuid: format!("6c0f6a2e-1d4b-4c7e-9a35-0000000000{index:02x}"),
            mac: format!("52:54:00:6c:00:{index:02x}"),
        }
    }
}

pub struct BmcOptions {
    pub user: String,
    pub password: String,
    /// PEM certificate and key to serve https with.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Where the emulator sends a PUT with the machine's state on every change (its
    /// "external notifier"), for a harness that plays the machine.
    pub notify_url: Option<String>,
}

impl Default for BmcOptions {
    fn default() -> BmcOptions {
        BmcOptions {
            user: "admin".to_owned(),
            password: "bmc-password".to_owned(),
            tls: None,
            notify_url: None,
        }
    }
}

pub struct EmulatedBmc {
    guard: ProcessGuard,
    pub url: String,
    pub dir: PathBuf,
    pub machines: Vec<FakeMachine>,
}

/// Whether the emulator can run here; the reason and the fix when it cannot.
pub fn emulator_available() -> Result<(), String> {
    let output = std::process::Command::new("python3")
        .args(["-c", "import sushy_tools, bcrypt, webob, flask"])
        .output()
        .map_err(|error| format!("cannot run python3: {error}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "the Redfish emulator is not installed (pip install sushy-tools): {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

impl EmulatedBmc {
    /// Starts a BMC serving `machines` (all powered off) and waits until it answers.
    pub fn start(
        dir: &Path,
        machines: &[FakeMachine],
        options: &BmcOptions,
    ) -> Result<EmulatedBmc, String> {
        std::fs::create_dir_all(dir)
            .map_err(|error| format!("cannot create {}: {error}", dir.display()))?;
        let script = dir.join("quirky_bmc.py");
        std::fs::write(&script, SCRIPT)
            .map_err(|error| format!("cannot write {}: {error}", script.display()))?;
        let systems: Vec<String> = machines
            .iter()
            .map(|machine| {
                format!(
                    "{{'uuid': {uuid:?}, 'name': {name:?}, 'power_state': 'Off', 'external_notifier': {notify}, 'nics': [{{'mac': {mac:?}, 'ip': '127.0.0.1'}}]}}",
                    uuid = machine.uuid,
                    name = machine.name,
                    mac = machine.mac,
                    notify = if options.notify_url.is_some() { "True" } else { "False" },
                )
            })
            .collect();
        let mut config = format!(
            "SUSHY_EMULATOR_FAKE_DRIVER = True\nSUSHY_EMULATOR_STATE_DIR = {state:?}\nSUSHY_EMULATOR_FAKE_SYSTEMS = [\n    {systems}\n]\n",
            state = dir.join("state").display().to_string(),
            systems = systems.join(",\n    "),
        );
        if let Some(url) = &options.notify_url {
            config.push_str(&format!("EXTERNAL_NOTIFICATION_URL = {url:?}\n"));
        }
        let config_path = dir.join("emulator.conf");
        std::fs::write(&config_path, config)
            .map_err(|error| format!("cannot write {}: {error}", config_path.display()))?;
        let port = free_port()?;
        let mut args = vec![
            script.display().to_string(),
            "--config".to_owned(),
            config_path.display().to_string(),
            "--port".to_owned(),
            port.to_string(),
            "--user".to_owned(),
            options.user.clone(),
            "--auth-file".to_owned(),
            dir.join("htpasswd").display().to_string(),
        ];
        if let Some((cert, key)) = &options.tls {
            args.extend([
                "--ssl-certificate".to_owned(),
                cert.display().to_string(),
                "--ssl-key".to_owned(),
                key.display().to_string(),
            ]);
        }
        let guard = ProcessGuard::spawn_with_env(
            "bmc",
            Path::new("python3"),
            &args,
            &dir.join("bmc.log"),
            &[("QUIRKY_BMC_PASSWORD".to_owned(), options.password.clone())],
        )?;
        let scheme = if options.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let mut bmc = EmulatedBmc {
            guard,
            url: format!("{scheme}://127.0.0.1:{port}"),
            dir: dir.to_path_buf(),
            machines: machines.to_vec(),
        };
        let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let waited = super::wait_for(
            "the emulated BMC to listen",
            Duration::from_secs(30),
            || {
                if bmc.guard.exited() {
                    return Err(format!("it exited: {}", bmc.guard.output()));
                }
                std::net::TcpStream::connect_timeout(&address, Duration::from_millis(200))
                    .map(|_| ())
                    .map_err(|error| error.to_string())
            },
        );
        waited.map_err(|error| format!("{error}\n{}", bmc.guard.output()))?;
        Ok(bmc)
    }

    /// Changes the quirk layer's switches (a JSON object, e.g. `{"sessions": true}`).
    pub fn quirks(&self, changes: &serde_json::Value) -> Result<(), String> {
        self.control()?
            .post(format!("{}/quirks", self.url))
            .header("Content-Type", "application/json")
            .send(changes.to_string().as_bytes())
            .map_err(|error| format!("cannot set quirks: {error}"))?;
        Ok(())
    }

    /// What the quirk layer counted: `{"settings": ..., "stats": ...}`.
    pub fn stats(&self) -> Result<serde_json::Value, String> {
        let mut response = self
            .control()?
            .get(format!("{}/quirks", self.url))
            .call()
            .map_err(|error| format!("cannot read quirks: {error}"))?;
        let text = response
            .body_mut()
            .read_to_string()
            .map_err(|error| error.to_string())?;
        serde_json::from_str(&text).map_err(|error| format!("quirks are not JSON: {error}"))
    }

    /// The emulator's own log, for failure messages.
    pub fn output(&self) -> String {
        self.guard.output()
    }

    fn control(&self) -> Result<ureq::Agent, String> {
        if self.url.starts_with("https") {
            return Err("the quirk controls are read over http only".to_owned());
        }
        Ok(ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into())
    }
}
