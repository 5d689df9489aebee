//! Kernel advisory locks on the locks directory's owner file (`.owners`, never `*.lock`).
//!
//! Open-file-description byte-range locks (`F_OFD_*`, Linux >= 3.15) are used because they
//! are dropped by the kernel the instant the holder dies, conflict between two opens in one
//! process, and can be *tested* (`F_OFD_GETLK`) without being taken. One file carries every
//! lock of its directory, each on its own byte:
//! - `[0, 2^48)`: a short mutex per lockfile name, serialising claim, reclaim, refresh and
//!   release among processes of this package;
//! - `[2^48, 2^52)`: one byte per holder, held for as long as it holds its lock; its offset is
//!   recorded in the lockfile (`ownerLock`), so a dead holder is recognised without any pid.

use crate::error::LockError;
use crate::paths::open_without_symlinks;
use crate::record::FileId;
use crate::sys::{self, LockKind};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// `.owners` (a file whose bytes are locked), or `.owners.d` on the generic Unix layer (a
/// directory of files locked whole: see `sys`).
pub const OWNER_FILE_NAME: &str = sys::OWNERS_NAME;
pub const HOLDER_RANGE_START: u64 = 1 << 48;
const HOLDER_RANGE_LEN: u64 = (1 << 52) - (1 << 48);
/// Where new holder bytes are drawn from: the holder range's offsets of 16 decimal digits,
/// so that the record's length does not change from claim to claim (a shorter record in a
/// reused spare would cost a truncation).
const NEW_SLOTS_START: u64 = 1_000_000_000_000_000;
const NEW_SLOTS_LEN: u64 = HOLDER_RANGE_START + HOLDER_RANGE_LEN - NEW_SLOTS_START;

/// How long a call made for JavaScript (a claim, a release, a sweep) or by a holder's
/// heartbeat tries for a per-name mutex before it gives up for now (see
/// [`OwnerFile::lock_mutex_within`]).
pub const MUTEX_PATIENCE: Duration = Duration::from_millis(20);
/// For how long of that a waiter only yields the CPU between two tries, before it sleeps.
const MUTEX_SPIN: Duration = Duration::from_micros(100);

/// The owner file of one locks directory, opened once (one open file description).
#[derive(Debug)]
pub struct OwnerFile {
    file: File,
    path: PathBuf,
    /// Its device and inode numbers, read once when first asked for.
    id: OnceLock<Option<FileId>>,
    /// Opened for writing: bytes can be locked in it, not only tested.
    writable: bool,
    /// What the platform keeps for the locks held through this handle.
    held: sys::HeldBytes,
}

impl Drop for OwnerFile {
    fn drop(&mut self) {
        sys::release_held_bytes(&self.file, &self.held);
    }
}

/// A holder's kernel-lock byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HolderSlot(pub u64);

impl HolderSlot {
    /// A byte no other holder uses (see [`unique_u64`]).
    pub fn random() -> HolderSlot {
        HolderSlot(NEW_SLOTS_START + unique_u64() % NEW_SLOTS_LEN)
    }

    pub fn is_valid(offset: u64) -> bool {
        (HOLDER_RANGE_START..HOLDER_RANGE_START + HOLDER_RANGE_LEN).contains(&offset)
    }
}

/// The byte of the per-name mutex: the first 48 bits of sha256(name).
pub fn mutex_offset(lock_file_name: &[u8]) -> u64 {
    let digest = Sha256::digest(lock_file_name);
    digest[..6]
        .iter()
        .fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
}

/// Whether a lock could be placed, from `F_OFD_GETLK`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotState {
    Held,
    Free,
}

impl OwnerFile {
    /// Opens (creating) the owner file of `dir`. `None` when this file system or platform
    /// offers no OFD locks; callers then fall back to pid and heartbeat judgements.
    pub fn open(dir: &Path, create: bool) -> Result<Option<OwnerFile>, LockError> {
        if !sys::KERNEL_BYTE_LOCKS {
            return Ok(None);
        }
        let path = dir.join(OWNER_FILE_NAME);
        match sys::open_owners(&path, create, true) {
            Ok(file) => Ok(Some(OwnerFile {
                file,
                path,
                id: OnceLock::new(),
                writable: true,
                held: sys::HeldBytes::default(),
            })),
            Err(e) if !create && sys::errno(&e) == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(LockError::io(&e, "open", &path)),
        }
    }

