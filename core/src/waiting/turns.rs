//! A waiting acquisition's moves, decided here so that the binding only holds its promise
//! and JavaScript values and does what it is told: whether it waits behind earlier waiters
//! of this process or looks, which wait it registers (for the lock, behind others, or while
//! its claim settles), whether a takeover must settle before it counts, and which failures
//! of a look do not end the wait.

use super::*;
use crate::error::LockError;
use crate::liveness::original_may_also_reclaim;
use crate::protocol::{Busy, Reclaim};

/// How long a takeover that a process of the original module may be racing must survive
/// before it is handed out: longer than the original's read, judge, unlink and create of a
/// stale lock (one turn of its event loop) even on a loaded machine. A claim of ours still
/// in place after that was not replaced by one of those.
pub const SETTLE: Duration = Duration::from_millis(50);

/// How soon a waiter whose look failed for want of descriptors or memory looks again.
pub const TRANSIENT_RELOOK: Duration = Duration::from_millis(50);

/// What one waiting acquisition is, for its waits.
#[derive(Debug, Clone)]
pub struct WaitingAcquisition {
    pub lock_path: PathBuf,
    /// The lock's directory (where its holders' kernel locks are).
    pub locks_dir: PathBuf,
    /// `pollMs`.
    pub poll: Duration,
    /// It judges by callbacks of its own (a start-time resolver or a clock).
    pub injected: bool,
    pub heartbeat_stale_ms: f64,
    /// Its arrival order among this process's waiters (see [`WaitSpec::order`]).
    pub order: u64,
}

/// Where a new waiter's first wait is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstWait {
    /// Behind earlier waiters of this process (see [`WaitingAcquisition::behind`]), for this long at most.
    Behind(Duration),
    /// For the lock (see [`WaitingAcquisition::for_the_lock`]), with this pause.
    ForTheLock(Option<Duration>),
}

/// What a woken waiter does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// Looks at the lock.
    Look,
    /// Waits behind an earlier waiter of this process, for this long at most.
    WaitBehind(Duration),
}

/// Whether a new acquisition waits behind others of this process before it even looks: it
/// does if some wait for this lock, in arrival order. A try-lock (`failOnWorkspaceBusy`)
/// waits for nobody: it claims a free lock at once.
pub fn joins_the_line(lock_path: &Path, fail_on_workspace_busy: bool) -> bool {
    !fail_on_workspace_busy && !line_is_empty(lock_path)
}

/// A woken waiter's turn. Woken by an event while an earlier waiter of this process is still
/// in line (woken first and about to look, or pausing), it lets that one go first. A
/// deadline looks anyway, so that an earlier waiter whose thread is blocked holds nobody up;
/// a waiter behind looks after [`HEAD_PATIENCE`] at most if nothing wakes it before (the
/// event may be one that earlier waiter, out of the watcher's sight while it looks, never
/// acts on).
pub fn turn(woken_by: WakeReason, line: &LinePlace, poll: Duration) -> Turn {
    if woken_by != WakeReason::Deadline && !line.is_first() {
        Turn::WaitBehind(poll.min(HEAD_PATIENCE))
    } else {
        Turn::Look
    }
}

/// Whether a claim must settle (survive [`SETTLE`]) before it is handed out: a takeover of a
/// lock the original module could judge stale too (see [`original_may_also_reclaim`]), by an
/// acquisition that judges as this package does. `now_ms`: the wall clock, as the original
/// reads it.
pub fn must_settle(
    reclaimed: Option<&Reclaim>,
    injected: bool,
    heartbeat_stale_ms: f64,
    now_ms: f64,
) -> bool {
    !injected
        && reclaimed.is_some_and(|r| {
            original_may_also_reclaim(r.previous.as_ref(), now_ms, heartbeat_stale_ms)
        })
}

/// How soon to look again after a look that failed with `error`, if the wait goes on: only
/// for failures of the moment, not of the lock (EMFILE, ENFILE, ENOMEM).
pub fn relook_after(error: &LockError, poll: Duration) -> Option<Duration> {
    matches!(error, LockError::Io(e) if matches!(e.code(), "EMFILE" | "ENFILE" | "ENOMEM"))
        .then(|| poll.min(TRANSIENT_RELOOK))
}

impl WaitingAcquisition {
    /// Who judges a lock as this waiter does (see [`WaitSpec::judging`]): any other without
    /// injected callbacks and with the same `heartbeatStaleMs`.
    fn judging(&self) -> Option<u64> {
        (!self.injected).then(|| self.heartbeat_stale_ms.to_bits())
    }

    fn spec(
        &self,
        holder: Option<HolderWatch>,
        wait: Duration,
        pause: Option<Duration>,
    ) -> WaitSpec {
        WaitSpec {
            lock_path: self.lock_path.clone(),
            holder,
            deadline: Instant::now()
                .checked_add(wait)
                .unwrap_or_else(Instant::now),
            order: self.order,
            pause,
            judging: self.judging(),
        }
    }

    /// The first wait of an acquisition that found the lock `busy` (or joined the line):
    /// behind earlier waiters, or for the lock, paused if this process released it just
    /// before and another was quicker (see [`pause_after_own_release`]).
    pub fn first_wait(&self, line: &LinePlace, busy: &Busy) -> FirstWait {
        if line.is_first() {
            FirstWait::ForTheLock(pause_after_own_release(
                &self.lock_path,
                busy.holder.as_ref(),
            ))
        } else {
            FirstWait::Behind(self.poll)
        }
    }

    /// Waits for the next event that may free the lock: a change of the lock path, its
    /// holder's death, or the fallback deadline; after a lost race, not before `pause`
    /// (see [`pause_after`]). Once it is registered, ask [`WaitingAcquisition::changed_since_look`].
    pub fn for_the_lock(&self, busy: &Busy, pause: Option<Duration>) -> WaitSpec {
        let holder = holder_watch(&self.locks_dir, busy, self.injected);
        self.spec(holder, fallback_wait(busy, self.poll), pause)
    }

    /// Asked right after registering [`WaitingAcquisition::for_the_lock`]: whether to look once more
    /// (nudge the lock path), because a release between the look and the registration raised
    /// no event the waiter could see. A paused waiter looks when its pause ends, whatever
    /// happened meanwhile; one stuck behind a stopped process's mutex would only pay the
    /// patience again (only a change, which wakes it, or time can help).
    pub fn changed_since_look(&self, busy: &Busy, pause: Option<Duration>) -> bool {
        pause.is_none()
            && !busy.mutex_stuck
            && !still_as_found(&self.lock_path, busy.holder.as_ref())
    }

    /// Waits behind earlier waiters of this process: for the events that may free the lock,
    /// which wake the first in line first, or `wait`. It watches no holder and does not look
    /// now: the first in line does.
    pub fn behind(&self, wait: Duration) -> WaitSpec {
        self.spec(None, wait, None)
    }

    /// Waits out [`SETTLE`] for a claim, until `until`: a timer only (no event of the lock
    /// path wakes it, nor shares its deadline with other waiters).
    pub fn settling(&self, until: Instant) -> WaitSpec {
        WaitSpec {
            lock_path: self.lock_path.clone(),
            holder: None,
            deadline: until,
            order: self.order,
            pause: Some(until.saturating_duration_since(Instant::now())),
            judging: None,
        }
    }
}

#[cfg(test)]
mod tests;
