// The package in the runtimes it meets: worker threads, processes that end without
// release(), and the test runners vitest (forks and threads pools) and jest (in band and in
// worker processes), run for real through their CLIs on the projects in __test__/projects/.
import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { lock, tempDir, workspace } from './helpers.mjs'

const here = path.dirname(fileURLToPath(import.meta.url))
const root = path.dirname(here)
const projects = path.join(here, 'projects')
const bin = (name) => path.join(root, 'node_modules', '.bin', name)

/** The environment for children: none of npm's or node:test's own variables. */
function cleanEnv(extra = {}) {
  const env = {}
  for (const [k, v] of Object.entries(process.env)) {
    if (/^npm_/i.test(k) || k === 'NODE_TEST_CONTEXT' || k === 'INIT_CWD') continue
    env[k] = v
  }
  return { ...env, NO_COLOR: '1', FORCE_COLOR: '0', ...extra }
}

/**
 * Starts `node ...args`, SIGKILLed after `timeoutMs`. `line()` gives the next stdout line;
 * `done` resolves with { code, signal, stdout, stderr, ms, out } once it has exited.
 */
function start(args, { cwd = root, env = cleanEnv(), timeoutMs = 30_000 } = {}) {
  const t0 = Date.now()
  const child = spawn(process.execPath, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  let pending = ''
  const lines = []
  const waiters = []
  child.stdout.on('data', (d) => {
    stdout += d
    pending += d
    let nl
    while ((nl = pending.indexOf('\n')) >= 0) {
      lines.push({ text: pending.slice(0, nl), at: Date.now() })
      pending = pending.slice(nl + 1)
    }
    for (const w of waiters.splice(0)) w()
  })
  child.stderr.on('data', (d) => (stderr += d))
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
  const done = new Promise((resolve) => {
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      for (const w of waiters.splice(0)) w()
      const ms = Date.now() - t0
      resolve({ code, signal, stdout, stderr, ms, exitedAt: Date.now(), out: `exit ${code ?? signal} after ${ms} ms\n--- stdout\n${stdout}\n--- stderr\n${stderr}` })
    })
  })
  let closed = false
  done.then(() => (closed = true))
  let next = 0
  async function line() {
    while (next >= lines.length) {
      if (closed) throw new Error(`exited before a line:\n${stdout}\n${stderr}`)
      await new Promise((r) => waiters.push(r))
    }
    return lines[next++]
  }
  return { child, pid: child.pid, line, done }
}

describe('worker_threads', () => {
  it('4 workers and the main thread at once; terminated holders and waiters; the process exits promptly', { timeout: 30_000 }, async () => {
    const run = start([path.join(projects, 'worker-threads', 'main.mjs'), tempDir('wslock-workers')])
    let result
    try {
      result = JSON.parse((await run.line()).text)
    } catch (e) {
      const { out } = await run.done
      assert.fail(`${e.message}\n${out}`)
    }
    const doneLine = await run.line()
    assert.equal(doneLine.text, 'done')
    const end = await run.done
    assert.equal(end.code, 0, end.out)
    assert.ok(end.exitedAt - doneLine.at < 3000, `exited ${end.exitedAt - doneLine.at} ms after its work was done`)

    // Four workers (own workspaces, then the shared one) and the main thread: serialised.
    assert.deepEqual(result.exitCodes, [0, 0, 0, 0])
    assert.equal(result.ownDoneWhileSharedHeld, true, 'own workspaces were cycled while the shared one was held')
    const s = result.shared
    assert.equal(s.overlaps, 0, 'never two holders at once, and the lockfile always named the holder')
    assert.equal(s.acquisitions, s.expected)
    assert.equal(s.counter, s.expected, 'no lost update')
    assert.equal(s.busyAfter, null)

    // A worker terminated while holding, and one that ended without release(): no lockfile
    // left, and the next acquire (failOnWorkspaceBusy) succeeds at once, reclaiming nothing.
    assert.equal(result.hold.busyWhileHeld, 'hold-goal')
    for (const role of ['hold', 'end']) {
      const r = result[role]
      assert.equal(r.leftAfterExit, false, `${role}: lockfile left behind`)
      assert.ok(r.next.ok, `${role}: ${r.next.error}`)
      assert.ok(r.next.ms < 500, `${role}: next acquire took ${r.next.ms} ms`)
      assert.equal(r.next.reclaimed, null)
    }

    // A worker terminated while waiting: it never gets the lock, nothing spins.
    const w = result.waited
    assert.ok(result.idleAfterTerminate.cpuMs < 200, `CPU over an idle second after terminating the waiter: ${result.idleAfterTerminate.cpuMs} ms`)
    assert.ok(w.idleAfterReleaseCpuMs < 200, `CPU over 1.2 s after the holder released: ${w.idleAfterReleaseCpuMs} ms`)
    assert.deepEqual(w.goalsSeenAfterRelease, [], 'nobody (the terminated waiter least of all) took the lock after the release')
    assert.equal(w.busyAfter, null)
    assert.equal(w.acquiredMsg, null)
    assert.ok(w.threads.afterRelease <= w.threads.beforeWorker, `threads: ${JSON.stringify(w.threads)}`)
  })
})