    /// The owner file of `dir`, created if needed, opened only if no component of its path
    /// is a symlink ([`open_without_symlinks`]): for pi-crew's usual locks directory, where
    /// that success also settles the lock path ([`crate::paths::UsualLockPath`]).
    pub fn open_symlink_free(dir: &Path) -> std::io::Result<OwnerFile> {
        let path = dir.join(OWNER_FILE_NAME);
        let fd = open_without_symlinks(&path, sys::FLAGS_RDWR_CREATE, 0o644)?;
        Ok(OwnerFile {
            file: File::from(fd),
            path,
            id: OnceLock::new(),
            writable: true,
            held: sys::HeldBytes::default(),
        })
    }

    /// The owner file of `dir` to test holders' bytes in (never created). Where it cannot
    /// be opened for writing (a read-only file system, no write permission) it is opened
    /// read-only: testing a byte needs no write access, and a holder there is still proven
    /// alive by it.
    pub fn open_to_judge(dir: &Path) -> Option<OwnerFile> {
        match OwnerFile::open(dir, false) {
            Ok(found) => found,
            Err(LockError::Io(e))
                if matches!(e.errno, libc::EROFS | libc::EACCES | libc::EPERM) =>
            {
                let file = sys::open_owners(&e.path, false, false).ok()?;
                Some(OwnerFile {
                    file,
                    path: e.path,
                    id: OnceLock::new(),
                    writable: false,
                    held: sys::HeldBytes::default(),
                })
            }
            Err(_) => None,
        }
    }

    /// Whether bytes can be locked in it (see [`OwnerFile::open_to_judge`]).
    pub fn writable(&self) -> bool {
        self.writable
    }

    /// The identity of the file opened (one fstat, then remembered): what a record names as
    /// its holder's owner file.
    pub fn id(&self) -> Option<FileId> {
        *self.id.get_or_init(|| {
            self.file
                .metadata()
                .ok()
                .map(|m| FileId::of_open(&self.file, &m))
        })
    }

    /// Blocks until the per-name mutex is ours. Held for microseconds by other processes;
    /// the kernel frees it if one of them dies inside.
    pub fn lock_mutex(&self, offset: u64) -> Result<(), LockError> {
        self.set_lock(LockKind::Write, offset, true).map(|_| ())
    }

    /// Tries for the per-name mutex for up to `patience`; `false` if it stayed held. For
    /// callers that must not hang: a holder stopped inside it (SIGSTOP, a frozen container)
    /// keeps it until it runs again. Nobody can change the lock meanwhile anyway.
    pub fn lock_mutex_within(&self, offset: u64, patience: Duration) -> Result<bool, LockError> {
        let start = Instant::now();
        let mut pause = Duration::from_micros(20);
        loop {
            if self.set_lock(LockKind::Write, offset, false)? {
                return Ok(true);
            }
            let waited = start.elapsed();
            if waited >= patience {
                return Ok(false);
            }
            // The mutex is held for microseconds by a running process: let it run first.
            if waited < MUTEX_SPIN {
                std::thread::yield_now();
            } else {
                std::thread::sleep(pause.min(patience - waited));
                pause = (pause * 2).min(Duration::from_millis(1));
            }
        }
    }

    pub fn unlock_mutex(&self, offset: u64) {
        // Unlocking a range we hold cannot fail on a valid fd; closing drops it regardless.
        let _ = self.set_lock(LockKind::Unlock, offset, false);
    }

    /// Takes a holder byte without waiting; `false` if someone holds it.
    pub fn try_hold(&self, slot: HolderSlot) -> Result<bool, LockError> {
        self.set_lock(LockKind::Write, slot.0, false)
    }

    pub fn unhold(&self, slot: HolderSlot) {
        let _ = self.set_lock(LockKind::Unlock, slot.0, false);
    }

