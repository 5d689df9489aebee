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

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use crate::kernel_lock::OWNER_FILE_NAME;
use crate::record::ParsedRecord;

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

struct DirWatch {
    /// `None` once the watch is known dead (the directory was deleted or moved away): the
    /// watcher then adds it again as soon as the directory is back.
    watch: Option<Watch>,
    users: usize,
    /// Until when to keep checking that the path still names the watched directory: its
    /// `.owners` was deleted, maybe by an `rm -rf` not yet at the directory itself.
    suspect_until: Option<Instant>,
}

/// How long after its `.owners` is deleted a watched directory is checked for deletion.
const SUSPECT_FOR: Duration = Duration::from_secs(5);

#[derive(Clone, Copy)]
struct Watch {
    wd: i32,
    /// The watched directory's device and inode. A directory deleted while files in it are
    /// still open (ours: spares, owner files) stays alive unnamed, and the kernel reports
    /// its deletion only when they close; so whether the path still names it is checked
    /// when it matters.
    dir: (u64, u64),
}

fn dir_identity(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(dir).ok().map(|m| (m.dev(), m.ino()))
}

/// How often a dropped directory watch that waiters still count on is tried again.
const REWATCH_EVERY: Duration = Duration::from_millis(10);

#[derive(Default)]
struct State {
    next_id: u64,
    waiters: HashMap<WaitId, Waiter>,
    dirs: HashMap<PathBuf, DirWatch>,
    pidfds: HashMap<i32, OwnedFd>,
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

struct Service {
    state: Mutex<State>,
    inotify: Option<OwnedFd>,
    wake_fd: Option<OwnedFd>,
}

fn service() -> &'static Service {
    static SERVICE: OnceLock<Service> = OnceLock::new();
    SERVICE.get_or_init(|| Service {
        state: Mutex::new(State::default()),
        inotify: new_fd(unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) }),
        wake_fd: new_fd(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) }),
    })
}

fn new_fd(raw: i32) -> Option<OwnedFd> {
    // SAFETY: a non-negative return of inotify_init1/eventfd/pidfd_open is a new fd we own.
    (raw >= 0).then(|| unsafe { OwnedFd::from_raw_fd(raw) })
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

/// How soon a waiter looks again at an unreadable lockfile that was only just written: the
/// original module creates its lockfile empty and writes it afterwards, and writing raises
/// no event we watch.
pub const UNREADABLE_RELOOK: Duration = Duration::from_millis(25);

/// How long a waiter that has just lost a race stops listening for releases. Under
/// contention, holders that release and claim again at once are the rule, and a release
/// wakes one waiter in every waiting process, only for most of them to find the lock taken
/// again. Those wake-ups cost the machine more than the cycles themselves: measured on
/// 2 cores, three processes merely woken by each release cut a lone process's
/// acquire+release rate from 27,000 to 11,000 a second. A waiter that lost therefore
/// sleeps through the releases of the next 5 ms (the original module's pollMs in the
/// contention figures it is compared with) and then looks once; its holder's death still
/// wakes it at once.
pub const LOST_RACE_PAUSE: Duration = Duration::from_millis(5);

/// How long the first waiter in line may take to act on the event it was woken for before
/// the next waiter of its process looks instead: its thread may be blocked (a worker busy
/// in synchronous code), and the lock may be free meanwhile.
pub const HEAD_PATIENCE: Duration = Duration::from_millis(50);

/// The pause of a waiter's next wait if an event woke it and it found the lock held by
/// another claim than the one it waited on: it lost the race to that claim. A refresh of
/// the same claim, a fallback deadline or an unreadable lockfile cost no pause, so a waiter
/// that saw the holder before the release takes over at once, and one that finds the claim
/// it waited on still there after its pause listens again.
pub fn pause_after(
    woken_by: WakeReason,
    waited_on: Option<&ParsedRecord>,
    found: Option<&ParsedRecord>,
) -> Option<Duration> {
    let event = matches!(woken_by, WakeReason::Changed | WakeReason::HolderGone);
    match (waited_on, found) {
        (Some(before), Some(now)) if event && !before.same_claim(now) => Some(LOST_RACE_PAUSE),
        _ => None,
    }
}

/// How soon after this process released a lock an acquisition that finds it claimed by
/// another counts as having lost the race to that claim.
const RIGHT_AFTER_RELEASE: Duration = Duration::from_millis(2);

/// This process's latest releases: lock path and when (only those of the last moments).
static RECENT_RELEASES: Mutex<Vec<(PathBuf, Instant)>> = Mutex::new(Vec::new());

fn recent_releases() -> MutexGuard<'static, Vec<(PathBuf, Instant)>> {
    RECENT_RELEASES.lock().unwrap_or_else(|p| p.into_inner())
}

/// Notes that this process has just released `lock_path`.
pub fn note_release(lock_path: &Path) {
    let mut recent = recent_releases();
    recent.retain(|(path, at)| path != lock_path && at.elapsed() < RIGHT_AFTER_RELEASE);
    recent.push((lock_path.to_path_buf(), Instant::now()));
}

/// The pause of an acquisition's first wait: [`LOST_RACE_PAUSE`] if this process released
/// `lock_path` just before and finds it held by another claim now (it let go and asked
/// again at once, and another process was quicker), none otherwise.
pub fn pause_after_own_release(lock_path: &Path, found: Option<&ParsedRecord>) -> Option<Duration> {
    found?;
    recent_releases()
        .iter()
        .any(|(path, at)| path == lock_path && at.elapsed() < RIGHT_AFTER_RELEASE)
        .then_some(LOST_RACE_PAUSE)
}

