// Multi-process tests: real child processes contending for one workspace lock.
// Children: fixtures/mp-cycler.mjs (acquire/release cycles with an O_EXCL witness and a
// non-atomic counter) and fixtures/mp-stampede.mjs (acquire on command).
import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import path from 'node:path'
import { spawnSync } from 'node:child_process'
import { lock, workspace, startChild, pidAlive, sleep } from './helpers.mjs'

const { acquireWorkspaceLock, isWorkspaceBusy, reclaimStaleLocks, workspaceLockPath } = lock

const LONG = 3_600_000

/** A pid that was a process a moment ago and is now dead (and reaped). */
function deadPid() {
  for (;;) {
    const r = spawnSync('/bin/true')
    if (r.pid && !pidAlive(r.pid)) return r.pid
  }
}

/** Writes a lockfile the way the original module does: O_EXCL create, then the JSON. */
function writeOriginalLock(file, contents) {
  const fd = fs.openSync(file, 'wx')
  try {
    fs.writeFileSync(fd, JSON.stringify(contents))
  } finally {
    fs.closeSync(fd)
  }
}

const isLeftover = (name) => name.startsWith('.') && (name.endsWith('.claim') || name.endsWith('.evicted'))

describe('multi-process', () => {
  it('mutual exclusion under contention: 4 processes x 500 cycles, no overlap, no lost update', { timeout: 60_000 }, async () => {
    const cwd = workspace('mp-mutex')
    const counter = path.join(fs.realpathSync(cwd), 'mp-counter')
    fs.writeFileSync(counter, '0')
    const kids = Array.from({ length: 4 }, () => startChild('mp-cycler.mjs', [cwd, 'count', '500'], { timeoutMs: 50_000 }))
    for (const k of kids) assert.equal(await k.nextLine(15_000), 'READY')
    for (const k of kids) k.send('go')
    const summaries = await Promise.all(kids.map((k) => k.nextLine(45_000).then((l) => JSON.parse(l))))
    const exits = await Promise.all(kids.map((k) => k.exited))
    const report = JSON.stringify({ summaries, exits, stderr: kids.map((k) => k.stderr()).filter(Boolean) })
    for (const e of exits) assert.deepEqual(e, { code: 0, signal: null }, report)
    for (const s of summaries) {
      assert.equal(s.cycles, 500, report)
      assert.equal(s.overlaps, 0, report)
      assert.equal(s.deadWitnesses, 0, report) // nobody dies here
    }
    assert.equal(fs.readFileSync(counter, 'utf8'), '2000', report)
    assert.equal(fs.existsSync(workspaceLockPath(cwd)), false, report)
    assert.equal(isWorkspaceBusy(cwd), undefined)
  })

  it('stampede on a stale lock: 4 processes x 100 rounds, exactly one winner each round', { timeout: 60_000 }, async () => {
    const cwd = workspace('mp-stampede')
    const lockPath = workspaceLockPath(cwd)
    const kids = Array.from({ length: 4 }, () => startChild('mp-stampede.mjs', [cwd], { timeoutMs: 55_000 }))
    for (const k of kids) assert.equal(await k.nextLine(15_000), 'READY')
    const anomalies = []
    let rounds = 0
    for (let round = 1; round <= 100; round++) {
      const dead = deadPid()
      const heartbeat = Date.now() - 120_000
      writeOriginalLock(lockPath, {
        pid: dead,
        startTime: 1000,
        heartbeat,
        goalId: `stale-${round}`,
        acquiredAt: new Date(heartbeat).toISOString(),
      })
      const at = Date.now() + 15
      kids.forEach((k, i) => k.send(`try ${round} round-${round}-child${i} ${at}`))
      const answers = await Promise.all(kids.map((k) => k.nextLine(10_000)))
      const ctx = `round ${round}: ${JSON.stringify(answers)}`
      for (const a of answers) {
        assert.match(a, new RegExp(`^(won|busy) ${round}( |$)`), ctx)
      }
      const winners = answers.map((a, i) => (a.startsWith('won ') ? i : -1)).filter((i) => i >= 0)
      assert.equal(winners.length, 1, ctx)
      const w = winners[0]
      // While the winner holds: the lockfile is its, and every loser was told who holds it.
      const rec = JSON.parse(fs.readFileSync(lockPath, 'utf8'))
      assert.equal(rec.goalId, `round-${round}-child${w}`, ctx)
      assert.equal(rec.pid, kids[w].pid, ctx)
      assert.equal(isWorkspaceBusy(cwd), `round-${round}-child${w}`, ctx)
      for (const [i, a] of answers.entries()) {
        if (i === w) continue
        assert.ok(a.startsWith(`busy ${round} workspace busy: cwd=${cwd} held by goalId=`), ctx)
        if (a.includes(`held by goalId=round-${round}-child${w} (pid=${kids[w].pid})`)) continue
        anomalies.push(ctx)
      }
      kids[w].send(`release ${round}`)
      assert.equal(await kids[w].nextLine(10_000), `released ${round} ok`, ctx)
      assert.equal(fs.existsSync(lockPath), false, `lockfile left after release, ${ctx}`)
      rounds++
    }
    assert.equal(rounds, 100)
    // A loser must name the live holder, never the dead one it found stale.
    assert.deepEqual(anomalies, [])
    for (const k of kids) k.send('exit')
    for (const k of kids) assert.deepEqual(await k.exited, { code: 0, signal: null }, k.stderr())
  })

  it('SIGKILL at random moments: 100 holders/waiters killed, no overlap, lock recovered', { timeout: 80_000 }, async (t) => {
    const cwd = workspace('mp-sigkill')
    const lockPath = workspaceLockPath(cwd)
    const dir = path.dirname(lockPath)
    const overlaps = []
    const unexpected = []
    let deadWitnesses = 0
    const all = []
    const slots = []

    function spawnSlot(i) {
      const c = startChild('mp-cycler.mjs', [cwd, 'chaos'], { timeoutMs: 60_000 })
      const entry = { c, ready: false, killedByUs: false, dead: false }
      entry.done = c.exited.then((e) => {
        entry.dead = true
        if (!(entry.killedByUs && e.signal === 'SIGKILL')) unexpected.push({ pid: c.pid, exit: e, stderr: c.stderr() })
      })
      ;(async () => {
        for (;;) {
          let line
          try {
            line = await c.nextLine(LONG)
          } catch {
            return
          }
          if (line === 'READY') entry.ready = true
          else if (line.startsWith('OVERLAP ')) overlaps.push(line)
          else if (line.startsWith('DEAD-WITNESS ')) deadWitnesses++
          else unexpected.push({ pid: c.pid, line })
        }
      })()
      slots[i] = entry
      all.push(entry)
    }

    for (let i = 0; i < 4; i++) spawnSlot(i)
    let killed = 0
    const deadline = Date.now() + 50_000
    while (killed < 100) {
      assert.ok(Date.now() < deadline, `only ${killed} kills before the deadline`)
      assert.deepEqual(unexpected, [], `a child died on its own or said something odd (after ${killed} kills)`)
      await sleep(5 + Math.random() * 35)
      const ready = slots.map((e, i) => (e.ready && !e.dead ? i : -1)).filter((i) => i >= 0)
      if (ready.length === 0) continue
      const i = ready[Math.floor(Math.random() * ready.length)]
      slots[i].killedByUs = true
      slots[i].c.kill('SIGKILL')
      killed++
      spawnSlot(i)
    }
    // Stop everyone (SIGKILL too), and wait until every child is gone.
    for (const e of slots) {
      e.killedByUs = true
      e.c.kill('SIGKILL')
    }
    await Promise.all(all.map((e) => e.done))

    const ctx = JSON.stringify({ overlaps: overlaps.slice(0, 10), unexpected: unexpected.slice(0, 5) })
    assert.equal(overlaps.length, 0, ctx)
    assert.deepEqual(unexpected, [], ctx)
    // The kills must have hit holders inside their critical sections (about half of them
    // do), or this test proves little.
    assert.ok(deadWitnesses > 0, `no kill landed inside a critical section (${killed} kills)`)

    // Every holder is dead: the lock is recovered at once, without waiting for a heartbeat.
    assert.equal(isWorkspaceBusy(cwd), undefined)
    const handle = await acquireWorkspaceLock(cwd, 'final', { failOnWorkspaceBusy: true })
    try {
      assert.equal(isWorkspaceBusy(cwd), 'final')
      const swept = reclaimStaleLocks(dir)
      assert.ok(!swept.includes(lockPath), `the sweep took our live lock: ${JSON.stringify(swept)}`)
      const names = fs.readdirSync(dir)
      assert.deepEqual(names.filter((n) => n.endsWith('.lock')), [path.basename(lockPath)], JSON.stringify(names))
      const leftovers = names.filter(isLeftover)
      // Leftovers of killed claims younger than 30 s are kept by the sweep on purpose.
      if (process.env.MP_VERBOSE) {
        t.diagnostic(`kills=${killed} children=${all.length} deadWitnesses=${deadWitnesses} leftovers=${leftovers.length} swept=${swept.length}`)
      }
    } finally {
      handle.release()
    }
    assert.equal(fs.existsSync(lockPath), false)
  })
})
