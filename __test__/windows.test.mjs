// The cross-platform part of the suite, written to run on Windows (and run under Wine by
// .ci/windows.sh, with the x86_64-pc-windows-gnu build), on Linux and macOS too: real
// contention between processes with an O_EXCL witness and a counter, a holder killed while
// holding (TerminateProcess on Windows, SIGKILL elsewhere) and recovered at once, and lock
// paths against a reference written with Node's own `path`, `fs.realpathSync`, `os.homedir()`
// and `os.tmpdir()` (`path.win32` on Windows: drive letters, drive-relative and UNC cwds).
import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import crypto from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { createRequire } from 'node:module'
import { lock, tempDir, startChild } from './helpers.mjs'
import { controlRequest } from './pg-server.mjs'

const windows = process.platform === 'win32'
const binding = createRequire(import.meta.url)('../binding.js')
const { acquireWorkspaceLock, isWorkspaceBusy, workspaceLockPath, reclaimStaleLocks, defaultStartTimeResolver } = lock

const MARKERS = ['.git', '.pi', '.crew', '.hg', '.svn', '.factory', '.omc', 'package.json', 'pyproject.toml',
  'Cargo.toml', 'go.mod', 'pom.xml', 'composer.json', 'build.gradle', 'build.gradle.kts']

function realpathOr(p) {
  try {
    return fs.realpathSync(p)
  } catch {
    return p
  }
}

/** workspaceLockPath as SPEC.md describes it, with this platform's `path` (win32 on Windows). */
function reference(cwd) {
  const absCwd = path.resolve(cwd)
  let start
  try {
    start = fs.realpathSync(absCwd)
  } catch (e) {
    if (e.code !== 'ENOENT') throw e
    start = absCwd
  }
  const home = realpathOr(path.resolve(os.homedir()))
  const tmp = realpathOr(path.resolve(os.tmpdir()))
  let repoRoot
  for (let current = start; ; current = path.dirname(current)) {
    if (current === home || current === tmp) break
    if (MARKERS.some((m) => fs.existsSync(path.join(current, m)))) {
      repoRoot = current
      break
    }
    if (path.dirname(current) === current) break
  }
  repoRoot ??= absCwd
  const crew = path.join(repoRoot, '.crew')
  const pi = path.join(repoRoot, '.pi')
  const crewRoot = fs.existsSync(crew) ? fs.realpathSync(crew) : fs.existsSync(pi) ? path.join(fs.realpathSync(pi), 'teams') : crew
  const hash = crypto.createHash('sha256').update(absCwd).digest('hex')
  return path.join(crewRoot, 'state', 'workspace-locks', `${hash}.lock`)
}

function workspace(label) {
  const cwd = tempDir(label)
  fs.mkdirSync(path.join(cwd, '.crew', 'state', 'workspace-locks'), { recursive: true })
  return cwd
}

/**
 * `procs` children of xp-cycler.mjs, `cycles` acquire/release cycles each on `cwd`, with an
 * O_EXCL witness and a shared counter in the critical section: none overlapped, no update
 * was lost, every child exited 0. `env`: the children's (a backend URL).
 */
async function contend(t, cwd, procs, cycles, { timeoutMs, env = {} }) {
  const counter = path.join(cwd, 'xp-counter')
  fs.writeFileSync(counter, '0')
  const kids = Array.from({ length: procs }, () => startChild('xp-cycler.mjs', [cwd, 'count', String(cycles)], { timeoutMs: timeoutMs - 20_000, env }))
  for (const k of kids) assert.equal(await k.nextLine(60_000), 'READY')
  const started = Date.now()
  for (const k of kids) k.send('go')
  const summaries = await Promise.all(kids.map((k) => k.nextLine(timeoutMs - 40_000).then((l) => JSON.parse(l))))
  const exits = await Promise.all(kids.map((k) => k.exited))
  const ms = Date.now() - started
  const report = JSON.stringify({ summaries, exits, ms, stderr: kids.map((k) => k.stderr()).filter(Boolean) })
  t.diagnostic(`${procs * cycles} cycles in ${ms} ms`)
  for (const s of summaries) {
    assert.equal(s.cycles, cycles, report)
    assert.equal(s.overlaps, 0, report)
  }
  for (const e of exits) assert.equal(e.code, 0, report)
  assert.equal(fs.readFileSync(counter, 'utf8'), String(procs * cycles), report)
}

