//! The fleet's synthetic load: a deterministic function of the account, the seed and the
//! time since the fleet started, so that two runs with the same seed report the same curve
//! and a scale test can be repeated. Also the seeded draws of simulated start times.

use std::collections::BTreeMap;
use std::f64::consts::TAU;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use leasehold_federation::ids::{AccountId, Epoch, ServerId};

/// How far a sine load swings around its mean: ±60 %, enough to make an account's demand
/// cross its `target_load` both ways in a demo, never below zero.
const SINE_AMPLITUDE: f64 = 0.6;

/// `--load`: how much load each simulated server reports in its heartbeats.
#[derive(Debug, Clone, PartialEq)]
pub enum LoadModel {
    /// `flat:VALUE`: every serving server reports VALUE.
    Flat { value: f64 },
    /// `sine:MEAN:PERIOD_S`: an account's total is
    /// `MEAN * (1 + 0.6 * sin(2π t / PERIOD + phase(account, seed)))`, split evenly across
    /// the fleet's servers that serve the account now.
    Sine { mean: f64, period: Duration },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadSpecError {
    #[error("`{spec}` is not a load model: use `flat:VALUE` or `sine:MEAN:PERIOD_S`")]
    Unknown { spec: String },
    #[error("`{spec}`: {what} must be a finite number >= 0, not `{value}`")]
    BadNumber {
        spec: String,
        what: &'static str,
        value: String,
    },
    #[error("`{spec}`: the period must be more than 0 seconds")]
    ZeroPeriod { spec: String },
}

impl FromStr for LoadModel {
    type Err = LoadSpecError;

    fn from_str(spec: &str) -> Result<LoadModel, LoadSpecError> {
        let number = |what: &'static str, value: &str| {
            value
                .parse::<f64>()
                .ok()
                .filter(|number| number.is_finite() && *number >= 0.0)
                .ok_or_else(|| LoadSpecError::BadNumber {
                    spec: spec.to_owned(),
                    what,
                    value: value.to_owned(),
                })
        };
        let parts: Vec<&str> = spec.split(':').collect();
        match parts.as_slice() {
            ["flat", value] => Ok(LoadModel::Flat {
                value: number("VALUE", value)?,
            }),
            ["sine", mean, period] => {
                let mean = number("MEAN", mean)?;
                let period = number("PERIOD_S", period)?;
                if period == 0.0 {
                    return Err(LoadSpecError::ZeroPeriod {
                        spec: spec.to_owned(),
                    });
                }
                Ok(LoadModel::Sine {
                    mean,
                    period: Duration::from_secs_f64(period),
                })
            }
            _ => Err(LoadSpecError::Unknown {
                spec: spec.to_owned(),
            }),
        }
    }
}

impl LoadModel {
    /// What one server of `account` reports at `elapsed` since the fleet started, when
    /// `sharing` of the fleet's servers (this one included) serve the account.
    pub fn server_load(
        &self,
        account: &AccountId,
        seed: u64,
        elapsed: Duration,
        sharing: usize,
    ) -> f64 {
        match self {
            LoadModel::Flat { value } => *value,
            LoadModel::Sine { mean, period } => {
                let phase = unit(mix(seed, hash_str(account.as_str()))) * TAU;
                let angle = TAU * elapsed.as_secs_f64() / period.as_secs_f64() + phase;
                let total = mean * (1.0 + SINE_AMPLITUDE * angle.sin());
                // `sharing` counts this server once it reports the account; before the
                // first census it may still be 0.
                total / sharing.max(1) as f64
            }
        }
    }
}

/// How many of the fleet's servers serve each account now: the sine model divides an
/// account's curve by it, and the status line prints it. Shared by every simulated server; a
/// server changes it only when what it serves changes, so the lock is rarely taken for
/// writing.
#[derive(Debug, Clone, Default)]
pub struct Census {
    serving: Arc<Mutex<BTreeMap<AccountId, usize>>>,
}

impl Census {
    /// A server stopped serving `from` (if any) and now serves `to` (if any).
    pub fn moved(&self, from: Option<&AccountId>, to: Option<&AccountId>) {
        let mut serving = self.lock();
        if let Some(from) = from
            && let Some(count) = serving.get_mut(from)
        {
            *count = count.saturating_sub(1);
            if *count == 0 {
                serving.remove(from);
            }
        }
        if let Some(to) = to {
            *serving.entry(to.clone()).or_default() += 1;
        }
    }

    pub fn count(&self, account: &AccountId) -> usize {
        self.lock().get(account).copied().unwrap_or(0)
    }

