// A worker thread of main.mjs. workerData.role says what it does:
//   cycle  acquire/release its own workspace, then the shared one, checking the witness
//   hold   acquire, post 'held', then wait forever (main terminates it)
//   end    acquire, post 'held', then let the worker end without release()
//   wait   post 'waiting', then wait for a lock main holds (main terminates it)
import { parentPort, workerData, threadId } from 'node:worker_threads'
import { createRequire } from 'node:module'
import fs from 'node:fs'

const lock = createRequire(import.meta.url)('../../../index.js')
const { role, cwd, goalId } = workerData

if (role === 'cycle') {
  const { ownCwd, cycles, witness } = workerData
  const w = new Int32Array(witness) // [holders now, overlaps seen, shared counter, acquisitions]
  for (let i = 0; i < cycles; i++) {
    const h = await lock.acquireWorkspaceLock(ownCwd, `${goalId}-own-${i}`)
    if (lock.isWorkspaceBusy(ownCwd) !== `${goalId}-own-${i}`) throw new Error('own workspace not held')
    h.release()
  }
  parentPort.postMessage({ ownDone: threadId })
  for (let i = 0; i < cycles; i++) {
    const goal = `${goalId}-shared-${i}`
    const h = await lock.acquireWorkspaceLock(cwd, goal, { pollMs: 2000 })
    if (Atomics.add(w, 0, 1) !== 0) Atomics.add(w, 1, 1)
    if (JSON.parse(fs.readFileSync(h.lockPath, 'utf8')).goalId !== goal) Atomics.add(w, 1, 1)
    const before = Atomics.load(w, 2) // a non-atomic read-modify-write across an await:
    await new Promise((r) => setTimeout(r, 1)) // lost if two holders overlap
    Atomics.store(w, 2, before + 1)
    Atomics.add(w, 3, 1)
    Atomics.sub(w, 0, 1)
    h.release()
  }
  parentPort.postMessage({ done: threadId })
} else if (role === 'hold' || role === 'end') {
  const h = await lock.acquireWorkspaceLock(cwd, goalId)
  parentPort.postMessage({ held: h.lockPath })
  if (role === 'hold') setInterval(() => {}, 1 << 30)
} else if (role === 'wait') {
  const p = lock.acquireWorkspaceLock(cwd, goalId, { pollMs: 50 })
  parentPort.postMessage({ waiting: true })
  const h = await p
  parentPort.postMessage({ acquired: h.lockPath }) // must never happen: main terminates us first
}
