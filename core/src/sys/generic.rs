//! The portable Unix implementation: what any POSIX system offers, used on macOS and, with
//! the `generic-unix` feature, on Linux (so that CI runs the same code as a Mac does).
//!
//! Byte locks without byte-range locks: POSIX `fcntl` locks belong to the process (two opens
//! in one process never conflict, and closing any descriptor of the file drops them all),
//! so they cannot tell two holders of one process apart. `flock(2)` locks belong to an open
//! file description, conflict between two opens in one process and die with their process,
//! exactly like Linux's OFD byte locks, but lock whole files. So every "byte" is a file of
//! its own in the directory `.owners.d`: `m<offset>` for a per-name mutex (made once, kept),
//! `h<offset>` for a holder (made locked, removed at release).
//!
//! A holder file appears under its name already locked: it is made under a temporary name,
//! locked, then linked to its name (link refuses a name that exists). So a holder file found
//! unlocked is one whose holder has died or let go, and its name can be removed then by
//! whoever finds it so: no live holder can be using that name any more.
//!
//! No symlink-free open: paths take their full way.

use super::LockKind;
// Offsets from here on are holders' bytes, below are per-name mutexes.
use crate::kernel_lock::HOLDER_RANGE_START;
use std::collections::HashMap;
use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

pub const KERNEL_BYTE_LOCKS: bool = true;

/// The directory holding the lock files (a name of its own, so that a Linux host sharing the
/// locks directory over a network file system keeps its `.owners` file beside it).
pub const OWNERS_NAME: &str = ".owners.d";

/// No `O_PATH` here: such opens are never made (see [`open_without_symlinks`]).
pub const O_PATH: libc::c_int = libc::O_RDONLY;

/// The lock files an owner handle holds, by offset; each closes (unlocking) when dropped.
#[derive(Debug, Default)]
pub struct HeldBytes {
    files: Mutex<HashMap<u64, File>>,
}

impl HeldBytes {
    fn files(&self) -> std::sync::MutexGuard<'_, HashMap<u64, File>> {
        self.files.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Opens the owners directory at `path`, creating it if asked. Always read-only: the lock
/// files are made in it through this descriptor.
pub fn open_owners(path: &Path, create: bool, _write: bool) -> std::io::Result<File> {
    if create {
        match std::fs::create_dir(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    let mut options = super::nofollow_options(libc::O_DIRECTORY);
    options.read(true);
    super::checked_open(&options, path)
}

/// Before an owner handle closes: a holder's file loses its name while still locked (see the
/// module's notes), then every file closes with the handle.
pub fn release_held_bytes(owners: &File, held: &HeldBytes) {
    for offset in held.files().keys() {
        if *offset >= HOLDER_RANGE_START {
            let _ = unlink_at(owners, &name_of(*offset));
        }
    }
}

fn name_of(offset: u64) -> CString {
    let prefix = if offset >= HOLDER_RANGE_START {
        'h'
    } else {
        'm'
    };
    // Digits and a letter: never a NUL.
    CString::new(format!("{prefix}{offset:x}")).unwrap_or_default()
}

fn cvt(rc: libc::c_int) -> std::io::Result<libc::c_int> {
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn open_at(dir: &File, name: &CString, flags: libc::c_int) -> std::io::Result<File> {
    let flags = flags | libc::O_CLOEXEC | libc::O_NOFOLLOW;
    // SAFETY: a valid directory descriptor and a NUL-terminated name, alive for the call.
    let fd = cvt(unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags, 0o644) })?;
    // SAFETY: openat just returned this descriptor, owned by nothing else.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

fn unlink_at(dir: &File, name: &CString) -> std::io::Result<()> {
    // SAFETY: as in open_at.
    cvt(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) }).map(|_| ())
}

/// `flock` with `op`, again after a signal; `Ok(false)` if `LOCK_NB` found it held.
fn flock(file: &File, op: libc::c_int) -> std::io::Result<bool> {
    loop {
        // SAFETY: a valid descriptor.
        if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
            return Ok(true);
        }
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) if op & libc::LOCK_NB != 0 => return Ok(false),
            _ => return Err(err),
        }
    }
}

/// A holder's file, made locked under its name (see the module's notes); `Ok(false)` if the
/// name exists (another holder's, or a dead one's not yet removed: the caller draws another).
fn make_holder_file(dir: &File, name: &CString) -> std::io::Result<Option<File>> {
    static TEMP: AtomicU64 = AtomicU64::new(0);
    let temp = loop {
        let temp = CString::new(format!(
            "t{}-{}",
            std::process::id(),
            TEMP.fetch_add(1, Ordering::Relaxed)
        ))
        .unwrap_or_default();
        match open_at(dir, &temp, libc::O_RDWR | libc::O_CREAT | libc::O_EXCL) {
            Ok(file) => break (temp, file),
            // A leftover of a dead process that had this pid: take the next number.
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => continue,
            Err(e) => return Err(e),
        }
    };
    let (temp, file) = temp;
    let made = flock(&file, libc::LOCK_EX | libc::LOCK_NB).and_then(|locked| {
        if !locked {
            // Nobody else knows this new file: it cannot be locked already.
            return Err(std::io::Error::from(std::io::ErrorKind::WouldBlock));
        }
        // SAFETY: valid descriptors and NUL-terminated names, alive for the call.
        let rc = unsafe {
            libc::linkat(
                dir.as_raw_fd(),
                temp.as_ptr(),
                dir.as_raw_fd(),
                name.as_ptr(),
                0,
            )
        };
        match cvt(rc) {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(false),
            Err(e) => Err(e),
        }
    });
    let _ = unlink_at(dir, &temp);
    Ok(made?.then_some(file))
}

