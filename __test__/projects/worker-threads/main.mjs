// Child process of runtimes.test.mjs: the package in worker threads. Prints one JSON line
// of results, then `done`, and must then exit by itself (nothing left keeps it alive).
// argv: <scratch dir>
import { Worker } from 'node:worker_threads'
import { createRequire } from 'node:module'
import fs from 'node:fs'
import path from 'node:path'

const lock = createRequire(import.meta.url)('../../../index.js')
const base = process.argv[2]
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))
const ws = (name) => {
  const d = path.join(base, name)
  fs.mkdirSync(path.join(d, '.crew', 'state', 'workspace-locks'), { recursive: true })
  return d
}
const start = (workerData) => new Worker(new URL('./worker.mjs', import.meta.url), { workerData })
const message = (w, key) =>
  new Promise((resolve, reject) => {
    const onMsg = (m) => {
      if (key in m) {
        w.off('message', onMsg)
        resolve(m[key])
      }
    }
    w.on('message', onMsg)
    w.once('error', reject)
    w.once('exit', (code) => reject(new Error(`worker exited (${code}) before ${key}`)))
  })
const threadCount = () => fs.readdirSync('/proc/self/task').length
const result = {}

// 1. Four workers at once plus the main thread: own workspaces, then one shared workspace.
{
  const shared = ws('shared')
  const cycles = 25
  const witness = new SharedArrayBuffer(16)
  const w = new Int32Array(witness)
  // The main thread holds the shared workspace until every worker has cycled through its
  // own one: different workspaces never wait for each other.
  const gate = await lock.acquireWorkspaceLock(shared, 'main-gate')
  const workers = [1, 2, 3, 4].map((n) => start({ role: 'cycle', cwd: shared, ownCwd: ws(`own-${n}`), goalId: `w${n}`, cycles, witness }))
  const dones = workers.map((wk) => message(wk, 'done'))
  const exits = workers.map((wk) => new Promise((r) => wk.once('exit', r)))
  await Promise.all(workers.map((wk) => message(wk, 'ownDone')))
  result.ownDoneWhileSharedHeld = lock.isWorkspaceBusy(shared) === 'main-gate'
  await sleep(50) // the four workers queue on the shared workspace
  gate.release()
  for (let i = 0; i < cycles; i++) {
    const goal = `main-shared-${i}`
    const h = await lock.acquireWorkspaceLock(shared, goal, { pollMs: 2000 })
    if (Atomics.add(w, 0, 1) !== 0) Atomics.add(w, 1, 1)
    if (JSON.parse(fs.readFileSync(h.lockPath, 'utf8')).goalId !== goal) Atomics.add(w, 1, 1)
    const before = Atomics.load(w, 2)
    await sleep(1)
    Atomics.store(w, 2, before + 1)
    Atomics.add(w, 3, 1)
    Atomics.sub(w, 0, 1)
    h.release()
  }
  await Promise.all(dones)
  result.exitCodes = await Promise.all(exits)
  result.shared = { expected: 5 * cycles, acquisitions: w[3], counter: w[2], overlaps: w[1], busyAfter: lock.isWorkspaceBusy(shared) ?? null }
}

// 2. A worker terminated while holding, and one that ends without release().
for (const role of ['hold', 'end']) {
  const cwd = ws(`held-${role}`)
  const wk = start({ role, cwd, goalId: `${role}-goal` })
  const exited = new Promise((r) => wk.once('exit', r))
  const lockPath = await message(wk, 'held')
  const busyWhileHeld = lock.isWorkspaceBusy(cwd) ?? null
  if (role === 'hold') await wk.terminate()
  await exited
  const leftAfterExit = fs.existsSync(lockPath)
  const t0 = performance.now()
  let next = null
  try {
    const h = await lock.acquireWorkspaceLock(cwd, 'next', { failOnWorkspaceBusy: true })
    next = { ok: true, ms: performance.now() - t0, reclaimed: h.reclaimed ?? null }
    h.release()
  } catch (e) {
    next = { ok: false, error: e.message }
  }
  result[role] = { busyWhileHeld, leftAfterExit, next }
}

// 3. A worker terminated while waiting for a lock the main thread holds.
{
  const cwd = ws('waited')
  const holder = await lock.acquireWorkspaceLock(cwd, 'holder')
  const beforeWorker = threadCount()
  const wk = start({ role: 'wait', cwd, goalId: 'victim' })
  let acquiredMsg = null
  wk.on('message', (m) => {
    if (m.acquired) acquiredMsg = m.acquired
  })
  await message(wk, 'waiting')
  await sleep(200) // well into the wait (pollMs 50: several re-checks)
  await wk.terminate()
  const afterTerminate = threadCount()
  // Idle second, the holder's heartbeat thread included: nothing may spin.
  const cpu0 = process.cpuUsage()
  const t0 = performance.now()
  await sleep(1000)
  const cpu1 = process.cpuUsage(cpu0)
  result.idleAfterTerminate = { cpuMs: (cpu1.user + cpu1.system) / 1000, wallMs: performance.now() - t0 }
  // Release, and watch the lockfile (inotify, plus a read every 50 ms) for 1.2 s: the
  // victim must never get it. The watch costs no CPU, so this is a second idle second.
  const seen = new Set()
  const look = () => {
    try {
      seen.add(JSON.parse(fs.readFileSync(holder.lockPath, 'utf8')).goalId)
    } catch {}
  }
  const watcher = fs.watch(path.dirname(holder.lockPath), look)
  holder.release()
  const cpu2 = process.cpuUsage()
  const poll = setInterval(look, 50)
  await sleep(1200)
  const cpu3 = process.cpuUsage(cpu2)
  clearInterval(poll)
  watcher.close()
  look()
  result.waited = {
    goalsSeenAfterRelease: [...seen],
    busyAfter: lock.isWorkspaceBusy(cwd) ?? null,
    acquiredMsg,
    idleAfterReleaseCpuMs: (cpu3.user + cpu3.system) / 1000,
    threads: { beforeWorker, afterTerminate, afterRelease: threadCount() },
  }
  const h = await lock.acquireWorkspaceLock(cwd, 'after', { failOnWorkspaceBusy: true })
  h.release()
}

console.log(JSON.stringify(result))
console.log('done')
