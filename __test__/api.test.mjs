// The public API as SPEC.md prints it: exports, the handle's shape, `undefined` never
// `null`, the lockfile's exact bytes, the original's numbers and messages, and clear errors
// for bad input that never cost a live lock.
import { describe, it, afterEach } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import path from 'node:path'
import { execFileSync } from 'node:child_process'
import * as esm from '../index.js'
import { lock, workspace, removeAll, originalRecord } from './helpers.mjs'

afterEach(() => {})
process.on('exit', removeAll)

const FIXED_PID = 12345
const resolverOf = (map) => (pid) => map.get(pid)

describe('exports', () => {
  it('has the five functions of the original, for require and import alike', () => {
    for (const name of ['workspaceLockPath', 'acquireWorkspaceLock', 'isWorkspaceBusy', 'reclaimStaleLocks', 'defaultStartTimeResolver']) {
      assert.equal(typeof lock[name], 'function', name)
      assert.equal(esm[name], lock[name], `ESM named export ${name}`)
    }
  })

  it('acquireWorkspaceLock returns a promise synchronously', async () => {
    const cwd = workspace()
    const p = lock.acquireWorkspaceLock(cwd, 'g')
    assert.ok(p instanceof Promise)
    // Like the original's async function, the first attempt runs inside the call.
    assert.ok(fs.existsSync(lock.workspaceLockPath(cwd)))
    ;(await p).release()
  })
})

describe('the lockfile', () => {
  it('holds exactly JSON.stringify of the five fields, then this package\'s fields', async () => {
    const cwd = workspace()
    const now = 1_700_000_000_123
    const h = await lock.acquireWorkspaceLock(cwd, 'goal_"a"\n', {
      startTimeResolver: resolverOf(new Map([[FIXED_PID, 1000]])),
      pid: FIXED_PID,
      now: () => now,
    })
    const text = fs.readFileSync(h.lockPath, 'utf8')
    const five = JSON.stringify({ pid: FIXED_PID, startTime: 1000, heartbeat: now, goalId: 'goal_"a"\n', acquiredAt: new Date(now).toISOString() })
    assert.ok(text.startsWith(five.slice(0, -1) + ','), text)
    const parsed = JSON.parse(text)
    assert.deepEqual(Object.keys(parsed), ['pid', 'startTime', 'heartbeat', 'goalId', 'acquiredAt', 'host', 'bootId', 'pidNs', 'ownerLock', 'ownerFile'])
    assert.equal(typeof parsed.ownerLock, 'number')
    assert.ok(Number.isSafeInteger(parsed.ownerLock))
    // The owner file's device and inode numbers, as a string (they may not fit a number).
    const owners = fs.statSync(path.join(path.dirname(h.lockPath), '.owners'), { bigint: true })
    assert.equal(parsed.ownerFile, `${owners.dev}:${owners.ino}`)
    assert.equal(parsed.bootId, fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim())
    h.release()
  })

  it('leaves startTime out when the resolver gives undefined, and prints numbers as JavaScript does', async () => {
    const cwd = workspace()
    let t = 1000.5
    const h = await lock.acquireWorkspaceLock(cwd, 'g', { startTimeResolver: () => undefined, pid: 7, now: () => t++ })
    const text = fs.readFileSync(h.lockPath, 'utf8')
    assert.ok(text.startsWith('{"pid":7,"heartbeat":1000.5,"goalId":"g","acquiredAt":"1970-01-01T00:00:01.001Z",'), text)
    assert.equal('startTime' in h, true)
    assert.equal(h.startTime, undefined)
    h.release()
  })

  it('calls now() as the original does: once per judgement, then for heartbeat and acquiredAt', async () => {
    const cwd = workspace()
    const calls = []
    const resolverCalls = []
    const now = () => {
      calls.push('now')
      return 5_000_000
    }
    const resolver = (pid) => {
      resolverCalls.push(pid)
      return 1000
    }
    const h = await lock.acquireWorkspaceLock(cwd, 'a', { startTimeResolver: resolver, pid: FIXED_PID, now })
    assert.deepEqual(calls, ['now', 'now'], 'absent lock: heartbeat and acquiredAt')
    assert.deepEqual(resolverCalls, [FIXED_PID], 'the holder\'s own start time, once')
    calls.length = 0
    resolverCalls.length = 0
    await assert.rejects(lock.acquireWorkspaceLock(cwd, 'b', { startTimeResolver: resolver, pid: 99, now, failOnWorkspaceBusy: true }), /workspace busy/)
    assert.deepEqual(calls, ['now'])
    assert.deepEqual(resolverCalls, [99, FIXED_PID])
    h.release()
  })
})

