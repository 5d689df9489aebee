// Issue 14: a live holder is never evicted, whatever happens around it: wall-clock steps,
// a full or read-only disk, a stopped process, no thread to spare; and a loss is delivered
// exactly once. Real processes throughout; the goals (fixtures/fault-goal.mjs) keep an O_EXCL
// witness file and a counter in their critical section, so two holders at once show as an
// overlap. Runs as root (mounts, setpriv); a missing tool skips its test, saying why.
// Tools: faketime (libfaketime), util-linux (mount, umount, setpriv, prlimit).
import { describe, it, after } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import path from 'node:path'
import { spawnSync } from 'node:child_process'
import { lock, workspace, startChild, sleep, tempDir, fixturesDir } from './helpers.mjs'

const { acquireWorkspaceLock, isWorkspaceBusy, inspectWorkspaceLock, workspaceLockPath } = lock

// Debian's package faketime, on x64 (CI) or arm64.
const FAKETIME_LIB = [
  '/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1',
  '/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1',
].find((f) => fs.existsSync(f)) ?? '/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1'
const ms = (t0) => Number(process.hrtime.bigint() - t0) / 1e6
const isRoot = process.getuid?.() === 0
const run = (cmd, args) => spawnSync(cmd, args, { encoding: 'utf8', timeout: 10_000 })
const have = (cmd) => run('sh', ['-c', `command -v ${cmd}`]).status === 0

/**
 * A goal process (fixtures/fault-goal.mjs) whose every line is kept, in order. `waitFor`
 * finds a line (from index `from`); `ask` sends a command and returns its answer.
 */
function goal(cwd, opts, { env = {}, timeoutMs = 40_000 } = {}) {
  const c = startChild('fault-goal.mjs', [cwd, JSON.stringify(opts)], { env, timeoutMs })
  const lines = []
  const wake = new Set()
  let ended = false
  ;(async () => {
    try {
      for (;;) {
        lines.push(await c.nextLine(600_000))
        for (const f of [...wake]) f()
      }
    } catch {
      // the child exited
    } finally {
      ended = true
      for (const f of [...wake]) f()
    }
  })()
  const report = () => `${opts.goalId} (pid ${c.pid}) said ${JSON.stringify(lines)}; stderr: ${c.stderr()}`
  function waitFor(test, { from = 0, timeout = 10_000, what = String(test) } = {}) {
    const match = (l) => (typeof test === 'function' ? test(l) : l.startsWith(test))
    return new Promise((resolve, reject) => {
      const check = () => {
        const i = lines.findIndex((l, j) => j >= from && match(l))
        if (i >= 0) finish(() => resolve(lines[i]))
        else if (ended) finish(() => reject(new Error(`${what}: never came, exited; ${report()}`)))
      }
      const timer = setTimeout(() => finish(() => reject(new Error(`${what}: not within ${timeout} ms; ${report()}`))), timeout)
      const finish = (f) => {
        clearTimeout(timer)
        wake.delete(check)
        f()
      }
      wake.add(check)
      check()
    })
  }
  async function ask(cmd, timeout = 5_000) {
    const from = lines.length
    c.send(cmd)
    const line = await waitFor(`${cmd} `, { from, timeout, what: `answer to ${cmd}` })
    const rest = line.slice(cmd.length + 1)
    return rest === 'none' ? undefined : JSON.parse(rest)
  }
  return {
    ...c,
    lines,
    report,
    waitFor,
    ask,
    has: (prefix) => lines.some((l) => l.startsWith(prefix)),
    count: (prefix) => lines.filter((l) => l.startsWith(prefix)).length,
  }
}

/** Every goal's lines are free of overlaps and losses. */
function assertClean(...goals) {
  for (const g of goals) {
    assert.equal(g.count('overlap'), 0, `overlap: ${g.report()}`)
    assert.equal(g.count('compromised'), 0, `lost its lock: ${g.report()}`)
    assert.equal(g.count('rejected'), 0, `rejected: ${g.report()}`)
  }
}

