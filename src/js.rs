//! Small, exact helpers over raw N-API: value checks and conversions, calling JavaScript,
//! and building the errors this package throws. Everything here runs on a JS thread.

use napi::sys;
use serde_json::Value;
use std::ffi::CString;
use std::ptr;
use workspace_lock_core::error::LockError;

pub type Env = sys::napi_env;
pub type JsValue = sys::napi_value;

/// A failure on its way to JavaScript: a value already thrown by JavaScript (rethrown
/// unchanged), or one of ours.
pub enum Fail {
    Thrown(JsValue),
    Lock(LockError),
}

impl From<LockError> for Fail {
    fn from(e: LockError) -> Self {
        Fail::Lock(e)
    }
}

/// A failure of napi-rs itself (creating a function or a threadsafe function): reported as a
/// `TypeError` with napi-rs's reason.
impl From<napi::Error> for Fail {
    fn from(e: napi::Error) -> Self {
        Fail::Lock(LockError::Type(e.reason.clone()))
    }
}

pub type JsResult<T> = Result<T, Fail>;

pub fn type_error(msg: impl Into<String>) -> Fail {
    Fail::Lock(LockError::Type(msg.into()))
}

pub fn range_error(msg: impl Into<String>) -> Fail {
    Fail::Lock(LockError::Range(msg.into()))
}

/// Turns a non-ok status into the pending exception (if any) or a generic error.
fn check(env: Env, status: sys::napi_status) -> JsResult<()> {
    if status == sys::Status::napi_ok {
        return Ok(());
    }
    let mut pending = false;
    // SAFETY: env is the live env of this call.
    unsafe { sys::napi_is_exception_pending(env, &mut pending) };
    if pending {
        let mut exc = ptr::null_mut();
        // SAFETY: as above; clears and returns the pending exception.
        unsafe { sys::napi_get_and_clear_last_exception(env, &mut exc) };
        return Err(Fail::Thrown(exc));
    }
    Err(Fail::Lock(LockError::Type(format!(
        "N-API call failed with status {status}"
    ))))
}

pub fn type_of(env: Env, v: JsValue) -> sys::napi_valuetype {
    let mut t = sys::ValueType::napi_undefined;
    // SAFETY: v is a live value of env.
    unsafe { sys::napi_typeof(env, v, &mut t) };
    t
}

pub fn is_nullish(env: Env, v: JsValue) -> bool {
    let t = type_of(env, v);
    t == sys::ValueType::napi_undefined || t == sys::ValueType::napi_null
}

pub fn is_function(env: Env, v: JsValue) -> bool {
    type_of(env, v) == sys::ValueType::napi_function
}

/// `typeof v` as JavaScript spells it, for error messages (null spelled "null").
pub fn type_name(env: Env, v: JsValue) -> &'static str {
    match type_of(env, v) {
        sys::ValueType::napi_undefined => "undefined",
        sys::ValueType::napi_null => "null",
        sys::ValueType::napi_boolean => "boolean",
        sys::ValueType::napi_number => "number",
        sys::ValueType::napi_string => "string",
        sys::ValueType::napi_symbol => "symbol",
        sys::ValueType::napi_function => "function",
        sys::ValueType::napi_bigint => "bigint",
        _ => "object",
    }
}

pub fn undefined(env: Env) -> JsValue {
    let mut v = ptr::null_mut();
    // SAFETY: env is live.
    unsafe { sys::napi_get_undefined(env, &mut v) };
    v
}

pub fn null(env: Env) -> JsValue {
    let mut v = ptr::null_mut();
    // SAFETY: env is live.
    unsafe { sys::napi_get_null(env, &mut v) };
    v
}

pub fn boolean(env: Env, b: bool) -> JsValue {
    let mut v = ptr::null_mut();
    // SAFETY: env is live.
    unsafe { sys::napi_get_boolean(env, b, &mut v) };
    v
}

