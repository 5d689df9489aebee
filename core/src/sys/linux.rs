//! Linux's own means: open-file-description byte locks, `openat2` without symlinks, and
//! inotify, eventfd and pidfd wake-ups.

use super::unix::{drain, poll_readable, pollfd, write_once};
use super::{Events, HeldBytes, LockKind, PidHandle};
use std::ffi::{CString, OsString};
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

/// Byte-range locks owned by an open file description: dropped the instant their holder
/// dies, conflicting between two opens in one process, testable without being taken.
pub const KERNEL_BYTE_LOCKS: bool = true;

/// The flag that opens a path for identity only (no read, no write).
pub const O_PATH: libc::c_int = libc::O_PATH;

fn flock_for(kind: LockKind, offset: u64) -> libc::flock {
    // SAFETY: flock is plain old data; all-zero is a valid value (pid 0 is required by OFD).
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = match kind {
        LockKind::Write => libc::F_WRLCK,
        LockKind::Read => libc::F_RDLCK,
        LockKind::Unlock => libc::F_UNLCK,
    } as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = offset as libc::off_t;
    fl.l_len = 1;
    fl
}

/// Places (or removes) a lock on the byte at `offset`; `wait`: until it can be placed.
/// `Ok(false)` when it is held by another open file and `wait` is false.
pub fn set_byte_lock(
    file: &File,
    _held: &HeldBytes,
    kind: LockKind,
    offset: u64,
    wait: bool,
) -> std::io::Result<bool> {
    let cmd = if wait {
        libc::F_OFD_SETLKW
    } else {
        libc::F_OFD_SETLK
    };
    loop {
        let fl = flock_for(kind, offset);
        // SAFETY: fl is a valid flock struct for the duration of the call.
        let rc = unsafe { libc::fcntl(file.as_raw_fd(), cmd, &fl) };
        if rc == 0 {
            return Ok(true);
        }
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) | Some(libc::EACCES) if !wait => return Ok(false),
            _ => return Err(err),
        }
    }
}

/// Whether another open file holds the byte at `offset` (a write lock could not be placed).
pub fn probe_byte_lock(file: &File, offset: u64) -> std::io::Result<bool> {
    let mut fl = flock_for(LockKind::Write, offset);
    // SAFETY: fl is a valid flock struct for the duration of the call.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &mut fl) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(i32::from(fl.l_type) != libc::F_UNLCK)
}

/// Blocks until a read lock on the byte at `offset` is placed (nobody holds it for writing
/// any more), or the wait fails. Closing `file` drops the read lock.
/// Always `true`: the byte is there to wait on.
pub fn wait_byte_free(file: &File, offset: u64) -> bool {
    let fl = flock_for(LockKind::Read, offset);
    loop {
        // SAFETY: valid fd and flock struct for the duration of the call.
        let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLKW, &fl) };
        if rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return true;
        }
    }
}

/// The kernel's `struct open_how` (linux/openat2.h, version 0).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// Opens `path` (absolute and normalised: the caller checks) with `flags` (plus O_CLOEXEC;
/// `mode` if it creates) only if no component of it is a symlink: ELOOP if one is, ENOENT
/// if one is missing. One `openat2` with `RESOLVE_NO_SYMLINKS`.
pub fn open_without_symlinks(
    path: &Path,
    flags: libc::c_int,
    mode: u32,
) -> std::io::Result<OwnedFd> {
    use std::io::{Error, ErrorKind};
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::from(ErrorKind::InvalidInput))?;
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: u64::from(mode),
        resolve: libc::RESOLVE_NO_SYMLINKS,
    };
    // SAFETY: a NUL-terminated path and an open_how whose size is passed with it, both
    // alive for the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            libc::AT_FDCWD,
            c_path.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if ret < 0 {
        return Err(Error::last_os_error());
    }
    let fd = libc::c_int::try_from(ret).map_err(|_| Error::from(ErrorKind::InvalidData))?;
    // SAFETY: the kernel just returned this descriptor, and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn new_fd(raw: i32) -> Option<OwnedFd> {
    // SAFETY: a non-negative return of inotify_init1/eventfd/pidfd_open is a new fd we own.
    (raw >= 0).then(|| unsafe { OwnedFd::from_raw_fd(raw) })
}

/// A process's exit handle: a pidfd, readable once it exits.
pub type PidFd = OwnedFd;
pub type RawPidFd = RawFd;

pub fn raw_pid_fd(fd: &PidFd) -> RawFd {
    fd.as_raw_fd()
}

/// What may free a lock: its entry deleted or renamed away, or replaced by a rename (a
/// refresh, a put-back). A new entry appearing (IN_CREATE) never frees one: the waiter
/// learns of its new holder at its next attempt. Closing a file opened for writing
/// (IN_CLOSE_WRITE) happens at every turn (the owner file is opened so) and frees nothing
/// either. Leaving both out halves the wake-ups of every waiting process of a contended
/// lock.
const DIR_EVENTS: u32 = libc::IN_DELETE
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_DELETE_SELF
    | libc::IN_MOVE_SELF
    | libc::IN_ONLYDIR;

