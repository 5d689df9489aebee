//! Is a lock's holder still there? Two judges:
//! - the original's, exactly (`pid_recycled`, then `heartbeat_stale`), used whenever the
//!   caller injects a start-time resolver or a clock, because then those own the truth;
//! - this package's, used with the default resolver and clock: a holder of this package is
//!   alive exactly while it holds its kernel lock (no pid needed, containers included); a
//!   holder written by the original is judged by its pid (gone, zombie, recycled); a holder
//!   on another host only by its heartbeat.

use crate::host::{locality_of, Locality};
use crate::js_semantics::{strict_equals_number, template_string};
use crate::kernel_lock::{HolderSlot, OwnerFile, SlotState};
use crate::process_probe::{probe_pid, start_time_of, PidProbe, PidState};
use crate::record::ParsedRecord;
use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StaleReason {
    /// The pid now belongs to another process (start times differ).
    PidRecycled,
    /// The heartbeat is older than `heartbeatStaleMs`.
    HeartbeatStale,
    /// The holder has died (its kernel lock is gone, or its pid is gone or a zombie).
    HolderDead,
    /// Not a lock record (empty, unparsable, malformed, not a file) and not fresh.
    Corrupt,
}

impl StaleReason {
    pub fn as_str(self) -> &'static str {
        match self {
            StaleReason::PidRecycled => "pid_recycled",
            StaleReason::HeartbeatStale => "heartbeat_stale",
            StaleReason::HolderDead => "holder_dead",
            StaleReason::Corrupt => "corrupt",
        }
    }
}

impl fmt::Display for StaleReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Live,
    Stale(StaleReason),
    /// A parsed record this judge cannot read (no numeric heartbeat): judged like an
    /// unreadable file, by its age.
    Malformed,
}

/// The original `isLockStale`. `now` has already been read (the original evaluates `now()`
/// before calling it); `resolve` is called only when the record has a `startTime`.
pub fn original_verdict<E>(
    record: &ParsedRecord,
    resolve: &mut dyn FnMut(&ParsedRecord) -> Result<Option<f64>, E>,
    now: f64,
    heartbeat_stale_ms: f64,
) -> Result<Verdict, E> {
    if record.start_time().is_some() {
        if let Some(current) = resolve(record)? {
            if !strict_equals_number(record.start_time(), current) {
                return Ok(Verdict::Stale(StaleReason::PidRecycled));
            }
        }
    }
    // NaN (missing or non-numeric heartbeat) compares false: live, as in the original.
    if now - record.heartbeat() > heartbeat_stale_ms {
        return Ok(Verdict::Stale(StaleReason::HeartbeatStale));
    }
    Ok(Verdict::Live)
}

/// Whether a process of the original module could judge this previous holder stale too,
/// now, and so be between its judgement and its unlink-and-create while we take the lock
/// over: an old or missing heartbeat, a pid now another process's, or no record at all.
/// A holder found dead by its kernel lock or its pid, with a fresh heartbeat and its pid
/// unused, still looks alive to the original: no race then.
pub fn original_may_also_reclaim(previous: Option<&ParsedRecord>, now: f64, stale_ms: f64) -> bool {
    let Some(record) = previous else {
        return true;
    };
    let heartbeat = record.heartbeat();
    if heartbeat.is_nan() || now - heartbeat > stale_ms {
        return true;
    }
    record.start_time().is_some()
        && start_time_of(&template_string(record.pid()))
            .is_some_and(|current| !strict_equals_number(record.start_time(), current))
}

/// What a verdict of this package's judge rests on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evidence {
    /// The holder's kernel lock (held: alive; free: dead).
    KernelLock,
    /// The holder's pid in our PID namespace (exists or not, start time).
    Pid,
    /// Only the heartbeat (a holder on another host, or nothing better to go on).
    Heartbeat,
}

