// The workspace lock held in PostgreSQL (README "Beyond one machine"): chosen by
// WORKSPACE_LOCK_BACKEND=postgres://… or the `backend` option. Loaded only when a backend is
// asked for; the native side (src/backend_pg.rs) starts its runtime on first use.
//
// A backend acquisition takes, in this order: the server's advisory lock of the workspace
// key (waiting in the server's queue), a fencing token, and then the ordinary lockfile of
// this host's path (the file lock, whose record then names the backend and the token), so
// that file-only processes, the CLI and the original module all see the holder.
'use strict'

const os = require('node:os')
const path = require('node:path')

const DEFAULT_LEASE_MS = 10000
const MIN_LEASE_MS = 1000
// The server's keep-alives start after `lease` of silence (README, the timing argument), and
// Linux takes at most 32767 s for TCP_KEEPIDLE: a longer lease could not keep them off.
const MAX_LEASE_MS = 32767000
const DEFAULT_TIMEOUT_MS = 2000
const RECORD_OPTION = '__workspaceLockBackendRecord'

let nextAcquisition = 1
// Read once per process, as the file lock's record does (a syscall per acquisition saved).
let hostName

/** The backend URL in force for these options: `undefined` for the file lock. */
function backendOf(opts) {
  if (opts !== null && typeof opts === 'object' && opts.backend !== undefined) {
    const b = opts.backend
    if (b === 'file' || b === false || b === null) return undefined
    if (typeof b !== 'string') throw new TypeError(`opts.backend must be a postgres:// URL or "file", received ${typeof b}`)
    return b
  }
  const env = process.env.WORKSPACE_LOCK_BACKEND
  return env === undefined || env === '' || env === 'file' ? undefined : env
}

function backendError({ code, message }) {
  const err = new Error(message)
  err.code = code
  return err
}

function parsed(text) {
  const r = JSON.parse(text)
  if (r.error) throw backendError(r.error)
  return r
}

// The seam between this file and a lock engine. An engine is chosen by the URL's scheme and
// gives, natively: checkUrl(url) → {shown}, key(cwd, override) → {key, text},
// setup(deliver) once per copy of this file → its number `setup`, then acquire({setup, id,
// url, key, workspace, goalId, pid, host, acquiredAt, tryOnly, leaseMs}) → an error at once,
// or nothing and later deliver(id, {lease, token} | {busy} | {cancelled} | {error}, false)
// and, if the lease is lost, deliver(lease, reason, true); cancel(setup, id),
// release(lease) and lost(lease) → the loss reason if any, and
// holder(url, key, timeoutMs) → {holder} (all JSON text, `{error: {code, message}}` on
// failure). Everything else here (the lockfile, the handle, the options) is the same for
// every engine: a second engine (etcd: leases, revisions as tokens) adds a scheme and its
// native half.
const SCHEMES = { 'postgres:': 'postgres', 'postgresql:': 'postgres' }
function engines(binding) {
  return {
    postgres: typeof binding.pgCheckUrl === 'function' && {
      name: 'postgres',
      checkUrl: binding.pgCheckUrl,
      key: binding.pgKey,
      setup: binding.pgSetup,
      acquire: binding.pgAcquire,
      cancel: binding.pgCancel,
      release: binding.pgRelease,
      lost: binding.pgLost,
      holder: binding.pgHolder,
    },
  }
}

/** An engine's pending acquisitions and its leases' loss handlers, fed by its deliverer. */
function connect(engine) {
  const results = new Map()
  const onLost = new Map()
  // Losses delivered before their handler was set (the handler is set right after the
  // result, which is delivered first; kept for safety, dropped on release).
  const early = new Map()
  // This copy's deliverer: results of its own acquisitions only (another copy of this file
  // in the env, a worker's or a test runner's fresh module registry, counts ids from 1 too).
  const setup = engine.setup((id, text, lost) => {
    if (!lost) {
      const settle = results.get(id)
      results.delete(id)
      settle?.(text)
      return
    }
    const handler = onLost.get(id)
    if (handler === undefined) early.set(id, text)
    else handler(text)
  })
  const cancel = engine.cancel
  engine.cancel = (id) => cancel(setup, id)
  engine.acquire = ((start) => (req) =>
    new Promise((resolve) => {
      req.setup = setup
      const failed = start(req)
      if (failed != null) return resolve(failed)
      results.set(req.id, resolve)
    }))(engine.acquire)
  engine.onLost = (lease, handler) => {
    const reason = early.get(lease)
    if (reason !== undefined) {
      early.delete(lease)
      handler(reason)
    } else onLost.set(lease, handler)
  }
  engine.release = ((release) => (lease) => {
    onLost.delete(lease)
    early.delete(lease)
    return release(lease)
  })(engine.release)
  return engine
}

/** The engine of a URL, with the URL checked: a malformed one fails here, before any work.
 *  Remembered per URL (a URL's engine and check never change). */
