#![deny(clippy::all)]
//! The napi binding of the workspace lock: converts JavaScript values and errors to and from
//! the pure Rust core (`workspace-lock-core`) and keeps nothing else.

mod acquire;
#[cfg(feature = "postgres")]
pub mod backend_pg;
mod handle;
mod inspect;
mod js;
mod judge;
mod options;

use js::JsResult;
use napi::bindgen_prelude::*;
use napi::sys;
use napi_derive::napi;
use std::cell::Cell;
use std::path::PathBuf;
use workspace_lock_core::error::{LockError, EISDIR};
use workspace_lock_core::js_semantics::node_path_join;
use workspace_lock_core::kernel_lock::OwnerFile;
use workspace_lock_core::liveness::Verdict;
use workspace_lock_core::lockfile_io::{observe_workspace_lock, Observed};
use workspace_lock_core::paths::{workspace_lock_path as core_lock_path, PathContext};
use workspace_lock_core::process_probe::start_time_of;
use workspace_lock_core::protocol::{is_being_written, reclaim_stale};

fn lock_path_of(cwd: &str) -> JsResult<PathBuf> {
    let ctx = PathContext::for_cwd(cwd)?;
    Ok(core_lock_path(cwd, &ctx)?)
}

/// Runs a synchronous export: a failure is thrown as the exact JavaScript value it stands
/// for (a thrown callback value unchanged, or our TypeError/RangeError/fs-style Error).
fn run_sync<'env>(
    env: &'env Env,
    body: impl FnOnce(sys::napi_env) -> JsResult<sys::napi_value>,
) -> Result<Unknown<'env>> {
    let raw = env.raw();
    match body(raw) {
        // SAFETY: the value was created in this env during this call.
        Ok(v) => Ok(unsafe { Unknown::from_raw_unchecked(raw, v) }),
        Err(fail) => {
            let thrown = js::error_value(raw, &fail);
            // SAFETY: as above; napi-rs rethrows this very value.
            Err(Error::from(unsafe {
                Unknown::from_raw_unchecked(raw, thrown)
            }))
        }
    }
}

/// The prologue of the synchronous judging exports: `subject` must be a string (named
/// `what` in errors), `opts` the judge options; then `body` runs with both.
fn run_judged<'env>(
    env: &'env Env,
    subject: Unknown<'env>,
    what: &str,
    opts: Option<Unknown<'env>>,
    body: impl FnOnce(sys::napi_env, String, &judge::Judge<'_>) -> JsResult<sys::napi_value>,
) -> Result<Unknown<'env>> {
    run_sync(env, |raw| {
        // A judgement may keep an owner file open: closed at the env's teardown.
        ensure_env_cleanup(raw);
        let subject = options::require_string(raw, subject.raw(), what)?;
        let opts = options::judge_options(raw, opts.map(|o| o.raw()))?;
        let judge = judge::Judge::new(raw, &opts);
        body(raw, subject, &judge)
    })
}

thread_local! {
    static CLEANUP_REGISTERED: Cell<bool> = const { Cell::new(false) };
}

/// At env teardown (process exit, worker termination) held locks are released, pending
/// acquisitions stop and kept files are closed, so nothing is left behind and no attempt
/// runs for a dead env.
fn ensure_env_cleanup(env: sys::napi_env) {
    if CLEANUP_REGISTERED.with(|c| c.replace(true)) {
        return;
    }
    unsafe extern "C" fn cleanup(_arg: *mut std::ffi::c_void) {
        acquire::abandon_all_pending();
        handle::release_all_held();
        handle::forget_cached();
        workspace_lock_core::lockfile_io::drop_spares();
        workspace_lock_core::kernel_lock::forget_judging_files();
        CLEANUP_REGISTERED.with(|c| c.set(false));
    }
    // SAFETY: registers a plain function with no data on this env.
    unsafe { sys::napi_add_env_cleanup_hook(env, Some(cleanup), std::ptr::null_mut()) };
    // `process.exit()` and a crash on an uncaught exception skip env cleanup hooks but
    // still emit 'exit': release there too, so that waiters of the original module (which
    // cannot see our kernel lock) are not left waiting for a heartbeat to expire.
    let _ = release_on_process_exit(env);
}

fn release_on_process_exit(env: sys::napi_env) -> JsResult<()> {
    let process = js::get_named(env, js::global(env), "process")?;
    let on = js::get_named(env, process, "on")?;
    if !js::is_function(env, on) {
        return Ok(());
    }
    let napi_env = Env::from_raw(env);
    let listener = napi_env.create_function_from_closure::<(), (), _>(
        "releaseWorkspaceLocksOnExit",
        |_ctx| {
            acquire::abandon_all_pending();
            handle::release_all_held();
            workspace_lock_core::lockfile_io::drop_spares();
            Ok(())
        },
    )?;
    js::call(env, on, process, &[js::string(env, "exit"), listener.raw()])?;
    Ok(())
}