describe('process exit without release()', { concurrency: true }, () => {
  const ways = {
    'normal end': { code: 0, released: true },
    'process.exit(0)': { code: 0, released: true },
    'process.exit(3) from a timer': { code: 3, released: true },
    'uncaught exception': { code: 1, released: true, stderr: /Error: crash/ },
    'unhandled rejection': { code: 1, released: true, stderr: /Error: rejected/ },
    'SIGTERM (default action)': { signal: 'SIGTERM', released: false },
  }
  for (const [how, expected] of Object.entries(ways)) {
    it(`${how}: no hang, and the next process acquires at once`, { timeout: 20_000 }, async () => {
      const cwd = workspace()
      const holder = start([path.join(projects, 'process-exit', 'holder.mjs'), cwd, how], { timeoutMs: 15_000 })
      const held = await holder.line()
      assert.match(held.text, /^held /)
      const lockPath = held.text.slice(5)
      const end = await holder.done
      assert.ok(end.exitedAt - held.at < 5000, `ended ${end.exitedAt - held.at} ms after acquiring\n${end.out}`)
      assert.equal(end.code, expected.code ?? null, end.out)
      assert.equal(end.signal, expected.signal ?? null, end.out)
      if (expected.stderr) assert.match(end.stderr, expected.stderr)
      // Exit hooks release; a signal's default action runs none (the lockfile stays, its
      // kernel lock is gone with the process).
      assert.equal(fs.existsSync(lockPath), !expected.released, 'lockfile after exit')
      const t0 = performance.now()
      const h = await lock.acquireWorkspaceLock(cwd, 'next', { failOnWorkspaceBusy: true })
      const ms = performance.now() - t0
      try {
        assert.ok(ms < 500, `next acquire took ${ms} ms`)
        if (expected.released) assert.equal(h.reclaimed, undefined)
        else assert.equal(h.reclaimed?.reason, 'holder_dead')
      } finally {
        h.release()
      }
    })
  }
})

// vitest and jest: devDependencies of this package; skipped, saying so, until installed.
const VITEST = 'vitest@3.2.7'
const JEST = 'jest@30.5.2'
const missing = (name, spec) => !fs.existsSync(bin(name)) && `${name} is not installed: add the devDependency ${spec} (npm install --save-dev ${spec})`

