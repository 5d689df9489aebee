// Waiters are woken by events, not by polling: a release or the holder's death wakes them
// at once (pollMs is only the fallback), in arrival order within a process, many waiters
// stay cheap, and an idle wait costs no CPU. Bounds are generous: the figures belong to
// the benchmark (npm run bench), not to tests.
import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { Worker } from 'node:worker_threads'
import { lock, workspace, startChild, sleep, originalRecord } from './helpers.mjs'

const NO_POLL = 60_000 // so that only notifications can wake a waiter in time
const ms = (t0) => Number(process.hrtime.bigint() - t0) / 1e6

describe('waiters wake at once', () => {
  it('on a release in the same process', async () => {
    const cwd = workspace()
    const h = await lock.acquireWorkspaceLock(cwd, 'holder')
    const waiting = lock.acquireWorkspaceLock(cwd, 'waiter', { pollMs: NO_POLL })
    await sleep(50)
    const t0 = process.hrtime.bigint()
    h.release()
    const w = await waiting
    assert.ok(ms(t0) < 1000, `${ms(t0)} ms`)
    w.release()
  })

  it('after losing the race to another claim, when that claim is released during its pause', { timeout: 20_000 }, async () => {
    const cwd = workspace()
    for (let round = 0; round < 20; round++) {
      const a = await lock.acquireWorkspaceLock(cwd, 'a')
      const waiting = lock.acquireWorkspaceLock(cwd, 'waiter', { pollMs: NO_POLL })
      await sleep(20)
      a.release()
      // Claimed in the same tick, before the woken waiter looks: the waiter loses the race
      // and pauses (5 ms); the release below falls inside that pause.
      const b = await lock.acquireWorkspaceLock(cwd, 'b', { failOnWorkspaceBusy: true })
      await sleep(1)
      const t0 = process.hrtime.bigint()
      b.release()
      const w = await waiting
      assert.ok(ms(t0) < 1000, `round ${round}: ${ms(t0)} ms`)
      w.release()
    }
  })

  it('on a release in another process', { timeout: 20_000 }, async () => {
    const cwd = workspace()
    const holder = startChild('holder.mjs', [cwd, JSON.stringify({ goalId: 'other-process' })])
    await holder.nextLine()
    const waiting = lock.acquireWorkspaceLock(cwd, 'waiter', { pollMs: NO_POLL })
    await sleep(50)
    const t0 = process.hrtime.bigint()
    holder.send('release')
    const w = await waiting
    assert.ok(ms(t0) < 1000, `${ms(t0)} ms`)
    w.release()
    holder.kill()
  })
})

describe('a claim of the original module still being written', () => {
  it('is looked at again soon, so its holder is watched and its death wakes the waiter', { timeout: 20_000 }, async (t) => {
    // The original creates its lockfile empty and writes the record into it afterwards,
    // which raises no event a waiter watches; the waiter looks again within milliseconds.
    const cwd = workspace()
    const child = spawn('sleep', ['30'], { stdio: 'ignore' })
    t.after(() => child.kill('SIGKILL'))
    const lockPath = lock.workspaceLockPath(cwd)
    fs.mkdirSync(path.dirname(lockPath), { recursive: true })
    fs.writeFileSync(lockPath, '')
    const waiting = lock.acquireWorkspaceLock(cwd, 'waiter', { pollMs: NO_POLL })
    await sleep(100)
    const startTime = lock.defaultStartTimeResolver(child.pid)
    fs.writeFileSync(lockPath, originalRecord({ pid: child.pid, startTime, goalId: "original" }))
    await sleep(300)
    assert.equal(lock.isWorkspaceBusy(cwd), 'original')
    const t0 = process.hrtime.bigint()
    child.kill('SIGKILL')
    const w = await waiting
    assert.ok(ms(t0) < 2000, `${ms(t0)} ms after the holder's death`)
    assert.equal(w.reclaimed?.reason, 'holder_dead')
    w.release()
  })
})

