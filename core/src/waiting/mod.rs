//! Waiting for a busy lock without polling: one native thread per process watches, for every
//! waiter, the events that can free the lock, and calls the waiter back at the first one:
//! - the lockfile's directory entry changing (inotify: release, reclaim, refresh, overwrite);
//! - the holder's death: its kernel byte becoming free (a helper thread blocked on it) for a
//!   holder of this package, or its pid exiting (a pidfd) for a holder of the original;
//! - the fallback deadline (`pollMs`), for what no event reports (another host's heartbeat
//!   growing old, a file system without inotify);
//! - the end of its pause, for a waiter that has just lost a race under contention and
//!   listens to no directory event meanwhile ([`LOST_RACE_PAUSE`]).
//!
//! The callback runs on the watcher thread and must be quick (it hands off to JavaScript).
//!
//! Here: the waiters and their turns (who of a lock path's waiters looks, shared looks);
//! in [`line`] the order of this process's acquisitions; in [`park`] what a busy acquisition
//! waits for; in [`pauses`] the contention pauses;
//! in `watcher` the thread and its watches over the platform layer ([`crate::sys`]).

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use crate::kernel_lock::OWNER_FILE_NAME;
use crate::record::ParsedRecord;
use crate::sys::{self, PidHandle};

/// What woke a waiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WakeReason {
    /// The lockfile's directory entry changed.
    Changed,
    /// The holder died or let go of its kernel lock.
    HolderGone,
    /// The fallback deadline passed.
    Deadline,
}

/// Who holds the lock, for watching their death.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HolderWatch {
    /// A holder of this package: its byte in the owner file (the inode its record names).
    KernelByte {
        owner_file: PathBuf,
        offset: u64,
        owner_id: Option<crate::record::FileId>,
    },
    /// A holder of the original module in our PID namespace.
    Pid(i32),
}

pub struct WaitSpec {
    pub lock_path: PathBuf,
    pub holder: Option<HolderWatch>,
    pub deadline: Instant,
    /// Arrival order among this process's waiters (keep it across re-registrations): an
    /// event wakes only the earliest waiter of a lock path, the others stay asleep.
    pub order: u64,
    /// A pause after a lost race (see [`pause_after`]): for that long the waiter listens
    /// to no directory event, only to its holder's death and its deadline, and it is woken
    /// when the pause ends, to look again.
    pub pause: Option<Duration>,
    /// Waiters of one lock path with the same `judging` judge a lock alike (`None`: by
    /// callbacks of its own), so a look by one of them tells the others what they would
    /// see: the deadline of a waiter is put off while another such waiter looked since it
    /// last learnt anything. The fallback then costs one look per `pollMs` per lock path,
    /// not one per waiter.
    pub judging: Option<u64>,
}

pub type WakeCallback = Box<dyn FnOnce(WakeReason) + Send>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WaitId(u64);

struct Waiter {
    dir: PathBuf,
    name: OsString,
    holder: Option<HolderWatch>,
    deadline: Instant,
    /// From when it was registered to its deadline.
    interval: Duration,
    /// When it last learnt the lock's state: its registration, or a look by a waiter of
    /// the same path that judges alike (see [`WaitSpec::judging`]).
    since: Instant,
    judging: Option<u64>,
    order: u64,
    /// The end of its pause. Only a waiter without one listens to directory events (and is
    /// then a user of the directory's inotify watch).
    paused_until: Option<Instant>,
    callback: WakeCallback,
}

impl Waiter {
    fn listening(&self) -> bool {
        self.paused_until.is_none()
    }
}

/// The waiters of one lock path in one turn of the watcher: the earliest of them, and the
/// earliest that an event woke.
struct PathTurn {
    first: (u64, WaitId),
    first_paused: bool,
    woken: Option<((u64, WaitId), WakeReason)>,
}

