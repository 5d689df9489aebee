//! The workspace lock held in PostgreSQL (no napi here; `src/backend_pg.rs` binds it).
//!
//! * The lock is a session-level advisory lock, `pg_advisory_lock(key)`, on a connection of
//!   its own: waiters queue in the server, the server frees it the moment the session ends.
//! * While it is held the session runs with `idle_session_timeout = lease`: a holder that
//!   stops talking (stopped, partitioned) loses its session, and so the lock, `lease` after
//!   the server last heard from it. The holder sends a heartbeat every `lease / 4` and counts
//!   itself lost at `send time of its last answered heartbeat + lease - margin`, before the
//!   server can free it (see [`Lease`]).
//! * Fencing tokens: `epoch << 40 | nextval(sequence)`, taken in the statement that wins the
//!   lock (or the first one after a wait), so tokens strictly increase across hosts and server
//!   restarts. The holder's row in `workspace_lock_tokens` (what busy messages and inspect
//!   show) is written by a statement pipelined right behind it, which the acquisition does
//!   not wait for (see [`queue_holder_row`]).

mod key;
mod target;
mod tls;

pub use key::{derive_key, WorkspaceKey};
use target::first_value;
pub use target::{BackendError, Target};
pub use tokio;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::Poll;
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_postgres::{Client, Statement};

/// The shortest lease: `idle_session_timeout` counts in milliseconds, and a lease must leave
/// room for a few heartbeats and the margin.
pub const MIN_LEASE_MS: u64 = 1000;
/// The default lease.
pub const DEFAULT_LEASE_MS: u64 = 10_000;
/// The longest lease: a lock session's keep-alives start after `lease` of silence (see
/// [`connect`]), and Linux takes at most 32767 s for `TCP_KEEPIDLE` (a server refuses a
/// longer `tcp_keepalives_idle` and keeps its own, which a longer lease could outlast).
pub const MAX_LEASE_MS: u64 = 32_767_000;

static RUNTIME: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();

/// The backend's runtime: one worker thread, started on first use only.
pub fn runtime() -> Result<&'static tokio::runtime::Runtime, BackendError> {
    let rt = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("workspace-lock-pg")
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
    });
    rt.as_ref().map_err(|e| {
        BackendError::new(
            "EBACKENDRUNTIME",
            format!("cannot start the backend runtime: {e}"),
        )
    })
}

/// What ended a connection, shared between its driver task and its users.
#[derive(Default)]
pub(crate) struct ConnState {
    pub(crate) ended: Mutex<Option<String>>,
    pub(crate) notify: Notify,
    /// Stops the connection's driver task: the socket closes at once.
    pub(crate) driver: Mutex<Option<tokio::task::AbortHandle>>,
}

impl ConnState {
    fn close(&self) {
        if let Some(h) = self.driver.lock().ok().and_then(|mut d| d.take()) {
            h.abort();
        }
    }

    fn ended(&self) -> Option<String> {
        self.ended.lock().map(|g| g.clone()).unwrap_or(None)
    }
}

/// One server session with the statements this package runs on it (prepared once: a
/// prepared statement costs the server no parse and plan per call, ~30 µs less than the same
/// text sent as a simple query).
struct Conn {
    client: Client,
    state: Arc<ConnState>,
    /// Try-lock and token in one statement: the uncontended acquisition's one round trip.
    fast_stmt: Statement,
    /// The holder's row, written after the token.
    row_stmt: Statement,
    /// Wait for the lock, then a token: a handoff's one round trip.
    lock_stmt: Statement,
    unlock_stmt: Statement,
    /// This server run's epoch, shifted: the high bits of every token taken on it.
    base: i64,
    /// The last token this session took (`base + currval` of the sequence on the server),
    /// which the holder row's statement must see exceeded to write (see [`ROW_SQL`]).
    last_token: AtomicI64,
    /// The pool this session returns to: its target and lease.
    pool_key: String,
}

impl Conn {
    fn alive(&self) -> bool {
        !self.client.is_closed() && self.state.ended().is_none()
    }
}

const TOKEN_TABLE_SQL: &str = "CREATE UNLOGGED TABLE IF NOT EXISTS workspace_lock_tokens (\
    key bigint PRIMARY KEY, token bigint NOT NULL, goal_id text, pid bigint, host text, \
    acquired_at text, workspace text); \
    CREATE TABLE IF NOT EXISTS workspace_lock_epochs (\
    started timestamptz PRIMARY KEY, epoch bigint NOT NULL UNIQUE); \
    CREATE SEQUENCE IF NOT EXISTS workspace_lock_token_seq";

