//! The load on each account goes where its customers would: to the endpoints its owner's
//! gateway lists. That is its home; after a `--kill-site`, the site that took the account
//! over, which the demo learns from that site's `/v1/accounts` (`owner` itself). Moving the
//! load stops the account's load thread and starts one at the new owner with the same rate;
//! the counts run on across the move.

use std::net::SocketAddr;

use anyhow::bail;
use leasehold_chaos_tests::harness::load::{LoadCounts, LoadDriver};

use super::federation::SiteHandle;
use super::table::SiteSample;

/// An account's load moved to a new owner, `at_ms` after the load began.
#[derive(Debug, Clone, PartialEq)]
pub struct Followed {
    pub account: String,
    pub from: String,
    pub to: String,
    pub at_ms: u64,
}

struct AccountLoad {
    /// The site whose gateway lists the endpoints now.
    site: String,
    driver: LoadDriver,
    /// What the drivers before this one counted.
    before: LoadCounts,
}

impl AccountLoad {
    fn counts(&self) -> LoadCounts {
        add(self.before, self.driver.counts())
    }
}

/// One load thread per account of the schedule.
pub struct Loads {
    loads: Vec<AccountLoad>,
    pub followed: Vec<Followed>,
}

impl Loads {
    /// Each account's load at its home, at `rate(account)`.
    pub fn start(
        sites: &[SiteHandle],
        accounts: &[(&str, &str)],
        rate: impl Fn(&str) -> f64,
    ) -> anyhow::Result<Loads> {
        let mut loads = Vec::new();
        for (home, account) in accounts {
            let Some(site) = sites.iter().find(|s| s.name == *home) else {
                bail!("the schedule drives {account} at {home}, which the demo did not start");
            };
            let driver = LoadDriver::start(site.admin, account, rate(account))
                .map_err(anyhow::Error::msg)?;
            loads.push(AccountLoad {
                site: site.name.clone(),
                driver,
                before: LoadCounts::default(),
            });
        }
        Ok(Loads {
            loads,
            followed: Vec::new(),
        })
    }

    pub fn set_rates(&self, rates: &[(String, f64)]) {
        for load in &self.loads {
            if let Some((_, rate)) = rates.iter().find(|(name, _)| name == load.driver.account()) {
                load.driver.set_rate(*rate);
            }
        }
    }

    /// Moves each account's load to the site that says it owns the account, if that is
    /// another site than the one it goes to now; returns the moves made.
    pub fn follow(
        &mut self,
        sample: &[SiteSample],
        sites: &[SiteHandle],
        at_ms: u64,
    ) -> anyhow::Result<Vec<Followed>> {
        let mut moved = Vec::new();
        for load in &mut self.loads {
            let account = load.driver.account().to_owned();
            let Some(owner) = owner_of(sample, &account) else {
                continue;
            };
            if owner == load.site {
                continue;
            }
            let Some(admin) = sites.iter().find(|s| s.name == owner).map(|s| s.admin) else {
                continue;
            };
            moved.push(load.move_to(&owner, admin, at_ms)?);
        }
        self.followed.extend(moved.iter().cloned());
        Ok(moved)
    }

    pub fn counts(&self) -> Vec<(String, LoadCounts)> {
        self.loads
            .iter()
            .map(|load| (load.driver.account().to_owned(), load.counts()))
            .collect()
    }

    /// Stops every load thread; the final counts per account.
    pub fn stop(self) -> Vec<(String, LoadCounts)> {
        self.loads
            .into_iter()
            .map(|load| {
                let account = load.driver.account().to_owned();
                (account, add(load.before, load.driver.stop()))
            })
            .collect()
    }
}

impl AccountLoad {
    fn move_to(&mut self, owner: &str, admin: SocketAddr, at_ms: u64) -> anyhow::Result<Followed> {
        let account = self.driver.account().to_owned();
        let driver =
            LoadDriver::start(admin, &account, self.driver.rate()).map_err(anyhow::Error::msg)?;
        let old = std::mem::replace(&mut self.driver, driver);
        self.before = add(self.before, old.stop());
        let followed = Followed {
            account,
            from: std::mem::replace(&mut self.site, owner.to_owned()),
            to: owner.to_owned(),
            at_ms,
        };
        Ok(followed)
    }
}

/// The site whose own `/v1/accounts` names it the owner of `account`, in `sample`.
pub fn owner_of(sample: &[SiteSample], account: &str) -> Option<String> {
    sample.iter().find_map(|site| {
        let state = site.state.as_ref().ok()?;
        state
            .accounts
            .iter()
            .any(|a| a["name"] == account && a["owner"] == site.site.as_str())
            .then(|| site.site.clone())
    })
}

fn add(a: LoadCounts, b: LoadCounts) -> LoadCounts {
    LoadCounts {
        sent: a.sent + b.sent,
        ok: a.ok + b.ok,
        failed: a.failed + b.failed,
    }
}
