//! Windows: `LockFileEx` byte locks (owned by a handle, released when it closes or its
//! process dies), opens that refuse reparse points (symlinks, junctions), identities from
//! `GetFileInformationByHandle`, process handles for liveness and exit wake-ups, and
//! Windows error codes mapped to the errno values Node reports (libuv's mapping).
//!
//! The watcher waits on `ReadDirectoryChangesW` reads of the locks directories (entries
//! deleted or renamed), process handles of the original's holders, and its wake-up event;
//! a holder of this package is watched through its byte (a helper thread blocked in
//! `LockFileEx`); `pollMs` covers the rest.

use super::{Events, HeldBytes, LockKind, PidHandle};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{File, Metadata, OpenOptions};
use std::os::windows::fs::{FileExt, OpenOptionsExt};
use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle, RawHandle};
use std::path::Path;
use std::sync::Mutex;
use windows_sys::Win32::Foundation::{
    CloseHandle, GetLastError, ERROR_ACCESS_DENIED, ERROR_ALREADY_EXISTS, ERROR_BAD_NETPATH,
    ERROR_BAD_NET_NAME, ERROR_BUSY, ERROR_CANT_RESOLVE_FILENAME, ERROR_DIRECTORY,
    ERROR_DIR_NOT_EMPTY, ERROR_DISK_FULL, ERROR_FILENAME_EXCED_RANGE, ERROR_FILE_EXISTS,
    ERROR_FILE_NOT_FOUND, ERROR_HANDLE_DISK_FULL, ERROR_INVALID_DRIVE, ERROR_INVALID_HANDLE,
    ERROR_INVALID_NAME, ERROR_INVALID_PARAMETER, ERROR_IO_INCOMPLETE, ERROR_LOCK_VIOLATION,
    ERROR_NOTIFY_ENUM_DIR, ERROR_NOT_ENOUGH_MEMORY, ERROR_NOT_SAME_DEVICE, ERROR_NOT_SUPPORTED,
    ERROR_OUTOFMEMORY, ERROR_PATH_NOT_FOUND, ERROR_SHARING_VIOLATION, ERROR_TOO_MANY_OPEN_FILES,
    ERROR_WRITE_PROTECT, HANDLE, STILL_ACTIVE, WAIT_OBJECT_0,
};
use windows_sys::Win32::Security::Cryptography::{
    BCryptGenRandom, BCRYPT_USE_SYSTEM_PREFERRED_RNG,
};
use windows_sys::Win32::Storage::FileSystem::{
    GetFileInformationByHandle, LockFileEx, ReadDirectoryChangesW, UnlockFileEx,
    BY_HANDLE_FILE_INFORMATION, FILE_ACTION_REMOVED, FILE_ACTION_RENAMED_NEW_NAME,
    FILE_ACTION_RENAMED_OLD_NAME, FILE_FLAG_BACKUP_SEMANTICS, FILE_FLAG_OPEN_REPARSE_POINT,
    FILE_FLAG_OVERLAPPED, FILE_LIST_DIRECTORY, FILE_NOTIFY_CHANGE_FILE_NAME,
    FILE_NOTIFY_INFORMATION, FILE_SHARE_DELETE, FILE_SHARE_READ, FILE_SHARE_WRITE,
    LOCKFILE_EXCLUSIVE_LOCK, LOCKFILE_FAIL_IMMEDIATELY,
};
use windows_sys::Win32::System::Threading::{
    CreateEventW, GetExitCodeProcess, OpenProcess, ResetEvent, SetEvent, WaitForMultipleObjects,
    WaitForSingleObject, PROCESS_QUERY_LIMITED_INFORMATION, PROCESS_SYNCHRONIZE,
};
use windows_sys::Win32::System::IO::{CancelIoEx, GetOverlappedResult, OVERLAPPED};

/// Byte-range locks owned by a handle.
pub const KERNEL_BYTE_LOCKS: bool = true;

