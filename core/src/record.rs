//! The lockfile's bytes: what this package writes (exactly `JSON.stringify` of the original's
//! five fields, then this package's own fields) and how any lockfile is read back.

use crate::js_semantics::{json_string, number_to_js_string, strict_equals_number, to_number};
use serde_json::{Map, Value};

/// Where the holder runs, so that pid judgements are made only about holders that share our
/// kernel boot and PID namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostIdentity {
    pub hostname: String,
    /// `/proc/sys/kernel/random/boot_id`: the same for every container on one kernel boot.
    pub boot_id: Option<String>,
    /// The inode of `/proc/self/ns/pid`.
    pub pid_namespace: Option<String>,
    /// This process: its pid, and when it started where the original's start times are
    /// `undefined` (macOS, Windows; see `sys::process_start`). Written as `procStart` in a
    /// record whose pid is this one, so that a pid reused by another process is told apart
    /// there too.
    pub process: Option<(u32, u64)>,
}

/// A file's identity: its device and inode numbers, unique among the files that exist (an
/// open file keeps both numbers from being reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

impl FileId {
    /// The identity of the file a path's metadata describes (Unix: its device and inode).
    #[cfg(unix)]
    pub fn of(meta: &std::fs::Metadata) -> FileId {
        FileId::of_open_or_not(None, meta)
    }

    /// The identity of an open file (Windows: its volume serial and file index, which only
    /// a handle gives).
    pub fn of_open(file: &std::fs::File, meta: &std::fs::Metadata) -> FileId {
        FileId::of_open_or_not(Some(file), meta)
    }

    fn of_open_or_not(file: Option<&std::fs::File>, meta: &std::fs::Metadata) -> FileId {
        let (dev, ino) = crate::sys::file_key(file, meta);
        FileId { dev, ino }
    }
}

/// The fields of a record this package writes.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRecord {
    pub pid: f64,
    pub start_time: Option<f64>,
    pub heartbeat: f64,
    pub goal_id: String,
    pub acquired_at: String,
    pub host: HostIdentity,
    /// The byte offset of the holder's kernel lock in the locks directory's owner file;
    /// `None` where the file system has no such locks.
    pub owner_lock: Option<u64>,
    /// That owner file: its byte is evidence only in that very file (not in one made anew
    /// after the holder's was deleted, nor in one on another file system).
    pub owner_file: Option<FileId>,
    /// A lock backend's fields (`"backend":…,"fencingToken":…`), already JSON, written
    /// last; `None` for the file lock alone.
    pub backend: Option<String>,
}

impl NewRecord {
    /// `JSON.stringify({pid, startTime, heartbeat, goalId, acquiredAt})`, then our fields
    /// (old readers ignore them).
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(256);
        out.push_str("{\"pid\":");
        out.push_str(&number_to_js_string(self.pid));
        if let Some(st) = self.start_time {
            out.push_str(",\"startTime\":");
            out.push_str(&number_to_js_string(st));
        }
        out.push_str(",\"heartbeat\":");
        out.push_str(&number_to_js_string(self.heartbeat));
        out.push_str(",\"goalId\":");
        out.push_str(&json_string(&self.goal_id));
        out.push_str(",\"acquiredAt\":");
        out.push_str(&json_string(&self.acquired_at));
        out.push_str(",\"host\":");
        out.push_str(&json_string(&self.host.hostname));
        if let Some(boot) = &self.host.boot_id {
            out.push_str(",\"bootId\":");
            out.push_str(&json_string(boot));
        }
        if let Some(ns) = &self.host.pid_namespace {
            out.push_str(",\"pidNs\":");
            out.push_str(&json_string(ns));
        }
        if let Some((pid, start)) = self.host.process {
            // Only about this process (an injected `opts.pid` names another one). A string:
            // it may exceed what a JavaScript number holds exactly.
            if self.pid == f64::from(pid) {
                out.push_str(",\"procStart\":\"");
                out.push_str(&start.to_string());
                out.push('"');
            }
        }
        if let Some(offset) = self.owner_lock {
            out.push_str(",\"ownerLock\":");
            out.push_str(&offset.to_string());
        }
        if let Some(id) = self.owner_file {
            // A string, `<dev>:<ino>`: both may exceed what a JavaScript number holds exactly.
            out.push_str(",\"ownerFile\":\"");
            out.push_str(&id.dev.to_string());
            out.push(':');
            out.push_str(&id.ino.to_string());
            out.push('"');
        }
        if let Some(fields) = self.backend.as_deref().filter(|f| !f.is_empty()) {
            out.push(',');
            out.push_str(fields);
        }
        out.push('}');
        out
    }
}

