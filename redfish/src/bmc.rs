//! One machine's BMC: found from the service root, then power and boot.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::system::{normal_mac, strings};
use crate::transport::{Method, Reply, Retry, Transport};
use crate::{BootTarget, Credentials, Error, PowerState, ResetType, SystemState, task};

/// How to trust an https BMC's certificate.
#[derive(Clone, Debug)]
pub enum TlsTrust {
    /// Verify against these PEM certificates (the BMC's CA, or its self-signed certificate).
    Verify { ca_pem: Vec<u8> },
    /// Do not verify: the operator said so (`bmc_tls_verify = false`); warned at start.
    NoVerify,
}

#[derive(Clone, Debug)]
pub struct BmcConfig {
    /// `https://host[:port]` or `http://...`: the BMC, not a resource on it.
    pub url: String,
    pub credentials: Credentials,
    /// Needed for https; ignored for http.
    pub tls: Option<TlsTrust>,
    /// The machine's boot MAC: picks the system where a BMC serves several, and is checked
    /// where it serves one.
    pub mac: Option<String>,
    pub retry: Retry,
    /// One request's whole time, connection included.
    pub request_timeout: Duration,
    /// Between two reads of the power state while waiting for it.
    pub poll_interval: Duration,
}

impl BmcConfig {
    pub fn new(url: &str, credentials: Credentials) -> BmcConfig {
        BmcConfig {
            url: url.to_owned(),
            credentials,
            tls: None,
            mac: None,
            retry: Retry::default(),
            request_timeout: Duration::from_secs(30),
            poll_interval: Duration::from_millis(500),
        }
    }
}

pub struct Bmc {
    transport: Transport,
    /// The machine's `ComputerSystem`.
    system: String,
    poll_interval: Duration,
}

impl Bmc {
    /// Reads the service root, logs in (a session where the BMC offers one) and finds the
    /// machine's system.
    pub fn connect(config: &BmcConfig) -> Result<Bmc, Error> {
        let mut transport = Transport::new(
            &config.url,
            config.credentials.clone(),
            config.tls.as_ref(),
            config.retry.clone(),
            config.request_timeout,
        )?;
        // The service root needs no authentication by the standard; transport sends basic
        // auth until a session exists, which the few BMCs that guard the root also accept.
        let root = expect_json(&mut transport, "/redfish/v1/")?;
        let sessions = root["Links"]["Sessions"]["@odata.id"]
            .as_str()
            .map(str::to_owned)
            .or_else(|| {
                root["SessionService"]["@odata.id"]
                    .as_str()
                    .map(|service| format!("{}/Sessions", service.trim_end_matches('/')))
            });
        transport.login(sessions)?;
        let Some(systems) = root["Systems"]["@odata.id"].as_str().map(str::to_owned) else {
            return Err(Error::Discovery {
                url: transport.url().to_owned(),
                detail: "the service root links no Systems collection".to_owned(),
            });
        };
        let members = members(&mut transport, &systems)?;
        let system = pick_system(&mut transport, &members, config.mac.as_deref())?;
        tracing::info!(
            bmc = %transport.url(),
            system,
            session = transport.is_session(),
            "BMC connected"
        );
        Ok(Bmc {
            transport,
            system,
            poll_interval: config.poll_interval,
        })
    }

    pub fn url(&self) -> &str {
        self.transport.url()
    }

    /// The machine's `ComputerSystem` path, as discovered.
    pub fn system_path(&self) -> &str {
        &self.system
    }

    /// Whether requests go with a session token (else basic auth).
    pub fn uses_session(&self) -> bool {
        self.transport.is_session()
    }

    pub fn system(&mut self) -> Result<SystemState, Error> {
        let reply = self.get(&self.system.clone())?;
        Ok(SystemState::parse(&self.system, &reply.body, reply.etag))
    }