/// How many of the three objects of [`TOKEN_TABLE_SQL`] exist (in the search path).
const TABLES_FOUND_SQL: &str = "SELECT (to_regclass('workspace_lock_tokens') IS NOT NULL)::int \
    + (to_regclass('workspace_lock_epochs') IS NOT NULL)::int \
    + (to_regclass('workspace_lock_token_seq') IS NOT NULL)::int";

/// Fencing tokens: `epoch << 40 | nextval(workspace_lock_token_seq)`, taken after the lock
/// is granted. The epoch is a durable counter bumped once per server start (the first lock
/// session after a start creates it, committed synchronously); within one server run the
/// sequence only grows. So tokens strictly increase across restarts and crashes (a crash may
/// lose the sequence's last unflushed steps, but never the new epoch), and no acquisition
/// waits for a WAL flush of its own: lock sessions run with `synchronous_commit = off`.
const TOKEN_BITS: u32 = 40;

/// The lock if it is free, and then (same statement, only when it was taken: the filter
/// runs before the select list) a token. No row is written here: a write transaction costs
/// the server ~50 µs more per acquisition (see [`ROW_SQL`]).
const FAST_SQL: &str =
    "SELECT $2::bigint + nextval('workspace_lock_token_seq') WHERE pg_try_advisory_lock($1)";

/// The holder's row with its token, pipelined right behind the statement that takes the
/// lock: it writes only if that statement took a token, i.e. won the lock (the session's
/// `currval` then exceeds the last token it took, `$8`; a try that failed or a wait that was
/// cancelled leaves it). So the server writes the row right after the grant, before anything
/// else the holder sends (its unlock above all), and rows are written in acquisition order.
/// `ON CONFLICT DO UPDATE` works on the latest committed row.
const ROW_SQL: &str = "INSERT INTO workspace_lock_tokens AS t \
    (key, token, goal_id, pid, host, acquired_at, workspace) \
    SELECT $1, $7::bigint + currval('workspace_lock_token_seq'), $2, $3, $4, $5, $6 \
    WHERE $7::bigint + currval('workspace_lock_token_seq') > $8 \
    ON CONFLICT (key) DO UPDATE SET token = EXCLUDED.token, goal_id = EXCLUDED.goal_id, \
    pid = EXCLUDED.pid, host = EXCLUDED.host, acquired_at = EXCLUDED.acquired_at, \
    workspace = EXCLUDED.workspace";

/// Waits for the lock, then (the materialized CTE's row exists only once it is granted) a
/// token, in the grant's order.
const LOCK_SQL: &str = "WITH l AS MATERIALIZED (SELECT pg_advisory_lock($1)) \
    SELECT $2::bigint + nextval('workspace_lock_token_seq') FROM l";
const UNLOCK_SQL: &str = "SELECT pg_advisory_unlock($1)";

/// This server run's epoch, created by the first session that finds none (serialised by a
/// transaction-level advisory lock), committed synchronously.
fn epoch_sql() -> String {
    format!(
        "BEGIN; SELECT pg_advisory_xact_lock({TABLE_LOCK_KEY}); \
         INSERT INTO workspace_lock_epochs (started, epoch) \
         SELECT pg_postmaster_start_time(), coalesce(max(epoch), 0) + 1 FROM workspace_lock_epochs \
         ON CONFLICT (started) DO NOTHING; \
         SELECT epoch FROM workspace_lock_epochs WHERE started = pg_postmaster_start_time(); COMMIT"
    )
}

/// The holder as the server knows it: the lock granted to a session, and the row its
/// holder wrote when it won it.
const HOLDER_SQL: &str = "SELECT l.pid::bigint AS backend_pid, t.goal_id, t.pid, t.host, t.token, \
    t.acquired_at, t.workspace, \
    (SELECT count(*) FROM pg_locks w WHERE w.locktype = 'advisory' AND NOT w.granted \
       AND w.database = l.database AND w.classid = l.classid AND w.objid = l.objid \
       AND w.objsubid = 1) AS waiters \
    FROM pg_locks l LEFT JOIN workspace_lock_tokens t ON t.key = $1 \
    WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 \
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
      AND l.classid::bigint = $2 AND l.objid::bigint = $3 LIMIT 1";

/// Who holds a key, as the server says.
#[derive(Debug, Clone, Default)]
pub struct Holder {
    pub goal_id: Option<String>,
    pub pid: Option<i64>,
    pub host: Option<String>,
    pub token: Option<i64>,
    pub acquired_at: Option<String>,
    pub workspace: Option<String>,
    pub backend_pid: Option<i64>,
    pub waiters: i64,
}

