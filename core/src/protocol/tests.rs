use super::*;
use crate::host::host_identity;
use crate::kernel_lock::SlotState;
use crate::liveness::{enhanced_verdict, original_verdict};
use crate::test_support::TempDir;
use std::fs::File;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_millis() as f64)
}

/// A claimant of this package with the default judge.
struct Enhanced {
    goal: String,
    stale_ms: f64,
}

impl Claimant for Enhanced {
    type Error = LockError;
    fn judge(
        &mut self,
        r: &ParsedRecord,
        owners: Option<&OwnerFile>,
    ) -> Result<Verdict, LockError> {
        Ok(enhanced_verdict(r, owners, now_ms(), self.stale_ms))
    }
    fn record(&mut self) -> Result<NewRecord, LockError> {
        Ok(NewRecord {
            pid: f64::from(std::process::id()),
            start_time: crate::process_probe::start_time_of(&std::process::id().to_string()),
            heartbeat: now_ms(),
            goal_id: self.goal.clone(),
            acquired_at: "2026-01-01T00:00:00.000Z".into(),
            host: host_identity().clone(),
            owner_lock: None,
            owner_file: None,
            backend: None,
        })
    }
}

fn enhanced(goal: &str) -> Enhanced {
    Enhanced {
        goal: goal.into(),
        stale_ms: 60_000.0,
    }
}

fn claim(target: &LockTarget, goal: &str) -> ClaimOutcome {
    try_claim(target, &mut enhanced(goal), 60_000.0, None).unwrap()
}

fn claimed(outcome: ClaimOutcome) -> Claimed {
    match outcome {
        ClaimOutcome::Claimed(c) => *c,
        ClaimOutcome::Busy(b) => panic!("expected a claim, busy with {b:?}"),
    }
}

fn busy_goal(outcome: ClaimOutcome) -> Option<String> {
    match outcome {
        ClaimOutcome::Busy(b) => b
            .holder
            .and_then(|h| h.goal_id().and_then(|g| g.as_str().map(String::from))),
        ClaimOutcome::Claimed(c) => panic!("expected busy, claimed {:?}", c.record.goal_id),
    }
}

fn set_age(path: &Path, age: Duration) {
    let f = File::options().write(true).open(path).unwrap();
    f.set_modified(SystemTime::now() - age).unwrap();
}

#[test]
fn claim_then_busy_then_release_then_claim() {
    let dir = TempDir::new("proto-basic");
    let target = LockTarget::new(dir.path().join("locks").join("h.lock"));
    let mut a = claimed(claim(&target, "a"));
    assert_eq!(a.reclaimed, None);
    assert_eq!(fs::read_to_string(&target.path).unwrap(), a.bytes);
    assert_eq!(busy_goal(claim(&target, "b")).as_deref(), Some("a"));
    assert!(release(&mut a).unwrap());
    assert!(!target.path.exists());
    assert!(!release(&mut a).unwrap(), "release is idempotent");
    let _b = claimed(claim(&target, "b"));
}

#[test]
#[cfg_attr(
    not(kernel_locks),
    ignore = "needs byte locks owned by an open file (Linux OFD)"
)]
fn release_frees_the_holder_byte_and_the_mutex() {
    let dir = TempDir::new("proto-release-frees");
    let target = LockTarget::new(dir.path().join("h.lock"));
    let mut a = claimed(claim(&target, "a"));
    let slot = a.slot.expect("a holder byte on Linux");
    let other = OwnerFile::open(&target.dir, false).unwrap().unwrap();
    let mutex = mutex_offset(target.file_name());
    assert_eq!(other.probe(slot.0).unwrap(), SlotState::Held);
    assert_eq!(other.probe(mutex).unwrap(), SlotState::Free);
    assert!(release(&mut a).unwrap());
    assert!(a.owners.is_none(), "the owner file is closed");
    // Closing, not unlocking, frees both bytes: another description can take them at once.
    assert_eq!(other.probe(slot.0).unwrap(), SlotState::Free);
    assert_eq!(other.probe(mutex).unwrap(), SlotState::Free);
    assert!(other.try_hold(HolderSlot(mutex)).unwrap());
}

