//! The handle `acquireWorkspaceLock` resolves with: a plain object with the original's keys
//! (`cwd`, `goalId`, `lockPath`, `startTime`, `release`), plus non-enumerable extras that
//! `Object.keys` and deep equality do not see: `compromised`, `compromisedReason`,
//! `reclaimed` and `Symbol.dispose`. Held locks of an env are released when that env is torn down
//! (process exit, worker termination).

use crate::js::{self, Env, JsResult, JsValue};
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
    let release = release_function(env, held.clone())?;
    js::set_named(env, obj, "release", release)?;
    let reclaimed = reclaimed_value(env, fields.reclaimed)?;
    define_extras(env, obj, held, release, reclaimed)?;
    Ok(obj)
}

/// `release()`: never throws, idempotent, works detached from the handle.
fn release_function(env: Env, held: Arc<HeldLock>) -> JsResult<JsValue> {
    let napi_env = napi::Env::from_raw(env);
    let f = napi_env
        .create_function_from_closure::<(), (), _>("release", move |_ctx| {
            held.release();
            forget_held(&held);
            Ok(())
        })
        .map_err(|e| js::type_error(e.reason.clone()))?;
    Ok(f.raw())
}

extern "C" fn get_compromised(
    env: sys::napi_env,
    info: sys::napi_callback_info,
) -> sys::napi_value {
    match held_of(env, info) {
        Some(held) => js::boolean(env, held.lost().is_some()),
        None => js::boolean(env, false),
    }
}

extern "C" fn get_compromised_reason(
    env: sys::napi_env,
    info: sys::napi_callback_info,
) -> sys::napi_value {
    match held_of(env, info).and_then(|h| h.lost()) {
        Some(reason) => js::string(env, &reason),
        None => js::undefined(env),
    }
}

fn held_of<'a>(env: sys::napi_env, info: sys::napi_callback_info) -> Option<&'a Arc<HeldLock>> {
    let mut data: *mut c_void = ptr::null_mut();
    let mut argc = 0usize;
    // SAFETY: info is this callback's info; we ask for no arguments, only the data pointer.
    let status = unsafe {
        sys::napi_get_cb_info(
            env,
            info,
            &mut argc,
            ptr::null_mut(),
            ptr::null_mut(),
            &mut data,
        )
    };
    if status != sys::Status::napi_ok || data.is_null() {
        return None;
    }
    // SAFETY: data is the Box<Arc<HeldLock>> attached in define_extras, freed only by the
    // handle object's finalizer, after which no getter of that object can run.
    Some(unsafe { &*(data as *const Arc<HeldLock>) })
}

unsafe extern "C" fn free_held(_env: sys::napi_env, data: *mut c_void, _hint: *mut c_void) {
    // SAFETY: data came from Box::into_raw in define_extras and is freed exactly once.
    drop(unsafe { Box::from_raw(data as *mut Arc<HeldLock>) });
}

fn define_extras(
    env: Env,
    obj: JsValue,
    held: Arc<HeldLock>,
    release: JsValue,
    reclaimed: JsValue,
) -> JsResult<()> {
    let data = Box::into_raw(Box::new(held)) as *mut c_void;
    // SAFETY: obj is a fresh object; the finalizer frees data when obj is collected.
    let status = unsafe {
        sys::napi_add_finalizer(
            env,
            obj,
            data,
            Some(free_held),
            ptr::null_mut(),
            ptr::null_mut(),
        )
    };
    if status != sys::Status::napi_ok {
        // SAFETY: not attached, so still ours to free.
        unsafe { free_held(env, data, ptr::null_mut()) };
        return Err(js::type_error("could not attach the handle's state"));
    }
    let getter =
        |name: &'static std::ffi::CStr, cb: sys::napi_callback| sys::napi_property_descriptor {
            utf8name: name.as_ptr(),
            name: ptr::null_mut(),
            method: None,
            getter: cb,
            setter: None,
            value: ptr::null_mut(),
            attributes: sys::PropertyAttributes::default,
            data,
        };
    let mut props = vec![
        getter(c"compromised", Some(get_compromised)),
        getter(c"compromisedReason", Some(get_compromised_reason)),
        sys::napi_property_descriptor {
            utf8name: c"reclaimed".as_ptr(),
            name: ptr::null_mut(),
            method: None,
            getter: None,
            setter: None,
            value: reclaimed,
            attributes: sys::PropertyAttributes::default,
            data: ptr::null_mut(),
        },
    ];
    // `using handle = await acquireWorkspaceLock(...)` where the runtime knows Symbol.dispose.
    let symbol = js::global(env);
    let symbol = js::get_named(env, symbol, "Symbol")?;
    let dispose = js::get_named(env, symbol, "dispose")?;
    if js::type_of(env, dispose) == sys::ValueType::napi_symbol {
        props.push(sys::napi_property_descriptor {
            utf8name: ptr::null(),
            name: dispose,
            method: None,
            getter: None,
            setter: None,
            value: release,
            attributes: sys::PropertyAttributes::default,
            data: ptr::null_mut(),
        });
    }
    // SAFETY: descriptors are valid for the call; names are NUL-terminated statics.
    let status = unsafe { sys::napi_define_properties(env, obj, props.len(), props.as_ptr()) };
    if status != sys::Status::napi_ok {
        return Err(js::type_error("could not define the handle's properties"));
    }
    Ok(())
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
        unsafe { Function::from_napi_value(env, callback) }
            .map_err(|e| js::type_error(e.reason.clone()))?;
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
        })
        .map_err(|e| js::type_error(e.reason.clone()))?;
    let tsfn = Arc::new(tsfn);
    Ok(Box::new(move |reason: &str| {
        tsfn.call(reason.to_string(), ThreadsafeFunctionCallMode::NonBlocking);
    }))
}
