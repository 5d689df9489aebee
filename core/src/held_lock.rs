//! A lock this process holds, and the one native thread that keeps every held lock's
//! heartbeat fresh (independent of any JavaScript event loop) and notices when a lockfile
//! stops being ours.

use crate::error::{LockError, ThreadFailure};
use crate::kernel_lock::MUTEX_PATIENCE;
use crate::protocol::{
    check_and_refresh, release_noting_loss, Claimed, Ownership, Patience, Released,
};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime};

/// Called once, from the heartbeat thread, with a sentence saying what replaced our record.
pub type LostCallback = Box<dyn Fn(&str) + Send + Sync>;

/// Refresh at a quarter of the staleness threshold, so a reader with the same threshold
/// never sees an old heartbeat even if one refresh is late; at least every 5 s, at most
/// every 2 ms.
pub fn refresh_interval(heartbeat_stale_ms: f64) -> Duration {
    let quarter = if heartbeat_stale_ms.is_finite() {
        heartbeat_stale_ms / 4.0
    } else {
        5000.0
    };
    Duration::from_secs_f64(quarter.clamp(2.0, 5000.0) / 1000.0)
}

pub fn wall_clock_ms() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_millis() as f64)
}

struct HeldState {
    claim: Claimed,
    released: bool,
    lost: Option<String>,
    /// The last refresh failed (a full or read-only disk, an I/O error): why, and since
    /// when (wall-clock ms, for people). Cleared by the next refresh that works.
    refresh_failure: Option<RefreshFailure>,
}

impl HeldState {
    /// Notes a loss its holder found (heartbeat or confirmation): nothing refers to our
    /// kernel byte any more, so it is freed. Returns the reason, to report.
    fn note_lost(&mut self, reason: String) -> String {
        if let (Some(owners), Some(slot)) = (&self.claim.owners, self.claim.slot) {
            owners.unhold(slot);
        }
        self.lost = Some(reason.clone());
        reason
    }
}

/// Why the heartbeat could not be refreshed. The lock stays held (its kernel lock proves
/// the holder alive to every judge of this package); refreshes are retried every
/// [`REFRESH_RETRY`] at most.
#[derive(Debug, Clone, PartialEq)]
pub struct RefreshFailure {
    pub error: LockError,
    pub since_ms: f64,
    pub attempts: u32,
}

/// How soon a failed refresh is tried again (sooner than the usual interval, if that is
/// longer): the failure may pass (space freed, a transient EIO) and the heartbeat must
/// catch up before judges that have no proof of life (original-module processes, other
/// hosts) give up on it.
pub const REFRESH_RETRY: Duration = Duration::from_millis(250);

pub struct HeldLock {
    id: u64,
    state: Mutex<HeldState>,
    /// False when the caller injected a clock: that clock owns time, we do not write it.
    refresh: bool,
    interval: Duration,
    /// Until when the lockfile is checked every [`CLOSE_WATCH`] (see [`HeldLock::hold`]).
    close_watch_until: Option<Instant>,
    on_lost: Option<LostCallback>,
}

/// How often a lock just claimed is checked, and for how long.
pub const CLOSE_WATCH: Duration = Duration::from_millis(50);
pub const CLOSE_WATCH_FOR: Duration = Duration::from_secs(2);

/// How late a beat may be, so that beats due close together are served by one wake-up.
const BEAT_SLACK: Duration = Duration::from_millis(10);