/** Runs a test runner's CLI in its project; returns the run and the per-file location reports. */
async function runRunner(name, project, args, { timeoutMs = 60_000 } = {}) {
  const reports = tempDir(`wslock-${name}-reports`)
  const scratch = tempDir(`wslock-${name}-scratch`)
  const json = path.join(scratch, 'results.json')
  const run = start([fs.realpathSync(bin(name)), ...args(json, scratch)], {
    cwd: path.join(projects, project),
    env: cleanEnv({ WSLOCK_REPORT_DIR: reports, WSLOCK_VITE_CACHE_DIR: path.join(scratch, 'vite-cache') }),
    timeoutMs,
  })
  const end = await run.done
  assert.ok(end.ms < timeoutMs, `${name} did not finish in ${timeoutMs} ms (killed)\n${end.out}`)
  assert.equal(end.code, 0, end.out)
  assert.ok(fs.existsSync(json), `no JSON results\n${end.out}`)
  const results = JSON.parse(fs.readFileSync(json, 'utf8'))
  const where = Object.fromEntries(fs.readdirSync(reports).map((f) => [f.replace(/\.json$/, ''), JSON.parse(fs.readFileSync(path.join(reports, f), 'utf8'))]))
  return { end, results, where, cliPid: run.pid }
}

function assertAllPassed(results, total, out) {
  assert.equal(results.numFailedTests, 0, out)
  assert.equal(results.numPendingTests, 0, out)
  assert.equal(results.numTotalTests, total, out)
  assert.equal(results.numPassedTests, total, out)
  assert.equal(results.numTotalTestSuites >= 2, true, out)
}

describe('vitest', { skip: missing('vitest', VITEST) }, () => {
  const vitestArgs = (extra) => (json) => ['run', '--configLoader', 'runner', '--reporter=default', '--reporter=json', `--outputFile.json=${json}`, ...extra]

  it('passes in the default pool (forks: one child process per file)', { timeout: 70_000 }, async () => {
    const { end, results, where, cliPid } = await runRunner('vitest', 'vitest', vitestArgs([]))
    assertAllPassed(results, 7, end.out)
    assert.deepEqual(Object.keys(where).sort(), ['lock.vitest.ts', 'require.vitest.mjs'])
    for (const [file, w] of Object.entries(where)) {
      assert.notEqual(w.pid, cliPid, `${file} ran in a forked process`)
      assert.equal(w.isMainThread, true, file)
    }
  })

  it('passes with --pool=threads (worker threads of the vitest process)', { timeout: 70_000 }, async () => {
    const { end, results, where, cliPid } = await runRunner('vitest', 'vitest', vitestArgs(['--pool=threads']))
    assertAllPassed(results, 7, end.out)
    assert.deepEqual(Object.keys(where).sort(), ['lock.vitest.ts', 'require.vitest.mjs'])
    for (const [file, w] of Object.entries(where)) {
      assert.equal(w.pid, cliPid, `${file} ran inside the vitest process`)
      assert.equal(w.isMainThread, false, `${file} ran in a worker thread`)
    }
  })
})

describe('jest', { skip: missing('jest', JEST) }, () => {
  const jestArgs = (extra) => (json, scratch) => ['--ci', '--cacheDirectory', path.join(scratch, 'cache'), '--json', '--outputFile', json, ...extra]

  it('passes in band (every file in the jest process, one vm context each)', { timeout: 70_000 }, async () => {
    const { end, results, where, cliPid } = await runRunner('jest', 'jest', jestArgs(['--runInBand']))
    assertAllPassed(results, 8, end.out)
    assert.deepEqual(Object.keys(where).sort(), ['lock.jest.cjs', 'require.jest.cjs'])
    for (const [file, w] of Object.entries(where)) assert.equal(w.pid, cliPid, `${file} ran in band`)
  })

  it('passes in jest worker processes (--maxWorkers=2, no timings cached)', { timeout: 70_000 }, async () => {
    const { end, results, where, cliPid } = await runRunner('jest', 'jest', jestArgs(['--maxWorkers=2']))
    assertAllPassed(results, 8, end.out)
    assert.deepEqual(Object.keys(where).sort(), ['lock.jest.cjs', 'require.jest.cjs'])
    for (const [file, w] of Object.entries(where)) assert.notEqual(w.pid, cliPid, `${file} ran in a worker process`)
  })
})