    /// Whether anyone (another open file description) holds this byte.
    pub fn probe(&self, offset: u64) -> Result<SlotState, LockError> {
        match sys::probe_byte_lock(&self.file, offset) {
            Ok(true) => Ok(SlotState::Held),
            Ok(false) => Ok(SlotState::Free),
            Err(e) => Err(LockError::io(&e, "fcntl", &self.path)),
        }
    }

    /// Removes what dead holders left behind, where the platform leaves anything (see
    /// `sys::sweep_dead_bytes`).
    pub fn sweep_dead(&self) {
        sys::sweep_dead_bytes(&self.file, &self.path);
    }

    fn set_lock(&self, kind: LockKind, offset: u64, wait: bool) -> Result<bool, LockError> {
        sys::set_byte_lock(&self.file, &self.held, kind, offset, wait)
            .map_err(|e| LockError::io(&e, "fcntl", &self.path))
    }
}

/// Blocks until nobody holds the byte at `offset` of `owner_file` (its holder released it
/// or died), then lets go of it. A read lock, so many watchers can wait side by side.
/// `expected`: the file the holder's record names. Returns `false`, at once, when the byte
/// cannot be watched: the file is another one (the holder's was deleted and made anew: its
/// byte there says nothing) or cannot be opened while the record names one. Without a named
/// file a missing one means the holder is gone (`true`).
pub fn wait_until_free(owner_file: &Path, offset: u64, expected: Option<FileId>) -> bool {
    if !sys::KERNEL_BYTE_LOCKS {
        return false;
    }
    let opened = sys::checked_open(sys::nofollow_options(0).read(true), owner_file);
    let Ok(file) = opened else {
        return expected.is_none();
    };
    if let Some(expected) = expected {
        if file.metadata().ok().map(|m| FileId::of_open(&file, &m)) != Some(expected) {
            return false;
        }
    }
    // Returning closes the file, which drops the read lock at once.
    sys::wait_byte_free(&file, offset)
}

/// Owner files kept open for judging records, so that a busy check of a held lock costs no
/// open and close of `.owners`: a bounded handful, the most recently used last.
fn judging_files() -> std::sync::MutexGuard<'static, Vec<Arc<OwnerFile>>> {
    static FILES: OnceLock<Mutex<Vec<Arc<OwnerFile>>>> = OnceLock::new();
    FILES
        .get_or_init(|| Mutex::new(Vec::new()))
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

const MAX_JUDGING_FILES: usize = 16;

/// The owner file to test a holder's byte in, for a record found in `dir` that names `named`
/// as its holder's. A file kept open is used only when it is exactly the named one: being
/// open, its device and inode numbers cannot pass to another file, so its byte is that
/// holder's whatever has become of the name `.owners` since (deleted, made anew, the
/// directory mounted over). Otherwise the directory's current `.owners` is opened, and kept
/// if it is the named one. `None` when there is none (or no OFD locks).
pub fn owner_file_for_judging(dir: &Path, named: Option<FileId>) -> Option<Arc<OwnerFile>> {
    if let Some(id) = named {
        let mut kept = judging_files();
        if let Some(at) = kept.iter().position(|f| f.id() == Some(id)) {
            let file = kept.remove(at);
            kept.push(Arc::clone(&file));
            return Some(file);
        }
    }
    let opened = Arc::new(OwnerFile::open_to_judge(dir)?);
    if sys::KEEP_FILES_OPEN && named.is_some() && opened.id() == named {
        let mut kept = judging_files();
        // The name's previous file, if kept, is no longer what the name opens.
        kept.retain(|f| f.path != opened.path);
        if kept.len() >= MAX_JUDGING_FILES {
            kept.remove(0);
        }
        kept.push(Arc::clone(&opened));
    }
    Some(opened)
}

/// Closes the owner files kept for judging (at env teardown: no descriptor outlives its use).
pub fn forget_judging_files() {
    judging_files().clear();
}

/// The splitmix64 finaliser: distinct inputs give well-spread, distinct-looking outputs.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A value no other call, here or in another process, is likely to get: a per-process
/// random seed (one getrandom per process) stepped by a counter and mixed (splitmix64).
pub fn unique_u64() -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let seed = *SEED.get_or_init(random_u64);
    splitmix64(seed.wrapping_add(COUNTER.fetch_add(1, Ordering::Relaxed)))
}

