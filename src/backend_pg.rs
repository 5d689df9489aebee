//! The PostgreSQL backend's binding (`workspace-lock-pg`), for `backend.js`: values cross as
//! plain strings and numbers, results as JSON text (`{"error":{code,message}}` on failure),
//! so that nothing here throws. Nothing runs, and no runtime starts, until one is called.
//!
//! Results reach JavaScript through one threadsafe function per env (`pgSetup`), not a
//! promise per acquisition: napi-rs's deferred creates, and later closes, a threadsafe
//! function (a libuv handle) per promise, a measurable part of an uncontended cycle.

use napi::bindgen_prelude::*;
use napi::sys;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;
use serde_json::{json, Value};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicPtr, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use workspace_lock_pg::tokio;
use workspace_lock_pg::{self as pg, BackendError, Cancel, HolderInfo, Outcome, Target};

fn error_json(e: &BackendError) -> String {
    json!({ "error": { "code": e.code, "message": e.message } }).to_string()
}

/// Which env (JS thread: the main one or a worker's) an acquisition or a lease belongs to:
/// when that env ends (a worker terminated), its leases are released and its acquisitions
/// cancelled, as the file lock's are.
type EnvTag = u64;

/// Held leases by id, with their env.
type Leases = HashMap<u32, (EnvTag, Arc<pg::Lease>)>;
static LEASES: OnceLock<Mutex<Leases>> = OnceLock::new();
/// Pending acquisitions by deliverer ([`pg_setup`]'s answer) and the id its backend.js
/// copy gave them, with their env. Ids alone are not unique: every copy of backend.js (one
/// per worker thread, or per module registry of a test runner) counts from 1.
type Cancels = HashMap<(u32, u32), (EnvTag, Arc<Cancel>)>;
static CANCELS: OnceLock<Mutex<Cancels>> = OnceLock::new();
/// Envs that have not ended. Locked inside [`LEASES`] only, never the other way round.
static LIVE_ENVS: Mutex<Vec<EnvTag>> = Mutex::new(Vec::new());

fn leases() -> std::sync::MutexGuard<'static, Leases> {
    LEASES
        .get_or_init(|| Mutex::new(HashMap::new()))
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

fn cancels() -> std::sync::MutexGuard<'static, Cancels> {
    CANCELS
        .get_or_init(|| Mutex::new(HashMap::new()))
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

fn live_envs() -> std::sync::MutexGuard<'static, Vec<EnvTag>> {
    LIVE_ENVS.lock().unwrap_or_else(|p| p.into_inner())
}

fn lease(id: u32) -> Option<Arc<pg::Lease>> {
    leases().get(&id).map(|(_, l)| l.clone())
}

/// Keeps a lease just won, unless its env has ended meanwhile: then it is released at once
/// (`false`), since nothing is left to release it.
fn keep_lease(tag: EnvTag, lease_id: u32, lease: &Arc<pg::Lease>) -> bool {
    let mut held = leases();
    if !live_envs().contains(&tag) {
        drop(held);
        let _ = lease.release();
        return false;
    }
    held.insert(lease_id, (tag, lease.clone()));
    true
}

/// Env teardown: this env's leases released, its pending acquisitions cancelled.
unsafe extern "C" fn end_env(arg: *mut std::ffi::c_void) {
    let tag = arg as usize as EnvTag;
    let ended: Vec<Arc<pg::Lease>> = {
        let mut held = leases();
        live_envs().retain(|t| *t != tag);
        let ids: Vec<u32> = held
            .iter()
            .filter(|(_, (t, _))| *t == tag)
            .map(|(id, _)| *id)
            .collect();
        ids.iter()
            .filter_map(|id| held.remove(id).map(|(_, l)| l))
            .collect()
    };
    for lease in ended {
        let _ = lease.release();
    }
    for (t, cancel) in cancels().values() {
        if *t == tag {
            cancel.cancel();
        }
    }
    ENV_TAG.with(|t| t.set(None));
}

/// Parsed targets by URL: parsing (and, with `sslmode=require`, loading the root
/// certificates) once per URL, not per acquisition.
static TARGETS: OnceLock<Mutex<HashMap<String, Target>>> = OnceLock::new();

