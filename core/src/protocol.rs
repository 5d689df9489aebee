//! The claim / reclaim / refresh / release protocol.
//!
//! Judging (which may call the caller's resolver and clock) happens outside any lock. The
//! change itself happens under the per-name kernel mutex, after checking that the entry is
//! still exactly what was judged; so among processes of this package no two changes
//! interleave, and a claim always appears whole (`link()` of a complete temp file).

use crate::error::LockError;
use crate::kernel_lock::{mutex_offset, HolderSlot, OwnerFile, MUTEX_PATIENCE};
use crate::liveness::{StaleReason, Verdict};
use crate::lockfile_io::{
    self, evict, may_be_published, observe, publish, Eviction, LockTarget, Observed,
};
use crate::paths::{PathContext, UsualLockPath};
use crate::record::{NewRecord, ParsedRecord};
use crate::sys;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long an unreadable lockfile (empty, unparsable, a symlink…) counts as a claim still
/// being written by a process of the original module (it creates the file empty and writes
/// it afterwards), and so as busy rather than garbage. Capped by `heartbeatStaleMs`.
pub const UNREADABLE_GRACE: Duration = Duration::from_millis(2000);

/// How old a leftover temp file of a crashed claim must be before it is swept.
pub const LEFTOVER_AGE: Duration = Duration::from_secs(30);

/// Rounds of judge-then-verify before giving up as busy when the entry keeps changing.
const MAX_ROUNDS: usize = 32;

/// Whether an entry judged by its age (empty, unparsable, not a file) is young enough to be
/// a claim still being written, and so busy: the one rule for claims, sweeps and readers.
pub fn is_being_written(seen: &Observed, heartbeat_stale_ms: f64) -> bool {
    seen.is_young(unreadable_grace(heartbeat_stale_ms))
}

pub fn unreadable_grace(heartbeat_stale_ms: f64) -> Duration {
    if heartbeat_stale_ms.is_nan() || heartbeat_stale_ms < 0.0 {
        return Duration::ZERO;
    }
    UNREADABLE_GRACE.min(Duration::from_secs_f64(
        heartbeat_stale_ms.min(1e9) / 1000.0,
    ))
}

/// The caller's side of a claim: how to judge a record, and the record to write.
pub trait Claimant {
    type Error: From<LockError>;
    /// Judges a parsed record. `owners` is the directory's owner file, if it exists.
    fn judge(
        &mut self,
        record: &ParsedRecord,
        owners: Option<&OwnerFile>,
    ) -> Result<Verdict, Self::Error>;
    /// Our record, without its kernel-lock fields (the claim fills them). Reads the clock.
    fn record(&mut self) -> Result<NewRecord, Self::Error>;
}

/// A lock this process holds.
#[derive(Debug)]
pub struct Claimed {
    pub target: LockTarget,
    /// The open owner file holding our kernel byte (dropping it frees the byte).
    pub owners: Option<OwnerFile>,
    pub slot: Option<HolderSlot>,
    pub record: NewRecord,
    /// The exact bytes now in the lockfile.
    pub bytes: String,
    /// The stale entry this claim replaced, if there was one.
    pub reclaimed: Option<Reclaim>,
}

/// What a claim took over: why the entry was stale, and its record if it had one.
#[derive(Debug, Clone, PartialEq)]
pub struct Reclaim {
    pub reason: StaleReason,
    pub previous: Option<ParsedRecord>,
}

/// Who holds the lock when it is busy (`None`: an unreadable file that was only just written).
#[derive(Debug, Clone, PartialEq)]
pub struct Busy {
    pub holder: Option<ParsedRecord>,
    /// Busy because the lock's mutex stayed held (its holder stopped inside): whatever
    /// `holder` is, only a change of the lockfile, or time, can end this.
    pub mutex_stuck: bool,
}