impl HeldLock {
    /// Starts watching (and, with `refresh`, refreshing) a claim until it is released.
    /// No lock without a heartbeat: if the heartbeat thread cannot be started, the claim is
    /// released again and the error says why.
    /// For the first [`CLOSE_WATCH_FOR`] the lockfile is checked every [`CLOSE_WATCH`]: a
    /// process of the original module that judged the lock stale just before we claimed it
    /// unlinks whatever is there, our claim included, and the loss is reported at once.
    pub fn hold(
        claim: Claimed,
        refresh: bool,
        heartbeat_stale_ms: f64,
        on_lost: Option<LostCallback>,
    ) -> Result<Arc<HeldLock>, LockError> {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        let held = Arc::new(HeldLock {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            state: Mutex::new(HeldState {
                claim,
                released: false,
                lost: None,
                refresh_failure: None,
            }),
            refresh,
            interval: refresh_interval(heartbeat_stale_ms),
            close_watch_until: Some(Instant::now() + CLOSE_WATCH_FOR),
            on_lost,
        });
        if let Err(e) = service().add(held.clone()) {
            let mut state = held.state();
            state.released = true;
            let _ = release_noting_loss(&mut state.claim, Patience::Wait);
            return Err(e);
        }
        Ok(held)
    }

    /// Checks now that the lockfile is still ours (no refresh). `false` when it is not: the
    /// loss is noted (and reported to `on_lost`, if any) as a heartbeat would.
    pub fn confirm(&self) -> bool {
        let lost_reason = {
            let mut state = self.state();
            if state.lost.is_some() {
                return false;
            }
            match check_and_refresh(&mut state.claim, None) {
                Ok(Ownership::Lost(reason)) => state.note_lost(reason),
                // Ours; or not looked at (a stopped process in the mutex, an I/O error):
                // nothing says it is not, and the heartbeat keeps checking.
                _ => return true,
            }
        };
        self.report_loss(&lost_reason);
        false
    }

    /// How late its beats may be: a little, and far less than its interval.
    fn slack(&self) -> Duration {
        (self.interval / 4).min(BEAT_SLACK)
    }

    /// The wait before the next beat: the usual interval, or less while watched closely.
    fn next_beat(&self, usual: Duration) -> Duration {
        match self.close_watch_until {
            Some(until) if Instant::now() < until => usual.min(CLOSE_WATCH),
            _ => usual,
        }
    }

    /// Why the last refresh failed, while refreshes fail.
    pub fn refresh_failure(&self) -> Option<RefreshFailure> {
        self.state().refresh_failure.clone()
    }

    fn state(&self) -> MutexGuard<'_, HeldState> {
        // A panic elsewhere while holding this lock leaves consistent data; keep going.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Deletes the lockfile if it is still ours and frees the kernel lock. Idempotent; never
    /// fails (the lock is released as far as the file system allows); never waits long: if
    /// another process is stopped inside this lock's mutex, a thread finishes the release
    /// when it runs again. A lockfile found no longer ours is a loss like one the heartbeat
    /// finds: noted, and reported once. Returns whether a lockfile was deleted by now.
    pub fn release(self: &Arc<Self>) -> bool {
        service().remove(self.id);
        let mut state = self.state();
        if state.released {
            return false;
        }
        state.released = true;
        match release_noting_loss(&mut state.claim, Patience::Bounded) {
            Ok(Released::MutexBusy) => {
                drop(state);
                let me = self.clone();
                // Tries again and again, never keeping the state locked for longer than one
                // try: the handle's other calls must not wait for the stopped process.
                let finish = move || loop {
                    std::thread::sleep(MUTEX_PATIENCE);
                    let mut state = me.state();
                    match release_noting_loss(&mut state.claim, Patience::Bounded) {
                        Ok(Released::MutexBusy) => continue,
                        outcome => {
                            me.released(state, outcome);
                            return;
                        }
                    }
                };
                let spawned = std::thread::Builder::new()
                    .name("workspace-lock-release".into())
                    .spawn(finish);
                if spawned.is_err() {
                    // No thread to spare: wait here rather than never release.
                    let mut state = self.state();
                    let outcome = release_noting_loss(&mut state.claim, Patience::Wait);
                    return self.released(state, outcome);
                }
                false
            }
            outcome => self.released(state, outcome),
        }
    }