#[test]
fn a_goal_id_longer_than_one_read_claims_and_releases_like_any_other() {
    let dir = TempDir::new("proto-long-goal");
    let target = LockTarget::new(dir.path().join("h.lock"));
    let long = "L".repeat(10_000);
    let mut a = claimed(claim(&target, &long));
    assert_eq!(fs::read_to_string(&target.path).unwrap(), a.bytes);
    assert_eq!(
        busy_goal(claim(&target, "b")).as_deref(),
        Some(long.as_str())
    );
    assert!(
        release(&mut a).unwrap(),
        "our own long record is recognised"
    );
    assert!(!target.path.exists());
    let _b = claimed(claim(&target, "b"));
}

#[test]
#[cfg_attr(
    not(symlink_free_open),
    ignore = "needs a symlink-free open (openat2), which settles the usual path"
)]
#[cfg(unix)]
fn lock_path_for_claim_opens_the_owner_file_only_where_it_settles_the_path() {
    use crate::kernel_lock::OWNER_FILE_NAME;
    use crate::paths::workspace_lock_path;
    use std::os::unix::fs::symlink;
    let dir = TempDir::new("proto-path-for-claim");
    let (root, ctx) = crate::test_support::rooted_context(&dir);
    let mk = |rel: &str| fs::create_dir_all(root.join(rel)).unwrap();
    mk("home/usual/.crew/state/workspace-locks");
    mk("home/fresh/.git");
    mk("home/repo/.crew/state/workspace-locks");
    mk("home/repo/sub");
    mk("elsewhere/crew/state/workspace-locks");
    mk("home/linked");
    symlink(root.join("elsewhere/crew"), root.join("home/linked/.crew")).unwrap();
    // (cwd, whether the owner file comes opened)
    for (rel, opened) in [
        ("home/usual", true),
        ("home/fresh", false), // no locks directory yet: the claim creates it
        ("home/repo/sub", false), // the lock lives in the repo root's .crew
        ("home/linked", false), // .crew is a symlink: realpath'd by the walk
    ] {
        let cwd = root.join(rel);
        let cwd = cwd.to_str().unwrap();
        let (path, owners) = lock_path_for_claim(cwd, &ctx).unwrap();
        assert_eq!(path, workspace_lock_path(cwd, &ctx).unwrap(), "{rel}");
        assert_eq!(owners.is_some(), opened, "{rel}");
        let owner_file = path.parent().unwrap().join(OWNER_FILE_NAME);
        assert_eq!(
            owner_file.exists(),
            opened,
            "{rel}: created only when opened"
        );
        // The claim takes it from there, with or without the owner file.
        let target = LockTarget::new(path.clone());
        let mut held = claimed(try_claim(&target, &mut enhanced(rel), 60_000.0, owners).unwrap());
        assert_eq!(fs::read_to_string(&path).unwrap(), held.bytes);
        assert_eq!(busy_goal(claim(&target, "other")).as_deref(), Some(rel));
        assert!(release(&mut held).unwrap());
    }
}

#[test]
#[cfg_attr(
    not(kernel_locks),
    ignore = "needs byte locks owned by an open file (Linux OFD)"
)]
fn a_dead_holder_is_reclaimed_at_once() {
    let dir = TempDir::new("proto-dead");
    let target = LockTarget::new(dir.path().join("h.lock"));
    let a = claimed(claim(&target, "a"));
    // Dropping the claim without release closes its owner file: the kernel frees its byte,
    // as when a process dies.
    drop(a);
    let b = claimed(claim(&target, "b"));
    let reclaimed = b.reclaimed.expect("a reclaim");
    assert_eq!(reclaimed.reason, StaleReason::HolderDead);
    let previous = reclaimed.previous.expect("the dead holder's record");
    assert_eq!(previous.goal_id().and_then(|g| g.as_str()), Some("a"));
}

#[test]
fn unreadable_files_are_busy_while_fresh_and_reclaimed_when_old() {
    let dir = TempDir::new("proto-unreadable");
    let target = LockTarget::new(dir.path().join("h.lock"));
    for content in [&b""[..], b"{\"pid\":", b"42", b"{}"] {
        fs::write(&target.path, content).unwrap();
        assert!(matches!(
            claim(&target, "a"),
            ClaimOutcome::Busy(Busy { holder: None, .. })
        ));
        set_age(&target.path, Duration::from_secs(10));
        let mut c = claimed(claim(&target, "a"));
        assert_eq!(
            c.reclaimed.as_ref().map(|r| r.reason),
            Some(StaleReason::Corrupt)
        );
        release(&mut c).unwrap();
    }
}