impl Busy {
    pub fn held_by(holder: Option<ParsedRecord>) -> Busy {
        Busy {
            holder,
            mutex_stuck: false,
        }
    }
}

#[derive(Debug)]
pub enum ClaimOutcome {
    Claimed(Box<Claimed>),
    Busy(Busy),
}

enum Decision {
    Claim(Option<StaleReason>),
    Busy(Busy),
}

fn decide<C: Claimant>(
    seen: &Observed,
    target: &LockTarget,
    claimant: &mut C,
    grace: Duration,
    owners: Option<&OwnerFile>,
) -> Result<Decision, C::Error> {
    let judge_unreadable = |seen: &Observed| {
        if seen.is_young(grace) {
            Decision::Busy(Busy::held_by(None))
        } else {
            Decision::Claim(Some(StaleReason::Corrupt))
        }
    };
    Ok(match seen {
        Observed::Absent => Decision::Claim(None),
        Observed::Directory => {
            return Err(LockError::errno(libc::EISDIR, "open", &target.path).into());
        }
        Observed::File {
            record: Some(record),
            ..
        } => match claimant.judge(record, owners)? {
            Verdict::Live => Decision::Busy(Busy::held_by(Some(record.clone()))),
            Verdict::Stale(reason) => Decision::Claim(Some(reason)),
            Verdict::Malformed => judge_unreadable(seen),
        },
        Observed::File { record: None, .. } | Observed::NotAFile { .. } => judge_unreadable(seen),
    })
}

/// Holds the per-name mutex for its lifetime.
struct MutexGuard<'a> {
    owners: &'a OwnerFile,
    offset: u64,
}

impl<'a> MutexGuard<'a> {
    fn lock(owners: &'a OwnerFile, target: &LockTarget) -> Result<MutexGuard<'a>, LockError> {
        let offset = mutex_offset(target.file_name());
        owners.lock_mutex(offset)?;
        Ok(MutexGuard { owners, offset })
    }

    /// The mutex within [`MUTEX_PATIENCE`], or `None`: its holder is stopped inside it.
    fn lock_within(
        owners: &'a OwnerFile,
        target: &LockTarget,
    ) -> Result<Option<MutexGuard<'a>>, LockError> {
        let offset = mutex_offset(target.file_name());
        Ok(owners
            .lock_mutex_within(offset, MUTEX_PATIENCE)?
            .then_some(MutexGuard { owners, offset }))
    }

    /// For a holder about to close its owner file: closing its open file description frees
    /// the mutex with every other byte it holds, so no separate unlock is needed.
    fn freed_by_closing(guard: Option<Self>) {
        std::mem::forget(guard);
    }
}

impl Drop for MutexGuard<'_> {
    fn drop(&mut self) {
        self.owners.unlock_mutex(self.offset);
    }
}

/// workspaceLockPath(cwd) for a claim, with the owner file the claim needs opened on the way:
/// in pi-crew's usual layout, opening (creating) `.owners` symlink-free settles the path
/// ([`UsualLockPath`]), so the claim costs no separate look at `.crew`. Elsewhere (no locks
/// directory yet, symlinks, another layout, no openat2) the path is computed as usual and
/// the claim opens the owner file itself.
pub fn lock_path_for_claim(
    cwd: &str,
    ctx: &PathContext,
) -> Result<(PathBuf, Option<OwnerFile>), LockError> {
    let usual = UsualLockPath::of(cwd, ctx);
    match OwnerFile::open_symlink_free(&usual.dir) {
        Ok(owners) => Ok((usual.path, Some(owners))),
        Err(_) => Ok((usual.resolved(ctx)?, None)),
    }
}

