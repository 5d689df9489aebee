// The Node version a lane of .ci/node-versions.sh runs under, and what every version must
// give this package: the one build of the addon (N-API is ABI-stable) loads and works, in
// this process and in a child of the same node.
import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { lock, require, workspace } from './helpers.mjs'

const major = Number(process.versions.node.split('.')[0])

describe('Node version', () => {
  it('runs on the Node major the lane asked for (WSLOCK_EXPECT_NODE_MAJOR), and one the package supports', () => {
    const expected = process.env.WSLOCK_EXPECT_NODE_MAJOR
    if (expected !== undefined) assert.equal(String(major), expected, `lane asked for Node ${expected}, runs ${process.version} (${process.execPath})`)
    const engines = require('../package.json').engines.node
    const min = Number(/>=\s*(\d+)/.exec(engines)[1])
    assert.ok(major >= min, `${process.version} is below engines.node ${engines}`)
  })

  it('loads the addon and takes, shows and releases a lock here and in a child of the same node', { timeout: 20_000 }, async () => {
    const cwd = workspace('wslock-nodever')
    const h = await lock.acquireWorkspaceLock(cwd, `goal-node${major}`, { failOnWorkspaceBusy: true })
    const child = (code) =>
      new Promise((resolve, reject) =>
        execFile(process.execPath, ['-e', code, cwd], { timeout: 10_000, killSignal: 'SIGKILL' }, (err, stdout, stderr) =>
          err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout.trim()),
        ),
      )
    const entry = JSON.stringify(path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'index.js'))
    const seen = await child(`const l = require(${entry}); console.log(process.version + ' ' + l.isWorkspaceBusy(process.argv[1]))`)
    assert.equal(seen, `${process.version} goal-node${major}`)
    h.release()
    assert.equal(await child(`console.log(String(require(${entry}).isWorkspaceBusy(process.argv[1])))`), 'undefined')
  })
})
