// The lock libraries under test, behind one small interface, with the options a user would
// pick for a "wait until the workspace is free" lock. Used by the child processes of the
// benchmark (micro.mjs, peer.mjs, load.mjs); run.mjs only needs the names and options.
//
//   target(ws)            what the library locks, for a workspace directory `ws`
//   acquire(mod, target)  waits until held; resolves to an async-or-sync `release()`
//   check(mod, target)    synchronous busy check: true when held
import path from 'node:path'
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)

/** proper-lockfile: default stale (10 s, mtime refreshed every 5 s); waiting through its
 *  `retries` (node-retry) at a constant 100 ms, lockfile's own default poll period. */
export const PROPER_LOCKFILE_OPTIONS = {
  stale: 10_000,
  retries: { forever: true, factor: 1, minTimeout: 100, maxTimeout: 100 },
}

/** lockfile: `wait` (poll every `pollPeriod`, default 100 ms) and a `stale` of 10 s, the
 *  same as proper-lockfile's default (lockfile never refreshes a lock: a holder older than
 *  `stale` is broken into, so `stale` must exceed the longest hold). */
export const LOCKFILE_OPTIONS = { wait: 60_000, pollPeriod: 100, stale: 10_000 }

export const LIBS = {
  'pi-crew-workspace-lock': {
    module: () => require('../index.js'),
    options: 'defaults (pollMs 500, heartbeatStaleMs 60000)',
    target: (ws) => ws,
    async acquire(mod, target) {
      const handle = await mod.acquireWorkspaceLock(target, 'bench-goal')
      return () => handle.release()
    },
    check: (mod, target) => mod.isWorkspaceBusy(target) !== undefined,
  },
  'proper-lockfile': {
    module: () => require('proper-lockfile'),
    options: `lock(ws, ${JSON.stringify(PROPER_LOCKFILE_OPTIONS)}); checkSync(ws)`,
    target: (ws) => ws, // proper-lockfile creates the directory `${ws}.lock`
    async acquire(mod, target) {
      return mod.lock(target, PROPER_LOCKFILE_OPTIONS) // resolves to an async release()
    },
    check: (mod, target) => mod.checkSync(target, { stale: PROPER_LOCKFILE_OPTIONS.stale }),
  },
  lockfile: {
    module: () => require('lockfile'),
    options: `lock(file, ${JSON.stringify(LOCKFILE_OPTIONS)}); unlock; checkSync(file, {stale})`,
    target: (ws) => path.join(ws, 'workspace.lock'),
    acquire(mod, target) {
      // lockfile mutates its options object: a fresh one for every call.
      return new Promise((resolve, reject) => {
        mod.lock(target, { ...LOCKFILE_OPTIONS }, (err) => {
          if (err) reject(err)
          else resolve(() => new Promise((done) => mod.unlock(target, done)))
        })
      })
    },
    check: (mod, target) => mod.checkSync(target, { stale: LOCKFILE_OPTIONS.stale }),
  },
}

/** performance.timeOrigin + performance.now(): wall-clock ms, sub-ms resolution. */
export const wallMs = () => performance.timeOrigin + performance.now()
