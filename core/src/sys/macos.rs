//! What macOS says about processes and this host.

use super::unix::{ids_differ, urandom};

/// No `/proc` here: no state or start time is read for a pid (the original's
/// `defaultStartTimeResolver` gives `undefined` on macOS too); liveness goes by
/// `kill(pid, 0)` and the heartbeat.
pub fn proc_stat(_pid: &str) -> Option<(char, f64)> {
    None
}

/// When a process started (`proc_pidinfo`, `PROC_PIDTBSDINFO`), in microseconds since the
/// epoch: it changes when the pid is reused. Used by this package's own records only
/// (`procStart`); the original's start times stay `undefined` here.
pub fn process_start(pid: i32) -> Option<u64> {
    // SAFETY: a zeroed plain C struct, filled by the kernel up to its size.
    let mut info: libc::proc_bsdinfo = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::proc_bsdinfo>() as libc::c_int;
    // SAFETY: a buffer of `size` bytes for this flavor, alive for the call.
    let got = unsafe {
        libc::proc_pidinfo(
            pid,
            libc::PROC_PIDTBSDINFO,
            0,
            (&mut info as *mut libc::proc_bsdinfo).cast(),
            size,
        )
    };
    (got == size).then(|| info.pbi_start_tvsec * 1_000_000 + info.pbi_start_tvusec)
}

pub fn state_is_dead(_state: char) -> bool {
    false
}

/// The kernel's boot session UUID (`kern.bootsessionuuid`): equal only within one boot.
pub fn boot_id() -> Option<String> {
    let mut buf = [0u8; 64];
    let mut len = buf.len();
    let name = c"kern.bootsessionuuid";
    // SAFETY: a NUL-terminated name, a buffer and its length, all alive for the call.
    let rc = unsafe {
        libc::sysctlbyname(
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            &mut len,
            std::ptr::null_mut(),
            0,
        )
    };
    if rc != 0 {
        return None;
    }
    let text = buf.get(..len)?;
    let end = text.iter().position(|&b| b == 0).unwrap_or(text.len());
    let id = String::from_utf8_lossy(&text[..end]).trim().to_string();
    (!id.is_empty()).then_some(id)
}

/// macOS has no PID namespaces: every process of a boot shares the one.
pub fn pid_namespace() -> Option<String> {
    None
}

/// Whether the process runs with other real than effective ids (Node's safeGetenv checks
/// the same off Linux).
pub fn secure_exec() -> bool {
    ids_differ()
}

/// Fills `buf` from the kernel's random source (`getentropy`, 256 bytes at most a call).
pub fn random_bytes(buf: &mut [u8]) -> bool {
    // SAFETY: buf is valid for its length.
    (buf.len() <= 256 && unsafe { libc::getentropy(buf.as_mut_ptr().cast(), buf.len()) } == 0)
        || urandom(buf)
}

use super::{Events, PidHandle};
use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Mutex;

/// A process watched for its exit: kqueue registers the pid itself, so nothing is held.
pub type PidFd = i32;
pub type RawPidFd = RawFd;

pub fn raw_pid_fd(pid: &PidFd) -> RawPidFd {
    *pid
}

/// The wake-up's identifier among the kqueue's `EVFILT_USER` events.
const WAKE_IDENT: usize = 1;

fn kevent_for(ident: usize, filter: i16, flags: u16, fflags: u32) -> libc::kevent {
    libc::kevent {
        ident,
        filter,
        flags,
        fflags,
        data: 0,
        udata: std::ptr::null_mut(),
    }
}

/// Whether the [`Notifier`] reports a process's exit (kqueue EVFILT_PROC).
pub const PID_HANDLES: bool = true;

/// The watcher's kernel objects: one kqueue for directory changes (`EVFILT_VNODE` on an
/// `O_EVTONLY` descriptor of each watched directory), process exits (`EVFILT_PROC`,
/// `NOTE_EXIT`) and the wake-up (`EVFILT_USER`).
pub struct Notifier {
    kq: Option<OwnedFd>,
    /// The directory descriptors watched, by their number (the watch's id).
    dirs: Mutex<HashMap<i32, OwnedFd>>,
}

impl Notifier {
    pub fn open() -> Notifier {
        // SAFETY: plain constructor of a new descriptor (-1 on failure).
        let raw = unsafe { libc::kqueue() };
        // SAFETY: a new descriptor, owned by nobody else.
        let kq = (raw >= 0).then(|| unsafe { OwnedFd::from_raw_fd(raw) });
        let notifier = Notifier {
            kq,
            dirs: Mutex::new(HashMap::new()),
        };
        let wake = kevent_for(
            WAKE_IDENT,
            libc::EVFILT_USER,
            libc::EV_ADD | libc::EV_CLEAR,
            0,
        );
        if !notifier.change(&wake) {
            // No wake-up: the watcher would sleep through new waiters; poll instead.
            return Notifier {
                kq: None,
                dirs: Mutex::new(HashMap::new()),
            };
        }
        notifier
    }

