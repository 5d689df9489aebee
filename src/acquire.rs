//! `acquireWorkspaceLock`: the original's loop, with its first attempt run synchronously in
//! the call (as the original's async function does before its first `await`), and every
//! later attempt run on the JS thread when the core's waiter reports that the lock may be
//! free (a release, the holder's death, or the `pollMs` fallback). Waiting costs no thread
//! of the libuv pool and no CPU; an abort rejects at once and removes its listener. Every
//! decision of the wait (its turn in line, which wait it registers, whether a takeover
//! settles, which failures end it) is the core's (`waiting::turns`); this file holds the
//! promise and the JavaScript values, and does what it is told.

use crate::handle::{lost_notifier, make_handle, next_lease, HandleFields};
use crate::js::{self, Env, Fail, JsRef, JsResult, JsValue};
use crate::judge::Judge;
use crate::options::{AcquireOptions, JudgeOptions};
use napi::bindgen_prelude::*;
use napi::sys;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::JsValue as _;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ptr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use workspace_lock_core::error::LockError;
use workspace_lock_core::held_lock::wall_clock_ms;
use workspace_lock_core::held_lock::HeldLock;
use workspace_lock_core::host::host_identity;
use workspace_lock_core::js_semantics::{iso_string, template_string};
use workspace_lock_core::kernel_lock::OwnerFile;
use workspace_lock_core::liveness::Verdict;
use workspace_lock_core::lockfile_io::LockTarget;
use workspace_lock_core::paths::PathContext;
use workspace_lock_core::process_probe::own_pid;
use workspace_lock_core::protocol::{
    lock_path_for_claim, try_claim, Busy, ClaimOutcome, Claimant, Reclaim,
};
use workspace_lock_core::record::{NewRecord, ParsedRecord};
use workspace_lock_core::waiting::{
    self, FirstWait, Turn, WaitId, WaitSpec, WaitingAcquisition, WakeReason, SETTLE,
};

/// The longest fallback wait between two checks (Node's own timer limit).
const MAX_POLL_MS: f64 = 2_147_483_647.0;

/// What an acquisition needs besides the caller's JavaScript callbacks.
struct Request {
    cwd: String,
    goal_id: String,
    target: LockTarget,
    lock_path: String,
    fail_on_workspace_busy: bool,
    poll: Duration,
    pid: f64,
    written_start_time: Option<f64>,
    heartbeat_stale_ms: f64,
    injected: bool,
    /// The lock backend's record fields (index.js's hidden option), if any.
    backend: Option<String>,
}

/// The caller's callbacks, as live values for one attempt.
struct Callbacks {
    judge: JudgeOptions,
    signal: Option<JsValue>,
    on_compromised: Option<JsValue>,
}

struct BindingClaimant<'a> {
    request: &'a Request,
    judge: Judge<'a>,
}

impl Claimant for BindingClaimant<'_> {
    type Error = Fail;

    fn judge(&mut self, record: &ParsedRecord, owners: Option<&OwnerFile>) -> JsResult<Verdict> {
        self.judge.verdict(record, owners)
    }

    fn record(&mut self) -> JsResult<NewRecord> {
        let heartbeat = self.judge.now()?;
        let acquired = self.judge.now()?;
        let invalid = || js::range_error("Invalid time value");
        if !heartbeat.is_finite() {
            return Err(invalid());
        }
        let acquired_at = iso_string(acquired).ok_or_else(invalid)?;
        Ok(NewRecord {
            pid: self.request.pid,
            start_time: self.request.written_start_time,
            heartbeat,
            goal_id: self.request.goal_id.clone(),
            acquired_at,
            host: host_identity().clone(),
            owner_lock: None,
            owner_file: None,
            backend: self.request.backend.clone(),
        })
    }
}

enum Step {
    Acquired(JsValue),
    /// Claimed over a stale lock that a process of the original module may be reclaiming at
    /// the same moment: resolved only once the claim has survived [`SETTLE`].
    Settle(HeldClaim),
    Wait(Busy),
}