/// This process's acquisitions in line for each lock path, by arrival order: from when one
/// first waits until it settles (parked, or woken and about to look again). Only the first
/// in line claims; a later one, or a new acquisition while any is in line, waits behind it.
/// So within a process a lock goes to its waiters in arrival order, even when the holder
/// releases and asks for it again at once (otherwise that holder, already running, would
/// usually win the race against a waiter that still needs waking, again and again).
static LINE: Mutex<Vec<(PathBuf, u64)>> = Mutex::new(Vec::new());
/// How many are in [`LINE`]: an uncontended acquisition checks this alone.
static IN_LINE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn line() -> MutexGuard<'static, Vec<(PathBuf, u64)>> {
    LINE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether no acquisition of this process is in line for `lock_path`: a new one may claim.
pub fn line_is_empty(lock_path: &Path) -> bool {
    IN_LINE.load(std::sync::atomic::Ordering::Acquire) == 0
        || !line()
            .iter()
            .any(|(p, _)| p.as_os_str() == lock_path.as_os_str())
}

/// A waiting acquisition's place in line for its lock path; left when dropped.
#[derive(Debug)]
pub struct LinePlace {
    path: PathBuf,
    order: u64,
    left: bool,
}

impl LinePlace {
    /// Joins the line of `lock_path` with this arrival `order` (as in [`WaitSpec::order`]).
    pub fn join(lock_path: &Path, order: u64) -> LinePlace {
        let mut line = line();
        line.push((lock_path.to_path_buf(), order));
        IN_LINE.store(line.len(), std::sync::atomic::Ordering::Release);
        LinePlace {
            path: lock_path.to_path_buf(),
            order,
            left: false,
        }
    }

    /// Its arrival order (as in [`WaitSpec::order`]).
    pub fn order(&self) -> u64 {
        self.order
    }

    /// Whether no acquisition that arrived earlier is in line for the same lock path.
    pub fn is_first(&self) -> bool {
        !line()
            .iter()
            .any(|(p, o)| *o < self.order && p.as_os_str() == self.path.as_os_str())
    }

    /// Leaves the line (once; dropping leaves it too).
    pub fn leave(&mut self) {
        if std::mem::replace(&mut self.left, true) {
            return;
        }
        let mut line = line();
        if let Some(at) = line
            .iter()
            .position(|(p, o)| *o == self.order && p.as_os_str() == self.path.as_os_str())
        {
            line.swap_remove(at);
        }
        IN_LINE.store(line.len(), std::sync::atomic::Ordering::Release);
    }
}

impl Drop for LinePlace {
    fn drop(&mut self) {
        self.leave();
    }
}

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
        let line = line();
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

impl Service {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn start_thread(&'static self, st: &mut State) -> std::io::Result<()> {
        if !st.thread_started {
            std::thread::Builder::new()
                .name("workspace-lock-waiter".into())
                .spawn(move || self.run())?;
            st.thread_started = true;
        }
        Ok(())
    }

