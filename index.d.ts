// Types of pi-crew-workspace-lock, exactly as pi-crew's src/runtime/workspace-lock.ts
// declares them, plus the options and handle extras this package adds.

/** Resolves a pid to its process start time (any unit, unique per process lifetime). */
export type StartTimeResolver = (pid: number) => number | undefined;

/** The original's resolver: field 22 (`starttime`, clock ticks) of `/proc/<pid>/stat`,
 *  times 10, floored; `undefined` when the process or `/proc` is missing. */
export declare const defaultStartTimeResolver: StartTimeResolver;

/** What a lockfile holds (`JSON.stringify` order). Records written by this package add
 *  `host`, `bootId`, `pidNs`, `ownerLock` and `ownerFile` after these five. */
export interface WorkspaceLockContents {
  pid: number;
  startTime: number | undefined;
  heartbeat: number;
  goalId: string;
  acquiredAt: string;
}

export interface WorkspaceLockHandle {
  readonly cwd: string;
  readonly goalId: string;
  readonly lockPath: string;
  /** The startTime value written to the lockfile at acquire (release guard). */
  readonly startTime: number | undefined;
  /** Deletes the lockfile if it is still ours. Never throws; idempotent; works detached. */
  release(): void;
  /** (non-enumerable) True once the lockfile stopped being ours while held. */
  readonly compromised?: boolean;
  /** (non-enumerable) What replaced our lockfile, once `compromised`. */
  readonly compromisedReason?: string | undefined;
  /** (non-enumerable) While heartbeat refreshes fail (a full or read-only disk, an I/O
   *  error): the last failure, with Node's `code`, `syscall`, `path`, plus `attempts` and
   *  `since` (wall-clock ms of the first failure). `undefined` while refreshes work. The
   *  lock stays held meanwhile. */
  readonly heartbeatError?: (Error & { code?: string; syscall?: string; path?: string; attempts: number; since: number }) | undefined;
  /** (non-enumerable) The stale lock this acquisition took over, and why it was stale
   *  (`holder_dead`, `pid_recycled`, `heartbeat_stale` or `corrupt`). */
  readonly reclaimed?: { reason: string; goalId: unknown; pid: unknown } | undefined;
  /** A lock backend's fencing token (strictly increasing per workspace); `undefined` on the
   *  file lock. See README "Beyond one machine". */
  readonly fencingToken?: bigint | undefined;
}

/** Options of every function, for a lock backend (README "Beyond one machine"). */
export interface WorkspaceLockBackendOptions {
  /** `postgres://…` (libpq URL) to hold the lock in PostgreSQL, or `"file"` for the file lock
   *  whatever `WORKSPACE_LOCK_BACKEND` says. Default: `WORKSPACE_LOCK_BACKEND`, else the file lock. */
  backend?: string;
  /** The workspace's key on the server, instead of `<crew state identity>:<repo-relative path>`
   *  (default: `WORKSPACE_LOCK_KEY`). */
  backendKey?: string;
  /** The lease, in ms (1000 to 32767000; default `WORKSPACE_LOCK_LEASE_MS` or 10000). */
  backendLeaseMs?: number;
  /** How long the synchronous functions wait for the server, in ms (default
   *  `WORKSPACE_LOCK_BACKEND_TIMEOUT_MS` or 2000). */
  backendTimeoutMs?: number;
}

export interface AcquireWorkspaceLockOptions extends WorkspaceLockBackendOptions {
  /** Reject with "workspace busy: …" instead of waiting (default: wait). */
  failOnWorkspaceBusy?: boolean;
  /** A heartbeat older than this (ms) makes a lock stale (default 60000). */
  heartbeatStaleMs?: number;
  /** Longest wait between two checks while queued, ms (default 500); waiters are woken at
   *  once by releases and by the holder's death, this is only the fallback. A check by
   *  another waiter of this process for the same lock, judging alike (no injected callbacks,
   *  the same `heartbeatStaleMs`), counts. (Under contention, a waiter that just lost the
   *  lock to another claim looks again 5 ms later.) */
  pollMs?: number;
  /** Test injection: process start times. Injecting it (or `now`) selects the original's
   *  judgement exactly. */
  startTimeResolver?: StartTimeResolver;
  /** Test injection: the clock (ms). With it, heartbeats are not refreshed. */
  now?: () => number;
  /** Test injection: the pid written to the lockfile (default process.pid). */
  pid?: number;
  /** Abort waiting when this signal aborts. */
  signal?: AbortSignal;
  /** Called exactly once (never keeping the process alive) if the lockfile stops being ours
   *  while held; the error has `code: "ECOMPROMISED"`. Called before `release()` returns
   *  when the release finds the loss (or holds one not yet delivered), and at process exit
   *  for a loss still pending then. */
  onCompromised?: (error: Error) => void;
}

