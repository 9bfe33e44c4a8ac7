//! Machines for tests and the demo, played against a real Redfish BMC: the sushy-tools
//! emulator ([`super::bmc`]) keeps each machine's power and boot state, and tells the
//! player here of every change (its external notifier). When a machine's power comes on,
//! the player does what its firmware would: it fetches the machine's iPXE script from the
//! site's boot service, and if the script boots a kernel it starts `leasehold node run
//! --boot-args` with the script's command line, in a fresh work directory (a RAM disk: a
//! new boot remembers nothing). When the power goes off, the agent and its workload are
//! killed at once, as a power cut would. The emulator keeps every boot override as it was
//! set, so every power-on asks the boot service; the boot service answers `exit` (boot from
//! disk: nothing runs here) when no re-image is pending.
//!
//! A machine can also be played broken: one whose image never starts its agent, or one
//! that keeps its first script and boots it again later (a stale boot).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::evidence::mono_now_ns;
use super::process::ProcessGuard;

/// How a played machine behaves when powered on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    /// Fetches its script each boot and starts the image's node agent.
    Boots,
    /// Fetches its script, but the image never starts its agent.
    NeverRegisters,
    /// Fetches its script once, and boots that same script on every later power-on.
    KeepsFirstScript,
    /// A real virtual machine: power-on starts QEMU; when the BMC's boot device is `Pxe`,
    /// its NIC's iPXE fetches the script from the boot service and boots the kernel and
    /// initramfs it names, otherwise the NIC has no boot ROM and nothing boots (it has no
    /// disk); power-off kills QEMU. Customer traffic to `guest_port` inside reaches it at
    /// `host_port` on loopback.
    Qemu {
        host_port: u16,
        guest_port: u16,
        accel: Accel,
    },
}

/// How QEMU runs a guest: hardware virtualization where it boots a kernel ([`kvm_boots`]),
/// software emulation everywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// Whether QEMU with KVM boots `kernel` far enough to print its panic for want of a root
/// (within `timeout`): `/dev/kvm` may exist and yet run no ordinary guest (a nested or
/// paravirtual KVM), so its presence alone decides nothing.
pub fn kvm_boots(kernel: &Path, timeout: Duration) -> Result<(), String> {
    use std::io::BufRead;
    if !Path::new("/dev/kvm").exists() {
        return Err("no /dev/kvm".to_owned());
    }
    let mut child = std::process::Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            "kvm",
            "-machine",
            "q35",
            "-m",
            "256",
            "-nographic",
        ])
        .args(["-no-reboot", "-monitor", "none", "-kernel"])
        .arg(kernel)
        .args(["-append", "console=ttyS0 panic=-1"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|error| format!("cannot start qemu-system-x86_64: {error}"))?;
    let (seen, lines) = mpsc::channel();
    if let Some(stdout) = child.stdout.take() {
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if line.contains("Kernel panic") && seen.send(()).is_err() {
                    break;
                }
            }
        });
    }
    let outcome = lines.recv_timeout(timeout);
    let _ = child.kill();
    let _ = child.wait();
    outcome.map_err(|_| {
        format!(
            "/dev/kvm is there, but under KVM the kernel did not come up within {} s",
            timeout.as_secs()
        )
    })
}

/// One boot of a played machine that started a node agent (or a VM).
#[derive(Debug, Clone)]
pub struct BootRecord {
    /// The agent's work directory (its event log); for a VM, its serial console's log.
    pub work: PathBuf,
    /// The kernel command line it booted with.
    pub cmdline: String,
    /// When it started (monotonic ns).
    pub on_mono_ns: u64,
    /// When its power went off (monotonic ns), if it has.
    pub off_mono_ns: Option<u64>,
    /// The BMC's boot device when the power came on (`Pxe`, `Hdd`, ...).
    pub boot_device: String,
}

struct Played {
    server: String,
    firmware: Firmware,
    powered: bool,
    agent: Option<ProcessGuard>,
    kept_script: Option<String>,
    /// Every script it was given, in order.
    scripts: Vec<String>,
    boots: Vec<BootRecord>,
}

struct Player {
    binary: PathBuf,
    certs: PathBuf,
    dir: PathBuf,
    boot_addr: SocketAddr,
    machines: HashMap<String, Played>,
}