/// What the holder writes beside its token.
#[derive(Debug, Clone)]
pub struct HolderInfo {
    pub goal_id: String,
    pub pid: i64,
    pub host: String,
    pub acquired_at: String,
}

/// Idle sessions kept for the next acquisition, per target.
static POOL: OnceLock<Mutex<HashMap<String, Vec<PooledConn>>>> = OnceLock::new();
/// Targets whose token table is known to exist (per process).
static TABLE_READY: OnceLock<Mutex<Vec<String>>> = OnceLock::new();

struct PooledConn {
    conn: Arc<Conn>,
    /// Fires once the previous holder's unlock is queued on the session: a statement sent
    /// after it runs after it (one session runs its statements in order).
    enqueued: Option<tokio::sync::oneshot::Receiver<()>>,
}

fn pool() -> &'static Mutex<HashMap<String, Vec<PooledConn>>> {
    POOL.get_or_init(|| Mutex::new(HashMap::new()))
}

fn pool_key(target: &Target, lease: Option<Duration>) -> String {
    format!("{}#{}", target.id(), lease.map_or(0, |l| l.as_millis()))
}

async fn take_pooled(key: &str) -> Option<Arc<Conn>> {
    loop {
        let next = {
            let mut pool = pool().lock().ok()?;
            pool.get_mut(key).and_then(|v| v.pop())
        }?;
        if let Some(queued) = next.enqueued {
            let _ = queued.await;
        }
        if next.conn.alive() {
            return Some(next.conn);
        }
    }
}

fn put_pooled(conn: Arc<Conn>, enqueued: Option<tokio::sync::oneshot::Receiver<()>>) {
    if let Ok(mut pool) = pool().lock() {
        let list = pool.entry(conn.pool_key.clone()).or_default();
        // A few idle sessions are plenty; the rest are closed.
        if list.len() < 4 {
            list.push(PooledConn { conn, enqueued });
        }
    }
}

/// A new session. A lock session (`lease` given) runs with `idle_session_timeout = lease`
/// for its whole life: the server ends it, and frees its lock, when it goes quiet that long
/// (an idle pooled session just closes, and the next acquisition opens another).
///
/// Nothing else may end it sooner on its own: the server's keep-alives (2 s idle and 3
/// probes a second apart, set at connect) would end a partitioned holder's session ~5 s
/// after its last packet, before a lease longer than that runs out and so before the holder
/// counts its lock lost (measured with a 10 s lease: the lock passed on 4.6 s after the link
/// went down, the holder reported the loss at 7.1 s). So a lock session's keep-alives start
/// after `lease` of silence: they end it no sooner than `lease` + 3 s after the last packet
/// the server received, which came after the holder sent its last answered statement.
async fn connect(target: &Target, lease: Option<Duration>) -> Result<Arc<Conn>, BackendError> {
    let (client, state) = target.connect().await?;
    if let Some(lease) = lease {
        // tcp_keepalives_idle counts whole seconds: rounded up.
        let idle_s = lease.as_millis().div_ceil(1000).max(2);
        // A wait in the server's queue is a statement that may last hours: timeouts set for
        // the role or database (statement_timeout, lock_timeout, PostgreSQL 17's
        // transaction_timeout, where it exists) must not cancel it or end the session.
        client
            .simple_query(&format!(
                "SET idle_session_timeout = {}; SET tcp_keepalives_idle = {idle_s}; \
                 SELECT set_config(name, '0', false) FROM pg_settings \
                 WHERE name IN ('statement_timeout', 'lock_timeout', 'transaction_timeout')",
                lease.as_millis()
            ))
            .await
            .map_err(|e| target.query_error("cannot set idle_session_timeout", &e))?;
    }
    if !table_ready(target) {
        // Made by an administrator, they need no CREATE right: `CREATE … IF NOT EXISTS`
        // asks for it even when they exist.
        let found = client
            .simple_query(TABLES_FOUND_SQL)
            .await
            .map_err(|e| target.query_error("cannot look for the token table", &e))?;
        if first_value::<i64>(&found) != Some(3) {
            // Two processes creating the table at once may collide in the catalog:
            // serialise them with a transaction-level advisory lock on a fixed key.
            let create = format!(
                "BEGIN; SELECT pg_advisory_xact_lock({TABLE_LOCK_KEY}); {TOKEN_TABLE_SQL}; COMMIT"
            );
            client
                .simple_query(&create)
                .await
                .map_err(|e| target.query_error("cannot create the token table", &e))?;
        }
        if let Ok(mut ready) = TABLE_READY.get_or_init(|| Mutex::new(Vec::new())).lock() {
            ready.push(target.id().to_owned());
        }
    }
    let (base, last_token) = if lease.is_some() {
        let rows = client
            .simple_query(&epoch_sql())
            .await
            .map_err(|e| target.query_error("cannot read the server's epoch", &e))?;
        let epoch = first_value::<i64>(&rows).ok_or_else(|| {
            BackendError::new("EBACKENDSERVER", "workspace lock backend: no epoch row")
        })?;
        // Tokens no longer need a flush each: see TOKEN_BITS. A first nextval defines the
        // session's currval, which the holder row's statement reads.
        let rows = client
            .simple_query(
                "SET synchronous_commit = off; SELECT nextval('workspace_lock_token_seq')",
            )
            .await
            .map_err(|e| target.query_error("cannot set up the lock session", &e))?;
        let first = first_value::<i64>(&rows).ok_or_else(|| {
            BackendError::new("EBACKENDSERVER", "workspace lock backend: no sequence row")
        })?;
        (epoch << TOKEN_BITS, (epoch << TOKEN_BITS) + first)
    } else {
        (0, 0)
    };
    // Pipelined: one round trip for all four.
    let (fast_stmt, row_stmt, lock_stmt, unlock_stmt) = tokio::try_join!(
        client.prepare(FAST_SQL),
        client.prepare(ROW_SQL),
        client.prepare(LOCK_SQL),
        client.prepare(UNLOCK_SQL)
    )
    .map_err(|e| target.query_error("cannot prepare the lock statements", &e))?;
    Ok(Arc::new(Conn {
        client,
        state,
        fast_stmt,
        row_stmt,
        lock_stmt,
        unlock_stmt,
        base,
        last_token: AtomicI64::new(last_token),
        pool_key: pool_key(target, lease),
    }))
}

