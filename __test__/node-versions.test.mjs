// The Node version a lane of .ci/node-versions.sh runs under, and what every version must
// give this package: the one build of the addon (N-API is ABI-stable) loads and works, in
// this process and in a child of the same node. And the lane script's own promise: a lane
// that cannot get its Node fails, by name, instead of passing silently.
import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { lock, require, tempDir, workspace } from './helpers.mjs'

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

const script = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '.ci', 'node-versions.sh')

/** Runs .ci/node-versions.sh with no registry to reach and an empty cache. */
function lanes(args, extraEnv = {}) {
  const env = {}
  for (const [k, v] of Object.entries(process.env)) if (!/^npm_/i.test(k) && k !== 'NODE_TEST_CONTEXT') env[k] = v
  Object.assign(env, {
    XDG_CACHE_HOME: tempDir('wslock-lanes-cache'),
    npm_config_registry: 'http://127.0.0.1:9/', // nothing listens on the discard port
    npm_config_fetch_retries: '0',
    npm_config_cache: tempDir('wslock-lanes-npm'),
    ...extraEnv,
  })
  return new Promise((resolve) =>
    execFile('bash', [script, ...args], { env, timeout: 60_000, killSignal: 'SIGKILL' }, (err, stdout, stderr) =>
      resolve({ code: err ? err.code : 0, stdout, stderr }),
    ),
  )
}

describe('.ci/node-versions.sh', { skip: process.platform === 'win32' && 'a bash script for Linux and macOS hosts' }, () => {
  const other = major === 22 ? 24 : 22

  it('a lane whose Node cannot be had (no registry, nothing cached) fails by name, and runs nothing', { timeout: 70_000 }, async () => {
    const r = await lanes([String(other)])
    assert.equal(r.code, 1, r.stdout + r.stderr)
    assert.match(r.stdout, new RegExp(`^  Node ${other}: FAILED, could not get Node ${other}: the npm registry did not answer .* and no Node ${other} is cached`, 'm'))
    assert.doesNotMatch(r.stdout, /test:node/)
  })

  it('WSLOCK_NODE_LANES_OPTIONAL=1 makes it a NOT RUN line, not a silent pass', { timeout: 70_000 }, async () => {
    const r = await lanes([String(other)], { WSLOCK_NODE_LANES_OPTIONAL: '1' })
    assert.equal(r.code, 0, r.stdout + r.stderr)
    assert.match(r.stdout, new RegExp(`^  Node ${other}: NOT RUN \\(.*WSLOCK_NODE_LANES_OPTIONAL=1\\)$`, 'm'))
  })

  it('--skip-current names the running major as already run by npm test, and fetches nothing for it', { timeout: 70_000 }, async () => {
    const r = await lanes(['--skip-current', String(major)])
    assert.equal(r.code, 0, r.stdout + r.stderr)
    assert.match(r.stdout, new RegExp(`^  Node ${major}: v${process.versions.node.replace(/\./g, '\\.')} \\(the machine's node\\) ran the whole npm test above$`, 'm'))
  })

  it('rejects an unknown argument (exit 2)', { timeout: 70_000 }, async () => {
    const r = await lanes(['--bogus'])
    assert.equal(r.code, 2, r.stdout + r.stderr)
  })
})
