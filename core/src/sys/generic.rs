//! The portable Unix implementation: what any POSIX system offers, used on macOS and, with
//! the `generic-unix` feature, on Linux (so that CI runs the same code as a Mac does).
//!
//! No byte locks that a process holds apart from its other opens (POSIX `fcntl` locks are
//! per process, and `flock` is per file): the claim protocol is then the original's, and a
//! holder is judged by its pid and heartbeat. No symlink-free open: paths take their full
//! way. The watcher is woken through a self-pipe only, so waiters wake on `pollMs`.

use super::unix::{drain, poll_readable, pollfd, write_once};
use super::{Events, LockKind, PidHandle};
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
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

/// No process-exit handles here.
pub type PidFd = std::convert::Infallible;
pub type RawPidFd = RawFd;

pub fn raw_pid_fd(fd: &PidFd) -> RawFd {
    match *fd {}
}

/// The watcher's wake-up: a non-blocking self-pipe.
pub struct Notifier {
    pipe: Option<(OwnedFd, OwnedFd)>,
}

fn self_pipe() -> Option<(OwnedFd, OwnedFd)> {
    let mut fds = [-1; 2];
    // SAFETY: fds has room for the two descriptors pipe writes.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: pipe just returned these two descriptors, owned by nobody else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    for fd in [&read, &write] {
        let raw = fd.as_raw_fd();
        // SAFETY: fcntl on our own descriptors with integer arguments.
        let ok = unsafe {
            libc::fcntl(raw, libc::F_SETFD, libc::FD_CLOEXEC) == 0
                && libc::fcntl(raw, libc::F_SETFL, libc::O_NONBLOCK) == 0
        };
        if !ok {
            return None;
        }
    }
    Some((read, write))
}

impl Notifier {
    pub fn open() -> Notifier {
        Notifier { pipe: self_pipe() }
    }

    pub fn poke(&self) {
        if let Some((_, write)) = &self.pipe {
            write_once(write.as_raw_fd(), &[1]);
        }
    }

    /// No directory watches here.
    pub fn add_watch(&self, _dir: &Path) -> Option<i32> {
        None
    }

    pub fn rm_watch(&self, _wd: i32) {}

    pub fn watch_pid(_pid: i32) -> PidHandle<PidFd> {
        PidHandle::Unsupported
    }

    /// Waits up to `timeout_ms` (-1: forever) for a poke.
    pub fn wait(&self, _pids: &[(i32, RawFd)], timeout_ms: i32, buf: &mut [u8]) -> Events {
        match &self.pipe {
            Some((read, _)) => {
                let mut fds = [pollfd(read.as_raw_fd())];
                poll_readable(&mut fds, timeout_ms);
                drain(read.as_raw_fd(), buf);
            }
            // No pipe: wake at the next deadline (or every 10 ms when none is set).
            None => std::thread::sleep(std::time::Duration::from_millis(
                u64::try_from(timeout_ms).unwrap_or(10),
            )),
        }
        Events::default()
    }
}