/** Where pi-crew keeps the lockfile of `cwd`: `<crewRoot>/state/workspace-locks/<sha256(absCwd)>.lock`. */
export declare function workspaceLockPath(cwd: string): string;

/** Takes the workspace lock for `goalId`, waiting while a live goal holds it (or rejecting
 *  with "workspace busy: …" under `failOnWorkspaceBusy`). Stale locks are reclaimed. */
export declare function acquireWorkspaceLock(
  cwd: string,
  goalId: string,
  opts?: AcquireWorkspaceLockOptions,
): Promise<WorkspaceLockHandle>;

/** The live holder's goalId, or `undefined` when the workspace is free (or its lock stale). */
export declare function isWorkspaceBusy(
  cwd: string,
  opts?: { startTimeResolver?: StartTimeResolver; heartbeatStaleMs?: number; now?: () => number } & WorkspaceLockBackendOptions,
): string | undefined;

/** Deletes the stale `*.lock` files of `dir` (not recursive) and returns their paths as
 *  `path.join(dir, name)`, in name order; `[]` for a missing directory. */
export declare function reclaimStaleLocks(
  dir: string,
  opts?: { heartbeatStaleMs?: number; startTimeResolver?: StartTimeResolver; now?: () => number },
): string[];

/** How a lockfile is judged (new in this package; the original has no equivalent). */
export interface WorkspaceLockStatus {
  lockPath: string;
  /** `free`: no lockfile. `held`: a live holder. `stale`: would be reclaimed (see `reason`).
   *  `unreadable`: empty/unparsable and only just written (`being_written`), or a directory. */
  state: "free" | "held" | "stale" | "unreadable";
  /** For `stale`: `holder_dead`, `pid_recycled`, `heartbeat_stale` or `corrupt`;
   *  for `unreadable`: `being_written` or `directory`. */
  reason?: string;
  /** What the verdict rests on: `kernel_lock`, `pid`, `heartbeat`, or `injected` (the
   *  caller's resolver and clock, judged as the original does). */
  evidence?: "kernel_lock" | "pid" | "heartbeat" | "injected" | "backend";
  /** With a lock backend: the server's view (`held` there makes `state` `held`). */
  backend?: {
    kind: "postgres";
    target: string;
    key: string;
    state: "held" | "free";
    holder?: { goalId?: string; pid?: number; host?: string; fencingToken?: bigint; acquiredAt?: string; waiters: number };
  };
  /** The lockfile's record as `JSON.parse` gives it (`pid`, `goalId`, `heartbeat`, … and,
   *  for this package's holders, `host`, `bootId`, `pidNs`, `ownerLock`, `ownerFile`). */
  record?: Partial<WorkspaceLockContents> & Record<string, unknown>;
  /** `now() - heartbeat`. */
  heartbeatAgeMs?: number;
  /** `true` for a `held` lock proven alive (kernel lock or running pid) whose heartbeat is
   *  older than `heartbeatStaleMs`: stopped, hung, or unable to write. */
  heartbeatLate?: true;
  /** Age of the lockfile by its modification time (real clock). */
  ageMs?: number;
}

/** The workspace's lockfile and how this package judges it. Read-only. */
export declare function inspectWorkspaceLock(
  cwd: string,
  opts?: { startTimeResolver?: StartTimeResolver; heartbeatStaleMs?: number; now?: () => number } & WorkspaceLockBackendOptions,
): WorkspaceLockStatus;

/** Every `*.lock` directly in `dir` (in name order), judged. Read-only; `[]` if missing. */
export declare function inspectWorkspaceLocks(
  dir: string,
  opts?: { startTimeResolver?: StartTimeResolver; heartbeatStaleMs?: number; now?: () => number } & WorkspaceLockBackendOptions,
): WorkspaceLockStatus[];