/** The holder releases; the waiter then holds (second in the counter); both end cleanly. */
async function handOver(holder, waiter) {
  assert.equal(waiter.has('held'), false, `the waiter took the lock before the release: ${waiter.report()}`)
  holder.send('release')
  await holder.waitFor('released', { what: 'holder released' })
  const held = await waiter.waitFor('held', { what: 'waiter acquired after the release' })
  assert.match(held, /^held 2 /, waiter.report())
  waiter.send('release')
  await waiter.waitFor('released', { what: 'waiter released' })
  assert.deepEqual(await holder.exited, { code: 0, signal: null }, holder.report())
  assert.deepEqual(await waiter.exited, { code: 0, signal: null }, waiter.report())
  assertClean(holder, waiter)
}

const counterOf = (cwd) => fs.readFileSync(path.join(cwd, 'fault-counter'), 'utf8')
const heartbeatOf = (lockPath) => JSON.parse(fs.readFileSync(lockPath, 'utf8')).heartbeat

/** What `waiter` sees: the holder's record, and its verdict (the holder, alive). */
async function waiterSeesHolder(waiter) {
  const look = await waiter.ask('look')
  const seen = JSON.stringify(look)
  assert.equal(look.goalId, 'holder', `the lockfile is no longer the holder's: ${seen}; ${waiter.report()}`)
  assert.equal(look.busy, 'holder', `the waiter judges the live holder's lock free: ${seen}`)
  assert.equal(look.status?.state, 'held', `the waiter's inspect: ${seen}`)
  return look
}

/** The test process judges the live holder alive. */
function busyHere(cwd, opts) {
  const busy = isWorkspaceBusy(cwd, opts)
  if (busy !== 'holder') assert.fail(`isWorkspaceBusy(${JSON.stringify(opts ?? {})}) = ${busy} for a live holder; inspect: ${JSON.stringify(inspectWorkspaceLock(cwd, opts))}`)
}

/** Watches, every `every` ms for `forMs`, that the waiter waits and `judge()` passes. */
async function holdsFor(forMs, waiter, judge, every = 50) {
  const until = Date.now() + forMs
  let looks = 0
  while (Date.now() < until) {
    assert.equal(waiter.has('held'), false, `the waiter took the lock from a live holder: ${waiter.report()}`)
    assertClean(waiter)
    await judge()
    looks++
    await sleep(every)
  }
  return looks
}

// ---------------------------------------------------------------------------------------