    fn poke(&self) {
        if let Some(fd) = &self.wake_fd {
            let one: u64 = 1;
            // SAFETY: writes 8 bytes from a valid u64 to our eventfd.
            unsafe { libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
        }
    }

    fn watch_dir(&self, st: &mut State, dir: &Path) {
        if let Some(w) = st.dirs.get_mut(dir) {
            w.users += 1;
            // A new wait is when a replaced directory matters: check it is still the one.
            if w.watch
                .is_some_and(|watch| dir_identity(dir) != Some(watch.dir))
            {
                self.forget_watch(w);
            }
            if w.watch.is_none() {
                w.watch = self.add_watch(dir);
            }
            return;
        }
        if let Some(watch) = self.add_watch(dir) {
            st.dirs.insert(
                dir.to_path_buf(),
                DirWatch {
                    watch: Some(watch),
                    users: 1,
                    suspect_until: None,
                },
            );
        }
    }

    fn add_watch(&self, dir: &Path) -> Option<Watch> {
        let inotify = self.inotify.as_ref()?;
        let c_dir = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
        // SAFETY: valid fd and NUL-terminated path.
        let wd =
            unsafe { libc::inotify_add_watch(inotify.as_raw_fd(), c_dir.as_ptr(), DIR_EVENTS) };
        if wd < 0 {
            return None;
        }
        match dir_identity(dir) {
            Some(id) => Some(Watch { wd, dir: id }),
            None => {
                self.rm_watch(wd);
                None
            }
        }
    }

    fn rm_watch(&self, wd: i32) {
        if let Some(inotify) = &self.inotify {
            // SAFETY: removing a watch descriptor from our own inotify fd (a wd the kernel
            // already dropped only makes it fail with EINVAL).
            unsafe { libc::inotify_rm_watch(inotify.as_raw_fd(), wd) };
        }
    }

    fn forget_watch(&self, w: &mut DirWatch) {
        if let Some(watch) = w.watch.take() {
            self.rm_watch(watch.wd);
        }
    }

    /// Forgets the watches that died: those the kernel reported gone (`whole`), and those
    /// whose path now names another directory or none, checked while suspect (`suspect`:
    /// wds whose `.owners` was just deleted). Keeps their users. Returns the directories
    /// concerned: their waiters may have missed events.
    fn drop_dead_watches(
        &self,
        st: &mut State,
        whole: &[(i32, u32)],
        suspect: &[i32],
        now: Instant,
    ) -> Vec<PathBuf> {
        let mut dead = Vec::new();
        for (dir, w) in st.dirs.iter_mut() {
            let Some(watch) = w.watch else { continue };
            if suspect.contains(&watch.wd) {
                w.suspect_until = now.checked_add(SUSPECT_FOR);
            }
            if w.suspect_until.is_some_and(|until| until <= now) {
                w.suspect_until = None;
            }
            let gone = whole.iter().any(|(wd, _)| *wd == watch.wd)
                || (w.suspect_until.is_some() && dir_identity(dir) != Some(watch.dir));
            if gone {
                self.forget_watch(w);
                w.suspect_until = None;
                dead.push(dir.clone());
            }
        }
        dead
    }

    /// Adds again the dropped watches of directories that exist again; returns those
    /// directories (their waiters may have missed events meanwhile).
    fn rewatch(&self, st: &mut State) -> Vec<PathBuf> {
        let mut added = Vec::new();
        for (dir, w) in st.dirs.iter_mut() {
            if w.watch.is_none() {
                w.watch = self.add_watch(dir);
                if w.watch.is_some() {
                    added.push(dir.clone());
                }
            }
        }
        added
    }

    fn unwatch_dir(&self, st: &mut State, dir: &Path) {
        let Some(w) = st.dirs.get_mut(dir) else {
            return;
        };
        w.users -= 1;
        if w.users == 0 {
            let watch = w.watch;
            st.dirs.remove(dir);
            // Another path may share this wd (a hard-linked or re-added directory).
            if let Some(watch) = watch.filter(|watch| {
                !st.dirs
                    .values()
                    .any(|d| d.watch.is_some_and(|w| w.wd == watch.wd))
            }) {
                self.rm_watch(watch.wd);
            }
        }
    }

    fn watch_holder(&'static self, st: &mut State, holder: &HolderWatch) {
        match holder {
            HolderWatch::Pid(pid) => {
                if st.pidfds.contains_key(pid) {
                    return;
                }
                // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
                let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, *pid, 0) } as i32;
                match new_fd(raw) {
                    Some(fd) => {
                        st.pidfds.insert(*pid, fd);
                    }
                    // Already gone between the judgement and now: that is its exit.
                    None if std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH) => {
                        st.exited_pids.push(*pid);
                    }
                    // No pidfds here (old kernel): the pollMs fallback covers it.
                    None => {}
                }
            }
            HolderWatch::KernelByte {
                owner_file,
                offset,
                owner_id,
            } => {
                let key = (owner_file.clone(), *offset);
                let owner_id = *owner_id;
                if st.byte_watchers.contains(&key) {
                    return;
                }
                let started = std::thread::Builder::new()
                    .name("workspace-lock-holder-watch".into())
                    .stack_size(64 * 1024)
                    .spawn({
                        let key = key.clone();
                        move || {
                            let freed =
                                crate::kernel_lock::wait_until_free(&key.0, key.1, owner_id);
                            let mut st = self.lock();
                            st.byte_watchers.remove(&key);
                            // An unwatchable byte wakes nobody: the directory's events and
                            // pollMs still do.
                            if freed {
                                st.fired_bytes.push(key);
                                drop(st);
                                self.poke();
                            }
                        }
                    })
                    .is_ok();
                if started {
                    st.byte_watchers.insert(key);
                }
            }
        }
    }

    fn run(&self) {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let (mut fds, pids, timeout) = {
                let st = self.lock();
                let mut fds = Vec::with_capacity(2 + st.pidfds.len());
                for fd in [&self.wake_fd, &self.inotify].into_iter().flatten() {
                    fds.push(pollfd(fd.as_raw_fd()));
                }
                let pids: Vec<i32> = st.pidfds.keys().copied().collect();
                fds.extend(
                    pids.iter()
                        .filter_map(|p| st.pidfds.get(p))
                        .map(|fd| pollfd(fd.as_raw_fd())),
                );
                let next = st
                    .waiters
                    .values()
                    .map(|w| w.paused_until.map_or(w.deadline, |end| w.deadline.min(end)))
                    .min();
                // A dropped watch is tried again, and a suspect one checked, every REWATCH_EVERY.
                let rewatch = st
                    .dirs
                    .values()
                    .any(|d| d.watch.is_none() || d.suspect_until.is_some())
                    .then(|| Instant::now() + REWATCH_EVERY);
                let heads = st
                    .woken_heads
                    .values()
                    .map(|(_, at)| *at + HEAD_PATIENCE)
                    .min();
                let timeout = next
                    .into_iter()
                    .chain(rewatch)
                    .chain(heads)
                    .min()
                    .map_or(-1, |at| {
                        let ms = at
                            .saturating_duration_since(Instant::now())
                            .as_micros()
                            .div_ceil(1000);
                        ms.min(i32::MAX as u128) as i32
                    });
                (fds, pids, timeout)
            };
            // SAFETY: fds is a valid array of pollfd for its length.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
            if n < 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
            let mut fired: Vec<(WaitId, WakeReason)> = Vec::new();
            let mut expired: Vec<WaitId> = Vec::new();
            let mut changed_entries: Vec<(i32, OsString)> = Vec::new();
            let mut whole: Vec<(i32, u32)> = Vec::new();
            let base = usize::from(self.wake_fd.is_some()) + usize::from(self.inotify.is_some());
            if let Some(fd) = &self.wake_fd {
                drain(fd.as_raw_fd(), &mut buf);
            }
            if let Some(fd) = &self.inotify {
                read_inotify(fd.as_raw_fd(), &mut buf, &mut changed_entries, &mut whole);
            }
            let mut st = self.lock();
            // Directories whose every entry may have changed unseen: those whose watch the
            // kernel dropped (deleted, moved away), those watched again after that, and all
            // of them when the event queue overflowed.
            let overflowed = whole.iter().any(|(_, m)| m & libc::IN_Q_OVERFLOW != 0);
            // `.owners` deleted: the whole directory may have gone (`rm -rf`).
            let suspect: Vec<i32> = changed_entries
                .iter()
                .filter(|(_, name)| name.as_bytes() == OWNER_FILE_NAME.as_bytes())
                .map(|(wd, _)| *wd)
                .collect();
            let mut whole_dirs: HashSet<PathBuf> = self
                .drop_dead_watches(&mut st, &whole, &suspect, Instant::now())
                .into_iter()
                .collect();
            whole_dirs.extend(self.rewatch(&mut st));
            let mut exited: Vec<i32> = pids
                .iter()
                .zip(fds.iter().skip(base))
                .filter(|(_, p)| p.revents != 0)
                .map(|(pid, _)| *pid)
                .collect();
            exited.append(&mut st.exited_pids);
            for pid in &exited {
                st.pidfds.remove(pid);
            }
            let bytes = std::mem::take(&mut st.fired_bytes);
            let now = Instant::now();
            // Per lock path, an event wakes only its earliest waiter (the next in line);
            // deadlines wake each waiter on its own.
            let mut turns: HashMap<(&Path, &OsString), PathTurn> = HashMap::new();
            let mut pauses_over: Vec<WaitId> = Vec::new();
            for (id, w) in &st.waiters {
                let rank = (w.order, *id);
                let turn = turns.entry((w.dir.as_path(), &w.name)).or_insert(PathTurn {
                    first: rank,
                    first_paused: !w.listening(),
                    woken: None,
                });
                if rank < turn.first {
                    turn.first = rank;
                    turn.first_paused = !w.listening();
                }
                let changed = match w.paused_until {
                    None => {
                        let wd = st.dirs.get(&w.dir).and_then(|d| d.watch).map(|w| w.wd);
                        overflowed
                            || whole_dirs.contains(&w.dir)
                            || wd.is_some_and(|wd| {
                                changed_entries
                                    .iter()
                                    .any(|(e, n)| *e == wd && *n == w.name)
                            })
                    }
                    // A pause that ended: look again, as after a change.
                    Some(end) if end <= now => {
                        pauses_over.push(*id);
                        true
                    }
                    Some(_) => false,
                };
                let holder_gone = match &w.holder {
                    Some(HolderWatch::Pid(pid)) => exited.contains(pid),
                    Some(HolderWatch::KernelByte {
                        owner_file, offset, ..
                    }) => bytes.iter().any(|(f, o)| f == owner_file && o == offset),
                    None => false,
                };
                let reason = if changed {
                    WakeReason::Changed
                } else if holder_gone {
                    WakeReason::HolderGone
                } else {
                    if w.deadline <= now {
                        expired.push(*id);
                    }
                    continue;
                };
                if turn.woken.is_none_or(|(best, _)| rank < best) {
                    turn.woken = Some((rank, reason));
                }
            }
            for turn in turns.into_values() {
                let Some(((_, id), reason)) = turn.woken else {
                    continue;
                };
                // While the earliest waiter pauses, those behind it in this process are not
                // woken for it: it looks first, when its pause ends.
                if turn.first_paused && turn.first.1 != id {
                    continue;
                }
                if !fired.iter().any(|(f, _)| *f == id) {
                    fired.push((id, reason));
                }
            }
            st.pass_on_stuck_turns(&mut fired, now);
            st.pass_on_looks(&mut fired, expired, now);
            // A waiter whose pause ended behind a paused one listens again, and waits its turn.
            for id in pauses_over {
                if fired.iter().any(|(f, _)| *f == id) {
                    continue;
                }
                if let Some(w) = st.waiters.get_mut(&id) {
                    w.paused_until = None;
                    let dir = w.dir.clone();
                    self.watch_dir(&mut st, &dir);
                }
            }
            // Oldest first: within this process waiters are served in arrival order.
            fired.sort_unstable_by_key(|(id, _)| {
                st.waiters
                    .get(id)
                    .map_or((u64::MAX, *id), |w| (w.order, *id))
            });
            let mut callbacks = Vec::with_capacity(fired.len());
            for (id, reason) in fired {
                if let Some(w) = st.waiters.remove(&id) {
                    if w.listening() {
                        self.unwatch_dir(&mut st, &w.dir);
                    }
                    st.note_woken(&w, reason, now);
                    callbacks.push((w.callback, reason));
                }
            }
            // Pidfds nobody waits on any more are closed.
            let wanted: HashSet<i32> = st
                .waiters
                .values()
                .filter_map(|w| match w.holder {
                    Some(HolderWatch::Pid(p)) => Some(p),
                    _ => None,
                })
                .collect();
            st.pidfds.retain(|pid, _| wanted.contains(pid));
            st.forget_unwaited_looks();
            drop(st);
            for (callback, reason) in callbacks {
                callback(reason);
            }
        }
    }
}

