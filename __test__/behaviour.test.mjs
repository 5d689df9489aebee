// Every sentence of SPEC.md "Behaviour to keep", and the scenarios of pi-crew's own unit
// tests for this module (fake clock, fake pids, fake start-time resolver).
import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import path from 'node:path'
import { getEventListeners } from 'node:events'
import { lock, workspace, originalRecord, setAge, sleep } from './helpers.mjs'

const FIXED_PID = 12345
function startTimes() {
  const map = new Map()
  return { resolver: (pid) => map.get(pid), set: (pid, t) => map.set(pid, t) }
}
const read = (file) => JSON.parse(fs.readFileSync(file, 'utf8'))
const locksDir = (cwd) => path.join(cwd, '.crew', 'state', 'workspace-locks')

describe('acquireWorkspaceLock', () => {
  it('writes under .crew/state/workspace-locks/<sha256>.lock and release removes it', async () => {
    const cwd = workspace()
    const { resolver, set } = startTimes()
    set(FIXED_PID, 1000)
    const h = await lock.acquireWorkspaceLock(cwd, 'goal_a', { startTimeResolver: resolver, pid: FIXED_PID, pollMs: 5 })
    assert.equal(h.lockPath, lock.workspaceLockPath(cwd))
    assert.ok(h.lockPath.includes(path.join('.crew', 'state', 'workspace-locks')))
    const c = read(h.lockPath)
    assert.equal(c.pid, FIXED_PID)
    assert.equal(c.startTime, 1000)
    assert.equal(c.goalId, 'goal_a')
    h.release()
    assert.ok(!fs.existsSync(h.lockPath))
  })

  it('checks signal.aborted first, even when the lock is free', async () => {
    const cwd = workspace()
    const ac = new AbortController()
    ac.abort()
    await assert.rejects(lock.acquireWorkspaceLock('rel/cwd/../x', 'goal_z', { signal: ac.signal }), {
      message: 'workspace lock acquisition aborted for goal goal_z (cwd=rel/cwd/../x)',
    })
    await assert.rejects(lock.acquireWorkspaceLock(cwd, 'g', { signal: ac.signal }))
    assert.ok(!fs.existsSync(lock.workspaceLockPath(cwd)))
  })

  it('claims a stale lock: pid recycled (resolver) and heartbeat stale (clock)', async () => {
    const cwd = workspace()
    const { resolver, set } = startTimes()
    set(FIXED_PID, 1000)
    const a = await lock.acquireWorkspaceLock(cwd, 'goal_a', { startTimeResolver: resolver, pid: FIXED_PID, pollMs: 5 })
    set(FIXED_PID, 2000)
    const b = await lock.acquireWorkspaceLock(cwd, 'goal_b', { startTimeResolver: resolver, pid: FIXED_PID, pollMs: 5 })
    assert.equal(read(b.lockPath).goalId, 'goal_b')
    assert.equal(read(b.lockPath).startTime, 2000)
    b.release()
    a.release()
    assert.ok(!fs.existsSync(b.lockPath), 'the stale handle\'s release is a no-op')

    let now = 1_000_000
    const c = await lock.acquireWorkspaceLock(cwd, 'goal_c', { startTimeResolver: resolver, pid: FIXED_PID, now: () => now, heartbeatStaleMs: 60_000, pollMs: 5 })
    now += 120_000
    const d = await lock.acquireWorkspaceLock(cwd, 'goal_d', { startTimeResolver: resolver, pid: FIXED_PID, now: () => now, heartbeatStaleMs: 60_000, pollMs: 5 })
    assert.equal(read(d.lockPath).goalId, 'goal_d')
    d.release()
    c.release()
  })

  it('treats a heartbeat exactly heartbeatStaleMs old as live (strictly greater is stale)', async () => {
    const cwd = workspace()
    fs.writeFileSync(lock.workspaceLockPath(cwd), originalRecord({ heartbeat: 1000, goalId: 'edge' }))
    const opts = { now: () => 61_000, startTimeResolver: () => undefined, heartbeatStaleMs: 60_000 }
    assert.equal(lock.isWorkspaceBusy(cwd, opts), 'edge')
    assert.equal(lock.isWorkspaceBusy(cwd, { ...opts, now: () => 61_001 }), undefined)
  })

  it('with failOnWorkspaceBusy rejects with the original message, cwd as given', async () => {
    const cwd = workspace()
    const { resolver, set } = startTimes()
    set(FIXED_PID, 1000)
    const h = await lock.acquireWorkspaceLock(cwd, 'goal_a', { startTimeResolver: resolver, pid: FIXED_PID })
    const given = cwd + '/./'
    await assert.rejects(lock.acquireWorkspaceLock(given, 'goal_b', { startTimeResolver: resolver, pid: FIXED_PID, failOnWorkspaceBusy: true }), (e) => {
      assert.equal(e.message, `workspace busy: cwd=${given} held by goalId=goal_a (pid=${FIXED_PID})`)
      assert.equal(Object.getPrototypeOf(e), Error.prototype)
      return true
    })
    h.release()
  })

  it('queues while the lock is live and proceeds on release (serialises)', async () => {
    const cwd = workspace()
    const { resolver, set } = startTimes()
    set(FIXED_PID, 1000)
    const a = await lock.acquireWorkspaceLock(cwd, 'goal_a', { startTimeResolver: resolver, pid: FIXED_PID, pollMs: 5 })
    let bResolved = false
    const bp = lock.acquireWorkspaceLock(cwd, 'goal_b', { startTimeResolver: resolver, pid: FIXED_PID, pollMs: 5 }).then((h) => {
      bResolved = true
      return h
    })
    await sleep(30)
    assert.equal(bResolved, false)
    a.release()
    const b = await bp
    assert.equal(read(b.lockPath).goalId, 'goal_b')
    b.release()
  })

  it('re-checks at most pollMs apart when nothing on disk changes (a clock running out)', async () => {
    const cwd = workspace()
    let now = 1_000_000
    const opts = { now: () => now, startTimeResolver: () => 1, heartbeatStaleMs: 60_000, pollMs: 20 }
    const a = await lock.acquireWorkspaceLock(cwd, 'goal_a', opts)
    const bp = lock.acquireWorkspaceLock(cwd, 'goal_b', opts)
    await sleep(50)
    now += 120_000 // only time passes; the file does not change
    const t0 = Date.now()
    const b = await bp
    assert.ok(Date.now() - t0 < 2000)
    assert.equal(b.goalId, 'goal_b')
    b.release()
    a.release()
  })

  it('rejects at once on abort while waiting, leaving no listener behind', async () => {
    const cwd = workspace()
    const a = await lock.acquireWorkspaceLock(cwd, 'goal_a')
    const ac = new AbortController()
    const bp = lock.acquireWorkspaceLock(cwd, 'goal_b', { signal: ac.signal, pollMs: 2 })
    await sleep(200) // ~100 polls: the original would have added ~100 listeners by now
    assert.ok(getEventListeners(ac.signal, 'abort').length <= 1, 'one listener at most while waiting')
    const t0 = process.hrtime.bigint()
    ac.abort()
    await assert.rejects(bp, (e) => e.message === 'workspace lock acquisition aborted')
    assert.ok(Number(process.hrtime.bigint() - t0) / 1e6 < 100, 'rejected at once')
    assert.equal(getEventListeners(ac.signal, 'abort').length, 0)
    a.release()
  })

  it('removes its abort listener when it acquires', async () => {
    const cwd = workspace()
    const ac = new AbortController()
    const a = await lock.acquireWorkspaceLock(cwd, 'goal_a')
    const bp = lock.acquireWorkspaceLock(cwd, 'goal_b', { signal: ac.signal })
    await sleep(20)
    a.release()
    const b = await bp
    assert.equal(getEventListeners(ac.signal, 'abort').length, 0)
    b.release()
  })
})