/// Places (or removes) the lock on `offset`'s file; `wait`: until it can be placed.
/// `Ok(false)` when another open file holds it and `wait` is false. Like a byte lock of one
/// open file description, a lock this handle already holds is held again at once.
pub fn set_byte_lock(
    owners: &File,
    held: &HeldBytes,
    kind: LockKind,
    offset: u64,
    wait: bool,
) -> std::io::Result<bool> {
    let name = name_of(offset);
    if kind == LockKind::Unlock {
        if let Some(file) = held.files().remove(&offset) {
            if offset >= HOLDER_RANGE_START {
                // Its name goes while it is still locked (see the module's notes).
                let _ = unlink_at(owners, &name);
            }
            drop(file);
        }
        return Ok(true);
    }
    if held.files().contains_key(&offset) {
        return Ok(true);
    }
    let file = if offset >= HOLDER_RANGE_START {
        match make_holder_file(owners, &name)? {
            Some(file) => file,
            None => return Ok(false),
        }
    } else {
        let file = match open_at(owners, &name, libc::O_RDWR | libc::O_CREAT) {
            Ok(file) => file,
            // A mutex in a deleted directory is nobody else's (claims make a new one): as
            // with a deleted `.owners`, whose bytes no one else locks either.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) && deleted(owners) => return Ok(true),
            Err(e) => return Err(e),
        };
        let op = match kind {
            LockKind::Read => libc::LOCK_SH,
            _ => libc::LOCK_EX,
        } | if wait { 0 } else { libc::LOCK_NB };
        if !flock(&file, op)? {
            return Ok(false);
        }
        file
    };
    held.files().insert(offset, file);
    Ok(true)
}

/// Whether another open file holds `offset`'s lock. A holder's file that is missing is a
/// holder that let go, unless the directory itself was deleted (under live holders, whose
/// files went with it): that says nothing (ENOENT), and the caller judges as if there were
/// no kernel lock. A holder's file found unlocked is a dead holder's (see the module's
/// notes); it stays, so that every judge finds the same, until [`sweep_dead_bytes`].
pub fn probe_byte_lock(owners: &File, offset: u64) -> std::io::Result<bool> {
    match open_at(owners, &name_of(offset), libc::O_RDONLY) {
        Ok(file) => flock(&file, libc::LOCK_SH | libc::LOCK_NB).map(|placed| !placed),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) && !deleted(owners) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Whether the directory was deleted (no name links it any more).
fn deleted(dir: &File) -> bool {
    dir.metadata().is_ok_and(|m| {
        use std::os::unix::fs::MetadataExt;
        m.nlink() == 0
    })
}

/// Blocks until nobody holds `offset`'s lock (a shared lock on its file is placed), or the
/// wait fails; the shared lock drops when the file closes, on return. `false`, at once, if
/// the file is missing because the directory was deleted (see [`probe_byte_lock`]).
pub fn wait_byte_free(owners: &File, offset: u64) -> bool {
    match open_at(owners, &name_of(offset), libc::O_RDONLY) {
        Ok(file) => {
            let _ = flock(&file, libc::LOCK_SH);
            true
        }
        Err(_) => !deleted(owners),
    }
}

/// Removes the files of dead holders (found unlocked: see the module's notes), and
/// temporary files a crash left more than a minute ago.
/// `path`: where `owners` was opened (its entries are listed there, changed through
/// `owners`).
pub fn sweep_dead_bytes(owners: &File, path: &Path) {
    let Ok(entries) = std::fs::read_dir(path) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let bytes = name.as_encoded_bytes();
        let Ok(cname) = CString::new(bytes) else {
            continue;
        };
        let dead = match bytes.first() {
            Some(b'h') => open_at(owners, &cname, libc::O_RDONLY)
                .and_then(|f| flock(&f, libc::LOCK_EX | libc::LOCK_NB))
                .unwrap_or(false),
            Some(b't') => entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().is_ok_and(|age| age.as_secs() > 60)),
            _ => false,
        };
        if dead {
            let _ = unlink_at(owners, &cname);
        }
    }
}

