//! The demo's work dir (certificates, journals, node work dirs, logs): the one given, or a
//! temporary one removed at the end unless kept (--keep, a failure, an interrupt).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// The demo's work dir: the one given (kept), or a fresh temporary one (removed unless
/// --keep).
pub struct Work {
    pub path: PathBuf,
    temporary: Option<tempfile::TempDir>,
}

impl Work {
    pub fn prepare(given: Option<&Path>, keep: bool) -> anyhow::Result<Work> {
        match given {
            Some(path) => {
                // An old journal or event log in the way would be recovered or checked as
                // if this run had written it.
                if let Ok(mut entries) = std::fs::read_dir(path)
                    && entries.next().is_some()
                {
                    bail!(
                        "the work dir {} is not empty; give a new or empty one (an old journal or event log would mix with this run's)",
                        path.display()
                    );
                }
                std::fs::create_dir_all(path)
                    .with_context(|| format!("cannot create {}", path.display()))?;
                let path = std::path::absolute(path)
                    .with_context(|| format!("cannot resolve {}", path.display()))?;
                Ok(Work {
                    path,
                    temporary: None,
                })
            }
            None => {
                let dir = tempfile::Builder::new()
                    .prefix("leasehold-demo-")
                    .tempdir()
                    .context("cannot create a temporary work dir")?;
                let path = dir.path().to_path_buf();
                let temporary = if keep {
                    // Keeping it is the point of --keep.
                    let _ = dir.keep();
                    None
                } else {
                    Some(dir)
                };
                Ok(Work { path, temporary })
            }
        }
    }

    /// After a failure the logs are what a person needs, so nothing is removed.
    pub fn keep_after_failure(mut self) {
        if let Some(dir) = self.temporary.take() {
            let _ = dir.keep();
        }
    }

    pub fn finish(self) {
        match self.temporary {
            Some(dir) => {
                let path = dir.path().display().to_string();
                match dir.close() {
                    Ok(()) => println!("removed the work dir {path} (--keep keeps it)"),
                    Err(error) => eprintln!("cannot remove the work dir {path}: {error}"),
                }
            }
            None => println!("work dir kept: {}", self.path.display()),
        }
    }
}
