//! Argument and option checking. Absent and `null` options take their defaults (the
//! original reads them with `??`); anything else of the wrong type or range is a
//! `TypeError` or `RangeError` naming the option, before anything touches the disk.

use crate::js::{self, Env, JsResult, JsValue};

pub const DEFAULT_HEARTBEAT_STALE_MS: f64 = 60_000.0;
pub const DEFAULT_POLL_MS: f64 = 500.0;

/// The options `isWorkspaceBusy` and `reclaimStaleLocks` take, shared by `acquireWorkspaceLock`.
pub struct JudgeOptions {
    pub heartbeat_stale_ms: f64,
    pub start_time_resolver: Option<JsValue>,
    pub now: Option<JsValue>,
}

impl JudgeOptions {
    /// With an injected resolver or clock the original's judgement applies, exactly.
    pub fn injected(&self) -> bool {
        self.start_time_resolver.is_some() || self.now.is_some()
    }
}

pub struct AcquireOptions {
    pub judge: JudgeOptions,
    pub fail_on_workspace_busy: bool,
    pub poll_ms: f64,
    pub pid: Option<f64>,
    pub signal: Option<JsValue>,
    pub on_compromised: Option<JsValue>,
    /// Hidden, from backend.js: JSON fields the lockfile record ends with.
    pub backend_record: Option<String>,
}

pub fn require_string(env: Env, v: JsValue, what: &str) -> JsResult<String> {
    if js::type_of(env, v) != napi::sys::ValueType::napi_string {
        return Err(js::type_error(format!(
            "The \"{what}\" argument must be of type string. Received {}",
            js::type_name(env, v)
        )));
    }
    js::get_string(env, v)
}

/// The options object, or `None` when absent or null.
fn options_object(env: Env, opts: Option<JsValue>) -> JsResult<Option<JsValue>> {
    let Some(opts) = opts.filter(|o| !js::is_nullish(env, *o)) else {
        return Ok(None);
    };
    match js::type_of(env, opts) {
        napi::sys::ValueType::napi_object | napi::sys::ValueType::napi_function => Ok(Some(opts)),
        _ => Err(js::type_error(format!(
            "The \"opts\" argument must be an object. Received {}",
            js::type_name(env, opts)
        ))),
    }
}

/// An option's value, `None` when absent/undefined/null.
fn option(env: Env, opts: Option<JsValue>, name: &str) -> JsResult<Option<JsValue>> {
    let Some(opts) = opts else { return Ok(None) };
    let v = js::get_named(env, opts, name)?;
    Ok((!js::is_nullish(env, v)).then_some(v))
}

fn number_option(env: Env, opts: Option<JsValue>, name: &str) -> JsResult<Option<f64>> {
    let Some(v) = option(env, opts, name)? else {
        return Ok(None);
    };
    if js::type_of(env, v) != napi::sys::ValueType::napi_number {
        return Err(js::type_error(format!(
            "opts.{name} must be a number, received {}",
            js::type_name(env, v)
        )));
    }
    Ok(Some(js::get_f64(env, v)))
}

fn function_option(env: Env, opts: Option<JsValue>, name: &str) -> JsResult<Option<JsValue>> {
    let Some(v) = option(env, opts, name)? else {
        return Ok(None);
    };
    if !js::is_function(env, v) {
        return Err(js::type_error(format!(
            "opts.{name} must be a function, received {}",
            js::type_name(env, v)
        )));
    }
    Ok(Some(v))
}

fn milliseconds(
    name: &str,
    value: Option<f64>,
    default: f64,
    allow_infinity: bool,
) -> JsResult<f64> {
    let Some(ms) = value else { return Ok(default) };
    let ok = ms >= 0.0 && (allow_infinity || ms.is_finite());
    if !ok {
        let bound = if allow_infinity {
            "a number >= 0"
        } else {
            "a finite number >= 0"
        };
        return Err(js::range_error(format!(
            "opts.{name} must be {bound}, received {}",
            js_number(ms)
        )));
    }
    Ok(ms)
}

fn js_number(n: f64) -> String {
    if n.is_nan() {
        "NaN".into()
    } else if n.is_infinite() {
        if n > 0.0 { "Infinity" } else { "-Infinity" }.into()
    } else {
        workspace_lock_core::js_semantics::number_to_js_string(n)
    }
}

pub fn judge_options(env: Env, opts: Option<JsValue>) -> JsResult<JudgeOptions> {
    let opts = options_object(env, opts)?;
    Ok(JudgeOptions {
        heartbeat_stale_ms: milliseconds(
            "heartbeatStaleMs",
            number_option(env, opts, "heartbeatStaleMs")?,
            DEFAULT_HEARTBEAT_STALE_MS,
            true,
        )?,
        start_time_resolver: function_option(env, opts, "startTimeResolver")?,
        now: function_option(env, opts, "now")?,
    })
}

/// The hidden option by which backend.js has the lockfile record carry the backend's fields
/// (a string option name no user passes by accident).
const BACKEND_RECORD_OPTION: &str = "__workspaceLockBackendRecord";

pub fn acquire_options(env: Env, opts: Option<JsValue>) -> JsResult<AcquireOptions> {
    let judge = judge_options(env, opts)?;
    let opts = options_object(env, opts)?;
    let fail_on_workspace_busy = match option(env, opts, "failOnWorkspaceBusy")? {
        None => false,
        Some(v) if js::type_of(env, v) == napi::sys::ValueType::napi_boolean => {
            js::get_bool(env, v)
        }
        Some(v) => {
            return Err(js::type_error(format!(
                "opts.failOnWorkspaceBusy must be a boolean, received {}",
                js::type_name(env, v)
            )))
        }
    };
    let poll_ms = milliseconds(
        "pollMs",
        number_option(env, opts, "pollMs")?,
        DEFAULT_POLL_MS,
        false,
    )?;
    let pid = match number_option(env, opts, "pid")? {
        None => None,
        Some(p) if p >= 1.0 && p <= f64::from(i32::MAX) && p.fract() == 0.0 => Some(p),
        Some(p) => {
            return Err(js::range_error(format!(
                "opts.pid must be a positive integer process id, received {}",
                js_number(p)
            )))
        }
    };
    let signal = match option(env, opts, "signal")? {
        None => None,
        Some(s) => {
            let looks_like_signal = js::type_of(env, s) == napi::sys::ValueType::napi_object
                && js::is_function(env, js::get_named(env, s, "addEventListener")?)
                && js::is_function(env, js::get_named(env, s, "removeEventListener")?);
            if !looks_like_signal {
                return Err(js::type_error(format!(
                    "opts.signal must be an AbortSignal, received {}",
                    js::type_name(env, s)
                )));
            }
            Some(s)
        }
    };
    Ok(AcquireOptions {
        judge,
        fail_on_workspace_busy,
        poll_ms,
        pid,
        signal,
        on_compromised: function_option(env, opts, "onCompromised")?,
        backend_record: match option(env, opts, BACKEND_RECORD_OPTION)? {
            Some(v) if js::type_of(env, v) == napi::sys::ValueType::napi_string => {
                Some(js::get_string(env, v)?)
            }
            _ => None,
        },
    })
}