describe('release()', () => {
  it('deletes the lockfile only while it holds this handle\'s goalId, pid and startTime', async () => {
    const cwd = workspace()
    const { resolver, set } = startTimes()
    set(FIXED_PID, 1000)
    const h = await lock.acquireWorkspaceLock(cwd, 'goal_a', { startTimeResolver: resolver, pid: FIXED_PID, pollMs: 5 })
    const other = originalRecord({ pid: 99999, startTime: 5000, goalId: 'goal_other' })
    fs.writeFileSync(h.lockPath, other)
    h.release()
    assert.equal(fs.readFileSync(h.lockPath, 'utf8'), other)
    // Same goalId and pid, other startTime: not ours either.
    fs.writeFileSync(h.lockPath, originalRecord({ pid: FIXED_PID, startTime: 1001, goalId: 'goal_a' }))
    h.release()
    assert.ok(fs.existsSync(h.lockPath))
  })

  it('deletes a record of the original that matches goalId, pid and startTime', async () => {
    const cwd = workspace()
    const h = await lock.acquireWorkspaceLock(cwd, 'goal_a', { startTimeResolver: () => 1000, pid: FIXED_PID })
    fs.writeFileSync(h.lockPath, originalRecord({ pid: FIXED_PID, startTime: 1000, goalId: 'goal_a' }))
    h.release()
    assert.ok(!fs.existsSync(h.lockPath))
  })
})

