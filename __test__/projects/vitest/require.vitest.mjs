// The package under vitest through Node's own require (not vite's transform): a second test
// file, so that each pool loads the addon in a second fork / worker thread too.
import { describe, expect, it } from 'vitest'
import { createRequire } from 'node:module'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { isMainThread } from 'node:worker_threads'

const lock = createRequire(import.meta.url)('../../../index.js')

describe('pi-crew-workspace-lock via require under vitest', () => {
  it('reports where it runs (runtimes.test.mjs checks the pool)', () => {
    const dir = process.env.WSLOCK_REPORT_DIR
    if (dir) fs.writeFileSync(path.join(dir, 'require.vitest.mjs.json'), JSON.stringify({ pid: process.pid, isMainThread }))
  })

  it('acquires, a second acquire waits, release hands over to the waiter', async () => {
    const cwd = fs.mkdtempSync(path.join(os.tmpdir(), 'wslock-vitest-'))
    try {
      const first = await lock.acquireWorkspaceLock(cwd, 'first')
      let second = null
      const waiting = lock.acquireWorkspaceLock(cwd, 'second', { pollMs: 60_000 }).then((h) => (second = h))
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
})