/// A fixed key for the table's creation ("wslktbl" in ASCII).
const TABLE_LOCK_KEY: i64 = 0x0077_736c_6b74_626c;

fn table_ready(target: &Target) -> bool {
    TABLE_READY
        .get_or_init(|| Mutex::new(Vec::new()))
        .lock()
        .map(|r| r.iter().any(|t| t == target.id()))
        .unwrap_or(false)
}

/// A lock session: a pooled one (`true`) or a new one.
async fn session(target: &Target, lease: Duration) -> Result<(Arc<Conn>, bool), BackendError> {
    match take_pooled(&pool_key(target, Some(lease))).await {
        Some(conn) => Ok((conn, true)),
        None => Ok((connect(target, Some(lease)).await?, false)),
    }
}

/// Keys this process last had to wait for.
static CONTENDED: OnceLock<Mutex<std::collections::HashSet<i64>>> = OnceLock::new();

fn was_contended(key: i64) -> bool {
    CONTENDED
        .get_or_init(Default::default)
        .lock()
        .map(|s| s.contains(&key))
        .unwrap_or(false)
}

fn note_contended(key: i64, contended: bool) {
    if let Ok(mut s) = CONTENDED.get_or_init(Default::default).lock() {
        if contended {
            s.insert(key);
        } else {
            s.remove(&key);
        }
    }
}

/// The session ended (a pooled one may have been closed by its idle timeout just now).
fn session_ended(e: &tokio_postgres::Error, conn: &Conn) -> bool {
    e.is_closed()
        || conn.state.ended().is_some()
        || e.code().is_some_and(|c| c.code().starts_with("57P"))
}

/// How an acquisition ended.
pub enum Outcome {
    Acquired(Arc<Lease>),
    /// `try_only` and someone holds it.
    Busy(Holder),
    /// Cancelled (abort): nothing of it is left on the server.
    Cancelled,
}

/// Cancels a pending acquisition.
#[derive(Default)]
pub struct Cancel {
    flag: AtomicBool,
    notify: Notify,
}

impl Cancel {
    pub fn cancel(&self) {
        self.flag.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
        self.notify.notify_one();
    }
    fn cancelled(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }
}

