//! Reading and changing one lockfile without ever following a symlink at its path, and so
//! that every record appears whole: claims are written to a temp file and `link()`ed into
//! place (failing if anything is there), refreshes are `rename()`d over, and stale records
//! are moved aside and checked before they are deleted. Temp names start with a dot and
//! never end in `.lock`, so no reader of `*.lock` ever sees them.

use crate::error::LockError;
use crate::kernel_lock::unique_u64;
use crate::paths::{open_without_symlinks, PathContext, UsualLockPath};
use crate::record::ParsedRecord;
use crate::sys;
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

pub const CLAIM_SUFFIX: &str = ".claim";
pub const EVICTED_SUFFIX: &str = ".evicted";
pub const SPARE_SUFFIX: &str = ".spare";

/// One lockfile: its directory, its full path and its file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockTarget {
    pub dir: PathBuf,
    pub path: PathBuf,
}

impl LockTarget {
    pub fn new(path: PathBuf) -> LockTarget {
        let dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("/"));
        LockTarget { dir, path }
    }

    pub fn file_name(&self) -> &[u8] {
        self.path
            .file_name()
            .map_or(&b""[..], OsStr::as_encoded_bytes)
    }

    fn sibling(&self, suffix: &str) -> PathBuf {
        let stem = match suffix {
            // Short-lived and the costliest to name: a rename into a directory of thousands
            // of entries costs more the longer the new name (~3 µs of ~20 at 100 bytes).
            EVICTED_SUFFIX => &b"e"[..],
            _ => self
                .file_name()
                .strip_suffix(b".lock")
                .unwrap_or(self.file_name()),
        };
        let mut name = Vec::with_capacity(stem.len() + 40);
        name.push(b'.');
        name.extend_from_slice(stem);
        name.extend_from_slice(
            format!(".{}.{:016x}", crate::process_probe::own_pid(), unique_u64()).as_bytes(),
        );
        name.extend_from_slice(suffix.as_bytes());
        self.dir.join(sys::os_str_from_encoded(&name))
    }
}

/// What is at a lock path.
#[derive(Debug, Clone, PartialEq)]
pub enum Observed {
    Absent,
    /// A regular file: its bytes, and its record if `JSON.parse` makes an object of them.
    File {
        bytes: Vec<u8>,
        record: Option<ParsedRecord>,
        /// `None` when not needed: a record with a heartbeat is judged by its heartbeat.
        stamp: Option<Stamp>,
    },
    /// A symlink, FIFO, socket or device: never followed or opened, judged by its age.
    NotAFile {
        stamp: Stamp,
    },
    Directory,
}

/// Which inode an entry is, and when it was last written: what tells one unreadable entry
/// from another with the same bytes (an empty file is the original's claim not yet written,
/// and a new one looks exactly like an old one). `rename()` changes neither.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Stamp {
    pub modified: SystemTime,
    pub dev: u64,
    pub ino: u64,
}

impl Stamp {
    /// `file`: the open file `meta` is of, where there is one.
    fn of(file: Option<&File>, meta: &fs::Metadata) -> Stamp {
        let (dev, ino) = sys::file_key(file, meta);
        Stamp {
            modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            dev,
            ino,
        }
    }
}

impl Observed {
    /// Age of an unreadable entry, by its modification time on the real clock (`None` for a
    /// record with a heartbeat, which is not stat'ed: its age is its heartbeat's).
    pub fn age(&self) -> Option<Duration> {
        let modified = match self {
            Observed::File {
                stamp: Some(stamp), ..
            }
            | Observed::NotAFile { stamp } => stamp.modified,
            _ => return None,
        };
        Some(
            SystemTime::now()
                .duration_since(modified)
                .unwrap_or(Duration::ZERO),
        )
    }

    /// Whether an entry judged by its age may still be a claim being written: younger than
    /// `grace` by its modification time, and not seen unchanged by this process for `grace`
    /// of the monotonic clock. The second rule keeps a wall clock stepped back (which makes
    /// every mtime look recent) from keeping garbage "busy" for as long as the step.
    pub fn is_young(&self, grace: Duration) -> bool {
        let (Some(age), Some(stamp)) = (self.age(), self.stamp()) else {
            return false;
        };
        age < grace && seen_unchanged_for(stamp) < grace
    }

    fn stamp(&self) -> Option<Stamp> {
        match self {
            Observed::File { stamp, .. } => *stamp,
            Observed::NotAFile { stamp } => Some(*stamp),
            _ => None,
        }
    }

    /// Same entry: used to check, under the mutex, that what was judged is still there.
    /// Records are told apart by their bytes (each names its writer and instant); entries
    /// judged by their age also by their inode and age, since the same bytes (none) can be
    /// a new claim of the original module where an old one was.
    pub fn same_as(&self, other: &Observed) -> bool {
        match (self, other) {
            (Observed::Absent, Observed::Absent) | (Observed::Directory, Observed::Directory) => {
                true
            }
            (
                Observed::File {
                    bytes: a,
                    stamp: sa,
                    ..
                },
                Observed::File {
                    bytes: b,
                    stamp: sb,
                    ..
                },
            ) => a == b && (sa.is_none() || sb.is_none() || sa == sb),
            (Observed::NotAFile { stamp: a }, Observed::NotAFile { stamp: b }) => a == b,
            _ => false,
        }
    }
}

