//! The handle `acquireWorkspaceLock` resolves with: a plain object with the original's keys
//! (`cwd`, `goalId`, `lockPath`, `startTime`, `release`), plus non-enumerable extras that
//! `Object.keys` and deep equality do not see: `compromised`, `compromisedReason`,
//! `reclaimed` and `Symbol.dispose`. Held locks of an env are released when that env is torn down
//! (process exit, worker termination).

use crate::js::{self, Env, JsRef, JsResult, JsValue};
use napi::bindgen_prelude::*;
use napi::sys;
use napi::threadsafe_function::ThreadsafeFunctionCallMode;
use napi::JsValue as _;
use std::cell::RefCell;
use std::ffi::c_void;
use std::ptr;
use std::sync::Arc;
use workspace_lock_core::held_lock::{HeldLock, LostCallback};
use workspace_lock_core::protocol::Reclaim;

thread_local! {
    /// Locks held through this JS thread's env, released at its teardown.
    static HELD: RefCell<Vec<Arc<HeldLock>>> = const { RefCell::new(Vec::new()) };
}

fn forget_held(held: &Arc<HeldLock>) {
    HELD.with(|h| h.borrow_mut().retain(|x| !Arc::ptr_eq(x, held)));
}

/// Releases every lock this env still holds (its teardown hook).
pub fn release_all_held() {
    let held: Vec<Arc<HeldLock>> = HELD.with(|h| std::mem::take(&mut *h.borrow_mut()));
    for lock in held {
        lock.release();
    }
}

/// What the handle shows of the request.
pub struct HandleFields<'a> {
    pub cwd: &'a str,
    pub goal_id: &'a str,
    pub lock_path: &'a str,
    pub start_time: Option<f64>,
    /// `{ reason, goalId, pid }` of the stale lock this acquisition took over.
    pub reclaimed: Option<&'a Reclaim>,
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

pub fn make_handle(env: Env, fields: &HandleFields<'_>, held: Arc<HeldLock>) -> JsResult<JsValue> {
    HELD.with(|h| h.borrow_mut().push(held.clone()));
    let obj = js::object(env);
    js::set_named(env, obj, "cwd", js::string(env, fields.cwd))?;
    js::set_named(env, obj, "goalId", js::string(env, fields.goal_id))?;
    js::set_named(env, obj, "lockPath", js::string(env, fields.lock_path))?;
    let start_time = fields
        .start_time
        .map_or_else(|| js::undefined(env), |st| js::number(env, st));
    js::set_named(env, obj, "startTime", start_time)?;
    js::set_named(env, obj, "release", release_function(env, held.clone())?)?;
    let state = HandleState {
        held,
        reclaimed: fields.reclaimed.cloned(),
    };
    attach_state(env, obj, state)?;
    let (define_properties, descriptors) = extras(env)?;
    js::call(
        env,
        define_properties,
        js::undefined(env),
        &[obj, descriptors],
    )?;
    Ok(obj)
}

/// `release()`: never throws, idempotent, works detached from the handle.
fn release_function(env: Env, held: Arc<HeldLock>) -> JsResult<JsValue> {
    let napi_env = napi::Env::from_raw(env);
    let f = napi_env.create_function_from_closure::<(), (), _>("release", move |_ctx| {
        held.release();
        forget_held(&held);
        Ok(())
    })?;
    Ok(f.raw())
}

/// What a handle carries natively, wrapped onto the handle object (`napi_wrap`) and freed
/// with it; the shared accessors below find it through `this`.
struct HandleState {
    held: Arc<HeldLock>,
    reclaimed: Option<Reclaim>,
}

unsafe extern "C" fn free_state(_env: sys::napi_env, data: *mut c_void, _hint: *mut c_void) {
    // SAFETY: data came from Box::into_raw in attach_state and is freed exactly once.
    drop(unsafe { Box::from_raw(data as *mut HandleState) });
}

fn attach_state(env: Env, obj: JsValue, state: HandleState) -> JsResult<()> {
    let data = Box::into_raw(Box::new(state)) as *mut c_void;
    // SAFETY: obj is a fresh object; the finalizer frees data when obj is collected.
    let status = unsafe {
        sys::napi_wrap(
            env,
            obj,
            data,
            Some(free_state),
            ptr::null_mut(),
            ptr::null_mut(),
        )
    };
    if status != sys::Status::napi_ok {
        // SAFETY: not attached, so still ours to free.
        unsafe { free_state(env, data, ptr::null_mut()) };
        return Err(js::type_error("could not attach the handle's state"));
    }
    Ok(())
}

/// The state of the handle a shared accessor was called on.
fn state_of<'a>(env: sys::napi_env, info: sys::napi_callback_info) -> Option<&'a HandleState> {
    let mut this = ptr::null_mut();
    let mut argc = 0usize;
    // SAFETY: info is this callback's info; we ask for `this` only.
    let status = unsafe {
        sys::napi_get_cb_info(
            env,
            info,
            &mut argc,
            ptr::null_mut(),
            &mut this,
            ptr::null_mut(),
        )
    };
    if status != sys::Status::napi_ok || this.is_null() {
        return None;
    }
    let mut data: *mut c_void = ptr::null_mut();
    // SAFETY: unwrap fails (and leaves data null) on objects we did not wrap.
    let status = unsafe { sys::napi_unwrap(env, this, &mut data) };
    if status != sys::Status::napi_ok || data.is_null() {
        // Not one of our handles (a getter borrowed onto another object): clear the error.
        let mut exc = ptr::null_mut();
        // SAFETY: clearing a possibly pending exception on a live env.
        unsafe { sys::napi_get_and_clear_last_exception(env, &mut exc) };
        return None;
    }
    // SAFETY: data is the HandleState wrapped in attach_state, alive while `this` is.
    Some(unsafe { &*(data as *const HandleState) })
}