    pub fn snapshot(&self) -> BTreeMap<AccountId, usize> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<AccountId, usize>> {
        // The map holds plain counts, valid after any panic; and a panic is fatal anyway.
        self.serving
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The simulated start time of `server`'s workload for `epoch`: uniform in
/// `[start/2, 3·start/2)`, drawn from the seed, so that a run can be repeated and starts
/// are spread as real ones are.
pub fn start_delay(seed: u64, server: &ServerId, epoch: Epoch, start: Duration) -> Duration {
    let draw = unit(mix(mix(seed, hash_str(server.as_str())), epoch.value()));
    start.mul_f64(0.5 + draw)
}

/// FNV-1a: stable across Rust releases and platforms, unlike `DefaultHasher`, so a seed
/// means the same curve everywhere.
fn hash_str(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// splitmix64's finaliser over two words.
fn mix(a: u64, b: u64) -> u64 {
    let mut z = a ^ b.wrapping_add(0x9e37_79b9_7f4a_7c15).rotate_left(17);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A draw in [0, 1) from the top 53 bits.
fn unit(bits: u64) -> f64 {
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(name: &str) -> AccountId {
        AccountId::parse(name).unwrap()
    }

    #[test]
    fn specs_parse_and_bad_ones_say_why() {
        assert_eq!(
            "flat:1.5".parse::<LoadModel>(),
            Ok(LoadModel::Flat { value: 1.5 })
        );
        assert_eq!(
            "sine:10:60".parse::<LoadModel>(),
            Ok(LoadModel::Sine {
                mean: 10.0,
                period: Duration::from_secs(60)
            })
        );
        assert!(matches!(
            "wave:1".parse::<LoadModel>(),
            Err(LoadSpecError::Unknown { .. })
        ));
        assert!(matches!(
            "flat:-1".parse::<LoadModel>(),
            Err(LoadSpecError::BadNumber { what: "VALUE", .. })
        ));
        assert!(matches!(
            "sine:10:nan".parse::<LoadModel>(),
            Err(LoadSpecError::BadNumber {
                what: "PERIOD_S",
                ..
            })
        ));
        assert!(matches!(
            "sine:10:0".parse::<LoadModel>(),
            Err(LoadSpecError::ZeroPeriod { .. })
        ));
    }

    #[test]
    fn sine_is_deterministic_split_and_bounded() {
        let model = LoadModel::Sine {
            mean: 10.0,
            period: Duration::from_secs(60),
        };
        let shop = account("shop");
        for second in 0..120 {
            let at = Duration::from_secs(second);
            let whole = model.server_load(&shop, 7, at, 1);
            assert!((4.0..=16.0).contains(&whole), "{whole} at {second}s");
            assert_eq!(whole, model.server_load(&shop, 7, at, 1));
            let quarter = model.server_load(&shop, 7, at, 4);
            assert!((quarter * 4.0 - whole).abs() < 1e-9);
        }
        // One period later the curve repeats.
        let early = model.server_load(&shop, 7, Duration::from_secs(5), 1);
        let later = model.server_load(&shop, 7, Duration::from_secs(65), 1);
        assert!((early - later).abs() < 1e-9);
        // Accounts and seeds have their own phases.
        let at = Duration::from_secs(3);
        assert_ne!(
            model.server_load(&shop, 7, at, 1),
            model.server_load(&account("blog"), 7, at, 1)
        );
        assert_ne!(
            model.server_load(&shop, 7, at, 1),
            model.server_load(&shop, 8, at, 1)
        );
    }

    #[test]
    fn flat_ignores_sharing() {
        let model = LoadModel::Flat { value: 1.0 };
        assert_eq!(
            model.server_load(&account("shop"), 1, Duration::ZERO, 5),
            1.0
        );
    }

    #[test]
    fn start_delays_are_seeded_and_within_half_to_one_and_a_half() {
        let start = Duration::from_millis(30);
        let server = ServerId::parse("f1").unwrap();
        let mut epoch = Epoch::NONE;
        for _ in 0..200 {
            epoch = epoch.next();
            let delay = start_delay(1, &server, epoch, start);
            assert!(delay >= start / 2 && delay < start * 3 / 2, "{delay:?}");
            assert_eq!(delay, start_delay(1, &server, epoch, start));
        }
    }

    #[test]
    fn census_counts_moves() {
        let census = Census::default();
        let (shop, blog) = (account("shop"), account("blog"));
        census.moved(None, Some(&shop));
        census.moved(None, Some(&shop));
        census.moved(Some(&shop), Some(&blog));
        assert_eq!(census.count(&shop), 1);
        assert_eq!(census.count(&blog), 1);
        census.moved(Some(&shop), None);
        assert_eq!(census.snapshot().len(), 1);
    }
}
