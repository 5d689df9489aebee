//! The PostgreSQL backend's binding (`workspace-lock-pg`), for `backend.js`: values cross as
//! plain strings and numbers, results as JSON text (`{"error":{code,message}}` on failure),
//! so that nothing here throws. Nothing runs, and no runtime starts, until one is called.

use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use workspace_lock_pg::tokio;
use workspace_lock_pg::{self as pg, BackendError, Cancel, HolderInfo, Outcome, Target};

fn error_json(e: &BackendError) -> String {
    json!({ "error": { "code": e.code, "message": e.message } }).to_string()
}

static LEASES: OnceLock<Mutex<HashMap<u32, Arc<pg::Lease>>>> = OnceLock::new();
static CANCELS: OnceLock<Mutex<HashMap<u32, Arc<Cancel>>>> = OnceLock::new();

fn leases() -> &'static Mutex<HashMap<u32, Arc<pg::Lease>>> {
    LEASES.get_or_init(|| Mutex::new(HashMap::new()))
}

fn cancels() -> &'static Mutex<HashMap<u32, Arc<Cancel>>> {
    CANCELS.get_or_init(|| Mutex::new(HashMap::new()))
}

fn lease(id: u32) -> Option<Arc<pg::Lease>> {
    leases().lock().ok().and_then(|m| m.get(&id).cloned())
}

fn parse_key(key: &str) -> std::result::Result<i64, BackendError> {
    key.parse::<i64>()
        .map_err(|_| BackendError::new("EBACKENDKEY", "workspace lock backend: bad key"))
}

/// Internal: the key of a workspace, `{"key":"<i64>","text":…}`.
#[napi(js_name = "pgKey", catch_unwind)]
pub fn pg_key(cwd: String, key_override: Option<String>) -> String {
    match pg::derive_key(&cwd, key_override.as_deref()) {
        Ok(k) => json!({ "key": k.key.to_string(), "text": k.text }).to_string(),
        Err(e) => error_json(&e),
    }
}

/// Internal: checks a backend URL, `{}` or `{"error":…}`, `{"shown":…}` on success.
#[napi(js_name = "pgCheckUrl", catch_unwind)]
pub fn pg_check_url(url: String) -> String {
    match Target::parse(&url) {
        Ok(t) => json!({ "shown": t.shown() }).to_string(),
        Err(e) => error_json(&e),
    }
}

/// What `pgAcquire` is told about its holder.
#[napi(object)]
pub struct PgAcquireRequest {
    pub id: u32,
    pub url: String,
    pub key: String,
    pub workspace: String,
    pub goal_id: String,
    pub pid: f64,
    pub host: String,
    pub acquired_at: String,
    pub try_only: bool,
    pub lease_ms: u32,
}

type Resolver = Box<dyn FnOnce(Env) -> Result<String> + Send>;

/// Internal: takes the lock on the server. Resolves to JSON: `{"lease":n,"token":"…"}`,
/// `{"busy":{…holder}}`, `{"cancelled":true}` or `{"error":…}`.
#[napi(
    js_name = "pgAcquire",
    catch_unwind,
    ts_return_type = "Promise<string>"
)]
pub fn pg_acquire(env: &Env, req: PgAcquireRequest) -> Result<Object<'_>> {
    let (deferred, promise) = env.create_deferred::<String, Resolver>()?;
    let settle = move |text: String| deferred.resolve(Box::new(move |_env| Ok(text)));
    let prepared = (|| {
        let target = Target::parse(&req.url)?;
        let key = parse_key(&req.key)?;
        let rt = pg::runtime()?;
        Ok::<_, BackendError>((target, key, rt))
    })();
    let (target, key, rt) = match prepared {
        Ok(p) => p,
        Err(e) => {
            settle(error_json(&e));
            return Ok(promise);
        }
    };
    let cancel = Arc::new(Cancel::default());
    if let Ok(mut m) = cancels().lock() {
        m.insert(req.id, cancel.clone());
    }
    let info = HolderInfo {
        goal_id: req.goal_id,
        pid: req.pid as i64,
        host: req.host,
        acquired_at: req.acquired_at,
    };
    let id = req.id;
    let (workspace, try_only, lease_ms) = (req.workspace, req.try_only, u64::from(req.lease_ms));
    rt.spawn(async move {
        let outcome = pg::acquire(target, key, workspace, info, try_only, lease_ms, cancel).await;
        if let Ok(mut m) = cancels().lock() {
            m.remove(&id);
        }
        let text = match outcome {
            Ok(Outcome::Acquired(lease)) => {
                let lease_id = lease.id as u32;
                let token = lease.token;
                if let Ok(mut m) = leases().lock() {
                    m.insert(lease_id, lease);
                }
                json!({ "lease": lease_id, "token": token.to_string() }).to_string()
            }
            Ok(Outcome::Busy(h)) => json!({ "busy": holder_json(&h) }).to_string(),
            Ok(Outcome::Cancelled) => json!({ "cancelled": true }).to_string(),
            Err(e) => error_json(&e),
        };
        settle(text);
    });
    Ok(promise)
}