/// A lockfile as read back: the parsed JSON object, read with the original's loose
/// semantics (`JSON.parse`, then any object or array counts).
#[derive(Debug, Clone)]
pub struct ParsedRecord {
    /// In the file's order, a duplicate key's last value at its first place, as `JSON.parse`
    /// builds an object. A list: a record has about ten fields, and a list hashes nothing.
    fields: Vec<(String, Value)>,
}

/// The same fields, in any order (as two JavaScript objects compared field by field).
impl PartialEq for ParsedRecord {
    fn eq(&self, other: &ParsedRecord) -> bool {
        self.same_fields_but(other, None)
    }
}

/// What `JSON.parse` of a lockfile gives, as far as the original's `readLock` cares.
enum TopLevel {
    Object(Vec<(String, Value)>),
    /// Arrays are objects to `typeof`; they have none of the fields.
    Array,
    Other,
}

impl<'de> serde::Deserialize<'de> for TopLevel {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<TopLevel, D::Error> {
        d.deserialize_any(TopLevelVisitor)
    }
}

struct TopLevelVisitor;

impl<'de> serde::de::Visitor<'de> for TopLevelVisitor {
    type Value = TopLevel;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<TopLevel, A::Error> {
        let mut fields: Vec<(String, Value)> = Vec::with_capacity(12);
        while let Some(key) = map.next_key::<String>()? {
            let value: Value = map.next_value()?;
            match fields.iter_mut().find(|(k, _)| *k == key) {
                Some((_, old)) => *old = value,
                None => fields.push((key, value)),
            }
        }
        Ok(TopLevel::Object(fields))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<TopLevel, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(TopLevel::Array)
    }

    fn visit_bool<E>(self, _: bool) -> Result<TopLevel, E> {
        Ok(TopLevel::Other)
    }
    fn visit_i64<E>(self, _: i64) -> Result<TopLevel, E> {
        Ok(TopLevel::Other)
    }
    fn visit_u64<E>(self, _: u64) -> Result<TopLevel, E> {
        Ok(TopLevel::Other)
    }
    fn visit_f64<E>(self, _: f64) -> Result<TopLevel, E> {
        Ok(TopLevel::Other)
    }
    fn visit_str<E>(self, _: &str) -> Result<TopLevel, E> {
        Ok(TopLevel::Other)
    }
    fn visit_unit<E>(self) -> Result<TopLevel, E> {
        Ok(TopLevel::Other)
    }
}

impl ParsedRecord {
    /// `JSON.parse` of the file read as UTF-8 (invalid bytes replaced, as Node does);
    /// `None` for what the original's `readLock` treats as missing/corrupt.
    pub fn parse(bytes: &[u8]) -> Option<ParsedRecord> {
        let parsed = match std::str::from_utf8(bytes) {
            Ok(text) => serde_json::from_str::<TopLevel>(text),
            Err(_) => serde_json::from_str::<TopLevel>(&String::from_utf8_lossy(bytes)),
        };
        match parsed.ok()? {
            TopLevel::Object(fields) => Some(ParsedRecord { fields }),
            TopLevel::Array => Some(ParsedRecord { fields: Vec::new() }),
            TopLevel::Other => None,
        }
    }

