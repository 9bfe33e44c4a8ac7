//! Reading files again when they change, or on SIGHUP: the gateway's config, admin tokens
//! and certificates, and the node agent's certificates. A watcher is put on each file's
//! directory, not on the file: editors and `leasehold certs issue` write a new file and
//! rename it over the old, which a watch on the file itself would lose. Triggers are
//! debounced ([`DEBOUNCE`]), and the caller's `reread` runs on the blocking pool, since it
//! reads files.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// Quiet time after the last trigger before the files are read: a save is several events
/// (write, rename, chmod), and a half-written file must not be judged.
pub const DEBOUNCE: Duration = Duration::from_millis(300);

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("cannot watch {dir} for changes: {source}")]
    Watch {
        dir: PathBuf,
        #[source]
        source: notify::Error,
    },
    #[error("cannot listen for SIGHUP: {0}")]
    Signal(std::io::Error),
}

/// Calls `reread` with why (`"file change"` or `"SIGHUP"`) after SIGHUP or a change of any
/// of `paths`, once the triggers have been quiet for [`DEBOUNCE`]. Runs until the process
/// ends; must be called inside a tokio runtime.
pub fn watch(
    paths: &[PathBuf],
    reread: impl Fn(&'static str) + Send + Sync + 'static,
) -> Result<(), WatchError> {
    let (trigger, triggers) = mpsc::unbounded_channel::<&'static str>();
    let watcher = watcher_for(paths, trigger.clone())?;
    run(Some(watcher), trigger, triggers, paths, reread)
}

/// [`watch`], or SIGHUP alone when the files cannot be watched (no inotify instance left,
/// say): a process that can still be told to read them again need not refuse to start.
pub fn watch_or_sighup(
    paths: &[PathBuf],
    reread: impl Fn(&'static str) + Send + Sync + 'static,
) -> Result<(), WatchError> {
    let (trigger, triggers) = mpsc::unbounded_channel::<&'static str>();
    let watcher = match watcher_for(paths, trigger.clone()) {
        Ok(watcher) => Some(watcher),
        Err(error) => {
            tracing::warn!(%error, files = ?paths, "not watching these files; they are read again on SIGHUP only");
            None
        }
    };
    run(watcher, trigger, triggers, paths, reread)
}

/// A watcher on each file's directory that sends `"file change"` for any of `paths`.
fn watcher_for(
    paths: &[PathBuf],
    trigger: mpsc::UnboundedSender<&'static str>,
) -> Result<notify::RecommendedWatcher, WatchError> {
    let watched: Vec<(PathBuf, Option<OsString>)> = paths
        .iter()
        .map(|path| {
            let dir = match path.parent() {
                Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
                _ => PathBuf::from("."),
            };
            // Events name the directory as it was given to the watcher: compare like with like.
            let dir = dir.canonicalize().unwrap_or(dir);
            (dir, path.file_name().map(OsString::from))
        })
        .collect();
    let wanted = watched.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        // Opens and reads (ours included) are not edits; anything else naming a file is
        // (create, write, rename onto it, remove).
        if matches!(event.kind, EventKind::Access(_)) {
            return;
        }
        let ours = event.paths.iter().any(|changed| {
            wanted.iter().any(|(dir, name)| {
                changed.parent() == Some(dir.as_path()) && changed.file_name() == name.as_deref()
            })
        });
        if ours {
            let _ = trigger.send("file change");
        }
    })
    .map_err(|source| WatchError::Watch {
        dir: watched
            .first()
            .map_or_else(|| PathBuf::from("."), |(dir, _)| dir.clone()),
        source,
    })?;
    let mut dirs: Vec<&PathBuf> = watched.iter().map(|(dir, _)| dir).collect();
    dirs.sort();
    dirs.dedup();
    for dir in dirs {
        watcher
            .watch(dir, RecursiveMode::NonRecursive)
            .map_err(|source| WatchError::Watch {
                dir: dir.clone(),
                source,
            })?;
    }
    Ok(watcher)
}

/// SIGHUP into `trigger`, and the debounced calls of `reread`; `watcher` lives as long.
fn run(
    watcher: Option<notify::RecommendedWatcher>,
    trigger: mpsc::UnboundedSender<&'static str>,
    mut triggers: mpsc::UnboundedReceiver<&'static str>,
    paths: &[PathBuf],
    reread: impl Fn(&'static str) + Send + Sync + 'static,
) -> Result<(), WatchError> {
    // The channel is unbounded on purpose: the notify callback runs on the watcher's own
    // thread and must not block; every entry is a `&'static str` and the debounce below
    // drains them all, so a burst of file events costs a few words each.
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(WatchError::Signal)?;
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            if trigger.send("SIGHUP").is_err() {
                return;
            }
        }
    });
    let reread = Arc::new(reread);
    let named: Vec<String> = paths
        .iter()
        .map(|path| path.display().to_string())
        .collect();
    tokio::spawn(async move {
        // The watcher stops when dropped: it lives as long as this task.
        let _watcher = watcher;
        while let Some(first) = triggers.recv().await {
            let mut why = first;
            // Debounce: wait until DEBOUNCE passes with no further trigger.
            loop {
                match tokio::time::timeout(DEBOUNCE, triggers.recv()).await {
                    Ok(Some(next)) => {
                        if next == "SIGHUP" {
                            why = next;
                        }
                    }
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            let reread = reread.clone();
            if let Err(error) = tokio::task::spawn_blocking(move || reread(why)).await {
                tracing::error!(%error, files = ?named, "reading the files again failed");
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_change_to_a_watched_file_calls_back_and_a_namesake_elsewhere_does_not() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let (here, there) = (dir.path().join("here"), dir.path().join("there"));
        std::fs::create_dir_all(&here).expect("a dir");
        std::fs::create_dir_all(&there).expect("a dir");
        let watched = here.join("site.crt");
        std::fs::write(&watched, "one").expect("write");
        std::fs::write(there.join("site.crt"), "one").expect("write");
        let calls = Arc::new(Mutex::new(Vec::new()));
        let seen = calls.clone();
        watch(&[watched.clone(), dir.path().join("ca.crt")], move |why| {
            seen.lock().expect("not poisoned").push(why);
        })
        .expect("a watch");
        let count = || calls.lock().expect("not poisoned").len();

        // A namesake in another directory changes nothing.
        std::fs::write(there.join("site.crt"), "two").expect("write");
        tokio::time::sleep(DEBOUNCE * 3).await;
        assert_eq!(count(), 0);

        // A save as an editor does it: a new file renamed over the old, then a write.
        let temporary = here.join("site.crt.new");
        std::fs::write(&temporary, "two").expect("write");
        std::fs::rename(&temporary, &watched).expect("rename");
        std::fs::write(&watched, "three").expect("write");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while count() == 0 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let after_save = calls.lock().expect("not poisoned").clone();
        assert!(!after_save.is_empty(), "no call after the save");
        assert!(
            after_save.iter().all(|why| *why == "file change"),
            "{after_save:?}"
        );

        // The second file, in the parent directory, is watched too (created here).
        std::fs::write(dir.path().join("ca.crt"), "ca").expect("write");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while count() == after_save.len() && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            count() > after_save.len(),
            "no call after ca.crt was written"
        );
    }
}
