//! The generic Unix layer's notifier on Linux (feature `generic-unix`): a self-pipe to wake
//! the watcher, and nothing else, so waiters wake on `pollMs`: the floor every platform
//! falls back to, exercised in CI.

use super::unix::{drain, poll_readable, pollfd, write_once};
use super::{Events, PidHandle};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

/// No process-exit handles here.
pub type PidFd = std::convert::Infallible;
pub type RawPidFd = RawFd;

pub fn raw_pid_fd(fd: &PidFd) -> RawFd {
    match *fd {}
}

/// Whether the [`Notifier`] reports a process's exit (none: a self-pipe only).
pub const PID_HANDLES: bool = false;

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

    pub fn watch_pid(&self, _pid: i32) -> PidHandle<PidFd> {
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
