//! Where a workspace's lockfile lives: pi-crew's `workspaceLockPath(cwd)`, byte for byte.
//!
//! `absCwd = path.resolve(cwd)`, hashed with SHA-256; the repo root is found by walking up
//! from `realpath(absCwd)` looking for project markers, stopping at the home and temp dirs;
//! the crew root is `.crew` (or legacy `.pi/teams`) under it; the lock is
//! `crewRoot/state/workspace-locks/<hash>.lock`. Unix paths only. Nothing is cached: markers
//! may appear or vanish between calls.
//!
//! Syscalls dominate the cost, so one call saves what it can without changing any answer: a
//! symlink-free cwd is proven its own realpath by one openat2 (and the folders on its way with
//! it), names in it are looked up through that handle, and what the walk saw of markers is
//! reused for `.crew` and `.pi`. None of it outlives the call.
//!
//! Here: the path context and the lock path; in [`node`] Node's path semantics; in [`walk`]
//! the repo-root walk.

#[cfg(unix)]
use std::ffi::{OsStr, OsString};
#[cfg(unix)]
use std::fs;
#[cfg(unix)]
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
#[cfg(unix)]
use std::os::unix::ffi::{OsStrExt, OsStringExt};
#[cfg(unix)]
use std::path::{Path, PathBuf};

#[cfg(unix)]
use sha2::{Digest, Sha256};

#[cfg(unix)]
use crate::error::LockError;
#[cfg(unix)]
use crate::sys;

#[cfg(unix)]
/// What `path.resolve`, `os.homedir()` and `os.tmpdir()` give in this process, captured once
/// so tests can inject them.
#[derive(Debug, Clone)]
pub struct PathContext {
    pub process_cwd: PathBuf,
    pub home: PathBuf,
    pub tmp: PathBuf,
}

#[cfg(unix)]
impl PathContext {
    /// From the real process, for resolving `cwd`: $HOME / passwd, $TMPDIR/$TMP/$TEMP//tmp
    /// (path.resolve()d, not yet realpath'd), and the process's working directory, which is
    /// only read when something (`cwd`, `$HOME`, the temp dir) is relative.
    pub fn for_cwd(cwd: &str) -> Result<PathContext, LockError> {
        let getenv = |name: &str| std::env::var_os(name);
        let home = node_homedir(getenv)?;
        let tmp = node_tmpdir(getenv, secure_exec());
        let relative = |p: &str| !p.starts_with('/');
        let process_cwd = if relative(cwd) || relative(&home) || relative(&tmp) {
            // Node's process.cwd() fails the same way (getcwd of a removed directory); it
            // names the call `uv_cwd` and has no path.
            let dir =
                std::env::current_dir().map_err(|e| LockError::io(&e, "uv_cwd", Path::new("")))?;
            // Node hands JS a UTF-8 decoded string; invalid bytes become U+FFFD there too.
            PathBuf::from(lossy(dir.as_os_str()))
        } else {
            // Not consulted: every path at hand is absolute.
            PathBuf::from("/")
        };
        Ok(PathContext {
            home: resolve_lexical(&process_cwd, &home),
            tmp: resolve_lexical(&process_cwd, &tmp),
            process_cwd,
        })
    }
}