describe('torture: no waiter is left asleep', () => {
  it('6 processes cycling, dying with the lock and SIGKILLed at random; every wait ends in the pauses', { timeout: 60_000 }, async () => {
    // Waiters poll once an hour, so only notifications wake them. Every 400 ms of churn the
    // children are told to start no new wait: the waits under way must then all end within
    // a pause (holds last at most 5 ms), or a wake-up was lost (a release, a death, a holder
    // taking the lock over that the waiter did not watch).
    const cwd = workspace('torture')
    const kids = new Map()
    let spawned = 0
    let acquisitions = 0
    let stopping = false
    let paused = false
    const spawnKid = () => {
      // One born during a pause starts paused: its first attempt would reclaim for the others.
      const c = startChild('torture-cycler.mjs', [cwd, String(1000 + spawned++), paused ? 'paused' : 'running'], {
        timeoutMs: 50_000,
      })
      c.child.stdin.on('error', () => {}) // a child killed before it read its last line
      const kid = { c, waiting: false }
      kids.set(c, kid)
      ;(async () => {
        for (;;) {
          let line
          try {
            line = await c.nextLine(50_000)
          } catch {
            return
          }
          if (line === 'WAIT') kid.waiting = true
          else if (line === 'GOT') {
            kid.waiting = false
            acquisitions++
          }
        }
      })()
      c.exited.then(() => {
        kids.delete(c)
        if (!stopping) spawnKid()
      })
    }
    for (let i = 0; i < 6; i++) spawnKid()
    let kills = 0
    let deathsWithWaiters = 0
    const stuck = []
    for (let round = 0; round < 12; round++) {
      const churnEnd = Date.now() + 400
      while (Date.now() < churnEnd) {
        await sleep(15)
        const list = [...kids.values()]
        if (Math.random() < 0.2 && list.length > 0) {
          list[Math.floor(Math.random() * list.length)].c.kill('SIGKILL')
          kills++
        }
      }
      // Pause when a child holds the lock with others waiting behind it, and kill the holder:
      // its waiters have only its death to wake them, since nobody else starts an attempt
      // that would reclaim the lock for them.
      const pauseBy = Date.now() + 300
      let victim
      while (!victim && Date.now() < pauseBy) {
        const holder = lock.isWorkspaceBusy(cwd)
        const list = [...kids.values()]
        const h = list.find((k) => holder === `t${k.c.pid}`)
        if (h && list.filter((k) => k !== h && k.waiting).length > 0) victim = h
        else await sleep(1)
      }
      paused = true
      for (const k of kids.values()) k.c.send('PAUSE')
      if (victim) {
        victim.c.kill('SIGKILL')
        kills++
        deathsWithWaiters++
      }
      await sleep(600)
      const asleep = [...kids.values()].filter((k) => k.waiting).length
      if (asleep > 0) stuck.push({ round, asleep, busy: lock.isWorkspaceBusy(cwd) })
      paused = false
      for (const k of kids.values()) k.c.send('RESUME')
    }
    stopping = true
    for (const c of [...kids.keys()]) c.kill('SIGKILL')
    assert.deepEqual(stuck, [], 'waits still under way after a pause')
    assert.ok(kills > 40, `${kills} kills`)
    assert.ok(deathsWithWaiters >= 6, `${deathsWithWaiters} holders killed with waiters behind them`)
    assert.ok(acquisitions > 300, `${acquisitions} acquisitions`)
  })
})

