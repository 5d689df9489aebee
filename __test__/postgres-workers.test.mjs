// The PostgreSQL backend held from worker threads (real server from pg-server.mjs): each
// worker's locks are its own sessions, workers of one process exclude each other, and a
// worker that ends (or is terminated) while holding frees its lock on the server.
import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import path from 'node:path'
import { Worker } from 'node:worker_threads'
import { execFileSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { lock, workspace, sleep, require, fixturesDir } from './helpers.mjs'
import { startPostgres, unavailable, advisoryLocks } from './pg-server.mjs'

const skip = unavailable()
if (skip) console.log(`# SKIPPED: the PostgreSQL backend worker tests: ${skip}`)

const INDEX = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'index.js')

/** A worker running `body` (an async function's body) with `lock`, `data` and `post`. */
function worker(body, data) {
  const code = `
    const { parentPort, workerData: data } = require('node:worker_threads')
    const lock = require(${JSON.stringify(INDEX)})
    const post = (m) => parentPort.postMessage(m)
    ;(async () => { ${body} })().catch((e) => post({ error: String(e && e.stack || e) }))`
  const w = new Worker(code, { eval: true, workerData: data })
  const messages = []
  const waiters = []
  w.on('message', (m) => {
    messages.push(m)
    waiters.splice(0).forEach((f) => f())
  })
  w.on('error', (e) => {
    messages.push({ error: String(e) })
    waiters.splice(0).forEach((f) => f())
  })
  w.next = async (ms = 20_000) => {
    const until = Date.now() + ms
    while (!messages.length) {
      if (Date.now() > until) throw new Error('no message from the worker')
      await new Promise((r) => {
        waiters.push(r)
        setTimeout(r, 100)
      })
    }
    const m = messages.shift()
    if (m.error) throw new Error(`worker: ${m.error}`)
    return m
  }
  return w
}

/** The advisory lock key (a bigint's text) of a backend key as inspect shows it. */
function keyNumber(text) {
  return JSON.parse(require('../binding.js').pgKey('', text)).key
}

/**
 * 40 acquire/release cycles of `goalId` over the backend, each bumping `shared[1]` with a
 * yield between its read and its write (a lost update shows while two hold) and counting
 * holders in `shared[0]`. Self-contained: workers run it from its source.
 */
async function cycles(lock, cwd, goalId, url, shared) {
  const tokens = []
  let overlaps = 0
  for (let i = 0; i < 40; i++) {
    const h = await lock.acquireWorkspaceLock(cwd, goalId, { backend: url })
    if (Atomics.add(shared, 0, 1) !== 0) overlaps++
    tokens.push(String(h.fencingToken))
    const n = Atomics.load(shared, 1)
    await new Promise((r) => setImmediate(r))
    Atomics.store(shared, 1, n + 1)
    Atomics.sub(shared, 0, 1)
    h.release()
  }
  return { tokens, overlaps }
}

async function until(what, check, ms = 5_000) {
  const end = Date.now() + ms
  for (;;) {
    if (await check()) return
    if (Date.now() > end) assert.fail(`${what}: not within ${ms} ms`)
    await sleep(20)
  }
}