fn holder_json(h: &pg::Holder) -> Value {
    json!({
        "goalId": h.goal_id,
        "pid": h.pid,
        "host": h.host,
        "token": h.token.map(|t| t.to_string()),
        "acquiredAt": h.acquired_at,
        "workspace": h.workspace,
        "backendPid": h.backend_pid,
        "waiters": h.waiters,
    })
}

/// Internal: aborts a pending `pgAcquire`; it then resolves `{"cancelled":true}`.
#[napi(js_name = "pgCancel", catch_unwind)]
pub fn pg_cancel(id: u32) {
    if let Some(c) = cancels().lock().ok().and_then(|m| m.get(&id).cloned()) {
        c.cancel();
    }
}

/// Internal: releases a lease (idempotent); returns why it had been lost, if it had.
#[napi(js_name = "pgRelease", catch_unwind)]
pub fn pg_release(lease_id: u32) -> Option<String> {
    let held = leases().lock().ok().and_then(|mut m| m.remove(&lease_id))?;
    held.release()
}

/// Internal: why a lease was lost, if it was (checked against its deadline now).
#[napi(js_name = "pgLost", catch_unwind)]
pub fn pg_lost(lease_id: u32) -> Option<String> {
    lease(lease_id).and_then(|l| l.lost())
}

/// Internal: calls `callback(reason)` once when the lease is lost. Does not keep the
/// process alive.
#[napi(js_name = "pgOnLost", catch_unwind)]
pub fn pg_on_lost(lease_id: u32, callback: Function<String, ()>) -> Result<()> {
    let Some(held) = lease(lease_id) else {
        return Ok(());
    };
    let tsfn: ThreadsafeFunction<String, (), String, Status, false, true> = callback
        .build_threadsafe_function::<String>()
        .callee_handled::<false>()
        .weak::<true>()
        .build()?;
    held.on_lost(Box::new(move |reason| {
        tsfn.call(reason, ThreadsafeFunctionCallMode::NonBlocking);
    }));
    Ok(())
}

/// Internal, synchronous: who holds `key` on the server: `{"holder":{…}|null}` or
/// `{"error":…}`, within `timeoutMs`.
#[napi(js_name = "pgHolder", catch_unwind)]
pub fn pg_holder(url: String, key: String, timeout_ms: u32) -> String {
    let run = || -> std::result::Result<Option<pg::Holder>, BackendError> {
        let target = Target::parse(&url)?;
        let key = parse_key(&key)?;
        let rt = pg::runtime()?;
        let limit = Duration::from_millis(u64::from(timeout_ms.max(1)));
        rt.block_on(async {
            match tokio::time::timeout(limit, pg::holder(&target, key)).await {
                Ok(r) => r,
                Err(_) => Err(BackendError::new(
                    "EBACKENDTIMEOUT",
                    format!(
                        "workspace lock backend: {} did not answer within {} ms",
                        target.shown(),
                        limit.as_millis()
                    ),
                )),
            }
        })
    };
    match run() {
        Ok(h) => json!({ "holder": h.as_ref().map(holder_json) }).to_string(),
        Err(e) => error_json(&e),
    }
}