    /// Sets the next boot, once, to `target`, and reads it back. The PATCH carries the
    /// resource's ETag where the BMC gives one; a 412 (someone changed the system between
    /// the read and the write) re-reads it once.
    pub fn set_one_time_boot(&mut self, target: &BootTarget) -> Result<SystemState, Error> {
        for attempt in 0..2 {
            let state = self.system()?;
            self.allowed(
                "BootSourceOverrideTarget",
                target.name(),
                &state.boot_targets_allowed,
            )?;
            let mut boot = json!({
                "BootSourceOverrideEnabled": "Once",
                "BootSourceOverrideTarget": target.name(),
            });
            // UEFI where the BMC says it is supported, or the machine already boots so
            // (some BMCs reset the mode with every override unless it is given). A machine
            // the BMC says nothing about and that boots legacy is left as it is: forcing
            // UEFI on legacy-only firmware would leave it unbootable.
            let uefi = match &state.boot_modes_allowed {
                Some(modes) => modes.iter().any(|mode| mode == "UEFI"),
                None => state.boot_mode.as_deref() == Some("UEFI"),
            };
            if uefi {
                boot["BootSourceOverrideMode"] = json!("UEFI");
            }
            if let BootTarget::UefiHttp(uri) = target {
                boot["HttpBootUri"] = json!(uri);
            }
            let body = json!({ "Boot": boot });
            let reply = self.transport.request(
                Method::Patch,
                &state.path,
                Some(&body),
                state.etag.as_deref(),
            )?;
            match reply.status {
                200 | 202 | 204 => {
                    if reply.status == 202 {
                        self.follow(&reply, Duration::from_secs(60))?;
                    }
                    return self.verify_boot(target);
                }
                412 if attempt == 0 => {
                    tracing::info!(bmc = %self.url(), "stale ETag (412); reading the system again");
                }
                412 => {
                    return Err(Error::StaleEtag {
                        url: self.url().to_owned(),
                    });
                }
                status => return Err(self.refused("PATCH", status, &reply)),
            }
        }
        Err(Error::StaleEtag {
            url: self.url().to_owned(),
        })
    }

    fn verify_boot(&mut self, target: &BootTarget) -> Result<SystemState, Error> {
        let state = self.system()?;
        if state.boot_target.as_deref() != Some(target.name()) {
            return Err(Error::NotApplied {
                url: self.url().to_owned(),
                what: "BootSourceOverrideTarget",
                wanted: target.name().to_owned(),
                seen: state.boot_target.clone().unwrap_or_default(),
            });
        }
        match state.boot_enabled.as_deref() {
            Some("Once") => {}
            // Some BMCs (and the sushy emulator) keep every override continuous. The boot
            // service answers "boot from disk" to a machine with no re-image pending, so a
            // sticky override costs a network round trip at boot, never a wrong image.
            Some("Continuous") => {
                tracing::warn!(bmc = %self.url(), "the BMC keeps the boot override continuous, not once")
            }
            seen => {
                return Err(Error::NotApplied {
                    url: self.url().to_owned(),
                    what: "BootSourceOverrideEnabled",
                    wanted: "Once".to_owned(),
                    seen: seen.unwrap_or("(not given)").to_owned(),
                });
            }
        }
        if let BootTarget::UefiHttp(uri) = target
            && state.http_boot_uri.as_deref() != Some(uri.as_str())
        {
            return Err(Error::NotApplied {
                url: self.url().to_owned(),
                what: "HttpBootUri",
                wanted: uri.clone(),
                seen: state.http_boot_uri.clone().unwrap_or_default(),
            });
        }
        Ok(state)
    }