/// For how long (monotonic) this process has seen the unreadable entry `stamp` unchanged:
/// zero at the first sight. A few dozen entries at most are remembered (unreadable lockfiles
/// are rare and short-lived); the oldest sights go first.
fn seen_unchanged_for(stamp: Stamp) -> Duration {
    const MAX_SIGHTS: usize = 64;
    static SIGHTS: OnceLock<Mutex<HashMap<Stamp, Instant>>> = OnceLock::new();
    let mut sights = SIGHTS
        .get_or_init(|| Mutex::new(HashMap::new()))
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let now = Instant::now();
    if sights.len() >= MAX_SIGHTS && !sights.contains_key(&stamp) {
        if let Some(oldest) = sights.iter().min_by_key(|(_, at)| **at).map(|(k, _)| *k) {
            sights.remove(&oldest);
        }
    }
    now.saturating_duration_since(*sights.entry(stamp).or_insert(now))
}

/// Reads what is at `path` without following a symlink or blocking on a FIFO.
pub fn observe(path: &Path) -> Result<Observed, LockError> {
    let opened = sys::checked_open(sys::nofollow_options(sys::O_NONBLOCK).read(true), path);
    let file = match opened {
        Ok(f) => f,
        Err(e) => {
            return match sys::errno(&e) {
                Some(libc::ENOENT) => Ok(Observed::Absent),
                // Windows refuses to open a directory as a file (Linux opens it, and its
                // read says EISDIR: see observe_opened).
                Some(libc::EISDIR) => Ok(Observed::Directory),
                // ELOOP: a symlink. ENXIO: a socket. Look at the entry itself.
                Some(libc::ELOOP) | Some(libc::ENXIO) | Some(libc::EOPNOTSUPP) => {
                    match sys::path_key(path, false) {
                        Ok(((dev, ino), meta)) => Ok(Observed::NotAFile {
                            stamp: Stamp {
                                modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                                dev,
                                ino,
                            },
                        }),
                        Err(e) if sys::errno(&e) == Some(libc::ENOENT) => Ok(Observed::Absent),
                        Err(e) => Err(LockError::io(&e, "lstat", path)),
                    }
                }
                _ => Err(LockError::io(&e, "open", path)),
            };
        }
    };
    observe_opened(path, file)
}

/// What a reader (a busy check, inspect) finds at a lock path: as [`observe`], but a lock
/// path that cannot exist, a component of its directory being a file (ENOTDIR), is absent,
/// as the original's readers say (SPEC's error rule; a missing one is absent anyway).
/// Present but unreadable stays an error.
pub fn observe_for_reading(path: &Path) -> Result<Observed, LockError> {
    match observe(path) {
        Err(LockError::Io(e)) if e.errno == libc::ENOTDIR => Ok(Observed::Absent),
        other => other,
    }
}

/// `observe` of the entry at `path` already opened read-only and non-blocking.
pub fn observe_opened(path: &Path, mut file: File) -> Result<Observed, LockError> {
    // One read is enough for a record (a short regular file returns all it has). Only what
    // does not parse as a record with a heartbeat needs an fstat (directory? FIFO? age?).
    let mut bytes = vec![0u8; FIRST_READ];
    let len = loop {
        match file.read(&mut bytes) {
            Ok(n) => break n,
            Err(e) if sys::errno(&e) == Some(libc::EINTR) => continue,
            Err(e) if sys::errno(&e) == Some(libc::EISDIR) => return Ok(Observed::Directory),
            // A FIFO with a writer but nothing written yet.
            Err(e) if sys::errno(&e) == Some(libc::EAGAIN) => break 0,
            Err(e) => return Err(LockError::io(&e, "read", path)),
        }
    };
    bytes.truncate(len);
    if len < FIRST_READ {
        let record = ParsedRecord::parse(&bytes);
        if let Some(record) = record.filter(|r| !r.heartbeat().is_nan()) {
            return Ok(Observed::File {
                bytes,
                record: Some(record),
                stamp: None,
            });
        }
    }
    let meta = file
        .metadata()
        .map_err(|e| LockError::io(&e, "fstat", path))?;
    let stamp = Stamp::of(Some(&file), &meta);
    if meta.is_dir() {
        return Ok(Observed::Directory);
    }
    if !meta.is_file() {
        return Ok(Observed::NotAFile { stamp });
    }
    if len == FIRST_READ {
        file.read_to_end(&mut bytes)
            .map_err(|e| LockError::io(&e, "read", path))?;
    }
    let record = ParsedRecord::parse(&bytes);
    Ok(Observed::File {
        bytes,
        record,
        stamp: Some(stamp),
    })
}