/// A claim held and not yet handed out (at once, or once it has waited out [`SETTLE`]).
struct HeldClaim {
    lease: u32,
    held: Arc<HeldLock>,
    reclaimed: Option<Reclaim>,
    /// When it has settled (if it must).
    until: Instant,
}

fn is_aborted(env: Env, signal: Option<JsValue>) -> JsResult<bool> {
    let Some(signal) = signal else {
        return Ok(false);
    };
    let aborted = js::get_named(env, signal, "aborted")?;
    let mut truthy = ptr::null_mut();
    // SAFETY: aborted is a live value of env.
    unsafe { sys::napi_coerce_to_bool(env, aborted, &mut truthy) };
    Ok(js::get_bool(env, truthy))
}

/// The original checks `signal.aborted` first, at every turn.
fn check_not_aborted(env: Env, request: &Request, callbacks: &Callbacks) -> JsResult<()> {
    if is_aborted(env, callbacks.signal)? {
        return Err(Fail::Lock(LockError::Aborted(format!(
            "workspace lock acquisition aborted for goal {} (cwd={})",
            request.goal_id, request.cwd
        ))));
    }
    Ok(())
}

/// One turn of the original's loop.
/// `owners`: the directory's owner file when finding the lock path already opened it.
fn attempt(
    env: Env,
    request: &Request,
    callbacks: &Callbacks,
    owners: Option<OwnerFile>,
) -> JsResult<Step> {
    check_not_aborted(env, request, callbacks)?;
    let mut claimant = BindingClaimant {
        request,
        judge: Judge::new(env, &callbacks.judge),
    };
    match try_claim(
        &request.target,
        &mut claimant,
        request.heartbeat_stale_ms,
        owners,
    )? {
        ClaimOutcome::Claimed(claim) => {
            let lease = next_lease();
            let on_lost = callbacks.on_compromised.and_then(|_| lost_notifier(lease));
            // A test clock owns time: with an injected `now` the heartbeat is never rewritten.
            let refresh = callbacks.judge.now.is_none();
            let reclaimed = claim.reclaimed.clone();
            // The original unlinks whatever is at the path once it judged the lock stale:
            // a takeover it may be racing is confirmed before it counts (and every claim is
            // watched closely at first, see HeldLock::hold).
            let settle = waiting::must_settle(
                reclaimed.as_ref(),
                request.injected,
                request.heartbeat_stale_ms,
                wall_clock_ms(),
            );
            let held = HeldLock::hold(*claim, refresh, request.heartbeat_stale_ms, on_lost)?;
            let claim = HeldClaim {
                lease,
                held,
                reclaimed,
                until: Instant::now() + SETTLE,
            };
            if settle {
                return Ok(Step::Settle(claim));
            }
            Ok(Step::Acquired(hand_out(env, request, callbacks, claim)?))
        }
        ClaimOutcome::Busy(busy) if request.fail_on_workspace_busy => {
            let holder = busy.holder.as_ref();
            Err(Fail::Lock(LockError::Busy(format!(
                "workspace busy: cwd={} held by goalId={} (pid={})",
                request.cwd,
                template_string(holder.and_then(|h| h.goal_id())),
                template_string(holder.and_then(|h| h.pid())),
            ))))
        }
        ClaimOutcome::Busy(busy) => Ok(Step::Wait(busy)),
    }
}

/// The handle of a held claim.
fn hand_out(
    env: Env,
    request: &Request,
    callbacks: &Callbacks,
    claim: HeldClaim,
) -> JsResult<JsValue> {
    let fields = HandleFields {
        cwd: &request.cwd,
        goal_id: &request.goal_id,
        lock_path: &request.lock_path,
        start_time: request.written_start_time,
        reclaimed: claim.reclaimed.as_ref(),
        on_compromised: callbacks.on_compromised,
    };
    make_handle(env, claim.lease, &fields, claim.held)
}