/// A file open here cannot be renamed over (a refresh) while it is open, and a deleted
/// file that is still open keeps its directory from being removed (unless the file system
/// and Windows version offer POSIX semantics); so no file is kept open between calls: each
/// claim publishes from a new file, and each judgement opens the owner file anew.
pub const KEEP_FILES_OPEN: bool = false;

/// `ERROR_DIRECTORY_NOT_SUPPORTED`, which libuv reports as EISDIR: what opening a
/// directory as a file answers here (Windows itself says access denied).
const IS_A_DIRECTORY: i32 = 336;

/// Unix open flags have no meaning here: the opens that take them are never made
/// ([`crate::paths::open_without_symlinks`] is unsupported on Windows).
pub const O_NONBLOCK: i32 = 0;
pub const O_PATH: i32 = 0;
pub const FLAGS_READ: i32 = 0;
pub const FLAGS_READ_NONBLOCK: i32 = 0;
pub const FLAGS_RDWR_CREATE: i32 = 0;

/// `ERROR_CANT_RESOLVE_FILENAME`, which libuv reports as ELOOP: what an open that refuses
/// to follow a reparse point answers when it finds one.
const REFUSED_REPARSE_POINT: i32 = ERROR_CANT_RESOLVE_FILENAME as i32;

/// The raw handle of an open file or an owned handle, for a Win32 call.
fn handle(owned: &impl AsRawHandle) -> HANDLE {
    owned.as_raw_handle() as HANDLE
}

fn overlapped_at(offset: u64) -> OVERLAPPED {
    // SAFETY: OVERLAPPED is plain old data; all-zero is its documented initial value.
    let mut ov: OVERLAPPED = unsafe { std::mem::zeroed() };
    ov.Anonymous.Anonymous.Offset = offset as u32;
    ov.Anonymous.Anonymous.OffsetHigh = (offset >> 32) as u32;
    ov
}

/// Places (or removes) a lock on the byte at `offset`; `wait`: until it can be placed.
/// `Ok(false)` when another handle holds it and `wait` is false.
pub fn set_byte_lock(
    file: &File,
    _held: &HeldBytes,
    kind: LockKind,
    offset: u64,
    wait: bool,
) -> std::io::Result<bool> {
    lock_range(file, kind, offset, wait)
}

fn lock_range(file: &File, kind: LockKind, offset: u64, wait: bool) -> std::io::Result<bool> {
    let mut ov = overlapped_at(offset);
    let flags = match kind {
        LockKind::Unlock => {
            // SAFETY: a live handle and an OVERLAPPED naming the range, both alive for the call.
            let ok = unsafe { UnlockFileEx(handle(file), 0, 1, 0, &mut ov) };
            return if ok != 0 {
                Ok(true)
            } else {
                Err(std::io::Error::last_os_error())
            };
        }
        LockKind::Write => LOCKFILE_EXCLUSIVE_LOCK,
        LockKind::Read => 0,
    } | if wait { 0 } else { LOCKFILE_FAIL_IMMEDIATELY };
    // SAFETY: as above; the handle is synchronous, so the call returns once it is decided.
    let ok = unsafe { LockFileEx(handle(file), flags, 0, 1, 0, &mut ov) };
    if ok != 0 {
        return Ok(true);
    }
    let err = std::io::Error::last_os_error();
    if !wait && err.raw_os_error() == Some(ERROR_LOCK_VIOLATION as i32) {
        return Ok(false);
    }
    Err(err)
}

/// Whether another handle holds the byte at `offset`: a lock placed and at once removed
/// (Windows has no test without taking).
pub fn probe_byte_lock(file: &File, offset: u64) -> std::io::Result<bool> {
    if lock_range(file, LockKind::Write, offset, false)? {
        // Removing a lock just placed: failure would leave it until the handle closes.
        let _ = lock_range(file, LockKind::Unlock, offset, false);
        Ok(false)
    } else {
        Ok(true)
    }
}

