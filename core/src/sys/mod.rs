//! The platform layer: every system call the lock makes, one file per platform. The domain
//! modules (paths, record, liveness, protocol, held lock, waiting) are policy over the
//! small interface below; what a platform cannot offer it says so (`None`, `false`,
//! `Unsupported`), and the policy falls back to what the original module does there.
//!
//! - [`unix`]: what every POSIX system shares (open without following a final symlink,
//!   `fstatat`, `kill(pid, 0)`, the host name, the passwd home, set-uid detection).
//! - `linux`: open-file-description byte locks (`F_OFD_*`), `openat2` with
//!   `RESOLVE_NO_SYMLINKS`, inotify, eventfd and pidfd wake-ups.
//! - `procfs` (Linux, whichever of the two above): `/proc` start times and states, the
//!   kernel boot id and PID namespace, `getrandom`, `AT_SECURE`.
//! - `macos`: the same facts from `sysctl` / `getentropy`; no start times.
//! - `windows`: `LockFileEx` byte locks (per handle, dropped with the process), opens that
//!   refuse reparse points, process handles (`OpenProcess` + `WaitForMultipleObjects`) and
//!   `ReadDirectoryChangesW` for the watcher, Windows error codes mapped to errno values as
//!   libuv maps them (so errors carry Node's codes).
//! - `generic`: the portable Unix implementation used on macOS (and on Linux with the
//!   `generic-unix` feature, so that CI runs it): the same locks as `flock(2)` on one small
//!   file per byte in a directory `.owners.d` (flock, like OFD locks, belongs to an open file
//!   and dies with its process; `fcntl` locks would be per process), no symlink-free open
//!   (paths take their full way), and the watcher's wake-ups from kqueue (macOS) or a
//!   self-pipe (Linux with the feature, whose waiters then wake on `pollMs`).
//!
//! The interface, implemented by each of `linux`, `windows` and `generic`:
//! - `OWNERS_NAME`, `open_owners`, `HeldBytes`, `release_held_bytes`, `KERNEL_BYTE_LOCKS`,
//!   `set_byte_lock`, `probe_byte_lock`, `wait_byte_free`, `sweep_dead_bytes`: byte-range
//!   locks owned by an open owner handle (the holder byte and the per-name mutex), freed
//!   when it closes;
//! - `open_without_symlinks`: open an absolute path only if no component is a symlink;
//! - `Notifier`: directory-change watches, process-exit handles and a wake-up, waited on
//!   together by the watcher thread;
//! - `proc_stat` (state and start time of a pid), `boot_id`, `pid_namespace`,
//!   `secure_exec`, `random_bytes`.

#[cfg(unix)]
pub mod unix;
#[cfg(unix)]
pub use unix::{
    checked_open, errno, file_key, hostname, nlink, nofollow_options, os_str_from_encoded,
    path_key, pid_is_gone, read_at, write_all_at, FLAGS_RDWR_CREATE, FLAGS_READ,
    FLAGS_READ_NONBLOCK, KEEP_FILES_OPEN, O_NONBLOCK,
};

#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub use windows::*;

#[cfg(all(target_os = "linux", not(feature = "generic-unix")))]
mod linux;
#[cfg(all(target_os = "linux", not(feature = "generic-unix")))]
pub use linux::*;

#[cfg(all(unix, any(not(target_os = "linux"), feature = "generic-unix")))]
mod generic;
#[cfg(all(unix, any(not(target_os = "linux"), feature = "generic-unix")))]
pub use generic::*;
#[cfg(all(target_os = "linux", feature = "generic-unix"))]
mod pipe_notifier;
#[cfg(all(target_os = "linux", feature = "generic-unix"))]
pub use pipe_notifier::*;

/// Where the locks live on Linux and Windows: the bytes of one owner file (the generic Unix
/// layer has its own, in `generic`).
#[cfg(not(all(unix, any(not(target_os = "linux"), feature = "generic-unix"))))]
mod owner_file {
    use super::{checked_open, nofollow_options};

    /// Where the locks of one locks directory live: a file whose bytes are locked.
    pub const OWNERS_NAME: &str = ".owners";

    /// What an owner handle holds besides its file: nothing, the locks are on the file's
    /// bytes.
    #[derive(Debug, Default)]
    pub struct HeldBytes {}

    /// Opens (creating if asked) the owner file at `path`, for writing if asked.
    pub fn open_owners(
        path: &std::path::Path,
        create: bool,
        write: bool,
    ) -> std::io::Result<std::fs::File> {
        let mut options = nofollow_options(0);
        options.read(true).write(write).create(create);
        checked_open(&options, path)
    }

    /// Before an owner handle closes: nothing to do, closing frees its bytes.
    pub fn release_held_bytes(_owners: &std::fs::File, _held: &HeldBytes) {}

    /// Nothing to sweep: a dead holder's byte leaves nothing behind.
    pub fn sweep_dead_bytes(_owners: &std::fs::File, _path: &std::path::Path) {}
}
#[cfg(not(all(unix, any(not(target_os = "linux"), feature = "generic-unix"))))]
pub use owner_file::*;

#[cfg(target_os = "linux")]
mod procfs;
#[cfg(target_os = "linux")]
pub use procfs::*;

#[cfg(target_os = "macos")]
mod macos;
#[cfg(target_os = "macos")]
pub use macos::*;

/// The kind of a byte-range lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockKind {
    Write,
    Read,
    Unlock,
}

/// What one wait of the [`Notifier`] saw.
#[derive(Debug, Default)]
pub struct Events {
    /// (watch, entry name) of every entry changed in a watched directory.
    pub entries: Vec<(i32, std::ffi::OsString)>,
    /// Watches whose whole directory may have changed unseen (deleted, moved away, its
    /// watch dropped).
    pub whole: Vec<i32>,
    /// The event queue overflowed: every watched directory may have changed unseen.
    pub overflowed: bool,
    /// Pids whose exit handle fired.
    pub exited: Vec<i32>,
    /// Watches whose directory changed without naming the entry (kqueue): every waiter of
    /// that directory looks.
    pub dirs_changed: Vec<i32>,
}

/// What asking for a process-exit handle gave.
pub enum PidHandle<H> {
    Watching(H),
    /// The process is already gone.
    Gone,
    /// No such handles here: the waiter's `pollMs` covers it.
    Unsupported,
}