#[test]
fn a_directory_at_the_lock_path_is_an_error() {
    let dir = TempDir::new("proto-dir");
    let target = LockTarget::new(dir.path().join("h.lock"));
    fs::create_dir(&target.path).unwrap();
    match try_claim(&target, &mut enhanced("a"), 60_000.0, None) {
        Err(LockError::Io(e)) => assert_eq!(e.code(), "EISDIR"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn release_leaves_another_owners_record_alone() {
    let dir = TempDir::new("proto-release-guard");
    let target = LockTarget::new(dir.path().join("h.lock"));
    let mut a = claimed(claim(&target, "a"));
    let other =
        r#"{"pid":99999,"startTime":5000,"heartbeat":1,"goalId":"goal_other","acquiredAt":"x"}"#;
    fs::write(&target.path, other).unwrap();
    assert!(!release(&mut a).unwrap());
    assert_eq!(fs::read_to_string(&target.path).unwrap(), other);
}

#[test]
fn refresh_rewrites_only_our_own_record_and_reports_loss() {
    let dir = TempDir::new("proto-refresh");
    let target = LockTarget::new(dir.path().join("h.lock"));
    let mut a = claimed(claim(&target, "a"));
    let mut fresher = a.record.clone();
    fresher.heartbeat += 1234.0;
    assert_eq!(
        check_and_refresh(&mut a, Some(fresher.clone())).unwrap(),
        Ownership::Ours
    );
    assert_eq!(fs::read_to_string(&target.path).unwrap(), fresher.to_json());
    fs::write(&target.path, r#"{"pid":7,"heartbeat":1,"goalId":"thief"}"#).unwrap();
    assert_eq!(
        check_and_refresh(&mut a, Some(fresher)).unwrap(),
        Ownership::Lost("the lockfile now holds goalId=thief (pid=7)".into())
    );
    fs::remove_file(&target.path).unwrap();
    assert_eq!(
        check_and_refresh(&mut a, None).unwrap(),
        Ownership::Lost("the lockfile was deleted".into())
    );
}

/// The original's judge with an injected clock: the heartbeat decides, not the kernel.
struct Original {
    now: f64,
}

impl Claimant for Original {
    type Error = LockError;
    fn judge(&mut self, r: &ParsedRecord, _: Option<&OwnerFile>) -> Result<Verdict, LockError> {
        original_verdict(r, &mut |_| Ok(None), self.now, 60_000.0)
    }
    fn record(&mut self) -> Result<NewRecord, LockError> {
        let mut r = enhanced("orig").record()?;
        r.heartbeat = self.now;
        Ok(r)
    }
}

#[test]
fn an_injected_clock_reclaims_a_live_holder_whose_heartbeat_is_old() {
    let dir = TempDir::new("proto-injected");
    let target = LockTarget::new(dir.path().join("h.lock"));
    let _a =
        claimed(try_claim(&target, &mut Original { now: 1_000_000.0 }, 60_000.0, None).unwrap());
    let b =
        claimed(try_claim(&target, &mut Original { now: 1_120_000.0 }, 60_000.0, None).unwrap());
    assert_eq!(
        b.reclaimed.map(|r| r.reason),
        Some(StaleReason::HeartbeatStale)
    );
}

#[test]
fn reclaim_stale_removes_stale_and_old_corrupt_in_name_order() {
    let dir = TempDir::new("proto-reclaim");
    let now = 5_000_000.0;
    let write = |name: &str, hb: f64| {
        fs::write(
            dir.path().join(name),
            format!(r#"{{"pid":12345,"startTime":1000,"heartbeat":{hb},"goalId":"{name}","acquiredAt":"x"}}"#),
        )
        .unwrap();
    };
    write("b-stale.lock", now - 120_000.0);
    write("a-stale.lock", now - 120_000.0);
    write("live.lock", now - 1000.0);
    fs::write(dir.path().join("corrupt-fresh.lock"), b"").unwrap();
    fs::write(dir.path().join("corrupt-old.lock"), b"{").unwrap();
    set_age(
        &dir.path().join("corrupt-old.lock"),
        Duration::from_secs(60),
    );
    fs::create_dir(dir.path().join("dir.lock")).unwrap();
    fs::write(dir.path().join("other.txt"), b"x").unwrap();
    let leftover = dir.path().join(".h.1.0000000000000001.claim");
    fs::write(&leftover, b"{}").unwrap();
    set_age(&leftover, LEFTOVER_AGE + Duration::from_secs(1));
    let fresh_leftover = dir.path().join(".h.1.0000000000000002.claim");
    fs::write(&fresh_leftover, b"{}").unwrap();

    let mut judge = |r: &ParsedRecord, _: Option<&OwnerFile>| {
        original_verdict::<LockError>(r, &mut |_| Ok(Some(1000.0)), now, 60_000.0)
    };
    let got = reclaim_stale(dir.path(), &mut judge, 60_000.0).unwrap();
    let names: Vec<String> = got
        .iter()
        .map(|r| String::from_utf8_lossy(&r.file_name).into_owned())
        .collect();
    assert_eq!(names, ["a-stale.lock", "b-stale.lock", "corrupt-old.lock"]);
    assert_eq!(got[2].reason, StaleReason::Corrupt);
    for kept in ["live.lock", "corrupt-fresh.lock", "dir.lock", "other.txt"] {
        assert!(dir.path().join(kept).exists(), "{kept} kept");
    }
    assert!(!leftover.exists(), "old leftover swept");
    assert!(fresh_leftover.exists(), "a claim in progress is not swept");
    assert!(
        reclaim_stale(&dir.path().join("missing"), &mut judge, 60_000.0)
            .unwrap()
            .is_empty()
    );
}

/// Threads contend with the real protocol (each claim opens its own owner file, so the
/// kernel locks conflict between threads exactly as between processes).
#[test]
fn contending_threads_never_overlap() {
    contend("proto-contention", claim);
}

/// 4 threads, 200 claims and releases each, on one lock: never two owners at once, and every
/// release finds its own claim. Bounded in time: a thread that fails leaves the others to
/// give up at the deadline, not spin forever on a lockfile nobody will release.
fn contend(name: &str, claim: fn(&LockTarget, &str) -> ClaimOutcome) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let dir = TempDir::new(name);
    let target = Arc::new(LockTarget::new(dir.path().join("h.lock")));
    let inside = Arc::new(AtomicUsize::new(0));
    let total = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (target, inside, total) = (target.clone(), inside.clone(), total.clone());
            std::thread::spawn(move || {
                let mut done = 0;
                while done < 200 && std::time::Instant::now() < deadline {
                    match claim(&target, &format!("t{t}")) {
                        ClaimOutcome::Claimed(mut c) => {
                            assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "two owners");
                            total.fetch_add(1, Ordering::SeqCst);
                            inside.fetch_sub(1, Ordering::SeqCst);
                            assert!(release(&mut c).unwrap());
                            done += 1;
                        }
                        ClaimOutcome::Busy(_) => std::thread::yield_now(),
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(total.load(Ordering::SeqCst), 800);
    assert!(!target.path.exists());
}

/// A fresh acquire's claim in the usual layout: the owner file comes opened.
fn claim_opened(target: &LockTarget, goal: &str) -> Result<ClaimOutcome, LockError> {
    fs::create_dir_all(&target.dir).unwrap();
    let owners = OwnerFile::open(&target.dir, true).unwrap();
    assert!(owners.is_some(), "OFD locks on the test file system");
    try_claim(target, &mut enhanced(goal), 60_000.0, owners)
}

fn spare_names(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".spare"))
        .collect()
}

/// A record of the original module (no holder byte) naming a process: this one (alive) or
/// none (dead).
fn original_record(goal: &str, alive: bool) -> String {
    let pid = if alive {
        std::process::id()
    } else {
        0x3fff_fff0
    };
    format!(
        r#"{{"pid":{pid},"heartbeat":{},"goalId":"{goal}","acquiredAt":"x"}}"#,
        now_ms()
    )
}

#[test]
#[cfg_attr(
    windows,
    ignore = "no spare is kept open on Windows (sys::KEEP_FILES_OPEN)"
)]
#[cfg_attr(
    not(kernel_locks),
    ignore = "needs byte locks owned by an open file (Linux OFD)"
)]
fn a_blind_first_claim_judges_whatever_it_finds_like_a_looking_one() {
    let dir = TempDir::new("proto-blind");
    let target = LockTarget::new(dir.path().join("locks").join("h.lock"));
    // Free: claimed outright.
    let mut a = claimed(claim_opened(&target, "a").unwrap());
    assert_eq!(a.reclaimed, None);
    assert!(release(&mut a).unwrap());
    // A live holder of another process: busy, naming it; its file untouched.
    let live = original_record("live", true);
    fs::write(&target.path, &live).unwrap();
    assert_eq!(
        busy_goal(claim_opened(&target, "b").unwrap()).as_deref(),
        Some("live")
    );
    assert_eq!(fs::read_to_string(&target.path).unwrap(), live);
    // A dead one: reclaimed, with its record and the reason.
    fs::write(&target.path, original_record("dead", false)).unwrap();
    let mut b = claimed(claim_opened(&target, "b").unwrap());
    let reclaimed = b.reclaimed.clone().expect("a reclaim");
    assert_eq!(reclaimed.reason, StaleReason::HolderDead);
    assert_eq!(
        reclaimed
            .previous
            .and_then(|p| p.goal_id().and_then(|g| g.as_str().map(String::from))),
        Some("dead".to_string())
    );
    assert!(release(&mut b).unwrap());
    // Fresh unreadable content: busy without a holder.
    fs::write(&target.path, b"{\"pid\":").unwrap();
    assert!(matches!(
        claim_opened(&target, "c").unwrap(),
        ClaimOutcome::Busy(Busy { holder: None, .. })
    ));
    fs::remove_file(&target.path).unwrap();
    // A directory: the same error as when looking first.
    fs::create_dir(&target.path).unwrap();
    match claim_opened(&target, "d") {
        Err(LockError::Io(e)) => assert_eq!(e.code(), "EISDIR"),
        other => panic!("{other:?}"),
    }
    // Failed blind links left one spare, ready for the next claim.
    assert_eq!(spare_names(&target.dir).len(), 1);
}

#[test]
#[cfg_attr(
    windows,
    ignore = "no spare is kept open on Windows (sys::KEEP_FILES_OPEN)"
)]
#[cfg_attr(
    not(kernel_locks),
    ignore = "needs byte locks owned by an open file (Linux OFD)"
)]
fn a_blind_claim_is_not_tried_over_a_claim_of_this_process() {
    let dir = TempDir::new("proto-blind-own");
    let target = LockTarget::new(dir.path().join("h.lock"));
    let mut a = claimed(claim_opened(&target, "a").unwrap());
    let spares_before = spare_names(&target.dir);
    assert_eq!(
        busy_goal(claim_opened(&target, "b").unwrap()).as_deref(),
        Some("a")
    );
    // The holder's spare is still the one published: its release reads it back directly.
    assert_eq!(spare_names(&target.dir), spares_before);
    assert_eq!(
        lockfile_io::read_own_publication(&target).as_deref(),
        Some(a.bytes.as_bytes())
    );
    assert!(release(&mut a).unwrap());
}