fn pollfd(fd: i32) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

fn drain(fd: i32, buf: &mut [u8]) {
    // SAFETY: reads into a valid buffer from our own non-blocking fd.
    while unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
}

/// Collects (wd, name) of every entry event, and (wd, mask) of the events about a whole
/// directory: it went away, its watch was dropped, or the queue overflowed (wd -1).
fn read_inotify(
    fd: i32,
    buf: &mut [u8],
    entries: &mut Vec<(i32, OsString)>,
    whole: &mut Vec<(i32, u32)>,
) {
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
                whole.push((ev.wd, ev.mask));
            } else {
                entries.push((ev.wd, OsString::from_vec(name_bytes[..end].to_vec())));
            }
            at += HEADER + name_len;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel_lock::{HolderSlot, OwnerFile};
    use crate::record::FileId;
    use crate::test_support::TempDir;
    use std::sync::mpsc;

    fn wait_for(spec: WaitSpec) -> mpsc::Receiver<(WakeReason, Instant)> {
        let (tx, rx) = mpsc::channel();
        register(
            spec,
            Box::new(move |r| {
                let _ = tx.send((r, Instant::now()));
            }),
        );
        rx
    }

    /// When the waiter was woken, which must be for `reason` and within 5 s.
    fn woken(rx: &mpsc::Receiver<(WakeReason, Instant)>, reason: WakeReason) -> Instant {
        let (got, at) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(got, reason);
        at
    }

    /// A waiter of `lock` in line with arrival `order`, with a far deadline.
    fn in_line(lock: &Path, order: u64) -> mpsc::Receiver<(WakeReason, Instant)> {
        wait_for(WaitSpec {
            lock_path: lock.to_path_buf(),
            holder: None,
            deadline: Instant::now() + Duration::from_secs(30),
            order,
            pause: None,
            judging: None,
        })
    }

    type Line = ([LinePlace; 2], [mpsc::Receiver<(WakeReason, Instant)>; 2]);

    /// Two waiters in line for `lock`; the lockfile is deleted, which wakes the first.
    fn two_in_line(lock: &Path) -> Line {
        std::fs::write(lock, b"{}").unwrap();
        let places = [LinePlace::join(lock, 1), LinePlace::join(lock, 2)];
        let rx = [in_line(lock, 1), in_line(lock, 2)];
        std::fs::remove_file(lock).unwrap();
        (places, rx)
    }

    #[test]
    fn a_woken_waiter_that_does_not_act_lets_the_next_in_line_look() {
        let dir = TempDir::new("wait-stuck-head");
        let (_places, [first, second]) = two_in_line(&dir.path().join("h.lock"));
        let at = woken(&first, WakeReason::Changed);
        // Its thread is blocked: it neither waits again nor leaves the line. The next looks
        // (as at a deadline, although not first).
        let next_at = woken(&second, WakeReason::Deadline);
        assert!(next_at >= at + HEAD_PATIENCE);
    }

    #[test]
    fn a_woken_waiter_that_leaves_the_line_or_waits_again_keeps_its_turn() {
        let dir = TempDir::new("wait-head-acts");
        let ([mut first_place, _second_place], [first, second]) =
            two_in_line(&dir.path().join("a.lock"));
        woken(&first, WakeReason::Changed);
        first_place.leave(); // it took the lock
        assert!(second.recv_timeout(HEAD_PATIENCE * 4).is_err());

        let lock = dir.path().join("b.lock");
        let (_places, [first, second]) = two_in_line(&lock);
        woken(&first, WakeReason::Changed);
        let _again = in_line(&lock, 1); // it found the lock taken again
        assert!(second.recv_timeout(HEAD_PATIENCE * 4).is_err());
    }

    #[test]
    fn a_change_of_the_lockfile_wakes_at_once() {
        let dir = TempDir::new("wait-change");
        let lock = dir.path().join("h.lock");
        std::fs::write(&lock, b"{}").unwrap();
        let rx = wait_for(WaitSpec {
            lock_path: lock.clone(),
            holder: None,
            deadline: Instant::now() + Duration::from_secs(30),
            order: 0,
            pause: None,
            judging: None,
        });
        // Another file in the directory does not wake it.
        std::fs::write(dir.path().join("other.lock"), b"{}").unwrap();
        assert!(rx.recv_timeout(Duration::from_millis(100)).is_err());
        let removed = Instant::now();
        std::fs::remove_file(&lock).unwrap();
        let at = woken(&rx, WakeReason::Changed);
        assert!(at.duration_since(removed) < Duration::from_secs(1));
    }

    #[test]
    fn the_deadline_wakes_when_nothing_happens() {
        let dir = TempDir::new("wait-deadline");
        let rx = wait_for(WaitSpec {
            lock_path: dir.path().join("h.lock"),
            holder: None,
            deadline: Instant::now() + Duration::from_millis(30),
            order: 0,
            pause: None,
            judging: None,
        });
        woken(&rx, WakeReason::Deadline);
    }

    /// A holder of a kernel byte in `dir`, and a waiter watching that byte.
    fn wait_on_a_kernel_byte(
        dir: &TempDir,
        pause: Option<Duration>,
    ) -> (OwnerFile, mpsc::Receiver<(WakeReason, Instant)>) {
        let holder = OwnerFile::open(dir.path(), true).unwrap().unwrap();
        let slot = HolderSlot::random();
        assert!(holder.try_hold(slot).unwrap());
        let rx = wait_for(WaitSpec {
            lock_path: dir.path().join("h.lock"),
            holder: Some(HolderWatch::KernelByte {
                owner_file: dir.path().join(OWNER_FILE_NAME),
                offset: slot.0,
                owner_id: holder.id(),
            }),
            deadline: Instant::now() + Duration::from_secs(30),
            order: 0,
            pause,
            judging: None,
        });
        (holder, rx)
    }

    #[test]
    fn only_the_first_in_line_of_a_lock_path_may_claim_and_leaving_passes_the_turn() {
        // Paths of their own: the line is process-wide.
        let dir = TempDir::new("wait-line");
        let (a, b) = (dir.path().join("a.lock"), dir.path().join("b.lock"));
        assert!(line_is_empty(&a));
        let mut first = LinePlace::join(&a, 10);
        let second = LinePlace::join(&a, 11);
        let other_path = LinePlace::join(&b, 12);
        assert!(
            !line_is_empty(&a),
            "a new acquisition of a waits behind them"
        );
        assert!(first.is_first());
        assert!(!second.is_first());
        assert!(other_path.is_first(), "another lock path is another line");
        first.leave();
        first.leave(); // once
        assert!(second.is_first());
        drop(second);
        assert!(line_is_empty(&a));
        drop(other_path);
        assert!(line_is_empty(&b));
    }

    #[test]
    fn a_byte_in_another_owner_file_than_the_holders_wakes_nobody() {
        let dir = TempDir::new("wait-byte-elsewhere");
        // The holder's owner file was deleted; this one was made anew, its byte free.
        let anew = OwnerFile::open(dir.path(), true).unwrap().unwrap();
        let holders = anew.id().map(|id| FileId {
            ino: id.ino + 1,
            ..id
        });
        let rx = wait_for(WaitSpec {
            lock_path: dir.path().join("h.lock"),
            holder: Some(HolderWatch::KernelByte {
                owner_file: dir.path().join(OWNER_FILE_NAME),
                offset: HolderSlot::random().0,
                owner_id: holders,
            }),
            deadline: Instant::now() + Duration::from_millis(400),
            order: 0,
            pause: None,
            judging: None,
        });
        // Not woken by that byte (which would make the waiter spin), only by its deadline.
        let at = woken(&rx, WakeReason::Deadline);
        drop(anew);
        assert!(at.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_holder_letting_go_of_its_kernel_byte_wakes_the_waiter() {
        let dir = TempDir::new("wait-byte");
        let (holder, rx) = wait_on_a_kernel_byte(&dir, None);
        assert!(rx.recv_timeout(Duration::from_millis(100)).is_err());
        drop(holder); // as at the holder's death
        woken(&rx, WakeReason::HolderGone);
    }

    #[test]
    fn a_holder_pid_exiting_wakes_the_waiter() {
        let dir = TempDir::new("wait-pid");
        let mut child = std::process::Command::new("sleep")
            .arg("0.2")
            .spawn()
            .unwrap();
        let rx = wait_for(WaitSpec {
            lock_path: dir.path().join("h.lock"),
            holder: Some(HolderWatch::Pid(child.id() as i32)),
            deadline: Instant::now() + Duration::from_secs(30),
            order: 0,
            pause: None,
            judging: None,
        });
        woken(&rx, WakeReason::HolderGone);
        let _ = child.wait();
    }

    /// Registers a waiter of `lock` per (order, pause); each reports its order when woken.
    fn waiters_in_order(lock: &Path, waiters: &[(u64, Option<Duration>)]) -> mpsc::Receiver<u64> {
        let (tx, rx) = mpsc::channel::<u64>();
        for &(order, pause) in waiters {
            let tx = tx.clone();
            register(
                WaitSpec {
                    lock_path: lock.to_path_buf(),
                    holder: None,
                    deadline: Instant::now() + Duration::from_secs(30),
                    order,
                    pause,
                    judging: None,
                },
                Box::new(move |_| {
                    let _ = tx.send(order);
                }),
            );
        }
        rx
    }

    #[test]
    fn an_event_wakes_only_the_earliest_waiter_and_nudge_passes_it_on() {
        let dir = TempDir::new("wait-order");
        let lock = dir.path().join("h.lock");
        std::fs::write(&lock, b"{}").unwrap();
        let rx = waiters_in_order(&lock, &[(3, None), (1, None), (2, None)]);
        std::fs::remove_file(&lock).unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), 1);
        assert!(
            rx.recv_timeout(Duration::from_millis(100)).is_err(),
            "only the first is woken"
        );
        nudge(&lock);
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), 2);
        // A lockfile appearing (a claim) frees nothing: nobody is woken.
        std::fs::write(&lock, b"{}").unwrap();
        assert!(rx.recv_timeout(Duration::from_millis(100)).is_err());
        // One renamed over it (a refresh, a put-back) may have: the last one looks.
        let temp = dir.path().join(".h.claim");
        std::fs::write(&temp, b"{}").unwrap();
        std::fs::rename(&temp, &lock).unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), 3);
    }

    fn record(json: &str) -> ParsedRecord {
        ParsedRecord::parse(json.as_bytes()).unwrap()
    }

    #[test]
    fn only_a_race_lost_to_another_claim_costs_a_pause() {
        let before = record(r#"{"pid":1,"heartbeat":1,"goalId":"a","ownerLock":7}"#);
        let refreshed = record(r#"{"pid":1,"heartbeat":2,"goalId":"a","ownerLock":7}"#);
        let other = record(r#"{"pid":2,"heartbeat":2,"goalId":"b","ownerLock":8}"#);
        for woken_by in [WakeReason::Changed, WakeReason::HolderGone] {
            assert_eq!(
                pause_after(woken_by, Some(&before), Some(&other)),
                Some(LOST_RACE_PAUSE)
            );
            assert_eq!(pause_after(woken_by, Some(&before), Some(&refreshed)), None);
            assert_eq!(pause_after(woken_by, None, Some(&other)), None);
            assert_eq!(pause_after(woken_by, Some(&before), None), None);
        }
        assert_eq!(
            pause_after(WakeReason::Deadline, Some(&before), Some(&other)),
            None
        );
    }

    #[test]
    fn asking_again_right_after_releasing_and_finding_another_claim_costs_a_pause() {
        let dir = TempDir::new("wait-own-release");
        let lock = dir.path().join("h.lock");
        let other_lock = dir.path().join("other.lock");
        let claim = record(r#"{"pid":2,"heartbeat":2,"goalId":"b","ownerLock":8}"#);
        note_release(&lock);
        assert_eq!(
            pause_after_own_release(&lock, Some(&claim)),
            Some(LOST_RACE_PAUSE)
        );
        // Not for another lock, nor for an unreadable lockfile.
        assert_eq!(pause_after_own_release(&other_lock, Some(&claim)), None);
        assert_eq!(pause_after_own_release(&lock, None), None);
        std::thread::sleep(RIGHT_AFTER_RELEASE);
        assert_eq!(pause_after_own_release(&lock, Some(&claim)), None);
    }

    #[test]
    fn a_paused_waiter_sleeps_through_a_release_and_looks_when_the_pause_ends() {
        let dir = TempDir::new("wait-pause");
        let lock = dir.path().join("h.lock");
        std::fs::write(&lock, b"{}").unwrap();
        let registered = Instant::now();
        let rx = wait_for(WaitSpec {
            lock_path: lock.clone(),
            holder: None,
            deadline: Instant::now() + Duration::from_secs(30),
            order: 0,
            pause: Some(Duration::from_millis(400)),
            judging: None,
        });
        std::fs::remove_file(&lock).unwrap();
        assert!(
            rx.recv_timeout(Duration::from_millis(150)).is_err(),
            "a release during the pause wakes nobody"
        );
        let at = woken(&rx, WakeReason::Changed);
        assert!(at.duration_since(registered) >= Duration::from_millis(400));
    }

    #[test]
    fn a_paused_waiter_is_still_woken_at_once_by_its_holders_death() {
        let dir = TempDir::new("wait-pause-death");
        let (holder, rx) = wait_on_a_kernel_byte(&dir, Some(Duration::from_secs(30)));
        assert!(rx.recv_timeout(Duration::from_millis(100)).is_err());
        let died = Instant::now();
        drop(holder);
        let at = woken(&rx, WakeReason::HolderGone);
        assert!(at.duration_since(died) < Duration::from_secs(2));
    }

    #[test]
    fn waiters_behind_a_paused_one_keep_their_place() {
        let dir = TempDir::new("wait-pause-order");
        let lock = dir.path().join("h.lock");
        std::fs::write(&lock, b"{}").unwrap();
        let rx = waiters_in_order(&lock, &[(1, Some(Duration::from_millis(400))), (2, None)]);
        std::fs::remove_file(&lock).unwrap();
        nudge(&lock);
        assert!(
            rx.recv_timeout(Duration::from_millis(150)).is_err(),
            "neither the release nor a nudge passes the paused head"
        );
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), 1);
        assert!(rx.recv_timeout(Duration::from_millis(100)).is_err());
        nudge(&lock);
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), 2);
    }

    /// CPU time (clock ticks) used so far by this process's threads of this package (their
    /// names are cut to "workspace-lock-").
    fn package_threads_cpu_ticks() -> u64 {
        let mut ticks = 0;
        for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if !comm.starts_with("workspace-lock-") {
                continue;
            }
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
            let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
            let fields: Vec<&str> = after_name.split_whitespace().collect();
            // utime and stime: fields 14 and 15 of the line, 12 and 13 after the name.
            ticks += fields
                .get(11)
                .and_then(|t| t.parse::<u64>().ok())
                .unwrap_or(0);
            ticks += fields
                .get(12)
                .and_then(|t| t.parse::<u64>().ok())
                .unwrap_or(0);
        }
        ticks
    }

    #[test]
    fn a_pause_that_ends_behind_a_paused_waiter_leaves_it_listening_in_its_place() {
        let dir = TempDir::new("wait-pause-behind");
        let lock = dir.path().join("h.lock");
        let pauses = [
            (1, Some(Duration::from_millis(700))),
            (2, Some(Duration::from_millis(50))),
        ];
        let rx = waiters_in_order(&lock, &pauses);
        let before = package_threads_cpu_ticks();
        assert!(
            rx.recv_timeout(Duration::from_millis(500)).is_err(),
            "the second waits for the first"
        );
        // The watcher sleeps until the first one's pause ends; spinning would cost ~50.
        let spent = package_threads_cpu_ticks() - before;
        assert!(spent < 20, "{spent} ticks of CPU in 0.5 s");
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), 1);
        nudge(&lock);
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), 2);
    }

    #[test]
    fn a_holder_pid_already_gone_wakes_the_waiter_at_once() {
        let dir = TempDir::new("wait-gone");
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        let _ = child.wait();
        let rx = wait_for(WaitSpec {
            lock_path: dir.path().join("h.lock"),
            holder: Some(HolderWatch::Pid(pid)),
            deadline: Instant::now() + Duration::from_secs(30),
            order: 0,
            pause: None,
            judging: None,
        });
        woken(&rx, WakeReason::HolderGone);
    }

    #[test]
    fn a_cancelled_waiter_is_never_called() {
        let dir = TempDir::new("wait-cancel");
        let (tx, rx) = mpsc::channel::<WakeReason>();
        let id = register(
            WaitSpec {
                lock_path: dir.path().join("h.lock"),
                holder: None,
                deadline: Instant::now() + Duration::from_millis(20),
                order: 0,
                pause: None,
                judging: None,
            },
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        assert!(cancel(id));
        assert!(!cancel(id));
        assert!(rx.recv_timeout(Duration::from_millis(100)).is_err());
    }
    #[test]
    fn waiters_of_a_directory_deleted_and_made_anew_hear_its_changes_again() {
        // Whether or not a file in it stays open (as spares and owner files of this process
        // do), which delays the kernel's own report of the deletion until it is closed.
        for keep_owners_open in [false, true] {
            let root = TempDir::new("wait-rmdir");
            let dir = root.path().join("locks");
            std::fs::create_dir(&dir).unwrap();
            let owners = std::fs::File::create(dir.join(OWNER_FILE_NAME)).unwrap();
            let _open = keep_owners_open.then_some(owners);
            let spec = |name: &str, order| WaitSpec {
                lock_path: dir.join(name),
                holder: None,
                deadline: Instant::now() + Duration::from_secs(30),
                order,
                pause: None,
                judging: None,
            };
            std::fs::write(dir.join("x.lock"), b"{}").unwrap();
            // Six waiters in line for x: each event about x or the directory wakes the first
            // still there, so some stay parked through the deletion, counting on its watch.
            let (tx, woken_x) = mpsc::channel();
            for order in 1..=6u64 {
                let tx = tx.clone();
                register(
                    spec("x.lock", order),
                    Box::new(move |r| {
                        let _ = tx.send((order, r));
                    }),
                );
            }
            std::fs::remove_dir_all(&dir).unwrap();
            let (first, _) = woken_x.recv_timeout(Duration::from_secs(5)).unwrap();
            assert_eq!(first, 1, "the deletion wakes the first in line");
            std::thread::sleep(Duration::from_millis(100));
            let before: Vec<u64> = woken_x.try_iter().map(|(o, _)| o).collect();
            assert!(before.len() < 4, "some stay parked: {before:?}");
            // Made anew: the first still parked is woken to look (it heard nothing
            // meanwhile) ...
            std::fs::create_dir(&dir).unwrap();
            let (next, reason) = woken_x.recv_timeout(Duration::from_secs(5)).unwrap();
            assert_eq!(
                (next, reason),
                (before.len() as u64 + 2, WakeReason::Changed)
            );
            // ... and a later wait in that directory hears a release at once, not at its
            // deadline (the dead watch was once kept as if alive while it had users).
            std::fs::write(dir.join("y.lock"), b"{}").unwrap();
            let y = wait_for(spec("y.lock", 9));
            let removed = Instant::now();
            std::fs::remove_file(dir.join("y.lock")).unwrap();
            let at = woken(&y, WakeReason::Changed);
            assert!(at.duration_since(removed) < Duration::from_secs(2));
        }
    }
}