/// One attempt to take the lock: claims it if it is absent or stale, else reports the holder.
/// `opened`: the directory's owner file if the caller already opened it (see
/// [`OwnerFile::open_symlink_free`]), used instead of opening it again.
pub fn try_claim<C: Claimant>(
    target: &LockTarget,
    claimant: &mut C,
    heartbeat_stale_ms: f64,
    mut opened: Option<OwnerFile>,
) -> Result<ClaimOutcome, C::Error> {
    let grace = unreadable_grace(heartbeat_stale_ms);
    let mut last_busy = Busy::held_by(None);
    for round in 0..MAX_ROUNDS {
        // A fresh acquire that found the owner file (so the directory) claims blind first:
        // link() refuses whatever is at the lock path, and a lock is usually free, so looking
        // first would cost an open for nothing. Not while a claim of ours may be published
        // there (another goal of this process holding it): that attempt would only churn
        // our spare.
        let blind = round == 0 && opened.is_some() && !may_be_published(target);
        let seen = if blind {
            Observed::Absent
        } else {
            observe(&target.path)?
        };
        // Opened (if it exists) only to judge a record; the claim reuses it.
        let probe = opened.take().or_else(|| match &seen {
            Observed::File {
                record: Some(_), ..
            } => OwnerFile::open_to_judge(&target.dir),
            _ => None,
        });
        let reclaimed = match decide(&seen, target, claimant, grace, probe.as_ref())? {
            Decision::Busy(busy) => return Ok(ClaimOutcome::Busy(busy)),
            Decision::Claim(reason) => reason.map(|reason| Reclaim {
                reason,
                previous: match &seen {
                    Observed::File { record, .. } => record.clone(),
                    _ => None,
                },
            }),
        };
        let owners = match probe {
            Some(owners) if owners.writable() => Some(owners),
            _ => open_for_claim(&target.dir)?,
        };
        let slot = owners.as_ref().map(|_| HolderSlot::random());
        let mut record = claimant.record()?;
        record.owner_lock = slot.map(|s| s.0);
        // Which file our byte is in: a byte judged in any other says nothing of us.
        record.owner_file = owners.as_ref().and_then(OwnerFile::id);
        let bytes = record.to_json();
        let attempt = match &owners {
            Some(owners) => match MutexGuard::lock_within(owners, target) {
                Ok(Some(_mutex)) => publish_if_unchanged(target, &seen, owners, slot, &bytes),
                // Someone is stopped in the middle of changing this lock: it is busy until
                // they run again. Report whoever is there.
                Ok(None) => {
                    let holder = match observe(&target.path)? {
                        Observed::File { record, .. } => record,
                        _ => None,
                    };
                    return Ok(ClaimOutcome::Busy(Busy {
                        holder,
                        mutex_stuck: true,
                    }));
                }
                Err(e) => Err(e),
            },
            // No kernel locks here: the original's protocol, minus its races we can avoid.
            None => fs::create_dir_all(&target.dir)
                .map_err(|e| LockError::io(&e, "mkdir", &target.dir))
                .and_then(|()| evict_if_present(target, &seen))
                .and_then(|present| Ok(present && publish(target, bytes.as_bytes())?)),
        };
        let published = match attempt {
            // The directory was removed under the claim (`rm -rf` of the state, `git clean`):
            // nothing was published. Make it anew, with a new owner file, next round.
            Err(LockError::Io(e)) if e.errno == libc::ENOENT && round + 1 < MAX_ROUNDS => {
                continue;
            }
            // A blind claim that could not be written (a full or read-only disk, an I/O
            // error): the lock may well be validly held, which makes it busy, not an error.
            // Look, and fail only if it is free to take.
            Err(LockError::Io(_)) if blind => {
                opened = owners;
                continue;
            }
            other => other?,
        };
        if published {
            return Ok(ClaimOutcome::Claimed(Box::new(Claimed {
                target: target.clone(),
                owners,
                slot,
                record,
                bytes,
                reclaimed,
            })));
        }
        if blind {
            // Something is there: look at it next round, with the same owner file.
            opened = owners;
            continue;
        }
        if let Observed::File {
            record: Some(r), ..
        } = observe(&target.path)?
        {
            last_busy = Busy::held_by(Some(r));
        }
    }
    Ok(ClaimOutcome::Busy(last_busy))
}