#[derive(Default)]
struct State {
    next_id: u64,
    waiters: HashMap<WaitId, Waiter>,
    dirs: HashMap<PathBuf, DirWatch>,
    pidfds: HashMap<i32, sys::PidFd>,
    /// Kernel bytes a helper thread is blocked on; removed (and fired) when it returns.
    byte_watchers: HashSet<(PathBuf, u64)>,
    fired_bytes: Vec<(PathBuf, u64)>,
    /// Pids found gone when a watch was asked for.
    exited_pids: Vec<i32>,
    /// The latest look at each lock path (directory, name) by a waiter judging alike.
    looks: HashMap<(PathBuf, OsString, u64), Instant>,
    /// Per lock path, the waiter (its order) woken for an event, and when: until it waits
    /// again or leaves the line, the event is its to act on (see [`HEAD_PATIENCE`]).
    woken_heads: HashMap<(PathBuf, OsString), (u64, Instant)>,
    thread_started: bool,
}

/// How soon a waiter looks again at an unreadable lockfile that was only just written: the
/// original module creates its lockfile empty and writes it afterwards, and writing raises
/// no event we watch.
pub const UNREADABLE_RELOOK: Duration = Duration::from_millis(25);

/// How long the first waiter in line may take to act on the event it was woken for before
/// the next waiter of its process looks instead: its thread may be blocked (a worker busy
/// in synchronous code), and the lock may be free meanwhile.
pub const HEAD_PATIENCE: Duration = Duration::from_millis(50);

/// Calls `callback` once, at the first event that may have freed the lock.
pub fn register(spec: WaitSpec, callback: WakeCallback) -> WaitId {
    let svc = service();
    let dir = spec
        .lock_path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let name = spec
        .lock_path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    let now = Instant::now();
    let mut st = svc.lock();
    st.next_id += 1;
    let id = WaitId(st.next_id);
    st.note_waiting_again(&dir, &name, spec.order);
    if spec.pause.is_none() {
        svc.watch_dir(&mut st, &dir);
    }
    if let Some(holder) = &spec.holder {
        svc.watch_holder(&mut st, holder);
    }
    st.waiters.insert(
        id,
        Waiter {
            dir,
            name,
            holder: spec.holder,
            deadline: spec.deadline,
            interval: spec.deadline.saturating_duration_since(now),
            since: now,
            judging: spec.judging,
            order: spec.order,
            paused_until: spec
                .pause
                .map(|p| now.checked_add(p).unwrap_or(spec.deadline)),
            callback,
        },
    );
    // Started by ensure_watcher() before any wait; tried again here for callers that skip it.
    let _ = svc.start_thread(&mut st);
    drop(st);
    svc.poke();
    id
}

/// Starts the thread that wakes waiters, if it is not running: without it no waiter would
/// ever wake, so an acquisition that must wait fails instead.
pub fn ensure_watcher() -> Result<(), crate::error::LockError> {
    let svc = service();
    let mut st = svc.lock();
    svc.start_thread(&mut st).map_err(|e| {
        crate::error::LockError::Thread(crate::error::ThreadFailure::from_io(&e, "waiter"))
    })
}

/// Withdraws a waiter; `true` if its callback had not run (and now never will).
pub fn cancel(id: WaitId) -> bool {
    let svc = service();
    let mut st = svc.lock();
    match st.waiters.remove(&id) {
        Some(w) => {
            if w.listening() {
                svc.unwatch_dir(&mut st, &w.dir);
            }
            true
        }
        None => false,
    }
}

/// Wakes the earliest waiter of `lock_path` now: used when a woken waiter leaves without
/// taking the lock (aborted, failed), so that the next in line looks at it. One that pauses
/// looks when its pause ends, and those behind it wait for it.
pub fn nudge(lock_path: &Path) {
    let svc = service();
    let mut st = svc.lock();
    let dir = lock_path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let name = lock_path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    let head = st
        .waiters
        .iter()
        .filter(|(_, w)| w.dir == dir && w.name == name)
        .min_by_key(|(id, w)| (w.order, **id))
        .filter(|(_, w)| w.listening())
        .map(|(id, _)| *id);
    let Some(w) = head.and_then(|id| st.waiters.remove(&id)) else {
        return;
    };
    svc.unwatch_dir(&mut st, &w.dir);
    st.note_woken(&w, WakeReason::Changed, Instant::now());
    drop(st);
    (w.callback)(WakeReason::Changed);
}

