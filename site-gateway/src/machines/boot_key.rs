//! The key behind boot tokens. A machine's boot script carries a token for its server and
//! the re-image's epoch; its node agent registers with it, and only the gateway that holds
//! the key could have made it. The key lives beside the journal (mode 0600) so that a
//! restarted gateway still accepts the machines that booted before it went down.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use leasehold_federation::ids::{Epoch, ServerId, SiteId};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

#[derive(Debug, thiserror::Error)]
pub enum BootKeyError {
    #[error("boot key {path}: {detail}")]
    File { path: PathBuf, detail: String },
}

pub struct BootKey {
    key: hmac::Key,
    site: SiteId,
}

impl BootKey {
    /// Reads the key at `path`, or makes one there (32 random bytes, mode 0600).
    pub fn load_or_create(path: &Path, site: &SiteId) -> Result<BootKey, BootKeyError> {
        let fail = |detail: String| BootKeyError::File {
            path: path.to_path_buf(),
            detail,
        };
        let bytes = match std::fs::read(path) {
            Ok(bytes) => {
                let mode = std::fs::metadata(path)
                    .map_err(|error| fail(error.to_string()))?
                    .permissions()
                    .mode();
                if mode & 0o077 != 0 {
                    return Err(fail(format!(
                        "has mode {:o}; it must be readable by its owner only (chmod 600)",
                        mode & 0o777
                    )));
                }
                if bytes.len() != 32 {
                    return Err(fail(format!(
                        "holds {} bytes, not 32; remove it to make a new one (machines booting now would then be refused)",
                        bytes.len()
                    )));
                }
                bytes
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let mut bytes = vec![0u8; 32];
                SystemRandom::new()
                    .fill(&mut bytes)
                    .map_err(|_| fail("no randomness from the system".to_owned()))?;
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(|error| fail(format!("cannot create it: {error}")))?;
                file.write_all(&bytes)
                    .and_then(|()| file.sync_all())
                    .map_err(|error| fail(format!("cannot write it: {error}")))?;
                bytes
            }
            Err(error) => return Err(fail(format!("cannot read it: {error}"))),
        };
        Ok(BootKey {
            key: hmac::Key::new(hmac::HMAC_SHA256, &bytes),
            site: site.clone(),
        })
    }

    fn message(&self, server: &ServerId, epoch: Epoch) -> String {
        format!("leasehold-boot/1|{}|{server}|{}", self.site, epoch.value())
    }

    /// The token of `server`'s re-image under `epoch`: URL-safe, no padding, so it sits in a
    /// kernel command line as it is.
    pub fn token(&self, server: &ServerId, epoch: Epoch) -> String {
        let tag = hmac::sign(&self.key, self.message(server, epoch).as_bytes());
        URL_SAFE_NO_PAD.encode(tag.as_ref())
    }

    /// Whether `token` is the one this key gives `server` under `epoch` (in constant time).
    pub fn verify(&self, server: &ServerId, epoch: Epoch, token: &str) -> bool {
        let Ok(tag) = URL_SAFE_NO_PAD.decode(token) else {
            return false;
        };
        hmac::verify(&self.key, self.message(server, epoch).as_bytes(), &tag).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_verifies_for_its_server_and_epoch_only_and_the_key_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("boot.key");
        let site = SiteId::parse("site-a").unwrap();
        let key = BootKey::load_or_create(&path, &site).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let m1 = ServerId::parse("m1").unwrap();
        let m2 = ServerId::parse("m2").unwrap();
        let e3 = Epoch::NONE.next().next().next();
        let token = key.token(&m1, e3);
        assert!(key.verify(&m1, e3, &token));
        assert!(!key.verify(&m1, e3.next(), &token));
        assert!(!key.verify(&m2, e3, &token));
        assert!(!key.verify(&m1, e3, "not-a-token"));
        let again = BootKey::load_or_create(&path, &site).unwrap();
        assert!(again.verify(&m1, e3, &token));
    }

    #[test]
    fn a_key_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("boot.key");
        std::fs::write(&path, [7u8; 32]).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = BootKey::load_or_create(&path, &SiteId::parse("site-a").unwrap())
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("chmod 600"), "{error}");
    }
}