describe('many waiters', () => {
  it('100 waiters in one process are served in arrival order, each woken by the previous release', { timeout: 30_000 }, async () => {
    const cwd = workspace()
    const first = await lock.acquireWorkspaceLock(cwd, 'first')
    const order = []
    const all = Array.from({ length: 100 }, (_, i) =>
      lock.acquireWorkspaceLock(cwd, `w${i}`, { pollMs: NO_POLL }).then((h) => {
        order.push(i)
        assert.equal(lock.isWorkspaceBusy(cwd), `w${i}`)
        setImmediate(() => h.release())
      }),
    )
    await sleep(50)
    const t0 = process.hrtime.bigint()
    first.release()
    await Promise.all(all)
    assert.deepEqual(order, Array.from({ length: 100 }, (_, i) => i))
    assert.ok(ms(t0) < 10_000, `${ms(t0)} ms for 100 handovers`)
  })

  it('a holder that releases and asks again at once goes behind the waiters of its process', { timeout: 20_000 }, async () => {
    const cwd = workspace()
    const h = await lock.acquireWorkspaceLock(cwd, 'h')
    const order = []
    const take = (goal) => lock.acquireWorkspaceLock(cwd, goal, { pollMs: NO_POLL }).then((handle) => {
      order.push(goal)
      setImmediate(() => handle.release())
    })
    const waiters = [take('w1'), take('w2')]
    await sleep(50)
    h.release()
    const again = take('h-again')
    await Promise.all([...waiters, again])
    assert.deepEqual(order, ['w1', 'w2', 'h-again'])
    // A try-lock (failOnWorkspaceBusy) waits for nobody: it takes a free lock at once even
    // with waiters in line, as the original would, or fails on a held one.
    await new Promise((resolve) => setImmediate(resolve))
    const h2 = await lock.acquireWorkspaceLock(cwd, 'h2')
    const w3 = lock.acquireWorkspaceLock(cwd, 'w3', { pollMs: NO_POLL })
    await sleep(50)
    h2.release()
    const tried = await lock.acquireWorkspaceLock(cwd, 'try', { failOnWorkspaceBusy: true })
    assert.equal(lock.isWorkspaceBusy(cwd), 'try')
    tried.release()
    const third = await w3
    assert.equal(lock.isWorkspaceBusy(cwd), 'w3')
    third.release()
  })

  // Its turn comes while its thread is blocked: woken for the release, or, at its own pollMs
  // deadline, taken out of the watcher just before the release woke the next instead. 50 ms
  // of patience for the blocked one; its pollMs or the next one's would be far more.
  for (const [workerPollMs, behindPollMs, bound] of [[60_000, NO_POLL, 1_500], [100, NO_POLL, 1_500], [60_000, 200, 2_000]]) {
    it(`a release reaches the next waiter when the earliest one's thread is blocked (pollMs ${workerPollMs}, then ${behindPollMs})`, { timeout: 30_000 }, async () => {
      const cwd = workspace()
      const h = await lock.acquireWorkspaceLock(cwd, 'h')
      const index = path.join(path.dirname(new URL(import.meta.url).pathname), '..', 'index.js')
      const code = `const { parentPort, workerData } = require('node:worker_threads')
        const lock = require(workerData.index)
        lock.acquireWorkspaceLock(workerData.cwd, 'worker', { pollMs: workerData.pollMs }).then((held) => {
          parentPort.postMessage('held'); held.release(); parentPort.close()
        })
        parentPort.postMessage('waiting')
        setTimeout(() => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 3000), 100)`
      const w = new Worker(code, { eval: true, workerData: { cwd, index, pollMs: workerPollMs } })
      const messages = []
      w.on('message', (m) => messages.push(m))
      while (!messages.includes('waiting')) await sleep(5)
      const behind = lock.acquireWorkspaceLock(cwd, 'behind', { pollMs: behindPollMs })
      await sleep(400) // the worker's thread is blocked now
      const t0 = process.hrtime.bigint()
      h.release()
      const b = await behind
      assert.ok(ms(t0) < bound, `waited ${ms(t0)} ms behind a blocked thread`)
      b.release()
      await new Promise((resolve) => w.once('exit', resolve))
      assert.deepEqual(messages, ['waiting', 'held'])
    })
  }

  it('a worker that ends while waiting leaves the line: the next waiter takes the lock at the release', { timeout: 30_000 }, async () => {
    const cwd = workspace()
    const h = await lock.acquireWorkspaceLock(cwd, 'h')
    const index = path.join(path.dirname(new URL(import.meta.url).pathname), '..', 'index.js')
    const code = `const { parentPort, workerData } = require('node:worker_threads')
      require(workerData.index).acquireWorkspaceLock(workerData.cwd, 'worker', { pollMs: 60000 })
      parentPort.postMessage('waiting')`
    const w = new Worker(code, { eval: true, workerData: { cwd, index } })
    await new Promise((resolve) => w.once('message', resolve))
    const behind = lock.acquireWorkspaceLock(cwd, 'behind', { pollMs: NO_POLL })
    await sleep(50)
    await w.terminate()
    const t0 = process.hrtime.bigint()
    h.release()
    const b = await behind
    assert.ok(ms(t0) < 5_000, `${ms(t0)} ms`)
    assert.equal(lock.isWorkspaceBusy(cwd), 'behind')
    b.release()
  })

  it('20 waiters of one process that each ask again at once take turns, none starves', { timeout: 30_000 }, async () => {
    const cwd = workspace()
    const first = await lock.acquireWorkspaceLock(cwd, 'first')
    const order = []
    const loop = async (i) => {
      for (let round = 0; round < 3; round++) {
        const h = await lock.acquireWorkspaceLock(cwd, `w${i}`, { pollMs: NO_POLL })
        order.push(i)
        h.release() // and at once into line again
      }
    }
    const loops = Array.from({ length: 20 }, (_, i) => loop(i))
    await sleep(50)
    first.release()
    await Promise.all(loops)
    const round = Array.from({ length: 20 }, (_, i) => i)
    assert.deepEqual(order, [...round, ...round, ...round])
  })

  it('16 processes of waiters all get the lock in turn without polling', { timeout: 60_000 }, async () => {
    const cwd = workspace()
    const first = await lock.acquireWorkspaceLock(cwd, 'first')
    const children = Array.from({ length: 16 }, () => startChild('waiters.mjs', [cwd, '2', String(NO_POLL), 'cycle'], { timeoutMs: 50_000 }))
    await sleep(300)
    const t0 = process.hrtime.bigint()
    first.release()
    const lines = await Promise.all(children.map((c) => c.nextLine(45_000)))
    for (const line of lines) assert.match(line, /^done \d+$/)
    // 32 holds of 5 ms each: with pollMs 60 s, only wake-ups can finish this in time.
    assert.ok(ms(t0) < 20_000, `${ms(t0)} ms`)
    assert.equal(lock.isWorkspaceBusy(cwd), undefined)
  })
})