pub fn acquire(
    env: Env,
    cwd: JsValue,
    goal_id: JsValue,
    opts: Option<JsValue>,
) -> JsResult<JsValue> {
    let mut deferred = ptr::null_mut();
    let mut promise = ptr::null_mut();
    // SAFETY: env is the live env of this call.
    let status = unsafe { sys::napi_create_promise(env, &mut deferred, &mut promise) };
    if status != sys::Status::napi_ok {
        return Err(js::type_error("could not create a promise"));
    }
    // Every failure rejects, as from the original's async function; nothing throws.
    match start(env, cwd, goal_id, opts) {
        Ok(Started::Done(handle)) => settle(env, deferred, Ok(handle)),
        Ok(Started::Waiting(waiting)) => {
            let (request, callbacks, next) = *waiting;
            if let Err(fail) = begin_waiting(env, deferred, request, callbacks, next) {
                settle(env, deferred, Err(fail));
            }
        }
        Err(fail) => settle(env, deferred, Err(fail)),
    }
    Ok(promise)
}

enum Started {
    Done(JsValue),
    Waiting(Box<(Request, Callbacks, Next)>),
}

/// What a waiting acquisition waits for.
enum Next {
    /// The lock to be freed.
    Free(Busy),
    /// Its claim to settle.
    Settled(HeldClaim),
}

fn start(env: Env, cwd: JsValue, goal_id: JsValue, opts: Option<JsValue>) -> JsResult<Started> {
    let cwd = crate::options::require_string(env, cwd, "cwd")?;
    let goal_id = crate::options::require_string(env, goal_id, "goalId")?;
    let options: AcquireOptions = crate::options::acquire_options(env, opts)?;
    let (lock_path, owners) = lock_path_for_claim(&cwd, &PathContext::for_cwd(&cwd)?)?;
    let pid = options.pid.unwrap_or(f64::from(own_pid()));
    let judge = Judge::new(env, &options.judge);
    let written_start_time = judge.start_time(Some(&serde_json::Value::from(pid)))?;
    if written_start_time.is_some_and(|st| !st.is_finite()) {
        return Err(js::range_error(
            "opts.startTimeResolver must return a finite number or undefined for the holder's pid",
        ));
    }
    let request = Request {
        lock_path: lock_path.to_string_lossy().into_owned(),
        target: LockTarget::new(lock_path),
        cwd,
        goal_id,
        fail_on_workspace_busy: options.fail_on_workspace_busy,
        // Node clamps timers to 2^31-1 ms as well; beyond that Duration math would overflow.
        poll: Duration::from_millis(options.poll_ms.clamp(1.0, MAX_POLL_MS) as u64),
        pid,
        written_start_time,
        heartbeat_stale_ms: options.judge.heartbeat_stale_ms,
        injected: options.judge.injected(),
        backend: options.backend_record,
    };
    let callbacks = Callbacks {
        judge: options.judge,
        signal: options.signal,
        on_compromised: options.on_compromised,
    };
    // Others of this process wait for this lock: wait behind them, in arrival order.
    if waiting::joins_the_line(&request.target.path, request.fail_on_workspace_busy) {
        check_not_aborted(env, &request, &callbacks)?;
        let behind = Next::Free(Busy::held_by(None));
        return Ok(Started::Waiting(Box::new((request, callbacks, behind))));
    }
    let next = match attempt(env, &request, &callbacks, owners) {
        Ok(Step::Acquired(handle)) => return Ok(Started::Done(handle)),
        Ok(Step::Settle(claim)) => Next::Settled(claim),
        Ok(Step::Wait(busy)) => Next::Free(busy),
        // Out of descriptors or memory for a moment: wait and look again, unless asked not to.
        Err(fail)
            if relook_after(&fail, request.poll).is_some() && !request.fail_on_workspace_busy =>
        {
            Next::Free(Busy::held_by(None))
        }
        Err(fail) => return Err(fail),
    };
    Ok(Started::Waiting(Box::new((request, callbacks, next))))
}