/// Blocks until a shared lock on the byte at `offset` is placed (its holder let go of it,
/// or died), or the wait fails. Closing `file` drops it.
/// Always `true`: the byte is there to wait on.
pub fn wait_byte_free(file: &File, offset: u64) -> bool {
    let _ = lock_range(file, LockKind::Read, offset, true);
    true
}

/// Options that open a reparse point itself rather than what it points to; with
/// [`checked_open`], such an open is refused. Shared for reading, writing and deleting (so
/// that others may rename or delete the file while it is open, as on Unix).
pub fn nofollow_options(_extra: i32) -> OpenOptions {
    let mut options = OpenOptions::new();
    options
        .share_mode(FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE)
        .custom_flags(FILE_FLAG_OPEN_REPARSE_POINT);
    options
}

/// Opens with [`nofollow_options`], refusing (as ELOOP) a symlink or junction.
pub fn checked_open(options: &OpenOptions, path: &Path) -> std::io::Result<File> {
    let file = match options.open(path) {
        Ok(file) => file,
        Err(e)
            if e.raw_os_error() == Some(ERROR_ACCESS_DENIED as i32)
                && std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) =>
        {
            return Err(std::io::Error::from_raw_os_error(IS_A_DIRECTORY));
        }
        Err(e) => return Err(e),
    };
    if file.metadata()?.file_type().is_symlink() {
        return Err(std::io::Error::from_raw_os_error(REFUSED_REPARSE_POINT));
    }
    Ok(file)
}

/// The errno Node reports for an I/O error (libuv's `uv_translate_sys_error`, for the
/// errors a lock meets); unknown codes map past every errno ("EUNKNOWN").
pub fn errno(e: &std::io::Error) -> Option<i32> {
    let code = e.raw_os_error()?;
    let Ok(win) = u32::try_from(code) else {
        return Some(code);
    };
    Some(match win {
        ERROR_FILE_NOT_FOUND | ERROR_PATH_NOT_FOUND | ERROR_INVALID_DRIVE | ERROR_BAD_NETPATH
        | ERROR_BAD_NET_NAME | ERROR_INVALID_NAME => libc::ENOENT,
        ERROR_DIRECTORY => libc::ENOTDIR,
        ERROR_ACCESS_DENIED => libc::EPERM,
        ERROR_SHARING_VIOLATION | ERROR_LOCK_VIOLATION | ERROR_BUSY => libc::EBUSY,
        ERROR_FILE_EXISTS | ERROR_ALREADY_EXISTS => libc::EEXIST,
        ERROR_NOT_SAME_DEVICE => libc::EXDEV,
        ERROR_DIR_NOT_EMPTY => libc::ENOTEMPTY,
        ERROR_DISK_FULL | ERROR_HANDLE_DISK_FULL => libc::ENOSPC,
        ERROR_WRITE_PROTECT => libc::EROFS,
        ERROR_TOO_MANY_OPEN_FILES => libc::EMFILE,
        ERROR_FILENAME_EXCED_RANGE => libc::ENAMETOOLONG,
        ERROR_NOT_ENOUGH_MEMORY | ERROR_OUTOFMEMORY => libc::ENOMEM,
        ERROR_INVALID_PARAMETER => libc::EINVAL,
        ERROR_INVALID_HANDLE => libc::EBADF,
        ERROR_NOT_SUPPORTED => libc::ENOTSUP,
        ERROR_CANT_RESOLVE_FILENAME => libc::ELOOP,
        336 => libc::EISDIR,
        _ => 0x1_0000 + code,
    })
}

fn file_info(file: &File) -> Option<BY_HANDLE_FILE_INFORMATION> {
    // SAFETY: plain old data; all-zero is a valid value.
    let mut info: BY_HANDLE_FILE_INFORMATION = unsafe { std::mem::zeroed() };
    // SAFETY: a live handle and a buffer owned by this frame.
    (unsafe { GetFileInformationByHandle(handle(file), &mut info) } != 0).then_some(info)
}