/// Plays machines for one emulated BMC. Dropping it powers every machine "off" (kills
/// every agent it started).
pub struct MachinePlayer {
    state: Arc<Mutex<Player>>,
    server: Arc<tiny_http::Server>,
    /// Where the emulator sends its notices.
    pub url: String,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl MachinePlayer {
    /// Listens for notices; `machines` are (MAC, server id, firmware).
    pub fn start(
        binary: &Path,
        certs: &Path,
        dir: &Path,
        boot_addr: SocketAddr,
        machines: &[(String, String, Firmware)],
    ) -> Result<MachinePlayer, String> {
        std::fs::create_dir_all(dir)
            .map_err(|error| format!("cannot create {}: {error}", dir.display()))?;
        let server = tiny_http::Server::http("127.0.0.1:0")
            .map_err(|error| format!("the machine player cannot listen: {error}"))?;
        let port = server
            .server_addr()
            .to_ip()
            .map(|addr| addr.port())
            .ok_or("the machine player has no IP address")?;
        let state = Arc::new(Mutex::new(Player {
            binary: binary.to_path_buf(),
            certs: certs.to_path_buf(),
            dir: dir.to_path_buf(),
            boot_addr,
            machines: machines
                .iter()
                .map(|(mac, server, firmware)| {
                    (
                        mac.to_ascii_lowercase(),
                        Played {
                            server: server.clone(),
                            firmware: *firmware,
                            powered: false,
                            agent: None,
                            kept_script: None,
                            scripts: Vec::new(),
                            boots: Vec::new(),
                        },
                    )
                })
                .collect(),
        }));
        let server = Arc::new(server);
        // Notices are answered at once (the emulator waits for the answer inside a BMC
        // request) and handled in order on a thread of their own.
        let (notices, queue) = mpsc::channel::<Notice>();
        let receiver = {
            let server = server.clone();
            std::thread::spawn(move || {
                for mut request in server.incoming_requests() {
                    let mut body = String::new();
                    let _ = request.as_reader().read_to_string(&mut body);
                    let _ = request.respond(tiny_http::Response::empty(204));
                    let Ok(system) = serde_json::from_str::<serde_json::Value>(&body) else {
                        continue;
                    };
                    let mac = system["nics"][0]["mac"].as_str().unwrap_or("").to_owned();
                    let notice = Notice {
                        mac: mac.to_ascii_lowercase(),
                        power: system["power_state"].as_str().unwrap_or("").to_owned(),
                        // The fake driver's default, as it reports it to Redfish clients.
                        boot_device: system["boot_device"].as_str().unwrap_or("Hdd").to_owned(),
                    };
                    if notices.send(notice).is_err() {
                        break;
                    }
                }
            })
        };
        let worker = {
            let state = state.clone();
            std::thread::spawn(move || {
                while let Ok(notice) = queue.recv() {
                    let mut player = state.lock().unwrap_or_else(|p| p.into_inner());
                    player.power(&notice);
                }
            })
        };
        Ok(MachinePlayer {
            state,
            server,
            url: format!("http://127.0.0.1:{port}/notify"),
            threads: vec![receiver, worker],
        })
    }

    /// The boots of the machine of `server` that started an agent, oldest first.
    pub fn boots(&self, server: &str) -> Vec<BootRecord> {
        let player = self.state.lock().unwrap_or_else(|p| p.into_inner());
        player
            .machines
            .values()
            .find(|played| played.server == server)
            .map(|played| played.boots.clone())
            .unwrap_or_default()
    }

    /// Every script the machine of `server` was given, oldest first.
    pub fn scripts(&self, server: &str) -> Vec<String> {
        let player = self.state.lock().unwrap_or_else(|p| p.into_inner());
        player
            .machines
            .values()
            .find(|played| played.server == server)
            .map(|played| played.scripts.clone())
            .unwrap_or_default()
    }

    /// The machine of `server` hangs: its agent and workload are killed at once while its
    /// power stays on (a crashed or wedged OS, which only its BMC can reset). False when
    /// it ran nothing.
    pub fn hang(&self, server: &str) -> bool {
        let mut player = self.state.lock().unwrap_or_else(|p| p.into_inner());
        player
            .machines
            .values_mut()
            .filter(|played| played.server == server && played.powered)
            .any(|played| played.agent.take().is_some())
    }

    /// Whether the player has the machine of `server` powered on.
    pub fn powered(&self, server: &str) -> bool {
        let player = self.state.lock().unwrap_or_else(|p| p.into_inner());
        player
            .machines
            .values()
            .any(|played| played.server == server && played.powered)
    }
}

impl Drop for MachinePlayer {
    fn drop(&mut self) {
        self.server.unblock();
        let mut player = self.state.lock().unwrap_or_else(|p| p.into_inner());
        for played in player.machines.values_mut() {
            played.agent = None;
        }
        drop(player);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// What the emulator says of a machine when its state changes.
struct Notice {
    mac: String,
    power: String,
    boot_device: String,
}

impl Player {
    fn power(&mut self, notice: &Notice) {
        let (mac, power) = (notice.mac.as_str(), notice.power.as_str());
        let (binary, certs, dir, boot_addr) = (
            self.binary.clone(),
            self.certs.clone(),
            self.dir.clone(),
            self.boot_addr,
        );
        let Some(played) = self.machines.get_mut(mac) else {
            return;
        };
        match power {
            "On" if !played.powered => {
                played.powered = true;
                if let Firmware::Qemu {
                    host_port,
                    guest_port,
                    accel,
                } = played.firmware
                {
                    let boot = played.boots.len() + 1;
                    let serial = dir.join(format!("{}-boot{boot}.serial", played.server));
                    let vm = Vm {
                        mac,
                        boot_addr,
                        network_boot: notice.boot_device == "Pxe",
                        host_port,
                        guest_port,
                        accel,
                    };
                    // Taken before QEMU starts: nothing of this boot ran earlier.
                    let on_mono_ns = mono_now_ns();
                    match vm.start(&serial, &dir) {
                        Ok(vm) => {
                            played.agent = Some(vm);
                            played.boots.push(BootRecord {
                                work: serial,
                                cmdline: String::new(),
                                on_mono_ns,
                                off_mono_ns: None,
                                boot_device: notice.boot_device.clone(),
                            });
                        }
                        Err(error) => eprintln!("machine {}: {error}", played.server),
                    }
                    return;
                }
                let script = match (played.firmware, &played.kept_script) {
                    (Firmware::KeepsFirstScript, Some(kept)) => Ok(kept.clone()),
                    _ => fetch_script(boot_addr, mac),
                };
                let script = match script {
                    Ok(script) => script,
                    Err(error) => {
                        eprintln!("machine {}: no boot script: {error}", played.server);
                        return;
                    }
                };
                played.scripts.push(script.clone());
                if played.firmware == Firmware::KeepsFirstScript {
                    played.kept_script.get_or_insert(script.clone());
                }
                let Some(cmdline) = kernel_cmdline(&script) else {
                    return; // `exit`: boot from the local disk, where nothing is installed
                };
                if played.firmware == Firmware::NeverRegisters {
                    return;
                }
                let boot = played.boots.len() + 1;
                let work = dir.join(format!("{}-boot{boot}", played.server));
                let args_file = dir.join(format!("{}-boot{boot}.cmdline", played.server));
                let started = std::fs::create_dir_all(&work)
                    .and_then(|()| std::fs::write(&args_file, &cmdline))
                    .map_err(|error| error.to_string())
                    .and_then(|()| {
                        let args: Vec<String> = vec![
                            "node".into(),
                            "run".into(),
                            "--boot-args".into(),
                            args_file.display().to_string(),
                            "--certs".into(),
                            certs.display().to_string(),
                            "--work".into(),
                            work.display().to_string(),
                        ];
                        ProcessGuard::spawn(
                            &format!("{}-boot{boot}", played.server),
                            &binary,
                            &args,
                            &dir.join(format!("{}-boot{boot}.log", played.server)),
                        )
                    });
                match started {
                    Ok(agent) => {
                        played.agent = Some(agent);
                        played.boots.push(BootRecord {
                            work,
                            cmdline,
                            on_mono_ns: mono_now_ns(),
                            off_mono_ns: None,
                            boot_device: notice.boot_device.clone(),
                        });
                    }
                    Err(error) => eprintln!("machine {}: {error}", played.server),
                }
            }
            "Off" if played.powered => {
                played.powered = false;
                // A power cut: the agent and its workload go at once.
                if played.agent.take().is_some()
                    && let Some(boot) = played.boots.last_mut()
                {
                    boot.off_mono_ns = Some(mono_now_ns());
                }
            }
            _ => {}
        }
    }
}

/// A virtual machine to power on.
struct Vm<'a> {
    mac: &'a str,
    boot_addr: SocketAddr,
    /// The BMC's one-time boot device is `Pxe`.
    network_boot: bool,
    host_port: u16,
    guest_port: u16,
    accel: Accel,
}

impl Vm<'_> {
    /// Powers the virtual machine on: QEMU (with KVM where [`kvm_boots`] said it works),
    /// whose NIC's iPXE ROM fetches the script from the boot service as a
    /// machine's firmware chain-loaded by DHCP would (the host is 10.0.2.2 to it), when the
    /// BMC's boot device says so. Its serial console goes to `serial`.
    fn start(&self, serial: &Path, dir: &Path) -> Result<ProcessGuard, String> {
        let script = format!(
            "http://10.0.2.2:{}/boot/{}.ipxe",
            self.boot_addr.port(),
            self.mac.replace(':', "-")
        );
        // Without a boot ROM the NIC cannot boot, and there is no disk: the machine is on
        // and runs nothing, as a real one left to boot from an empty disk.
        let rom = if self.network_boot { "" } else { ",romfile=" };
        let args: Vec<String> = [
            "-accel",
            self.accel.name(),
            "-machine",
            "q35",
            "-m",
            "1024",
            "-smp",
            "1",
            "-nographic",
            "-vga",
            "none",
            "-monitor",
            "none",
            "-no-reboot",
        ]
        .iter()
        .map(|arg| arg.to_string())
        .chain([
            "-serial".to_owned(),
            format!("file:{}", serial.display()),
            "-netdev".to_owned(),
            format!(
                "user,id=n0,bootfile={script},hostfwd=tcp:127.0.0.1:{}-:{}",
                self.host_port, self.guest_port
            ),
            "-device".to_owned(),
            format!("virtio-net-pci,netdev=n0,mac={}{rom}", self.mac),
            "-boot".to_owned(),
            "n".to_owned(),
        ])
        .collect();
        let name = serial
            .file_stem()
            .map(|stem| stem.to_string_lossy().into_owned())
            .unwrap_or_else(|| "vm".to_owned());
        ProcessGuard::spawn(
            &name,
            Path::new("qemu-system-x86_64"),
            &args,
            &dir.join(format!("{name}.qemu.log")),
        )
    }
}

/// Fetches `/boot/<mac>.ipxe` as iPXE's `${net0/mac:hexhyp}` would name it.
fn fetch_script(boot_addr: SocketAddr, mac: &str) -> Result<String, String> {
    let url = format!("http://{boot_addr}/boot/{}.ipxe", mac.replace(':', "-"));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let mut response = agent
        .get(&url)
        .call()
        .map_err(|error| format!("GET {url}: {error}"))?;
    response
        .body_mut()
        .read_to_string()
        .map_err(|error| format!("GET {url}: {error}"))
}

/// The kernel command line of an iPXE script's `kernel <url> <args...>` line; `None` for a
/// script that boots no kernel (`exit`).
pub fn kernel_cmdline(script: &str) -> Option<String> {
    script.lines().find_map(|line| {
        let rest = line.trim().strip_prefix("kernel ")?;
        let (_url, args) = rest.split_once(' ').unwrap_or((rest, ""));
        Some(args.trim().to_owned())
    })
}

/// The steps of a machine's boot, in order, as `last_boot` and the demo's report name them.
pub const BOOT_STEPS: [&str; 4] = ["powering-off", "setting-boot", "powering-on", "booting"];

/// Whether `steps` are a whole boot: all four, or the first three when the agent
/// registered before the BMC showed the machine on (the emulator reports power changes
/// late under load), which the gateway takes (docs/machines.md).
pub fn whole_boot(steps: &[&str]) -> bool {
    steps == BOOT_STEPS || steps == &BOOT_STEPS[..3]
}