fn settle(env: Env, deferred: sys::napi_deferred, outcome: JsResult<JsValue>) {
    // SAFETY: each deferred is settled exactly once, on its env's thread.
    unsafe {
        match outcome {
            Ok(v) => sys::napi_resolve_deferred(env, deferred, v),
            Err(fail) => sys::napi_reject_deferred(env, deferred, js::error_value(env, &fail)),
        }
    };
}

type RetryFn = ThreadsafeFunction<(u64, WakeReason), (), (), Status, false>;

/// An acquisition waiting for its next attempt.
struct Pending {
    deferred: sys::napi_deferred,
    request: Request,
    resolver: Option<JsRef>,
    now: Option<JsRef>,
    signal: Option<JsRef>,
    on_compromised: Option<JsRef>,
    abort_listener: Option<JsRef>,
    retry: Arc<RetryFn>,
    wait: Option<WaitId>,
    /// What its waits are made of (see [`waiting::WaitingAcquisition`]).
    waiter: WaitingAcquisition,
    /// The holder found at the last attempt: finding another claim after a wake-up means
    /// a lost race.
    waited_on: Option<ParsedRecord>,
    /// Its place in this process's line for the lock (left when it settles), and so its
    /// arrival order, kept across re-parks: the earliest waiter is woken first.
    line: waiting::LinePlace,
    /// A claim waiting out [`SETTLE`] (released if the acquisition ends otherwise).
    settling: Option<HeldClaim>,
}

/// Arrival order of waiters across every JS thread of the process.
static ARRIVAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

thread_local! {
    static PENDING: RefCell<HashMap<u64, Pending>> = RefCell::new(HashMap::new());
    static NEXT_ID: Cell<u64> = const { Cell::new(1) };
}

fn reference(env: Env, v: Option<JsValue>) -> JsResult<Option<JsRef>> {
    v.map(|v| JsRef::new(env, v)).transpose()
}

fn begin_waiting(
    env: Env,
    deferred: sys::napi_deferred,
    request: Request,
    callbacks: Callbacks,
    next: Next,
) -> JsResult<()> {
    crate::ensure_env_cleanup(env);
    // No wait without the thread that ends it.
    waiting::ensure_watcher()?;
    let id = NEXT_ID.with(|n| {
        let id = n.get();
        n.set(id + 1);
        id
    });
    let napi_env = napi::Env::from_raw(env);
    let base =
        napi_env.create_function_from_closure::<(), (), _>("workspaceLockRetry", |_ctx| Ok(()))?;
    // Keeps the event loop alive while waiting, as the original's timer does.
    let retry: RetryFn = base
        .build_threadsafe_function::<(u64, WakeReason)>()
        .callee_handled::<false>()
        .build_callback(move |ctx| {
            let (id, reason) = ctx.value;
            retry(ctx.env.raw(), id, reason);
            Ok(())
        })?;
    let abort_listener = match callbacks.signal {
        Some(signal) => {
            let listener = napi_env.create_function_from_closure::<(), (), _>(
                "onWorkspaceLockAbort",
                move |ctx| {
                    abort(ctx.env.raw(), id);
                    Ok(())
                },
            )?;
            let add = js::get_named(env, signal, "addEventListener")?;
            js::call(
                env,
                add,
                signal,
                &[js::string(env, "abort"), listener.raw()],
            )?;
            Some(JsRef::new(env, listener.raw())?)
        }
        None => None,
    };
    let order = ARRIVAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let waiter = WaitingAcquisition {
        lock_path: request.target.path.clone(),
        locks_dir: request.target.dir.clone(),
        poll: request.poll,
        injected: request.injected,
        heartbeat_stale_ms: request.heartbeat_stale_ms,
        order,
    };
    let pending = Pending {
        line: waiting::LinePlace::join(&request.target.path, order),
        deferred,
        resolver: reference(env, callbacks.judge.start_time_resolver)?,
        now: reference(env, callbacks.judge.now)?,
        signal: reference(env, callbacks.signal)?,
        on_compromised: reference(env, callbacks.on_compromised)?,
        abort_listener,
        retry: Arc::new(retry),
        wait: None,
        waiter,
        waited_on: None,
        request,
        settling: None,
    };
    let busy = match next {
        Next::Free(busy) => busy,
        Next::Settled(claim) => {
            park_settling(pending, id, claim);
            return Ok(());
        }
    };
    match pending.waiter.first_wait(&pending.line, &busy) {
        FirstWait::Behind(wait) => park_behind(pending, id, wait),
        FirstWait::ForTheLock(pause) => park(pending, id, busy, pause),
    }
    Ok(())
}

