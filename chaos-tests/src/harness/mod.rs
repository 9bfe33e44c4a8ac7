//! The pieces a test or the demo assembles a site from.

pub mod admin;
pub mod evidence;
pub mod federation;
pub mod load;
pub mod onesite;
pub mod process;
pub mod site;

use std::time::{Duration, Instant};

/// Polls `probe` until it returns `Some`, or fails after `timeout` saying what was waited
/// for and what `probe` last saw.
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
        if Instant::now() >= deadline {
            return Err(format!("waited {timeout:?} for {what}; last seen: {last}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