/// Takes the lock of `key` (waiting in the server's queue unless `try_only`), then its
/// fencing token.
pub async fn acquire(
    target: Target,
    key: i64,
    workspace: String,
    info: HolderInfo,
    try_only: bool,
    lease_ms: u64,
    cancel: Arc<Cancel>,
) -> Result<Outcome, BackendError> {
    if cancel.cancelled() {
        return Ok(Outcome::Cancelled);
    }
    let lease = Duration::from_millis(lease_ms.clamp(MIN_LEASE_MS, MAX_LEASE_MS));
    // 1. The lock if free, with its token: one round trip. A pooled session that the
    // server closed meanwhile (idle timeout) is replaced once.
    // A process that had to wait for this lock last time goes straight to the queue: the
    // try would most likely fail, costing a round trip.
    let use_fast = try_only || !was_contended(key);
    let mut retried = false;
    let (mut conn, mut pooled, fast) = loop {
        let (conn, pooled) = tokio::select! {
            c = session(&target, lease) => c?,
            _ = cancel.notify.notified() => return Ok(Outcome::Cancelled),
        };
        if !use_fast {
            break (conn, pooled, None);
        }
        // The lease runs from this send: the server's idle timer restarts when this
        // statement ends, which is after now.
        let sent = Instant::now();
        let (tried, row_write) = {
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&key, &conn.base];
            let try_lock = conn.client.query_opt(&conn.fast_stmt, &params);
            tokio::pin!(try_lock);
            let early = start(&mut try_lock).await;
            // Behind the try, in the same write to the socket.
            let row_write = queue_holder_row(&conn, key, &info, &workspace);
            match early {
                Some(r) => (r, row_write),
                None => (try_lock.await, row_write),
            }
        };
        match tried {
            Ok(row) => break (conn, pooled, row.map(|r| (r, sent, row_write))),
            Err(e) if pooled && !retried && session_ended(&e, &conn) => retried = true,
            // The session is dropped: a lock it may have taken goes with it.
            Err(e) => return Err(target.lost_error("taking the lock", &e, &conn.state)),
        }
    };
    if let Some((row, sent, row_write)) = fast {
        note_contended(key, false);
        let token: i64 = row
            .try_get(0)
            .map_err(|e| target.query_error("reading the fencing token", &e))?;
        conn.last_token.store(token, Ordering::SeqCst);
        let lease = Lease::start(conn, key, token, lease, sent);
        row_write.finish(&lease);
        return Ok(Outcome::Acquired(lease));
    }
    if try_only {
        // This process's own holder row (or unlock) still on its way is seen.
        settled(key).await;
        let holder = holder_on(&conn.client, key).await.ok().flatten();
        put_pooled(conn, None);
        return Ok(Outcome::Busy(holder.unwrap_or_default()));
    }
    // 2. Busy: wait in the server's queue; the same statement takes the token once granted.
    let waited_from = Instant::now();
    let (row, sent, row_write) = loop {
        let waiter = conn.clone();
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&key, &waiter.base];
        let sent = Instant::now();
        let wait = waiter.client.query_one(&waiter.lock_stmt, &params);
        tokio::pin!(wait);
        let early = start(&mut wait).await;
        let row_write = queue_holder_row(&conn, key, &info, &workspace);
        let waited = match early {
            Some(r) => Some(r),
            None => tokio::select! {
                r = &mut wait => Some(r),
                _ = cancel.notify.notified() => None,
            },
        };
        let row = match waited {
            Some(Ok(row)) => row,
            // A pooled session closed by its idle timeout just now: once more on a new one.
            Some(Err(e)) if pooled && !retried && session_ended(&e, &conn) => {
                retried = true;
                pooled = false;
                conn = connect(&target, Some(lease)).await?;
                continue;
            }
            Some(Err(e)) => return Err(target.lost_error("waiting for the lock", &e, &conn.state)),
            None => {
                // Abort: cancel the wait in the server and see it end, so that nothing of
                // it is left in pg_locks; a lock granted meanwhile is unlocked.
                let token = conn.client.cancel_token();
                let _ = tokio::time::timeout(Duration::from_secs(2), target.cancel(token)).await;
                if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(2), &mut wait).await {
                    let _ = tokio::time::timeout(
                        Duration::from_secs(2),
                        conn.client.query_one(&conn.unlock_stmt, &[&key]),
                    )
                    .await;
                }
                // The session is not reused: its settings may have changed.
                return Ok(Outcome::Cancelled);
            }
        };
        // The session's currval is this token now (the row statement's reference).
        if let Ok(token) = row.try_get::<_, i64>(0) {
            conn.last_token.store(token, Ordering::SeqCst);
        }
        if cancel.cancelled() {
            if conn
                .client
                .query_one(&conn.unlock_stmt, &[&key])
                .await
                .is_ok()
            {
                put_pooled(conn, None);
            }
            return Ok(Outcome::Cancelled);
        }
        break (row, sent, row_write);
    };
    note_contended(
        key,
        use_fast || waited_from.elapsed() > Duration::from_micros(500),
    );
    let token: i64 = row
        .try_get(0)
        .map_err(|e| target.query_error("reading the fencing token", &e))?;
    // The lease may run from the wait's send: the server's idle timer started when the wait
    // ended, which is after it. After a short wait that leaves most of the lease (the first
    // heartbeat moves it on).
    if sent.elapsed() < lease / 4 {
        let lease = Lease::start(conn, key, token, lease, sent);
        row_write.finish(&lease);
        return Ok(Outcome::Acquired(lease));
    }
    // After a long wait, the lease runs from the send of a statement sent now and answered
    // (an empty one, as a heartbeat).
    let sent = Instant::now();
    conn.client
        .simple_query("")
        .await
        .map_err(|e| target.lost_error("confirming the lock", &e, &conn.state))?;
    let lease = Lease::start(conn, key, token, lease, sent);
    row_write.finish(&lease);
    Ok(Outcome::Acquired(lease))
}