/// The owner file of `dir`, created if needed, and the directory too (as the original
/// creates it when it claims).
fn open_for_claim(dir: &Path) -> Result<Option<OwnerFile>, LockError> {
    match OwnerFile::open(dir, true) {
        Err(LockError::Io(e)) if e.errno == libc::ENOENT => {
            fs::create_dir_all(dir).map_err(|e| LockError::io(&e, "mkdir", dir))?;
            OwnerFile::open(dir, true)
        }
        other => other,
    }
}

/// Under the mutex: if the entry is still what was judged, remove it and publish our record
/// holding our kernel byte. `false` if anything changed (judge again).
fn publish_if_unchanged(
    target: &LockTarget,
    seen: &Observed,
    owners: &OwnerFile,
    slot: Option<HolderSlot>,
    bytes: &str,
) -> Result<bool, LockError> {
    let seen = match seen {
        Observed::Absent => seen,
        _ => match look_again(target, seen)? {
            Judged::Gone => &Observed::Absent,
            Judged::Still => seen,
            Judged::Changed => return Ok(false),
        },
    };
    if !evict_if_present(target, seen)? {
        return Ok(false);
    }
    if let Some(slot) = slot {
        if !owners.try_hold(slot)? {
            return Ok(false); // a random byte already taken: try again with another
        }
    }
    // The byte is held before the record exists, so no judge ever sees our record with
    // our byte free.
    let published = publish(target, bytes.as_bytes());
    if !matches!(published, Ok(true)) {
        if let Some(slot) = slot {
            owners.unhold(slot);
        }
    }
    published
}

/// What an entry judged stale is when looked at again.
enum Judged {
    Gone,
    Still,
    Changed,
}

/// Under the mutex, before changing an entry judged stale: is it still what was judged?
/// A holder that released between our read and the probe of its kernel byte looks dead, and
/// its successor's record may be in place by now. Moving that aside and back (evict() would,
/// finding it changed) costs more than this look, and leaves the lock path empty for a
/// moment, where a process of the original module could claim. evict() still compares what
/// it moved with what was judged, against writers that do not take the mutex.
fn look_again(target: &LockTarget, judged: &Observed) -> Result<Judged, LockError> {
    Ok(match observe(&target.path)? {
        Observed::Absent => Judged::Gone,
        now if now.same_as(judged) => Judged::Still,
        _ => Judged::Changed,
    })
}

fn evict_if_present(target: &LockTarget, seen: &Observed) -> Result<bool, LockError> {
    Ok(match seen {
        Observed::Absent => true,
        _ => !matches!(evict(target, seen)?, Eviction::Changed),
    })
}

/// What a holder finds when it checks its lockfile.
#[derive(Debug, Clone, PartialEq)]
pub enum Ownership {
    Ours,
    /// Not looked at: someone is stopped inside this lock's mutex. Look again later.
    Undecided,
    /// The lockfile is no longer ours; the text says what is there instead.
    Lost(String),
}

/// Describes what replaced a holder's record.
fn describe_loss(seen: &Observed) -> String {
    use crate::js_semantics::template_string;
    match seen {
        Observed::Absent => "the lockfile was deleted".to_string(),
        Observed::File {
            record: Some(r), ..
        } => format!(
            "the lockfile now holds goalId={} (pid={})",
            template_string(r.goal_id()),
            template_string(r.pid())
        ),
        Observed::File { .. } => "the lockfile was overwritten with unreadable content".to_string(),
        Observed::NotAFile { .. } | Observed::Directory => {
            "the lockfile was replaced by something that is not a file".to_string()
        }
    }
}