    /// Every field, as `JSON.parse` gave it, as a JSON object.
    pub fn to_object(&self) -> Value {
        Value::Object(self.fields.iter().cloned().collect::<Map<String, Value>>())
    }

    pub fn field(&self, name: &str) -> Option<&Value> {
        self.fields.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    pub fn pid(&self) -> Option<&Value> {
        self.field("pid")
    }

    /// `None` = the key is absent (`undefined`); `Some(Null)` is a defined `null`.
    pub fn start_time(&self) -> Option<&Value> {
        self.field("startTime")
    }

    pub fn goal_id(&self) -> Option<&Value> {
        self.field("goalId")
    }

    /// `Number(lock.heartbeat)` as the original's subtraction coerces it.
    pub fn heartbeat(&self) -> f64 {
        to_number(self.field("heartbeat"))
    }

    /// The pid as a process id we may probe: a positive integer that fits a pid_t.
    pub fn probeable_pid(&self) -> Option<i32> {
        let n = self.pid()?.as_f64()?;
        (n >= 1.0 && n <= f64::from(i32::MAX) && n.fract() == 0.0).then_some(n as i32)
    }

    /// When the writer started, as `sys::process_start` gives it (`procStart`, this
    /// package's records on macOS and Windows).
    pub fn process_start(&self) -> Option<u64> {
        self.field("procStart")?.as_str()?.parse().ok()
    }

    pub fn owner_lock(&self) -> Option<u64> {
        self.field("ownerLock")?.as_u64()
    }

    /// `Some(None)`: the record names an owner file, but not as this package writes it.
    pub fn owner_file(&self) -> Option<Option<FileId>> {
        let named = self.field("ownerFile")?;
        let parsed = named.as_str().and_then(|s| {
            let (dev, ino) = s.split_once(':')?;
            Some(FileId {
                dev: dev.parse().ok()?,
                ino: ino.parse().ok()?,
            })
        });
        Some(parsed)
    }

    pub fn boot_id(&self) -> Option<&str> {
        self.field("bootId")?.as_str()
    }

    pub fn pid_namespace(&self) -> Option<&str> {
        self.field("pidNs")?.as_str()
    }

    pub fn hostname(&self) -> Option<&str> {
        self.field("host")?.as_str()
    }

    /// Whether the record carries any of this package's host fields; records written by
    /// the original carry none and count as local.
    pub fn has_host_fields(&self) -> bool {
        self.hostname().is_some() || self.boot_id().is_some() || self.pid_namespace().is_some()
    }

    /// Whether both records are the same claim: equal in every field but the heartbeat,
    /// which a refresh rewrites.
    pub fn same_claim(&self, other: &ParsedRecord) -> bool {
        self.same_fields_but(other, Some("heartbeat"))
    }

    /// Equal in every field but `except`, in any order. Keys are unique in each record: as
    /// many fields, each found equal in the other, is equality.
    fn same_fields_but(&self, other: &ParsedRecord, except: Option<&str>) -> bool {
        let compared = |(k, _): &&(String, Value)| Some(k.as_str()) != except;
        self.fields.iter().filter(compared).count() == other.fields.iter().filter(compared).count()
            && self
                .fields
                .iter()
                .filter(compared)
                .all(|(k, v)| other.field(k) == Some(v))
    }

    /// The original's release guard (`goalId`, `pid` and `startTime` strictly equal), plus:
    /// a record of another handle of this package (another `ownerLock`) is not ours.
    pub fn is_held_by(
        &self,
        goal_id: &str,
        pid: f64,
        start_time: Option<f64>,
        owner_lock: Option<u64>,
    ) -> bool {
        let goal_matches = matches!(self.goal_id(), Some(Value::String(g)) if g == goal_id);
        let start_matches = match start_time {
            None => self.start_time().is_none(),
            Some(st) => strict_equals_number(self.start_time(), st),
        };
        let owner_matches = match (self.field("ownerLock"), owner_lock) {
            (None, _) => true,
            (Some(v), Some(ours)) => v.as_u64() == Some(ours),
            (Some(_), None) => false,
        };
        goal_matches && strict_equals_number(self.pid(), pid) && start_matches && owner_matches
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_process_start_is_written_only_about_this_process() {
        let mut r = record(None, Some(1_000_000_000_000_123));
        r.host.process = Some((12345, 987_654_321_012_345_678));
        let json = r.to_json();
        assert!(
            json.contains(r#""pidNs":"4026531836","procStart":"987654321012345678","ownerLock":"#),
            "{json}"
        );
        let parsed = ParsedRecord::parse(json.as_bytes()).expect("a record");
        assert_eq!(parsed.process_start(), Some(987_654_321_012_345_678));
        // An injected pid names another process: no start of ours for it.
        r.pid = 777.0;
        assert!(!r.to_json().contains("procStart"));
        r.host.process = None;
        r.pid = 12345.0;
        assert!(!r.to_json().contains("procStart"));
    }

    fn record(start_time: Option<f64>, owner_lock: Option<u64>) -> NewRecord {
        NewRecord {
            pid: 12345.0,
            start_time,
            heartbeat: 1_700_000_000_123.0,
            goal_id: "goal_a".into(),
            acquired_at: "2023-11-14T22:13:20.123Z".into(),
            host: HostIdentity {
                hostname: "box".into(),
                boot_id: Some("b-1".into()),
                pid_namespace: Some("4026531836".into()),
                process: None,
            },
            owner_lock,
            owner_file: owner_lock.map(|_| FileId {
                dev: 2049,
                ino: 18_446_744_073_709_551_557,
            }),
            backend: None,
        }
    }

    #[test]
    fn the_same_claim_differs_at_most_in_its_heartbeat() {
        let parse = |r: &NewRecord| ParsedRecord::parse(r.to_json().as_bytes()).unwrap();
        let claim = record(Some(1000.0), Some(281_474_976_710_700));
        let refreshed = NewRecord {
            heartbeat: claim.heartbeat + 15_000.0,
            ..claim.clone()
        };
        assert!(parse(&claim).same_claim(&parse(&refreshed)));
        // Another claim of the same process and goal: another holder byte, another time.
        let next = NewRecord {
            owner_lock: Some(281_474_976_710_701),
            ..claim.clone()
        };
        assert!(!parse(&claim).same_claim(&parse(&next)));
        let later = NewRecord {
            acquired_at: "2023-11-14T22:13:20.124Z".into(),
            ..claim.clone()
        };
        assert!(!parse(&claim).same_claim(&parse(&later)));
    }

    #[test]
    fn writes_the_original_five_fields_first_in_order() {
        let json = record(Some(1000.0), Some(281_474_976_710_700)).to_json();
        assert_eq!(
            json,
            "{\"pid\":12345,\"startTime\":1000,\"heartbeat\":1700000000123,\"goalId\":\"goal_a\",\
             \"acquiredAt\":\"2023-11-14T22:13:20.123Z\",\"host\":\"box\",\"bootId\":\"b-1\",\
             \"pidNs\":\"4026531836\",\"ownerLock\":281474976710700,\
             \"ownerFile\":\"2049:18446744073709551557\"}"
        );
    }

    #[test]
    fn reads_the_owner_file_back_exactly_and_tells_a_malformed_one() {
        let parse = |json: &str| ParsedRecord::parse(json.as_bytes()).unwrap();
        let ours = record(Some(1000.0), Some(281_474_976_710_700)).to_json();
        let id = FileId {
            dev: 2049,
            ino: 18_446_744_073_709_551_557,
        };
        assert_eq!(parse(&ours).owner_file(), Some(Some(id)));
        assert_eq!(parse(r#"{"pid":1}"#).owner_file(), None);
        for malformed in [
            r#"{"ownerFile":12}"#,
            r#"{"ownerFile":"-1"}"#,
            r#"{"ownerFile":"1311842"}"#,
            r#"{"ownerFile":"2049:"}"#,
            r#"{"ownerFile":":5"}"#,
            r#"{"ownerFile":"2049:5:6"}"#,
        ] {
            assert_eq!(parse(malformed).owner_file(), Some(None), "{malformed}");
        }
    }

    #[test]
    fn leaves_start_time_out_when_undefined() {
        let json = record(None, None).to_json();
        assert!(json.starts_with("{\"pid\":12345,\"heartbeat\":"), "{json}");
        assert!(!json.contains("ownerLock"));
        assert!(!json.contains("ownerFile"));
    }

    #[test]
    fn parses_what_json_parse_accepts_as_an_object() {
        assert!(ParsedRecord::parse(b"").is_none());
        assert!(ParsedRecord::parse(b"{").is_none());
        assert!(ParsedRecord::parse(b"5").is_none());
        assert!(ParsedRecord::parse(b"null").is_none());
        assert!(ParsedRecord::parse(b"\"x\"").is_none());
        assert!(ParsedRecord::parse(b"[]").is_some());
        let r = ParsedRecord::parse(b" {\"pid\":1,\"pid\":2,\"heartbeat\":\"7\"} ").unwrap();
        assert_eq!(r.probeable_pid(), Some(2), "duplicate keys: the last wins");
        assert_eq!(r.heartbeat(), 7.0);
        // Keys keep the file's order, as JSON.parse keeps insertion order.
        let r = ParsedRecord::parse(br#"{"pid":1,"heartbeat":2,"goalId":"g","acquiredAt":"x"}"#)
            .unwrap();
        let object = r.to_object();
        let keys: Vec<&str> = object
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, ["pid", "heartbeat", "goalId", "acquiredAt"]);
        // A duplicate keeps its first place and its last value, as in JavaScript.
        let r = ParsedRecord::parse(br#"{"a":1,"b":2,"a":3}"#).unwrap();
        assert_eq!(r.to_object().to_string(), r#"{"a":3,"b":2}"#);
        // Nested values and invalid UTF-8 (replaced, as Node reads the file).
        let r =
            ParsedRecord::parse(b"{\"goalId\":\"g\xff\",\"x\":{\"y\":[1,{}]},\"n\":null}").unwrap();
        assert_eq!(r.goal_id(), Some(&Value::String("g\u{fffd}".into())));
        assert_eq!(r.field("x"), Some(&serde_json::json!({"y": [1, {}]})));
        assert_eq!(r.field("n"), Some(&Value::Null));
        assert!(ParsedRecord::parse(b"[1,[2],{\"a\":3}]").is_some());
        assert!(
            ParsedRecord::parse(b"{\"a\":1} x").is_none(),
            "trailing garbage"
        );
        assert!(ParsedRecord::parse(b"true").is_none());
        assert!(ParsedRecord::parse(b"-1.5e3").is_none());
    }

    #[test]
    fn release_guard_compares_goal_pid_start_time_and_owner() {
        let ours = ParsedRecord::parse(record(Some(1000.0), Some(7)).to_json().as_bytes()).unwrap();
        assert!(ours.is_held_by("goal_a", 12345.0, Some(1000.0), Some(7)));
        assert!(!ours.is_held_by("goal_a", 12345.0, Some(1000.0), Some(8)));
        assert!(!ours.is_held_by("goal_b", 12345.0, Some(1000.0), Some(7)));
        assert!(!ours.is_held_by("goal_a", 12346.0, Some(1000.0), Some(7)));
        assert!(!ours.is_held_by("goal_a", 12345.0, None, Some(7)));
        let original = ParsedRecord::parse(
            br#"{"pid":12345,"heartbeat":1,"goalId":"goal_a","acquiredAt":"x"}"#,
        )
        .unwrap();
        assert!(original.is_held_by("goal_a", 12345.0, None, Some(7)));
        assert!(!original.is_held_by("goal_a", 12345.0, Some(1000.0), Some(7)));
    }
}
