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
use workspace_lock_core::js_semantics::node_path_join;
use workspace_lock_core::kernel_lock::OwnerFile;
use workspace_lock_core::liveness::Verdict;
use workspace_lock_core::lockfile_io::{observe_workspace_lock, Observed};
use workspace_lock_core::paths::{workspace_lock_path as core_lock_path, PathContext};
use workspace_lock_core::process_probe::start_time_of;
use workspace_lock_core::protocol::reclaim_stale;

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
        let Observed::File {
            record: Some(record),
            ..
        } = seen
        else {
            return Ok(js::undefined(raw));
        };
        let owners = judge.owner_file(&path, &record);
        match judge.verdict(&record, owners.as_deref())? {
            Verdict::Live => js::from_json(raw, record.goal_id()),
            Verdict::Stale(_) | Verdict::Malformed => Ok(js::undefined(raw)),
        }
    })
}

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
    ts_args_type = "factory: Function"
)]
pub fn set_handle_factory<'env>(env: &'env Env, factory: Unknown<'env>) -> Result<Unknown<'env>> {
    run_sync(env, |raw| {
        handle::set_factory(raw, factory.raw())?;
        Ok(js::undefined(raw))
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