/// Polls `fut` once, which queues its statement on the session; its output if it is done.
async fn start<F: Future + Unpin>(fut: &mut F) -> Option<F::Output> {
    std::future::poll_fn(|cx| {
        Poll::Ready(match Pin::new(&mut *fut).poll(cx) {
            Poll::Ready(v) => Some(v),
            Poll::Pending => None,
        })
    })
    .await
}

type RowFuture = Pin<Box<dyn Future<Output = Result<u64, tokio_postgres::Error>> + Send>>;

/// The holder's row, queued on the session right behind the statement that takes the lock,
/// and not yet answered.
struct RowWrite {
    conn: Arc<Conn>,
    write: RowFuture,
}

/// Queues the holder's row (goal, pid, host, token: what other processes' busy messages and
/// inspect show) on `conn`, right behind the statement that takes the lock and in the same
/// write to the socket; it writes only if that statement wins the lock (see [`ROW_SQL`]).
/// The acquisition does not wait for its answer: the server writes it before it reads
/// anything else the holder sends. Other processes may see the lock granted in `pg_locks` a
/// moment before the row commits (as when both were one statement); this process's own busy
/// checks wait for it ([`RowWrite::finish`]).
fn queue_holder_row(conn: &Arc<Conn>, key: i64, info: &HolderInfo, workspace: &str) -> RowWrite {
    let (on, info, workspace) = (conn.clone(), info.clone(), workspace.to_owned());
    let last = conn.last_token.load(Ordering::SeqCst);
    let mut write: RowFuture = Box::pin(async move {
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 8] = [
            &key,
            &info.goal_id,
            &info.pid,
            &info.host,
            &info.acquired_at,
            &workspace,
            &on.base,
            &last,
        ];
        on.client.execute(&on.row_stmt, &params).await
    });
    // The first poll queues the statement. A row future dropped unanswered (the try lost,
    // the wait failed) leaves the session in order: the connection reads past its answer.
    if let Some(done) = futures_util::FutureExt::now_or_never(write.as_mut()) {
        write = Box::pin(std::future::ready(done));
    }
    RowWrite {
        conn: conn.clone(),
        write,
    }
}

impl RowWrite {
    /// The lock was won: sees the row's answer out on the runtime. A row that was not
    /// written (other than on a lost session, which the heartbeat reports) costs the lock:
    /// the holder would be named wrongly otherwise.
    fn finish(self, lease: &Arc<Lease>) {
        let held = lease.clone();
        let (written, done) = tokio::sync::oneshot::channel();
        note_pending(lease.key, done);
        let RowWrite { conn, write } = self;
        tokio::spawn(async move {
            let failure = match write.await {
                Ok(1) => None,
                Ok(n) => Some(format!("{n} rows written")),
                Err(e) if session_ended(&e, &conn) => None,
                Err(e) => Some(
                    e.as_db_error()
                        .map_or_else(|| e.to_string(), |d| d.message().to_owned()),
                ),
            };
            if let Some(why) = failure {
                held.mark_lost(format!(
                    "cannot record the holder in workspace_lock_tokens: {why}"
                ));
            }
            let _ = written.send(());
        });
    }
}