#[cfg(test)]
mod shared_look_tests {
    use super::*;

    /// A waiter of `a.lock` that arrived `order`-th, judging as `judging`, that last learnt
    /// the lock's state at `since` and looks every `interval` (its deadline is due).
    fn waiter(order: u64, judging: Option<u64>, since: Instant, interval: Duration) -> Waiter {
        Waiter {
            dir: PathBuf::from("/locks"),
            name: OsString::from("a.lock"),
            holder: None,
            deadline: since + interval,
            interval,
            since,
            judging,
            order,
            paused_until: None,
            callback: Box::new(|_| {}),
        }
    }

    fn state(waiters: Vec<Waiter>) -> State {
        let mut st = State::default();
        for (i, w) in waiters.into_iter().enumerate() {
            st.waiters.insert(WaitId(i as u64 + 1), w);
        }
        st
    }

    const POLL: Duration = Duration::from_millis(500);

    #[test]
    fn waiters_judging_alike_share_one_fallback_look() {
        let t0 = Instant::now();
        let now = t0 + POLL;
        let mut st = state((0..5).map(|o| waiter(o, Some(7), t0, POLL)).collect());
        let mut fired = Vec::new();
        st.pass_on_looks(&mut fired, (1..=5).rev().map(WaitId).collect(), now);
        // The earliest arrival looks; the others learn from its look and wait one interval
        // from it.
        assert_eq!(fired, [(WaitId(1), WakeReason::Deadline)]);
        for id in 2..=5 {
            let w = &st.waiters[&WaitId(id)];
            assert_eq!((w.since, w.deadline), (now, now + POLL));
        }
        // Nobody looked since (the one that looked is blocked, say): one of them looks then.
        st.waiters.remove(&WaitId(1));
        let mut fired = Vec::new();
        st.pass_on_looks(&mut fired, (2..=5).map(WaitId).collect(), now + POLL);
        assert_eq!(fired, [(WaitId(2), WakeReason::Deadline)]);
    }

