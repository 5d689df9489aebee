// pi-crew bundles its extension into one ESM file with esbuild (format "esm", platform
// "node", target "node22", its direct dependencies external). A `.node` file cannot be
// bundled, so the package must work in such a bundle: here a pi-crew style TypeScript
// consumer is bundled with the esbuild of devDependencies, both with the package external
// (pi-crew's configuration) and with nothing external (a consumer's build unchanged), and
// the bundle runs in a project where the package is installed as a user gets it: `npm pack`
// of the root package and of the platform package of the addon this process loads,
// installed offline into a temp project.
//
// Nothing is fetched from the network; every child is bounded in time; temp dirs go at exit.
import { describe, it, before } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { createRequire } from 'node:module'
import { tempDir, workspace } from './helpers.mjs'

const here = path.dirname(fileURLToPath(import.meta.url))
const root = path.dirname(here)
const requireHere = createRequire(import.meta.url)
const rootPkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'))

let esbuild = null
try {
  esbuild = requireHere('esbuild')
  // The package may be there without this host's binary (e.g. another OS's node_modules).
  esbuild.transformSync('let a: number = 1', { loader: 'ts' })
} catch {
  esbuild = null
}

/** The native file this process loads (binding.js chooses it) and its platform package folder. */
function loadedAddon() {
  requireHere('../index.js')
  const file = Object.keys(requireHere.cache).find((f) => f.endsWith('.node'))
  const abi = file && /^workspace-lock\.(.+)\.node$/.exec(path.basename(file))?.[1]
  return { file, abi, platformDir: abi && path.join(root, 'npm', abi) }
}
const addon = loadedAddon()
const skip = !esbuild
  ? 'esbuild (a devDependency) is not installed or has no binary for this host'
  : !addon.file
    ? 'no native addon is loaded'
    : !fs.existsSync(path.join(addon.platformDir, 'package.json'))
      ? `no npm/${addon.abi} platform package for the loaded ${path.basename(addon.file)}`
      : false

/** The environment for npm and node children: none of npm's or node:test's own variables. */
function cleanEnv(extra = {}) {
  const env = {}
  for (const [k, v] of Object.entries(process.env)) {
    if (/^npm_/i.test(k) || k === 'NODE_TEST_CONTEXT' || k === 'INIT_CWD' || k === 'NODE_PATH' || k.startsWith('NAPI_RS_')) continue
    env[k] = v
  }
  return { ...env, ...extra }
}

/** Runs a command to completion, SIGKILLed after `timeoutMs`: {code, signal, stdout, stderr, out}. */
function run(cmd, args, { cwd, env = cleanEnv(), timeoutMs = 30_000 } = {}) {
  // npm is npm.cmd on Windows, which only a shell runs.
  const shell = process.platform === 'win32' && cmd === 'npm'
  const argv = shell ? args.map((a) => `"${a}"`) : args
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, argv, { cwd, env, shell, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d) => (stdout += d))
    child.stderr.on('data', (d) => (stderr += d))
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
    child.on('error', (e) => {
      clearTimeout(timer)
      reject(e)
    })
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      resolve({ code, signal, stdout, stderr, out: `${cmd} ${args.join(' ')}: exit ${code ?? signal}\n--- stdout\n${stdout}\n--- stderr\n${stderr}` })
    })
  })
}

// pi-crew's src/runtime/workspace-lock.ts after the switch, and a piece of its extension
// using it the way its goal runner does (TypeScript, `.js` specifiers, NodeNext style).
const LOCK_MODULE_TS = `export * from "pi-crew-workspace-lock";\n`
const EXTENSION_TS = `import { acquireWorkspaceLock, isWorkspaceBusy, workspaceLockPath, type WorkspaceLockHandle } from "./runtime/workspace-lock.js";
import * as lockModule from "./runtime/workspace-lock.js";

interface Outcome { lockPath: string; busyWhileHeld: string | undefined; busyAfterRelease: string | undefined; secondWasRefused: string; exports: string[] }

export async function runGoal(cwd: string, goalId: string): Promise<Outcome> {
  const handle: WorkspaceLockHandle = await acquireWorkspaceLock(cwd, goalId, { failOnWorkspaceBusy: true });
  const busyWhileHeld = isWorkspaceBusy(cwd);
  const secondWasRefused = await acquireWorkspaceLock(cwd, "other-goal", { failOnWorkspaceBusy: true }).then(
    (h) => (h.release(), "acquired!"),
    (e: Error) => e.message,
  );
  handle.release();
  return { lockPath: handle.lockPath, busyWhileHeld, busyAfterRelease: isWorkspaceBusy(cwd), secondWasRefused, exports: Object.keys(lockModule).sort() };
}

const cwd = process.argv[2];
if (cwd) {
  const outcome = await runGoal(cwd, "bundled-goal");
  console.log(JSON.stringify({ ...outcome, expectedLockPath: workspaceLockPath(cwd) }));
}
`