/// The holder's periodic check: is the lockfile still exactly what we last wrote? If so and
/// `refreshed` is given, write that (a fresher heartbeat) in its place.
pub fn check_and_refresh(
    held: &mut Claimed,
    refreshed: Option<NewRecord>,
) -> Result<Ownership, LockError> {
    let _mutex = match &held.owners {
        Some(owners) => match MutexGuard::lock_within(owners, &held.target)? {
            Some(mutex) => Some(mutex),
            None => return Ok(Ownership::Undecided),
        },
        None => None,
    };
    let seen = observe(&held.target.path)?;
    match &seen {
        Observed::File { bytes, .. } if bytes.as_slice() == held.bytes.as_bytes() => {}
        other => return Ok(Ownership::Lost(describe_loss(other))),
    }
    if let Some(record) = refreshed {
        let bytes = record.to_json();
        lockfile_io::replace(&held.target, bytes.as_bytes())?;
        held.record = record;
        held.bytes = bytes;
    }
    Ok(Ownership::Ours)
}

/// Releases: deletes the lockfile only while it still holds this claim (the original's
/// goalId + pid + startTime guard, and our kernel byte), then frees the kernel byte.
/// Returns whether a lockfile was deleted. Waits for the mutex as long as it takes.
pub fn release(held: &mut Claimed) -> Result<bool, LockError> {
    release_noting_loss(held, Patience::Wait).map(|r| r == Released::Deleted)
}

/// How long to try for the mutex.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Patience {
    /// As long as it takes (a thread that may block).
    Wait,
    /// [`MUTEX_PATIENCE`] (the JavaScript thread).
    Bounded,
}

/// What a release did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Released {
    Deleted,
    /// The lockfile was no longer ours: what had replaced it. Left alone.
    NotOurs(String),
    /// Nothing yet: the mutex stayed held (see [`MutexGuard::lock_within`]). Release again
    /// where waiting is allowed.
    MutexBusy,
}

/// [`release`], saying what had replaced the lockfile when it was no longer ours.
pub fn release_noting_loss(held: &mut Claimed, patience: Patience) -> Result<Released, LockError> {
    let mutex = match (&held.owners, patience) {
        (Some(owners), Patience::Wait) => Some(MutexGuard::lock(owners, &held.target)?),
        (Some(owners), Patience::Bounded) => match MutexGuard::lock_within(owners, &held.target)? {
            Some(mutex) => Some(mutex),
            None => return Ok(Released::MutexBusy),
        },
        (None, _) => None,
    };
    let released = {
        // Our own spare still linked there is read without opening the lockfile again.
        let own = lockfile_io::read_own_publication(&held.target);
        let ours = own.is_some();
        let seen = match own {
            // Our very bytes need no parsing.
            Some(bytes) => Observed::File {
                record: (bytes != held.bytes.as_bytes())
                    .then(|| ParsedRecord::parse(&bytes))
                    .flatten(),
                bytes,
                stamp: None,
            },
            None => observe(&held.target.path)?,
        };
        // Anything but our very bytes must still name this holder.
        let held_by_us = match &seen {
            Observed::File { bytes, record, .. } => {
                bytes.as_slice() == held.bytes.as_bytes()
                    || record.as_ref().is_some_and(|r| {
                        r.is_held_by(
                            &held.record.goal_id,
                            held.record.pid,
                            held.record.start_time,
                            held.slot.map(|s| s.0),
                        )
                    })
            }
            _ => false,
        };
        if held_by_us {
            if ours {
                lockfile_io::remove_own_publication(&held.target)?;
            } else {
                lockfile_io::remove(&held.target)?;
            }
            Released::Deleted
        } else {
            Released::NotOurs(describe_loss(&seen))
        }
    };
    // Closing the owner file (its only descriptor) frees our byte and the mutex at once:
    // one syscall instead of an unlock and a close.
    MutexGuard::freed_by_closing(mutex);
    held.owners = None;
    Ok(released)
}

