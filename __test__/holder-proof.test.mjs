// Issue 14: a live holder is never evicted, and what a claim publishes is what it wrote.
// Real processes: the locks directory replaced by a copy of itself under a holder and a
// waiter; a waiter out of file descriptors when the lock is released; a stopped holder as
// the command-line tool shows it.
import { describe, it, after } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import path from 'node:path'
import { spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { lock, workspace, startChild, sleep } from './helpers.mjs'

const CLI = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'bin', 'workspace-lock.js')

function goal(cwd, opts) {
  return startChild('fault-goal.mjs', [cwd, JSON.stringify(opts)], { timeoutMs: 30_000 })
}

/** The next line starting with `prefix` (other lines are collected in `seen`). */
async function lineStarting(kid, prefix, seen = [], ms = 10_000) {
  for (;;) {
    const line = await kid.nextLine(ms)
    if (line.startsWith(prefix)) return line
    seen.push(line)
  }
}

describe('the locks directory replaced by a copy of itself', () => {
  it('while one goal holds and another waits: no stale record published, none left behind, no two owners', { timeout: 30_000 }, async () => {
    const cwd = workspace('swap')
    const lockPath = lock.workspaceLockPath(cwd)
    const dir = path.dirname(lockPath)
    const a = goal(cwd, { goalId: 'first' })
    const seenA = []
    await lineStarting(a, 'held ', seenA)
    const b = goal(cwd, { goalId: 'second', pollMs: 100 })
    const seenB = []
    await lineStarting(b, 'waiting', seenB)
    await sleep(150) // b has looked (and kept a spare of its own in the directory)
    assert.ok(fs.readdirSync(dir).some((n) => n.endsWith('.spare')), 'the waiter left a spare to be copied')
    // A backup restored over the directory: a copy with every file, swapped in by rename.
    const copy = `${dir}.copy`
    const old = `${dir}.old`
    assert.equal(spawnSync('cp', ['-a', dir, copy]).status, 0)
    fs.renameSync(dir, old)
    fs.renameSync(copy, dir)
    after(() => fs.rmSync(old, { recursive: true, force: true }))
    // The holder is alive: the waiter must not take the lock, over several polls.
    await sleep(500)
    assert.equal(JSON.parse(fs.readFileSync(lockPath, 'utf8')).goalId, 'first')
    assert.equal(lock.isWorkspaceBusy(cwd), 'first')
    a.send('release')
    await lineStarting(a, 'released', seenA)
    const held = await lineStarting(b, 'held ', seenB)
    assert.equal(held, `held 2 ${lockPath}`, 'the counter saw both, one after the other')
    // What b published is its own record, freshly written, not the copied spare's old bytes.
    const record = JSON.parse(fs.readFileSync(lockPath, 'utf8'))
    assert.equal(record.goalId, 'second')
    assert.equal(record.pid, b.pid)
    assert.ok(Date.now() - record.heartbeat < 5_000, `heartbeat ${Date.now() - record.heartbeat} ms old`)
    b.send('release')
    await lineStarting(b, 'released', seenB)
    await Promise.all([a.exited, b.exited])
    for (const line of [...seenA, ...seenB]) assert.doesNotMatch(line, /^(overlap|compromised|rejected)/)
    assert.equal(fs.existsSync(lockPath), false, 'no record left behind')
    assert.deepEqual(fs.readdirSync(dir).filter((n) => n.endsWith('.lock') || n.endsWith('.claim')), [])
  })
})

describe('a waiter out of file descriptors', () => {
  it('looks again when EMFILE passes instead of rejecting the wait', { timeout: 20_000 }, async (t) => {
    const cwd = workspace('emfile')
    const lockPath = lock.workspaceLockPath(cwd)
    // A holder on another host: watched through no descriptor of the waiter's (a holder
    // here would be watched through a pidfd, which the wake-up closes, freeing one).
    const now = Date.now()
    fs.writeFileSync(lockPath, JSON.stringify({ pid: 4242, startTime: 1, heartbeat: now, goalId: 'far', acquiredAt: new Date(now).toISOString(), host: 'elsewhere', bootId: 'another-boot', pidNs: '1' }))
    const prlimit = spawnSync('prlimit', ['--version'])
    if (prlimit.error) return t.skip('prlimit is not installed')
    const w = startChild('emfile-waiter.mjs', [cwd], { prefix: ['prlimit', '--nofile=256:256', '--'], timeoutMs: 15_000 })
    assert.equal(await w.nextLine(), 'waiting')
    await sleep(200)
    w.send('exhaust')
    assert.match(await w.nextLine(), /^exhausted \d+ EMFILE$/)
    fs.unlinkSync(lockPath) // released: the waiter is woken and its look fails for want of descriptors
    await sleep(400)
    w.send('restore')
    assert.equal(await w.nextLine(), 'restored')
    assert.equal(await w.nextLine(5_000), 'held')
    assert.deepEqual(await w.exited, { code: 0, signal: null })
  })
})

describe('a stopped holder', () => {
  it('stays held, and workspace-lock status says it is alive but not refreshing', { timeout: 20_000 }, async (t) => {
    const cwd = workspace('stopped')
    const holder = goal(cwd, { goalId: 'sleeper', heartbeatStaleMs: 200 })
    await lineStarting(holder, 'held ')
    holder.kill('SIGSTOP')
    try {
      await sleep(700)
      const st = lock.inspectWorkspaceLock(cwd, { heartbeatStaleMs: 200 })
      assert.equal(st.state, 'held')
      assert.equal(st.evidence, 'kernel_lock')
      assert.equal(st.heartbeatLate, true)
      assert.ok(st.heartbeatAgeMs > 200)
      assert.equal(lock.isWorkspaceBusy(cwd, { heartbeatStaleMs: 200 }), 'sleeper')
      assert.deepEqual(lock.reclaimStaleLocks(path.dirname(st.lockPath), { heartbeatStaleMs: 200 }), [])
      // Default judge (60 s): not late yet, but alive; with a 200 ms judge: late.
      assert.equal(lock.inspectWorkspaceLock(cwd).heartbeatLate, undefined)
      const r = spawnSync(process.execPath, [CLI, 'status', cwd], { encoding: 'utf8', env: { ...process.env, NO_COLOR: '1' } })
      assert.equal(r.status, 1, r.stderr)
      assert.match(r.stdout, /held: alive \(kernel lock held\)/)
      // Five minutes later, as an operator would see it (the tool's wall clock moved on).
      const faketime = ['x86_64', 'aarch64'].map((a) => `/usr/lib/${a}-linux-gnu/faketime/libfaketime.so.1`).find((f) => fs.existsSync(f))
      if (faketime) {
        const env = { ...process.env, NO_COLOR: '1', LD_PRELOAD: faketime, FAKETIME: '+5m', FAKETIME_DONT_FAKE_MONOTONIC: '1' }
        const later = spawnSync(process.execPath, [CLI, 'status', cwd], { encoding: 'utf8', env })
        assert.equal(later.status, 1, later.stderr)
        assert.match(later.stdout, /held: alive \(kernel lock held\), heartbeat not refreshed for 5 min \d+ s: stopped or hung\?/)
      } else {
        t.diagnostic('libfaketime not installed: the five-minutes-later status was not checked')
      }
      await assert.rejects(lock.acquireWorkspaceLock(cwd, 'thief', { failOnWorkspaceBusy: true, heartbeatStaleMs: 200 }), /workspace busy: .* held by goalId=sleeper/)
    } finally {
      holder.kill('SIGCONT')
    }
    holder.send('release')
    await lineStarting(holder, 'released')
  })
})
