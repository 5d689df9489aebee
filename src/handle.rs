//! The handle `acquireWorkspaceLock` resolves with: a plain object with the original's keys
//! (`cwd`, `goalId`, `lockPath`, `startTime`, `release`), plus non-enumerable extras that
//! `Object.keys` and deep equality do not see: `compromised`, `compromisedReason`,
//! `reclaimed` and `Symbol.dispose`.
//!
//! The object itself is built in JavaScript by the factory `index.js` registers
//! (`setHandleFactory`): a literal and closures cost V8 about a microsecond, where building
//! it through N-API (a native function per handle, `napi_wrap`, a finalizer) cost several.
//! Natively, a handle is a *lease*: a number naming a held lock in this env's lease table.
//! Leases still held when the env is torn down (process exit, worker termination) are
//! released then.

use crate::js::{self, Env, JsRef, JsResult, JsValue};
use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::Arc;
use workspace_lock_core::held_lock::{HeldLock, LostCallback, RefreshFailure};
use workspace_lock_core::protocol::Reclaim;

/// `deliverLoss(lease, reason)` of index.js, callable from the heartbeat thread. Weak: it
/// never keeps the event loop alive; index.js delivers a loss still pending at exit itself.
type DeliverLoss =
    ThreadsafeFunction<(u32, String), Unknown<'static>, FnArgs<(u32, String)>, Status, false, true>;

thread_local! {
    /// Locks held through this JS thread's env, by lease number.
    static LEASES: RefCell<HashMap<u32, Arc<HeldLock>>> = RefCell::new(HashMap::new());
    static NEXT_LEASE: Cell<u32> = const { Cell::new(1) };
    /// `makeHandle(lease, cwd, goalId, lockPath, startTime, reclaimed, onCompromised)` from
    /// index.js.
    static FACTORY: RefCell<Option<JsRef>> = const { RefCell::new(None) };
    static DELIVER: RefCell<Option<Arc<DeliverLoss>>> = const { RefCell::new(None) };
}

/// Registers index.js's handle factory and loss deliverer for this env.
pub fn set_factory(env: Env, factory: JsValue, deliver: JsValue) -> JsResult<()> {
    if !js::is_function(env, factory) || !js::is_function(env, deliver) {
        return Err(js::type_error(
            "the handle factory and the loss deliverer must be functions",
        ));
    }
    // SAFETY: deliver is a live function value of env (checked above).
    let function: Function<'_, FnArgs<(u32, String)>, Unknown<'static>> =
        unsafe { Function::from_napi_value(env, deliver) }?;
    let tsfn = function
        .build_threadsafe_function::<(u32, String)>()
        .callee_handled::<false>()
        .weak::<true>()
        // Two arguments (a bare pair would arrive as one array).
        .build_callback(|ctx| Ok(FnArgs::from(ctx.value)))?;
    DELIVER.with(|d| d.borrow_mut().replace(Arc::new(tsfn)));
    let new = JsRef::new(env, factory)?;
    if let Some(old) = FACTORY.with(|f| f.borrow_mut().replace(new)) {
        old.forget();
    }
    Ok(())
}

/// Releases a lease (the handle's `release()`): idempotent. Returns why the lock had been
/// lost, if it had (found by the heartbeat, or by this release), so the handle can report
/// it before `release()` returns and keep reporting it.
pub fn release_lease(lease: u32) -> Option<String> {
    let held = LEASES.with(|l| l.borrow_mut().remove(&lease))?;
    held.release();
    held.lost()
}

/// Why a held lease's lock was lost (`None` while it is ours, or once released).
pub fn lease_lost(lease: u32) -> Option<String> {
    LEASES.with(|l| l.borrow().get(&lease).and_then(|h| h.lost()))
}

/// Why a held lease's heartbeat could not be refreshed lately, if it could not.
pub fn lease_refresh_failure(lease: u32) -> Option<RefreshFailure> {
    LEASES.with(|l| l.borrow().get(&lease).and_then(|h| h.refresh_failure()))
}

