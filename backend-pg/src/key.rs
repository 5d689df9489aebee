//! One key per workspace across hosts: `<identity>:<path of the cwd relative to its repo
//! root>`, where the identity is a random id created once in the shared crew state
//! (`<crewRoot>/state/workspace-lock.id`). Hosts that mount the shared tree at different
//! paths read the same id; two workspaces with the same path on different hosts have
//! different ids. `WORKSPACE_LOCK_KEY` (or the `backendKey` option) overrides it all.

use crate::BackendError;
use sha2::{Digest, Sha256};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use workspace_lock_core::kernel_lock::random_u64;
use workspace_lock_core::paths::{absolute_cwd, find_repo_root, workspace_lock_path, PathContext};

/// A workspace's key on the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceKey {
    /// The advisory lock key: the first 8 bytes of sha256 of `text`.
    pub key: i64,
    /// What it was derived from: `<identity>:<relative path>`, or the override.
    pub text: String,
}

/// The advisory-lock key of a text: sha256 of a prefix and the text, first 8 bytes.
pub fn key_of(text: &str) -> i64 {
    let mut h = Sha256::new();
    h.update(b"pi-crew-workspace-lock\0");
    h.update(text.as_bytes());
    let d = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&d[..8]);
    i64::from_be_bytes(first)
}

fn io_error(what: &str, path: &Path, e: &std::io::Error) -> BackendError {
    BackendError::new(
        "EBACKENDKEY",
        format!(
            "workspace lock backend: cannot {what} {}: {e}",
            path.display()
        ),
    )
}

/// The key of `cwd`, unless `key_override` gives one.
pub fn derive_key(cwd: &str, key_override: Option<&str>) -> Result<WorkspaceKey, BackendError> {
    if let Some(text) = key_override.filter(|t| !t.is_empty()) {
        return Ok(WorkspaceKey {
            key: key_of(text),
            text: text.to_owned(),
        });
    }
    let fail = |e: workspace_lock_core::error::LockError| {
        BackendError::new("EBACKENDKEY", format!("workspace lock backend: {e}"))
    };
    let ctx = PathContext::for_cwd(cwd).map_err(fail)?;
    let lock_path = workspace_lock_path(cwd, &ctx).map_err(fail)?;
    // <crewRoot>/state/workspace-locks/<hash>.lock → <crewRoot>/state
    let state_dir = lock_path
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .ok_or_else(|| {
            BackendError::new(
                "EBACKENDKEY",
                "workspace lock backend: no crew state directory",
            )
        })?;
    let identity = identity_in(&state_dir)?;
    let abs = absolute_cwd(cwd, &ctx);
    let real_cwd = fs::canonicalize(&abs).unwrap_or_else(|_| abs.clone());
    let root = find_repo_root(&abs, &ctx).map_err(fail)?;
    let relative = match root {
        Some(root) => {
            let real_root = fs::canonicalize(&root).unwrap_or(root);
            real_cwd
                .strip_prefix(&real_root)
                .map(portable_relative)
                .unwrap_or_default()
        }
        // No repo root: the crew state sits in the cwd itself.
        None => String::new(),
    };
    let text = format!("{identity}:{relative}");
    Ok(WorkspaceKey {
        key: key_of(&text),
        text,
    })
}