describe('PostgreSQL backend in worker threads', { skip, timeout: 120_000 }, () => {
  let pg
  let url
  before(async () => {
    pg = await startPostgres()
    url = pg.url()
  })
  after(() => pg?.stop())

  it('a worker holds the lock over its own session; terminated while holding, the server frees it', async () => {
    const cwd = workspace('pg-worker-hold')
    const w = worker(
      `const h = await lock.acquireWorkspaceLock(data.cwd, 'in-worker', { backend: data.url })
       post({ held: String(h.fencingToken), lockPath: h.lockPath })
       setInterval(() => {}, 1000) /* holds until terminated */`,
      { cwd, url },
    )
    const { held, lockPath } = await w.next()
    assert.match(held, /^\d+$/)
    assert.equal(JSON.parse(fs.readFileSync(lockPath, 'utf8')).goalId, 'in-worker')
    const key = keyNumber(lock.inspectWorkspaceLock(cwd, { backend: url }).backend.key)
    assert.equal(lock.isWorkspaceBusy(cwd, { backend: url }), 'in-worker')
    assert.equal(advisoryLocks(pg, key), '1')
    await assert.rejects(lock.acquireWorkspaceLock(cwd, 'main', { backend: url, failOnWorkspaceBusy: true }), /workspace busy: .* held by goalId=in-worker/)
    await w.terminate()
    await until('the worker\'s lock freed on the server', () => advisoryLocks(pg, key) === '0')
    const h = await lock.acquireWorkspaceLock(cwd, 'main', { backend: url, failOnWorkspaceBusy: true })
    assert.ok(h.fencingToken > BigInt(held), 'a later token')
    h.release()
  })

  it('a worker terminated while waiting leaves the server\'s queue', async () => {
    const cwd = workspace('pg-worker-wait')
    const h = await lock.acquireWorkspaceLock(cwd, 'main', { backend: url })
    const key = keyNumber(lock.inspectWorkspaceLock(cwd, { backend: url }).backend.key)
    const w = worker(
      `post({ waiting: true })
       await lock.acquireWorkspaceLock(data.cwd, 'in-worker', { backend: data.url })
       post({ held: true })`,
      { cwd, url },
    )
    await w.next()
    await until('the worker queued on the server', () => advisoryLocks(pg, key) === '2')
    await w.terminate()
    await until('the worker\'s wait gone from the server', () => advisoryLocks(pg, key) === '1')
    h.release()
    await until('nothing left', () => advisoryLocks(pg, key) === '0')
  })

  // Every copy of backend.js (the main thread's, a worker's, a test runner's fresh module
  // registry's) numbers its acquisitions from 1: a fresh process makes the numbers meet.
  function copies(mode) {
    const out = execFileSync(process.execPath, [path.join(fixturesDir, 'pg-copies.cjs'), mode], { env: { ...process.env, WORKSPACE_LOCK_TEST_PG_URL: url }, timeout: 60_000, encoding: 'utf8' })
    const r = JSON.parse(out.trim().split('\n').pop())
    if (r.error) assert.fail(r.error)
    return r
  }

  it('aborting the main thread\'s wait leaves a worker\'s wait of the same number alone', () => {
    const r = copies('worker-abort')
    assert.equal(r.mainAfterAbort, 'rejected: workspace lock acquisition aborted', 'the main thread\'s wait ends')
    assert.equal(r.worker, 'acquired', 'the worker\'s wait went on, and took the lock at the release')
  })

  it('two copies of the package in one thread (a test runner\'s fresh module registry) each get their own results', () => {
    const r = copies('two-registries')
    assert.equal(r.distinct, true)
    assert.equal(r.again, 'acquired', 'the first copy\'s acquisition, made after the second copy registered, resolves')
  })

  it('two workers and the main thread of one process exclude each other, tokens increasing', async () => {
    const cwd = workspace('pg-worker-contend')
    const shared = new Int32Array(new SharedArrayBuffer(8))
    // The same cycles in each worker (its source passed along) and in this thread.
    const body = `post(await (${cycles})(lock, data.cwd, 'w' + data.n, data.url, new Int32Array(data.buffer)))`
    const workers = [1, 2].map((n) => worker(body, { cwd, url, n, buffer: shared.buffer }))
    const { tokens: mine, overlaps } = await cycles(lock, cwd, 'main', url, shared)
    const results = await Promise.all(workers.map((w) => w.next(60_000)))
    await Promise.all(workers.map((w) => w.terminate()))
    assert.equal(overlaps + results.reduce((a, r) => a + r.overlaps, 0), 0, 'never two holders')
    assert.equal(Atomics.load(shared, 1), 120, 'no lost update')
    const all = [mine, ...results.map((r) => r.tokens)]
    for (const tokens of all) {
      for (let i = 1; i < tokens.length; i++) assert.ok(BigInt(tokens[i]) > BigInt(tokens[i - 1]), 'increasing per holder')
    }
    assert.equal(new Set(all.flat()).size, 120, 'every acquisition its own token')
    assert.equal(lock.isWorkspaceBusy(cwd, { backend: url }), undefined)
  })
})