impl Evidence {
    pub fn as_str(self) -> &'static str {
        match self {
            Evidence::KernelLock => "kernel_lock",
            Evidence::Pid => "pid",
            Evidence::Heartbeat => "heartbeat",
        }
    }
}

/// Pid probes remembered for the length of one judging pass (a sweep of many lockfiles of
/// the same holders looks each pid up once); never kept longer, since pids change.
#[derive(Debug, Default)]
pub struct PidProbes {
    seen: RefCell<HashMap<i32, PidProbe>>,
}

impl PidProbes {
    pub fn probe(&self, pid: i32) -> PidProbe {
        *self
            .seen
            .borrow_mut()
            .entry(pid)
            .or_insert_with(|| probe_pid(pid))
    }
}

/// What the holder's kernel byte says.
enum ByteEvidence {
    Held,
    Free,
    /// The owner file here is not the one the record names (the holder's was deleted, and
    /// perhaps made anew): its byte says nothing about this holder.
    NotTheHolders,
    /// Locks cannot be tested here.
    Unknown,
}

fn holder_byte(record: &ParsedRecord, owners: Option<&OwnerFile>, offset: u64) -> ByteEvidence {
    let named = record.owner_file();
    let Some(owners) = owners else {
        // No owner file: nobody holds a kernel lock in this directory; unless the record
        // names one, which someone deleted under its live holder.
        return match named {
            None => ByteEvidence::Free,
            Some(_) => ByteEvidence::NotTheHolders,
        };
    };
    match owners.probe(offset) {
        Ok(SlotState::Held) => ByteEvidence::Held,
        // A free byte in another file than the holder's proves nothing. Asked only here, so
        // judging a live holder costs no fstat.
        Ok(SlotState::Free) => match named {
            Some(id) if id.is_none() || id != owners.id() => ByteEvidence::NotTheHolders,
            _ => ByteEvidence::Free,
        },
        Err(_) => ByteEvidence::Unknown,
    }
}

/// This package's judge, for the default resolver and clock. `owners` is the locks
/// directory's owner file if it exists (a holder's kernel lock lives there).
pub fn enhanced_verdict(
    record: &ParsedRecord,
    owners: Option<&OwnerFile>,
    now: f64,
    heartbeat_stale_ms: f64,
) -> Verdict {
    enhanced_judgement(
        record,
        owners,
        now,
        heartbeat_stale_ms,
        &PidProbes::default(),
    )
    .0
}