/// `workspaceLockPath(cwd)`: where pi-crew keeps the lockfile of `cwd`.
#[napi(
    catch_unwind,
    js_name = "workspaceLockPath",
    ts_args_type = "cwd: string",
    ts_return_type = "string"
)]
pub fn workspace_lock_path<'env>(env: &'env Env, cwd: Unknown<'env>) -> Result<Unknown<'env>> {
    run_sync(env, |raw| {
        let cwd = options::require_string(raw, cwd.raw(), "cwd")?;
        let path = lock_path_of(&cwd)?;
        Ok(js::string(raw, &path.to_string_lossy()))
    })
}

/// `defaultStartTimeResolver(pid)`: the original's `/proc/<pid>/stat` start time.
#[napi(
    catch_unwind,
    js_name = "defaultStartTimeResolver",
    ts_args_type = "pid: number",
    ts_return_type = "number | undefined"
)]
pub fn default_start_time_resolver<'env>(
    env: &'env Env,
    pid: Unknown<'env>,
) -> Result<Unknown<'env>> {
    run_sync(env, |raw| {
        // `/proc/${pid}/stat`: the pid as a template literal prints it.
        let text = match js::type_of(raw, pid.raw()) {
            sys::ValueType::napi_number => {
                let n = js::get_f64(raw, pid.raw());
                workspace_lock_core::js_semantics::number_to_js_string(n)
            }
            sys::ValueType::napi_string => js::get_string(raw, pid.raw())?,
            _ => String::new(),
        };
        Ok(start_time_of(&text).map_or_else(|| js::undefined(raw), |st| js::number(raw, st)))
    })
}

/// `acquireWorkspaceLock(cwd, goalId, opts?)`.
#[napi(
    catch_unwind,
    js_name = "acquireWorkspaceLock",
    ts_args_type = "cwd: string, goalId: string, opts?: AcquireWorkspaceLockOptions",
    ts_return_type = "Promise<WorkspaceLockHandle>"
)]
pub fn acquire_workspace_lock<'env>(
    env: &'env Env,
    cwd: Unknown<'env>,
    goal_id: Unknown<'env>,
    opts: Option<Unknown<'env>>,
) -> Result<Unknown<'env>> {
    ensure_env_cleanup(env.raw());
    run_sync(env, |raw| {
        acquire::acquire(raw, cwd.raw(), goal_id.raw(), opts.map(|o| o.raw()))
    })
}

/// `isWorkspaceBusy(cwd, opts?)`: the live holder's goalId, or `undefined`.
#[napi(
    catch_unwind,
    js_name = "isWorkspaceBusy",
    ts_args_type = "cwd: string, opts?: { startTimeResolver?: StartTimeResolver; heartbeatStaleMs?: number; now?: () => number }",
    ts_return_type = "string | undefined"
)]
pub fn is_workspace_busy<'env>(
    env: &'env Env,
    cwd: Unknown<'env>,
    opts: Option<Unknown<'env>>,
) -> Result<Unknown<'env>> {
    run_judged(env, cwd, "cwd", opts, |raw, cwd, judge| {
        let ctx = PathContext::for_cwd(&cwd)?;
        let (path, seen) = observe_workspace_lock(&cwd, &ctx)?;
        // The verdict an acquisition would reach (busy, or free to claim), as a goalId.
        let young = is_being_written(&seen, judge.opts.heartbeat_stale_ms);
        let record = match &seen {
            Observed::Absent => return Ok(js::undefined(raw)),
            Observed::Directory => {
                return Err(LockError::errno(EISDIR, "open", &path).into());
            }
            Observed::File {
                record: Some(record),
                ..
            } => record,
            // Empty, unparsable, not a file: busy while it may be a claim being written.
            // (An injected judge reads as the original does: no record, no holder.)
            Observed::File { record: None, .. } | Observed::NotAFile { .. } => {
                return Ok(busy_without_goal(raw, young && !judge.opts.injected()));
            }
        };
        let owners = judge.owner_file(&path, record);
        match judge.verdict(record, owners.as_deref())? {
            Verdict::Live => js::from_json(raw, record.goal_id()),
            Verdict::Stale(_) => Ok(js::undefined(raw)),
            Verdict::Malformed => match record.goal_id() {
                Some(serde_json::Value::String(goal)) if young => Ok(js::string(raw, goal)),
                _ => Ok(busy_without_goal(raw, young)),
            },
        }
    })
}

/// What `isWorkspaceBusy` says of a lockfile that names no goal: busy while it may be a
/// claim still being written (as an acquisition judges it), free once it is old.
fn busy_without_goal(raw: sys::napi_env, young: bool) -> sys::napi_value {
    if young {
        js::string(raw, BEING_WRITTEN)
    } else {
        js::undefined(raw)
    }
}

/// `isWorkspaceBusy`'s answer for a lockfile only just created and not yet readable (the
/// original module creates its claim empty and writes it afterwards): busy, by no known goal.
const BEING_WRITTEN: &str = "(a claim being written)";

