//! A standby's view of its site's store (docs/ha.md): it reads the journal from etcd every
//! [`READ_EVERY`], as it would to take over, and says what it read, in its `/ready` answer
//! and on its `/metrics`. A standby that cannot read the store is known before it is
//! needed; the gateway that takes over reads the store afresh all the same, since what
//! it acts on must be the latest.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use leasehold_etcd::Etcd;
use leasehold_federation::ids::SiteId;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use super::EtcdJournal;

/// How often a standby reads its site's store.
pub const READ_EVERY: Duration = Duration::from_secs(2);

/// What the last read found.
#[derive(Debug, Clone, Default)]
struct Read {
    /// When the last read that worked ended, and the leases it found.
    ok: Option<(Instant, usize)>,
    /// Why the last read failed, if the last read failed.
    error: Option<String>,
}

/// The standby's view, shared by its reader and its admin address.
#[derive(Debug, Clone, Default)]
pub struct WarmView(Arc<Mutex<Read>>);

impl WarmView {
    fn lock(&self) -> std::sync::MutexGuard<'_, Read> {
        // Each update is whole; a panic elsewhere leaves nothing half-set.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Reads the store every [`READ_EVERY`], for ever (the task is aborted when the
    /// gateway acts).
    pub async fn keep_reading(self, etcd: Arc<Etcd>, site: SiteId) {
        loop {
            let (etcd, name) = (etcd.clone(), site.clone());
            let read = tokio::task::spawn_blocking(move || EtcdJournal::load(etcd, &name)).await;
            {
                let mut view = self.lock();
                match read {
                    Ok(Ok((_, recovered))) => {
                        view.ok = Some((Instant::now(), recovered.leases.len()));
                        view.error = None;
                    }
                    Ok(Err(error)) => view.error = Some(error.to_string()),
                    Err(error) => view.error = Some(error.to_string()),
                }
            }
            tokio::time::sleep(READ_EVERY).await;
        }
    }

    /// "its view of the store: 3 leases, read 0.4 s ago", or why it has none.
    pub fn words(&self) -> String {
        let view = self.lock();
        match (&view.error, view.ok) {
            (Some(error), _) => format!("it cannot read the site's store: {error}"),
            (None, Some((at, leases))) => format!(
                "its view of the site's store: {leases} leases, read {:.1} s ago",
                at.elapsed().as_secs_f64()
            ),
            (None, None) => "it has not read the site's store yet".to_owned(),
        }
    }

    /// The standby's `/metrics`: that it does not act, and its view of the store.
    pub fn metrics(&self, site: &SiteId) -> Result<String, std::fmt::Error> {
        let labels = [("site".into(), site.to_string().into())];
        let mut registry = Registry::with_prefix_and_labels("leasehold", labels.into_iter());
        let active = Gauge::<i64>::default();
        registry.register(
            "gateway_active",
            "1 while this gateway acts for its site; 0: a standby",
            active.clone(),
        );
        let view = self.lock().clone();
        if let Some((at, leases)) = view.ok {
            let age = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
            age.set(at.elapsed().as_secs_f64());
            registry.register_with_unit(
                "standby_store_read_age",
                "Time since this standby last read its site's store (every 2 s while it can)",
                Unit::Seconds,
                age,
            );
            let count = Gauge::<i64>::default();
            count.set(i64::try_from(leases).unwrap_or(i64::MAX));
            registry.register(
                "standby_store_leases",
                "Leases in the site's store at this standby's last read",
                count,
            );
        }
        let mut text = String::new();
        prometheus_text::encode(&mut text, &registry)?;
        Ok(text)
    }
}
