// A second jest test file: a fresh module registry loads index.js and binding.js again,
// while the addon itself (loaded with Node's require) is shared with the first file.
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const lock = require('../../../index.js')

test('reports where it runs (runtimes.test.mjs checks in band / worker process)', () => {
  const dir = process.env.WSLOCK_REPORT_DIR
  if (dir) fs.writeFileSync(path.join(dir, 'require.jest.cjs.json'), JSON.stringify({ pid: process.pid, isMainThread: require('node:worker_threads').isMainThread }))
})

test('acquires, a second acquire waits, release hands over to the waiter', async () => {
  const cwd = fs.mkdtempSync(path.join(os.tmpdir(), 'wslock-jest-'))
  try {
    const first = await lock.acquireWorkspaceLock(cwd, 'first')
    let second = null
    const waiting = lock.acquireWorkspaceLock(cwd, 'second', { pollMs: 60000 }).then((h) => (second = h))
    await new Promise((r) => setTimeout(r, 100))
    expect(second).toBe(null)
    first.release()
    await waiting
    expect(lock.isWorkspaceBusy(cwd)).toBe('second')
    second.release()
    expect(fs.existsSync(first.lockPath)).toBe(false)
  } finally {
    fs.rmSync(cwd, { recursive: true, force: true })
  }
})

test('what the addon makes lives in the outer realm: message matching is the way', async () => {
  const err = await lock.acquireWorkspaceLock('/', 'g', { pollMs: -1 }).catch((e) => e)
  expect(err.name).toBe('RangeError')
  expect(err.message).toMatch(/pollMs/)
  // An Error all the same, but of the outer realm: under jest `err instanceof RangeError`
  // (and `instanceof Error`) is false, so only realm-independent checks are used.
  expect(Object.prototype.toString.call(err)).toBe('[object Error]')
})
