use super::*;
use crate::error::IoFailure;
use crate::liveness::StaleReason;
use crate::test_support::TempDir;

fn record(json: &str) -> ParsedRecord {
    ParsedRecord::parse(json.as_bytes()).expect("a record")
}

fn waiter(dir: &TempDir, order: u64) -> WaitingAcquisition {
    WaitingAcquisition {
        lock_path: dir.path().join("w.lock"),
        locks_dir: dir.path().to_path_buf(),
        poll: Duration::from_millis(500),
        injected: false,
        heartbeat_stale_ms: 60_000.0,
        order,
    }
}

fn io(errno: i32) -> LockError {
    LockError::Io(IoFailure {
        errno,
        syscall: "open",
        path: PathBuf::from("/x"),
    })
}

#[test]
fn a_waiter_woken_by_an_event_lets_the_earlier_ones_of_its_process_go_first() {
    let dir = TempDir::new("turns-line");
    let path = dir.path().join("w.lock");
    let first = LinePlace::join(&path, 1_000_001);
    let mut second = LinePlace::join(&path, 1_000_002);
    let poll = Duration::from_secs(3600);
    assert_eq!(turn(WakeReason::Changed, &first, poll), Turn::Look);
    // Behind: at most HEAD_PATIENCE, or pollMs if shorter.
    assert_eq!(
        turn(WakeReason::Changed, &second, poll),
        Turn::WaitBehind(HEAD_PATIENCE)
    );
    assert_eq!(
        turn(WakeReason::HolderGone, &second, Duration::from_millis(10)),
        Turn::WaitBehind(Duration::from_millis(10))
    );
    // A deadline looks anyway: a blocked earlier waiter holds nobody up.
    assert_eq!(turn(WakeReason::Deadline, &second, poll), Turn::Look);
    // A new acquisition joins the line while anyone waits, unless it is a try-lock.
    assert!(joins_the_line(&path, false));
    assert!(!joins_the_line(&path, true));
    assert_eq!(
        waiter(&dir, 1_000_002).first_wait(&second, &Busy::held_by(None)),
        FirstWait::Behind(Duration::from_millis(500))
    );
    drop(first);
    assert_eq!(turn(WakeReason::Changed, &second, poll), Turn::Look);
    second.leave();
    assert!(!joins_the_line(&path, false), "the line is empty again");
}

#[test]
fn a_takeover_settles_only_where_the_original_could_race_it() {
    let now = 1_000_000.0;
    let reclaim = |json: Option<&str>| Reclaim {
        reason: StaleReason::HeartbeatStale,
        previous: json.map(record),
    };
    let old = reclaim(Some(r#"{"pid":1,"heartbeat":1,"goalId":"g"}"#));
    let unreadable = reclaim(None);
    let fresh_but_dead = reclaim(Some(&format!(
        r#"{{"pid":1,"heartbeat":{},"goalId":"g"}}"#,
        now - 10.0
    )));
    // An old heartbeat or no record: the original may be reclaiming it right now.
    assert!(must_settle(Some(&old), false, 60_000.0, now));
    assert!(must_settle(Some(&unreadable), false, 60_000.0, now));
    // A fresh heartbeat (the holder found dead by its kernel lock): the original sees it
    // alive, no race.
    assert!(!must_settle(Some(&fresh_but_dead), false, 60_000.0, now));
    // A free lock, or an acquisition that judges by callbacks of its own (as the original).
    assert!(!must_settle(None, false, 60_000.0, now));
    assert!(!must_settle(Some(&old), true, 60_000.0, now));
}

#[test]
fn only_failures_of_the_moment_keep_a_wait_going() {
    let poll = Duration::from_secs(1);
    for errno in [libc::EMFILE, libc::ENFILE, libc::ENOMEM] {
        assert_eq!(relook_after(&io(errno), poll), Some(TRANSIENT_RELOOK));
    }
    assert_eq!(
        relook_after(&io(libc::EMFILE), Duration::from_millis(5)),
        Some(Duration::from_millis(5)),
        "never later than pollMs"
    );
    for errno in [libc::EACCES, libc::EISDIR, libc::ENOSPC] {
        assert_eq!(relook_after(&io(errno), poll), None);
    }
}

#[test]
fn a_wait_for_the_lock_looks_again_only_if_the_lock_changed_since_the_look() {
    let dir = TempDir::new("turns-changed");
    let w = waiter(&dir, 7);
    let holder = record(r#"{"pid":1,"heartbeat":1,"goalId":"a"}"#);
    let busy = Busy::held_by(Some(holder.clone()));
    std::fs::write(&w.lock_path, r#"{"pid":1,"heartbeat":1,"goalId":"a"}"#).unwrap();
    let spec = w.for_the_lock(&busy, None);
    assert_eq!(spec.order, 7);
    assert_eq!(spec.judging, Some(60_000f64.to_bits()));
    assert!(!w.changed_since_look(&busy, None), "still as found");
    std::fs::remove_file(&w.lock_path).unwrap();
    assert!(w.changed_since_look(&busy, None), "released meanwhile");
    // A paused waiter, or one stuck behind a mutex, does not look again for it.
    assert!(!w.changed_since_look(&busy, Some(LOST_RACE_PAUSE)));
    let stuck = Busy {
        holder: Some(holder),
        mutex_stuck: true,
    };
    assert!(!w.changed_since_look(&stuck, None));
    // An injected judge shares no looks; a settling claim waits on a timer alone.
    let injected = WaitingAcquisition {
        injected: true,
        ..w.clone()
    };
    assert_eq!(injected.behind(Duration::from_secs(1)).judging, None);
    let until = Instant::now() + SETTLE;
    let settling = w.settling(until);
    assert_eq!(settling.deadline, until);
    assert!(settling.holder.is_none() && settling.judging.is_none());
    assert!(settling.pause.is_some_and(|p| p <= SETTLE));
}