/// workspaceLockPath(cwd) and what is there, the lockfile looked at first where pi-crew
/// usually keeps it: when that opens symlink-free it is the lock path, and the path costs
/// no more than that open. A lockfile found missing there counts once `.crew` is seen
/// symlink-free: the path is then learnt just after the look rather than just before,
/// an equally close pair of instants.
pub fn observe_workspace_lock(
    cwd: &str,
    ctx: &PathContext,
) -> Result<(PathBuf, Observed), LockError> {
    let usual = UsualLockPath::of(cwd, ctx);
    match open_without_symlinks(&usual.path, sys::FLAGS_READ_NONBLOCK, 0) {
        Ok(fd) => {
            let seen = observe_opened(&usual.path, File::from(fd))?;
            return Ok((usual.path, seen));
        }
        Err(e)
            if sys::errno(&e) == Some(libc::ENOENT)
                && usual.crew_is_symlink_free_after_enoent() =>
        {
            return Ok((usual.path, Observed::Absent));
        }
        // A symlink, a socket, another layout, an error to report as Node would: the
        // ordinary way, which tells them apart.
        Err(_) => {}
    }
    let path = usual.walked(ctx)?;
    let seen = observe_for_reading(&path)?;
    Ok((path, seen))
}

/// Bytes read at once from a lockfile: far more than any record (a longer one costs an
/// fstat and a second read).
const FIRST_READ: usize = 4 * 1024;

/// Creates a new file beside the lockfile, named with `suffix` (never following a symlink,
/// never reusing an existing name).
fn create_sibling(target: &LockTarget, suffix: &str) -> Result<(File, PathBuf), LockError> {
    let path = target.sibling(suffix);
    let file = sys::checked_open(
        sys::nofollow_options(0)
            .read(true)
            .write(true)
            .create_new(true),
        &path,
    )
    .map_err(|e| LockError::io(&e, "open", &path))?;
    Ok((file, path))
}

/// Writes `bytes` to a fresh temp file beside the lockfile.
fn write_temp(target: &LockTarget, bytes: &[u8]) -> Result<PathBuf, LockError> {
    let (mut file, temp) = create_sibling(target, CLAIM_SUFFIX)?;
    if let Err(e) = file.write_all(bytes) {
        let _ = fs::remove_file(&temp);
        return Err(LockError::io(&e, "write", &temp));
    }
    Ok(temp)
}

/// A file of ours from which claims of one lock path are published. A claim rewrites it and
/// `link()`s it into place; the release unlinks only the lock path, so the inode survives
/// under the spare's name for the next claim. An acquire/release cycle thus allocates no
/// inode, which on ext4 is most of the cost of a fresh file (it scans for recently freed
/// inodes). A spare is rewritten only while no other name links it (`nlink == 1`).
struct Spare {
    file: File,
    path: PathBuf,
    /// Its size, as last seen: only a shorter record needs a truncate.
    len: u64,
    /// Its device and inode: while it is published, the lockfile is this very file.
    id: (u64, u64),
    /// Known to have no other name: our release just unlinked the lock path it was published
    /// at (so the next claim need not fstat it to count its links).
    sole_link: bool,
}

/// Spares kept per lock path in this process (a bounded handful). Keyed by the path's bytes:
/// `Path` hashes component by component, parsing the path at every lookup of every cycle.
fn spares() -> std::sync::MutexGuard<'static, HashMap<OsString, Spare>> {
    static SPARES: OnceLock<Mutex<HashMap<OsString, Spare>>> = OnceLock::new();
    SPARES
        .get_or_init(|| Mutex::new(HashMap::new()))
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

const MAX_SPARES: usize = 64;

impl Spare {
    fn create(target: &LockTarget) -> Result<Spare, LockError> {
        let (file, path) = create_sibling(target, SPARE_SUFFIX)?;
        let meta = match file.metadata() {
            Ok(meta) => meta,
            Err(e) => {
                let _ = fs::remove_file(&path);
                return Err(LockError::io(&e, "fstat", &path));
            }
        };
        let id = sys::file_key(Some(&file), &meta);
        Ok(Spare {
            file,
            path,
            len: 0,
            id,
            sole_link: true,
        })
    }

    /// Taken out of the pool (so no other thread can use it) if nothing else links it.
    fn take(target: &LockTarget) -> Option<Spare> {
        let mut spare = spares().remove(target.path.as_os_str())?;
        if spare.sole_link {
            return Some(spare);
        }
        match spare.file.metadata() {
            Ok(meta) if sys::nlink(&spare.file, &meta) == 1 => {
                spare.len = meta.len();
                spare.id = sys::file_key(Some(&spare.file), &meta);
                Some(spare)
            }
            // Swept by someone (0 links) or still linked somewhere (2+): not reusable.
            _ => {
                spare.discard();
                None
            }
        }
    }

    fn keep(self, target: &LockTarget) {
        if !sys::KEEP_FILES_OPEN {
            // Its own name goes: a published claim has one name and no handle of ours.
            self.discard();
            return;
        }
        let mut pool = spares();
        if pool.len() >= MAX_SPARES && !pool.contains_key(target.path.as_os_str()) {
            let victim = pool.keys().next().cloned();
            if let Some(old) = victim.and_then(|k| pool.remove(&k)) {
                old.discard();
            }
        }
        if let Some(old) = pool.insert(target.path.as_os_str().to_owned(), self) {
            old.discard();
        }
    }

    /// Removes the spare's own name (never the lock path it may also be linked at).
    fn discard(self) {
        let _ = fs::remove_file(&self.path);
    }

    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        sys::write_all_at(&self.file, bytes, 0)?;
        if (bytes.len() as u64) < self.len {
            self.file.set_len(bytes.len() as u64)?;
        }
        self.len = bytes.len() as u64;
        Ok(())
    }
}