#[test]
#[cfg_attr(
    not(kernel_locks),
    ignore = "needs byte locks owned by an open file (Linux OFD)"
)]
fn contending_threads_claiming_blind_never_overlap() {
    contend("proto-contend-blind", |target, goal| {
        claim_opened(target, goal).unwrap()
    });
}

#[test]
#[cfg_attr(
    not(kernel_locks),
    ignore = "needs byte locks owned by an open file (Linux OFD)"
)]
#[cfg(unix)]
fn a_claim_names_its_owner_file_and_survives_that_files_deletion() {
    let dir = TempDir::new("proto-owner-file-deleted");
    let target = LockTarget::new(dir.path().join("h.lock"));
    let owners_path = target.dir.join(crate::kernel_lock::OWNER_FILE_NAME);
    let mut a = claimed(claim_opened(&target, "a").unwrap());
    let id = crate::record::FileId::of(&fs::metadata(&owners_path).unwrap());
    assert_eq!(a.record.owner_file, Some(id));
    let named = format!(",\"ownerFile\":\"{}:{}\"}}", id.dev, id.ino);
    assert!(a.bytes.ends_with(&named), "{:?}", a.bytes);
    // Deleted under its live holder: other claims, looking or blind (which make the file
    // anew), still find the lock held.
    crate::test_support::delete_owners(&owners_path);
    assert_eq!(busy_goal(claim(&target, "b")).as_deref(), Some("a"));
    assert_eq!(
        busy_goal(claim_opened(&target, "b").unwrap()).as_deref(),
        Some("a")
    );
    assert!(release(&mut a).unwrap());
    let b = claimed(claim_opened(&target, "b").unwrap());
    assert_eq!(b.reclaimed, None);
}

