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

  it('is built, and is the generic layer (kernel locks as flocked files in .owners.d, no .owners file)', () => {
    assert.ok(fs.existsSync(generic), `${generic} is missing: run \`npm run build:generic\``)
    const cwd = workspace('generic-probe')
    const script = `
      const lock = require(${JSON.stringify(path.join(root, 'index.js'))})
      lock.acquireWorkspaceLock(${JSON.stringify(cwd)}, 'probe').then((h) => {
        const dir = require('node:path').dirname(h.lockPath)
        const fs = require('node:fs')
        const owners = fs.existsSync(require('node:path').join(dir, '.owners'))
        const ownersDir = require('node:path').join(dir, '.owners.d')
        const record = JSON.parse(fs.readFileSync(h.lockPath, 'utf8'))
        const whileHeld = fs.readdirSync(ownersDir).sort()
        h.release()
        const afterRelease = fs.readdirSync(ownersDir).filter((n) => n.startsWith('h'))
        console.log(JSON.stringify({ owners, ownerLock: record.ownerLock, whileHeld, afterRelease }))
      })`
    const out = spawnSync(process.execPath, ['-e', script], { env, encoding: 'utf8', timeout: 20_000 })
    assert.equal(out.status, 0, out.stderr)
    const seen = JSON.parse(out.stdout)
    assert.equal(seen.owners, false, 'no .owners file')
    assert.equal(typeof seen.ownerLock, 'number', 'the record names its holder file')
    // The holder's file (h<offset in hex>) and the lock name's mutex (m<…>), nothing else.
    assert.equal(seen.whileHeld.length, 2, JSON.stringify(seen))
    assert.equal(seen.whileHeld[0], `h${seen.ownerLock.toString(16)}`)
    assert.match(seen.whileHeld[1], /^m[0-9a-f]+$/)
    assert.deepEqual(seen.afterRelease, [], 'the holder file goes at release')
  })

  /** Runs test files of the suite on the generic layer, in a `node --test` of their own. */
  function runOnGeneric(files, extra = []) {
    const out = spawnSync(
      process.execPath,
      ['--test', '--test-concurrency=1', '--test-reporter=tap', ...extra, ...files.map((f) => path.join(root, '__test__', f))],
      { env, encoding: 'utf8', timeout: 230_000 },
    )
    const report = `${out.stdout}\n${out.stderr}`
    assert.equal(out.status, 0, report)
    assert.match(out.stdout, /^# fail 0$/m, report)
    return out.stdout
  }

  it('passes the multi-process suite (contention, stampede, SIGKILL at random moments)', { timeout: 240_000 }, () => {
    assert.match(runOnGeneric(['multiprocess.test.mjs']), /^# pass 3$/m)
  })

  it('wakes a waiter at once when the holder is SIGKILLed: its holder file\'s flock dies with it', { timeout: 240_000 }, () => {
    // pollMs is an hour in the second: only the lock's own wake-up can end the wait in time.
    assert.match(runOnGeneric(['robustness.test.mjs'], ['--test-name-pattern=SIGKILLed']), /^# pass 2$/m)
  })

  it('keeps a stopped holder held, publishes only its own claims when the directory is replaced, rides out EMFILE', { timeout: 240_000 }, () => {
    assert.match(runOnGeneric(['holder-proof.test.mjs']), /^# pass 3$/m)
  })

  it('never evicts a live holder under faults: clock steps, a full or read-only disk, SIGSTOP, no threads', { timeout: 240_000 }, () => {
    const out = runOnGeneric(['faults.test.mjs'])
    // Where faketime or mounts are missing, faults.test.mjs skips those cases and says why.
    const count = (what) => Number(out.match(new RegExp(`^# ${what} (\\d+)$`, 'm'))?.[1])
    assert.ok(count('pass') >= 1, out)
    assert.equal(count('pass') + count('skipped'), count('tests'), out)
  })
})