/// A random u64 from the kernel (falling back to time and pid mixing if that fails).
pub fn random_u64() -> u64 {
    let mut buf = [0u8; 8];
    if sys::random_bytes(&mut buf) {
        return u64::from_ne_bytes(buf);
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::TempDir;

    #[test]
    #[cfg_attr(
        not(kernel_locks),
        ignore = "needs byte locks owned by an open file (Linux OFD)"
    )]
    fn a_byte_is_watched_only_in_the_owner_file_the_holder_named() {
        let dir = TempDir::new("kernel-lock-watch");
        let path = dir.path().join(OWNER_FILE_NAME);
        // Missing: the holder is gone, unless it named a file (deleted under it).
        assert!(wait_until_free(&path, HOLDER_RANGE_START, None));
        let elsewhere = FileId { dev: 1, ino: 1 };
        assert!(!wait_until_free(&path, HOLDER_RANGE_START, Some(elsewhere)));
        let file = OwnerFile::open(dir.path(), true).unwrap().unwrap();
        let id = file.id().expect("a file identity");
        // Another file than the named one: not watched, whatever its byte. The same inode
        // number on another device is another file.
        for other in [
            FileId {
                ino: id.ino + 1,
                ..id
            },
            FileId {
                dev: id.dev + 1,
                ..id
            },
        ] {
            assert!(!wait_until_free(&path, HOLDER_RANGE_START, Some(other)));
        }
        // The named one, its byte free: returns at once.
        assert!(wait_until_free(&path, HOLDER_RANGE_START, Some(id)));
    }

    #[test]
    #[cfg_attr(
        windows,
        ignore = "deletes a file that is open: Wine keeps its name until it closes"
    )]
    #[cfg_attr(
        not(kernel_locks),
        ignore = "needs byte locks owned by an open file (Linux OFD)"
    )]
    fn an_owner_file_kept_for_judging_serves_exactly_the_records_naming_it() {
        // The only test of the process-wide set of kept files.
        let dir = TempDir::new("kernel-lock-judging");
        let path = dir.path().join(OWNER_FILE_NAME);
        assert!(
            owner_file_for_judging(dir.path(), None).is_none(),
            "none yet"
        );
        let holder = OwnerFile::open(dir.path(), true).unwrap().unwrap();
        let slot = HolderSlot::random();
        assert!(holder.try_hold(slot).unwrap());
        let id = holder.id().unwrap();
        let first = owner_file_for_judging(dir.path(), Some(id)).unwrap();
        let again = owner_file_for_judging(dir.path(), Some(id)).unwrap();
        assert!(Arc::ptr_eq(&first, &again), "kept open, not opened again");
        assert_eq!(again.probe(slot.0).unwrap(), SlotState::Held);
        // A record naming no file: the directory's, opened for this judgement only.
        let unnamed = owner_file_for_judging(dir.path(), None).unwrap();
        assert!(!Arc::ptr_eq(&first, &unnamed));
        // `.owners` deleted under its holder: records naming the holder's file still get it,
        // and its byte, held, then freed when the holder goes.
        crate::test_support::delete_owners(&path);
        let kept = owner_file_for_judging(dir.path(), Some(id)).unwrap();
        assert!(Arc::ptr_eq(&first, &kept));
        if cfg!(owners_directory) {
            // The holder's file went with its directory: no proof either way (the judge
            // falls back to the pid).
            assert!(kept.probe(slot.0).is_err());
            return;
        }
        assert_eq!(kept.probe(slot.0).unwrap(), SlotState::Held);
        let anew = OwnerFile::open(dir.path(), true).unwrap().unwrap();
        let anew_id = anew.id().unwrap();
        assert_ne!(anew_id, id);
        drop(holder);
        assert_eq!(kept.probe(slot.0).unwrap(), SlotState::Free);
        // A record naming the new file gets it, kept in place of the old one.
        let fresh = owner_file_for_judging(dir.path(), Some(anew_id)).unwrap();
        assert_eq!(fresh.id(), Some(anew_id));
        assert!(Arc::ptr_eq(
            &fresh,
            &owner_file_for_judging(dir.path(), Some(anew_id)).unwrap()
        ));
        assert!(!judging_files().iter().any(|f| Arc::ptr_eq(f, &first)));
        // A record naming a file that is not there: the directory's, not kept.
        let elsewhere = FileId {
            dev: anew_id.dev ^ 1,
            ..anew_id
        };
        let current = owner_file_for_judging(dir.path(), Some(elsewhere)).unwrap();
        assert_eq!(current.id(), Some(anew_id));
        assert!(!Arc::ptr_eq(&current, &fresh));
        // Bounded: one per directory, the least recently used let go.
        let dirs: Vec<TempDir> = (0..MAX_JUDGING_FILES + 4)
            .map(|i| TempDir::new(&format!("kernel-lock-judging-{i}")))
            .collect();
        for d in &dirs {
            let file = OwnerFile::open(d.path(), true).unwrap().unwrap();
            owner_file_for_judging(d.path(), file.id()).unwrap();
        }
        assert_eq!(judging_files().len(), MAX_JUDGING_FILES);
        assert!(!judging_files().iter().any(|f| Arc::ptr_eq(f, &fresh)));
        forget_judging_files();
        assert!(judging_files().is_empty());
    }

    #[test]
    #[cfg_attr(
        not(kernel_locks),
        ignore = "needs byte locks owned by an open file (Linux OFD)"
    )]
    fn holder_bytes_conflict_between_two_opens_and_free_on_close() {
        let dir = TempDir::new("kernel-lock");
        let a = OwnerFile::open(dir.path(), true).unwrap().unwrap();
        let b = OwnerFile::open(dir.path(), true).unwrap().unwrap();
        let slot = HolderSlot::random();
        assert!(HolderSlot::is_valid(slot.0));
        assert_eq!(b.probe(slot.0).unwrap(), SlotState::Free);
        assert!(a.try_hold(slot).unwrap());
        assert_eq!(b.probe(slot.0).unwrap(), SlotState::Held);
        assert!(!b.try_hold(slot).unwrap(), "one holder per byte");
        // Another byte is independent.
        assert!(b.try_hold(HolderSlot(slot.0 ^ 1)).unwrap());
        drop(a); // the kernel drops the lock with the open file description
        assert_eq!(b.probe(slot.0).unwrap(), SlotState::Free);
    }

    #[test]
    fn holder_bytes_differ_from_claim_to_claim() {
        let slots: std::collections::HashSet<u64> =
            (0..10_000).map(|_| HolderSlot::random().0).collect();
        assert_eq!(slots.len(), 10_000);
        assert!(slots.iter().all(|s| HolderSlot::is_valid(*s)));
        assert!(
            slots.iter().all(|s| s.to_string().len() == 16),
            "one record length"
        );
    }

    #[test]
    fn mutex_offsets_stay_below_the_holder_range() {
        for name in [&b"a.lock"[..], b"", b"0123456789abcdef.lock"] {
            assert!(mutex_offset(name) < HOLDER_RANGE_START);
        }
        assert_ne!(mutex_offset(b"a.lock"), mutex_offset(b"b.lock"));
    }

    #[test]
    fn missing_owner_file_is_not_created_on_probe_open() {
        let dir = TempDir::new("kernel-lock-nocreate");
        assert!(OwnerFile::open(dir.path(), false).unwrap().is_none());
        assert!(!dir.path().join(OWNER_FILE_NAME).exists());
    }

    #[test]
    #[cfg_attr(
        not(kernel_locks),
        ignore = "needs byte locks owned by an open file (Linux OFD)"
    )]
    #[cfg(unix)]
    fn a_symlinked_owner_file_is_refused() {
        let dir = TempDir::new("kernel-lock-symlink");
        // A symlink to a directory, which a directory of owners would otherwise open.
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, dir.path().join(OWNER_FILE_NAME)).unwrap();
        let err = OwnerFile::open(dir.path(), true).unwrap_err();
        // A directory of owners opened with O_DIRECTORY: Linux says ENOTDIR for a symlink.
        let refused: &[&str] = if cfg!(owners_directory) {
            &["ELOOP", "ENOTDIR"]
        } else {
            &["ELOOP"]
        };
        assert!(
            matches!(err, LockError::Io(ref e) if refused.contains(&e.code())),
            "{err:?}"
        );
    }
}