/// Without a way to refuse every symlink in one open, no path is proven symlink-free:
/// callers take their full way.
pub fn open_without_symlinks(
    _path: &Path,
    _flags: libc::c_int,
    _mode: u32,
) -> std::io::Result<OwnedFd> {
    Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::TempDir;
    use std::time::{Duration, SystemTime};

    const HOLDER: u64 = HOLDER_RANGE_START + 0xabc;
    const MUTEX: u64 = 0x123;

    fn owners(dir: &TempDir) -> (File, std::path::PathBuf) {
        let path = dir.path().join(OWNERS_NAME);
        (open_owners(&path, true, true).unwrap(), path)
    }

    fn names(path: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(path)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// What a crash leaves: the holder's file under its name, its descriptor closed by the
    /// kernel without the unlink a release makes.
    fn crashed_holder(dir: &File, offset: u64) {
        let held = HeldBytes::default();
        assert!(set_byte_lock(dir, &held, LockKind::Write, offset, false).unwrap());
        drop(held.files().remove(&offset));
    }

    #[test]
    fn a_holder_file_appears_locked_and_goes_at_release() {
        let dir = TempDir::new("generic-holder");
        let (a_dir, path) = owners(&dir);
        let b_dir = open_owners(&path, false, false).unwrap();
        let (a, b) = (HeldBytes::default(), HeldBytes::default());
        assert!(set_byte_lock(&a_dir, &a, LockKind::Write, HOLDER, false).unwrap());
        assert_eq!(
            names(&path),
            [format!("h{HOLDER:x}")],
            "no temporary name left"
        );
        assert!(probe_byte_lock(&b_dir, HOLDER).unwrap(), "held");
        assert!(
            !set_byte_lock(&b_dir, &b, LockKind::Write, HOLDER, false).unwrap(),
            "one holder per name"
        );
        // Held again by the handle that holds it, as an open file's byte lock is.
        assert!(set_byte_lock(&a_dir, &a, LockKind::Write, HOLDER, false).unwrap());
        assert!(set_byte_lock(&a_dir, &a, LockKind::Unlock, HOLDER, false).unwrap());
        assert!(names(&path).is_empty(), "released: its file is gone");
        assert!(!probe_byte_lock(&b_dir, HOLDER).unwrap(), "free");
        assert!(wait_byte_free(&b_dir, HOLDER), "nothing to wait for");
    }

    #[test]
    fn closing_the_handle_releases_its_holder_file_and_mutex() {
        let dir = TempDir::new("generic-close");
        let (a_dir, path) = owners(&dir);
        let b_dir = open_owners(&path, false, false).unwrap();
        let a = HeldBytes::default();
        assert!(set_byte_lock(&a_dir, &a, LockKind::Write, HOLDER, false).unwrap());
        assert!(set_byte_lock(&a_dir, &a, LockKind::Write, MUTEX, true).unwrap());
        let b = HeldBytes::default();
        assert!(!set_byte_lock(&b_dir, &b, LockKind::Write, MUTEX, false).unwrap());
        release_held_bytes(&a_dir, &a);
        drop(a);
        assert_eq!(
            names(&path),
            [format!("m{MUTEX:x}")],
            "the mutex file is kept"
        );
        assert!(set_byte_lock(&b_dir, &b, LockKind::Write, MUTEX, false).unwrap());
    }

    #[test]
    fn a_crashed_holder_is_dead_to_every_judge_until_swept() {
        let dir = TempDir::new("generic-crash");
        let (dir_file, path) = owners(&dir);
        crashed_holder(&dir_file, HOLDER);
        let live = HeldBytes::default();
        assert!(set_byte_lock(&dir_file, &live, LockKind::Write, HOLDER + 1, false).unwrap());
        for _ in 0..2 {
            assert!(!probe_byte_lock(&dir_file, HOLDER).unwrap(), "dead");
        }
        assert!(wait_byte_free(&dir_file, HOLDER), "its wait ends at once");
        // A crash between making a temporary file and linking it, long ago and just now.
        let old = path.join("t1-0");
        File::create(&old)
            .unwrap()
            .set_modified(SystemTime::now() - Duration::from_secs(120))
            .unwrap();
        File::create(path.join("t1-1")).unwrap();
        sweep_dead_bytes(&dir_file, &path);
        assert_eq!(
            names(&path),
            [format!("h{:x}", HOLDER + 1), "t1-1".to_string()],
            "the dead holder's file and the old temporary one swept; the live one kept"
        );
        assert!(probe_byte_lock(&dir_file, HOLDER + 1).unwrap());
    }

    #[test]
    fn a_deleted_directory_proves_nothing() {
        let dir = TempDir::new("generic-deleted");
        let (dir_file, path) = owners(&dir);
        let held = HeldBytes::default();
        assert!(set_byte_lock(&dir_file, &held, LockKind::Write, HOLDER, false).unwrap());
        std::fs::remove_dir_all(&path).unwrap();
        // The holder's file went with the directory: no answer, no wait.
        assert!(probe_byte_lock(&dir_file, HOLDER).is_err());
        assert!(!wait_byte_free(&dir_file, HOLDER));
        // A mutex there is nobody else's: taken at once (claims make a new directory).
        assert!(set_byte_lock(&dir_file, &held, LockKind::Write, MUTEX, true).unwrap());
        // A new directory of the same name is another one.
        let anew = open_owners(&path, true, true).unwrap();
        assert!(!probe_byte_lock(&anew, HOLDER).unwrap());
    }
}
