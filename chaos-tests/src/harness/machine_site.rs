//! A site whose servers are machines behind an emulated BMC ([`super::bmc`]) and played
//! by [`super::machines`]: the gateway, the BMC, the player, their config and
//! certificates, in a directory the caller owns.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::admin::{get_json, get_text};
use super::bmc::{BmcOptions, EmulatedBmc, FakeMachine, emulator_available};
use super::machines::{Firmware, MachinePlayer};
use super::onesite::{FAST_TIMINGS, gateway_args, node_args};
use super::process::ProcessGuard;
use super::site::{AccountSpec, PortPicker, account_text, create_certs};
use super::wait_for;

/// Long enough for the emulator's power changes (1 to 11 s each) and a boot on two busy
/// cores.
pub const MACHINE_SETTLE: Duration = Duration::from_secs(90);

#[derive(Debug, Clone)]
pub struct MachineSpec {
    pub id: String,
    pub firmware: Firmware,
    pub bmc: BmcKind,
}

/// What the gateway's config says of a machine's BMC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BmcKind {
    /// The emulated BMC, with the right credentials.
    Emulated,
    /// A port where nothing listens.
    Unreachable,
    /// The emulated BMC, with a password it refuses.
    WrongPassword,
}

impl MachineSpec {
    pub fn new(id: &str) -> MachineSpec {
        MachineSpec {
            id: id.to_owned(),
            firmware: Firmware::Boots,
            bmc: BmcKind::Emulated,
        }
    }
}

pub struct MachineSite {
    pub dir: PathBuf,
    binary: PathBuf,
    pub gateway: Option<ProcessGuard>,
    /// Node agents of the process servers, by server id.
    pub nodes: Vec<(String, ProcessGuard)>,
    pub management: SocketAddr,
    pub player: MachinePlayer,
    pub bmc: EmulatedBmc,
    pub admin: SocketAddr,
    pub boot: SocketAddr,
    pub config: PathBuf,
    pub machines: Vec<(MachineSpec, FakeMachine)>,
    text: ConfigText,
}

/// What the config is written from, so a test can write it again with other accounts.
struct ConfigText {
    head: String,
    servers: String,
    /// Where an account's kernel and initrd are (`{account}` expanded by the gateway).
    images: String,
}

/// How [`MachineSite::start_with`] sets the site up.
#[derive(Debug, Clone, Default)]
pub struct SiteOptions {
    /// Process servers beside the machines, with their node agents.
    pub processes: Vec<String>,
    /// `[timings]`, in full (see `FAST_TIMINGS`).
    pub timings: Vec<(String, u64)>,
    /// The host machines reach the gateway's management port at (a VM's view of its
    /// host: `10.0.2.2`), as `advertise_management_addr`.
    pub advertise_management_port_host: Option<String>,
    /// The URL folder of the accounts' kernel and initrd [default: the boot address's
    /// `/images/{account}`, which serves nothing: played machines do not fetch them].
    pub image_base: Option<String>,
    /// The machines' `service_addr` [default: a free loopback port each].
    pub machine_service_addr: Option<String>,
}

impl MachineSite {
    /// Writes the site, starts the player, the BMC and the gateway, and waits until the
    /// gateway is ready. `extra_timings` are added to the fast test timings.
    pub fn start(
        binary: &Path,
        dir: &Path,
        machines: &[MachineSpec],
        accounts: &[AccountSpec],
        extra_timings: &[(&str, u64)],
    ) -> Result<MachineSite, String> {
        MachineSite::start_mixed(binary, dir, machines, &[], accounts, extra_timings)
    }

    /// [`MachineSite::start`] with process servers beside the machines (their node agents
    /// started once the gateway is ready).
    pub fn start_mixed(
        binary: &Path,
        dir: &Path,
        machines: &[MachineSpec],
        processes: &[&str],
        accounts: &[AccountSpec],
        extra_timings: &[(&str, u64)],
    ) -> Result<MachineSite, String> {
        let options = SiteOptions {
            processes: processes.iter().map(|id| id.to_string()).collect(),
            timings: FAST_TIMINGS
                .iter()
                .chain(extra_timings)
                .map(|(key, value)| (key.to_string(), *value))
                .collect(),
            ..SiteOptions::default()
        };
        MachineSite::start_with(binary, dir, machines, accounts, &options)
    }