describe('defaultStartTimeResolver', () => {
  // Field 22 of /proc/<pid>/stat after the last ')', times 10, floored.
  const reference = (pid) => {
    try {
      const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
      const fields = stat.slice(stat.lastIndexOf(')') + 1).trim().split(/\s+/)
      const ticks = Number(fields[19])
      return Number.isFinite(ticks) ? Math.floor(ticks * 10) : undefined
    } catch {
      return undefined
    }
  }

  it('gives the original\'s numbers for live processes', () => {
    assert.equal(lock.defaultStartTimeResolver(process.pid), reference(process.pid))
    assert.equal(typeof lock.defaultStartTimeResolver(process.pid), 'number')
    assert.equal(lock.defaultStartTimeResolver(1), reference(1))
    const child = execFileSync(process.execPath, ['-e', 'console.log(process.pid)']).toString().trim()
    assert.equal(lock.defaultStartTimeResolver(Number(child)), reference(Number(child)))
  })

  it('gives undefined (never null) for missing processes', () => {
    assert.equal(lock.defaultStartTimeResolver(999_999_999), undefined)
    assert.equal(lock.defaultStartTimeResolver(-1), undefined)
  })
})

describe('the handle', () => {
  it('is a plain object with the original\'s keys; extras are non-enumerable', async () => {
    const cwd = workspace()
    const h = await lock.acquireWorkspaceLock(cwd, 'goal_a', { startTimeResolver: () => 42, pid: FIXED_PID })
    assert.deepEqual(Object.keys(h), ['cwd', 'goalId', 'lockPath', 'startTime', 'release'])
    assert.equal(Object.getPrototypeOf(h), Object.prototype)
    assert.equal(h.cwd, cwd)
    assert.equal(h.goalId, 'goal_a')
    assert.equal(h.lockPath, lock.workspaceLockPath(cwd))
    assert.equal(h.startTime, 42)
    assert.equal(h.compromised, false)
    assert.equal(h.compromisedReason, undefined)
    assert.equal(JSON.stringify(Object.keys(JSON.parse(JSON.stringify(h)))), '["cwd","goalId","lockPath","startTime"]')
    h.release()
  })

  it('has accessors that are safe on any object they are borrowed onto', async () => {
    const cwd = workspace()
    const h = await lock.acquireWorkspaceLock(cwd, 'g')
    const get = (name) => Object.getOwnPropertyDescriptor(h, name).get
    assert.equal(Object.getOwnPropertyDescriptor(h, 'compromised').enumerable, false)
    assert.equal(get('compromised').call({}), false)
    assert.equal(get('compromisedReason').call({}), undefined)
    assert.equal(get('reclaimed').call(undefined), undefined)
    h.release()
  })

  it('release works detached, is idempotent and never throws', async () => {
    const cwd = workspace()
    const { release, lockPath } = await lock.acquireWorkspaceLock(cwd, 'g')
    assert.equal(release(), undefined)
    assert.ok(!fs.existsSync(lockPath))
    release()
    fs.rmSync(cwd, { recursive: true, force: true })
    const again = workspace()
    const h = await lock.acquireWorkspaceLock(again, 'g')
    fs.rmSync(again, { recursive: true, force: true })
    assert.doesNotThrow(() => h.release())
  })

  it('releases through Symbol.dispose where the runtime has it', async (t) => {
    if (typeof Symbol.dispose !== 'symbol') return t.skip('no Symbol.dispose in this Node')
    const cwd = workspace()
    const h = await lock.acquireWorkspaceLock(cwd, 'g')
    h[Symbol.dispose]()
    assert.ok(!fs.existsSync(h.lockPath))
  })
})

