//! Hot reload: the folders holding the configured plugins' files are watched (notify, on
//! inotify here); a plugin whose file was written, created or moved in is reported once its
//! file has been quiet for [`SETTLE`], and the pipeline loads the new version at its next
//! window boundary (`Pipeline::reload_changed`). Dropping a file in with `mv` is atomic; a
//! `cp` still being written when the window ends fails to compile, is refused, and is tried
//! again when the copy's last write settles.

use notify::{EventKind, RecursiveMode, Watcher};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a file must be left alone before its new version is loaded.
pub const SETTLE: Duration = Duration::from_millis(300);

pub struct PluginWatch {
    _watcher: notify::RecommendedWatcher,
    /// Paths written, with when (a change settles from its last write, not from when the
    /// window boundary looks).
    events: mpsc::Receiver<(PathBuf, Instant)>,
    /// Each configured plugin's file: (its folder, canonical; its name).
    files: Vec<(PathBuf, OsString)>,
    /// Plugins whose file changed, and when it last did.
    pending: BTreeMap<usize, Instant>,
}

impl PluginWatch {
    /// Watches the folders of `files` (the configured plugins', in order).
    pub fn new(files: &[PathBuf]) -> notify::Result<PluginWatch> {
        let (tx, events) = mpsc::channel();
        let mut watcher = notify::recommended_watcher(move |e: notify::Result<notify::Event>| {
            if let Ok(e) = e
                && matches!(e.kind, EventKind::Create(_) | EventKind::Modify(_))
            {
                let at = Instant::now();
                for p in e.paths {
                    let _ = tx.send((p, at));
                }
            }
        })?;
        let mut named = Vec::new();
        for f in files {
            let dir = f.parent().unwrap_or(Path::new("."));
            let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
            named.push((dir, f.file_name().unwrap_or_default().to_os_string()));
        }
        let mut dirs: Vec<&PathBuf> = named.iter().map(|(d, _)| d).collect();
        dirs.sort();
        dirs.dedup();
        for d in dirs {
            watcher.watch(d, RecursiveMode::NonRecursive)?;
        }
        Ok(PluginWatch {
            _watcher: watcher,
            events,
            files: named,
            pending: BTreeMap::new(),
        })
    }

    /// The configured plugins (by index) whose file changed and has settled since.
    pub fn changed(&mut self) -> Vec<usize> {
        let now = Instant::now();
        while let Ok((path, at)) = self.events.try_recv() {
            for (i, (dir, name)) in self.files.iter().enumerate() {
                if path.file_name() == Some(name.as_os_str())
                    && path.parent().is_some_and(|p| p == dir)
                {
                    self.pending.insert(i, at);
                }
            }
        }
        let settled: Vec<usize> = self
            .pending
            .iter()
            .filter(|(_, at)| now.duration_since(**at) >= SETTLE)
            .map(|(i, _)| *i)
            .collect();
        for i in &settled {
            self.pending.remove(i);
        }
        settled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configured_plugins_new_file_is_reported_once_it_settles_and_others_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.wasm"), dir.path().join("b.wasm"));
        for f in [&a, &b] {
            std::fs::write(f, b"v1").unwrap();
        }
        let mut w = PluginWatch::new(&[a.clone(), b.clone()]).unwrap();
        assert!(w.changed().is_empty());
        // A new version moved in over b, and a file nobody configured.
        let staged = dir.path().join(".b.wasm.new");
        std::fs::write(&staged, b"v2").unwrap();
        std::fs::rename(&staged, &b).unwrap();
        std::fs::write(dir.path().join("other.wasm"), b"x").unwrap();
        let t = Instant::now();
        let mut seen = Vec::new();
        while seen.is_empty() && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(50));
            seen = w.changed();
        }
        assert_eq!(seen, vec![1]);
        assert!(t.elapsed() >= SETTLE, "reported only once settled");
        std::thread::sleep(SETTLE);
        assert!(w.changed().is_empty(), "reported once");
    }
}