/// Releases every lock this env still holds (its teardown hook).
pub fn release_all_held() {
    let held: Vec<Arc<HeldLock>> =
        LEASES.with(|l| l.borrow_mut().drain().map(|(_, h)| h).collect());
    for lock in held {
        lock.release();
    }
}

/// A lease number for a claim about to be held (so its lost-lock callback can name it
/// before its handle exists); [`make_handle`] records the lock under it.
pub fn next_lease() -> u32 {
    LEASES.with(|l| {
        let leases = l.borrow();
        // Numbers wrap after 4 billion acquisitions in one env: skip any still held.
        let mut id = NEXT_LEASE.with(Cell::get);
        while id == 0 || leases.contains_key(&id) {
            id = id.wrapping_add(1);
        }
        // Reserved: an acquisition whose claim settles first may take a while to use it.
        NEXT_LEASE.with(|n| n.set(id.wrapping_add(1)));
        id
    })
}

/// A callback for the heartbeat thread that has index.js deliver a loss of `lease` to its
/// `onCompromised` (once, whoever finds it first), without keeping the event loop alive.
pub fn lost_notifier(lease: u32) -> Option<LostCallback> {
    let deliver = DELIVER.with(|d| d.borrow().clone())?;
    Some(Box::new(move |reason: &str| {
        deliver.call(
            (lease, reason.to_string()),
            ThreadsafeFunctionCallMode::NonBlocking,
        );
    }))
}

/// What the handle shows of the request.
pub struct HandleFields<'a> {
    pub cwd: &'a str,
    pub goal_id: &'a str,
    pub lock_path: &'a str,
    pub start_time: Option<f64>,
    /// `{ reason, goalId, pid }` of the stale lock this acquisition took over.
    pub reclaimed: Option<&'a Reclaim>,
    /// The caller's `onCompromised`, which the handle calls (once).
    pub on_compromised: Option<JsValue>,
}

fn reclaimed_value(env: Env, reclaimed: Option<&Reclaim>) -> JsResult<JsValue> {
    let Some(r) = reclaimed else {
        return Ok(js::undefined(env));
    };
    let obj = js::object(env);
    js::set_named(env, obj, "reason", js::string(env, r.reason.as_str()))?;
    let previous = r.previous.as_ref();
    js::set_named(
        env,
        obj,
        "goalId",
        js::from_json(env, previous.and_then(|p| p.goal_id()))?,
    )?;
    js::set_named(
        env,
        obj,
        "pid",
        js::from_json(env, previous.and_then(|p| p.pid()))?,
    )?;
    Ok(obj)
}

/// Records `held` as lease `lease` (from [`next_lease`]) of this env and builds its handle
/// with index.js's factory. If the handle cannot be built, the lock is released again:
/// nobody could release it.
pub fn make_handle(
    env: Env,
    lease: u32,
    fields: &HandleFields<'_>,
    held: Arc<HeldLock>,
) -> JsResult<JsValue> {
    LEASES.with(|l| l.borrow_mut().insert(lease, held));
    let built = build_handle(env, lease, fields);
    if built.is_err() {
        release_lease(lease);
    }
    built
}

fn build_handle(env: Env, lease: u32, fields: &HandleFields<'_>) -> JsResult<JsValue> {
    let factory = FACTORY
        .with(|f| f.borrow().as_ref().map(JsRef::get))
        .ok_or_else(|| {
            js::type_error(
                "pi-crew-workspace-lock: load the package through its main entry (index.js)",
            )
        })?;
    let start_time = fields
        .start_time
        .map_or_else(|| js::undefined(env), |st| js::number(env, st));
    let args = [
        js::number(env, f64::from(lease)),
        js::string(env, fields.cwd),
        js::string(env, fields.goal_id),
        js::string(env, fields.lock_path),
        start_time,
        reclaimed_value(env, fields.reclaimed)?,
        fields.on_compromised.unwrap_or_else(|| js::undefined(env)),
    ];
    js::call(env, factory, js::undefined(env), &args)
}

/// Env teardown: the cached reference dies with the engine.
pub fn forget_cached() {
    if let Some(factory) = FACTORY.with(|f| f.borrow_mut().take()) {
        factory.forget();
    }
    DELIVER.with(|d| d.borrow_mut().take());
}