/// Waits for the next event that may free the lock (see
/// [`WaitingAcquisition::for_the_lock`]), and looks once more if it changed meanwhile.
fn park(mut pending: Pending, id: u64, busy: Busy, pause: Option<Duration>) {
    let spec = pending.waiter.for_the_lock(&busy, pause);
    register(&mut pending, id, spec);
    // The retry this may trigger runs on this thread, later.
    if pending.waiter.changed_since_look(&busy, pause) {
        waiting::nudge(&pending.request.target.path);
    }
    pending.waited_on = busy.holder;
    PENDING.with(|p| p.borrow_mut().insert(id, pending));
}

/// Waits behind earlier waiters of this process (see [`WaitingAcquisition::behind`]).
fn park_behind(mut pending: Pending, id: u64, wait: Duration) {
    let spec = pending.waiter.behind(wait);
    register(&mut pending, id, spec);
    PENDING.with(|p| p.borrow_mut().insert(id, pending));
}

/// Waits out [`SETTLE`] for a claim (see [`WaitingAcquisition::settling`]).
fn park_settling(mut pending: Pending, id: u64, claim: HeldClaim) {
    let spec = pending.waiter.settling(claim.until);
    pending.settling = Some(claim);
    register(&mut pending, id, spec);
    PENDING.with(|p| p.borrow_mut().insert(id, pending));
}

/// Registers the wait: at its first event the retry runs on the acquisition's JS thread.
fn register(pending: &mut Pending, id: u64, spec: WaitSpec) {
    let retry = pending.retry.clone();
    pending.wait = Some(waiting::register(
        spec,
        Box::new(move |reason| {
            retry.call((id, reason), ThreadsafeFunctionCallMode::NonBlocking);
        }),
    ));
}

fn take(id: u64) -> Option<Pending> {
    PENDING.with(|p| p.borrow_mut().remove(&id))
}

