//! Errors of the core. I/O failures keep the errno, the syscall and the path so the
//! binding can raise Node-style errors (`code`, `errno`, `syscall`, `path`).

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// "Is a directory", for callers without libc (the binding).
pub const EISDIR: i32 = libc::EISDIR;

/// An operating-system failure on one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoFailure {
    /// Positive errno value (`libc::ENOENT`, ...).
    pub errno: i32,
    /// The syscall that failed, named as Node names it (`open`, `realpath`, ...).
    pub syscall: &'static str,
    pub path: PathBuf,
}

impl IoFailure {
    pub fn new(errno: i32, syscall: &'static str, path: &Path) -> Self {
        IoFailure {
            errno,
            syscall,
            path: path.to_path_buf(),
        }
    }

    pub fn from_io(err: &io::Error, syscall: &'static str, path: &Path) -> Self {
        // Errors without an errno (rare: invalid data from std) map to EIO.
        Self::new(err.raw_os_error().unwrap_or(libc::EIO), syscall, path)
    }

    /// `ENOENT`, `EACCES`, ... as Node's `err.code`.
    pub fn code(&self) -> &'static str {
        errno_name(self.errno).0
    }

    pub fn description(&self) -> &'static str {
        errno_name(self.errno).1
    }
}

impl fmt::Display for IoFailure {
    /// The same shape as Node's fs errors: `ENOENT: no such file or directory, open '/x'`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}, {} '{}'",
            self.code(),
            self.description(),
            self.syscall,
            self.path.display()
        )
    }
}

/// Every failure the core reports.
#[derive(Debug, Clone, PartialEq)]
pub enum LockError {
    Io(IoFailure),
    /// An argument of the wrong type (the binding raises a `TypeError`).
    Type(String),
    /// An argument out of range (the binding raises a `RangeError`).
    Range(String),
    /// The workspace is held by a live owner and the caller asked not to wait.
    Busy(String),
    /// The caller aborted the acquisition.
    Aborted(String),
    /// A thread the lock needs (its heartbeat, the waiters' watcher) could not be started:
    /// no lock is handed out without it.
    Thread(ThreadFailure),
}

/// `pthread_create` failed (a container's `pids.max`, `RLIMIT_NPROC`, no memory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadFailure {
    pub errno: i32,
    /// Which thread: "heartbeat", "waiter".
    pub thread: &'static str,
}

impl ThreadFailure {
    pub fn from_io(err: &io::Error, thread: &'static str) -> Self {
        ThreadFailure {
            errno: err.raw_os_error().unwrap_or(libc::EAGAIN),
            thread,
        }
    }

    pub fn code(&self) -> &'static str {
        errno_name(self.errno).0
    }
}

impl fmt::Display for ThreadFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: could not start the workspace lock's {} thread ({}); no lock was taken",
            self.code(),
            self.thread,
            errno_name(self.errno).1
        )
    }
}

impl LockError {
    pub fn io(err: &io::Error, syscall: &'static str, path: &Path) -> Self {
        LockError::Io(IoFailure::from_io(err, syscall, path))
    }

    pub fn errno(errno: i32, syscall: &'static str, path: &Path) -> Self {
        LockError::Io(IoFailure::new(errno, syscall, path))
    }
}

impl fmt::Display for LockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockError::Io(e) => e.fmt(f),
            LockError::Thread(e) => e.fmt(f),
            LockError::Type(m)
            | LockError::Range(m)
            | LockError::Busy(m)
            | LockError::Aborted(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for LockError {}

impl From<IoFailure> for LockError {
    fn from(e: IoFailure) -> Self {
        LockError::Io(e)
    }
}

/// Node's (libuv's) name and message for an errno.
pub fn errno_name(errno: i32) -> (&'static str, &'static str) {
    match errno {
        libc::EPERM => ("EPERM", "operation not permitted"),
        libc::ENOENT => ("ENOENT", "no such file or directory"),
        libc::ESRCH => ("ESRCH", "no such process"),
        libc::EINTR => ("EINTR", "interrupted system call"),
        libc::EIO => ("EIO", "i/o error"),
        libc::EBADF => ("EBADF", "bad file descriptor"),
        libc::EAGAIN => ("EAGAIN", "resource temporarily unavailable"),
        libc::ENOMEM => ("ENOMEM", "not enough memory"),
        libc::EACCES => ("EACCES", "permission denied"),
        libc::EBUSY => ("EBUSY", "resource busy or locked"),
        libc::EEXIST => ("EEXIST", "file already exists"),
        libc::EXDEV => ("EXDEV", "cross-device link not permitted"),
        libc::ENOTDIR => ("ENOTDIR", "not a directory"),
        libc::EISDIR => ("EISDIR", "illegal operation on a directory"),
        libc::EINVAL => ("EINVAL", "invalid argument"),
        libc::ENFILE => ("ENFILE", "file table overflow"),
        libc::EMFILE => ("EMFILE", "too many open files"),
        libc::EFBIG => ("EFBIG", "file too large"),
        libc::ENOSPC => ("ENOSPC", "no space left on device"),
        libc::EROFS => ("EROFS", "read-only file system"),
        libc::EMLINK => ("EMLINK", "too many links"),
        libc::ENAMETOOLONG => ("ENAMETOOLONG", "name too long"),
        libc::ENOLCK => ("ENOLCK", "no locks available"),
        libc::ENOSYS => ("ENOSYS", "function not implemented"),
        libc::ENOTEMPTY => ("ENOTEMPTY", "directory not empty"),
        libc::ELOOP => ("ELOOP", "too many symbolic links encountered"),
        libc::EDQUOT => ("EDQUOT", "disk quota exceeded"),
        libc::ESTALE => ("ESTALE", "stale file handle"),
        libc::ENOTSUP => ("ENOTSUP", "operation not supported on socket"),
        libc::ETIMEDOUT => ("ETIMEDOUT", "connection timed out"),
        _ => ("EUNKNOWN", "unknown error"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_failure_prints_like_node() {
        let e = IoFailure::new(libc::EACCES, "open", Path::new("/x/y.lock"));
        assert_eq!(e.to_string(), "EACCES: permission denied, open '/x/y.lock'");
        assert_eq!(e.code(), "EACCES");
    }

    #[test]
    fn unknown_errno_is_named_eunknown() {
        assert_eq!(errno_name(-12345).0, "EUNKNOWN");
    }

    #[test]
    fn thread_failures_name_the_thread_and_the_os_code() {
        let e = LockError::Thread(ThreadFailure::from_io(
            &io::Error::from_raw_os_error(libc::EAGAIN),
            "heartbeat",
        ));
        assert_eq!(
            e.to_string(),
            "EAGAIN: could not start the workspace lock's heartbeat thread (resource temporarily unavailable); no lock was taken"
        );
    }
}
