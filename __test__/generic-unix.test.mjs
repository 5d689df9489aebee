// The portable Unix platform layer (the one macOS runs: no OFD locks, no inotify, no pidfd)
// under the multi-process tests, on Linux. `npm run build:generic` builds it (cargo feature
// `generic-unix`) into target/generic/; every child of the suite loads it through
// NAPI_RS_NATIVE_LIBRARY_PATH.
import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { workspace } from './helpers.mjs'

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..')
const generic = path.join(root, 'target', 'generic', 'workspace-lock.generic.node')
const linux = process.platform === 'linux'

describe('generic Unix layer on Linux', { skip: !linux && 'the generic layer is forced only on Linux (elsewhere it is the native one)' }, () => {
  const env = { ...process.env, NAPI_RS_NATIVE_LIBRARY_PATH: generic }
  // A `node --test` started under the test runner would only report to it: run it on its own.
  delete env.NODE_TEST_CONTEXT

  it('is built, and is the generic layer (no owner file, no kernel bytes)', () => {
    assert.ok(fs.existsSync(generic), `${generic} is missing: run \`npm run build:generic\``)
    const cwd = workspace('generic-probe')
    const script = `
      const lock = require(${JSON.stringify(path.join(root, 'index.js'))})
      lock.acquireWorkspaceLock(${JSON.stringify(cwd)}, 'probe').then((h) => {
        const dir = require('node:path').dirname(h.lockPath)
        const owners = require('node:fs').existsSync(require('node:path').join(dir, '.owners'))
        const record = JSON.parse(require('node:fs').readFileSync(h.lockPath, 'utf8'))
        h.release()
        console.log(JSON.stringify({ owners, ownerLock: record.ownerLock ?? null }))
      })`
    const out = spawnSync(process.execPath, ['-e', script], { env, encoding: 'utf8', timeout: 20_000 })
    assert.equal(out.status, 0, out.stderr)
    assert.deepEqual(JSON.parse(out.stdout), { owners: false, ownerLock: null })
  })

  it('passes the multi-process suite (contention, stampede, SIGKILL at random moments)', { timeout: 240_000 }, () => {
    const out = spawnSync(
      process.execPath,
      ['--test', '--test-concurrency=1', '--test-reporter=tap', path.join(root, '__test__', 'multiprocess.test.mjs')],
      { env, encoding: 'utf8', timeout: 230_000 },
    )
    const report = `${out.stdout}\n${out.stderr}`
    assert.equal(out.status, 0, report)
    assert.match(out.stdout, /^# pass 3$/m, report)
    assert.match(out.stdout, /^# fail 0$/m, report)
  })
})