/// A file's identity (volume serial number, file index), from its handle; (0, 0) when it
/// cannot be read (no handle: only an open file tells it on Windows).
pub fn file_key(file: Option<&File>, _meta: &Metadata) -> (u64, u64) {
    file.and_then(file_info).map_or((0, 0), |info| {
        (
            u64::from(info.dwVolumeSerialNumber),
            (u64::from(info.nFileIndexHigh) << 32) | u64::from(info.nFileIndexLow),
        )
    })
}

/// The identity of what `path` names (the reparse point itself unless `follow`), with its
/// metadata: opened for attributes only, shared in every way, directories included.
pub fn path_key(path: &Path, follow: bool) -> std::io::Result<((u64, u64), Metadata)> {
    let mut flags = FILE_FLAG_BACKUP_SEMANTICS;
    if !follow {
        flags |= FILE_FLAG_OPEN_REPARSE_POINT;
    }
    let file = OpenOptions::new()
        .access_mode(0)
        .share_mode(FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE)
        .custom_flags(flags)
        .open(path)?;
    let meta = file.metadata()?;
    Ok((file_key(Some(&file), &meta), meta))
}

/// How many names the file has.
pub fn nlink(file: &File, _meta: &Metadata) -> u64 {
    file_info(file).map_or(1, |info| u64::from(info.nNumberOfLinks))
}

pub fn read_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    file.seek_read(buf, offset)
}