    /// The end of a release: notes it, and a loss it found.
    fn released(
        &self,
        mut state: MutexGuard<'_, HeldState>,
        outcome: Result<Released, LockError>,
    ) -> bool {
        crate::waiting::note_release(&state.claim.target.path);
        let newly_lost = match outcome {
            Ok(Released::Deleted) => return true,
            Ok(Released::NotOurs(reason)) if state.lost.is_none() => {
                state.lost = Some(reason.clone());
                reason
            }
            // Already reported; or released as far as the file system allows.
            Ok(_) | Err(_) => return false,
        };
        drop(state);
        self.report_loss(&newly_lost);
        false
    }

    /// Calls the caller's `onCompromised` (never with the state locked).
    fn report_loss(&self, reason: &str) {
        if let Some(callback) = &self.on_lost {
            callback(reason);
        }
    }

    /// Why the lock was lost, if it was.
    pub fn lost(&self) -> Option<String> {
        self.state().lost.clone()
    }

    /// One heartbeat: check the lockfile is ours, refresh it. Returns when to beat next
    /// (`None` = stop watching).
    fn beat(&self) -> Option<Duration> {
        let lost_reason = {
            let mut state = self.state();
            if state.released || state.lost.is_some() {
                return None;
            }
            let refreshed = self.refresh.then(|| {
                let mut r = state.claim.record.clone();
                r.heartbeat = wall_clock_ms();
                r
            });
            match check_and_refresh(&mut state.claim, refreshed) {
                Ok(Ownership::Ours) => {
                    state.refresh_failure = None;
                    return Some(self.next_beat(self.interval));
                }
                Ok(Ownership::Undecided) => return Some(self.next_beat(self.interval)),
                // A full or read-only disk, an I/O error, no descriptor left: the lock stays
                // ours (the kernel lock proves we live); say so, and try again soon.
                Err(error) => {
                    let failure = match state.refresh_failure.take() {
                        Some(f) => RefreshFailure {
                            error,
                            attempts: f.attempts.saturating_add(1),
                            since_ms: f.since_ms,
                        },
                        None => RefreshFailure {
                            error,
                            since_ms: wall_clock_ms(),
                            attempts: 1,
                        },
                    };
                    state.refresh_failure = Some(failure);
                    return Some(self.next_beat(self.interval.min(REFRESH_RETRY)));
                }
                Ok(Ownership::Lost(reason)) => state.note_lost(reason),
            }
        };
        self.report_loss(&lost_reason);
        None
    }
}

struct Schedule {
    due: BinaryHeap<Reverse<(Instant, u64)>>,
    held: HashMap<u64, Arc<HeldLock>>,
    thread_started: bool,
    /// When the thread will wake by itself (`None`: only when notified). A new lock due no
    /// earlier needs no wake-up, which keeps acquire/release cycles free of thread switches.
    wakes_at: Option<Instant>,
}

struct Service {
    schedule: Mutex<Schedule>,
    wake: Condvar,
}

fn service() -> &'static Service {
    static SERVICE: OnceLock<Service> = OnceLock::new();
    SERVICE.get_or_init(|| Service {
        schedule: Mutex::new(Schedule {
            due: BinaryHeap::new(),
            held: HashMap::new(),
            thread_started: false,
            wakes_at: None,
        }),
        wake: Condvar::new(),
    })
}

impl Service {
    fn lock(&self) -> MutexGuard<'_, Schedule> {
        self.schedule.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn add(&'static self, held: Arc<HeldLock>) -> Result<(), LockError> {
        let mut s = self.lock();
        if !s.thread_started {
            // Without the thread no heartbeat would ever be written and no loss noticed:
            // the caller hands out no lock then. The next hold tries again.
            std::thread::Builder::new()
                .name("workspace-lock-heartbeat".into())
                .spawn(move || self.run())
                .map_err(|e| LockError::Thread(ThreadFailure::from_io(&e, "heartbeat")))?;
            s.thread_started = true;
        }
        let due = Instant::now() + held.next_beat(held.interval);
        let held_slack = held.slack();
        s.due.push(Reverse((due, held.id)));
        s.held.insert(held.id, held);
        if s.wakes_at.is_none_or(|at| at > due + held_slack) {
            self.wake.notify_one();
        }
        Ok(())
    }