async fn holder_on(client: &Client, key: i64) -> Result<Option<Holder>, tokio_postgres::Error> {
    let classid = (key as u64 >> 32) as i64;
    let objid = (key as u64 & 0xffff_ffff) as i64;
    let row = client
        .query_opt(HOLDER_SQL, &[&key, &classid, &objid])
        .await?;
    Ok(row.map(|r| Holder {
        backend_pid: r.try_get(0).ok(),
        goal_id: r.try_get(1).ok().flatten(),
        pid: r.try_get(2).ok().flatten(),
        host: r.try_get(3).ok().flatten(),
        token: r.try_get(4).ok().flatten(),
        acquired_at: r.try_get(5).ok().flatten(),
        workspace: r.try_get(6).ok().flatten(),
        waiters: r.try_get(7).unwrap_or(0),
    }))
}

/// Holder rows and unlocks of this process still on their way, per key: this process's own
/// busy checks wait for them, so that an acquisition or a `release()` is seen by the next
/// check.
static PENDING: OnceLock<Mutex<HashMap<i64, Vec<tokio::sync::oneshot::Receiver<()>>>>> =
    OnceLock::new();

fn note_pending(key: i64, done: tokio::sync::oneshot::Receiver<()>) {
    if let Ok(mut m) = PENDING.get_or_init(|| Mutex::new(HashMap::new())).lock() {
        let list = m.entry(key).or_default();
        list.retain(|r| !r.is_terminated());
        list.push(done);
    }
}

async fn settled(key: i64) {
    let pending = PENDING
        .get_or_init(|| Mutex::new(HashMap::new()))
        .lock()
        .ok()
        .and_then(|mut m| m.remove(&key))
        .unwrap_or_default();
    for done in pending {
        let _ = done.await;
    }
}

/// The observer sessions of this process (one per target), for busy checks and inspect.
static OBSERVERS: OnceLock<Mutex<HashMap<String, Arc<Conn>>>> = OnceLock::new();

/// Who holds `key` now, as the server says; `None` when nobody does.
pub async fn holder(target: &Target, key: i64) -> Result<Option<Holder>, BackendError> {
    settled(key).await;
    let observers = OBSERVERS.get_or_init(|| Mutex::new(HashMap::new()));
    let cached = observers
        .lock()
        .ok()
        .and_then(|m| m.get(target.id()).cloned())
        .filter(|c| c.alive());
    let conn = match cached {
        Some(c) => c,
        None => {
            let c = connect(target, None).await?;
            if let Ok(mut m) = observers.lock() {
                m.insert(target.id().to_owned(), c.clone());
            }
            c
        }
    };
    holder_on(&conn.client, key)
        .await
        .map_err(|e| target.lost_error("asking who holds the lock", &e, &conn.state))
}

/// What a lease calls, once, when its lock is lost: with the reason.
pub type LostCallback = Box<dyn FnOnce(String) + Send>;

static NEXT_LEASE: AtomicU64 = AtomicU64::new(1);

/// A held lock.
pub struct Lease {
    pub id: u64,
    pub key: i64,
    pub token: i64,
    lease: Duration,
    conn: Arc<Conn>,
    /// Past this instant the lock may have been freed by the server: we count it lost.
    deadline: Mutex<Instant>,
    lost: Mutex<Option<String>>,
    released: AtomicBool,
    stop: Notify,
    on_lost: Mutex<Option<LostCallback>>,
}

/// The safety margin kept before the server's earliest release: a fifth of the lease.
pub fn margin(lease: Duration) -> Duration {
    lease / 5
}

impl Lease {
    fn start(conn: Arc<Conn>, key: i64, token: i64, lease: Duration, sent: Instant) -> Arc<Lease> {
        let me = Arc::new(Lease {
            id: NEXT_LEASE.fetch_add(1, Ordering::Relaxed),
            key,
            token,
            lease,
            conn,
            deadline: Mutex::new(sent + lease - margin(lease)),
            lost: Mutex::new(None),
            released: AtomicBool::new(false),
            stop: Notify::new(),
            on_lost: Mutex::new(None),
        });
        let beat = me.clone();
        tokio::spawn(async move { beat.heartbeat().await });
        me
    }

    /// Registers what to call (once, from the runtime's thread) when the lock is lost.
    pub fn on_lost(&self, f: LostCallback) {
        if let Ok(mut slot) = self.on_lost.lock() {
            *slot = Some(f);
        }
        // Lost before the callback was set: call it now.
        if let Some(reason) = self.lost_reason_only() {
            self.fire(reason);
        }
    }

    fn lost_reason_only(&self) -> Option<String> {
        self.lost.lock().map(|g| g.clone()).unwrap_or(None)
    }

    fn fire(&self, reason: String) {
        let f = self.on_lost.lock().ok().and_then(|mut s| s.take());
        if let Some(f) = f {
            f(reason);
        }
    }

