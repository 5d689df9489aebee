//! The portable Unix implementation: what any POSIX system offers, used on macOS and, with
//! the `generic-unix` feature, on Linux (so that CI runs the same code as a Mac does).
//!
//! No byte locks that a process holds apart from its other opens (POSIX `fcntl` locks are
//! per process, and `flock` is per file): the claim protocol is then the original's, and a
//! holder is judged by its pid and heartbeat. No symlink-free open: paths take their full
//! way. The watcher's notifier is macOS's kqueue (`macos.rs`), or on Linux with the feature
//! a self-pipe only (`pipe_notifier.rs`), so that waiters there wake on `pollMs`.

use super::LockKind;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::Path;

pub const KERNEL_BYTE_LOCKS: bool = false;

/// No `O_PATH` here: such opens are never made (see [`open_without_symlinks`]).
pub const O_PATH: libc::c_int = libc::O_RDONLY;

fn unsupported() -> std::io::Error {
    std::io::Error::from(std::io::ErrorKind::Unsupported)
}

/// Never called while [`KERNEL_BYTE_LOCKS`] is false; says so if it is.
pub fn set_byte_lock(
    _file: &File,
    _kind: LockKind,
    _offset: u64,
    _wait: bool,
) -> std::io::Result<bool> {
    Err(unsupported())
}

/// Never called while [`KERNEL_BYTE_LOCKS`] is false; says so if it is.
pub fn probe_byte_lock(_file: &File, _offset: u64) -> std::io::Result<bool> {
    Err(unsupported())
}

/// Returns at once: there is no byte to wait on.
pub fn wait_byte_free(_file: &File, _offset: u64) {}

/// Without a way to refuse every symlink in one open, no path is proven symlink-free:
/// callers take their full way.
pub fn open_without_symlinks(
    _path: &Path,
    _flags: libc::c_int,
    _mode: u32,
) -> std::io::Result<OwnedFd> {
    Err(unsupported())
}
