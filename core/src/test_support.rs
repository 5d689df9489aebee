//! Helpers for the core's unit tests.

#[cfg(unix)]
use crate::paths::PathContext;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "wslock-core-{label}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A canonical test root in `dir`, and a path context whose cwd is that root and whose home
/// and tmp are `root/home` and `root/tmp`, so that every walk stops inside it.
#[cfg(unix)]
pub fn rooted_context(dir: &TempDir) -> (PathBuf, PathContext) {
    let root = std::fs::canonicalize(dir.path()).expect("canonical test root");
    let ctx = PathContext {
        process_cwd: root.clone(),
        home: root.join("home"),
        tmp: root.join("tmp"),
    };
    (root, ctx)
}

/// Deletes a locks directory's owner file (`.owners`), or on the generic Unix layer its
/// owners directory (`.owners.d`) with the holder files in it, as a cleanup would.
pub fn delete_owners(path: &Path) {
    let removed = if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    assert!(removed.is_ok(), "deleting {path:?}: {removed:?}");
}