pub fn write_all_at(file: &File, mut buf: &[u8], mut offset: u64) -> std::io::Result<()> {
    while !buf.is_empty() {
        match file.seek_write(buf, offset) {
            Ok(0) => return Err(std::io::Error::from(std::io::ErrorKind::WriteZero)),
            Ok(n) => {
                buf = &buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The OS string of bytes from [`OsStr::as_encoded_bytes`] (and ASCII added).
pub fn os_str_from_encoded(bytes: &[u8]) -> &OsStr {
    // SAFETY: every caller passes bytes of `as_encoded_bytes` (from this process, this
    // toolchain), possibly joined with ASCII, which the encoding allows.
    unsafe { OsStr::from_encoded_bytes_unchecked(bytes) }
}

/// The computer's name, as the record's `host` field (empty if unset).
pub fn hostname() -> String {
    std::env::var("COMPUTERNAME").unwrap_or_default()
}

/// `true` only when the process is certainly gone: no such pid, or it has exited. A process
/// we may not open (access denied) exists.
pub fn pid_is_gone(pid: i32) -> bool {
    let Ok(pid) = u32::try_from(pid) else {
        return true;
    };
    // SAFETY: plain call; a null handle means failure.
    let h = unsafe { OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid) };
    if h.is_null() {
        // SAFETY: reads this thread's last error.
        return unsafe { GetLastError() } == ERROR_INVALID_PARAMETER;
    }
    let mut code = 0u32;
    // SAFETY: a live process handle and a u32 owned here.
    let ok = unsafe { GetExitCodeProcess(h, &mut code) };
    // SAFETY: closing the handle opened above, once.
    unsafe { CloseHandle(h) };
    ok != 0 && code != STILL_ACTIVE as u32
}

/// No `/proc`: `defaultStartTimeResolver` gives `undefined` on Windows, as the original's.
pub fn proc_stat(_pid: &str) -> Option<(char, f64)> {
    None
}

/// When a process started (`GetProcessTimes`' creation time, in 100 ns units since 1601):
/// it changes when the pid is reused. Used by this package's own records only
/// (`procStart`); the original's start times stay `undefined` here.
pub fn process_start(pid: i32) -> Option<u64> {
    use windows_sys::Win32::Foundation::FILETIME;
    use windows_sys::Win32::System::Threading::GetProcessTimes;
    let pid = u32::try_from(pid).ok()?;
    // SAFETY: plain call; a null handle is checked below.
    let h = unsafe { OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid) };
    if h.is_null() {
        return None;
    }
    // SAFETY: OpenProcess gave us this handle; owned (closed) from here on.
    let h = unsafe { OwnedHandle::from_raw_handle(h as RawHandle) };
    let zero = FILETIME {
        dwLowDateTime: 0,
        dwHighDateTime: 0,
    };
    let (mut created, mut exited, mut kernel, mut user) = (zero, zero, zero, zero);
    // SAFETY: a live process handle and four out-parameters alive for the call.
    let ok = unsafe {
        GetProcessTimes(
            handle(&h),
            &mut created,
            &mut exited,
            &mut kernel,
            &mut user,
        )
    };
    (ok != 0).then(|| (u64::from(created.dwHighDateTime) << 32) | u64::from(created.dwLowDateTime))
}

pub fn state_is_dead(_state: char) -> bool {
    false
}

/// No boot id is read on Windows: records of another host are told apart by host name.
pub fn boot_id() -> Option<String> {
    None
}

/// Windows has no PID namespaces.
pub fn pid_namespace() -> Option<String> {
    None
}

/// Node's safeGetenv trusts the environment on Windows.
pub fn secure_exec() -> bool {
    false
}

/// The user's profile directory from the system, as libuv's `uv_os_homedir` falls back to
/// when `USERPROFILE` is unset: `GetUserProfileDirectoryW` for this process's token.
pub fn user_profile_dir() -> Option<String> {
    use std::os::windows::ffi::OsStringExt;
    use windows_sys::Win32::Security::TOKEN_READ;
    use windows_sys::Win32::System::Threading::{GetCurrentProcess, OpenProcessToken};
    use windows_sys::Win32::UI::Shell::GetUserProfileDirectoryW;
    let mut token: HANDLE = std::ptr::null_mut();
    // SAFETY: the pseudo-handle of this process, and an out-parameter alive for the call.
    if unsafe { OpenProcessToken(GetCurrentProcess(), TOKEN_READ, &mut token) } == 0 {
        return None;
    }
    // SAFETY: OpenProcessToken gave us this handle; owned (closed) from here on.
    let token = unsafe { OwnedHandle::from_raw_handle(token as RawHandle) };
    let mut len: u32 = 0;
    // SAFETY: asks for the length only (a null buffer of size 0), as documented.
    unsafe { GetUserProfileDirectoryW(handle(&token), std::ptr::null_mut(), &mut len) };
    if len == 0 {
        return None;
    }
    let mut buf = vec![0u16; len as usize];
    // SAFETY: a buffer of `len` UTF-16 units, as the previous call asked for.
    if unsafe { GetUserProfileDirectoryW(handle(&token), buf.as_mut_ptr(), &mut len) } == 0 {
        return None;
    }
    let end = buf.iter().position(|&c| c == 0).unwrap_or(buf.len());
    // libuv converts with WTF-8; an unpaired surrogate becomes U+FFFD here, as elsewhere in
    // this layer's paths.
    Some(
        std::ffi::OsString::from_wide(&buf[..end])
            .to_string_lossy()
            .into_owned(),
    )
}

/// Fills `buf` from the system's preferred random generator.
pub fn random_bytes(buf: &mut [u8]) -> bool {
    let Ok(len) = u32::try_from(buf.len()) else {
        return false;
    };
    // SAFETY: a buffer valid for `len` bytes; no algorithm handle with the system RNG flag.
    let status = unsafe {
        BCryptGenRandom(
            std::ptr::null_mut(),
            buf.as_mut_ptr(),
            len,
            BCRYPT_USE_SYSTEM_PREFERRED_RNG,
        )
    };
    status == 0
}

/// One watched directory: its handle (opened for overlapped reads), the event its read
/// signals, and the read in flight. Boxed, so that the kernel writes to memory that does not
/// move while a read is pending.
struct DirWatch {
    dir: File,
    event: OwnedHandle,
    ov: OVERLAPPED,
    buf: Vec<u32>,
    pending: bool,
}

// SAFETY: the OVERLAPPED's raw pointer names this watch's own event; the watch moves between
// threads only inside the notifier's mutex.
unsafe impl Send for DirWatch {}

/// What may free a lock: its entry deleted or renamed away, or replaced by a rename. New
/// entries (a claim appearing) free none, as with inotify on Linux.
const WATCHED_ACTIONS: [u32; 3] = [
    FILE_ACTION_REMOVED,
    FILE_ACTION_RENAMED_OLD_NAME,
    FILE_ACTION_RENAMED_NEW_NAME,
];

impl DirWatch {
    fn open(dir: &Path) -> Option<Box<DirWatch>> {
        let handle = OpenOptions::new()
            .access_mode(FILE_LIST_DIRECTORY)
            .share_mode(FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE)
            .custom_flags(FILE_FLAG_BACKUP_SEMANTICS | FILE_FLAG_OVERLAPPED)
            .open(dir)
            .ok()?;
        // SAFETY: an unnamed manual-reset event, initially unsignalled; null on failure.
        let raw = unsafe { CreateEventW(std::ptr::null(), 1, 0, std::ptr::null()) };
        if raw.is_null() {
            return None;
        }
        let mut watch = Box::new(DirWatch {
            dir: handle,
            // SAFETY: a new handle, owned by nobody else.
            event: unsafe { OwnedHandle::from_raw_handle(raw) },
            // SAFETY: plain old data; all-zero is its documented initial value.
            ov: unsafe { std::mem::zeroed() },
            buf: vec![0u32; 16 * 1024],
            pending: false,
        });
        watch.read().then_some(watch)
    }

    /// Starts the next read of changes; `false` if the directory cannot be read any more.
    fn read(&mut self) -> bool {
        let event = self.event.as_raw_handle() as HANDLE;
        // SAFETY: our own event handle.
        unsafe { ResetEvent(event) };
        // SAFETY: plain old data; all-zero is its documented initial value.
        self.ov = unsafe { std::mem::zeroed() };
        self.ov.hEvent = event;
        // SAFETY: a directory handle opened for overlapped reads, a buffer and an OVERLAPPED
        // owned by this boxed watch, which outlives the read (see `Drop`).
        let ok = unsafe {
            ReadDirectoryChangesW(
                handle(&self.dir),
                self.buf.as_mut_ptr().cast(),
                (self.buf.len() * 4) as u32,
                0,
                FILE_NOTIFY_CHANGE_FILE_NAME,
                std::ptr::null_mut(),
                &mut self.ov,
                None,
            )
        };
        self.pending = ok != 0;
        self.pending
    }

    /// Adds the changes of a completed read to `events` and starts the next read; `false`
    /// when the watch no longer works (its directory went away). An overflowed read (no
    /// record) reports every entry of the directory as changed.
    fn collect(&mut self, wd: i32, events: &mut Events) -> bool {
        if !self.pending {
            return false;
        }
        let mut n = 0u32;
        // SAFETY: the read's own handle and OVERLAPPED; no wait.
        let done = unsafe { GetOverlappedResult(handle(&self.dir), &self.ov, &mut n, 0) };
        if done == 0 {
            // SAFETY: reads this thread's last error.
            let err = unsafe { GetLastError() };
            if err == ERROR_IO_INCOMPLETE {
                return true;
            }
            self.pending = false;
            if err == ERROR_NOTIFY_ENUM_DIR {
                events.dirs_changed.push(wd);
                return self.read();
            }
            return false;
        }
        self.pending = false;
        if n == 0 {
            events.dirs_changed.push(wd);
        }
        let bytes = (n as usize).min(self.buf.len() * 4);
        let base = self.buf.as_ptr().cast::<u8>();
        let header = std::mem::offset_of!(FILE_NOTIFY_INFORMATION, FileName);
        let mut at = 0usize;
        while at + header <= bytes {
            // SAFETY: the kernel wrote a FILE_NOTIFY_INFORMATION at `at`, DWORD-aligned.
            let info =
                unsafe { std::ptr::read_unaligned(base.add(at).cast::<FILE_NOTIFY_INFORMATION>()) };
            let len = info.FileNameLength as usize / 2;
            if at + header + len * 2 > bytes {
                break;
            }
            if WATCHED_ACTIONS.contains(&info.Action) {
                let mut name = vec![0u16; len];
                // SAFETY: `len` UTF-16 units of the name lie within the bytes written.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        base.add(at + header),
                        name.as_mut_ptr().cast::<u8>(),
                        len * 2,
                    )
                };
                use std::os::windows::ffi::OsStringExt;
                events
                    .entries
                    .push((wd, std::ffi::OsString::from_wide(&name)));
            }
            if info.NextEntryOffset == 0 {
                break;
            }
            at += info.NextEntryOffset as usize;
        }
        self.read()
    }
}

