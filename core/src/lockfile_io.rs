//! Reading and changing one lockfile without ever following a symlink at its path, and so
//! that every record appears whole: claims are written to a temp file and `link()`ed into
//! place (failing if anything is there), refreshes are `rename()`d over, and stale records
//! are moved aside and checked before they are deleted. Temp names start with a dot and
//! never end in `.lock`, so no reader of `*.lock` ever sees them.

use crate::error::LockError;
use crate::kernel_lock::random_u64;
use crate::record::ParsedRecord;
use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

pub const CLAIM_SUFFIX: &str = ".claim";
pub const EVICTED_SUFFIX: &str = ".evicted";

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
        self.path.file_name().map_or(&b""[..], OsStr::as_bytes)
    }

    fn sibling(&self, suffix: &str) -> PathBuf {
        let stem = self
            .file_name()
            .strip_suffix(b".lock")
            .unwrap_or(self.file_name());
        let mut name = Vec::with_capacity(stem.len() + 40);
        name.push(b'.');
        name.extend_from_slice(stem);
        name.extend_from_slice(format!(".{}.{:016x}", std::process::id(), random_u64()).as_bytes());
        name.extend_from_slice(suffix.as_bytes());
        self.dir.join(OsStr::from_bytes(&name))
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
        modified: SystemTime,
    },
    /// A symlink, FIFO, socket or device: never followed or opened, judged by its age.
    NotAFile {
        modified: SystemTime,
    },
    Directory,
}

impl Observed {
    /// Age of an unreadable entry, by its modification time on the real clock.
    pub fn age(&self) -> Option<Duration> {
        let modified = match self {
            Observed::File { modified, .. } | Observed::NotAFile { modified } => *modified,
            _ => return None,
        };
        Some(
            SystemTime::now()
                .duration_since(modified)
                .unwrap_or(Duration::ZERO),
        )
    }

    /// Same entry content: used to check, under the mutex, that what was judged is still there.
    pub fn same_as(&self, other: &Observed) -> bool {
        match (self, other) {
            (Observed::Absent, Observed::Absent) | (Observed::Directory, Observed::Directory) => {
                true
            }
            (Observed::File { bytes: a, .. }, Observed::File { bytes: b, .. }) => a == b,
            (Observed::NotAFile { modified: a }, Observed::NotAFile { modified: b }) => a == b,
            _ => false,
        }
    }
}

/// Reads what is at `path` without following a symlink or blocking on a FIFO.
pub fn observe(path: &Path) -> Result<Observed, LockError> {
    let opened = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path);
    let mut file = match opened {
        Ok(f) => f,
        Err(e) => {
            return match e.raw_os_error() {
                Some(libc::ENOENT) => Ok(Observed::Absent),
                // ELOOP: a symlink. ENXIO: a socket. Look at the entry itself.
                Some(libc::ELOOP) | Some(libc::ENXIO) | Some(libc::EOPNOTSUPP) => {
                    match fs::symlink_metadata(path) {
                        Ok(meta) => Ok(Observed::NotAFile {
                            modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                        }),
                        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(Observed::Absent),
                        Err(e) => Err(LockError::io(&e, "lstat", path)),
                    }
                }
                _ => Err(LockError::io(&e, "open", path)),
            };
        }
    };
    let meta = file
        .metadata()
        .map_err(|e| LockError::io(&e, "fstat", path))?;
    let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    if meta.is_dir() {
        return Ok(Observed::Directory);
    }
    if !meta.is_file() {
        return Ok(Observed::NotAFile { modified });
    }
    let mut bytes = Vec::with_capacity(meta.size().min(1 << 16) as usize + 1);
    file.read_to_end(&mut bytes)
        .map_err(|e| LockError::io(&e, "read", path))?;
    let record = ParsedRecord::parse(&bytes);
    Ok(Observed::File {
        bytes,
        record,
        modified,
    })
}

/// Writes `bytes` to a fresh temp file beside the lockfile (never following a symlink).
fn write_temp(target: &LockTarget, bytes: &[u8]) -> Result<PathBuf, LockError> {
    let temp = target.sibling(CLAIM_SUFFIX);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .mode(0o644)
        .open(&temp)
        .map_err(|e| LockError::io(&e, "open", &temp))?;
    if let Err(e) = file.write_all(bytes) {
        let _ = fs::remove_file(&temp);
        return Err(LockError::io(&e, "write", &temp));
    }
    Ok(temp)
}

/// Publishes a claim whole: `link()` fails if anything (even a dangling symlink) is at the
/// lock path. `Ok(false)` when something is.
pub fn publish(target: &LockTarget, bytes: &[u8]) -> Result<bool, LockError> {
    let temp = write_temp(target, bytes)?;
    let linked = fs::hard_link(&temp, &target.path);
    let _ = fs::remove_file(&temp);
    match linked {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(false),
        Err(e) => Err(LockError::io(&e, "link", &target.path)),
    }
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
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(Eviction::Gone),
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

/// Deletes the lockfile (its holder releasing, under the mutex).
pub fn remove(target: &LockTarget) -> Result<(), LockError> {
    match fs::remove_file(&target.path) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        Err(e) => Err(LockError::io(&e, "unlink", &target.path)),
    }
}

/// Whether a directory entry is a leftover of a claim or eviction of this package.
pub fn is_leftover_name(name: &[u8]) -> bool {
    name.first() == Some(&b'.')
        && (name.ends_with(CLAIM_SUFFIX.as_bytes()) || name.ends_with(EVICTED_SUFFIX.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::TempDir;

    fn target(dir: &TempDir) -> LockTarget {
        LockTarget::new(dir.path().join("abc.lock"))
    }

    #[test]
    fn publish_appears_whole_and_refuses_to_overwrite() {
        let dir = TempDir::new("io-publish");
        let t = target(&dir);
        assert!(publish(&t, b"{\"goalId\":\"a\"}").unwrap());
        assert!(!publish(&t, b"{\"goalId\":\"b\"}").unwrap());
        assert_eq!(fs::read(&t.path).unwrap(), b"{\"goalId\":\"a\"}");
        let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "temp files are removed");
    }

    #[test]
    fn temp_names_never_end_in_lock() {
        let dir = TempDir::new("io-names");
        let t = target(&dir);
        for suffix in [CLAIM_SUFFIX, EVICTED_SUFFIX] {
            let name = t.sibling(suffix);
            let name = name.file_name().unwrap().as_bytes();
            assert!(!name.ends_with(b".lock"));
            assert!(is_leftover_name(name));
        }
        assert!(!is_leftover_name(b"abc.lock"));
    }

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

    #[test]
    fn replace_swaps_the_record_in_one_step() {
        let dir = TempDir::new("io-replace");
        let t = target(&dir);
        assert!(publish(&t, b"{\"heartbeat\":1}").unwrap());
        replace(&t, b"{\"heartbeat\":2}").unwrap();
        assert_eq!(fs::read(&t.path).unwrap(), b"{\"heartbeat\":2}");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