extern "C" fn get_compromised(
    env: sys::napi_env,
    info: sys::napi_callback_info,
) -> sys::napi_value {
    let lost = state_of(env, info).is_some_and(|s| s.held.lost().is_some());
    js::boolean(env, lost)
}

extern "C" fn get_compromised_reason(
    env: sys::napi_env,
    info: sys::napi_callback_info,
) -> sys::napi_value {
    match state_of(env, info).and_then(|s| s.held.lost()) {
        Some(reason) => js::string(env, &reason),
        None => js::undefined(env),
    }
}

extern "C" fn get_reclaimed(env: sys::napi_env, info: sys::napi_callback_info) -> sys::napi_value {
    let reclaimed = state_of(env, info).and_then(|s| s.reclaimed.as_ref());
    reclaimed_value(env, reclaimed).unwrap_or_else(|_| js::undefined(env))
}

extern "C" fn dispose(env: sys::napi_env, info: sys::napi_callback_info) -> sys::napi_value {
    if let Some(state) = state_of(env, info) {
        state.held.release();
        forget_held(&state.held);
    }
    js::undefined(env)
}

thread_local! {
    /// `Object.defineProperties` and the descriptors of the non-enumerable extras, made
    /// once per JS thread: defining accessors per handle would build new functions each time.
    static EXTRAS: RefCell<Option<(JsRef, JsRef)>> = const { RefCell::new(None) };
}

fn native_function(env: Env, name: &str, cb: sys::napi_callback) -> JsResult<JsValue> {
    let mut f = ptr::null_mut();
    // SAFETY: a plain C callback with no data.
    let status = unsafe {
        sys::napi_create_function(
            env,
            name.as_ptr().cast(),
            name.len() as isize,
            cb,
            ptr::null_mut(),
            &mut f,
        )
    };
    if status != sys::Status::napi_ok {
        return Err(js::type_error("could not create a function"));
    }
    Ok(f)
}

fn extras(env: Env) -> JsResult<(JsValue, JsValue)> {
    if let Some(cached) = EXTRAS.with(|e| e.borrow().as_ref().map(|(d, x)| (d.get(), x.get()))) {
        return Ok(cached);
    }
    let object_ctor = js::get_named(env, js::global(env), "Object")?;
    let define_properties = js::get_named(env, object_ctor, "defineProperties")?;
    let descriptors = js::object(env);
    let accessors: [(&str, sys::napi_callback); 3] = [
        ("compromised", Some(get_compromised)),
        ("compromisedReason", Some(get_compromised_reason)),
        ("reclaimed", Some(get_reclaimed)),
    ];
    for (name, cb) in accessors {
        let d = js::object(env);
        js::set_named(env, d, "get", native_function(env, name, cb)?)?;
        js::set_named(env, descriptors, name, d)?;
    }
    // `using handle = await acquireWorkspaceLock(...)` where the runtime knows Symbol.dispose.
    let symbol = js::get_named(env, js::global(env), "Symbol")?;
    let dispose_key = js::get_named(env, symbol, "dispose")?;
    if js::type_of(env, dispose_key) == sys::ValueType::napi_symbol {
        let d = js::object(env);
        js::set_named(
            env,
            d,
            "value",
            native_function(env, "dispose", Some(dispose))?,
        )?;
        // SAFETY: descriptors is an object of env, the key a symbol.
        unsafe { sys::napi_set_property(env, descriptors, dispose_key, d) };
    }
    let cached = (
        JsRef::new(env, define_properties)?,
        JsRef::new(env, descriptors)?,
    );
    EXTRAS.with(|e| *e.borrow_mut() = Some(cached));
    Ok((define_properties, descriptors))
}

/// Env teardown: the cached references die with the engine.
pub fn forget_cached() {
    if let Some((a, b)) = EXTRAS.with(|e| e.borrow_mut().take()) {
        a.forget();
        b.forget();
    }
}

/// A callback for the heartbeat thread that calls `onCompromised(error)` on the JS thread
/// without keeping the event loop alive.
pub fn lost_notifier(
    env: Env,
    callback: JsValue,
    goal_id: &str,
    cwd: &str,
) -> JsResult<LostCallback> {
    // SAFETY: callback is a live function value of env (checked by the options parser).
    let function: Function<'_, Unknown<'static>, Unknown<'static>> =
        unsafe { Function::from_napi_value(env, callback) }?;
    let prefix = format!("workspace lock compromised for goal {goal_id} (cwd={cwd}): ");
    let tsfn = function
        .build_threadsafe_function::<String>()
        .callee_handled::<false>()
        .weak::<true>()
        .build_callback(move |ctx| {
            let raw = ctx.env.raw();
            let message = format!("{prefix}{}", ctx.value);
            let err = js::plain_error(raw, &message);
            let _ = js::set_named(raw, err, "code", js::string(raw, "ECOMPROMISED"));
            // SAFETY: err is a live value of this env during the call.
            Ok(unsafe { Unknown::from_raw_unchecked(raw, err) })
        })?;
    let tsfn = Arc::new(tsfn);
    Ok(Box::new(move |reason: &str| {
        tsfn.call(reason.to_string(), ThreadsafeFunctionCallMode::NonBlocking);
    }))
}