    /// `ComputerSystem.Reset` with `reset`, if the BMC allows it. A 409 (the BMC is busy
    /// with another power change) is retried with backoff unless the machine is already as
    /// the reset would leave it; a 202 is followed to its task's end.
    pub fn reset(&mut self, reset: ResetType) -> Result<(), Error> {
        let state = self.system()?;
        let allowed = match (&state.reset_types_allowed, &state.reset_action_info) {
            (Some(allowed), _) => Some(allowed.clone()),
            (None, Some(info)) => self.action_info_reset_types(info)?,
            (None, None) => None,
        };
        self.allowed("ResetType", reset.as_str(), &allowed)?;
        let target = state.reset_target.clone().unwrap_or_else(|| {
            format!(
                "{}/Actions/ComputerSystem.Reset",
                self.system.trim_end_matches('/')
            )
        });
        let body = json!({ "ResetType": reset.as_str() });
        let attempts = self.transport.retry().attempts.max(1);
        let mut last = String::new();
        for attempt in 0..attempts {
            let reply = self
                .transport
                .request(Method::Post, &target, Some(&body), None)?;
            match reply.status {
                200 | 204 => return Ok(()),
                202 => return self.follow(&reply, Duration::from_secs(120)),
                409 => {
                    last = reply.message();
                    let power = self.system()?.power;
                    if already(reset, &power) {
                        tracing::info!(bmc = %self.url(), reset = reset.as_str(), %power, "409, and the machine is already as asked");
                        return Ok(());
                    }
                    let wait = self.transport.retry().wait(attempt);
                    tracing::info!(bmc = %self.url(), reset = reset.as_str(), ?wait, "reset refused with 409; retrying");
                    std::thread::sleep(wait);
                }
                status => return Err(self.refused("POST", status, &reply)),
            }
        }
        Err(Error::Conflict {
            url: self.url().to_owned(),
            reset: reset.as_str().to_owned(),
            attempts,
            message: last,
        })
    }

    /// Polls the power state until it is `want`, or `timeout`.
    pub fn wait_power(&mut self, want: PowerState, timeout: Duration) -> Result<(), Error> {
        let started = Instant::now();
        loop {
            let power = self.system()?.power;
            if power == want {
                return Ok(());
            }
            if started.elapsed() >= timeout {
                return Err(Error::Timeout {
                    url: self.url().to_owned(),
                    what: format!("power state {want}"),
                    waited: timeout,
                    last: power.to_string(),
                });
            }
            std::thread::sleep(self.poll_interval);
        }
    }

    /// Powers the machine off (hard) and waits until the BMC says it is off: the fence before
    /// its server is given to another account.
    pub fn power_off(&mut self, timeout: Duration) -> Result<(), Error> {
        if self.system()?.power == PowerState::Off {
            return Ok(());
        }
        self.reset(ResetType::ForceOff)?;
        self.wait_power(PowerState::Off, timeout)
    }

    /// Powers the machine on and waits until the BMC says it is on.
    pub fn power_on(&mut self, timeout: Duration) -> Result<(), Error> {
        let state = self.system()?;
        if state.power == PowerState::On {
            return Ok(());
        }
        let on = match &state.reset_types_allowed {
            Some(allowed) if !allowed.iter().any(|kind| kind == "On") => ResetType::ForceOn,
            _ => ResetType::On,
        };
        self.reset(on)?;
        self.wait_power(PowerState::On, timeout)
    }

    /// Off, then on, each waited for: unlike a restart, both halves show in the power state,
    /// so the cycle is verified and the Off is evidence that the old image stopped.
    pub fn power_cycle(&mut self, timeout: Duration) -> Result<(), Error> {
        self.power_off(timeout)?;
        self.power_on(timeout)
    }

    /// Ends the session (BMCs have few session slots); best effort.
    pub fn logout(&mut self) {
        self.transport.logout();
    }

    fn get(&mut self, path: &str) -> Result<Reply, Error> {
        let reply = self.transport.request(Method::Get, path, None, None)?;
        if reply.status != 200 {
            return Err(self.refused("GET", reply.status, &reply));
        }
        Ok(reply)
    }

    fn follow(&mut self, reply: &Reply, timeout: Duration) -> Result<(), Error> {
        match &reply.location {
            Some(location) => task::follow(&mut self.transport, location, timeout),
            // 202 without a monitor: the caller's read-back is the only check there is.
            None => Ok(()),
        }
    }