/// `reclaimStaleLocks(dir, opts?)`: deletes the stale `*.lock` files of `dir`.
#[napi(
    catch_unwind,
    js_name = "reclaimStaleLocks",
    ts_args_type = "dir: string, opts?: { heartbeatStaleMs?: number; startTimeResolver?: StartTimeResolver; now?: () => number }",
    ts_return_type = "string[]"
)]
pub fn reclaim_stale_locks<'env>(
    env: &'env Env,
    dir: Unknown<'env>,
    opts: Option<Unknown<'env>>,
) -> Result<Unknown<'env>> {
    run_judged(env, dir, "dir", opts, |raw, dir, judge| {
        let reclaimed = reclaim_stale(
            std::path::Path::new(&dir),
            &mut |record, owners: Option<&OwnerFile>| judge.verdict(record, owners),
            judge.opts.heartbeat_stale_ms,
        )?;
        let paths = reclaimed.iter().map(|r| {
            let joined = node_path_join(&dir, &String::from_utf8_lossy(&r.file_name));
            Ok(js::string(raw, &joined))
        });
        js::array(raw, paths)
    })
}

/// `inspectWorkspaceLock(cwd, opts?)`: the workspace's lockfile and how it is judged.
#[napi(
    catch_unwind,
    js_name = "inspectWorkspaceLock",
    ts_args_type = "cwd: string, opts?: { startTimeResolver?: StartTimeResolver; heartbeatStaleMs?: number; now?: () => number }",
    ts_return_type = "WorkspaceLockStatus"
)]
pub fn inspect_workspace_lock<'env>(
    env: &'env Env,
    cwd: Unknown<'env>,
    opts: Option<Unknown<'env>>,
) -> Result<Unknown<'env>> {
    run_judged(env, cwd, "cwd", opts, |raw, cwd, judge| {
        let path = lock_path_of(&cwd)?;
        inspect::inspect_path(raw, judge, &path.to_string_lossy(), &path)
    })
}

/// `inspectWorkspaceLocks(dir, opts?)`: every `*.lock` of a locks directory, judged.
#[napi(
    catch_unwind,
    js_name = "inspectWorkspaceLocks",
    ts_args_type = "dir: string, opts?: { startTimeResolver?: StartTimeResolver; heartbeatStaleMs?: number; now?: () => number }",
    ts_return_type = "WorkspaceLockStatus[]"
)]
pub fn inspect_workspace_locks<'env>(
    env: &'env Env,
    dir: Unknown<'env>,
    opts: Option<Unknown<'env>>,
) -> Result<Unknown<'env>> {
    run_judged(env, dir, "dir", opts, |raw, dir, judge| {
        inspect::inspect_dir(raw, judge, &dir)
    })
}

/// Internal, for index.js: registers the function that builds handle objects.
#[napi(
    catch_unwind,
    js_name = "setHandleFactory",
    ts_args_type = "factory: Function, deliverLoss: (lease: number, reason: string) => void"
)]
pub fn set_handle_factory<'env>(
    env: &'env Env,
    factory: Unknown<'env>,
    deliver_loss: Unknown<'env>,
) -> Result<Unknown<'env>> {
    run_sync(env, |raw| {
        handle::set_factory(raw, factory.raw(), deliver_loss.raw())?;
        Ok(js::undefined(raw))
    })
}

/// Internal, for index.js: why a held lease's heartbeat could not be refreshed lately (an
/// Error with Node's `code`, `syscall` and `path`, plus `attempts` and `since`, the
/// wall-clock ms of the first failure), or `undefined` while refreshes work.
#[napi(
    catch_unwind,
    js_name = "leaseRefreshError",
    ts_return_type = "Error | undefined"
)]
pub fn lease_refresh_error<'env>(env: &'env Env, lease: u32) -> Result<Unknown<'env>> {
    run_sync(env, |raw| {
        let Some(failure) = handle::lease_refresh_failure(lease) else {
            return Ok(js::undefined(raw));
        };
        let err = js::error_value(raw, &js::Fail::Lock(failure.error));
        js::set_named(
            raw,
            err,
            "attempts",
            js::number(raw, f64::from(failure.attempts)),
        )?;
        js::set_named(raw, err, "since", js::number(raw, failure.since_ms))?;
        Ok(err)
    })
}

/// A lost-lock reason as JavaScript sees it: a string, or `undefined`.
fn reason_value(raw: sys::napi_env, reason: Option<String>) -> JsResult<sys::napi_value> {
    Ok(reason.map_or_else(|| js::undefined(raw), |r| js::string(raw, &r)))
}

/// Internal, for index.js: a handle's `release()`; returns why the lock had been lost
/// before, if it had.
#[napi(
    catch_unwind,
    js_name = "releaseLease",
    ts_return_type = "string | undefined"
)]
pub fn release_lease<'env>(env: &'env Env, lease: u32) -> Result<Unknown<'env>> {
    run_sync(env, |raw| reason_value(raw, handle::release_lease(lease)))
}

/// Internal, for index.js: why a held lease's lock was lost, if it was.
#[napi(
    catch_unwind,
    js_name = "leaseLost",
    ts_return_type = "string | undefined"
)]
pub fn lease_lost<'env>(env: &'env Env, lease: u32) -> Result<Unknown<'env>> {
    run_sync(env, |raw| reason_value(raw, handle::lease_lost(lease)))
}