fn target_of(url: &str) -> std::result::Result<Target, BackendError> {
    let targets = TARGETS.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(t) = targets.lock().ok().and_then(|m| m.get(url).cloned()) {
        return Ok(t);
    }
    let t = Target::parse(url)?;
    if let Ok(mut m) = targets.lock() {
        // A process uses one or two URLs; a bound all the same.
        if m.len() >= 64 {
            m.clear();
        }
        m.insert(url.to_owned(), t.clone());
    }
    Ok(t)
}

/// `deliver(id, text, lost)` of backend.js: an acquisition's result (`lost` false, `id` the
/// acquisition's), or a lease's loss (`lost` true, `id` the lease, `text` the reason). One
/// queue for both, so a loss never overtakes the result that names its lease.
type Deliver = ThreadsafeFunction<
    (u32, String, bool),
    Unknown<'static>,
    FnArgs<(u32, String, bool)>,
    Status,
    false,
    true,
>;

/// A deliverer and its count of acquisitions not yet delivered: while there are any, the
/// (otherwise weak) threadsafe function keeps the event loop alive, as a pending promise's
/// would. Per deliverer, so that a second copy of backend.js in the env (a test runner's
/// fresh module registry) cannot unbalance the first one's count.
struct Deliverer {
    tsfn: Deliver,
    pending: Arc<Pending>,
}

#[derive(Default)]
struct Pending {
    count: AtomicU32,
    /// The threadsafe function, for its callback (set once it exists).
    raw: AtomicPtr<sys::napi_threadsafe_function__>,
}

impl Pending {
    /// Counts an acquisition in (`+1`) or out (`-1`), referencing the threadsafe function
    /// while any is pending. On the JS thread of `env` only (so no race between the load and
    /// the store).
    fn count(&self, env: sys::napi_env, delta: i32) {
        let before = self.count.load(Ordering::Relaxed);
        let after = before.saturating_add_signed(delta);
        self.count.store(after, Ordering::Relaxed);
        let raw = self.raw.load(Ordering::Relaxed);
        if raw.is_null() {
            return;
        }
        // SAFETY: env is the live env of this JS thread, and raw a threadsafe function
        // created on it and not yet released (its Deliverer is alive while it is called).
        unsafe {
            if before == 0 && after > 0 {
                sys::napi_ref_threadsafe_function(env, raw);
            } else if before > 0 && after == 0 {
                sys::napi_unref_threadsafe_function(env, raw);
            }
        }
    }
}

thread_local! {
    /// This thread's deliverers, by the number [`pg_setup`] answered: one per copy of
    /// backend.js, each getting the results of its own acquisitions only.
    static DELIVERERS: RefCell<HashMap<u32, Arc<Deliverer>>> = RefCell::new(HashMap::new());
    /// This thread's env (see [`EnvTag`]), once `pgSetup` ran in it.
    static ENV_TAG: std::cell::Cell<Option<EnvTag>> = const { std::cell::Cell::new(None) };
}

static NEXT_ENV_TAG: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
static NEXT_DELIVERER: AtomicU32 = AtomicU32::new(1);