describe('wall-clock steps (libfaketime; the monotonic clock left alone)', () => {
  const missing = !fs.existsSync(FAKETIME_LIB) && `libfaketime is not installed (${FAKETIME_LIB}; Debian package faketime)`

  /** A clock file for libfaketime, and the environment that makes a child read it at every call. */
  function fakeClock(offset) {
    const file = path.join(tempDir('wslock-clock'), 'offset')
    const set = (value) => {
      fs.writeFileSync(`${file}.new`, `${value}\n`)
      fs.renameSync(`${file}.new`, file) // atomic: a child never reads it half-written
    }
    set(offset)
    const env = {
      LD_PRELOAD: FAKETIME_LIB,
      FAKETIME_TIMESTAMP_FILE: file,
      FAKETIME_NO_CACHE: '1',
      FAKETIME_DONT_FAKE_MONOTONIC: '1',
    }
    return { set, env }
  }

  /** The child's Date.now() is `offsetMs` ahead of ours (libfaketime really is in effect). */
  async function assertClockAhead(g, offsetMs) {
    const theirs = await g.ask('clock')
    const skew = theirs - Date.now() - offsetMs
    assert.ok(Math.abs(skew) < 3000, `${g.report()}: clock ${theirs}, expected ${Date.now() + offsetMs} (off by ${skew} ms)`)
  }

  it('a step of +2 minutes for holder and waiter mid-hold: the waiter waits for the release, 0 overlaps', { timeout: 30_000, skip: missing }, async () => {
    const cwd = workspace('wslock-step')
    const STALE = 10_000 // the holder beats every 2.5 s; a step of 2 min is 12x this
    const clock = fakeClock('+0')
    const holder = goal(cwd, { goalId: 'holder', heartbeatStaleMs: STALE }, { env: clock.env })
    let waiter
    try {
      const lockPath = (await holder.waitFor('held')).split(' ')[2]
      await assertClockAhead(holder, 0)
      waiter = goal(cwd, { goalId: 'waiter', heartbeatStaleMs: STALE, pollMs: 50 }, { env: clock.env })
      await waiter.waitFor('waiting')
      await assertClockAhead(waiter, 0)
      // Step right after a beat, so that the old heartbeat stays on file for ~2.5 s.
      const before = heartbeatOf(lockPath)
      const t0 = Date.now()
      while (heartbeatOf(lockPath) === before) {
        assert.ok(Date.now() - t0 < 6000, 'the holder never refreshed its heartbeat')
        await sleep(5)
      }
      const beat = heartbeatOf(lockPath)
      clock.set('+120')
      await assertClockAhead(holder, 120_000)
      await assertClockAhead(waiter, 120_000)
      // The waiter now sees a heartbeat 2 minutes old, 12x its heartbeatStaleMs, and must wait.
      const look = await waiterSeesHolder(waiter)
      assert.equal(look.heartbeat, beat, `the holder beat again before the waiter looked: ${JSON.stringify(look)}`)
      assert.ok(look.now - look.heartbeat > 100_000, `heartbeat only ${look.now - look.heartbeat} ms old to the waiter`)
      // Through the holder's next beat (with the stepped clock) and beyond.
      const looks = await holdsFor(3500, waiter, async () => busyHere(cwd))
      assert.ok(looks > 20)
      assert.ok(heartbeatOf(lockPath) > Date.now() + 100_000, 'the holder refreshes with its stepped clock')
      await waiterSeesHolder(waiter)
      await handOver(holder, waiter)
      assert.equal(counterOf(cwd), '2')
    } finally {
      holder.kill()
      waiter?.kill()
    }
  })

  it("the waiter's clock alone an hour ahead: it waits until the holder releases, 0 overlaps", { timeout: 20_000, skip: missing }, async () => {
    const cwd = workspace('wslock-ahead')
    const STALE = 10_000
    const clock = fakeClock('+3600')
    const holder = goal(cwd, { goalId: 'holder', heartbeatStaleMs: STALE })
    let waiter
    try {
      await holder.waitFor('held')
      await assertClockAhead(holder, 0)
      waiter = goal(cwd, { goalId: 'waiter', heartbeatStaleMs: STALE, pollMs: 50 }, { env: clock.env })
      await waiter.waitFor('waiting')
      await assertClockAhead(waiter, 3_600_000)
      const look = await waiterSeesHolder(waiter)
      assert.ok(look.now - look.heartbeat > 3_500_000, `heartbeat only ${look.now - look.heartbeat} ms old to the waiter`)
      const looks = await holdsFor(1500, waiter, async () => busyHere(cwd))
      assert.ok(looks > 10)
      await waiterSeesHolder(waiter)
      await handOver(holder, waiter)
      assert.equal(counterOf(cwd), '2')
    } finally {
      holder.kill()
      waiter?.kill()
    }
  })

  it("the holder's clock an hour ahead does not make it look alive once dead: SIGKILLed, the waiter holds within 1 s", { timeout: 20_000, skip: missing }, async (t) => {
    const cwd = workspace('wslock-behind')
    const clock = fakeClock('+3600')
    const holder = goal(cwd, { goalId: 'holder', heartbeatStaleMs: 10_000 }, { env: clock.env })
    let waiter
    try {
      await holder.waitFor('held')
      await assertClockAhead(holder, 3_600_000)
      waiter = goal(cwd, { goalId: 'waiter', heartbeatStaleMs: 10_000, pollMs: 60_000 })
      await waiter.waitFor('waiting')
      const look = await waiterSeesHolder(waiter)
      assert.ok(look.heartbeat - look.now > 3_500_000, `the heartbeat is not in the waiter's future: ${JSON.stringify(look)}`)
      await sleep(100)
      const t0 = process.hrtime.bigint()
      holder.kill('SIGKILL')
      await waiter.waitFor('held', { what: 'the waiter acquired after the SIGKILL' })
      const took = ms(t0)
      t.diagnostic(`the waiter held ${took.toFixed(1)} ms after the kill`)
      assert.ok(took < 1000, `the waiter held ${took} ms after the kill`)
      assertClean(waiter)
      waiter.send('release')
      assert.deepEqual(await waiter.exited, { code: 0, signal: null }, waiter.report())
    } finally {
      holder.kill()
      waiter?.kill()
    }
  })
})

