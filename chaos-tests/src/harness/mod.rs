//! The pieces a test or the demo assembles a site from.

pub mod admin;
pub mod bmc;
pub mod browser;
pub mod doc_shape;
pub mod doc_walk;
pub mod etcd;
pub mod evidence;
pub mod federation;
pub mod hosts;
pub mod interrupt;
pub mod load;
pub mod machine_site;
pub mod machines;
pub mod onesite;
pub mod process;
pub mod site;
pub mod standby_federation;
pub mod standby_site;
pub mod sweep;
pub mod tagged;

use std::time::{Duration, Instant};

/// Polls `probe` until it returns `Some`, or fails after `timeout` saying what was waited
/// for and what `probe` last saw; fails at once when a signal asked the process to stop
/// ([`interrupt`]).
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Result<T, String>,
) -> Result<T, String> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match probe() {
            Ok(value) => return Ok(value),
            Err(seen) => seen,
        };
        if let Some(signal) = interrupt::requested() {
            return Err(format!(
                "stopped waiting for {what}: {signal} asked to stop; last seen: {last}"
            ));
        }
        if Instant::now() >= deadline {
            return Err(format!("waited {timeout:?} for {what}; last seen: {last}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