describe('isWorkspaceBusy', () => {
  it('gives the live holder\'s goalId, else undefined (never null)', async () => {
    const cwd = workspace()
    assert.equal(lock.isWorkspaceBusy(cwd), undefined)
    assert.equal(lock.isWorkspaceBusy(path.join(cwd, 'no', 'such')), undefined)
    const h = await lock.acquireWorkspaceLock(cwd, 'goal_a')
    assert.equal(lock.isWorkspaceBusy(cwd), 'goal_a')
    h.release()
    assert.equal(lock.isWorkspaceBusy(cwd), undefined)
  })

  it('judges records of the original with the injected resolver and clock', () => {
    const cwd = workspace()
    fs.writeFileSync(lock.workspaceLockPath(cwd), originalRecord({ pid: FIXED_PID, startTime: 1000, heartbeat: 5_000_000, goalId: 'held' }))
    const { resolver, set } = startTimes()
    set(FIXED_PID, 1000)
    assert.equal(lock.isWorkspaceBusy(cwd, { startTimeResolver: resolver, now: () => 5_000_001 }), 'held')
    set(FIXED_PID, 2000)
    assert.equal(lock.isWorkspaceBusy(cwd, { startTimeResolver: resolver, now: () => 5_000_001 }), undefined)
    set(FIXED_PID, 1000)
    assert.equal(lock.isWorkspaceBusy(cwd, { startTimeResolver: resolver, now: () => 5_120_000 }), undefined)
  })
})

describe('reclaimStaleLocks', () => {
  it('deletes stale and recycled locks, keeps live ones and fresh unreadable ones, in name order', () => {
    const cwd = workspace()
    const dir = locksDir(cwd)
    const now = 5_000_000
    const { resolver, set } = startTimes()
    set(FIXED_PID, 1000)
    set(777, 9999)
    fs.writeFileSync(path.join(dir, 'stale.lock'), originalRecord({ pid: FIXED_PID, heartbeat: now - 120_000, goalId: 'old' }))
    fs.writeFileSync(path.join(dir, 'live.lock'), originalRecord({ pid: FIXED_PID, heartbeat: now - 1000, goalId: 'live' }))
    fs.writeFileSync(path.join(dir, 'a-recycled.lock'), originalRecord({ pid: 777, startTime: 1000, heartbeat: now, goalId: 'recycled' }))
    fs.writeFileSync(path.join(dir, 'corrupt-old.lock'), '{"pid":')
    setAge(path.join(dir, 'corrupt-old.lock'), 10 * 60_000)
    fs.writeFileSync(path.join(dir, 'corrupt-fresh.lock'), '')
    fs.writeFileSync(path.join(dir, 'B-upper.lock'), originalRecord({ pid: FIXED_PID, heartbeat: 1, goalId: 'upper' }))
    fs.writeFileSync(path.join(dir, 'notes.txt'), 'not a lock')
    const reclaimed = lock.reclaimStaleLocks(dir + '/./', { startTimeResolver: resolver, now: () => now, heartbeatStaleMs: 60_000 })
    assert.deepEqual(reclaimed, ['B-upper.lock', 'a-recycled.lock', 'corrupt-old.lock', 'stale.lock'].map((n) => path.join(dir + '/./', n)))
    for (const kept of ['live.lock', 'corrupt-fresh.lock', 'notes.txt']) assert.ok(fs.existsSync(path.join(dir, kept)), kept)
    for (const gone of ['stale.lock', 'a-recycled.lock', 'corrupt-old.lock', 'B-upper.lock']) assert.ok(!fs.existsSync(path.join(dir, gone)), gone)
  })

  it('returns [] for a missing directory and keeps relative paths relative', () => {
    assert.deepEqual(lock.reclaimStaleLocks('/nonexistent/dir/xyz'), [])
    const cwd = workspace()
    const dir = locksDir(cwd)
    fs.writeFileSync(path.join(dir, 'x.lock'), originalRecord({ heartbeat: 1 }))
    const rel = path.relative(process.cwd(), dir)
    assert.deepEqual(lock.reclaimStaleLocks(rel, { now: () => 1e12 }), [path.join(rel, 'x.lock')])
  })

  it('never deletes a live holder of this package, whatever its pid says', async () => {
    const cwd = workspace()
    const h = await lock.acquireWorkspaceLock(cwd, 'mine', { pid: 999_999_999 })
    assert.deepEqual(lock.reclaimStaleLocks(locksDir(cwd)), [])
    assert.equal(lock.isWorkspaceBusy(cwd), 'mine')
    h.release()
  })
})