#[test]
#[cfg_attr(
    not(kernel_locks),
    ignore = "needs byte locks owned by an open file (Linux OFD)"
)]
#[cfg(unix)]
fn a_claim_whose_directory_is_removed_under_it_claims_in_the_new_one() {
    let dir = TempDir::new("proto-dir-removed");
    let target = LockTarget::new(dir.path().join("state").join("h.lock"));
    fs::create_dir_all(&target.dir).unwrap();
    // The owner file is open (as acquire opens it to settle the path) when the whole
    // directory goes, spare and all.
    let mut first = claimed(claim_opened(&target, "a").unwrap());
    assert!(release(&mut first).unwrap());
    let owners = OwnerFile::open(&target.dir, true).unwrap();
    fs::remove_dir_all(&target.dir).unwrap();
    let mut b = claimed(try_claim(&target, &mut enhanced("b"), 60_000.0, owners).unwrap());
    let on_disk = fs::read_to_string(&target.path).unwrap();
    assert_eq!(on_disk, b.bytes);
    let id = crate::record::FileId::of(
        &fs::metadata(target.dir.join(crate::kernel_lock::OWNER_FILE_NAME)).unwrap(),
    );
    assert_eq!(
        b.record.owner_file,
        Some(id),
        "the new directory's owner file"
    );
    assert_eq!(busy_goal(claim(&target, "c")).as_deref(), Some("b"));
    assert!(release(&mut b).unwrap());
    assert!(!target.path.exists());
}