/// Removes this process's spares (at exit).
pub fn drop_spares() {
    let pool = std::mem::take(&mut *spares());
    for spare in pool.into_values() {
        spare.discard();
    }
}

/// Publishes a claim whole: `link()` fails if anything (even a dangling symlink) is at the
/// lock path. `Ok(false)` when something is.
pub fn publish(target: &LockTarget, bytes: &[u8]) -> Result<bool, LockError> {
    if let Some(spare) = Spare::take(target) {
        match publish_from(target, spare, bytes) {
            // The spare's name is gone (the directory was emptied or made anew since our last
            // release): publish from a new one.
            Err(LockError::Io(e)) if e.errno == libc::ENOENT => {}
            done => return done,
        }
    }
    publish_from(target, Spare::create(target)?, bytes)
}

fn publish_from(target: &LockTarget, mut spare: Spare, bytes: &[u8]) -> Result<bool, LockError> {
    // Linked at the lock path below, or possibly so if link() fails oddly: count again.
    spare.sole_link = false;
    if let Err(e) = spare.write(bytes) {
        let failure = LockError::io(&e, "write", &spare.path);
        spare.discard();
        return Err(failure);
    }
    match fs::hard_link(&spare.path, &target.path) {
        // link() names its source by path: if the directory was replaced since the spare was
        // made (a backup restored, a copy renamed into place), that name may be another
        // file with old bytes. Only our very inode, now linked twice, is a claim of ours.
        Ok(()) if linked_twice(&spare.file) => {
            spare.keep(target);
            Ok(true)
        }
        Ok(()) => {
            unpublish_foreign(target, &spare.path);
            spare.discard();
            Ok(false)
        }
        Err(e) if sys::errno(&e) == Some(libc::EEXIST) => {
            // Not linked anywhere new: still its only name.
            spare.sole_link = true;
            spare.keep(target);
            Ok(false)
        }
        Err(e) => {
            spare.discard();
            Err(LockError::io(&e, "link", &target.path))
        }
    }
}

fn linked_twice(file: &File) -> bool {
    file.metadata().is_ok_and(|m| sys::nlink(file, &m) >= 2)
}

/// Takes back a link just made at the lock path from `source` when that name was not our
/// spare: only while the lock path is still that very file.
fn unpublish_foreign(target: &LockTarget, source: &Path) {
    let id = |p: &Path| sys::path_key(p, false).ok().map(|(id, _)| id);
    if let (Some(published), Some(source)) = (id(&target.path), id(source)) {
        if published == source {
            let _ = fs::remove_file(&target.path);
        }
    }
}

/// Whether this process's spare for the lock path may be linked there (a claim of ours
/// published and not yet known released).
pub fn may_be_published(target: &LockTarget) -> bool {
    spares()
        .get(target.path.as_os_str())
        .is_some_and(|spare| !spare.sole_link)
}

/// The bytes at the lock path if it is the very file this process last published there
/// (a spare of ours): one statx and one pread, where [`observe`] opens, reads and closes.
/// `None` when it is anything else (absent, replaced, refreshed): observe it then.
pub fn read_own_publication(target: &LockTarget) -> Option<Vec<u8>> {
    let (id, meta) = sys::path_key(&target.path, false).ok()?;
    let pool = spares();
    let spare = pool.get(target.path.as_os_str())?;
    if !meta.is_file() || id != spare.id {
        return None;
    }
    let mut bytes = vec![0u8; meta.len().min(FIRST_READ as u64) as usize];
    let n = sys::read_at(&spare.file, &mut bytes, 0).ok()?;
    // A short read, or more than a record could be: let observe() look properly.
    (n == bytes.len() && n < FIRST_READ).then_some(bytes)
}

/// Replaces the record in one step (a refresh by its holder, under the mutex).
pub fn replace(target: &LockTarget, bytes: &[u8]) -> Result<(), LockError> {
    let temp = write_temp(target, bytes)?;
    fs::rename(&temp, &target.path).map_err(|e| {
        let _ = fs::remove_file(&temp);
        LockError::io(&e, "rename", &target.path)
    })
}

/// Outcome of moving a judged-stale entry out of the way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eviction {
    /// Exactly the judged entry was removed.
    Removed,
    /// Nothing was there any more.
    Gone,
    /// The entry had changed since it was judged (a writer that does not take our mutex, such
    /// as the original module); it was put back if nothing had replaced it, and left alone.
    Changed,
}

/// Removes the entry at the lock path only if it is still what was judged: rename it aside
/// (atomic, no symlink followed), compare, then delete it or put it back.
pub fn evict(target: &LockTarget, judged: &Observed) -> Result<Eviction, LockError> {
    let aside = target.sibling(EVICTED_SUFFIX);
    match fs::rename(&target.path, &aside) {
        Ok(()) => {}
        Err(e) if sys::errno(&e) == Some(libc::ENOENT) => return Ok(Eviction::Gone),
        Err(e) => return Err(LockError::io(&e, "rename", &target.path)),
    }
    let moved = observe(&aside)?;
    if moved.same_as(judged) {
        let _ = fs::remove_file(&aside);
        return Ok(Eviction::Removed);
    }
    // Put it back unless something new is already in place (then its writer lost anyway).
    let _ = fs::hard_link(&aside, &target.path);
    let _ = fs::remove_file(&aside);
    Ok(Eviction::Changed)
}

