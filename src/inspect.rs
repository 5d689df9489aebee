//! `inspectWorkspaceLock` / `inspectWorkspaceLocks`: what a lockfile says and how this
//! package judges it, for operators (the `workspace-lock` command) and diagnostics.
//! Read-only: nothing is claimed, refreshed or deleted.

use crate::js::{self, Env, JsResult, JsValue};
use crate::judge::Judge;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use workspace_lock_core::js_semantics::node_path_join;
use workspace_lock_core::liveness::Verdict;
use workspace_lock_core::lockfile_io::{observe_for_reading, Observed};
use workspace_lock_core::protocol::is_being_written;

/// `{ lockPath, state, reason?, evidence?, record?, heartbeatAgeMs?, ageMs? }` for one path.
pub fn inspect_path(
    env: Env,
    judge: &Judge<'_>,
    shown_path: &str,
    path: &Path,
) -> JsResult<JsValue> {
    let obj = js::object(env);
    js::set_named(env, obj, "lockPath", js::string(env, shown_path))?;
    let set_state = |state: &str, reason: Option<&str>| -> JsResult<()> {
        js::set_named(env, obj, "state", js::string(env, state))?;
        if let Some(reason) = reason {
            js::set_named(env, obj, "reason", js::string(env, reason))?;
        }
        Ok(())
    };
    let seen = observe_for_reading(path)?;
    if let Some(age) = seen.age() {
        js::set_named(
            env,
            obj,
            "ageMs",
            js::number(env, age.as_secs_f64() * 1000.0),
        )?;
    }
    let unreadable = |obj_state: &dyn Fn(&str, Option<&str>) -> JsResult<()>| {
        if is_being_written(&seen, judge.opts.heartbeat_stale_ms) {
            obj_state("unreadable", Some("being_written"))
        } else {
            obj_state("stale", Some("corrupt"))
        }
    };
    match &seen {
        Observed::Absent => set_state("free", None)?,
        Observed::Directory => set_state("unreadable", Some("directory"))?,
        Observed::NotAFile { .. } | Observed::File { record: None, .. } => unreadable(&set_state)?,
        Observed::File {
            record: Some(record),
            ..
        } => {
            let fields = record.to_object();
            js::set_named(env, obj, "record", js::from_json(env, Some(&fields))?)?;
            let owners = judge.owner_file(path, record);
            let (verdict, evidence) = judge.judgement(record, owners.as_deref())?;
            let heartbeat = record.heartbeat();
            let mut age = None;
            if heartbeat.is_finite() {
                let ms = judge.now()? - heartbeat;
                js::set_named(env, obj, "heartbeatAgeMs", js::number(env, ms))?;
                age = Some(ms);
            }
            match verdict {
                Verdict::Live => {
                    set_state("held", None)?;
                    // Alive by proof, yet not refreshing: stopped (SIGSTOP, a debugger, a
                    // frozen cgroup), hung, or unable to write. An operator should know.
                    if age.is_some_and(|ms| ms > judge.opts.heartbeat_stale_ms) {
                        js::set_named(env, obj, "heartbeatLate", js::boolean(env, true))?;
                    }
                }
                Verdict::Stale(reason) => set_state("stale", Some(reason.as_str()))?,
                Verdict::Malformed => unreadable(&set_state)?,
            }
            if !matches!(verdict, Verdict::Malformed) {
                js::set_named(env, obj, "evidence", js::string(env, evidence))?;
            }
        }
    }
    Ok(obj)
}

/// Every `*.lock` directly in `dir`, in byte order of names; `[]` for a missing directory.
pub fn inspect_dir(env: Env, judge: &Judge<'_>, dir: &str) -> JsResult<JsValue> {
    let mut names: Vec<Vec<u8>> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().as_bytes().to_vec())
            .filter(|n| n.ends_with(b".lock"))
            .collect(),
        // No locks can exist where the directory cannot (SPEC's error rule).
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            Vec::new()
        }
        Err(e) => {
            return Err(
                workspace_lock_core::error::LockError::io(&e, "scandir", Path::new(dir)).into(),
            )
        }
    };
    names.sort_unstable();
    let items = names.iter().map(|name| {
        let shown = node_path_join(dir, &String::from_utf8_lossy(name));
        inspect_path(
            env,
            judge,
            &shown,
            &Path::new(dir).join(OsStr::from_bytes(name)),
        )
    });
    js::array(env, items)
}