/// A process stopped (SIGSTOP, a frozen container) while inside a lock's mutex: the claims,
/// releases, heartbeats and sweeps of others give up on that lock within the patience
/// instead of hanging, and all proceed once it runs again.
#[test]
#[cfg_attr(
    not(kernel_locks),
    ignore = "needs byte locks owned by an open file (Linux OFD)"
)]
fn a_mutex_kept_by_a_stopped_process_holds_nobody_up_for_long() {
    let dir = TempDir::new("proto-stopped-mutex");
    let target = LockTarget::new(dir.path().join("h.lock"));
    let mut a = claimed(claim(&target, "a"));
    let dead = LockTarget::new(dir.path().join("d.lock"));
    drop(claimed(claim(&dead, "d")));
    // Another open file description takes both mutexes and keeps them.
    let stopped = OwnerFile::open(&target.dir, false).unwrap().unwrap();
    stopped
        .lock_mutex(mutex_offset(target.file_name()))
        .unwrap();
    stopped.lock_mutex(mutex_offset(dead.file_name())).unwrap();
    let quick = |started: std::time::Instant| {
        let took = started.elapsed();
        assert!(
            took >= MUTEX_PATIENCE && took < Duration::from_secs(2),
            "{took:?}"
        );
    };

    // A claim of a lock whose holder is dead, or of a free one, needs the mutex: busy, with
    // whoever is there.
    let started = std::time::Instant::now();
    assert_eq!(busy_goal(claim(&dead, "b")).as_deref(), Some("d"));
    quick(started);
    let free = LockTarget::new(dir.path().join("f.lock"));
    stopped.lock_mutex(mutex_offset(free.file_name())).unwrap();
    let started = std::time::Instant::now();
    assert_eq!(busy_goal(claim(&free, "b")), None);
    quick(started);
    assert!(!free.path.exists());
    let started = std::time::Instant::now();
    assert_eq!(
        release_noting_loss(&mut a, Patience::Bounded).unwrap(),
        Released::MutexBusy
    );
    quick(started);
    assert!(target.path.exists(), "nothing released yet");
    assert_eq!(
        check_and_refresh(&mut a, None).unwrap(),
        Ownership::Undecided
    );
    let mut judge = |r: &ParsedRecord, owners: Option<&OwnerFile>| {
        Ok::<_, LockError>(enhanced_verdict(r, owners, now_ms(), 60_000.0))
    };
    assert!(reclaim_stale(dir.path(), &mut judge, 60_000.0)
        .unwrap()
        .is_empty());
    assert!(dead.path.exists(), "skipped while its mutex is held");

    drop(stopped);
    assert_eq!(check_and_refresh(&mut a, None).unwrap(), Ownership::Ours);
    let swept = reclaim_stale(dir.path(), &mut judge, 60_000.0).unwrap();
    assert_eq!(swept.len(), 1);
    assert_eq!(swept[0].file_name, b"d.lock");
    assert_eq!(
        release_noting_loss(&mut a, Patience::Bounded).unwrap(),
        Released::Deleted
    );
    assert!(!target.path.exists());
}