/// A lockfile judged stale and removed by `reclaim_stale`.
#[derive(Debug, Clone, PartialEq)]
pub struct Reclaimed {
    pub file_name: Vec<u8>,
    pub reason: StaleReason,
}

/// Judges one record for `reclaim_stale`, given the directory's owner file if it exists.
pub type Judge<'a, E> = dyn FnMut(&ParsedRecord, Option<&OwnerFile>) -> Result<Verdict, E> + 'a;

/// Removes every stale `*.lock` in `dir` (not recursive), in byte order of names, and sweeps
/// old leftovers of crashed claims. A missing directory has none.
pub fn reclaim_stale<E: From<LockError>>(
    dir: &Path,
    judge: &mut Judge<'_, E>,
    heartbeat_stale_ms: f64,
) -> Result<Vec<Reclaimed>, E> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        // No locks can exist where the directory cannot (SPEC's error rule).
        Err(e) if matches!(sys::errno(&e), Some(libc::ENOENT | libc::ENOTDIR)) => {
            return Ok(Vec::new())
        }
        Err(e) => return Err(LockError::io(&e, "scandir", dir).into()),
    };
    let mut names: Vec<Vec<u8>> = Vec::new();
    let mut leftovers: Vec<Vec<u8>> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| LockError::io(&e, "scandir", dir))?;
        let name = entry.file_name().as_encoded_bytes().to_vec();
        if name.ends_with(b".lock") {
            names.push(name);
        } else if lockfile_io::is_leftover_name(&name) {
            leftovers.push(name);
        }
    }
    names.sort_unstable();
    let grace = unreadable_grace(heartbeat_stale_ms);
    // One owner file for the whole sweep: to probe holders, then as the mutex. It is
    // created only if something stale must go and it does not exist yet.
    let mut owners = OwnerFile::open(dir, false).ok().flatten();
    let mut create_tried = false;
    let mut reclaimed = Vec::new();
    for name in names {
        let target = LockTarget::new(dir.join(sys::os_str_from_encoded(&name)));
        // Best effort per file, as the original: one unreadable entry does not stop the sweep.
        let Ok(seen) = observe(&target.path) else {
            continue;
        };
        let reason = match &seen {
            Observed::Absent | Observed::Directory => continue,
            Observed::File {
                record: Some(r), ..
            } => match judge(r, owners.as_ref())? {
                Verdict::Live => continue,
                Verdict::Stale(reason) => reason,
                Verdict::Malformed if seen.is_young(grace) => continue,
                Verdict::Malformed => StaleReason::Corrupt,
            },
            _ if seen.is_young(grace) => continue,
            _ => StaleReason::Corrupt,
        };
        if owners.is_none() && !create_tried {
            create_tried = true;
            owners = OwnerFile::open(dir, true).ok().flatten();
        }
        let removed = match &owners {
            Some(owners) => {
                // A mutex that stays held (its holder stopped inside) skips this file.
                let Ok(Some(_mutex)) = MutexGuard::lock_within(owners, &target) else {
                    continue;
                };
                matches!(look_again(&target, &seen), Ok(Judged::Still))
                    && matches!(evict(&target, &seen), Ok(Eviction::Removed))
            }
            None => matches!(evict(&target, &seen), Ok(Eviction::Removed)),
        };
        if removed {
            reclaimed.push(Reclaimed {
                file_name: name,
                reason,
            });
        }
    }
    sweep_leftovers(dir, &leftovers);
    if let Some(owners) = &owners {
        owners.sweep_dead();
    }
    Ok(reclaimed)
}

fn sweep_leftovers(dir: &Path, names: &[Vec<u8>]) {
    for name in names {
        let path = dir.join(sys::os_str_from_encoded(name));
        let old = fs::symlink_metadata(&path)
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age >= LEFTOVER_AGE);
        if old {
            let _ = fs::remove_file(&path);
        }
    }
}

#[cfg(test)]
mod tests;