impl Drop for DirWatch {
    fn drop(&mut self) {
        if self.pending {
            let mut n = 0u32;
            // SAFETY: cancels this watch's own read, then waits for it to end, so that the
            // buffer and OVERLAPPED are no longer written to when they are freed.
            unsafe {
                CancelIoEx(handle(&self.dir), &self.ov);
                GetOverlappedResult(handle(&self.dir), &self.ov, &mut n, 1);
            }
        }
    }
}

/// The watched directories, by their watch id.
#[derive(Default)]
struct DirWatches {
    next: i32,
    map: HashMap<i32, Box<DirWatch>>,
}

/// A process handle that is signalled when the process exits.
pub type PidFd = OwnedHandle;
pub type RawPidFd = RawHandle;

pub fn raw_pid_fd(fd: &PidFd) -> RawPidFd {
    fd.as_raw_handle()
}

/// `WaitForMultipleObjects` takes at most 64 handles: the wake-up event and 63 processes;
/// holders beyond those are covered by `pollMs`.
const MAX_PID_WAITS: usize = 63;

/// Whether the [`Notifier`] reports a process's exit (process handles).
pub const PID_HANDLES: bool = true;

/// The watcher's kernel objects: an auto-reset event to wake it, and the directories it
/// watches (`ReadDirectoryChangesW`, one overlapped read in flight each).
pub struct Notifier {
    wake: Option<OwnedHandle>,
    dirs: Mutex<DirWatches>,
}

