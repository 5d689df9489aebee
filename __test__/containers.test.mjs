// SPEC "Do better" 3 and 6: a holder in another PID namespace on this kernel (a container)
// is judged by its kernel lock, never by a pid that means nothing here, and recovered at
// once when it dies; a holder on another host is judged by its heartbeat alone; a record
// of the original (no host fields) counts as local.
import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import { spawnSync } from 'node:child_process'
import { lock, workspace, startChild, sleep } from './helpers.mjs'

const canUnshare = spawnSync('unshare', ['--pid', '--fork', '--kill-child', 'true']).status === 0
const inContainer = ['unshare', '--pid', '--fork', '--kill-child', '--mount-proc']
const ms = (t0) => Number(process.hrtime.bigint() - t0) / 1e6

describe('a holder in another PID namespace', { skip: !canUnshare && 'unshare --pid is not permitted here' }, () => {
  it('is alive by its kernel lock, although its pid means nothing here', { timeout: 20_000 }, async () => {
    const cwd = workspace()
    const holder = startChild('holder.mjs', [cwd, JSON.stringify({ goalId: 'in-container' })], { prefix: inContainer })
    const lockPath = (await holder.nextLine()).split(' ')[1]
    const record = JSON.parse(fs.readFileSync(lockPath, 'utf8'))
    assert.notEqual(record.pidNs, fs.readlinkSync('/proc/self/ns/pid').match(/\d+/)[0], 'another PID namespace')
    assert.ok(record.pid <= 5, `pid ${record.pid} inside its namespace`)
    assert.equal(lock.isWorkspaceBusy(cwd), 'in-container')
    const status = lock.inspectWorkspaceLock(cwd)
    assert.equal(status.state, 'held')
    assert.equal(status.evidence, 'kernel_lock')
    assert.deepEqual(lock.reclaimStaleLocks(lock.workspaceLockPath(cwd).replace(/\/[^/]+$/, '')), [])
    holder.kill('SIGKILL')
  })

  it('is recovered at once when it dies, and a waiter wakes long before pollMs', { timeout: 20_000 }, async () => {
    const cwd = workspace()
    const holder = startChild('holder.mjs', [cwd, JSON.stringify({ goalId: 'doomed' })], { prefix: inContainer })
    await holder.nextLine()
    const waiting = lock.acquireWorkspaceLock(cwd, 'waiter', { pollMs: 60_000 })
    await sleep(100)
    const t0 = process.hrtime.bigint()
    holder.kill('SIGKILL') // unshare --kill-child passes it on to the namespace's process
    const h = await waiting
    assert.ok(ms(t0) < 1000, `woke after ${ms(t0)} ms`)
    assert.equal(h.reclaimed?.reason, 'holder_dead')
    assert.equal(h.reclaimed?.goalId, 'doomed')
    h.release()
  })
})

describe('a holder on another host', () => {
  const foreign = (heartbeat) =>
    JSON.stringify({ pid: 999_999_999, startTime: 1, heartbeat, goalId: 'far-away', acquiredAt: new Date(heartbeat).toISOString(), host: 'elsewhere', bootId: 'another-boot', pidNs: '1', ownerLock: 281_474_976_710_657 })

  it('is judged by its heartbeat alone: a dead-looking pid does not make it stale', async () => {
    const cwd = workspace()
    fs.writeFileSync(lock.workspaceLockPath(cwd), foreign(Date.now()))
    assert.equal(lock.isWorkspaceBusy(cwd), 'far-away')
    assert.equal(lock.inspectWorkspaceLock(cwd).evidence, 'heartbeat')
    await assert.rejects(lock.acquireWorkspaceLock(cwd, 'g', { failOnWorkspaceBusy: true }), /held by goalId=far-away/)
  })

  it('is stale once its heartbeat is older than heartbeatStaleMs', async () => {
    const cwd = workspace()
    fs.writeFileSync(lock.workspaceLockPath(cwd), foreign(Date.now() - 61_000))
    assert.equal(lock.isWorkspaceBusy(cwd), undefined)
    const h = await lock.acquireWorkspaceLock(cwd, 'g', { failOnWorkspaceBusy: true })
    assert.equal(h.reclaimed?.reason, 'heartbeat_stale')
    h.release()
  })
})

describe('a record of the original (no host fields)', () => {
  it('counts as local: a pid that does not exist here makes it stale at once', async () => {
    const cwd = workspace()
    const now = Date.now()
    fs.writeFileSync(lock.workspaceLockPath(cwd), JSON.stringify({ pid: 999_999_999, startTime: 1, heartbeat: now, goalId: 'gone', acquiredAt: new Date(now).toISOString() }))
    assert.equal(lock.isWorkspaceBusy(cwd), undefined)
    const h = await lock.acquireWorkspaceLock(cwd, 'g', { failOnWorkspaceBusy: true })
    assert.equal(h.reclaimed?.reason, 'holder_dead')
    h.release()
  })
})
