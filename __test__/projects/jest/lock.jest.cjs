// The package under jest, through a pi-crew style re-export module.
//
// jest runs each test file in its own vm context, but loads native addons (.node) with
// Node's own require, in the outer context: what the addon creates (errors, promises,
// arrays, the handle) belongs to the outer realm. So `toThrow(TypeError)`,
// `rejects.toBeInstanceOf(Error)` and `toStrictEqual` on its objects fail under jest
// although the values are right: match messages and names instead, as below.
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const lock = require('./workspace-lock.cjs')

const dirs = []
function workspace() {
  const cwd = fs.mkdtempSync(path.join(os.tmpdir(), 'wslock-jest-'))
  dirs.push(cwd)
  fs.mkdirSync(path.join(cwd, '.crew', 'state', 'workspace-locks'), { recursive: true })
  return cwd
}
afterAll(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true })
})
const realSetTimeout = global.setTimeout
const realSleep = (ms) => new Promise((r) => realSetTimeout(r, ms))

async function handover(cwd) {
  const first = await lock.acquireWorkspaceLock(cwd, 'first')
  expect(lock.isWorkspaceBusy(cwd)).toBe('first')
  let second
  const waiting = lock.acquireWorkspaceLock(cwd, 'second', { pollMs: 60000 }).then((h) => (second = h))
  await realSleep(150)
  expect(second).toBeUndefined()
  expect(lock.isWorkspaceBusy(cwd)).toBe('first')
  first.release()
  await waiting
  expect(second.goalId).toBe('second')
  expect(lock.isWorkspaceBusy(cwd)).toBe('second')
  expect(JSON.parse(fs.readFileSync(second.lockPath, 'utf8')).goalId).toBe('second')
  second.release()
  expect(lock.isWorkspaceBusy(cwd)).toBeUndefined()
}

describe('pi-crew-workspace-lock under jest', () => {
  test('reports where it runs (runtimes.test.mjs checks in band / worker process)', () => {
    const dir = process.env.WSLOCK_REPORT_DIR
    if (dir) fs.writeFileSync(path.join(dir, 'lock.jest.cjs.json'), JSON.stringify({ pid: process.pid, isMainThread: require('node:worker_threads').isMainThread }))
  })

  test('exports every function through the re-export', () => {
    expect(Object.keys(lock).sort()).toEqual([
      'acquireWorkspaceLock',
      'defaultStartTimeResolver',
      'inspectWorkspaceLock',
      'inspectWorkspaceLocks',
      'isWorkspaceBusy',
      'reclaimStaleLocks',
      'workspaceLockPath',
    ])
  })

  test('acquires, a second acquire waits, release hands over to the waiter', async () => {
    await handover(workspace())
  })

  test('rejects with the original messages: busy, aborted (matched by message, not realm)', async () => {
    const cwd = workspace()
    const h = await lock.acquireWorkspaceLock(cwd, 'holder')
    await expect(lock.acquireWorkspaceLock(cwd, 'other', { failOnWorkspaceBusy: true })).rejects.toThrow(
      /^workspace busy: cwd=.* held by goalId=holder \(pid=\d+\)$/,
    )
    const ac = new AbortController()
    const waiting = lock.acquireWorkspaceLock(cwd, 'other', { signal: ac.signal })
    ac.abort()
    await expect(waiting).rejects.toThrow('workspace lock acquisition aborted')
    let thrown
    try {
      lock.workspaceLockPath(42)
    } catch (e) {
      thrown = e
    }
    expect(thrown).toBeDefined()
    expect(thrown.name).toBe('TypeError')
    expect(thrown.message).toMatch(/cwd/)
    h.release()
    expect(lock.isWorkspaceBusy(cwd)).toBeUndefined()
  })

  test('hands over with fake timers installed (waiters do not depend on JS timers)', async () => {
    jest.useFakeTimers()
    try {
      await handover(workspace())
    } finally {
      jest.useRealTimers()
    }
  })
})