/**
 * A child holds the lock of `cwd` (on the backend at `backend`, if given); this process
 * waits for it (with pollMs a minute away on the file lock: only the holder's death can end
 * the wait in time), then the child is killed. The handle, how long after the kill it came,
 * and the child's exit.
 */
async function takenAfterKill(t, cwd, backend) {
  const opts = backend ? { backend } : undefined
  const env = backend ? { WORKSPACE_LOCK_BACKEND: backend } : {}
  const holder = startChild('xp-cycler.mjs', [cwd, 'hold'], { timeoutMs: 50_000, env })
  assert.equal(await holder.nextLine(30_000), 'HELD')
  assert.equal(isWorkspaceBusy(cwd, opts), `holder-${holder.pid}`)
  const waiting = acquireWorkspaceLock(cwd, 'next', opts ?? { pollMs: 60_000 })
  await new Promise((r) => setTimeout(r, 200))
  const killedAt = Date.now()
  holder.kill('SIGKILL')
  const handle = await waiting
  const ms = Date.now() - killedAt
  t.diagnostic(`taken ${ms} ms after the kill`)
  return { handle, ms, exited: holder.exited }
}

describe('cross-platform', () => {
  it('defaultStartTimeResolver gives undefined where there is no /proc', () => {
    const got = defaultStartTimeResolver(process.pid)
    if (process.platform === 'linux') assert.equal(typeof got, 'number')
    else assert.equal(got, undefined)
  })

  it('acquire, busy, release and sweep', async () => {
    const cwd = workspace('xp-basic')
    const handle = await acquireWorkspaceLock(cwd, 'g1', { failOnWorkspaceBusy: true })
    assert.equal(handle.lockPath, workspaceLockPath(cwd))
    assert.equal(isWorkspaceBusy(cwd), 'g1')
    await assert.rejects(acquireWorkspaceLock(cwd, 'g2', { failOnWorkspaceBusy: true }), /workspace busy/)
    const record = JSON.parse(fs.readFileSync(handle.lockPath, 'utf8'))
    assert.equal(record.goalId, 'g1')
    assert.equal(record.pid, process.pid)
    if (process.platform === 'linux') {
      // The original's start time, from /proc.
      assert.equal(typeof record.startTime, 'number')
      assert.equal(record.procStart, undefined)
    } else {
      // No start time of the original's here; this package's own proof of the pid.
      assert.equal(record.startTime, undefined)
      assert.match(record.procStart, /^\d+$/)
    }
    assert.deepEqual(reclaimStaleLocks(path.dirname(handle.lockPath)), [])
    handle.release()
    assert.equal(isWorkspaceBusy(cwd), undefined)
    assert.equal(fs.existsSync(handle.lockPath), false)
  })

  it('lock paths agree with Node\'s own path computations', () => {
    const root = fs.realpathSync(tempDir('xp-paths'))
    const repo = path.join(root, 'repo')
    fs.mkdirSync(path.join(repo, 'a', 'b'), { recursive: true })
    fs.writeFileSync(path.join(repo, 'package.json'), '{}')
    const legacy = path.join(root, 'legacy')
    fs.mkdirSync(path.join(legacy, '.pi'), { recursive: true })
    const cases = [
      repo,
      path.join(repo, 'a', 'b'),
      path.join(repo, 'a', '..', 'a', 'b') + path.sep,
      path.join(repo, 'missing', 'x'),
      legacy,
      root,
      '.',
      'relative/sub',
    ]
    if (windows) {
      const drive = root.slice(0, 2)
      cases.push(
        root.replaceAll('\\', '/'),
        root.toLowerCase(),
        `${drive}${root.slice(2).replaceAll('\\', '/')}/repo//a/./b`,
        `${drive}relative`,
        `${drive}\\`,
        '\\\\server\\share\\team\\proj',
        '//server/share/x/../y/',
        '\\\\server\\share',
      )
    }
    for (const cwd of cases) {
      assert.equal(workspaceLockPath(cwd), reference(cwd), `workspaceLockPath(${JSON.stringify(cwd)})`)
    }
  })

  it('without USERPROFILE, the walk stops at the system\'s profile directory, as os.homedir() does', { skip: !windows && 'USERPROFILE is read on Windows only', timeout: 60_000 }, (t) => {
    // A marker in the home directory itself: a walk that did not stop at the right home
    // would take the home for the repo root.
    const home = os.homedir()
    const marker = path.join(home, 'package.json')
    const placed = !fs.existsSync(marker)
    if (placed) fs.writeFileSync(marker, '{}')
    const cwd = fs.mkdtempSync(path.join(home, 'wl-home-'))
    fs.mkdirSync(path.join(cwd, 'sub'))
    const out = path.join(cwd, 'out.json')
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => k.toUpperCase() !== 'USERPROFILE'))
    const index = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'index.js')
    const script = `
      const fs = require('node:fs'), os = require('node:os')
      const lock = require(${JSON.stringify(index)})
      const cwd = ${JSON.stringify(path.join(cwd, 'sub'))}
      let lockPath, error
      try { lockPath = lock.workspaceLockPath(cwd) } catch (e) { error = String(e) }
      fs.writeFileSync(${JSON.stringify(out)}, JSON.stringify({ userprofile: process.env.USERPROFILE ?? null, home: os.homedir(), lockPath, error }))`
    try {
      // Output to a file: node.exe under Wine cannot write to a pipe.
      const run = spawnSync(process.execPath, ['-e', script], { env, stdio: 'ignore', timeout: 50_000 })
      assert.equal(run.status, 0, `child exited ${run.status} ${run.error ?? ''}`)
      const seen = JSON.parse(fs.readFileSync(out, 'utf8'))
      if (seen.userprofile !== null) {
        // Wine sets USERPROFILE in every process it starts: there the core's cargo test
        // `the_system_profile_directory_is_the_users_home` calls the fallback instead.
        t.skip('USERPROFILE is set in every process here (Wine)')
        return
      }
      assert.equal(seen.error, undefined)
      assert.equal(realpathOr(seen.home), realpathOr(home), 'os.homedir() fell back to the same profile directory')
      const hash = crypto.createHash('sha256').update(path.join(cwd, 'sub')).digest('hex')
      assert.equal(seen.lockPath, path.join(cwd, 'sub', '.crew', 'state', 'workspace-locks', `${hash}.lock`))
    } finally {
      fs.rmSync(cwd, { recursive: true, force: true })
      if (placed) fs.rmSync(marker, { force: true })
    }
  })

  it('4 processes x 200 cycles: no overlap, no lost update', { timeout: 240_000 }, async (t) => {
    const cwd = workspace('xp-mutex')
    await contend(t, cwd, 4, 200, { timeoutMs: 240_000 })
    assert.equal(isWorkspaceBusy(cwd), undefined)
  })

  it('a holder killed while holding (TerminateProcess on Windows) is recovered at once', { timeout: 60_000 }, async (t) => {
    const cwd = workspace('xp-kill')
    // A waiter in this process, with a fallback far away: only the holder's death wakes it.
    const { handle, ms, exited } = await takenAfterKill(t, cwd)
    try {
      assert.ok(ms < 1000, `recovered ${ms} ms after the kill`)
      assert.equal(isWorkspaceBusy(cwd), 'next')
    } finally {
      handle.release()
    }
    await exited
  })
})

