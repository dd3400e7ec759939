//! `Reloading<T>`: a configuration built from files and built again when they change, so that
//! certificates rotated on disk (cert-manager in Kubernetes, a cron job elsewhere) take effect
//! for new connections without a restart.
//!
//! The files are looked at (one `stat` each) at most once per [`RELOAD_CHECK_INTERVAL`], from
//! the caller's thread; a change is noticed by modification time, size and inode, which an
//! atomic replace or Kubernetes' symlink swap of a Secret volume always changes.
//!
//! Invariant: `current` always returns a configuration that was built successfully; a failed
//! rebuild keeps the previous one and is logged once for that state of the files.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use crate::error::TlsError;

/// How often the files behind a configuration are checked for changes, at most.
pub const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// What identifies one state of a file on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    length: u64,
    inode: u64,
}

fn stamp(path: &PathBuf) -> Option<Stamp> {
    let metadata = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&metadata);
    #[cfg(not(unix))]
    let inode = 0;
    Some(Stamp {
        modified: metadata.modified().ok(),
        length: metadata.len(),
        inode,
    })
}

type Build<T> = Box<dyn Fn() -> Result<T, TlsError> + Send + Sync>;

struct State<T> {
    current: Arc<T>,
    /// The files' stamps when `current` was built.
    built_from: Vec<Option<Stamp>>,
    /// The files' stamps when a rebuild last failed, so that it is tried (and logged) once.
    failed_at: Option<Vec<Option<Stamp>>>,
    checked_at: Instant,
}

/// A configuration of type `T`, rebuilt from `files` when they change.
pub(crate) struct Reloading<T> {
    what: &'static str,
    files: Vec<PathBuf>,
    build: Build<T>,
    state: Mutex<State<T>>,
}

impl<T> Reloading<T> {
    /// Builds the first configuration; an error here is the caller's to report.
    pub(crate) fn new(
        what: &'static str,
        files: Vec<PathBuf>,
        build: Build<T>,
    ) -> Result<Reloading<T>, TlsError> {
        let built_from = files.iter().map(stamp).collect();
        let current = Arc::new(build()?);
        Ok(Reloading {
            what,
            files,
            build,
            state: Mutex::new(State {
                current,
                built_from,
                failed_at: None,
                checked_at: Instant::now(),
            }),
        })
    }

    /// The configuration to use for a new connection, rebuilt first if the files changed.
    pub(crate) fn current(&self) -> Arc<T> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.checked_at.elapsed() < RELOAD_CHECK_INTERVAL {
            return state.current.clone();
        }
        state.checked_at = Instant::now();
        let stamps: Vec<Option<Stamp>> = self.files.iter().map(stamp).collect();
        if stamps == state.built_from || state.failed_at.as_ref() == Some(&stamps) {
            return state.current.clone();
        }
        match (self.build)() {
            Ok(rebuilt) => {
                tracing::info!(what = self.what, files = ?self.files, "TLS files changed; new connections use them");
                state.current = Arc::new(rebuilt);
                state.built_from = stamps;
                state.failed_at = None;
            }
            Err(error) => {
                tracing::warn!(what = self.what, %error,
                    "TLS files changed but cannot be used; keeping the previous certificates");
                state.failed_at = Some(stamps);
            }
        }
        state.current.clone()
    }

    /// Skips the wait before the next check (tests, and a caller that knows files changed).
    #[cfg(test)]
    pub(crate) fn check_now(&self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.checked_at = Instant::now() - RELOAD_CHECK_INTERVAL;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn rebuilds_on_change_and_keeps_the_old_value_when_the_new_files_fail() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("value");
        std::fs::write(&path, "1").unwrap();
        let builds = Arc::new(AtomicUsize::new(0));
        let counted = builds.clone();
        let reading = path.clone();
        let reloading = Reloading::new(
            "test",
            vec![path.clone()],
            Box::new(move || {
                counted.fetch_add(1, Ordering::SeqCst);
                let text = std::fs::read_to_string(&reading).unwrap();
                text.trim()
                    .parse::<u32>()
                    .map_err(|error| TlsError::Config {
                        reason: error.to_string(),
                    })
            }),
        )
        .unwrap();
        assert_eq!(*reloading.current(), 1);
        reloading.check_now();
        assert_eq!(*reloading.current(), 1);
        assert_eq!(
            builds.load(Ordering::SeqCst),
            1,
            "unchanged files are not rebuilt"
        );

        std::fs::write(&path, "22").unwrap();
        reloading.check_now();
        assert_eq!(*reloading.current(), 22);

        std::fs::write(&path, "not a number").unwrap();
        reloading.check_now();
        assert_eq!(
            *reloading.current(),
            22,
            "a bad file keeps the last good value"
        );
        let after_failure = builds.load(Ordering::SeqCst);
        reloading.check_now();
        assert_eq!(*reloading.current(), 22);
        assert_eq!(
            builds.load(Ordering::SeqCst),
            after_failure,
            "a failure is tried once"
        );

        std::fs::write(&path, "333").unwrap();
        reloading.check_now();
        assert_eq!(*reloading.current(), 333);
    }
}