/// Whether the [`Notifier`] reports a process's exit (pidfd).
pub const PID_HANDLES: bool = true;

/// The watcher's kernel objects: an inotify instance for directory changes and an eventfd
/// to wake it.
pub struct Notifier {
    inotify: Option<OwnedFd>,
    wake_fd: Option<OwnedFd>,
}

impl Notifier {
    pub fn open() -> Notifier {
        Notifier {
            // SAFETY: plain constructors of new descriptors.
            inotify: new_fd(unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) }),
            // SAFETY: as above.
            wake_fd: new_fd(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) }),
        }
    }

    /// Wakes a [`Notifier::wait`] in progress (or the next one).
    pub fn poke(&self) {
        if let Some(fd) = &self.wake_fd {
            write_once(fd.as_raw_fd(), &1u64.to_ne_bytes());
        }
    }

    /// Watches the entries of `dir`; `None` if it cannot be watched.
    pub fn add_watch(&self, dir: &Path) -> Option<i32> {
        let inotify = self.inotify.as_ref()?;
        let c_dir = CString::new(dir.as_os_str().as_bytes()).ok()?;
        // SAFETY: valid fd and NUL-terminated path.
        let wd =
            unsafe { libc::inotify_add_watch(inotify.as_raw_fd(), c_dir.as_ptr(), DIR_EVENTS) };
        (wd >= 0).then_some(wd)
    }

    pub fn rm_watch(&self, wd: i32) {
        if let Some(inotify) = &self.inotify {
            // SAFETY: removing a watch descriptor from our own inotify fd (a wd the kernel
            // already dropped only makes it fail with EINVAL).
            unsafe { libc::inotify_rm_watch(inotify.as_raw_fd(), wd) };
        }
    }

    /// A handle that becomes ready when `pid` exits.
    pub fn watch_pid(&self, pid: i32) -> PidHandle<PidFd> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
        let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
        match new_fd(raw) {
            Some(fd) => PidHandle::Watching(fd),
            None if std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH) => {
                PidHandle::Gone
            }
            // No pidfds here (old kernel).
            None => PidHandle::Unsupported,
        }
    }

    /// Waits up to `timeout_ms` (-1: forever) for a change in a watched directory, the exit
    /// of one of `pids` or a poke, and reports what happened.
    pub fn wait(&self, pids: &[(i32, RawFd)], timeout_ms: i32, buf: &mut [u8]) -> Events {
        let mut fds = Vec::with_capacity(2 + pids.len());
        for fd in [&self.wake_fd, &self.inotify].into_iter().flatten() {
            fds.push(pollfd(fd.as_raw_fd()));
        }
        let base = fds.len();
        fds.extend(pids.iter().map(|(_, fd)| pollfd(*fd)));
        poll_readable(&mut fds, timeout_ms);
        let mut events = Events::default();
        if let Some(fd) = &self.wake_fd {
            drain(fd.as_raw_fd(), buf);
        }
        if let Some(fd) = &self.inotify {
            read_inotify(fd.as_raw_fd(), buf, &mut events);
        }
        events.exited = pids
            .iter()
            .zip(fds.iter().skip(base))
            .filter(|(_, p)| p.revents != 0)
            .map(|((pid, _), _)| *pid)
            .collect();
        events
    }
}

/// Collects (wd, name) of every entry event, and the wds of the events about a whole
/// directory: it went away, its watch was dropped, or the queue overflowed (wd -1).
fn read_inotify(fd: i32, buf: &mut [u8], events: &mut Events) {
    const HEADER: usize = std::mem::size_of::<libc::inotify_event>();
    loop {
        // SAFETY: reads into a valid buffer from our own non-blocking fd.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            return;
        }
        let mut at = 0usize;
        let n = n as usize;
        while at + HEADER <= n {
            // SAFETY: the kernel wrote a whole inotify_event at `at`; read it unaligned.
            let ev: libc::inotify_event =
                unsafe { std::ptr::read_unaligned(buf[at..].as_ptr().cast()) };
            let name_len = ev.len as usize;
            let name_bytes = buf.get(at + HEADER..at + HEADER + name_len).unwrap_or(&[]);
            let end = name_bytes
                .iter()
                .position(|&b| b == 0)
                .unwrap_or(name_bytes.len());
            if ev.mask
                & (libc::IN_DELETE_SELF
                    | libc::IN_MOVE_SELF
                    | libc::IN_IGNORED
                    | libc::IN_Q_OVERFLOW)
                != 0
            {
                events.whole.push(ev.wd);
                events.overflowed |= ev.mask & libc::IN_Q_OVERFLOW != 0;
            } else {
                events
                    .entries
                    .push((ev.wd, OsString::from_vec(name_bytes[..end].to_vec())));
            }
            at += HEADER + name_len;
        }
    }
}