/// At most this many directories are waited on at once (with the wake-up and the process
/// handles, `WaitForMultipleObjects` takes 64): the others' waiters wake on `pollMs`.
const MAX_DIR_WAITS: usize = 24;

impl Notifier {
    pub fn open() -> Notifier {
        // SAFETY: an unnamed auto-reset event, initially unsignalled; null on failure.
        let raw = unsafe { CreateEventW(std::ptr::null(), 0, 0, std::ptr::null()) };
        Notifier {
            // SAFETY: a new handle, owned by nobody else.
            wake: (!raw.is_null()).then(|| unsafe { OwnedHandle::from_raw_handle(raw) }),
            dirs: Mutex::new(DirWatches::default()),
        }
    }

    pub fn poke(&self) {
        if let Some(event) = &self.wake {
            // SAFETY: a live event handle.
            unsafe { SetEvent(event.as_raw_handle() as HANDLE) };
        }
    }

    fn watches(&self) -> std::sync::MutexGuard<'_, DirWatches> {
        self.dirs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Watches the entries of `dir` (deleted or renamed); `None` if it cannot be watched or
    /// too many are.
    pub fn add_watch(&self, dir: &Path) -> Option<i32> {
        if self.watches().map.len() >= MAX_DIR_WAITS {
            return None;
        }
        let watch = DirWatch::open(dir)?;
        let mut dirs = self.watches();
        dirs.next = dirs.next.wrapping_add(1).max(1);
        let wd = dirs.next;
        dirs.map.insert(wd, watch);
        drop(dirs);
        // The watcher waits on the new watch's event from its next turn.
        self.poke();
        Some(wd)
    }