/// `enhanced_verdict`, and what it rests on.
pub fn enhanced_judgement(
    record: &ParsedRecord,
    owners: Option<&OwnerFile>,
    now: f64,
    heartbeat_stale_ms: f64,
    probes: &PidProbes,
) -> (Verdict, Evidence) {
    let heartbeat = record.heartbeat();
    if heartbeat.is_nan() {
        return (Verdict::Malformed, Evidence::Heartbeat);
    }
    let mut evidence = Evidence::Heartbeat;
    let locality = locality_of(record);
    let byte = match (record.owner_lock(), locality) {
        (Some(offset), Locality::SamePidNamespace | Locality::SameKernel)
            if HolderSlot::is_valid(offset) =>
        {
            Some(holder_byte(record, owners, offset))
        }
        _ => None,
    };
    match (byte, locality) {
        (Some(ByteEvidence::Free), _) => {
            return (
                Verdict::Stale(StaleReason::HolderDead),
                Evidence::KernelLock,
            )
        }
        // Proof of life outranks the clock: a held byte is a running (or stopped) holder,
        // whatever its heartbeat says. A wall-clock step, a full disk that stops its
        // refreshes or a SIGSTOP must not let anyone evict it.
        (Some(ByteEvidence::Held), _) => return (Verdict::Live, Evidence::KernelLock),
        // Cannot tell (locks unsupported here): the heartbeat decides.
        (Some(ByteEvidence::Unknown), _) => {}
        // No byte to go on, or none that counts (the holder's owner file is gone): its pid
        // in our namespace, else its heartbeat.
        (None | Some(ByteEvidence::NotTheHolders), Locality::SamePidNamespace) => {
            if let Some(pid) = record.probeable_pid() {
                evidence = Evidence::Pid;
                let probe = probes.probe(pid);
                if probe.state == PidState::Dead {
                    return (Verdict::Stale(StaleReason::HolderDead), evidence);
                }
                if record.start_time().is_some() {
                    if let Some(current) = probe.start_time {
                        if !strict_equals_number(record.start_time(), current) {
                            return (Verdict::Stale(StaleReason::PidRecycled), evidence);
                        }
                        // A record of this package whose writer still runs (same pid, same
                        // start time) is alive too, though no byte proves it: its owner
                        // file was deleted or replaced under it. Records of the original
                        // keep the original's heartbeat rule: it never refreshes them.
                        if record.has_host_fields() {
                            return (Verdict::Live, evidence);
                        }
                    }
                } else if let Some(recorded) = record.process_start() {
                    // The same for this package's records where start times are not the
                    // original's to write (macOS, Windows): its `procStart`.
                    if let Some(current) = crate::sys::process_start(pid) {
                        if current != recorded {
                            return (Verdict::Stale(StaleReason::PidRecycled), evidence);
                        }
                        return (Verdict::Live, evidence);
                    }
                }
            }
        }
        _ => {}
    }
    if now - heartbeat > heartbeat_stale_ms {
        return (
            Verdict::Stale(StaleReason::HeartbeatStale),
            Evidence::Heartbeat,
        );
    }
    (Verdict::Live, evidence)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::host_identity;
    use crate::kernel_lock::OwnerFile;
    use crate::process_probe::start_time_of;
    use crate::record::FileId;
    use crate::test_support::TempDir;

    fn rec(json: &str) -> ParsedRecord {
        ParsedRecord::parse(json.as_bytes()).unwrap()
    }

    fn never(_: &ParsedRecord) -> Result<Option<f64>, ()> {
        panic!("resolver must not be called")
    }

    #[test]
    fn original_judge_detects_recycled_pids() {
        let r = rec(r#"{"pid":12345,"startTime":1000,"heartbeat":5000000}"#);
        let mut same = |_: &ParsedRecord| Ok::<_, ()>(Some(1000.0));
        let mut other = |_: &ParsedRecord| Ok::<_, ()>(Some(2000.0));
        let mut gone = |_: &ParsedRecord| Ok::<_, ()>(None);
        assert_eq!(
            original_verdict(&r, &mut same, 5_000_000.0, 60_000.0),
            Ok(Verdict::Live)
        );
        assert_eq!(
            original_verdict(&r, &mut other, 5_000_000.0, 60_000.0),
            Ok(Verdict::Stale(StaleReason::PidRecycled))
        );
        assert_eq!(
            original_verdict(&r, &mut gone, 5_000_000.0, 60_000.0),
            Ok(Verdict::Live)
        );
    }

    #[test]
    fn original_judge_detects_old_heartbeats_strictly_after_the_threshold() {
        let r = rec(r#"{"pid":1,"heartbeat":1000}"#);
        assert_eq!(
            original_verdict(&r, &mut never, 61_000.0, 60_000.0),
            Ok(Verdict::Live)
        );
        assert_eq!(
            original_verdict(&r, &mut never, 61_001.0, 60_000.0),
            Ok(Verdict::Stale(StaleReason::HeartbeatStale))
        );
    }

    #[test]
    fn original_judge_keeps_the_originals_quirks() {
        // No heartbeat: NaN comparisons are false, so the original calls it live.
        assert_eq!(
            original_verdict(&rec("{}"), &mut never, 1e13, 1.0),
            Ok(Verdict::Live)
        );
        // A null startTime is defined: the resolver is asked and any number differs.
        let r = rec(r#"{"pid":1,"startTime":null,"heartbeat":0}"#);
        let mut some = |_: &ParsedRecord| Ok::<_, ()>(Some(5.0));
        assert_eq!(
            original_verdict(&r, &mut some, 0.0, 1.0),
            Ok(Verdict::Stale(StaleReason::PidRecycled))
        );
        // A resolver's failure is the caller's error, unchanged.
        let mut failing = |_: &ParsedRecord| Err::<Option<f64>, _>("boom");
        let r = rec(r#"{"pid":1,"startTime":3,"heartbeat":0}"#);
        assert_eq!(original_verdict(&r, &mut failing, 0.0, 1.0), Err("boom"));
    }

    #[test]
    #[cfg_attr(
        not(kernel_locks),
        ignore = "needs byte locks owned by an open file (Linux OFD)"
    )]
    fn enhanced_judge_trusts_the_kernel_lock_over_the_pid() {
        let dir = TempDir::new("liveness-kernel");
        let holder = OwnerFile::open(dir.path(), true).unwrap().unwrap();
        let judge = OwnerFile::open(dir.path(), true).unwrap().unwrap();
        let slot = HolderSlot::random();
        assert!(holder.try_hold(slot).unwrap());
        let me = host_identity();
        let json = format!(
            r#"{{"pid":999999999,"heartbeat":1000,"host":"{}","bootId":"{}","pidNs":"{}","ownerLock":{}}}"#,
            me.hostname,
            me.boot_id.clone().unwrap_or_default(),
            me.pid_namespace.clone().unwrap_or_default(),
            slot.0
        );
        let r = rec(&json);
        // A fake pid does not matter while the kernel lock is held.
        assert_eq!(
            enhanced_verdict(&r, Some(&judge), 1500.0, 60_000.0),
            Verdict::Live
        );
        // Nor does an old heartbeat (a stopped holder, a full disk, a wall-clock step):
        // the held byte proves the holder alive.
        assert_eq!(
            enhanced_judgement(&r, Some(&judge), 70_000.0, 60_000.0, &PidProbes::default()),
            (Verdict::Live, Evidence::KernelLock)
        );
        assert_eq!(enhanced_verdict(&r, Some(&judge), 1e13, 1.0), Verdict::Live);
        drop(holder);
        assert_eq!(
            enhanced_verdict(&r, Some(&judge), 1500.0, 60_000.0),
            Verdict::Stale(StaleReason::HolderDead)
        );
        assert_eq!(
            enhanced_verdict(&r, None, 1500.0, 60_000.0),
            Verdict::Stale(StaleReason::HolderDead)
        );
    }

    #[test]
    #[cfg_attr(
        not(all(kernel_locks, target_os = "linux")),
        ignore = "needs byte locks owned by an open file and start times from /proc (Linux)"
    )]
    fn enhanced_judge_counts_the_byte_only_in_the_owner_file_the_record_names() {
        let dir = TempDir::new("liveness-owner-file");
        let holder = OwnerFile::open(dir.path(), true).unwrap().unwrap();
        let slot = HolderSlot::random();
        assert!(holder.try_hold(slot).unwrap());
        let me = host_identity();
        let pid = std::process::id();
        let st = start_time_of(&pid.to_string()).unwrap();
        let record = |pid: u32, pid_ns: &str, owner_file: &str| {
            rec(&format!(
                r#"{{"pid":{pid},"startTime":{st},"heartbeat":1000,"host":"{}","bootId":"{}","pidNs":"{pid_ns}","ownerLock":{},"ownerFile":{owner_file}}}"#,
                me.hostname,
                me.boot_id.clone().unwrap_or_default(),
                slot.0
            ))
        };
        let our_ns = me.pid_namespace.clone().unwrap_or_default();
        let name = |id: FileId| format!("\"{}:{}\"", id.dev, id.ino);
        let named = name(holder.id().unwrap());
        let judge = |r: &ParsedRecord, owners: Option<&OwnerFile>, now: f64| {
            enhanced_judgement(r, owners, now, 60_000.0, &PidProbes::default())
        };
        let live = record(pid, &our_ns, &named);
        let in_file = OwnerFile::open(dir.path(), false).unwrap().unwrap();
        assert_eq!(
            judge(&live, Some(&in_file), 2000.0),
            (Verdict::Live, Evidence::KernelLock)
        );
        // Someone deletes the owner file under its live holder ...
        crate::test_support::delete_owners(&dir.path().join(crate::kernel_lock::OWNER_FILE_NAME));
        assert_eq!(judge(&live, None, 2000.0), (Verdict::Live, Evidence::Pid));
        // Its writer still runs (same pid and start time): alive whatever its heartbeat.
        assert_eq!(judge(&live, None, 1e13), (Verdict::Live, Evidence::Pid));
        // ... and another claim makes a new one, where that byte is free: not a death.
        let anew = OwnerFile::open(dir.path(), true).unwrap().unwrap();
        assert_eq!(
            judge(&live, Some(&anew), 2000.0),
            (Verdict::Live, Evidence::Pid)
        );
        // The pid still tells a dead holder, and the heartbeat one in another PID namespace.
        let dead = record(999_999_999, &our_ns, &named);
        assert_eq!(
            judge(&dead, Some(&anew), 2000.0),
            (Verdict::Stale(StaleReason::HolderDead), Evidence::Pid)
        );
        let contained = record(999_999_999, "another-ns", &named);
        assert_eq!(judge(&contained, Some(&anew), 2000.0).0, Verdict::Live);
        assert_eq!(
            judge(&contained, Some(&anew), 62_000.0).0,
            Verdict::Stale(StaleReason::HeartbeatStale)
        );
        // A record naming the file its byte is free in: dead, by the kernel lock.
        let anew_id = anew.id().unwrap();
        let in_anew = record(pid, &our_ns, &name(anew_id));
        assert_eq!(
            judge(&in_anew, Some(&anew), 2000.0),
            (
                Verdict::Stale(StaleReason::HolderDead),
                Evidence::KernelLock
            )
        );
        // The same inode number on another device is another file.
        let other_device = FileId {
            dev: anew_id.dev ^ 1,
            ..anew_id
        };
        assert_eq!(
            judge(
                &record(pid, &our_ns, &name(other_device)),
                Some(&anew),
                2000.0
            ),
            (Verdict::Live, Evidence::Pid)
        );
        // Named unreadably (or as an inode number alone): no file's byte counts.
        let unreadable = record(pid, &our_ns, "\"x\"");
        assert_eq!(
            judge(&unreadable, Some(&anew), 2000.0),
            (Verdict::Live, Evidence::Pid)
        );
        let unreadable = record(pid, &our_ns, &format!("\"{}\"", anew_id.ino));
        assert_eq!(
            judge(&unreadable, Some(&anew), 2000.0),
            (Verdict::Live, Evidence::Pid)
        );
        drop(holder);
    }

    #[test]
    #[cfg_attr(not(target_os = "linux"), ignore = "needs start times from /proc")]
    fn enhanced_judge_uses_pids_for_records_of_the_original() {
        let me = std::process::id();
        let st = start_time_of(&me.to_string()).unwrap();
        let alive = rec(&format!(
            r#"{{"pid":{me},"startTime":{st},"heartbeat":1000}}"#
        ));
        assert_eq!(
            enhanced_verdict(&alive, None, 2000.0, 60_000.0),
            Verdict::Live
        );
        let recycled = rec(&format!(
            r#"{{"pid":{me},"startTime":{},"heartbeat":1000}}"#,
            st + 10.0
        ));
        assert_eq!(
            enhanced_verdict(&recycled, None, 2000.0, 60_000.0),
            Verdict::Stale(StaleReason::PidRecycled)
        );
        let dead = rec(r#"{"pid":999999999,"startTime":5,"heartbeat":1000}"#);
        assert_eq!(
            enhanced_verdict(&dead, None, 2000.0, 60_000.0),
            Verdict::Stale(StaleReason::HolderDead)
        );
        assert_eq!(
            enhanced_verdict(&rec(r#"{"pid":1}"#), None, 0.0, 1.0),
            Verdict::Malformed
        );
    }

    /// This package's records where start times are not the original's (macOS, Windows)
    /// carry `procStart`: with no kernel lock to go on, a holder whose pid still runs the
    /// same process is alive whatever its heartbeat, and a reused pid is told apart.
    #[test]
    fn enhanced_judge_tells_a_reused_pid_by_its_process_start() {
        let me = host_identity();
        let pid = std::process::id();
        let started = crate::sys::process_start(pid as i32).expect("this process's start");
        assert_eq!(
            crate::sys::process_start(pid as i32),
            Some(started),
            "stable"
        );
        let ours = |start: u64| {
            rec(&format!(
                r#"{{"pid":{pid},"heartbeat":1000,"goalId":"g","host":{host},"pidNs":{ns},"procStart":"{start}"}}"#,
                host = serde_json::Value::from(me.hostname.as_str()),
                ns = serde_json::Value::from(me.pid_namespace.clone()),
            ))
        };
        let judge =
            |r: &ParsedRecord| enhanced_judgement(r, None, 1e13, 60_000.0, &PidProbes::default());
        assert_eq!(judge(&ours(started)), (Verdict::Live, Evidence::Pid));
        assert_eq!(
            judge(&ours(started + 1)),
            (Verdict::Stale(StaleReason::PidRecycled), Evidence::Pid)
        );
    }

    #[test]
    #[cfg_attr(not(target_os = "linux"), ignore = "needs start times from /proc")]
    fn the_original_races_a_takeover_only_of_what_it_too_judges_stale() {
        let me = std::process::id();
        let st = start_time_of(&me.to_string()).unwrap();
        let now = 100_000.0;
        // Dead by its kernel lock, fresh heartbeat, pid unused: live to the original.
        let fresh = rec(r#"{"pid":999999999,"startTime":5,"heartbeat":99000}"#);
        assert!(!original_may_also_reclaim(Some(&fresh), now, 60_000.0));
        // An old heartbeat, a missing one, no record: the original may be reclaiming too.
        let old = rec(r#"{"pid":999999999,"startTime":5,"heartbeat":1000}"#);
        assert!(original_may_also_reclaim(Some(&old), now, 60_000.0));
        assert!(original_may_also_reclaim(
            Some(&rec(r#"{"pid":1}"#)),
            now,
            60_000.0
        ));
        assert!(original_may_also_reclaim(None, now, 60_000.0));
        // The pid now another process's (start times differ): pid_recycled to the original.
        let recycled = rec(&format!(
            r#"{{"pid":{me},"startTime":{},"heartbeat":99000}}"#,
            st + 10.0
        ));
        assert!(original_may_also_reclaim(Some(&recycled), now, 60_000.0));
        let same = rec(&format!(
            r#"{{"pid":{me},"startTime":{st},"heartbeat":99000}}"#
        ));
        assert!(!original_may_also_reclaim(Some(&same), now, 60_000.0));
    }

    #[test]
    fn enhanced_judge_uses_only_the_heartbeat_for_other_hosts() {
        let r = rec(
            r#"{"pid":999999999,"heartbeat":1000,"host":"far","bootId":"another-boot","pidNs":"1","ownerLock":281474976710657}"#,
        );
        assert_eq!(enhanced_verdict(&r, None, 2000.0, 60_000.0), Verdict::Live);
        assert_eq!(
            enhanced_verdict(&r, None, 62_000.0, 60_000.0),
            Verdict::Stale(StaleReason::HeartbeatStale)
        );
    }
}