/// Internal: registers a backend.js copy's `deliver(id, text, lost)` in this env; the
/// number that copy passes with its acquisitions and cancels.
#[napi(
    js_name = "pgSetup",
    catch_unwind,
    ts_args_type = "deliver: (id: number, text: string, lost: boolean) => void"
)]
pub fn pg_setup(
    env: &Env,
    deliver: Function<'_, FnArgs<(u32, String, bool)>, Unknown<'static>>,
) -> Result<u32> {
    if ENV_TAG.with(|t| t.get()).is_none() {
        let tag = NEXT_ENV_TAG.fetch_add(1, Ordering::Relaxed);
        live_envs().push(tag);
        ENV_TAG.with(|t| t.set(Some(tag)));
        // SAFETY: a plain function and an integer for its argument, on this live env.
        let status = unsafe {
            sys::napi_add_env_cleanup_hook(env.raw(), Some(end_env), tag as usize as *mut _)
        };
        if status != sys::Status::napi_ok {
            return Err(Error::from_reason(
                "cannot register the backend's env cleanup",
            ));
        }
    }
    let pending = Arc::new(Pending::default());
    let counted = pending.clone();
    let tsfn: Deliver = deliver
        .build_threadsafe_function::<(u32, String, bool)>()
        .callee_handled::<false>()
        .weak::<true>()
        .build_callback(move |ctx| {
            if !ctx.value.2 {
                counted.count(ctx.env.raw(), -1);
            }
            // Three arguments (a bare tuple would arrive as one array).
            Ok(FnArgs::from(ctx.value))
        })?;
    pending.raw.store(tsfn.raw(), Ordering::Relaxed);
    let number = NEXT_DELIVERER.fetch_add(1, Ordering::Relaxed);
    DELIVERERS.with(|d| {
        d.borrow_mut()
            .insert(number, Arc::new(Deliverer { tsfn, pending }))
    });
    Ok(number)
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
    /// The deliverer ([`pg_setup`]'s number) of the backend.js copy asking.
    pub setup: u32,
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

/// Internal: takes the lock on the server; `deliver(req.id, text, false)` gets the result as
/// JSON: `{"lease":n,"token":"…"}`, `{"busy":{…holder}}`, `{"cancelled":true}` or
/// `{"error":…}`, and later `deliver(lease, reason, true)` the lease's loss, if it is lost.
/// Returns the error JSON at once instead when the request cannot start.
#[napi(js_name = "pgAcquire", catch_unwind)]
pub fn pg_acquire(env: &Env, req: PgAcquireRequest) -> Option<String> {
    let (Some(deliver), Some(tag)) = (
        DELIVERERS.with(|d| d.borrow().get(&req.setup).cloned()),
        ENV_TAG.with(|t| t.get()),
    ) else {
        return Some(error_json(&BackendError::new(
            "EBACKENDRUNTIME",
            "workspace lock backend: pgSetup was not called in this env",
        )));
    };
    let prepared = (|| {
        let target = target_of(&req.url)?;
        let key = parse_key(&req.key)?;
        let rt = pg::runtime()?;
        Ok::<_, BackendError>((target, key, rt))
    })();
    let (target, key, rt) = match prepared {
        Ok(p) => p,
        Err(e) => return Some(error_json(&e)),
    };
    deliver.pending.count(env.raw(), 1);
    let cancel = Arc::new(Cancel::default());
    let pending_key = (req.setup, req.id);
    cancels().insert(pending_key, (tag, cancel.clone()));
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
        cancels().remove(&pending_key);
        let mut held = None;
        let text = match outcome {
            Ok(Outcome::Acquired(lease)) => {
                let lease_id = lease.id as u32;
                let token = lease.token;
                if !keep_lease(tag, lease_id, &lease) {
                    return; // its env has ended: nobody to tell
                }
                held = Some((lease_id, lease));
                format!("{{\"lease\":{lease_id},\"token\":\"{token}\"}}")
            }
            Ok(Outcome::Busy(h)) => json!({ "busy": holder_json(&h) }).to_string(),
            Ok(Outcome::Cancelled) => json!({ "cancelled": true }).to_string(),
            Err(e) => error_json(&e),
        };
        deliver
            .tsfn
            .call((id, text, false), ThreadsafeFunctionCallMode::NonBlocking);
        // After the result: a loss found already is queued behind it.
        if let Some((lease_id, lease)) = held {
            lease.on_lost(Box::new(move |reason| {
                deliver.tsfn.call(
                    (lease_id, reason, true),
                    ThreadsafeFunctionCallMode::NonBlocking,
                );
            }));
        }
    });
    None
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

/// Internal: aborts a pending `pgAcquire` (of the deliverer `setup`); it then resolves
/// `{"cancelled":true}`.
#[napi(js_name = "pgCancel", catch_unwind)]
pub fn pg_cancel(setup: u32, id: u32) {
    if let Some((_, c)) = cancels().get(&(setup, id)).cloned() {
        c.cancel();
    }
}

/// Internal: releases a lease (idempotent); returns why it had been lost, if it had.
#[napi(js_name = "pgRelease", catch_unwind)]
pub fn pg_release(lease_id: u32) -> Option<String> {
    let held = leases().remove(&lease_id).map(|(_, l)| l)?;
    held.release()
}

/// Internal: why a lease was lost, if it was (checked against its deadline now).
#[napi(js_name = "pgLost", catch_unwind)]
pub fn pg_lost(lease_id: u32) -> Option<String> {
    lease(lease_id).and_then(|l| l.lost())
}

/// Internal, synchronous: who holds `key` on the server: `{"holder":{…}|null}` or
/// `{"error":…}`, within `timeoutMs`.
#[napi(js_name = "pgHolder", catch_unwind)]
pub fn pg_holder(url: String, key: String, timeout_ms: u32) -> String {
    let run = || -> std::result::Result<Option<pg::Holder>, BackendError> {
        let target = target_of(&url)?;
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