    /// A statement sent at `sent` was answered: the server cannot free the lock before
    /// `sent + lease`. Each answer's bound is valid alone, so the latest one is kept.
    fn refresh(&self, sent: Instant) {
        if let Ok(mut d) = self.deadline.lock() {
            *d = (*d).max(sent + self.lease - margin(self.lease));
        }
    }

    fn deadline(&self) -> Instant {
        self.deadline
            .lock()
            .map(|d| *d)
            .unwrap_or_else(|_| Instant::now())
    }

    /// Marks the lock lost (once) and closes its session: the server frees the lock when
    /// it notices, if it has not already.
    fn mark_lost(&self, reason: String) {
        if self.released.load(Ordering::SeqCst) {
            return;
        }
        let first = match self.lost.lock() {
            Ok(mut g) if g.is_none() => {
                *g = Some(reason.clone());
                true
            }
            _ => false,
        };
        if first {
            self.stop.notify_one();
            self.conn.state.close();
            self.fire(reason);
        }
    }

    /// Why the lock was lost, if it was; past the deadline it is, whatever the heartbeat
    /// thread has seen yet.
    pub fn lost(&self) -> Option<String> {
        if let Some(r) = self.lost_reason_only() {
            return Some(r);
        }
        if self.released.load(Ordering::SeqCst) {
            return None;
        }
        if Instant::now() >= self.deadline() {
            let reason = self.expired_reason();
            let this = reason.clone();
            self.mark_lost(this);
            return self.lost_reason_only().or(Some(reason));
        }
        None
    }

    fn expired_reason(&self) -> String {
        format!(
            "lease expired: no answer from the PostgreSQL server within the lease ({} ms), which may have given the lock to another holder",
            self.lease.as_millis()
        )
    }

    async fn heartbeat(self: Arc<Self>) {
        let every = self.lease / 4;
        loop {
            let next = Instant::now() + every;
            tokio::select! {
                _ = tokio::time::sleep_until(next.into()) => {}
                _ = self.stop.notified() => return,
                _ = self.conn.state.notify.notified() => {
                    let why = self.conn.state.ended().unwrap_or_else(|| "the connection to the PostgreSQL server closed".to_owned());
                    self.mark_lost(format!("session lost: {why}"));
                    return;
                }
            }
            if self.released.load(Ordering::SeqCst) || self.lost_reason_only().is_some() {
                return;
            }
            if Instant::now() >= self.deadline() {
                self.mark_lost(self.expired_reason());
                return;
            }
            let sent = Instant::now();
            let deadline = self.deadline();
            let beat = tokio::time::timeout_at(deadline.into(), self.conn.client.simple_query(""));
            tokio::select! {
                r = beat => match r {
                    Ok(Ok(_)) => self.refresh(sent),
                    Ok(Err(e)) => {
                        let why = self.conn.state.ended().unwrap_or_else(|| e.to_string());
                        self.mark_lost(format!("session lost: {why}"));
                        return;
                    }
                    Err(_) => {
                        self.mark_lost(self.expired_reason());
                        return;
                    }
                },
                _ = self.stop.notified() => return,
            }
        }
    }

    /// Releases the lock: idempotent, never fails; returns why it had been lost, if it had.
    /// The unlock goes out on the runtime; the session returns to the pool after it.
    pub fn release(self: &Arc<Self>) -> Option<String> {
        let lost = self.lost();
        if self.released.swap(true, Ordering::SeqCst) {
            return lost;
        }
        self.stop.notify_one();
        if lost.is_none() && self.conn.alive() {
            let conn = self.conn.clone();
            let key = self.key;
            if let Ok(rt) = runtime() {
                let (queued, enqueued) = tokio::sync::oneshot::channel();
                let (unlocked, done) = tokio::sync::oneshot::channel();
                note_pending(key, done);
                rt.spawn(async move {
                    let param: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&key];
                    let unlock = conn.client.execute(&conn.unlock_stmt, &param);
                    tokio::pin!(unlock);
                    // The first poll queues the statement on the session: from then on the
                    // session may serve the next acquisition, whose statement follows it.
                    let done = futures_util::FutureExt::now_or_never(unlock.as_mut()).is_some();
                    let _ = queued.send(());
                    if !done {
                        let _ = tokio::time::timeout(Duration::from_secs(5), unlock).await;
                    }
                    let _ = unlocked.send(());
                });
                put_pooled(self.conn.clone(), Some(enqueued));
            }
        }
        lost
    }

    pub fn lease(&self) -> Duration {
        self.lease
    }
}