    /// Registers one change; `false` if the kernel refused it.
    fn change(&self, ev: &libc::kevent) -> bool {
        let Some(kq) = &self.kq else {
            return false;
        };
        // SAFETY: a live kqueue, one change read from valid memory, no events asked for.
        let rc = unsafe {
            libc::kevent(
                kq.as_raw_fd(),
                ev,
                1,
                std::ptr::null_mut(),
                0,
                std::ptr::null(),
            )
        };
        rc >= 0
    }

    pub fn poke(&self) {
        let ev = kevent_for(WAKE_IDENT, libc::EVFILT_USER, 0, libc::NOTE_TRIGGER);
        self.change(&ev);
    }

    /// Watches the entries of `dir`; `None` if it cannot be watched.
    pub fn add_watch(&self, dir: &Path) -> Option<i32> {
        self.kq.as_ref()?;
        let c_dir = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
        // SAFETY: a NUL-terminated path; a new descriptor or -1.
        let raw = unsafe {
            libc::open(
                c_dir.as_ptr(),
                libc::O_EVTONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if raw < 0 {
            return None;
        }
        // SAFETY: a new descriptor, owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let ev = kevent_for(
            raw as usize,
            libc::EVFILT_VNODE,
            libc::EV_ADD | libc::EV_CLEAR,
            libc::NOTE_WRITE | libc::NOTE_DELETE | libc::NOTE_RENAME | libc::NOTE_REVOKE,
        );
        if !self.change(&ev) {
            return None;
        }
        self.dirs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(raw, fd);
        Some(raw)
    }

    /// Closing the directory's descriptor removes its kqueue registration.
    pub fn rm_watch(&self, wd: i32) {
        self.dirs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&wd);
    }

    /// Registers `pid` for its exit (once).
    pub fn watch_pid(&self, pid: i32) -> PidHandle<PidFd> {
        if self.kq.is_none() {
            return PidHandle::Unsupported;
        }
        let Ok(ident) = usize::try_from(pid) else {
            return PidHandle::Gone;
        };
        let ev = kevent_for(
            ident,
            libc::EVFILT_PROC,
            libc::EV_ADD | libc::EV_ONESHOT,
            libc::NOTE_EXIT,
        );
        if self.change(&ev) {
            PidHandle::Watching(pid)
        } else if std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH) {
            PidHandle::Gone
        } else {
            PidHandle::Unsupported
        }
    }

    /// Waits up to `timeout_ms` (-1: forever) for a change in a watched directory, a
    /// registered process's exit or a poke. Directory events name no entry: every waiter of
    /// that directory hears of them (`dirs_changed`).
    pub fn wait(&self, _pids: &[(i32, RawPidFd)], timeout_ms: i32, _buf: &mut [u8]) -> Events {
        let mut events = Events::default();
        let Some(kq) = &self.kq else {
            std::thread::sleep(std::time::Duration::from_millis(
                u64::try_from(timeout_ms).unwrap_or(10).min(10),
            ));
            return events;
        };
        let timeout = (timeout_ms >= 0).then(|| libc::timespec {
            tv_sec: libc::time_t::from(timeout_ms / 1000),
            tv_nsec: libc::c_long::from((timeout_ms % 1000) * 1_000_000),
        });
        let mut out = [kevent_for(0, 0, 0, 0); 64];
        // SAFETY: a live kqueue, an output array of its stated length, an optional timeout.
        let n = unsafe {
            libc::kevent(
                kq.as_raw_fd(),
                std::ptr::null(),
                0,
                out.as_mut_ptr(),
                out.len() as libc::c_int,
                timeout.as_ref().map_or(std::ptr::null(), |t| t as *const _),
            )
        };
        if n < 0 {
            std::thread::sleep(std::time::Duration::from_millis(1));
            return events;
        }
        for ev in out.iter().take(n as usize) {
            match ev.filter {
                libc::EVFILT_VNODE => {
                    let wd = ev.ident as i32;
                    if ev.fflags & (libc::NOTE_DELETE | libc::NOTE_RENAME | libc::NOTE_REVOKE) != 0
                    {
                        events.whole.push(wd);
                    } else {
                        events.dirs_changed.push(wd);
                    }
                }
                libc::EVFILT_PROC => events.exited.push(ev.ident as i32),
                _ => {}
            }
        }
        events
    }
}
