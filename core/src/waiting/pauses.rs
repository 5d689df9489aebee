//! Contention pauses: how long a waiter that lost a race, or a holder that asks again right
//! after releasing, sleeps through releases before it looks again.

use super::*;

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
pub(super) const RIGHT_AFTER_RELEASE: Duration = Duration::from_millis(2);

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
