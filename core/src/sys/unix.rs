//! What every POSIX system offers alike.

use std::ffi::{CStr, CString, OsStr, OsString};
use std::fs::{File, Metadata, OpenOptions};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::fs::OpenOptionsExt;

/// Options that open a file only if its last component is no symlink (ELOOP if it is),
/// closed on exec, created (if asked) with mode 0644; `extra`: more open flags.
pub fn nofollow_options(extra: libc::c_int) -> OpenOptions {
    let mut options = OpenOptions::new();
    options
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | extra)
        .mode(0o644);
    options
}

/// `O_NONBLOCK`: opening a FIFO does not wait for a writer.
pub const O_NONBLOCK: libc::c_int = libc::O_NONBLOCK;

/// Whether files are kept open between calls (spares in `lockfile_io`, owner files for
/// judging in `kernel_lock`): on Unix an open file can still be renamed over and deleted,
/// and its directory removed.
pub const KEEP_FILES_OPEN: bool = true;

/// Open flags for [`crate::paths::open_without_symlinks`].
pub const FLAGS_READ: libc::c_int = libc::O_RDONLY;
pub const FLAGS_READ_NONBLOCK: libc::c_int = libc::O_RDONLY | libc::O_NONBLOCK;
pub const FLAGS_RDWR_CREATE: libc::c_int = libc::O_RDWR | libc::O_CREAT;

/// Opens with options from [`nofollow_options`] (the kernel refuses a final symlink).
#[inline]
pub fn checked_open(options: &OpenOptions, path: &std::path::Path) -> std::io::Result<File> {
    options.open(path)
}

/// The errno of an I/O error (here the OS's own code).
#[inline]
pub fn errno(e: &std::io::Error) -> Option<i32> {
    e.raw_os_error()
}

/// The OS string of bytes from [`std::ffi::OsStr::as_encoded_bytes`] (and ASCII added).
#[inline]
pub fn os_str_from_encoded(bytes: &[u8]) -> &std::ffi::OsStr {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::OsStr::from_bytes(bytes)
}

/// A file's identity (device, inode) from its metadata; `_file` is the open file it came
/// from, where there is one (Windows needs it).
#[inline]
pub fn file_key(_file: Option<&File>, meta: &Metadata) -> (u64, u64) {
    (meta.dev(), meta.ino())
}

/// The identity of what `path` names (the symlink itself unless `follow`), with its
/// metadata.
#[inline]
pub fn path_key(path: &std::path::Path, follow: bool) -> std::io::Result<((u64, u64), Metadata)> {
    let meta = if follow {
        std::fs::metadata(path)?
    } else {
        std::fs::symlink_metadata(path)?
    };
    Ok(((meta.dev(), meta.ino()), meta))
}

/// How many names the file has.
#[inline]
pub fn nlink(_file: &File, meta: &Metadata) -> u64 {
    meta.nlink()
}

#[inline]
pub fn read_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    std::os::unix::fs::FileExt::read_at(file, buf, offset)
}

#[inline]
pub fn write_all_at(file: &File, buf: &[u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, buf, offset)
}

/// stat (`follow`) or lstat of `name` in the directory `dir`, answering whether it is a
/// symlink.
pub fn is_symlink_at(dir: BorrowedFd, name: &str, follow: bool) -> std::io::Result<bool> {
    let c_name =
        CString::new(name).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let flags = if follow { 0 } else { libc::AT_SYMLINK_NOFOLLOW };
    // SAFETY: stat is plain old data; all-zero is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a live descriptor, a NUL-terminated name and a stat buffer owned here.
    let rc = unsafe { libc::fstatat(dir.as_raw_fd(), c_name.as_ptr(), &mut st, flags) };
    if rc == 0 {
        Ok(st.st_mode & libc::S_IFMT == libc::S_IFLNK)
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// `kill(pid, 0)`: `true` only when the process is certainly gone (ESRCH); a process we may
/// not signal (EPERM) exists.
pub fn pid_is_gone(pid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence and permission; it sends nothing.
    let rc = unsafe { libc::kill(pid, 0) };
    rc != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

/// gethostname(2), lossily decoded; empty if it fails.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates on success.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return String::new();
    }
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..len]).into_owned()
}

/// Whether the process runs with other real than effective ids.
pub fn ids_differ() -> bool {
    // SAFETY: these calls take no arguments, touch no memory and cannot fail.
    unsafe { libc::getuid() != libc::geteuid() || libc::getgid() != libc::getegid() }
}

/// The home directory of the effective uid from the passwd database (libuv's
/// uv_os_get_passwd), as an errno on failure (ENOENT when there is no entry).
pub fn passwd_home() -> Result<OsString, i32> {
    // SAFETY: no arguments, cannot fail.
    let uid = unsafe { libc::geteuid() };
    let mut size: usize = 4096;
    loop {
        let mut buf: Vec<libc::c_char> = vec![0; size];
        // SAFETY: passwd is plain old data; all-zero is a valid (empty) value.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer refers to live, correctly sized storage owned by this frame.
        let rc =
            unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result) };
        match rc {
            0 if result.is_null() || pwd.pw_dir.is_null() => return Err(libc::ENOENT),
            0 => {
                // SAFETY: on success pw_dir points to a NUL-terminated string inside `buf`.
                let dir = unsafe { CStr::from_ptr(pwd.pw_dir) };
                return Ok(OsStr::from_bytes(dir.to_bytes()).to_os_string());
            }
            libc::EINTR => {}
            // The entry did not fit: grow, within reason, like libuv does.
            libc::ERANGE if size < (1 << 20) => size *= 2,
            err => return Err(err),
        }
    }
}

/// Waits for any of `fds` to be readable for up to `timeout_ms` (-1: forever), setting their
/// `revents`. A failed poll sleeps a millisecond, so a caller's loop cannot spin.
pub fn poll_readable(fds: &mut [libc::pollfd], timeout_ms: i32) {
    // SAFETY: fds is a valid array of pollfd for its length.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    if n < 0 {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

pub fn pollfd(fd: i32) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

/// Reads a non-blocking descriptor until it is empty.
pub fn drain(fd: i32, buf: &mut [u8]) {
    // SAFETY: reads into a valid buffer from our own non-blocking fd.
    while unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
}

/// Writes `bytes` to a descriptor, once; a full pipe or counter is as good as written.
pub fn write_once(fd: i32, bytes: &[u8]) {
    // SAFETY: writes from a valid buffer to our own descriptor.
    unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
}

/// /dev/urandom, where the platform has no better call.
pub fn urandom(buf: &mut [u8]) -> bool {
    use std::io::Read;
    std::fs::File::open("/dev/urandom").is_ok_and(|mut f| f.read_exact(buf).is_ok())
}
