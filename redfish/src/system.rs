//! What the client reads of a `ComputerSystem`, and the values it writes.

use std::fmt;

use serde_json::Value;

/// `PowerState` as Redfish names it; anything else a BMC says is kept as it said it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PowerState {
    On,
    Off,
    PoweringOn,
    PoweringOff,
    Paused,
    Other(String),
}

impl PowerState {
    fn parse(text: Option<&str>) -> PowerState {
        match text {
            Some("On") => PowerState::On,
            Some("Off") => PowerState::Off,
            Some("PoweringOn") => PowerState::PoweringOn,
            Some("PoweringOff") => PowerState::PoweringOff,
            Some("Paused") => PowerState::Paused,
            Some(other) => PowerState::Other(other.to_owned()),
            None => PowerState::Other("(not given)".to_owned()),
        }
    }
}

impl fmt::Display for PowerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PowerState::On => f.write_str("On"),
            PowerState::Off => f.write_str("Off"),
            PowerState::PoweringOn => f.write_str("PoweringOn"),
            PowerState::PoweringOff => f.write_str("PoweringOff"),
            PowerState::Paused => f.write_str("Paused"),
            PowerState::Other(other) => f.write_str(other),
        }
    }
}

/// `ComputerSystem.Reset`'s `ResetType`s the client uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResetType {
    On,
    ForceOn,
    ForceOff,
    ForceRestart,
    GracefulShutdown,
    PushPowerButton,
}

impl ResetType {
    pub fn as_str(self) -> &'static str {
        match self {
            ResetType::On => "On",
            ResetType::ForceOn => "ForceOn",
            ResetType::ForceOff => "ForceOff",
            ResetType::ForceRestart => "ForceRestart",
            ResetType::GracefulShutdown => "GracefulShutdown",
            ResetType::PushPowerButton => "PushPowerButton",
        }
    }
}

/// Where the next boot goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BootTarget {
    /// PXE (with iPXE chain-loaded by DHCP to the site's boot service).
    Pxe,
    /// UEFI HTTP boot straight from a URL (the boot service's script).
    UefiHttp(String),
}

impl BootTarget {
    pub fn name(&self) -> &'static str {
        match self {
            BootTarget::Pxe => "Pxe",
            BootTarget::UefiHttp(_) => "UefiHttp",
        }
    }
}

/// One read of a machine's `ComputerSystem`.
#[derive(Clone, Debug)]
pub struct SystemState {
    /// The system's `@odata.id`.
    pub path: String,
    pub power: PowerState,
    pub boot_enabled: Option<String>,
    pub boot_target: Option<String>,
    /// `None` where the BMC does not say (then any target is tried, and read back).
    pub boot_targets_allowed: Option<Vec<String>>,
    pub boot_mode: Option<String>,
    pub boot_modes_allowed: Option<Vec<String>>,
    pub http_boot_uri: Option<String>,
    /// `Actions.#ComputerSystem.Reset.target`.
    pub reset_target: Option<String>,
    pub reset_types_allowed: Option<Vec<String>>,
    /// The action's `@Redfish.ActionInfo`, where the allowed types live on some BMCs.
    pub reset_action_info: Option<String>,
    /// The `ETag` header, or `@odata.etag` where a BMC gives only that.
    pub etag: Option<String>,
    /// `EthernetInterfaces`' link.
    pub ethernet_interfaces: Option<String>,
}

pub(crate) fn strings(value: &Value) -> Option<Vec<String>> {
    value.as_array().map(|items| {
        items
            .iter()
            .filter_map(|item| item.as_str().map(str::to_owned))
            .collect()
    })
}

impl SystemState {
    pub(crate) fn parse(path: &str, body: &Value, etag: Option<String>) -> SystemState {
        let boot = &body["Boot"];
        let text = |value: &Value| value.as_str().map(str::to_owned);
        let reset = &body["Actions"]["#ComputerSystem.Reset"];
        SystemState {
            path: text(&body["@odata.id"]).unwrap_or_else(|| path.to_owned()),
            power: PowerState::parse(body["PowerState"].as_str()),
            boot_enabled: text(&boot["BootSourceOverrideEnabled"]),
            boot_target: text(&boot["BootSourceOverrideTarget"]),
            boot_targets_allowed: strings(
                &boot["BootSourceOverrideTarget@Redfish.AllowableValues"],
            ),
            boot_mode: text(&boot["BootSourceOverrideMode"]),
            boot_modes_allowed: strings(&boot["BootSourceOverrideMode@Redfish.AllowableValues"]),
            http_boot_uri: text(&boot["HttpBootUri"]).filter(|uri| !uri.is_empty()),
            reset_target: text(&reset["target"]),
            reset_types_allowed: strings(&reset["ResetType@Redfish.AllowableValues"]),
            reset_action_info: text(&reset["@Redfish.ActionInfo"]),
            etag: etag.or_else(|| text(&body["@odata.etag"])),
            ethernet_interfaces: text(&body["EthernetInterfaces"]["@odata.id"]),
        }
    }
}

/// A MAC in one spelling (lower case, colons), whatever the BMC or the config wrote.
pub(crate) fn normal_mac(mac: &str) -> String {
    let hex: String = mac
        .chars()
        .filter(char::is_ascii_hexdigit)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    hex.as_bytes()
        .chunks(2)
        .map(|pair| String::from_utf8_lossy(pair).into_owned())
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_system_resource_is_read_with_its_allowed_values_and_etag() {
        let body = serde_json::json!({
            "@odata.id": "/redfish/v1/Systems/abc",
            "@odata.etag": "W/\"body\"",
            "PowerState": "On",
            "Boot": {
                "BootSourceOverrideEnabled": "Once",
                "BootSourceOverrideTarget": "Pxe",
                "BootSourceOverrideTarget@Redfish.AllowableValues": ["None", "Pxe", "Hdd"],
                "BootSourceOverrideMode": "UEFI",
                "HttpBootUri": ""
            },
            "Actions": {"#ComputerSystem.Reset": {
                "target": "/redfish/v1/Systems/abc/Actions/ComputerSystem.Reset",
                "@Redfish.ActionInfo": "/redfish/v1/Systems/abc/ResetActionInfo"
            }},
            "EthernetInterfaces": {"@odata.id": "/redfish/v1/Systems/abc/EthernetInterfaces"}
        });
        let state = SystemState::parse("/x", &body, Some("\"header\"".to_owned()));
        assert_eq!(state.path, "/redfish/v1/Systems/abc");
        assert_eq!(state.power, PowerState::On);
        assert_eq!(
            state.boot_targets_allowed,
            Some(vec!["None".into(), "Pxe".into(), "Hdd".into()])
        );
        assert_eq!(state.http_boot_uri, None);
        assert_eq!(state.reset_types_allowed, None);
        assert_eq!(
            state.reset_action_info.as_deref(),
            Some("/redfish/v1/Systems/abc/ResetActionInfo")
        );
        // The header wins over the body's: it is what If-Match is compared with.
        assert_eq!(state.etag.as_deref(), Some("\"header\""));
        let state = SystemState::parse("/x", &body, None);
        assert_eq!(state.etag.as_deref(), Some("W/\"body\""));
    }

    #[test]
    fn macs_compare_in_one_spelling() {
        assert_eq!(normal_mac("00-5C-52-31-3A-9C"), "00:5c:52:31:3a:9c");
        assert_eq!(normal_mac("005c.5231.3a9c"), "00:5c:52:31:3a:9c");
    }
}