    /// The most general start: see [`SiteOptions`]. Every account has an image.
    pub fn start_with(
        binary: &Path,
        dir: &Path,
        machines: &[MachineSpec],
        accounts: &[AccountSpec],
        options: &SiteOptions,
    ) -> Result<MachineSite, String> {
        let images: Vec<&str> = accounts.iter().map(|a| a.name.as_str()).collect();
        MachineSite::start_with_images(binary, dir, machines, accounts, &images, options)
    }

    /// [`MachineSite::start_with`], where only the accounts named in `images` have an image
    /// from the start (machines serve only those; the others go to process servers).
    pub fn start_with_images(
        binary: &Path,
        dir: &Path,
        machines: &[MachineSpec],
        accounts: &[AccountSpec],
        images: &[&str],
        options: &SiteOptions,
    ) -> Result<MachineSite, String> {
        let processes = &options.processes;
        emulator_available()?;
        let mut ports = PortPicker::default();
        let mut port = || ports.pick();
        let loopback = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        let (admin, federation, management, boot) = (
            loopback(port()?),
            loopback(port()?),
            loopback(port()?),
            loopback(port()?),
        );
        let fakes: Vec<FakeMachine> = machines
            .iter()
            .enumerate()
            .map(|(i, spec)| FakeMachine::numbered(&spec.id, i as u8 + 1))
            .collect();
        let certs = dir.join("certs");
        let player = MachinePlayer::start(
            binary,
            &certs,
            &dir.join("machines"),
            boot,
            &machines
                .iter()
                .zip(&fakes)
                .map(|(spec, fake)| (fake.mac.clone(), spec.id.clone(), spec.firmware))
                .collect::<Vec<_>>(),
        )?;
        let bmc_options = BmcOptions {
            notify_url: Some(player.url.clone()),
            ..BmcOptions::default()
        };
        let bmc = EmulatedBmc::start(&dir.join("bmc"), &fakes, &bmc_options)?;
        let unreachable = loopback(port()?);
        let mut servers = String::new();
        for id in processes {
            servers.push_str(&format!(
                "[[server]]\nid = \"{id}\"\nservice_addr = \"{}\"\n\n",
                loopback(port()?)
            ));
        }
        for (spec, fake) in machines.iter().zip(&fakes) {
            let (url, password) = match spec.bmc {
                BmcKind::Emulated => (bmc.url.clone(), bmc_options.password.as_str()),
                BmcKind::Unreachable => (
                    format!("http://{unreachable}"),
                    bmc_options.password.as_str(),
                ),
                BmcKind::WrongPassword => (bmc.url.clone(), "not-the-password"),
            };
            let credentials = dir.join(format!("bmc-{}.toml", spec.id));
            std::fs::write(
                &credentials,
                format!(
                    "username = {:?}\npassword = {password:?}\n",
                    bmc_options.user
                ),
            )
            .and_then(|()| {
                std::fs::set_permissions(&credentials, std::fs::Permissions::from_mode(0o600))
            })
            .map_err(|error| format!("cannot write {}: {error}", credentials.display()))?;
            servers.push_str(&format!(
                "[[server]]\nid = \"{id}\"\nservice_addr = \"{service}\"\ndriver = \"redfish\"\nbmc_url = \"{url}\"\nbmc_credentials = \"{credentials}\"\nmac = \"{mac}\"\n\n",
                id = spec.id,
                service = match &options.machine_service_addr {
                    Some(addr) => addr.clone(),
                    None => loopback(port()?).to_string(),
                },
                credentials = credentials.display(),
                mac = fake.mac,
            ));
        }
        let mut head = format!(
            "[site]\nname = \"site-m\"\nadmin_addr = \"{admin}\"\nfederation_addr = \"{federation}\"\nmanagement_addr = \"{management}\"\nboot_addr = \"{boot}\"\n"
        );
        if let Some(advertised) = &options.advertise_management_port_host {
            head.push_str(&format!(
                "advertise_management_addr = \"{advertised}:{}\"\n",
                management.port()
            ));
        }
        head.push('\n');
        head.push_str(super::site::LOOPBACK_ADMIN);
        head.push_str("[timings]\n");
        for (key, value) in &options.timings {
            head.push_str(&format!("{key} = {value}\n"));
        }
        head.push('\n');
        create_certs(
            &certs,
            &[(
                "site-m",
                machines
                    .iter()
                    .map(|spec| spec.id.clone())
                    .chain(processes.iter().map(|id| id.to_string()))
                    .collect(),
            )],
        )?;
        drop(ports);
        let mut site = MachineSite {
            dir: dir.to_path_buf(),
            binary: binary.to_path_buf(),
            gateway: None,
            nodes: Vec::new(),
            management,
            player,
            bmc,
            admin,
            boot,
            config: dir.join("site-m.toml"),
            machines: machines.iter().cloned().zip(fakes).collect(),
            text: ConfigText {
                head,
                servers,
                images: options
                    .image_base
                    .clone()
                    .unwrap_or_else(|| format!("http://{boot}/images/{{account}}")),
            },
        };
        site.write_config_with_images(accounts, images)?;
        site.start_gateway()?;
        for id in processes {
            let work = dir.join("nodes").join(id);
            std::fs::create_dir_all(&work)
                .map_err(|error| format!("cannot create {}: {error}", work.display()))?;
            let args = node_args(management, id, &certs, &work);
            let node = ProcessGuard::spawn(id, binary, &args, &dir.join(format!("node-{id}.log")))?;
            site.nodes.push((id.to_string(), node));
        }
        Ok(site)
    }

