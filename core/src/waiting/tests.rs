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
#[cfg_attr(not(dir_watch), ignore = "needs directory-change events (inotify)")]
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
#[cfg_attr(not(dir_watch), ignore = "needs directory-change events (inotify)")]
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
#[cfg_attr(not(dir_watch), ignore = "needs directory-change events (inotify)")]
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
#[cfg_attr(
    not(kernel_locks),
    ignore = "needs byte locks owned by an open file (Linux OFD)"
)]
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
#[cfg_attr(
    not(kernel_locks),
    ignore = "needs byte locks owned by an open file (Linux OFD)"
)]
fn a_holder_letting_go_of_its_kernel_byte_wakes_the_waiter() {
    let dir = TempDir::new("wait-byte");
    let (holder, rx) = wait_on_a_kernel_byte(&dir, None);
    assert!(rx.recv_timeout(Duration::from_millis(100)).is_err());
    drop(holder); // as at the holder's death
    woken(&rx, WakeReason::HolderGone);
}

#[test]
#[cfg_attr(windows, ignore = "spawns the Unix `sleep`")]
#[cfg_attr(not(pid_watch), ignore = "needs process-exit handles (pidfd)")]
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
#[cfg_attr(not(dir_watch), ignore = "needs directory-change events (inotify)")]
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
#[cfg_attr(not(pid_watch), ignore = "needs process-exit handles (pidfd)")]
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
#[cfg_attr(windows, ignore = "spawns the Unix `true`")]
#[cfg_attr(not(pid_watch), ignore = "needs process-exit handles (pidfd)")]
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
#[cfg_attr(
    windows,
    ignore = "Wine keeps a deleted directory's name while a handle on it is open"
)]
#[cfg_attr(not(dir_watch), ignore = "needs directory-change events (inotify)")]
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