    #[test]
    fn a_look_after_an_event_puts_off_the_others_deadlines() {
        let t0 = Instant::now();
        let now = t0 + POLL;
        let mut st = state(vec![
            waiter(0, Some(7), t0, POLL),
            waiter(1, Some(7), t0, POLL),
        ]);
        // The first was woken by a release just now; the second's deadline is due.
        let mut fired = vec![(WaitId(1), WakeReason::Changed)];
        st.pass_on_looks(&mut fired, vec![WaitId(2)], now);
        assert_eq!(fired, [(WaitId(1), WakeReason::Changed)]);
        assert_eq!(st.waiters[&WaitId(2)].deadline, now + POLL);
    }

    #[test]
    fn waiters_judging_otherwise_look_on_their_own() {
        let t0 = Instant::now();
        let now = t0 + POLL;
        let mut st = state(vec![
            waiter(0, Some(7), t0, POLL),
            waiter(1, Some(8), t0, POLL), // another heartbeatStaleMs
            waiter(2, None, t0, POLL),    // injected callbacks
            waiter(3, None, t0, POLL),
        ]);
        let mut fired = Vec::new();
        st.pass_on_looks(&mut fired, (1..=4).map(WaitId).collect(), now);
        let ids: Vec<u64> = fired.iter().map(|(id, _)| id.0).collect();
        assert_eq!(ids, [1, 2, 3, 4]);
    }