/// A path relative to the repo root, with `/` between its components on every system, so
/// that a Windows host and a Linux host sharing the workspace derive one key.
fn portable_relative(relative: &Path) -> String {
    relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// The file holding a crew state's identity.
pub fn identity_path(state_dir: &Path) -> PathBuf {
    state_dir.join("workspace-lock.id")
}

/// Reads the identity, creating it first (whole, by `link()`) when there is none.
fn identity_in(state_dir: &Path) -> Result<String, BackendError> {
    let path = identity_path(state_dir);
    if let Some(id) = read_identity(&path)? {
        return Ok(id);
    }
    fs::create_dir_all(state_dir).map_err(|e| io_error("create", state_dir, &e))?;
    // 128 bits from the system's random generator (getrandom, getentropy, BCryptGenRandom).
    let id = format!("{:016x}{:016x}", random_u64(), random_u64());
    let temp = state_dir.join(format!(
        ".workspace-lock.id.{}.{}",
        std::process::id(),
        &id[..8]
    ));
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o644);
    let written = options.open(&temp).and_then(|mut f| {
        f.write_all(format!("{id}\n").as_bytes())?;
        f.sync_all()
    });
    if let Err(e) = written {
        let _ = fs::remove_file(&temp);
        return Err(io_error("write", &temp, &e));
    }
    // The first link wins; everyone then reads the winner's id.
    let linked = fs::hard_link(&temp, &path);
    let _ = fs::remove_file(&temp);
    match linked {
        Ok(()) => Ok(id),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read_identity(&path)?
            .ok_or_else(|| {
                BackendError::new(
                    "EBACKENDKEY",
                    format!("workspace lock backend: {} is empty", path.display()),
                )
            }),
        Err(e) => Err(io_error("create", &path, &e)),
    }
}

fn read_identity(path: &Path) -> Result<Option<String>, BackendError> {
    match fs::read_to_string(path) {
        Ok(text) => {
            let id = text.trim();
            if id.is_empty() {
                Err(BackendError::new(
                    "EBACKENDKEY",
                    format!("workspace lock backend: {} is empty", path.display()),
                ))
            } else {
                Ok(Some(id.to_owned()))
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error("read", path, &e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_tree_at_two_paths_same_key_other_tree_other_key() {
        let base = std::env::temp_dir().join(format!("wslk-key-{}", std::process::id()));
        let a = base.join("a");
        let b = base.join("b");
        let _ = fs::remove_dir_all(&base);
        let made = fs::create_dir_all(a.join("repo/.git"))
            .and_then(|_| fs::create_dir_all(a.join("repo/sub/deep")))
            .and_then(|_| fs::create_dir_all(b.join("repo/.git")))
            .and_then(|_| fs::create_dir_all(b.join("repo/sub")));
        assert!(made.is_ok());
        let key = |p: &Path| derive_key(&p.to_string_lossy(), None).map_err(|e| e.message);
        let ka = key(&a.join("repo/sub"));
        // The same shared tree seen at another path: through a symlink on Unix; elsewhere
        // (a symlink needs privileges on Windows) as a copy of it, the id file included.
        let alias = base.join("alias");
        #[cfg(unix)]
        let aliased = std::os::unix::fs::symlink(&a, &alias);
        #[cfg(not(unix))]
        let aliased = fs::create_dir_all(alias.join("repo/.git"))
            .and_then(|_| fs::create_dir_all(alias.join("repo/sub")))
            .and_then(|_| fs::create_dir_all(alias.join("repo/.crew/state")))
            .and_then(|_| {
                fs::copy(
                    identity_path(&a.join("repo/.crew/state")),
                    identity_path(&alias.join("repo/.crew/state")),
                )
            });
        assert!(aliased.is_ok(), "{aliased:?}");
        let ka_alias = key(&alias.join("repo/sub"));
        let kb = key(&b.join("repo/sub"));
        let ka_root = key(&a.join("repo"));
        let ka_deep = key(&a.join("repo").join("sub").join("deep"));
        let _ = fs::remove_dir_all(&base);
        let (ka, ka_alias, kb, ka_root, ka_deep) = match (ka, ka_alias, kb, ka_root, ka_deep) {
            (Ok(a), Ok(b), Ok(c), Ok(d), Ok(e)) => (a, b, c, d, e),
            other => panic!("{other:?}"),
        };
        assert_eq!(ka, ka_alias);
        assert_ne!(ka.key, kb.key);
        assert_ne!(ka.key, ka_root.key);
        assert!(ka.text.ends_with(":sub"));
        // `/` between components on every system, so Windows and Unix hosts agree.
        assert!(ka_deep.text.ends_with(":sub/deep"), "{}", ka_deep.text);
    }

    #[test]
    fn override_is_the_key() {
        let k = derive_key("/nonexistent", Some("team/ws-1"));
        assert_eq!(k.map(|k| k.key).ok(), Some(key_of("team/ws-1")));
    }
}