/// A claimant of this package, and something another process does between the claim's
/// judgement and its change: run when the claim asks for its record (after judging, before
/// the mutex).
#[cfg_attr(windows, allow(dead_code))]
struct Interrupted<F: FnMut()> {
    claimant: Enhanced,
    meanwhile: Option<F>,
}

impl<F: FnMut()> Claimant for Interrupted<F> {
    type Error = LockError;
    fn judge(
        &mut self,
        r: &ParsedRecord,
        owners: Option<&OwnerFile>,
    ) -> Result<Verdict, LockError> {
        self.claimant.judge(r, owners)
    }
    fn record(&mut self) -> Result<NewRecord, LockError> {
        if let Some(mut meanwhile) = self.meanwhile.take() {
            meanwhile();
        }
        self.claimant.record()
    }
}

#[cfg(unix)]
#[test]
fn an_original_claim_not_yet_written_is_not_taken_for_the_old_empty_file_it_replaced() {
    use std::os::unix::fs::MetadataExt;
    let dir = TempDir::new("proto-empty-replaced");
    let target = LockTarget::new(dir.path().join("h.lock"));
    // An old empty file: an original process killed between its create and its write.
    fs::write(&target.path, b"").unwrap();
    set_age(&target.path, Duration::from_secs(10));
    // Meanwhile an original process removes it and claims: its file is empty until written.
    let mut theirs = None;
    let mut claimant = Interrupted {
        claimant: enhanced("ours"),
        meanwhile: Some(|| {
            fs::remove_file(&target.path).unwrap();
            theirs = Some(File::create_new(&target.path).unwrap());
        }),
    };
    let outcome = try_claim(&target, &mut claimant, 60_000.0, None).unwrap();
    assert!(
        matches!(outcome, ClaimOutcome::Busy(Busy { holder: None, .. })),
        "a fresh empty claim is busy: {outcome:?}"
    );
    let theirs = theirs.expect("the other claim was made");
    let meta = theirs.metadata().unwrap();
    assert_eq!(meta.nlink(), 1, "their claim is still linked");
    assert_eq!(
        fs::symlink_metadata(&target.path).unwrap().ino(),
        meta.ino()
    );
}

#[cfg(unix)]
/// When an entry's inode last changed: a rename or link of it shows here.
fn ctime(path: &Path) -> (i64, i64) {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::symlink_metadata(path).unwrap();
    (meta.ctime(), meta.ctime_nsec())
}

#[test]
#[cfg_attr(
    not(kernel_locks),
    ignore = "needs byte locks owned by an open file (Linux OFD)"
)]
#[cfg(unix)]
fn a_sweep_leaves_alone_a_stale_entry_claimed_again_after_it_was_judged() {
    let dir = TempDir::new("proto-sweep-reclaimed");
    let target = LockTarget::new(dir.path().join("h.lock"));
    fs::write(&target.path, original_record("dead", false)).unwrap();
    let mut live = None;
    let mut judge = |r: &ParsedRecord, owners: Option<&OwnerFile>| {
        let verdict = enhanced_verdict(r, owners, now_ms(), 60_000.0);
        assert_eq!(verdict, Verdict::Stale(StaleReason::HolderDead));
        // Meanwhile another process reclaims it, and holds it.
        let c = claimed(claim(&target, "live"));
        let changed = ctime(&target.path);
        live = Some((c, changed));
        // Long enough for any rename or link of the entry to show in its ctime.
        std::thread::sleep(Duration::from_millis(30));
        Ok::<_, LockError>(verdict)
    };
    let got = reclaim_stale(&target.dir, &mut judge, 60_000.0).unwrap();
    assert!(got.is_empty(), "{got:?}");
    let (mut c, changed) = live.expect("judged once");
    assert_eq!(fs::read_to_string(&target.path).unwrap(), c.bytes);
    assert_eq!(
        ctime(&target.path),
        changed,
        "the live lockfile was never moved aside"
    );
    assert!(release(&mut c).unwrap());
}