    #[test]
    fn a_look_older_than_what_a_waiter_knows_does_not_put_it_off() {
        let t0 = Instant::now();
        let mut st = state(vec![waiter(0, Some(7), t0, POLL)]);
        // A look before this waiter registered (it looked itself then).
        st.looks.insert(
            (PathBuf::from("/locks"), OsString::from("a.lock"), 7),
            t0 - Duration::from_millis(1),
        );
        let mut fired = Vec::new();
        st.pass_on_looks(&mut fired, vec![WaitId(1)], t0 + POLL);
        assert_eq!(fired, [(WaitId(1), WakeReason::Deadline)]);
        // Its short interval (an unreadable lockfile's relook) counts from the latest look.
        let short = Duration::from_millis(25);
        let mut st = state(vec![
            waiter(0, Some(7), t0, POLL),
            waiter(1, Some(7), t0, short),
        ]);
        let mut fired = vec![(WaitId(1), WakeReason::Changed)];
        st.pass_on_looks(&mut fired, vec![WaitId(2)], t0 + short);
        assert_eq!(fired.len(), 1);
        assert_eq!(st.waiters[&WaitId(2)].deadline, t0 + short + short);
    }

    #[test]
    fn looks_at_paths_nobody_waits_for_are_forgotten() {
        let t0 = Instant::now();
        let mut st = state(vec![waiter(0, Some(7), t0, POLL)]);
        let mut fired = vec![(WaitId(1), WakeReason::Changed)];
        st.pass_on_looks(&mut fired, Vec::new(), t0);
        st.looks
            .insert((PathBuf::from("/locks"), OsString::from("b.lock"), 7), t0);
        st.forget_unwaited_looks();
        let kept: Vec<&OsString> = st.looks.keys().map(|(_, name, _)| name).collect();
        assert_eq!(kept, [&OsString::from("a.lock")]);
        st.waiters.clear();
        st.forget_unwaited_looks();
        assert!(st.looks.is_empty());
    }
}