pub fn number(env: Env, n: f64) -> JsValue {
    let mut v = ptr::null_mut();
    // SAFETY: env is live.
    unsafe { sys::napi_create_double(env, n, &mut v) };
    v
}

pub fn string(env: Env, s: &str) -> JsValue {
    let mut v = ptr::null_mut();
    // SAFETY: s is valid UTF-8 of the given length.
    unsafe { sys::napi_create_string_utf8(env, s.as_ptr().cast(), s.len() as isize, &mut v) };
    v
}

pub fn object(env: Env) -> JsValue {
    let mut v = ptr::null_mut();
    // SAFETY: env is live.
    unsafe { sys::napi_create_object(env, &mut v) };
    v
}

pub fn get_f64(env: Env, v: JsValue) -> f64 {
    let mut n = f64::NAN;
    // SAFETY: caller checked v is a number.
    unsafe { sys::napi_get_value_double(env, v, &mut n) };
    n
}

pub fn get_bool(env: Env, v: JsValue) -> bool {
    let mut b = false;
    // SAFETY: caller checked v is a boolean.
    unsafe { sys::napi_get_value_bool(env, v, &mut b) };
    b
}

/// The UTF-8 of a JS string (lone surrogates become U+FFFD, as in Node's fs paths).
pub fn get_string(env: Env, v: JsValue) -> JsResult<String> {
    let mut len = 0usize;
    // SAFETY: querying the length with a null buffer is allowed.
    check(env, unsafe {
        sys::napi_get_value_string_utf8(env, v, ptr::null_mut(), 0, &mut len)
    })?;
    let mut buf = vec![0u8; len + 1];
    let mut written = 0usize;
    // SAFETY: buf has room for len bytes plus the NUL.
    check(env, unsafe {
        sys::napi_get_value_string_utf8(env, v, buf.as_mut_ptr().cast(), buf.len(), &mut written)
    })?;
    buf.truncate(written);
    Ok(String::from_utf8(buf)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

pub fn get_named(env: Env, obj: JsValue, name: &str) -> JsResult<JsValue> {
    let key = CString::new(name).map_err(|_| type_error("property name with NUL"))?;
    let mut v = ptr::null_mut();
    // SAFETY: obj is an object of env; getters may throw, which check() surfaces.
    check(env, unsafe {
        sys::napi_get_named_property(env, obj, key.as_ptr(), &mut v)
    })?;
    Ok(v)
}

pub fn set_named(env: Env, obj: JsValue, name: &str, value: JsValue) -> JsResult<()> {
    let key = CString::new(name).map_err(|_| type_error("property name with NUL"))?;
    // SAFETY: obj is an object of env.
    check(env, unsafe {
        sys::napi_set_named_property(env, obj, key.as_ptr(), value)
    })
}

/// `f.apply(this, args)`; a throw comes back as `Fail::Thrown` with the very value thrown.
pub fn call(env: Env, f: JsValue, this: JsValue, args: &[JsValue]) -> JsResult<JsValue> {
    let mut out = ptr::null_mut();
    // SAFETY: f is a function of env, args live values.
    check(env, unsafe {
        sys::napi_call_function(env, this, f, args.len(), args.as_ptr(), &mut out)
    })?;
    Ok(out)
}

pub fn global(env: Env) -> JsValue {
    let mut g = ptr::null_mut();
    // SAFETY: env is live.
    unsafe { sys::napi_get_global(env, &mut g) };
    g
}

/// A JS array of the given values (in order).
pub fn array(
    env: Env,
    items: impl ExactSizeIterator<Item = JsResult<JsValue>>,
) -> JsResult<JsValue> {
    let mut arr = ptr::null_mut();
    // SAFETY: env is live.
    check(env, unsafe {
        sys::napi_create_array_with_length(env, items.len(), &mut arr)
    })?;
    for (i, item) in items.enumerate() {
        // SAFETY: arr is an array of env.
        check(env, unsafe {
            sys::napi_set_element(env, arr, i as u32, item?)
        })?;
    }
    Ok(arr)
}

/// A JSON value read from a lockfile, as the JavaScript value `JSON.parse` would give.
pub fn from_json(env: Env, value: Option<&Value>) -> JsResult<JsValue> {
    Ok(match value {
        None => undefined(env),
        Some(Value::Null) => null(env),
        Some(Value::Bool(b)) => boolean(env, *b),
        Some(Value::Number(n)) => number(env, n.as_f64().unwrap_or(f64::NAN)),
        Some(Value::String(s)) => string(env, s),
        Some(Value::Array(items)) => {
            let mut arr = ptr::null_mut();
            // SAFETY: env is live.
            check(env, unsafe {
                sys::napi_create_array_with_length(env, items.len(), &mut arr)
            })?;
            for (i, item) in items.iter().enumerate() {
                let v = from_json(env, Some(item))?;
                // SAFETY: arr is an array of env.
                check(env, unsafe { sys::napi_set_element(env, arr, i as u32, v) })?;
            }
            arr
        }
        Some(Value::Object(map)) => {
            let obj = object(env);
            for (k, v) in map {
                let key = string(env, k);
                let v = from_json(env, Some(v))?;
                // SAFETY: obj is an object of env.
                check(env, unsafe { sys::napi_set_property(env, obj, key, v) })?;
            }
            obj
        }
    })
}

/// The JavaScript value of a failure: the thrown value itself, or a new error of ours.
/// I/O errors look like Node's fs errors (`code`, `errno`, `syscall`, `path`).
pub fn error_value(env: Env, fail: &Fail) -> JsValue {
    let err = match fail {
        Fail::Thrown(v) => return *v,
        Fail::Lock(e) => e,
    };
    let msg = string(env, &err.to_string());
    let mut out = ptr::null_mut();
    // SAFETY: env is live; a null code means no `code` property.
    unsafe {
        match err {
            LockError::Type(_) => sys::napi_create_type_error(env, ptr::null_mut(), msg, &mut out),
            LockError::Range(_) => {
                sys::napi_create_range_error(env, ptr::null_mut(), msg, &mut out)
            }
            _ => sys::napi_create_error(env, ptr::null_mut(), msg, &mut out),
        }
    };
    if let LockError::Thread(t) = err {
        let _ = set_named(env, out, "errno", number(env, -f64::from(t.errno)));
        let _ = set_named(env, out, "code", string(env, t.code()));
        let _ = set_named(env, out, "syscall", string(env, "pthread_create"));
    }
    if let LockError::Io(io) = err {
        let _ = set_named(env, out, "errno", number(env, -f64::from(io.errno)));
        let _ = set_named(env, out, "code", string(env, io.code()));
        let _ = set_named(env, out, "syscall", string(env, io.syscall));
        let _ = set_named(env, out, "path", string(env, &io.path.to_string_lossy()));
    }
    out
}

/// A strong reference that keeps a JS value alive across event-loop turns; deleted on drop,
/// which must happen on the env's own thread.
pub struct JsRef {
    env: Env,
    raw: sys::napi_ref,
}

impl JsRef {
    pub fn new(env: Env, v: JsValue) -> JsResult<JsRef> {
        let mut raw = ptr::null_mut();
        // SAFETY: v is a live value of env.
        check(env, unsafe {
            sys::napi_create_reference(env, v, 1, &mut raw)
        })?;
        Ok(JsRef { env, raw })
    }

    pub fn get(&self) -> JsValue {
        let mut v = ptr::null_mut();
        // SAFETY: the reference is live until drop.
        unsafe { sys::napi_get_reference_value(self.env, self.raw, &mut v) };
        v
    }

    /// Drops without touching N-API (for env teardown, when the engine frees everything).
    pub fn forget(self) {
        std::mem::forget(self);
    }
}

impl Drop for JsRef {
    fn drop(&mut self) {
        // SAFETY: created by napi_create_reference on this env's thread.
        unsafe { sys::napi_delete_reference(self.env, self.raw) };
    }
}