/// Deletes the lockfile that [`read_own_publication`] just found to be our spare (its holder
/// releasing, under the mutex): the spare is then known to have no other name.
///
/// The pool stays locked across the unlink: otherwise another thread of this process could
/// take the spare, publish it again at the lock path, and put it back between our unlink and
/// our mark, which would then call a published spare unlinked, and the next claim would
/// rewrite a live holder's lockfile in place. (Where claims take the per-name mutex, no such
/// thread can be there; the generic Unix layer has none.)
pub fn remove_own_publication(target: &LockTarget) -> Result<(), LockError> {
    let mut pool = spares();
    remove(target)?;
    if let Some(spare) = pool.get_mut(target.path.as_os_str()) {
        spare.sole_link = true;
    }
    Ok(())
}

/// Deletes the lockfile (its holder releasing, under the mutex).
pub fn remove(target: &LockTarget) -> Result<(), LockError> {
    match fs::remove_file(&target.path) {
        Ok(()) => Ok(()),
        Err(e) if sys::errno(&e) == Some(libc::ENOENT) => Ok(()),
        Err(e) => Err(LockError::io(&e, "unlink", &target.path)),
    }
}

/// Whether a directory entry is a leftover of a claim or eviction of this package.
pub fn is_leftover_name(name: &[u8]) -> bool {
    name.first() == Some(&b'.')
        && [CLAIM_SUFFIX, EVICTED_SUFFIX, SPARE_SUFFIX]
            .iter()
            .any(|suffix| name.ends_with(suffix.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::TempDir;
    #[cfg(unix)]
    use std::os::unix::ffi::OsStrExt;

    fn target(dir: &TempDir) -> LockTarget {
        LockTarget::new(dir.path().join("abc.lock"))
    }

    #[test]
    #[cfg_attr(
        windows,
        ignore = "no spare is kept open on Windows (sys::KEEP_FILES_OPEN)"
    )]
    fn publish_appears_whole_and_refuses_to_overwrite() {
        let dir = TempDir::new("io-publish");
        let t = target(&dir);
        assert!(publish(&t, b"{\"goalId\":\"a\"}").unwrap());
        assert!(!publish(&t, b"{\"goalId\":\"b\"}").unwrap());
        assert_eq!(fs::read(&t.path).unwrap(), b"{\"goalId\":\"a\"}");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "the lockfile and one spare: {names:?}");
        assert!(names.iter().any(|n| n.ends_with(SPARE_SUFFIX)));
        drop_spares_of(&t);
    }

    #[test]
    fn an_unreadable_entry_is_young_by_its_mtime_and_for_no_longer_than_the_grace_we_watch_it() {
        let dir = TempDir::new("io-young");
        let t = target(&dir);
        let grace = Duration::from_millis(80);
        fs::write(&t.path, b"").unwrap();
        assert!(observe(&t.path).unwrap().is_young(grace), "just written");
        // An mtime in the future (the wall clock stepped back since): young by its mtime,
        // but not once we have watched it unchanged for the grace time.
        let file = File::options().write(true).open(&t.path).unwrap();
        let future = SystemTime::now() + Duration::from_secs(3600);
        file.set_modified(future).unwrap();
        assert!(observe(&t.path).unwrap().is_young(grace));
        std::thread::sleep(grace + Duration::from_millis(20));
        assert!(!observe(&t.path).unwrap().is_young(grace));
        // Old by its mtime: not young at first sight.
        file.set_modified(SystemTime::now() - Duration::from_secs(10))
            .unwrap();
        assert!(!observe(&t.path).unwrap().is_young(grace));
        // A record with a heartbeat is judged by it, never by its age.
        fs::write(&t.path, br#"{"heartbeat":1}"#).unwrap();
        assert!(!observe(&t.path).unwrap().is_young(grace));
    }

    #[test]
    #[cfg_attr(
        windows,
        ignore = "no spare is kept open on Windows (sys::KEEP_FILES_OPEN)"
    )]
    fn a_claim_publishes_only_the_file_it_wrote_when_the_directory_was_replaced() {
        let dir = TempDir::new("io-swapped");
        let locks = dir.path().join("locks");
        fs::create_dir(&locks).unwrap();
        let t = LockTarget::new(locks.join("abc.lock"));
        assert!(publish(&t, b"{\"goalId\":\"old\"}").unwrap());
        remove_own_publication(&t).unwrap();
        // The directory is replaced by a copy of itself (a backup restored): the copy holds
        // a file under our spare's name, with the old bytes, that is not our spare.
        let aside = dir.path().join("locks-aside");
        fs::rename(&locks, &aside).unwrap();
        fs::create_dir(&locks).unwrap();
        for entry in fs::read_dir(&aside).unwrap() {
            let entry = entry.unwrap();
            fs::copy(entry.path(), locks.join(entry.file_name())).unwrap();
        }
        // The claim linked that copy by name: it is taken back, nothing is published.
        assert!(!publish(&t, b"{\"goalId\":\"new\"}").unwrap());
        assert!(!t.path.exists(), "no stale record left at the lock path");
        // The next claim publishes from a new spare: its own bytes.
        assert!(publish(&t, b"{\"goalId\":\"new\"}").unwrap());
        assert_eq!(fs::read(&t.path).unwrap(), b"{\"goalId\":\"new\"}");
        assert!(read_own_publication(&t).is_some());
        remove_own_publication(&t).unwrap();
        drop_spares_of(&t);
    }

    #[test]
    #[cfg_attr(
        windows,
        ignore = "no spare is kept open on Windows (sys::KEEP_FILES_OPEN)"
    )]
    fn our_own_publication_is_read_through_the_spare_and_only_while_it_is_in_place() {
        let dir = TempDir::new("io-own");
        let t = target(&dir);
        assert_eq!(read_own_publication(&t), None, "nothing published");
        assert!(publish(&t, b"{\"goalId\":\"a\"}").unwrap());
        assert_eq!(
            read_own_publication(&t).as_deref(),
            Some(&b"{\"goalId\":\"a\"}"[..])
        );
        // Rewritten in place (a hand edit): the same file, so its new bytes are what counts.
        fs::write(&t.path, b"{\"goalId\":\"edited\"}").unwrap();
        assert_eq!(
            read_own_publication(&t).as_deref(),
            Some(&b"{\"goalId\":\"edited\"}"[..])
        );
        // Replaced by another file (a refresh, another writer): not ours to read this way.
        replace(&t, b"{\"goalId\":\"a\"}").unwrap();
        assert_eq!(read_own_publication(&t), None);
        remove(&t).unwrap();
        assert_eq!(read_own_publication(&t), None);
        drop_spares_of(&t);
    }

    #[cfg(unix)]
    #[test]
    fn after_our_own_release_the_spare_is_reused_without_counting_its_links() {
        use std::os::unix::fs::MetadataExt;
        let dir = TempDir::new("io-sole");
        let t = target(&dir);
        assert!(publish(&t, b"{\"goalId\":\"a-longer-record\"}").unwrap());
        let first = fs::metadata(&t.path).unwrap().ino();
        assert!(read_own_publication(&t).is_some());
        remove_own_publication(&t).unwrap();
        assert!(!t.path.exists());
        // Reused as is: same inode, and a shorter record leaves no tail of the longer one
        // (its size was tracked, not read back).
        assert!(publish(&t, b"{\"goalId\":\"b\"}").unwrap());
        assert_eq!(fs::metadata(&t.path).unwrap().ino(), first);
        assert_eq!(fs::read(&t.path).unwrap(), b"{\"goalId\":\"b\"}");
        // Still linked at the lock path: not rewritten by a claim that finds it there.
        assert!(!publish(&t, b"{\"goalId\":\"c\"}").unwrap());
        assert_eq!(fs::read(&t.path).unwrap(), b"{\"goalId\":\"b\"}");
        remove(&t).unwrap();
        drop_spares_of(&t);
    }

    #[cfg(unix)]
    #[test]
    fn may_be_published_follows_our_spare_in_and_out_of_the_lock_path() {
        use std::os::unix::fs::MetadataExt;
        let dir = TempDir::new("io-may-be-published");
        let t = target(&dir);
        assert!(!may_be_published(&t), "no spare yet");
        assert!(publish(&t, b"{\"goalId\":\"a\"}").unwrap());
        assert!(may_be_published(&t));
        let spare = fs::metadata(&t.path).unwrap().ino();
        remove_own_publication(&t).unwrap();
        assert!(!may_be_published(&t));
        // A link refused by another's file links nothing: the spare is known unpublished,
        // and the next claim rewrites that same inode.
        fs::write(&t.path, b"{\"goalId\":\"other\"}").unwrap();
        assert!(!publish(&t, b"{\"goalId\":\"b\"}").unwrap());
        assert!(!may_be_published(&t));
        fs::remove_file(&t.path).unwrap();
        assert!(publish(&t, b"{\"goalId\":\"b\"}").unwrap());
        assert_eq!(fs::metadata(&t.path).unwrap().ino(), spare);
        remove(&t).unwrap();
        drop_spares_of(&t);
    }

    #[test]
    #[cfg_attr(
        windows,
        ignore = "no spare is kept open on Windows (sys::KEEP_FILES_OPEN)"
    )]
    fn a_spare_whose_name_was_swept_is_replaced_at_the_next_claim() {
        let dir = TempDir::new("io-swept-spare");
        let t = target(&dir);
        assert!(publish(&t, b"{\"goalId\":\"a\"}").unwrap());
        remove_own_publication(&t).unwrap();
        // The whole directory removed and made again (`git clean`, a user's rm -rf).
        fs::remove_dir_all(&t.dir).unwrap();
        fs::create_dir_all(&t.dir).unwrap();
        assert!(publish(&t, b"{\"goalId\":\"b\"}").unwrap());
        assert_eq!(fs::read(&t.path).unwrap(), b"{\"goalId\":\"b\"}");
        assert_eq!(
            read_own_publication(&t).as_deref(),
            Some(&b"{\"goalId\":\"b\"}"[..])
        );
        remove_own_publication(&t).unwrap();
        drop_spares_of(&t);
    }

    #[cfg(unix)]
    #[test]
    fn temp_names_never_end_in_lock() {
        let dir = TempDir::new("io-names");
        let t = target(&dir);
        for suffix in [CLAIM_SUFFIX, EVICTED_SUFFIX, SPARE_SUFFIX] {
            let name = t.sibling(suffix);
            let name = name.file_name().unwrap().as_bytes();
            assert!(!name.ends_with(b".lock"));
            assert!(is_leftover_name(name));
        }
        assert!(!is_leftover_name(b"abc.lock"));
    }

    #[cfg(unix)]
    #[test]
    fn a_symlink_at_the_lock_path_is_never_followed() {
        let dir = TempDir::new("io-symlink");
        let t = target(&dir);
        let victim = dir.path().join("victim.txt");
        fs::write(&victim, b"precious").unwrap();
        std::os::unix::fs::symlink(&victim, &t.path).unwrap();
        let seen = observe(&t.path).unwrap();
        assert!(matches!(seen, Observed::NotAFile { .. }), "{seen:?}");
        assert!(
            !publish(&t, b"{}").unwrap(),
            "link() refuses an existing symlink"
        );
        assert_eq!(evict(&t, &seen).unwrap(), Eviction::Removed);
        assert_eq!(
            fs::read(&victim).unwrap(),
            b"precious",
            "the target is untouched"
        );
        assert!(fs::symlink_metadata(&t.path).is_err());
    }

    #[test]
    fn observe_tells_files_directories_and_absence_apart() {
        let dir = TempDir::new("io-observe");
        let t = target(&dir);
        assert_eq!(observe(&t.path).unwrap(), Observed::Absent);
        fs::create_dir(&t.path).unwrap();
        assert_eq!(observe(&t.path).unwrap(), Observed::Directory);
        fs::remove_dir(&t.path).unwrap();
        fs::write(&t.path, b"").unwrap();
        match observe(&t.path).unwrap() {
            Observed::File { bytes, record, .. } => {
                assert!(bytes.is_empty());
                assert!(record.is_none());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn observe_reads_a_record_longer_than_its_first_read_whole() {
        let dir = TempDir::new("io-observe-long");
        let t = target(&dir);
        for len in [FIRST_READ - 60, FIRST_READ, 3 * FIRST_READ] {
            let goal = "g".repeat(len);
            let record = format!(
                r#"{{"pid":1,"startTime":2,"heartbeat":3,"goalId":"{goal}","acquiredAt":"x"}}"#
            );
            fs::write(&t.path, &record).unwrap();
            match observe(&t.path).unwrap() {
                Observed::File {
                    bytes, record: r, ..
                } => {
                    assert_eq!(bytes, record.as_bytes(), "goal of {len}");
                    let r = r.expect("parsed");
                    assert_eq!(r.goal_id().and_then(|g| g.as_str()), Some(goal.as_str()));
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[cfg(unix)]
    #[test]
    fn observe_workspace_lock_agrees_with_the_lock_path_in_every_layout() {
        use crate::paths::workspace_lock_path;
        use std::os::unix::fs::symlink;
        let dir = TempDir::new("io-observe-ws");
        let (root, ctx) = crate::test_support::rooted_context(&dir);
        let mk = |rel: &str| {
            let p = root.join(rel);
            fs::create_dir_all(&p).unwrap();
            p
        };
        mk("home/usual/.crew");
        mk("home/nocrew/.git");
        mk("home/linked/.git");
        mk("elsewhere/crew");
        symlink(root.join("elsewhere/crew"), root.join("home/linked/.crew")).unwrap();
        symlink(root.join("home/usual"), root.join("alias")).unwrap();
        mk("home/lockislink/.crew");
        mk("home/nocrew/sub");
        mk("home/legacy/.pi");
        let record = |goal: &str| {
            format!(r#"{{"pid":1,"startTime":2,"heartbeat":3,"goalId":"{goal}","acquiredAt":"x"}}"#)
        };
        let cases = [
            "home/usual",
            "home/nocrew",
            "home/nocrew/sub", // the repo root above: its .crew, not the cwd's
            "home/legacy",     // .pi/teams
            "home/linked",
            "alias",
            "home/lockislink",
            "home/missing/cwd",
        ];
        for rel in cases {
            let cwd = root.join(rel);
            let cwd = cwd.to_str().unwrap();
            let expected = workspace_lock_path(cwd, &ctx).unwrap();
            // Nothing there yet.
            let (path, seen) = observe_workspace_lock(cwd, &ctx).unwrap();
            assert_eq!(path, expected, "{rel}");
            assert_eq!(seen, Observed::Absent, "{rel}");
            if rel == "home/missing/cwd" {
                continue;
            }
            fs::create_dir_all(expected.parent().unwrap()).unwrap();
            if rel == "home/lockislink" {
                symlink(root.join("elsewhere/crew"), &expected).unwrap();
                let (path, seen) = observe_workspace_lock(cwd, &ctx).unwrap();
                assert_eq!(path, expected);
                assert!(matches!(seen, Observed::NotAFile { .. }), "{seen:?}");
                continue;
            }
            fs::write(&expected, record(rel)).unwrap();
            let (path, seen) = observe_workspace_lock(cwd, &ctx).unwrap();
            assert_eq!(path, expected, "{rel}");
            match seen {
                Observed::File {
                    bytes,
                    record: Some(r),
                    ..
                } => {
                    assert_eq!(bytes, record(rel).as_bytes());
                    assert_eq!(r.goal_id().and_then(|g| g.as_str()), Some(rel));
                }
                other => panic!("{rel}: {other:?}"),
            }
        }
        // A directory at the lock path, and errors, come out as the ordinary look gives them.
        let cwd = root.join("home/usual");
        let lock = workspace_lock_path(cwd.to_str().unwrap(), &ctx).unwrap();
        fs::remove_file(&lock).unwrap();
        fs::create_dir(&lock).unwrap();
        let (_, seen) = observe_workspace_lock(cwd.to_str().unwrap(), &ctx).unwrap();
        assert_eq!(seen, Observed::Directory);
        assert!(matches!(
            observe_workspace_lock("a\0b", &ctx),
            Err(LockError::Type(_))
        ));
        fs::write(root.join("home/file"), b"").unwrap();
        match observe_workspace_lock(root.join("home/file/sub").to_str().unwrap(), &ctx) {
            Err(LockError::Io(e)) => assert_eq!((e.code(), e.syscall), ("ENOTDIR", "realpath")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn evict_removes_only_what_was_judged() {
        let dir = TempDir::new("io-evict");
        let t = target(&dir);
        fs::write(&t.path, b"{\"goalId\":\"old\"}").unwrap();
        let judged = observe(&t.path).unwrap();
        // Someone replaces the record after it was judged.
        fs::write(&t.path, b"{\"goalId\":\"new\"}").unwrap();
        assert_eq!(evict(&t, &judged).unwrap(), Eviction::Changed);
        assert_eq!(
            fs::read(&t.path).unwrap(),
            b"{\"goalId\":\"new\"}",
            "put back"
        );
        let judged = observe(&t.path).unwrap();
        assert_eq!(evict(&t, &judged).unwrap(), Eviction::Removed);
        assert_eq!(evict(&t, &judged).unwrap(), Eviction::Gone);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[cfg(unix)]
    #[test]
    fn evict_tells_a_new_empty_file_from_the_old_empty_one_judged() {
        use std::os::unix::fs::MetadataExt;
        let dir = TempDir::new("io-evict-empty");
        let t = target(&dir);
        fs::write(&t.path, b"").unwrap();
        let old = SystemTime::now() - Duration::from_secs(10);
        File::options()
            .write(true)
            .open(&t.path)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let judged = observe(&t.path).unwrap();
        // Kept open so that the new file cannot reuse the old inode.
        let _old = File::open(&t.path).unwrap();
        fs::remove_file(&t.path).unwrap();
        let new = File::create_new(&t.path).unwrap();
        assert!(!observe(&t.path).unwrap().same_as(&judged));
        assert_eq!(evict(&t, &judged).unwrap(), Eviction::Changed);
        assert_eq!(
            fs::symlink_metadata(&t.path).unwrap().ino(),
            new.metadata().unwrap().ino(),
            "put back"
        );
        // The same file, moved aside, is still the one judged.
        let judged = observe(&t.path).unwrap();
        assert_eq!(evict(&t, &judged).unwrap(), Eviction::Removed);
    }

    fn drop_spares_of(t: &LockTarget) {
        if let Some(spare) = spares().remove(t.path.as_os_str()) {
            spare.discard();
        }
    }

    #[cfg(unix)]
    #[test]
    fn claims_reuse_one_inode_and_never_rewrite_a_linked_one() {
        use std::os::unix::fs::MetadataExt;
        let dir = TempDir::new("io-spare");
        let t = target(&dir);
        assert!(publish(&t, b"{\"n\":1}").unwrap());
        let first = fs::metadata(&t.path).unwrap().ino();
        remove(&t).unwrap();
        assert!(publish(&t, b"{\"n\":2}").unwrap());
        assert_eq!(
            fs::metadata(&t.path).unwrap().ino(),
            first,
            "the inode is reused"
        );
        assert_eq!(fs::read(&t.path).unwrap(), b"{\"n\":2}");
        // While the lockfile is still linked (nlink 2), a claim must not rewrite it.
        assert!(!publish(&t, b"{\"n\":3}").unwrap());
        assert_eq!(fs::read(&t.path).unwrap(), b"{\"n\":2}");
        remove(&t).unwrap();
        assert!(publish(&t, b"{\"n\":4}").unwrap());
        assert_ne!(
            fs::metadata(&t.path).unwrap().ino(),
            first,
            "a fresh spare was made"
        );
        drop_spares_of(&t);
        remove(&t).unwrap();
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            0,
            "no spare left behind"
        );
    }

    #[test]
    fn replace_swaps_the_record_in_one_step() {
        let dir = TempDir::new("io-replace");
        let t = target(&dir);
        assert!(publish(&t, b"{\"heartbeat\":1}").unwrap());
        replace(&t, b"{\"heartbeat\":2}").unwrap();
        assert_eq!(fs::read(&t.path).unwrap(), b"{\"heartbeat\":2}");
        drop_spares_of(&t);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