    pub fn rm_watch(&self, wd: i32) {
        let removed = self.watches().map.remove(&wd);
        drop(removed);
    }

    /// A handle that is signalled when `pid` exits.
    pub fn watch_pid(&self, pid: i32) -> PidHandle<PidFd> {
        let Ok(id) = u32::try_from(pid) else {
            return PidHandle::Gone;
        };
        // SAFETY: plain call; a null handle means failure.
        let h = unsafe { OpenProcess(PROCESS_SYNCHRONIZE, 0, id) };
        if h.is_null() {
            // SAFETY: reads this thread's last error.
            return if unsafe { GetLastError() } == ERROR_INVALID_PARAMETER {
                PidHandle::Gone
            } else {
                PidHandle::Unsupported
            };
        }
        // SAFETY: a new handle, owned by nobody else.
        PidHandle::Watching(unsafe { OwnedHandle::from_raw_handle(h) })
    }

    /// Waits up to `timeout_ms` (-1: forever) for a change in a watched directory, a poke
    /// or the exit of one of `pids`.
    pub fn wait(&self, pids: &[(i32, RawPidFd)], timeout_ms: i32, _buf: &mut [u8]) -> Events {
        let mut handles: Vec<HANDLE> = Vec::with_capacity(64);
        if let Some(event) = &self.wake {
            handles.push(event.as_raw_handle() as HANDLE);
        }
        // A watch removed while we wait closes its event: the wait then ends at once, and
        // the next turn takes the list anew.
        handles.extend(
            self.watches()
                .map
                .values()
                .map(|w| w.event.as_raw_handle() as HANDLE),
        );
        let waited = &pids[..pids.len().min(MAX_PID_WAITS.saturating_sub(handles.len()))];
        handles.extend(waited.iter().map(|(_, h)| *h as HANDLE));
        let timeout = u32::try_from(timeout_ms).unwrap_or(u32::MAX);
        if handles.is_empty() {
            std::thread::sleep(std::time::Duration::from_millis(u64::from(timeout.min(10))));
        } else {
            // SAFETY: an array of live handles of the given length.
            unsafe { WaitForMultipleObjects(handles.len() as u32, handles.as_ptr(), 0, timeout) };
        }
        let mut events = Events {
            exited: waited
                .iter()
                // SAFETY: a live process handle; a zero timeout only tests it.
                .filter(|(_, h)| unsafe { WaitForSingleObject(*h as HANDLE, 0) } == WAIT_OBJECT_0)
                .map(|(pid, _)| *pid)
                .collect(),
            ..Events::default()
        };
        let mut dirs = self.watches();
        let mut dead = Vec::new();
        for (wd, watch) in dirs.map.iter_mut() {
            if !watch.collect(*wd, &mut events) {
                dead.push(*wd);
            }
        }
        for wd in dead {
            dirs.map.remove(&wd);
            events.whole.push(wd);
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_files_have_distinct_keys_and_names_of_one_file_share_it() {
        let dir = crate::test_support::TempDir::new("win-keys");
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        std::fs::write(&a, b"a").unwrap();
        std::fs::write(&b, b"b").unwrap();
        std::fs::hard_link(&a, dir.path().join("a2")).unwrap();
        let key = |p: &Path| path_key(p, false).unwrap().0;
        assert_ne!(key(&a), key(&b));
        assert_eq!(key(&a), key(&dir.path().join("a2")));
        let file = File::open(&a).unwrap();
        assert_eq!(nlink(&file, &file.metadata().unwrap()), 2);
    }
}