impl State {
    /// Notes the looks about to happen (`fired`: each woken waiter looks), then lets a
    /// fallback deadline (`expired`) through, oldest waiter first, only if no waiter of its
    /// lock path judging alike looked since it last learnt anything; otherwise puts it off
    /// by its interval from that look. So a lock path's waiters share one fallback look per
    /// interval, and a waiter whose thread is blocked holds the others up for one interval
    /// at most.
    fn pass_on_looks(
        &mut self,
        fired: &mut Vec<(WaitId, WakeReason)>,
        mut expired: Vec<WaitId>,
        now: Instant,
    ) {
        let State { waiters, looks, .. } = self;
        let key = |w: &Waiter| w.judging.map(|j| (w.dir.clone(), w.name.clone(), j));
        for (id, _) in fired.iter() {
            if let Some(k) = waiters.get(id).and_then(key) {
                looks.insert(k, now);
            }
        }
        expired
            .sort_unstable_by_key(|id| waiters.get(id).map_or((u64::MAX, *id), |w| (w.order, *id)));
        for id in expired {
            let Some(w) = waiters.get_mut(&id) else {
                continue;
            };
            let k = key(w);
            let seen = k
                .as_ref()
                .and_then(|k| looks.get(k))
                .copied()
                .filter(|at| *at > w.since);
            match seen {
                Some(at) => {
                    w.since = at;
                    w.deadline = at.checked_add(w.interval).unwrap_or(at);
                }
                None => {
                    if let Some(k) = k {
                        looks.insert(k, now);
                    }
                    fired.push((id, WakeReason::Deadline));
                }
            }
        }
    }

    /// Notes a waiter woken for an event (not its deadline): the event is its to act on.
    /// Waiters are woken oldest first, so of one turn (`now`) the first noted counts.
    fn note_woken(&mut self, w: &Waiter, reason: WakeReason, now: Instant) {
        if reason == WakeReason::Deadline {
            return;
        }
        let key = (w.dir.clone(), w.name.clone());
        if self.woken_heads.get(&key).is_none_or(|(_, at)| *at < now) {
            self.woken_heads.insert(key, (w.order, now));
        }
    }

    /// A waiter woken for an event waits again: it has acted on its event.
    fn note_waiting_again(&mut self, dir: &Path, name: &OsString, order: u64) {
        if self.woken_heads.is_empty() {
            return;
        }
        let key = (dir.to_path_buf(), name.clone());
        if self.woken_heads.get(&key).is_some_and(|(o, _)| *o == order) {
            self.woken_heads.remove(&key);
        }
    }

    /// A waiter woken for an event that, [`HEAD_PATIENCE`] later, has neither waited again
    /// nor left the line has not acted on it (its thread is blocked): the earliest waiter
    /// of its path still waiting is woken to look in its place (as at a deadline, so that
    /// it looks although not first in line).
    fn pass_on_stuck_turns(&mut self, fired: &mut Vec<(WaitId, WakeReason)>, now: Instant) {
        if self.woken_heads.is_empty() {
            return;
        }
        let State {
            waiters,
            woken_heads,
            ..
        } = self;
        let line = line::line();
        woken_heads.retain(|(dir, name), (order, at)| {
            if now < *at + HEAD_PATIENCE {
                return true;
            }
            let lock_path = dir.join(name);
            let still_in_line = line
                .iter()
                .any(|(p, o)| o == order && p.as_os_str() == lock_path.as_os_str());
            if still_in_line {
                let next = waiters
                    .iter()
                    .filter(|(id, w)| {
                        w.dir == *dir && w.name == *name && !fired.iter().any(|(f, _)| f == *id)
                    })
                    .min_by_key(|(id, w)| (w.order, **id))
                    .map(|(id, _)| *id);
                if let Some(id) = next {
                    fired.push((id, WakeReason::Deadline));
                }
            }
            false
        });
    }

    /// Forgets the looks at lock paths nobody waits for any more.
    fn forget_unwaited_looks(&mut self) {
        if self.looks.is_empty() {
            return;
        }
        let State { waiters, looks, .. } = self;
        let waited: HashSet<(&Path, &OsString)> = waiters
            .values()
            .map(|w| (w.dir.as_path(), &w.name))
            .collect();
        looks.retain(|(dir, name, _), _| waited.contains(&(dir.as_path(), name)));
    }
}

mod line;
mod park;
mod pauses;
mod turns;
mod watcher;

pub use line::*;
pub use park::*;
pub use pauses::*;
pub use turns::*;
use watcher::*;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod shared_look_tests;