// ---------------------------------------------------------------------------------------

describe('a full or read-only disk under the locks directory', () => {
  const missing = (!isRoot && 'needs root (mount)') || (!have('mount') && 'mount is not installed') || (!have('umount') && 'umount is not installed')
  const mounted = new Set()

  /** Mounts a tmpfs of `size` on `dir`; returns why not, or undefined. */
  function mountTmpfs(dir, size) {
    const r = run('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0755`, 'tmpfs', dir])
    if (r.status !== 0) return `mount -t tmpfs failed: ${(r.stderr || r.error?.message || '').trim()}`
    mounted.add(dir)
    return undefined
  }
  /** Detaches every mount stacked on `dir` (lazily: our own busy checks keep files open there). */
  function unmountAll(dir) {
    for (let i = 0; i < 5 && run('umount', ['-l', dir]).status === 0; i++);
    mounted.delete(dir)
  }
  after(() => {
    for (const dir of [...mounted]) unmountAll(dir)
  })

  /** Fills the file system of `dir` with one file, until ENOSPC. */
  function fill(dir) {
    const filler = path.join(dir, 'filler')
    const fd = fs.openSync(filler, 'w')
    const chunk = Buffer.alloc(64 * 1024, 0x61)
    let bytes = 0
    try {
      for (;;) bytes += fs.writeSync(fd, chunk)
    } catch (e) {
      assert.equal(e.code, 'ENOSPC', `filling ${dir}: ${e.message}`)
    } finally {
      fs.closeSync(fd)
    }
    assert.throws(() => fs.writeFileSync(path.join(dir, 'one-more'), 'x'), { code: 'ENOSPC' })
    return { filler, bytes }
  }

  /** Polls the holder until its heartbeatError is `code` (or, with undefined, until it is gone). */
  async function heartbeatErrorBecomes(holder, code, timeout = 5000) {
    const t0 = Date.now()
    for (;;) {
      const err = await holder.ask('error')
      if (code === undefined ? err === undefined : err?.code === code) return err
      assert.ok(Date.now() - t0 < timeout, `heartbeatError is still ${JSON.stringify(err)}, not ${code ?? 'undefined'}, after ${timeout} ms`)
      await sleep(50)
    }
  }

  /** The holder was told, keeps the lock for several x STALE, and nobody else gets it. */
  async function heldThroughout(cwd, holder, waiter, lockDir, STALE, code) {
    const err = await heartbeatErrorBecomes(holder, code)
    assert.equal(err.isError, true)
    assert.equal(typeof err.syscall, 'string', JSON.stringify(err))
    assert.equal(typeof err.path, 'string', JSON.stringify(err))
    assert.ok(err.path.startsWith(lockDir), `the failing path ${err.path} is not in ${lockDir}`)
    assert.ok(Number.isInteger(err.attempts) && err.attempts >= 1, JSON.stringify(err))
    assert.ok(typeof err.since === 'number' && err.since <= Date.now() + 1000, JSON.stringify(err))
    assert.ok(err.message.includes(code), err.message)
    const busyMessage = `workspace busy: cwd=${cwd} held by goalId=holder (pid=${holder.pid})`
    const looks = await holdsFor(STALE * 5, waiter, async () => {
      busyHere(cwd)
      busyHere(cwd, { heartbeatStaleMs: STALE })
      await assert.rejects(acquireWorkspaceLock(cwd, 'try', { failOnWorkspaceBusy: true, heartbeatStaleMs: STALE }), (e) => {
        assert.equal(e.message, busyMessage, `a try-lock failed otherwise: ${e.code} ${e.message}`)
        return true
      })
    }, 100)
    assert.ok(looks >= 10)
    // A fresh process (nothing of the locks directory open yet) tries too: busy, not the disk's error.
    const trier = goal(cwd, { goalId: 'trier', heartbeatStaleMs: STALE, failOnWorkspaceBusy: true })
    try {
      const rejected = await trier.waitFor((l) => /^(rejected|held) /.test(l), { what: 'the try-lock of a fresh process' })
      assert.match(rejected, /^rejected /, `a try-lock took the live holder's lock: ${trier.report()}`)
      assert.equal(JSON.parse(rejected.slice('rejected '.length)).message, busyMessage, trier.report())
      assert.deepEqual(await trier.exited, { code: 0, signal: null }, trier.report())
    } finally {
      trier.kill()
    }
    // Not vacuous: the heartbeat on file really is stale by now, and the retries go on.
    const status = inspectWorkspaceLock(cwd, { heartbeatStaleMs: STALE })
    assert.equal(status.state, 'held', JSON.stringify(status))
    assert.ok(status.heartbeatAgeMs > STALE * 3, `heartbeat only ${status.heartbeatAgeMs} ms old`)
    const later = await holder.ask('error')
    assert.equal(later?.code, code, JSON.stringify(later))
    assert.ok(later.attempts >= err.attempts + 4, `refresh retried ${later.attempts - err.attempts} times in ${STALE * 5} ms`)
    await waiterSeesHolder(waiter)
    return later
  }

  it('the tmpfs fills up while held: the holder is told (ENOSPC) and keeps the lock; a try-lock says busy; 0 overlaps', { timeout: 30_000, skip: missing }, async (t) => {
    const cwd = workspace('wslock-full')
    const lockDir = path.dirname(workspaceLockPath(cwd))
    const why = mountTmpfs(lockDir, '512k')
    if (why) return t.skip(why)
    const STALE = 400
    let holder
    let waiter
    try {
      holder = goal(cwd, { goalId: 'holder', heartbeatStaleMs: STALE })
      const lockPath = (await holder.waitFor('held')).split(' ')[2]
      assert.equal(path.dirname(lockPath), lockDir)
      assert.equal(await holder.ask('error'), undefined, 'no heartbeatError while refreshes work')
      waiter = goal(cwd, { goalId: 'waiter', heartbeatStaleMs: STALE, pollMs: 50 })
      await waiter.waitFor('waiting')
      const { filler } = fill(lockDir)
      t.diagnostic(`heartbeatError: ${JSON.stringify(await heldThroughout(cwd, holder, waiter, lockDir, STALE, 'ENOSPC'))}`)
      // Space again: the next retry refreshes, and the error is gone.
      fs.unlinkSync(filler)
      fs.rmSync(path.join(lockDir, 'one-more'), { force: true })
      await heartbeatErrorBecomes(holder, undefined, 2000)
      await sleep(STALE / 2)
      const status = inspectWorkspaceLock(cwd, { heartbeatStaleMs: STALE })
      assert.ok(status.heartbeatAgeMs < STALE, `heartbeat ${status.heartbeatAgeMs} ms old after the disk had space again`)
      await handOver(holder, waiter)
      assert.equal(counterOf(cwd), '2')
      // The failed refreshes left no temp files behind, and no lock.
      assert.deepEqual(fs.readdirSync(lockDir).filter((f) => /\.(lock|claim|evicted)$/.test(f)), [])
    } finally {
      holder?.kill()
      waiter?.kill()
      unmountAll(lockDir)
    }
  })

  it('the file system turns read-only while held: the holder is told (EROFS) and keeps the lock; a try-lock says busy; 0 overlaps', { timeout: 30_000, skip: missing }, async (t) => {
    const cwd = workspace('wslock-ro')
    const lockDir = path.dirname(workspaceLockPath(cwd))
    const why = mountTmpfs(lockDir, '1m')
    if (why) return t.skip(why)
    const STALE = 400
    let holder
    let waiter
    try {
      holder = goal(cwd, { goalId: 'holder', heartbeatStaleMs: STALE })
      await holder.waitFor('held')
      waiter = goal(cwd, { goalId: 'waiter', heartbeatStaleMs: STALE, pollMs: 50 })
      await waiter.waitFor('waiting')
      // A real remount fails (EBUSY) while a file there is open for writing, as the
      // holder's owner file is; then a read-only bind mount of the directory over itself
      // makes every write by path fail with EROFS, as a read-only file system would.
      let how = 'remount,ro'
      let back = ['-o', 'remount,rw', lockDir]
      const remount = run('mount', ['-o', 'remount,ro', lockDir])
      if (remount.status !== 0) {
        assert.match(remount.stderr, /busy/i, `mount -o remount,ro failed otherwise: ${remount.stderr}`)
        how = `a read-only bind mount (mount -o remount,ro: ${remount.stderr.trim().split('\n')[0]})`
        const bind = run('mount', ['--bind', lockDir, lockDir])
        assert.equal(bind.status, 0, `mount --bind: ${bind.stderr}`)
        const ro = run('mount', ['-o', 'remount,ro,bind', lockDir])
        assert.equal(ro.status, 0, `mount -o remount,ro,bind: ${ro.stderr}`)
        back = ['-o', 'remount,rw,bind', lockDir]
      }
      t.diagnostic(`read-only by ${how}`)
      assert.throws(() => fs.writeFileSync(path.join(lockDir, 'probe'), 'x'), { code: 'EROFS' })
      t.diagnostic(`heartbeatError: ${JSON.stringify(await heldThroughout(cwd, holder, waiter, lockDir, STALE, 'EROFS'))}`)
      // Writable again: the next retry refreshes, and the error is gone.
      const rw = run('mount', back)
      assert.equal(rw.status, 0, `mount ${back.join(' ')}: ${rw.stderr}`)
      await heartbeatErrorBecomes(holder, undefined, 2000)
      await handOver(holder, waiter)
      assert.equal(counterOf(cwd), '2')
      // The failed refreshes left no temp files behind, and no lock.
      assert.deepEqual(fs.readdirSync(lockDir).filter((f) => /\.(lock|claim|evicted)$/.test(f)), [])
    } finally {
      holder?.kill()
      waiter?.kill()
      unmountAll(lockDir)
    }
  })
})

// ---------------------------------------------------------------------------------------

describe('a stopped holder (SIGSTOP)', () => {
  const STALE = 300

  async function stoppedHolder(label) {
    const cwd = workspace(label)
    const holder = goal(cwd, { goalId: 'holder', heartbeatStaleMs: STALE })
    await holder.waitFor('held')
    const waiter = goal(cwd, { goalId: 'waiter', heartbeatStaleMs: STALE, pollMs: 50 })
    await waiter.waitFor('waiting')
    await sleep(50)
    holder.kill('SIGSTOP')
    const looks = await holdsFor(STALE * 3, waiter, async () => busyHere(cwd, { heartbeatStaleMs: STALE }))
    assert.ok(looks >= 10)
    const status = inspectWorkspaceLock(cwd, { heartbeatStaleMs: STALE })
    assert.equal(status.state, 'held', JSON.stringify(status))
    assert.ok(status.heartbeatAgeMs > STALE * 2, `heartbeat only ${status.heartbeatAgeMs} ms old: was the holder stopped?`)
    await waiterSeesHolder(waiter)
    return { cwd, holder, waiter }
  }

  it('keeps its lock while stopped for 3x heartbeatStaleMs; the waiter acquires after SIGCONT and release', { timeout: 20_000 }, async () => {
    let g
    try {
      g = await stoppedHolder('wslock-stop')
      g.holder.kill('SIGCONT')
      assert.equal(await g.holder.ask('error'), undefined)
      await handOver(g.holder, g.waiter)
      assert.equal(counterOf(g.cwd), '2')
    } finally {
      g?.holder.kill('SIGKILL')
      g?.waiter.kill()
    }
  })

  it('is recovered within milliseconds when SIGKILLed while stopped', { timeout: 20_000 }, async (t) => {
    let g
    try {
      g = await stoppedHolder('wslock-stopkill')
      const t0 = process.hrtime.bigint()
      g.holder.kill('SIGKILL')
      await g.waiter.waitFor('held', { what: 'the waiter acquired after the SIGKILL' })
      const took = ms(t0)
      t.diagnostic(`the waiter held ${took.toFixed(1)} ms after the kill`)
      assert.ok(took < 1000, `the waiter held ${took} ms after the kill`)
      assert.match(g.waiter.lines.find((l) => l.startsWith('held')), /^held 2 /)
      assertClean(g.waiter)
      g.waiter.send('release')
      assert.deepEqual(await g.waiter.exited, { code: 0, signal: null }, g.waiter.report())
    } finally {
      g?.holder.kill('SIGKILL')
      g?.waiter.kill()
    }
  })
})

// ---------------------------------------------------------------------------------------

describe('no thread for the heartbeat (RLIMIT_NPROC)', () => {
  const missing = (!isRoot && 'needs root (setpriv to another user)') || (!have('setpriv') && 'setpriv is not installed (util-linux)') || (!have('prlimit') && 'prlimit is not installed (util-linux)')
  const asNobody = ['setpriv', '--reuid=nobody', '--regid=nogroup', '--clear-groups']

  it('acquire rejects with EAGAIN from pthread_create and leaves no lockfile', { timeout: 20_000, skip: missing }, async (t) => {
    const cwd = workspace('wslock-nothread')
    const lockPath = workspaceLockPath(cwd)
    for (const d of [cwd, path.join(cwd, '.crew'), path.join(cwd, '.crew', 'state'), path.dirname(lockPath)]) fs.chmodSync(d, 0o777)
    // The package as `nobody` can read it: here, or a copy if this checkout is private.
    let index = path.resolve(fixturesDir, '..', '..', 'index.js')
    let prefix = asNobody
    const probe = run(asNobody[0], [...asNobody.slice(1), process.execPath, '-e', 'require(process.argv[1])', index])
    if (probe.error || (probe.status !== 0 && /^setpriv:/m.test(probe.stderr))) return t.skip(`setpriv does not work here: ${probe.error?.message ?? probe.stderr}`)
    if (probe.status !== 0) {
      const pkg = tempDir('wslock-pkg')
      fs.chmodSync(pkg, 0o755)
      const root = path.dirname(index)
      for (const f of fs.readdirSync(root).filter((f) => f === 'index.js' || f === 'binding.js' || f.endsWith('.node'))) fs.copyFileSync(path.join(root, f), path.join(pkg, f))
      fs.copyFileSync(path.join(fixturesDir, 'fault-nothread.mjs'), path.join(pkg, 'fault-nothread.mjs'))
      index = path.join(pkg, 'index.js')
      // The copy runs; the arguments startChild appends after it end with <index> <cwd>.
      prefix = [...asNobody, process.execPath, path.join(pkg, 'fault-nothread.mjs')]
      t.diagnostic(`this checkout is not readable by nobody: running a copy in ${pkg}`)
    }
    const child = startChild('fault-nothread.mjs', [index, cwd], { timeoutMs: 15_000, prefix })
    try {
      const ready = await child.nextLine(10_000)
      assert.match(ready, /^ready \d+$/, child.stderr())
      const pid = Number(ready.split(' ')[1])
      assert.equal(fs.statSync(`/proc/${pid}`).uid, 65534, 'the child runs as nobody')
      // Lowering another user's limit takes CAP_SYS_RESOURCE or that user's own uid: run
      // prlimit as nobody too (root in a container often lacks CAP_SYS_RESOURCE).
      const limit = run(asNobody[0], [...asNobody.slice(1), 'prlimit', '--pid', String(pid), '--nproc=1:1'])
      assert.equal(limit.status, 0, `prlimit --nproc=1:1: ${limit.stderr}`)
      child.send('go')
      const answer = await child.nextLine(10_000)
      assert.match(answer, /^rejected /, `acquire did not reject: ${answer}; stderr: ${child.stderr()}`)
      const err = JSON.parse(answer.slice('rejected '.length))
      assert.equal(err.isError, true)
      assert.equal(err.code, 'EAGAIN', JSON.stringify(err))
      assert.equal(err.syscall, 'pthread_create', JSON.stringify(err))
      assert.match(err.message, /^EAGAIN: could not start the workspace lock's heartbeat thread \(.+\); no lock was taken$/)
      assert.deepEqual(JSON.parse((await child.nextLine()).slice('after '.length)), { exists: false, busy: null })
      // Not vacuous: no thread at all could be started in that process.
      const worker = JSON.parse((await child.nextLine()).slice('worker '.length))
      assert.equal(worker.started, false, `a Worker started: the limit did not bite (${JSON.stringify(worker)})`)
      assert.deepEqual(await child.exited, { code: 0, signal: null }, child.stderr())
      assert.equal(fs.existsSync(lockPath), false)
      assert.equal(isWorkspaceBusy(cwd), undefined)
      assert.deepEqual(fs.readdirSync(path.dirname(lockPath)).filter((f) => f.endsWith('.lock') || f.endsWith('.claim')), [])
      // And the workspace is free for the next goal.
      const h = await acquireWorkspaceLock(cwd, 'next', { failOnWorkspaceBusy: true })
      h.release()
    } finally {
      child.kill()
    }
  })
})

// ---------------------------------------------------------------------------------------

describe('onCompromised is called exactly once', () => {
  /** Runs fixtures/fault-compromised.mjs in `mode` to its end; returns its lines. */
  async function lossy(mode) {
    const cwd = workspace('wslock-lossy')
    const child = startChild('fault-compromised.mjs', [cwd, mode], { timeoutMs: 15_000 })
    const lines = []
    try {
      for (;;) lines.push(await child.nextLine(10_000))
    } catch (e) {
      if (child.child.exitCode === null && child.child.signalCode === null) {
        child.kill()
        throw e
      }
    }
    const exit = await child.exited
    const report = `${mode}: ${JSON.stringify(lines)}; stderr: ${child.stderr()}`
    assert.deepEqual(exit, { code: 0, signal: null }, report)
    assert.equal(child.stderr(), '', report)
    const calls = lines.filter((l) => l.startsWith('compromised '))
    assert.equal(calls.length, 1, `onCompromised called ${calls.length} times; ${report}`)
    assert.match(calls[0], new RegExp(`^compromised ECOMPROMISED workspace lock compromised for goal lossy-${mode} \\(cwd=.*\\): the lockfile was deleted$`), report)
    assert.equal(fs.existsSync(workspaceLockPath(cwd)), false, report)
    return { lines, report, at: (prefix) => lines.findIndex((l) => l.startsWith(prefix)) }
  }

  for (const mode of ['release-exit', 'release-end']) {
    it(`lockfile deleted, then release(), then the process ${mode === 'release-exit' ? 'calls process.exit()' : 'ends by itself'}: called inside release()`, { timeout: 20_000 }, async () => {
      const { at, report } = await lossy(mode)
      assert.ok(at('deleted') < at('compromised') && at('compromised') < at('released'), `not called before release() returned: ${report}`)
    })
  }

  it('loss found by the heartbeat while the event loop was blocked, then release(): delivered by release()', { timeout: 20_000 }, async () => {
    const { at, lines, report } = await lossy('found-then-release')
    assert.ok(lines.includes('flag true'), `the heartbeat had not found the loss: ${report}`)
    assert.ok(at('flag') < at('compromised') && at('compromised') < at('released'), `not called before release() returned: ${report}`)
  })

  for (const mode of ['blocked-exit', 'blocked-end']) {
    it(`loss found by the heartbeat while the event loop was blocked, then ${mode === 'blocked-exit' ? 'process.exit()' : 'the process ends'} without release()`, { timeout: 20_000 }, async () => {
      const { at, lines, report } = await lossy(mode)
      assert.ok(lines.includes('flag true'), `the heartbeat had not found the loss: ${report}`)
      assert.ok(at('flag') < at('compromised'), report)
    })
  }

  it('loss found by the heartbeat with the event loop free: delivered through the loop, and not again by release()', { timeout: 20_000 }, async () => {
    const { at, lines, report } = await lossy('loop-then-release')
    assert.ok(lines.includes('flag true'), report)
    assert.ok(at('compromised') < at('flag'), `not delivered while the loop was free: ${report}`)
  })
})