// The PostgreSQL backend from this build (on Windows: the Windows build under Wine, against
// the Linux server .ci/windows.sh starts). WORKSPACE_LOCK_TEST_PG_URL names the server.
describe('the PostgreSQL backend', () => {
  const url = process.env.WORKSPACE_LOCK_TEST_PG_URL
  const skip = !url && 'WORKSPACE_LOCK_TEST_PG_URL is not set (.ci/windows.sh starts a server and sets it)'

  it('acquire, busy, failOnWorkspaceBusy, tokens strictly increasing, release', { skip, timeout: 60_000 }, async () => {
    const cwd = workspace('xp-pg')
    const h1 = await acquireWorkspaceLock(cwd, 'pg1', { backend: url })
    assert.equal(typeof h1.fencingToken, 'bigint')
    assert.equal(isWorkspaceBusy(cwd, { backend: url }), 'pg1')
    const record = JSON.parse(fs.readFileSync(h1.lockPath, 'utf8'))
    assert.equal(record.backend, 'postgres')
    assert.equal(record.fencingToken, String(h1.fencingToken))
    await assert.rejects(acquireWorkspaceLock(cwd, 'pg2', { backend: url, failOnWorkspaceBusy: true }), /^Error: workspace busy: .* held by goalId=pg1 /)
    h1.release()
    h1.release()
    assert.equal(isWorkspaceBusy(cwd, { backend: url }), undefined)
    const h2 = await acquireWorkspaceLock(cwd, 'pg2', { backend: url })
    assert.ok(h2.fencingToken > h1.fencingToken)
    h2.release()
  })

  it('2 processes x 50 cycles over the server: no overlap, no lost update', { skip, timeout: 180_000 }, async (t) => {
    await contend(t, workspace('xp-pg-mutex'), 2, 50, { timeoutMs: 180_000, env: { WORKSPACE_LOCK_BACKEND: url } })
  })

  it('a holder killed while holding frees the lock on the server at once', { skip, timeout: 60_000 }, async (t) => {
    const { handle, ms, exited } = await takenAfterKill(t, workspace('xp-pg-kill'), url)
    try {
      assert.ok(ms < 1000, `acquired ${ms} ms after the kill`)
    } finally {
      handle.release()
    }
    await exited
  })

  // The server's side, through the control directory .ci/windows.sh serves beside it
  // (pg_ctl and psql are Linux programs, out of node.exe's reach under Wine).
  const controlDir = process.env.WORKSPACE_LOCK_TEST_PG_CONTROL
  const noControl = skip || (!controlDir && 'WORKSPACE_LOCK_TEST_PG_CONTROL is not set (.ci/windows.sh serves the control directory)')
  const control = (what, body) => controlRequest(controlDir, what, body)

  /** A holder whose losses are recorded, and the advisory lock key its workspace has. */
  async function lossWatched(cwd, goalId) {
    const losses = []
    const handle = await acquireWorkspaceLock(cwd, goalId, { backend: url, onCompromised: (e) => losses.push(e) })
    const key = BigInt.asUintN(64, BigInt(JSON.parse(binding.pgKey('', lock.inspectWorkspaceLock(cwd, { backend: url }).backend.key)).key))
    return { handle, losses, grantedSql: `from pg_locks where locktype = 'advisory' and granted and objsubid = 1 and classid = ${key >> 32n} and objid = ${key & 0xffffffffn}` }
  }

  /** Waits up to `ms` for a loss; how long after `since` it was known. */
  async function lossWithin(losses, since, ms) {
    while (losses.length === 0 && Date.now() - since < ms) await new Promise((r) => setTimeout(r, 10))
    return Date.now() - since
  }

  it('a session terminated by an administrator: the holder is told at once, its lockfile goes, the lock is taken again with a larger token', { skip: noControl, timeout: 60_000 }, async (t) => {
    const cwd = workspace('xp-pg-terminated')
    const { handle, losses, grantedSql } = await lossWatched(cwd, 'victim')
    const asked = Date.now()
    assert.equal(await control('psql', `select count(pg_terminate_backend(pid)) ${grantedSql}`), '1')
    const ms = await lossWithin(losses, asked, 5000)
    t.diagnostic(`loss known ${ms} ms after the termination was asked for`)
    assert.equal(losses.length, 1, 'onCompromised called once')
    assert.equal(losses[0].code, 'ECOMPROMISED')
    assert.match(losses[0].message, /^workspace lock compromised for goal victim \(cwd=.*\): session lost: /)
    assert.ok(ms < 2000, `told ${ms} ms after`)
    assert.equal(handle.compromised, true)
    assert.equal(fs.existsSync(handle.lockPath), false, 'the lockfile went with the lock')
    assert.equal(await control('psql', `select count(*) ${grantedSql}`), '0', 'it never took the lock again by itself')
    handle.release()
    assert.equal(losses.length, 1, 'and not again by release()')
    const next = await acquireWorkspaceLock(cwd, 'next', { backend: url })
    assert.ok(next.fencingToken > handle.fencingToken)
    next.release()
  })

  it('a server restart (pg_ctl restart -m fast): the holder is told, its release leaves the next holder alone, tokens keep increasing', { skip: noControl, timeout: 120_000 }, async (t) => {
    const cwd = workspace('xp-pg-restart')
    const { handle, losses } = await lossWatched(cwd, 'before')
    const asked = Date.now()
    await control('restart')
    const ms = await lossWithin(losses, asked, 30_000)
    t.diagnostic(`loss known ${ms} ms after the restart was asked for`)
    assert.equal(losses.length, 1, 'onCompromised called once')
    assert.match(losses[0].message, /: session lost: /)
    assert.equal(handle.compromised, true)
    const next = await acquireWorkspaceLock(cwd, 'after', { backend: url })
    assert.ok(next.fencingToken > handle.fencingToken, `${next.fencingToken} > ${handle.fencingToken}`)
    handle.release()
    assert.equal(isWorkspaceBusy(cwd, { backend: url }), 'after', 'the old holder\'s release left the new one alone')
    assert.equal(JSON.parse(fs.readFileSync(next.lockPath, 'utf8')).goalId, 'after')
    next.release()
    assert.equal(losses.length, 1)
  })
})