// Filled in by `before`.
let work, npmEnv, app

describe('esbuild bundle of an ESM TypeScript consumer (pi-crew style)', { skip }, () => {
  before(async () => {
    work = tempDir('wslock-bundle')
    const rc = path.join(work, 'npmrc')
    fs.writeFileSync(rc, '')
    npmEnv = cleanEnv({
      npm_config_cache: path.join(work, 'npm-cache'),
      npm_config_userconfig: rc,
      npm_config_update_notifier: 'false',
      npm_config_audit: 'false',
      npm_config_fund: 'false',
      npm_config_loglevel: 'error',
    })
    const npm = async (args, cwd) => {
      const r = await run('npm', args, { cwd, env: npmEnv, timeoutMs: 60_000 })
      assert.equal(r.code, 0, r.out)
      return r
    }
    const pack = async (dir) => {
      const r = await npm(['pack', '--json', '--ignore-scripts', '--pack-destination', work], dir)
      return path.join(work, JSON.parse(r.stdout)[0].filename)
    }
    // The platform package as `napi prepublish` makes it: its folder plus the .node.
    const plat = path.join(work, 'platform-pkg')
    fs.cpSync(addon.platformDir, plat, { recursive: true })
    fs.copyFileSync(addon.file, path.join(plat, path.basename(addon.file)))
    const tarballs = await Promise.all([pack(root), pack(plat)])
    // pi-crew's layout: an ESM package, its sources in src/, its bundle in dist/.
    app = path.join(work, 'pi-crew-like')
    fs.mkdirSync(path.join(app, 'src', 'runtime'), { recursive: true })
    fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'pi-crew-like', version: '1.0.0', private: true, type: 'module' }, null, 2))
    fs.writeFileSync(path.join(app, 'src', 'runtime', 'workspace-lock.ts'), LOCK_MODULE_TS)
    fs.writeFileSync(path.join(app, 'src', 'extension.ts'), EXTENSION_TS)
    await npm(['install', '--offline', '--no-audit', '--no-fund', '--no-package-lock', ...tarballs], app)
  }, { timeout: 120_000 })

  /** pi-crew's esbuild configuration, with the given `external` list. */
  async function bundle(outName, external) {
    const outfile = path.join(app, 'dist', outName)
    const result = await esbuild.build({
      absWorkingDir: app,
      entryPoints: [path.join(app, 'src', 'extension.ts')],
      bundle: true,
      format: 'esm',
      platform: 'node',
      target: 'node22',
      external,
      outfile,
      logLevel: 'silent',
    })
    assert.deepEqual(result.errors, [])
    assert.deepEqual(result.warnings.map((w) => w.text), [], 'esbuild has nothing to warn about')
    return { outfile, text: fs.readFileSync(outfile, 'utf8') }
  }

  /** Runs a bundle with node (from `cwd`) on a fresh workspace and returns what it printed. */
  async function runBundle(outfile, { cwd = app } = {}) {
    const ws = workspace('wslock-bundle-ws')
    const r = await run(process.execPath, [outfile, ws], { cwd, timeoutMs: 20_000 })
    return { ws, r }
  }

  function assertLockWorked(ws, r) {
    assert.equal(r.code, 0, r.out)
    const outcome = JSON.parse(r.stdout)
    assert.equal(outcome.busyWhileHeld, 'bundled-goal', 'isWorkspaceBusy names the goal that holds the lock')
    assert.match(outcome.secondWasRefused, /^workspace busy: cwd=.* held by goalId=bundled-goal \(pid=\d+\)$/)
    assert.equal(outcome.busyAfterRelease, undefined, 'released')
    assert.equal(outcome.lockPath, outcome.expectedLockPath)
    assert.equal(path.dirname(outcome.lockPath), fs.realpathSync(path.join(ws, '.crew', 'state', 'workspace-locks')))
    assert.equal(fs.existsSync(outcome.lockPath), false, 'release() deleted the lockfile')
    assert.deepEqual(outcome.exports, ['acquireWorkspaceLock', 'defaultStartTimeResolver', 'inspectWorkspaceLock', 'inspectWorkspaceLocks', 'isWorkspaceBusy', 'reclaimStaleLocks', 'workspaceLockPath'])
  }

  it('with the package external (pi-crew\'s configuration): the bundle imports it, and the lock works', { timeout: 60_000 }, async () => {
    const { outfile, text } = await bundle('external.js', ['pi-crew-workspace-lock'])
    assert.match(text, /from "pi-crew-workspace-lock"/, 'the import is left to Node')
    const { ws, r } = await runBundle(outfile)
    assertLockWorked(ws, r)
  })

  it('with nothing external (a build left as it is): esbuild bundles the ESM entry, which loads the installed package at run time; the lock works', { timeout: 60_000 }, async () => {
    const { outfile, text } = await bundle('inlined.js', [])
    // Nothing of the CommonJS entry or the native loader is inlined: no `.node`, no binding.js.
    assert.doesNotMatch(text, /\.node["']/, 'no .node file named in the bundle')
    assert.doesNotMatch(text, /Cannot find native binding|setHandleFactory/, 'binding.js and index.js stay out of the bundle')
    assert.doesNotMatch(text, /from "pi-crew-workspace-lock"/, 'the package was bundled, not left external')
    const { ws, r } = await runBundle(outfile)
    assertLockWorked(ws, r)
    // The same bundle, run from another directory: where it runs from does not matter,
    // where it lies does (Node resolves the package from the bundle's folder).
    const elsewhere = await runBundle(outfile, { cwd: tempDir('wslock-bundle-cwd') })
    assertLockWorked(elsewhere.ws, elsewhere.r)
  })

  it('a bundle moved away from any installed copy of the package fails with a clear error, not a crash', { timeout: 60_000 }, async (t) => {
    const { outfile } = await bundle('moved.js', [])
    const lonely = tempDir('wslock-bundle-lonely')
    fs.writeFileSync(path.join(lonely, 'package.json'), JSON.stringify({ type: 'module' }))
    const moved = path.join(lonely, 'extension.js')
    fs.copyFileSync(outfile, moved)
    // Only meaningful if no node_modules above the temp dir holds the package.
    let p = lonely
    for (;;) {
      if (fs.existsSync(path.join(p, 'node_modules', rootPkg.name))) return t.skip(`${p}/node_modules holds the package`)
      const up = path.dirname(p)
      if (up === p) break
      p = up
    }
    const { r } = await runBundle(moved, { cwd: lonely })
    assert.equal(r.signal, null, r.out)
    assert.equal(r.code, 1, r.out)
    assert.match(r.stderr, /pi-crew-workspace-lock: the package is not installed where this code runs/, r.out)
  })
})

describe('the ESM entry (index.mjs, package.json exports "import")', () => {
  it('exports exactly what the CommonJS entry exports, the very same functions, and the CommonJS module as default', async () => {
    const cjs = requireHere('../index.js')
    const esm = await import('../index.mjs')
    assert.deepEqual(Object.keys(esm).sort(), ['default', ...Object.keys(cjs)].sort())
    for (const name of Object.keys(cjs)) assert.equal(esm[name], cjs[name], name)
    assert.equal(esm.default, cjs)
  })

  it('package.json sends `import` to index.mjs, `require` to index.js, types to index.d.ts, and ships index.mjs', () => {
    const dot = rootPkg.exports['.']
    assert.equal(dot.import, './index.mjs')
    assert.equal(dot.default, `./${rootPkg.main}`)
    assert.equal(dot.types, `./${rootPkg.types}`)
    assert.equal(Object.keys(dot)[0], 'types', 'types first, as TypeScript requires')
    assert.ok(rootPkg.files.includes('index.mjs'))
    // Deep paths keep working as they did before there was an exports map.
    assert.equal(rootPkg.exports['./package.json'], './package.json')
    assert.equal(rootPkg.exports['./*'], './*')
  })
})
