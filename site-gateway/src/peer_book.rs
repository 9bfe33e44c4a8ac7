//! The addresses of the peers this site still talks to, kept beside the journal
//! (`peers.json` in the state directory). A site removed from the config stays a peer
//! until the membership step that removes it is taken (docs/ownership.md, "Members"); a
//! gateway restarted in between has that site in its journal's members but no longer in
//! its config, and without this file would have no address to reach it at, and would
//! wait for its answer for ever. The file is a cache of config addresses, not a record
//! of decisions: a missing one is empty, and one that cannot be read is reported and
//! then treated as empty.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use leasehold_federation::addr::HostPort;
use leasehold_federation::ids::SiteId;

#[derive(Debug, thiserror::Error)]
pub enum PeerBookError {
    #[error("cannot read the peer addresses {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the peer addresses {path} are not valid JSON of site names to host:port: {detail}")]
    Malformed { path: PathBuf, detail: String },
    #[error("cannot write the peer addresses {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Peer addresses by site. Shared between the actor that changes them and the blocking
/// pool that writes them: [`PeerBook::set`] is memory only, [`PeerBook::save`] the file.
#[derive(Debug, Default)]
pub struct PeerBook {
    path: Option<PathBuf>,
    addrs: Mutex<BTreeMap<SiteId, HostPort>>,
    /// One write at a time, each of the addresses as they are when it runs: the last
    /// write leaves the newest.
    writing: Mutex<()>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl PeerBook {
    pub fn file_in(state: &Path) -> PathBuf {
        state.join("peers.json")
    }

    /// The book kept at `path`; empty if there is no file yet.
    pub fn load(path: PathBuf) -> Result<PeerBook, PeerBookError> {
        let addrs = match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map_err(|error| PeerBookError::Malformed {
                path: path.clone(),
                detail: error.to_string(),
            })?,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(source) => return Err(PeerBookError::Read { path, source }),
        };
        Ok(PeerBook {
            path: Some(path),
            addrs: Mutex::new(addrs),
            writing: Mutex::new(()),
        })
    }

    /// A book kept at `path` that starts empty (the one at `path` could not be read).
    pub fn empty_at(path: PathBuf) -> PeerBook {
        PeerBook {
            path: Some(path),
            ..PeerBook::default()
        }
    }

    pub fn get(&self, site: &SiteId) -> Option<HostPort> {
        lock(&self.addrs).get(site).cloned()
    }

    /// Keeps exactly `addrs`; whether they changed (then [`Self::save`] them).
    pub fn set(&self, addrs: BTreeMap<SiteId, HostPort>) -> bool {
        let mut kept = lock(&self.addrs);
        let changed = *kept != addrs;
        *kept = addrs;
        changed
    }

    /// Writes the addresses as they are now, atomically (a crash leaves the old file or
    /// the new one). Blocking: not for an actor's thread.
    pub fn save(&self) -> Result<(), PeerBookError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let _one_at_a_time = lock(&self.writing);
        let text = serde_json::to_string_pretty(&*lock(&self.addrs))
            .map_err(std::io::Error::other)
            .map_err(|source| PeerBookError::Write {
                path: path.clone(),
                source,
            })?;
        let write = || -> std::io::Result<()> {
            let temporary = path.with_extension("json.new");
            std::fs::write(&temporary, text + "\n")?;
            std::fs::File::open(&temporary)?.sync_all()?;
            std::fs::rename(&temporary, path)
        };
        write().map_err(|source| PeerBookError::Write {
            path: path.clone(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(name: &str) -> SiteId {
        SiteId::parse(name).unwrap()
    }

    #[test]
    fn addresses_survive_a_reload_and_a_missing_or_bad_file_is_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let path = PeerBook::file_in(dir.path());
        let book = PeerBook::load(path.clone()).unwrap();
        assert_eq!(book.get(&site("site-d")), None);
        let addr: HostPort = "gw.site-d.example.net:7204".parse().unwrap();
        let addrs = BTreeMap::from([(site("site-d"), addr.clone())]);
        assert!(book.set(addrs.clone()));
        assert!(!book.set(addrs), "the same addresses are no change");
        book.save().unwrap();
        let again = PeerBook::load(path.clone()).unwrap();
        assert_eq!(again.get(&site("site-d")), Some(addr));

        std::fs::write(&path, "{\"site-d\": 7}").unwrap();
        let error = PeerBook::load(path.clone()).unwrap_err().to_string();
        assert!(
            error.contains("peers.json") && error.contains("not valid"),
            "{error}"
        );
    }
}