#[cfg(unix)]
/// Lowercase hex sha256 of the absolute cwd's UTF-8 bytes (use the raw OsStr bytes).
pub fn cwd_hash(abs_cwd: &Path) -> String {
    let mut hex = String::with_capacity(64 + ".lock".len());
    for b in Sha256::digest(abs_cwd.as_os_str().as_bytes()) {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        hex.push(char::from(DIGITS[usize::from(b >> 4)]));
        hex.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    hex
}

#[cfg(unix)]
/// The whole thing: workspaceLockPath(cwd).
pub fn workspace_lock_path(cwd: &str, ctx: &PathContext) -> Result<PathBuf, LockError> {
    UsualLockPath::of(cwd, ctx).resolved(ctx)
}

#[cfg(unix)]
fn lock_file_name(abs_cwd: &Path) -> String {
    let mut name = cwd_hash(abs_cwd);
    name.push_str(".lock");
    name
}

#[cfg(unix)]
/// The lock path of pi-crew's usual layout, `absCwd/.crew/state/workspace-locks/<hash>.lock`,
/// for a caller that would rather open a file there first and learn where the lock lives
/// after. It is the lock path exactly when that lockfile, or anything else in `dir`, opens
/// through [`open_without_symlinks`] (then `.crew` is a folder in a symlink-free cwd: see
/// [`crew_in_symlink_free_cwd`]), or when [`UsualLockPath::crew_is_symlink_free`] says so;
/// else ask [`UsualLockPath::walked`]. [`UsualLockPath::resolved`] does both.
pub struct UsualLockPath {
    abs_cwd: PathBuf,
    pub dir: PathBuf,
    pub path: PathBuf,
}

#[cfg(unix)]
impl UsualLockPath {
    pub fn of(cwd: &str, ctx: &PathContext) -> UsualLockPath {
        let abs_cwd = resolve_lexical(&ctx.process_cwd, cwd);
        let dir = locks_dir_in(&node_join(&abs_cwd, ".crew"));
        let path = node_join(&dir, &lock_file_name(&abs_cwd));
        UsualLockPath { abs_cwd, dir, path }
    }

    /// Whether `absCwd/.crew` opens symlink-free, making [`UsualLockPath::path`] the lock path.
    pub fn crew_is_symlink_free(&self) -> bool {
        crew_in_symlink_free_cwd(&self.abs_cwd)
    }

    /// [`UsualLockPath::crew_is_symlink_free`], for a caller whose open of [`UsualLockPath::path`]
    /// refusing symlinks has just failed with ENOENT, in one `statx` and no descriptor: that
    /// open met no symlink before the missing component (it would have failed with ELOOP), so
    /// if `.crew` is there and is not a symlink itself, the cwd's components are none either.
    pub fn crew_is_symlink_free_after_enoent(&self) -> bool {
        std::fs::symlink_metadata(node_join(&self.abs_cwd, ".crew"))
            .is_ok_and(|m| !m.file_type().is_symlink())
    }

    /// workspaceLockPath: this path when `.crew` settles it, else the full walk's.
    pub fn resolved(self, ctx: &PathContext) -> Result<PathBuf, LockError> {
        if self.crew_is_symlink_free() {
            Ok(self.path)
        } else {
            self.walked(ctx)
        }
    }

    /// workspaceLockPath by the full walk, the short way being known not to apply.
    pub fn walked(&self, ctx: &PathContext) -> Result<PathBuf, LockError> {
        let dir = locks_dir_in(&crew_root_by_walking(&self.abs_cwd, ctx)?);
        Ok(node_join(&dir, &lock_file_name(&self.abs_cwd)))
    }
}

#[cfg(unix)]
fn locks_dir_in(crew_root: &Path) -> PathBuf {
    node_join(&node_join(crew_root, "state"), "workspace-locks")
}

/// Names whose presence (following symlinks) makes a folder a project root, in pi-crew's
/// order: the same on every platform.
pub(crate) const MARKERS: [&str; 15] = [
    ".git",
    ".pi",
    ".crew",
    ".hg",
    ".svn",
    ".factory",
    ".omc",
    "package.json",
    "pyproject.toml",
    "Cargo.toml",
    "go.mod",
    "pom.xml",
    "composer.json",
    "build.gradle",
    "build.gradle.kts",
];

mod node;
#[cfg(unix)]
mod walk;
pub mod win32;
#[cfg(windows)]
mod windows;

#[cfg(unix)]
pub use node::resolve_lexical;
use node::*;
#[cfg(unix)]
use walk::*;
#[cfg(unix)]
pub use walk::{crew_root, find_repo_root, open_without_symlinks};
#[cfg(windows)]
pub use windows::*;

/// `path.resolve(cwd)` as Node computes it in this process (`path.posix`, or `path.win32`
/// with the drive's cwd on Windows).
pub fn absolute_cwd(cwd: &str, ctx: &PathContext) -> std::path::PathBuf {
    #[cfg(unix)]
    {
        resolve_lexical(&ctx.process_cwd, cwd)
    }
    #[cfg(windows)]
    {
        std::path::PathBuf::from(ctx.resolve(cwd))
    }
}

#[cfg(all(test, unix))]
mod tests;
