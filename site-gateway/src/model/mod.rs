//! The gateway's decision core: plain state and decisions, no actors, no I/O, no clock of
//! its own (time comes in as [`Millis`]). The actors in `crate::actors` carry messages to
//! and from it; tests, the virtual-time replay and `leasehold bench decide` run it as is.

pub mod arbiter;
pub mod core;
pub mod demand;
pub mod effects;
pub mod election;
#[cfg(test)]
pub(crate) mod fixtures;
pub mod ownership;
pub mod peers;
pub mod site;

use std::ops::{Add, Sub};
use std::time::Duration;

/// A point on the gateway's monotonic clock, in milliseconds since the gateway started.
/// Never persisted: after a restart, recovered leases get a fresh TTL from the new clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Millis(pub u64);

impl Millis {
    pub fn since(self, earlier: Millis) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Millis {
    type Output = Millis;
    fn add(self, duration: Duration) -> Millis {
        let millis = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        Millis(self.0.saturating_add(millis))
    }
}

impl Sub<Duration> for Millis {
    type Output = Millis;
    fn sub(self, duration: Duration) -> Millis {
        let millis = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        Millis(self.0.saturating_sub(millis))
    }
}

/// Architecture invariant: the core is plain Rust. No actors, no async runtime, no clock
/// reads, no I/O; `now` comes in as [`Millis`]. This test reads the core's sources and
/// fails on a use of any of them, so the rule cannot drift silently.
#[cfg(test)]
mod architecture {
    use std::path::Path;

    const FORBIDDEN: &[&str] = &[
        "actix",
        "tokio",
        "Instant::now",
        "SystemTime",
        "std::fs",
        "std::net",
        "std::thread",
        "redb",
    ];

    fn sources(dir: &Path, found: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("model sources are readable") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                sources(&path, found);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                found.push(path);
            }
        }
    }

    #[test]
    fn the_core_has_no_actors_no_io_and_no_clock() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/model");
        let mut files = Vec::new();
        sources(&dir, &mut files);
        assert!(files.len() > 3, "found only {files:?}");
        let mut offences = Vec::new();
        for file in files {
            let text = std::fs::read_to_string(&file).expect("readable source");
            for (number, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or_default();
                for word in FORBIDDEN {
                    // This file names them in FORBIDDEN and in this test only.
                    if code.contains(word) && !file.ends_with("model/mod.rs") {
                        offences.push(format!("{}:{}: {word}", file.display(), number + 1));
                    }
                }
            }
        }
        assert!(
            offences.is_empty(),
            "the core must stay plain: {offences:#?}"
        );
    }
}