    /// Writes the config with `accounts`, each with an image (as an editor saves: a
    /// watching gateway never reads half a file).
    pub fn write_config(&self, accounts: &[AccountSpec]) -> Result<(), String> {
        let names: Vec<&str> = accounts.iter().map(|a| a.name.as_str()).collect();
        self.write_config_with_images(accounts, &names)
    }

    /// [`MachineSite::write_config`], where only the accounts named in `images` have an
    /// image (machines serve only those).
    pub fn write_config_with_images(
        &self,
        accounts: &[AccountSpec],
        images: &[&str],
    ) -> Result<(), String> {
        let mut text = format!("{}{}", self.text.head, self.text.servers);
        for account in accounts {
            text.push_str(&account_text(account, &[]));
            if !images.contains(&account.name.as_str()) {
                text.push('\n');
                continue;
            }
            text.push_str(&format!(
                "\n[account.image]\nkernel = \"{images}/vmlinuz\"\ninitrd = \"{images}/initrd.img\"\ncmdline = \"console=ttyS0 quiet panic=-1\"\n\n",
                images = self.text.images
            ));
        }
        let temporary = self.config.with_extension("toml.new");
        std::fs::write(&temporary, text)
            .and_then(|()| std::fs::rename(&temporary, &self.config))
            .map_err(|error| format!("cannot write {}: {error}", self.config.display()))
    }

    pub fn start_gateway(&mut self) -> Result<(), String> {
        let args = gateway_args(
            &self.config,
            &self.dir.join("certs"),
            &self.dir.join("state"),
        );
        let gateway = ProcessGuard::spawn(
            "gateway",
            &self.binary,
            &args,
            &self.dir.join("gateway.log"),
        )?;
        self.gateway = Some(gateway);
        let admin = self.admin;
        wait_for("the gateway to be ready", Duration::from_secs(40), || {
            if self.gateway.as_mut().is_some_and(|g| g.exited()) {
                return Err("the gateway exited".to_owned());
            }
            get_text(admin, "/ready")
        })
        .map(|_| ())
        .map_err(|error| format!("{error}\n{}", self.output()))
    }

    /// The gateway's log and the BMC's, for failure messages.
    pub fn output(&self) -> String {
        format!(
            "--- gateway log ---\n{}\n--- BMC log (tail) ---\n{}",
            self.gateway
                .as_ref()
                .map(|g| g.output())
                .unwrap_or_default(),
            tail(&self.bmc.output(), 40)
        )
    }

    /// The `/v1/servers` entry of `server`.
    pub fn server(&self, server: &str) -> Result<Value, String> {
        let servers = get_json(self.admin, "/v1/servers")?;
        servers
            .as_array()
            .and_then(|list| list.iter().find(|s| s["id"] == server).cloned())
            .ok_or_else(|| format!("{server} is not in /v1/servers: {servers}"))
    }

    /// Every audit record, oldest first.
    pub fn audit(&self) -> Result<Vec<Value>, String> {
        let audit = get_json(self.admin, "/v1/audit?after=0&limit=1000")?;
        audit
            .as_array()
            .cloned()
            .ok_or_else(|| format!("the audit log is not a list: {audit}"))
    }

    /// Waits until `server` serves `account` (its new image registered and the workload
    /// joined); returns its `/v1/servers` entry.
    pub fn wait_serving(&self, server: &str, account: &str) -> Result<Value, String> {
        wait_for(
            &format!("{server} to serve {account}"),
            MACHINE_SETTLE,
            || {
                let entry = self.server(server)?;
                if entry["state"] == "serving" && entry["account"] == account {
                    Ok(entry)
                } else {
                    Err(entry.to_string())
                }
            },
        )
        .map_err(|error| format!("{error}\n{}", self.output()))
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