function engineFor(table, url) {
  const checked = (table.checked ??= new Map())
  let engine = checked.get(url)
  if (engine === undefined) {
    engine = checkEngine(table, url)
    if (checked.size >= 64) checked.clear()
    checked.set(url, engine)
  }
  return engine
}

function checkEngine(table, url) {
  const scheme = /^[a-z][a-z0-9+.-]*:/i.exec(url.trim())?.[0].toLowerCase()
  const name = SCHEMES[scheme]
  if (name === undefined) {
    throw backendError({ code: 'EBACKENDURL', message: 'workspace lock backend: not a supported backend URL (expected postgres://… or postgresql://…)' })
  }
  let engine = table[name]
  if (!engine) {
    throw backendError({ code: 'EBACKENDUNAVAILABLE', message: `workspace lock backend: this build of the addon has no ${name} backend (built without the "${name}" Cargo feature)` })
  }
  const shown = parsed(engine.checkUrl(url)).shown
  // One connected engine per name; the URL adds only what is shown of it.
  if (!engine.connected) engine = table[name] = connect({ ...engine, connected: true })
  return { ...engine, shown }
}

// A cwd's key is derived once per process (the identity file is read, the repo root found)
// and then remembered: one workspace keeps one key for the life of a process.
const keys = new Map()
function keyOf(engine, cwd, opts) {
  const override = opts?.backendKey ?? process.env.WORKSPACE_LOCK_KEY
  if (override !== undefined && typeof override !== 'string') throw new TypeError('opts.backendKey must be a string')
  const memo = `${engine.name}\0${override || ''}\0${path.resolve(cwd)}`
  let key = keys.get(memo)
  if (key === undefined) {
    key = parsed(engine.key(cwd, override || undefined))
    if (keys.size >= 1024) keys.clear()
    keys.set(memo, key)
  }
  return key
}

function millis(name, value, fallback, min, max = 2 ** 31 - 1) {
  if (value === undefined) return fallback
  const n = typeof value === 'string' ? Number(value) : value
  if (typeof n !== 'number' || !Number.isFinite(n) || n < min || n > max) {
    throw new RangeError(`${name} must be a number of milliseconds between ${min} and ${max}, received ${String(value)}`)
  }
  return Math.floor(n)
}

const leaseMsOf = (opts) => millis('opts.backendLeaseMs', opts?.backendLeaseMs ?? process.env.WORKSPACE_LOCK_LEASE_MS, DEFAULT_LEASE_MS, MIN_LEASE_MS, MAX_LEASE_MS)
const timeoutMsOf = (opts) => millis('opts.backendTimeoutMs', opts?.backendTimeoutMs ?? process.env.WORKSPACE_LOCK_BACKEND_TIMEOUT_MS, DEFAULT_TIMEOUT_MS, 1)

/** The file lock's options: everything but the backend's. */
function fileOptions(opts) {
  if (opts === null || typeof opts !== 'object') return opts
  const { backend, backendKey, backendLeaseMs, backendTimeoutMs, ...rest } = opts
  return rest
}

const live = new Set()
let exitHook = false

