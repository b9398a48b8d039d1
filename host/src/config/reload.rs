//! A changed config re-read while running (`run`, `aggregate`): on SIGHUP, or when the file is
//! written or moved in (watched with the plugins' files when `[plugins] watch` is on). The
//! pipeline applies it between windows, all or nothing: a file with any problem, or a plugin
//! of it that does not start, leaves the running config in place (`Pipeline::reload_config`).

use crate::plugins::watch::PluginWatch;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// Set by SIGHUP, taken by the next window.
static HANGUP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_hangup(_: libc::c_int) {
    HANGUP.store(true, Ordering::Relaxed);
}

/// When to read the config file again.
pub struct ConfigWatch {
    path: PathBuf,
    file: Option<PluginWatch>,
}

impl ConfigWatch {
    /// SIGHUP from now on, and with `watch_file` the file's changes.
    pub fn new(path: &Path, watch_file: bool) -> ConfigWatch {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(libc::SIGHUP, on_hangup as *const () as libc::sighandler_t);
        }
        let file = if watch_file {
            match PluginWatch::new(&[path.to_path_buf()]) {
                Ok(w) => Some(w),
                Err(e) => {
                    tracing::warn!("watching {}: {e}; SIGHUP still re-reads it", path.display());
                    None
                }
            }
        } else {
            None
        };
        ConfigWatch {
            path: path.to_path_buf(),
            file,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file should be read again (SIGHUP came, or it changed and settled).
    pub fn due(&mut self) -> bool {
        let hangup = HANGUP.swap(false, Ordering::Relaxed);
        let changed = self.file.as_mut().is_some_and(|w| !w.changed().is_empty());
        hangup || changed
    }
}
