//! A lock this process holds, and the one native thread that keeps every held lock's
//! heartbeat fresh (independent of any JavaScript event loop) and notices when a lockfile
//! stops being ours.

use crate::error::LockError;
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
}

pub struct HeldLock {
    id: u64,
    state: Mutex<HeldState>,
    /// False when the caller injected a clock: that clock owns time, we do not write it.
    refresh: bool,
    interval: Duration,
    on_lost: Option<LostCallback>,
}

impl HeldLock {
    /// Starts watching (and, with `refresh`, refreshing) a claim until it is released.
    pub fn hold(
        claim: Claimed,
        refresh: bool,
        heartbeat_stale_ms: f64,
        on_lost: Option<LostCallback>,
    ) -> Arc<HeldLock> {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        let held = Arc::new(HeldLock {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            state: Mutex::new(HeldState {
                claim,
                released: false,
                lost: None,
            }),
            refresh,
            interval: refresh_interval(heartbeat_stale_ms),
            on_lost,
        });
        service().add(held.clone());
        held
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

    /// One heartbeat: check the lockfile is ours, refresh it. `false` = stop watching.
    fn beat(&self) -> bool {
        let lost_reason = {
            let mut state = self.state();
            if state.released || state.lost.is_some() {
                return false;
            }
            let refreshed = self.refresh.then(|| {
                let mut r = state.claim.record.clone();
                r.heartbeat = wall_clock_ms();
                r
            });
            match check_and_refresh(&mut state.claim, refreshed) {
                Ok(Ownership::Ours) | Ok(Ownership::Undecided) => return true,
                // Transient trouble (a full disk, say): our kernel lock still proves we live.
                Err(_) => return true,
                Ok(Ownership::Lost(reason)) => {
                    // Nothing refers to our kernel byte any more; free it.
                    if let (Some(owners), Some(slot)) = (&state.claim.owners, state.claim.slot) {
                        owners.unhold(slot);
                    }
                    state.lost = Some(reason.clone());
                    reason
                }
            }
        };
        self.report_loss(&lost_reason);
        false
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

    fn add(&'static self, held: Arc<HeldLock>) {
        let mut s = self.lock();
        let due = Instant::now() + held.interval;
        s.due.push(Reverse((due, held.id)));
        s.held.insert(held.id, held);
        if !s.thread_started {
            // If the thread cannot be created, locks are still held and released correctly;
            // only their heartbeats go unrefreshed. Try again at the next hold.
            s.thread_started = std::thread::Builder::new()
                .name("workspace-lock-heartbeat".into())
                .spawn(move || self.run())
                .is_ok();
        }
        if s.wakes_at.is_none_or(|at| at > due) {
            self.wake.notify_one();
        }
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
                    let keep = held.beat();
                    s = self.lock();
                    if keep && s.held.contains_key(&id) {
                        s.due.push(Reverse((Instant::now() + held.interval, id)));
                    } else {
                        s.held.remove(&id);
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
        let held = HeldLock::hold(claim(&target), true, 100.0, None);
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
        );
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
        );
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
    fn a_release_behind_a_stopped_process_returns_at_once_and_finishes_later() {
        use crate::kernel_lock::{mutex_offset, OwnerFile};
        let dir = TempDir::new("held-release-later");
        let target = LockTarget::new(dir.path().join("h.lock"));
        let held = HeldLock::hold(claim(&target), true, 60_000.0, None);
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