    fn action_info_reset_types(&mut self, info: &str) -> Result<Option<Vec<String>>, Error> {
        let reply = self.get(info)?;
        Ok(reply.body["Parameters"].as_array().and_then(|parameters| {
            parameters
                .iter()
                .find(|parameter| parameter["Name"] == "ResetType")
                .and_then(|parameter| strings(&parameter["AllowableValues"]))
        }))
    }

    fn allowed(
        &self,
        field: &'static str,
        value: &str,
        allowed: &Option<Vec<String>>,
    ) -> Result<(), Error> {
        match allowed {
            Some(allowed) if !allowed.iter().any(|item| item == value) => Err(Error::NotAllowed {
                url: self.url().to_owned(),
                field,
                value: value.to_owned(),
                allowed: allowed.clone(),
            }),
            _ => Ok(()),
        }
    }

    fn refused(&self, method: &'static str, status: u16, reply: &Reply) -> Error {
        Error::Refused {
            url: self.url().to_owned(),
            method,
            status,
            message: reply.message(),
        }
    }
}

impl Drop for Bmc {
    fn drop(&mut self) {
        self.logout();
    }
}

/// Whether the machine is already as `reset` would leave it (a 409 then costs nothing).
fn already(reset: ResetType, power: &PowerState) -> bool {
    match reset {
        ResetType::On | ResetType::ForceOn => *power == PowerState::On,
        ResetType::ForceOff | ResetType::GracefulShutdown => *power == PowerState::Off,
        ResetType::ForceRestart | ResetType::PushPowerButton => false,
    }
}

fn expect_json(transport: &mut Transport, path: &str) -> Result<Value, Error> {
    let reply = transport.request(Method::Get, path, None, None)?;
    if reply.status != 200 || !reply.body.is_object() {
        return Err(Error::Invalid {
            url: transport.url().to_owned(),
            path: path.to_owned(),
            detail: format!(
                "{} and {}: is this a Redfish service?",
                reply.status,
                if reply.body.is_object() {
                    "a JSON object"
                } else {
                    "no JSON object"
                }
            ),
        });
    }
    Ok(reply.body)
}

fn members(transport: &mut Transport, collection: &str) -> Result<Vec<String>, Error> {
    let body = expect_json(transport, collection)?;
    Ok(body["Members"]
        .as_array()
        .map(|members| {
            members
                .iter()
                .filter_map(|member| member["@odata.id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default())
}

/// The system whose NICs include `mac`; with no MAC, the only system there is.
fn pick_system(
    transport: &mut Transport,
    systems: &[String],
    mac: Option<&str>,
) -> Result<String, Error> {
    let discovery = |detail: String| Error::Discovery {
        url: transport.url().to_owned(),
        detail,
    };
    let Some(mac) = mac else {
        return match systems {
            [only] => Ok(only.clone()),
            [] => Err(discovery("the Systems collection is empty".to_owned())),
            many => Err(discovery(format!(
                "it serves {} systems ({}); give the machine's mac to pick one",
                many.len(),
                many.join(", ")
            ))),
        };
    };
    let wanted = normal_mac(mac);
    let mut seen = Vec::new();
    for system in systems {
        let body = expect_json(transport, system)?;
        let Some(interfaces) = body["EthernetInterfaces"]["@odata.id"].as_str() else {
            continue;
        };
        for interface in members(transport, interfaces)? {
            let nic = expect_json(transport, &interface)?;
            for field in ["MACAddress", "PermanentMACAddress"] {
                if let Some(found) = nic[field].as_str() {
                    if normal_mac(found) == wanted {
                        return Ok(system.clone());
                    }
                    seen.push(format!("{system}: {found}"));
                }
            }
        }
    }
    seen.dedup();
    Err(Error::Discovery {
        url: transport.url().to_owned(),
        detail: format!(
            "no system has a NIC with MAC {mac}; seen: {}",
            if seen.is_empty() {
                "(no MACs)".to_owned()
            } else {
                seen.join(", ")
            }
        ),
    })
}