describe('waiters of one process share their fallback looks', () => {
  it('and still notice, by time alone, a holder whose heartbeat goes stale', { timeout: 20_000 }, async () => {
    const cwd = workspace()
    const lockPath = lock.workspaceLockPath(cwd)
    fs.mkdirSync(path.dirname(lockPath), { recursive: true })
    // A holder on another host: only its heartbeat tells, and no event comes when it ages.
    const heartbeat = Date.now() - 700
    fs.writeFileSync(lockPath, JSON.stringify({ pid: 999_999_999, startTime: 1, heartbeat, goalId: 'far-away', acquiredAt: new Date(heartbeat).toISOString(), host: 'elsewhere', bootId: 'another-boot', pidNs: '1' }))
    const order = []
    let firstMs
    const t0 = process.hrtime.bigint()
    const waiters = Array.from({ length: 20 }, (_, i) =>
      lock.acquireWorkspaceLock(cwd, `w${i}`, { pollMs: 50, heartbeatStaleMs: 1000 }).then((held) => {
        firstMs ??= ms(t0)
        order.push(i)
        held.release()
      }))
    await Promise.all(waiters)
    assert.deepEqual(order, Array.from({ length: 20 }, (_, i) => i))
    assert.ok(firstMs >= 200 && firstMs < 5_000, `first acquired after ${firstMs} ms`)
  })
})

describe('an idle wait costs no CPU', () => {
  // Generous bounds: a poller at 5 ms would burn far more; we expect a few ms at most. 200
  // waiters looking each every 20 ms would take more than a core here; they share their
  // looks (one per 20 ms).
  for (const [waiters, pollMs, bound] of [[100, NO_POLL, 100_000], [100, 500, 100_000], [200, 20, 250_000]]) {
    it(`${waiters} parked waiters use almost no CPU over a second (pollMs ${pollMs})`, { timeout: 20_000 }, async () => {
      const cwd = workspace()
      const h = await lock.acquireWorkspaceLock(cwd, 'holder')
      const child = startChild('waiters.mjs', [cwd, String(waiters), String(pollMs), 'idle'])
      assert.equal(await child.nextLine(), 'parked')
      await sleep(300)
      child.send('measure 1000')
      const cpuMicros = Number(await child.nextLine())
      assert.ok(cpuMicros < bound, `${cpuMicros} µs of CPU in 1 s`)
      await child.exited
      h.release()
    })
  }
})