/// The next attempt, on the JS thread.
fn retry(env: Env, id: u64, woken_by: WakeReason) {
    // Gone already (aborted after it was woken): its finish() passed the turn on.
    let Some(mut pending) = take(id) else { return };
    let callbacks = Callbacks {
        judge: JudgeOptions {
            heartbeat_stale_ms: pending.request.heartbeat_stale_ms,
            start_time_resolver: pending.resolver.as_ref().map(JsRef::get),
            now: pending.now.as_ref().map(JsRef::get),
        },
        signal: pending.signal.as_ref().map(JsRef::get),
        on_compromised: pending.on_compromised.as_ref().map(JsRef::get),
    };
    if let Some(claim) = pending.settling.take() {
        // Woken early (a nudge for the lock path): the claim has not settled yet.
        if Instant::now() < claim.until {
            return park_settling(pending, id, claim);
        }
        if claim.held.confirm() {
            let handed = hand_out(env, &pending.request, &callbacks, claim);
            return finish(env, pending, handed);
        }
        // Replaced meanwhile (an original-module process took it over too): not ours after
        // all. Let go of what is left of it and try again, as after any lost race.
        claim.held.release();
    }
    // An earlier waiter of this process goes first (see waiting::turn).
    if let Turn::WaitBehind(wait) = waiting::turn(woken_by, &pending.line, pending.request.poll) {
        let aborted = pending.signal.as_ref().map(JsRef::get);
        if matches!(is_aborted(env, aborted), Ok(true)) {
            finish(env, pending, Err(aborted_while_waiting()));
        } else {
            park_behind(pending, id, wait);
        }
        return;
    }
    match attempt(env, &pending.request, &callbacks, None) {
        Ok(Step::Acquired(handle)) => finish(env, pending, Ok(handle)),
        Ok(Step::Settle(claim)) => park_settling(pending, id, claim),
        // A callback may have aborted the signal during this attempt.
        Ok(Step::Wait(_)) if matches!(is_aborted(env, callbacks.signal), Ok(true)) => {
            finish(env, pending, Err(aborted_while_waiting()))
        }
        Ok(Step::Wait(busy)) => {
            let pause =
                waiting::pause_after(woken_by, pending.waited_on.as_ref(), busy.holder.as_ref());
            park(pending, id, busy, pause)
        }
        // Out of descriptors or memory for a moment: the wait goes on, and looks again soon.
        Err(fail) => match relook_after(&fail, pending.request.poll) {
            Some(wait) => park_behind(pending, id, wait),
            None => finish(env, pending, Err(fail)),
        },
    }
}

/// How soon to look again after a failed look, if the wait goes on
/// ([`waiting::relook_after`]).
fn relook_after(fail: &Fail, poll: Duration) -> Option<Duration> {
    match fail {
        Fail::Lock(e) => waiting::relook_after(e, poll),
        _ => None,
    }
}

fn aborted_while_waiting() -> Fail {
    Fail::Lock(LockError::Aborted(
        "workspace lock acquisition aborted".into(),
    ))
}

/// The abort listener: rejects at once.
fn abort(env: Env, id: u64) {
    if let Some(pending) = take(id) {
        finish(env, pending, Err(aborted_while_waiting()));
    }
}

/// Settles a waiting acquisition and lets go of everything it held.
fn finish(env: Env, mut pending: Pending, outcome: JsResult<JsValue>) {
    if let Some(wait) = pending.wait.take() {
        waiting::cancel(wait);
    }
    // Aborted while its claim settled: the claim goes.
    if let Some(claim) = pending.settling.take() {
        claim.held.release();
    }
    // Out of line before the next one is woken, so that it is first when it looks.
    pending.line.leave();
    if outcome.is_err() {
        // It may have been the one woken for a release: let the next in line look.
        waiting::nudge(&pending.request.target.path);
    }
    if let (Some(signal), Some(listener)) = (&pending.signal, &pending.abort_listener) {
        let signal = signal.get();
        if let Ok(remove) = js::get_named(env, signal, "removeEventListener") {
            let _ = js::call(
                env,
                remove,
                signal,
                &[js::string(env, "abort"), listener.get()],
            );
        }
    }
    settle(env, pending.deferred, outcome);
}

/// Env teardown: pending acquisitions stop waiting; the engine frees their JS values.
pub fn abandon_all_pending() {
    let all: Vec<Pending> = PENDING.with(|p| p.borrow_mut().drain().map(|(_, v)| v).collect());
    for mut pending in all {
        if let Some(wait) = pending.wait.take() {
            waiting::cancel(wait);
        }
        if let Some(claim) = pending.settling.take() {
            claim.held.release();
        }
        pending.line.leave();
        waiting::nudge(&pending.request.target.path);
        for r in [
            pending.resolver.take(),
            pending.now.take(),
            pending.signal.take(),
            pending.on_compromised.take(),
            pending.abort_listener.take(),
        ]
        .into_iter()
        .flatten()
        {
            r.forget();
        }
    }
}