    fn remove(&self, id: u64) {
        self.lock().held.remove(&id);
    }

    fn run(&self) {
        let mut s = self.lock();
        loop {
            let next = s.due.peek().map(|Reverse((at, id))| (*at, *id));
            match next {
                None => {
                    s.wakes_at = None;
                    s = self.wake.wait(s).unwrap_or_else(|p| p.into_inner());
                    // Awake: a lock added from now on is seen without a notification.
                    s.wakes_at = Some(Instant::now());
                }
                Some((at, id)) => {
                    let now = Instant::now();
                    if at > now {
                        // Beats due close together share one wake-up: a thread switch per
                        // acquire/release cycle would cost more than the cycle.
                        let slack = s.held.get(&id).map_or(BEAT_SLACK, |h| h.slack());
                        let at = at + slack;
                        s.wakes_at = Some(at);
                        s = self
                            .wake
                            .wait_timeout(s, at - now)
                            .unwrap_or_else(|p| p.into_inner())
                            .0;
                        s.wakes_at = Some(Instant::now());
                        continue;
                    }
                    s.due.pop();
                    let Some(held) = s.held.get(&id).cloned() else {
                        continue;
                    };
                    drop(s);
                    let next = held.beat();
                    s = self.lock();
                    match next {
                        Some(after) if s.held.contains_key(&id) => {
                            s.due.push(Reverse((Instant::now() + after, id)));
                        }
                        _ => {
                            s.held.remove(&id);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::LockError;
    use crate::host::host_identity;
    use crate::kernel_lock::OwnerFile;
    use crate::liveness::{enhanced_verdict, Verdict};
    use crate::lockfile_io::LockTarget;
    use crate::protocol::{try_claim, ClaimOutcome, Claimant};
    use crate::record::{NewRecord, ParsedRecord};
    use crate::test_support::TempDir;
    use std::sync::atomic::AtomicUsize;

    struct Me;
    impl Claimant for Me {
        type Error = LockError;
        fn judge(&mut self, r: &ParsedRecord, o: Option<&OwnerFile>) -> Result<Verdict, LockError> {
            Ok(enhanced_verdict(r, o, wall_clock_ms(), 100.0))
        }
        fn record(&mut self) -> Result<NewRecord, LockError> {
            Ok(NewRecord {
                pid: f64::from(std::process::id()),
                start_time: None,
                heartbeat: wall_clock_ms(),
                goal_id: "g".into(),
                acquired_at: "t".into(),
                host: host_identity().clone(),
                owner_lock: None,
                owner_file: None,
                backend: None,
            })
        }
    }

    fn claim(target: &LockTarget) -> Claimed {
        match try_claim(target, &mut Me, 100.0, None).unwrap() {
            ClaimOutcome::Claimed(c) => *c,
            ClaimOutcome::Busy(b) => panic!("{b:?}"),
        }
    }

    #[test]
    fn intervals_are_a_quarter_of_the_threshold_within_bounds() {
        assert_eq!(refresh_interval(60_000.0), Duration::from_secs(5));
        assert_eq!(refresh_interval(400.0), Duration::from_millis(100));
        assert_eq!(refresh_interval(0.0), Duration::from_millis(2));
        assert_eq!(refresh_interval(f64::INFINITY), Duration::from_secs(5));
    }

    #[test]
    fn a_held_lock_stays_fresh_far_beyond_the_threshold() {
        let dir = TempDir::new("held-fresh");
        let target = LockTarget::new(dir.path().join("h.lock"));
        let held = HeldLock::hold(claim(&target), true, 100.0, None).unwrap();
        for _ in 0..6 {
            std::thread::sleep(Duration::from_millis(60));
            let r = ParsedRecord::parse(&std::fs::read(&target.path).unwrap()).unwrap();
            let age = wall_clock_ms() - r.heartbeat();
            assert!(age <= 100.0, "heartbeat {age} ms old");
        }
        assert!(matches!(
            try_claim(&target, &mut Me, 100.0, None).unwrap(),
            ClaimOutcome::Busy(_)
        ));
        assert!(held.release());
        assert!(!held.release());
        assert!(!target.path.exists());
    }

    #[test]
    #[cfg_attr(
        not(kernel_locks),
        ignore = "needs byte locks owned by an open file (Linux OFD)"
    )]
    fn a_lost_lock_is_reported_once() {
        let dir = TempDir::new("held-lost");
        let target = LockTarget::new(dir.path().join("h.lock"));
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = calls.clone();
        let held = HeldLock::hold(
            claim(&target),
            false,
            40.0,
            Some(Box::new(move |_| {
                seen.fetch_add(1, Ordering::SeqCst);
            })),
        )
        .unwrap();
        std::fs::remove_file(&target.path).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while held.lost().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(held.lost().as_deref(), Some("the lockfile was deleted"));
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // Its kernel byte is free again, and the next claim succeeds.
        let _next = claim(&target);
        assert!(!held.release(), "nothing of ours to delete");
    }

    #[test]
    #[cfg_attr(
        not(kernel_locks),
        ignore = "needs byte locks owned by an open file (Linux OFD)"
    )]
    fn a_loss_first_found_by_the_release_is_noted_and_reported_once() {
        let dir = TempDir::new("held-lost-at-release");
        let target = LockTarget::new(dir.path().join("h.lock"));
        let calls = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let seen = calls.clone();
        // A heartbeat far away: only the release can find the loss.
        let held = HeldLock::hold(
            claim(&target),
            false,
            60_000.0,
            Some(Box::new(move |reason| {
                seen.lock().unwrap().push(reason.to_string());
            })),
        )
        .unwrap();
        std::fs::remove_file(&target.path).unwrap();
        let mut other = claim(&target);
        assert!(
            !held.release(),
            "another claim's lockfile is not ours to delete"
        );
        let reason = format!(
            "the lockfile now holds goalId=g (pid={})",
            std::process::id()
        );
        assert_eq!(held.lost().as_deref(), Some(reason.as_str()));
        assert_eq!(*calls.lock().unwrap(), vec![reason.clone()]);
        assert!(!held.release());
        assert_eq!(calls.lock().unwrap().len(), 1, "reported once");
        assert!(target.path.exists());
        assert!(crate::protocol::release(&mut other).unwrap());
    }

    #[test]
    #[cfg_attr(
        not(kernel_locks),
        ignore = "needs byte locks owned by an open file (Linux OFD)"
    )]
    fn a_release_behind_a_stopped_process_returns_at_once_and_finishes_later() {
        use crate::kernel_lock::{mutex_offset, OwnerFile};
        let dir = TempDir::new("held-release-later");
        let target = LockTarget::new(dir.path().join("h.lock"));
        let held = HeldLock::hold(claim(&target), true, 60_000.0, None).unwrap();
        // Another process, stopped inside this lock's mutex.
        let stopped = OwnerFile::open(&target.dir, false).unwrap().unwrap();
        stopped
            .lock_mutex(mutex_offset(target.file_name()))
            .unwrap();
        let started = Instant::now();
        assert!(!held.release(), "not released yet");
        assert!(started.elapsed() < MUTEX_PATIENCE + Duration::from_secs(1));
        assert!(target.path.exists());
        assert!(!held.release(), "idempotent meanwhile");
        drop(stopped);
        let deadline = Instant::now() + Duration::from_secs(5);
        while target.path.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(
            !target.path.exists(),
            "the release finished once the mutex was free"
        );
        assert_eq!(held.lost(), None);
        let _next = claim(&target);
    }
}
