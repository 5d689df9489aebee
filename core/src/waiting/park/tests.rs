use super::*;
use crate::test_support::TempDir;

fn record(json: &str) -> ParsedRecord {
    ParsedRecord::parse(json.as_bytes()).expect("a record")
}

#[test]
fn no_holder_is_watched_behind_a_stuck_mutex_or_without_a_record() {
    let dir = Path::new("/locks");
    let stuck = Busy {
        holder: Some(record(r#"{"pid":1,"heartbeat":1,"goalId":"g"}"#)),
        mutex_stuck: true,
    };
    assert_eq!(holder_watch(dir, &stuck, false), None);
    assert_eq!(holder_watch(dir, &Busy::held_by(None), false), None);
}

#[test]
fn a_holder_of_the_original_is_watched_by_pid_unless_judged_by_callbacks() {
    let dir = Path::new("/locks");
    let busy = Busy::held_by(Some(record(
        r#"{"pid":4242,"heartbeat":1,"goalId":"g","acquiredAt":"x"}"#,
    )));
    assert_eq!(
        holder_watch(dir, &busy, false),
        Some(HolderWatch::Pid(4242))
    );
    assert_eq!(holder_watch(dir, &busy, true), None);
}

#[test]
fn a_holder_of_this_package_is_watched_by_its_byte_in_the_owner_file_it_names() {
    let me = crate::host::host_identity();
    let offset = 1_000_000_000_000_001u64;
    let json = format!(
        r#"{{"pid":4242,"heartbeat":1,"goalId":"g","host":"{}","bootId":"{}","pidNs":"{}","ownerLock":{offset},"ownerFile":"7:9"}}"#,
        me.hostname,
        me.boot_id.as_deref().unwrap_or(""),
        me.pid_namespace.as_deref().unwrap_or(""),
    );
    let watch = holder_watch(
        Path::new("/locks"),
        &Busy::held_by(Some(record(&json))),
        false,
    );
    assert_eq!(
        watch,
        Some(HolderWatch::KernelByte {
            owner_file: Path::new("/locks").join(OWNER_FILE_NAME),
            offset,
            owner_id: Some(crate::record::FileId { dev: 7, ino: 9 }),
        })
    );
}

#[test]
fn an_unreadable_entry_is_looked_at_again_soon() {
    let poll = Duration::from_millis(500);
    assert_eq!(fallback_wait(&Busy::held_by(None), poll), UNREADABLE_RELOOK);
    let held = Busy::held_by(Some(record(r#"{"pid":1,"heartbeat":1,"goalId":"g"}"#)));
    assert_eq!(fallback_wait(&held, poll), poll);
    assert_eq!(
        fallback_wait(&Busy::held_by(None), Duration::from_millis(5)),
        Duration::from_millis(5)
    );
}

#[test]
fn a_lock_changed_since_the_look_is_looked_at_again() {
    let dir = TempDir::new("park-still");
    let path = dir.path().join("h.lock");
    let json = r#"{"pid":1,"heartbeat":1,"goalId":"g"}"#;
    std::fs::write(&path, json).unwrap();
    assert!(still_as_found(&path, Some(&record(json))));
    let other = r#"{"pid":2,"heartbeat":1,"goalId":"h"}"#;
    assert!(!still_as_found(&path, Some(&record(other))));
    std::fs::remove_file(&path).unwrap();
    assert!(!still_as_found(&path, Some(&record(json))));
    std::fs::write(&path, "").unwrap();
    assert!(still_as_found(&path, None));
}