function makeBackend(binding, makeFileHandle) {
  const table = engines(binding)
  /** acquireWorkspaceLock over the backend. */
  async function acquire(url, cwd, goalId, opts) {
    // Argument errors exactly as the file lock gives them (and before any server work).
    if (typeof cwd !== 'string' || typeof goalId !== 'string' || (opts !== undefined && opts !== null && typeof opts !== 'object')) {
      return binding.acquireWorkspaceLock(cwd, goalId, fileOptions(opts))
    }
    const signal = opts?.signal
    if (signal?.aborted) throw new Error(`workspace lock acquisition aborted for goal ${goalId} (cwd=${cwd})`)
    const engine = engineFor(table, url)
    const shown = engine.shown
    const key = keyOf(engine, cwd, opts)
    const leaseMs = leaseMsOf(opts)
    const failFast = opts?.failOnWorkspaceBusy === true
    const id = nextAcquisition++
    const onAbort = () => engine.cancel(id)
    signal?.addEventListener?.('abort', onAbort, { once: true })
    let result
    try {
      result = JSON.parse(
        await engine.acquire({
          id,
          url,
          key: key.key,
          workspace: key.text,
          goalId,
          pid: opts?.pid ?? process.pid,
          host: (hostName ??= os.hostname()),
          acquiredAt: new Date().toISOString(),
          tryOnly: failFast,
          leaseMs,
        }),
      )
    } finally {
      signal?.removeEventListener?.('abort', onAbort)
    }
    if (result.error) throw backendError(result.error)
    if (result.cancelled) throw new Error('workspace lock acquisition aborted')
    if (result.busy) {
      throw new Error(`workspace busy: cwd=${cwd} held by goalId=${result.busy.goalId} (pid=${result.busy.pid})`)
    }
    const lease = result.lease
    const token = BigInt(result.token)
    // Lost: once, whoever notices first (the server session or the lockfile).
    let lostReason
    let reported = false
    const userCallback = typeof opts?.onCompromised === 'function' ? opts.onCompromised : undefined
    const report = (reason, err) => {
      if (reported) return
      reported = true
      if (!userCallback) return
      if (!err) {
        err = new Error(`workspace lock compromised for goal ${goalId} (cwd=${cwd}): ${reason}`)
        err.code = 'ECOMPROMISED'
      }
      userCallback(err)
    }
    let fileHandle
    const record = `"backend":${JSON.stringify(engine.name)},"backendTarget":${JSON.stringify(shown)},"backendKey":${JSON.stringify(key.text)},"fencingToken":"${token}"`
    try {
      fileHandle = await binding.acquireWorkspaceLock(cwd, goalId, {
        ...fileOptions(opts),
        [RECORD_OPTION]: record,
        onCompromised: (err) => report(err.message, err),
      })
    } catch (err) {
      engine.release(lease) ?? undefined
      throw err
    }
    let released = false
    const lost = () => {
      if (lostReason !== undefined) return lostReason
      if (released) return undefined
      const pg = (engine.lost(lease) ?? undefined)
      if (pg !== undefined) {
        lostReason = pg
        return pg
      }
      return fileHandle.compromisedReason
    }
    const release = () => {
      if (released) return
      released = true
      live.delete(release)
      const pg = (engine.lost(lease) ?? undefined)
      if (pg !== undefined && lostReason === undefined) lostReason = pg
      // The lockfile first (it names this holder), then the server's lock.
      fileHandle.release()
      if (lostReason === undefined && fileHandle.compromised) lostReason = fileHandle.compromisedReason
      const atRelease = engine.release(lease) ?? undefined
      if (lostReason === undefined && atRelease !== undefined) lostReason = atRelease
      // A loss this release found (or one not yet delivered) reaches onCompromised before
      // release() returns; report() calls it once at most.
      if (lostReason !== undefined) {
        try {
          report(lostReason)
        } catch (err) {
          process.nextTick(() => {
            throw err
          })
        }
      }
    }
    engine.onLost(lease, (reason) => {
      if (released) return
      lostReason ??= reason
      // Not ours any more: let this host's other processes see the workspace free.
      fileHandle.release()
      report(reason)
    })
    live.add(release)
    if (!exitHook) {
      exitHook = true
      process.on('exit', () => {
        for (const r of [...live]) r()
      })
    }
    const handle = makeFileHandle(fileHandle, release, lost, token)
    return handle
  }

  /** isWorkspaceBusy over the backend: the server's holder, else a file-only holder. */
  function isBusy(url, cwd, opts) {
    if (typeof cwd !== 'string') return binding.isWorkspaceBusy(cwd, fileOptions(opts))
    const engine = engineFor(table, url)
    const key = keyOf(engine, cwd, opts)
    const holder = parsed(engine.holder(url, key.key, timeoutMsOf(opts))).holder
    if (holder) return holder.goalId == null ? '' : String(holder.goalId)
    return binding.isWorkspaceBusy(cwd, fileOptions(opts))
  }

  function backendView(engine, url, keyText, keyNum, opts) {
    const holder = parsed(engine.holder(url, keyNum, timeoutMsOf(opts))).holder
    const view = { kind: engine.name, target: engine.shown, key: keyText, state: holder ? 'held' : 'free' }
    if (holder) {
      view.holder = {
        goalId: holder.goalId ?? undefined,
        pid: holder.pid ?? undefined,
        host: holder.host ?? undefined,
        fencingToken: holder.token == null ? undefined : BigInt(holder.token),
        acquiredAt: holder.acquiredAt ?? undefined,
        waiters: holder.waiters,
      }
    }
    return view
  }

  function merge(status, view) {
    status.backend = view
    if (view.state === 'held' && status.state !== 'held') {
      status.state = 'held'
      status.evidence = 'backend'
      delete status.reason
    }
    return status
  }

  /** inspectWorkspaceLock over the backend: the lockfile as judged, and the server's view. */
  function inspect(url, cwd, opts) {
    const status = binding.inspectWorkspaceLock(cwd, fileOptions(opts))
    const engine = engineFor(table, url)
    const key = keyOf(engine, cwd, opts)
    return merge(status, backendView(engine, url, key.text, key.key, opts))
  }

  /** inspectWorkspaceLocks: entries whose record names the backend also get its view. */
  function inspectAll(url, dir, opts) {
    const list = binding.inspectWorkspaceLocks(dir, fileOptions(opts))
    const engine = engineFor(table, url)
    for (const status of list) {
      const r = status.record
      if (r?.backend === engine.name && typeof r.backendKey === 'string') {
        const key = parsed(engine.key('', r.backendKey))
        merge(status, backendView(engine, url, r.backendKey, key.key, opts))
      }
    }
    return list
  }

  return { acquire, isBusy, inspect, inspectAll }
}

module.exports = { backendOf, makeBackend }