describe('bad input gets a clear error, and nothing is lost', () => {
  async function withLiveLock(fn) {
    const cwd = workspace()
    const h = await lock.acquireWorkspaceLock(cwd, 'holder')
    const before = fs.readFileSync(h.lockPath, 'utf8')
    await fn(cwd)
    assert.equal(fs.readFileSync(h.lockPath, 'utf8').slice(0, 40), before.slice(0, 40), 'live lock untouched')
    assert.equal(JSON.parse(fs.readFileSync(h.lockPath, 'utf8')).goalId, 'holder')
    h.release()
  }

  it('rejects (never throws) wrong argument types with TypeError', async () => {
    const p = lock.acquireWorkspaceLock(123, 'g')
    assert.ok(p instanceof Promise)
    await assert.rejects(p, { name: 'TypeError', message: 'The "cwd" argument must be of type string. Received number' })
    await withLiveLock(async (cwd) => {
      await assert.rejects(lock.acquireWorkspaceLock(cwd, 42), TypeError)
      await assert.rejects(lock.acquireWorkspaceLock(cwd, 'g', 'opts'), TypeError)
      await assert.rejects(lock.acquireWorkspaceLock(cwd, 'g', { now: 5 }), { name: 'TypeError', message: /opts\.now must be a function/ })
      await assert.rejects(lock.acquireWorkspaceLock(cwd, 'g', { startTimeResolver: 'x' }), TypeError)
      await assert.rejects(lock.acquireWorkspaceLock(cwd, 'g', { failOnWorkspaceBusy: 'yes' }), TypeError)
      await assert.rejects(lock.acquireWorkspaceLock(cwd, 'g', { signal: {} }), { name: 'TypeError', message: /AbortSignal/ })
      await assert.rejects(lock.acquireWorkspaceLock(cwd, 'g', { pollMs: '5' }), TypeError)
      await assert.rejects(lock.acquireWorkspaceLock(cwd, 'g', { onCompromised: 1 }), TypeError)
    })
  })

  it('rejects NaN, negative and non-integer timings and pids with RangeError', async () => {
    await withLiveLock(async (cwd) => {
      await assert.rejects(lock.acquireWorkspaceLock(cwd, 'g', { pollMs: NaN }), { name: 'RangeError', message: 'opts.pollMs must be a finite number >= 0, received NaN' })
      await assert.rejects(lock.acquireWorkspaceLock(cwd, 'g', { pollMs: -1 }), RangeError)
      await assert.rejects(lock.acquireWorkspaceLock(cwd, 'g', { pollMs: Infinity }), RangeError)
      await assert.rejects(lock.acquireWorkspaceLock(cwd, 'g', { heartbeatStaleMs: NaN }), RangeError)
      await assert.rejects(lock.acquireWorkspaceLock(cwd, 'g', { heartbeatStaleMs: -5 }), RangeError)
      await assert.rejects(lock.acquireWorkspaceLock(cwd, 'g', { pid: 0 }), RangeError)
      await assert.rejects(lock.acquireWorkspaceLock(cwd, 'g', { pid: 1.5 }), RangeError)
      assert.throws(() => lock.isWorkspaceBusy(cwd, { heartbeatStaleMs: -1 }), RangeError)
      assert.throws(() => lock.reclaimStaleLocks(path.dirname(lock.workspaceLockPath(cwd)), { heartbeatStaleMs: NaN }), RangeError)
    })
  })

  it('accepts pollMs of 0 and of any huge finite value (clamped like Node timers)', async () => {
    const cwd = workspace()
    const h = await lock.acquireWorkspaceLock(cwd, 'holder')
    for (const pollMs of [0, 1e300, Number.MAX_VALUE]) {
      const ac = new AbortController()
      const p = lock.acquireWorkspaceLock(cwd, 'g', { pollMs, signal: ac.signal })
      await new Promise((r) => setTimeout(r, 20))
      ac.abort()
      await assert.rejects(p, { message: 'workspace lock acquisition aborted' })
    }
    h.release()
  })

  it('treats null options as absent, as the original\'s ?? does', async () => {
    const cwd = workspace()
    const h = await lock.acquireWorkspaceLock(cwd, 'g', { now: null, startTimeResolver: null, pollMs: null, signal: null, pid: null })
    assert.equal(JSON.parse(fs.readFileSync(h.lockPath, 'utf8')).pid, process.pid)
    h.release()
    const h2 = await lock.acquireWorkspaceLock(cwd, 'g', null)
    h2.release()
  })

  it('passes a throwing resolver\'s own error through, and deletes nothing', async () => {
    const cwd = workspace()
    const lockPath = lock.workspaceLockPath(cwd)
    // A stale lock (old heartbeat) that a resolver failure must not cost.
    const stale = originalRecord({ pid: FIXED_PID, heartbeat: 1 })
    fs.writeFileSync(lockPath, stale)
    class ResolverBroke extends Error {}
    const boom = new ResolverBroke('resolver broke')
    const err = await lock.acquireWorkspaceLock(cwd, 'g', { startTimeResolver: () => { throw boom } }).catch((e) => e)
    assert.equal(err, boom)
    assert.equal(fs.readFileSync(lockPath, 'utf8'), stale)
    assert.throws(() => lock.isWorkspaceBusy(cwd, { startTimeResolver: () => { throw boom } }), (e) => e === boom)
    assert.throws(() => lock.reclaimStaleLocks(path.dirname(lockPath), { startTimeResolver: () => { throw boom } }), (e) => e === boom)
    assert.equal(fs.readFileSync(lockPath, 'utf8'), stale)
  })

  it('rejects a clock or resolver that returns a non-number, and writes nothing', async () => {
    const cwd = workspace()
    const lockPath = lock.workspaceLockPath(cwd)
    await assert.rejects(lock.acquireWorkspaceLock(cwd, 'g', { now: () => NaN }), { name: 'RangeError', message: 'Invalid time value' })
    await assert.rejects(lock.acquireWorkspaceLock(cwd, 'g', { now: () => '5' }), TypeError)
    await assert.rejects(lock.acquireWorkspaceLock(cwd, 'g', { startTimeResolver: () => null }), TypeError)
    await assert.rejects(lock.acquireWorkspaceLock(cwd, 'g', { now: () => 8.64e15 + 1 }), { name: 'RangeError', message: 'Invalid time value' })
    assert.ok(!fs.existsSync(lockPath))
  })

  it('throws TypeError synchronously from the synchronous functions', () => {
    assert.throws(() => lock.workspaceLockPath(undefined), TypeError)
    assert.throws(() => lock.isWorkspaceBusy(5), TypeError)
    assert.throws(() => lock.isWorkspaceBusy('/tmp', { now: 'x' }), TypeError)
    assert.throws(() => lock.reclaimStaleLocks(null), TypeError)
  })
})

describe('I/O failures', () => {
  it('reject with the errno code and the path', async () => {
    const cwd = workspace()
    const locksDir = path.dirname(lock.workspaceLockPath(cwd))
    fs.rmSync(locksDir, { recursive: true })
    fs.writeFileSync(locksDir, 'not a directory')
    const err = await lock.acquireWorkspaceLock(cwd, 'g').catch((e) => e)
    assert.ok(err instanceof Error)
    assert.equal(err.code, 'ENOTDIR')
    assert.equal(err.path, lock.workspaceLockPath(cwd))
    assert.match(err.message, /^ENOTDIR: not a directory, \w+ '/)
    // No lock can exist there: no error for readers (SPEC's clarified error rule).
    assert.deepEqual(lock.reclaimStaleLocks(locksDir), [])
    assert.equal(lock.isWorkspaceBusy(cwd), undefined)
    assert.equal(lock.inspectWorkspaceLock(cwd).state, 'free')
  })
})
