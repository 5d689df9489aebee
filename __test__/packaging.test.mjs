// The package as a user gets it: `npm pack` the root package and the linux-x64-gnu platform
// package (the way napi-rs publishes: the root has no .node, the platform package carries
// it), install both tarballs offline into a fresh project, then require/import/type-check it
// there. Also: the root package alone fails to load with napi-rs's clear error.
//
// Everything runs in temp dirs with their own npm cache and an empty user npmrc; npm's own
// `npm_*` variables (set when this runs under `npm test`) are kept away from the children,
// or `npm install` would follow npm_config_local_prefix back into this repository.
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
const rootPkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'))
const platformDir = path.join(root, 'npm', 'linux-x64-gnu')
const nodeFile = 'workspace-lock.linux-x64-gnu.node'
const isLinuxX64Gnu = process.platform === 'linux' && process.arch === 'x64' && !!process.report?.getReport().header.glibcVersionRuntime
const skip = !isLinuxX64Gnu
  ? 'only linux-x64-gnu is built here'
  : !fs.existsSync(path.join(root, nodeFile))
    ? `${nodeFile} is not built (npm run build)`
    : false

let tsc = null
try {
  tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc')
} catch {}

/** The environment for npm and node children: none of npm's or node:test's own variables. */
function cleanEnv(extra = {}) {
  const env = {}
  for (const [k, v] of Object.entries(process.env)) {
    if (/^npm_/i.test(k) || k === 'NODE_TEST_CONTEXT' || k === 'INIT_CWD' || k === 'NODE_PATH' || k.startsWith('NAPI_RS_')) continue
    env[k] = v
  }
  return { ...env, ...extra }
}

/** Runs a command to completion, killed (SIGKILL) after `timeoutMs`. */
function run(cmd, args, { cwd, env = cleanEnv(), timeoutMs = 30_000 } = {}) {
  return new Promise((resolve, reject) => {
    const t0 = Date.now()
    const child = spawn(cmd, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] })
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
      resolve({ code, signal, stdout, stderr, ms: Date.now() - t0, out: `exit ${code ?? signal} after ${Date.now() - t0} ms\n--- stdout\n${stdout}\n--- stderr\n${stderr}` })
    })
  })
}

const node = (args, opts) => run(process.execPath, args, opts)

/**
 * What `npm pack` must put in the tarball of the package in `dir`: its `files` (plain paths
 * or folders), plus what npm always adds: package.json, README and LICENSE/LICENCE, main and
 * the bin targets. Sorted, as `npm pack --json` lists them.
 */
function expectedPackList(dir, pkg, extra = []) {
  const out = new Set(['package.json', ...extra])
  const add = (rel) => {
    rel = path.normalize(rel).replace(/^\.\//, '')
    const abs = path.join(dir, rel)
    if (!fs.existsSync(abs)) return
    if (fs.statSync(abs).isDirectory()) for (const e of fs.readdirSync(abs)) add(path.join(rel, e))
    else out.add(rel)
  }
  for (const f of pkg.files ?? []) add(f)
  for (const f of fs.readdirSync(dir)) if (/^(readme|licen[cs]e)(\..*)?$/i.test(f)) add(f)
  if (pkg.main) add(pkg.main)
  for (const b of typeof pkg.bin === 'string' ? [pkg.bin] : Object.values(pkg.bin ?? {})) add(b)
  return [...out].sort()
}

// Filled in by `before`.
let work, npmEnv, rootTgz, platformTgz, app, rootOnlyApp, rootFiles, platformFiles

async function npm(args, cwd) {
  const r = await run('npm', args, { cwd, env: npmEnv, timeoutMs: 60_000 })
  assert.equal(r.code, 0, `npm ${args.join(' ')} in ${cwd}: ${r.out}`)
  return r
}

async function pack(dir) {
  const r = await npm(['pack', '--json', '--ignore-scripts', '--pack-destination', work], dir)
  const [info] = JSON.parse(r.stdout)
  return { tgz: path.join(work, info.filename), files: info.files.map((f) => f.path).sort() }
}

function scratchProject(name) {
  const dir = path.join(work, name)
  fs.mkdirSync(dir)
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name, version: '1.0.0', private: true }, null, 2))
  return dir
}

const install = (dir, tarballs) => npm(['install', '--offline', '--no-audit', '--no-fund', '--no-package-lock', ...tarballs], dir)

describe('npm pack, install, use', { skip }, () => {
  before(async () => {
    work = tempDir('wslock-pack')
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
    // The platform package as `napi prepublish` / CI artifacts make it: its folder plus the .node.
    const plat = path.join(work, 'platform-pkg')
    fs.cpSync(platformDir, plat, { recursive: true })
    fs.copyFileSync(path.join(root, nodeFile), path.join(plat, nodeFile))
    ;[{ tgz: rootTgz, files: rootFiles }, { tgz: platformTgz, files: platformFiles }] = await Promise.all([pack(root), pack(plat)])
    app = scratchProject('app')
    rootOnlyApp = scratchProject('root-only-app')
    await Promise.all([install(app, [rootTgz, platformTgz]), install(rootOnlyApp, [rootTgz])])
  }, { timeout: 120_000 })

  it('packs the root package with exactly its `files` (plus package.json, README, LICENSE, main, bin), no .node', () => {
    assert.deepEqual(rootFiles, expectedPackList(root, rootPkg))
    for (const f of ['index.js', 'index.d.ts', 'binding.js', 'package.json', 'README.md']) assert.ok(rootFiles.includes(f), `${f} is packed`)
    assert.ok(!rootFiles.some((f) => f.endsWith('.node')), 'no native binary in the root tarball')
    assert.ok(!rootFiles.some((f) => /^(__test__|src|core|target|npm|node_modules)\//.test(f)), 'no sources, tests or build output')
    // Every file the entry point needs at run time is packed.
    assert.ok(rootFiles.includes(rootPkg.main) && rootFiles.includes(rootPkg.types))
  })

  it('packs every file the README links to (or package.json names a repository to resolve them)', () => {
    const readme = rootFiles.find((f) => /^readme(\..*)?$/i.test(f))
    const text = fs.readFileSync(path.join(root, readme), 'utf8')
    const targets = [...text.matchAll(/\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)|href="([^"]+)"/g)]
      .map((m) => m[1] ?? m[2])
      .filter((t) => !/^([a-z][a-z0-9+.-]*:|#|\/\/)/i.test(t))
      .map((t) => path.posix.normalize(decodeURI(t.split('#')[0])).replace(/\/$/, ''))
    const missing = targets.filter((t) => !rootFiles.some((f) => f === t || f.startsWith(`${t}/`)))
    if (rootPkg.repository) return // npmjs.com resolves relative links against the repository
    assert.deepEqual(missing, [], `README links to files that are not in the tarball (add them to "files", link absolutely, or set "repository")`)
  })

  it('packs the platform package with the .node only (plus package.json, README, LICENSE)', () => {
    const platPkg = JSON.parse(fs.readFileSync(path.join(platformDir, 'package.json'), 'utf8'))
    assert.deepEqual(platformFiles, expectedPackList(platformDir, platPkg, [nodeFile]))
    assert.ok(platformFiles.includes(nodeFile))
    assert.equal(platPkg.main, nodeFile)
    assert.equal(platPkg.version, rootPkg.version, 'the loader requires the same version')
  })

  it('installs the bin commands of package.json, and they run', { timeout: 20_000, skip: !rootPkg.bin && 'package.json has no "bin"' }, async () => {
    const bins = typeof rootPkg.bin === 'string' ? { [rootPkg.name]: rootPkg.bin } : rootPkg.bin
    for (const name of Object.keys(bins)) {
      const r = await run(path.join(app, 'node_modules', '.bin', name), ['--version'], { cwd: app, timeoutMs: 10_000 })
      assert.equal(r.code, 0, `${name} --version: ${r.out}`)
      assert.ok(r.stdout.includes(rootPkg.version), `${name} --version: ${r.out}`)
    }
  })

  it('works with CommonJS require in the installed project, from the platform package', { timeout: 20_000 }, async () => {
    const cwd = workspace()
    fs.writeFileSync(
      path.join(app, 'cjs.cjs'),
      `const assert = require('node:assert/strict')
const lock = require('pi-crew-workspace-lock')
const cwd = process.argv[2]
const names = ['acquireWorkspaceLock', 'defaultStartTimeResolver', 'inspectWorkspaceLock', 'inspectWorkspaceLocks', 'isWorkspaceBusy', 'reclaimStaleLocks', 'workspaceLockPath']
assert.deepEqual(Object.keys(lock).sort(), names)
for (const n of names) assert.equal(typeof lock[n], 'function', n)
;(async () => {
  const h = await lock.acquireWorkspaceLock(cwd, 'cjs-goal', { failOnWorkspaceBusy: true })
  assert.equal(h.lockPath, lock.workspaceLockPath(cwd))
  assert.equal(JSON.parse(require('node:fs').readFileSync(h.lockPath, 'utf8')).goalId, 'cjs-goal')
  assert.equal(lock.isWorkspaceBusy(cwd), 'cjs-goal')
  await assert.rejects(lock.acquireWorkspaceLock(cwd, 'other', { failOnWorkspaceBusy: true }), /^Error: workspace busy: cwd=.* held by goalId=cjs-goal \\(pid=\\d+\\)$/)
  h.release()
  assert.equal(lock.isWorkspaceBusy(cwd), undefined)
  console.log(JSON.stringify({
    entry: require.resolve('pi-crew-workspace-lock'),
    native: Object.keys(require.cache).filter((f) => f.endsWith('.node')),
  }))
})().catch((e) => { console.error(e); process.exit(1) })
`,
    )
    const r = await node(['cjs.cjs', cwd], { cwd: app, timeoutMs: 15_000 })
    assert.equal(r.code, 0, r.out)
    const { entry, native } = JSON.parse(r.stdout)
    assert.equal(entry, path.join(fs.realpathSync(app), 'node_modules', 'pi-crew-workspace-lock', 'index.js'))
    assert.deepEqual(native, [path.join(fs.realpathSync(app), 'node_modules', 'pi-crew-workspace-lock-linux-x64-gnu', nodeFile)])
  })

  it('works with ESM named imports, a default import and a pi-crew style `export *` re-export', { timeout: 20_000 }, async () => {
    const cwd = workspace()
    // pi-crew's src/runtime/workspace-lock.ts after the switch, as plain JS.
    fs.writeFileSync(path.join(app, 'workspace-lock.mjs'), `export * from 'pi-crew-workspace-lock'\n`)
    fs.writeFileSync(
      path.join(app, 'esm.mjs'),
      `import assert from 'node:assert/strict'
import path from 'node:path'
import { acquireWorkspaceLock, defaultStartTimeResolver, inspectWorkspaceLock, inspectWorkspaceLocks, isWorkspaceBusy, reclaimStaleLocks, workspaceLockPath } from 'pi-crew-workspace-lock'
import pkg from 'pi-crew-workspace-lock'
import * as ns from 'pi-crew-workspace-lock'
import * as reexported from './workspace-lock.mjs'
const cwd = process.argv[2]
const names = ['acquireWorkspaceLock', 'defaultStartTimeResolver', 'inspectWorkspaceLock', 'inspectWorkspaceLocks', 'isWorkspaceBusy', 'reclaimStaleLocks', 'workspaceLockPath']
assert.deepEqual(Object.keys(ns).sort(), ['default', ...names].sort())
assert.deepEqual(Object.keys(reexported).sort(), names, 'export * re-exports every named export')
for (const n of names) {
  assert.equal(typeof ns[n], 'function', n)
  assert.equal(ns[n], pkg[n], n)
  assert.equal(reexported[n], pkg[n], n)
}
assert.equal(typeof defaultStartTimeResolver(process.pid), 'number')
const h = await reexported.acquireWorkspaceLock(cwd, 'esm-goal')
assert.equal(isWorkspaceBusy(cwd), 'esm-goal')
assert.equal(inspectWorkspaceLock(cwd).state, 'held')
assert.equal(inspectWorkspaceLocks(path.dirname(workspaceLockPath(cwd))).length, 1)
// A second acquire waits, and gets the lock as soon as the first is released.
let second = null
const waiting = acquireWorkspaceLock(cwd, 'esm-second', { pollMs: 60_000 }).then((x) => (second = x))
await new Promise((r) => setTimeout(r, 150))
assert.equal(second, null, 'the second acquire waits')
const t0 = Date.now()
h.release()
await waiting
assert.ok(Date.now() - t0 < 2000, 'woken by the release, not by pollMs')
assert.equal(isWorkspaceBusy(cwd), 'esm-second')
second.release()
assert.deepEqual(reclaimStaleLocks(cwd + '/nope'), [])
console.log('ok')
`,
    )
    const r = await node(['esm.mjs', cwd], { cwd: app, timeoutMs: 15_000 })
    assert.equal(r.code, 0, r.out)
    assert.equal(r.stdout.trim(), 'ok')
  })

  it('without the platform package, fails to load with napi-rs\'s "Cannot find native binding" (no crash)', { timeout: 20_000 }, async () => {
    fs.writeFileSync(
      path.join(rootOnlyApp, 'probe.cjs'),
      `try { require('pi-crew-workspace-lock'); console.log('loaded!') } catch (e) {
  const causes = []
  for (let c = e.cause; c; c = c.cause) causes.push(String(c.message))
  console.log(JSON.stringify({ message: e.message, causes }))
}
`,
    )
    const probe = await node(['probe.cjs'], { cwd: rootOnlyApp, timeoutMs: 10_000 })
    assert.equal(probe.code, 0, probe.out)
    const { message, causes } = JSON.parse(probe.stdout)
    assert.match(message, /^Cannot find native binding\./)
    assert.ok(causes.some((c) => c.includes('pi-crew-workspace-lock-linux-x64-gnu')), `the cause names the platform package: ${causes.join('\n')}`)
    // Uncaught, for CommonJS and ESM alike: an ordinary exception, exit code 1, no signal.
    for (const args of [['-e', "require('pi-crew-workspace-lock')"], ['--input-type=module', '-e', "import 'pi-crew-workspace-lock'"]]) {
      const r = await node(args, { cwd: rootOnlyApp, timeoutMs: 10_000 })
      assert.equal(r.signal, null, r.out)
      assert.equal(r.code, 1, r.out)
      assert.match(r.stderr, /Error: Cannot find native binding\./, r.out)
    }
  })

  it('type-checks a pi-crew style consumer of the installed package with tsc --strict (NodeNext ESM and CJS, Bundler); wrong calls fail', { timeout: 30_000, skip: !tsc && 'typescript is not installed (devDependency)' }, async () => {
    const tsDir = path.join(app, 'ts')
    fs.mkdirSync(tsDir, { recursive: true })
    const compilerOptions = {
      strict: true,
      noEmit: true,
      target: 'ES2022',
      module: 'NodeNext',
      moduleResolution: 'NodeNext',
      lib: ['ES2022'],
      types: [],
      skipLibCheck: false,
    }
    // ESM (.mts) and CommonJS (.cts) consumers: `export *` as pi-crew's module does, then
    // every export and type used the way pi-crew's code and tests use them.
    const body = (from) => `export * from "${from}";
import {
  acquireWorkspaceLock,
  defaultStartTimeResolver,
  inspectWorkspaceLock,
  inspectWorkspaceLocks,
  isWorkspaceBusy,
  reclaimStaleLocks,
  workspaceLockPath,
  type AcquireWorkspaceLockOptions,
  type StartTimeResolver,
  type WorkspaceLockContents,
  type WorkspaceLockHandle,
  type WorkspaceLockStatus,
} from "${from}";

const resolver: StartTimeResolver = defaultStartTimeResolver;
const opts: AcquireWorkspaceLockOptions = {
  failOnWorkspaceBusy: false,
  heartbeatStaleMs: 60_000,
  pollMs: 500,
  startTimeResolver: (pid: number) => resolver(pid),
  now: Date.now,
  pid: 1,
  signal: AbortSignal.timeout(1000),
  onCompromised: (err: Error) => void err.message,
};

export async function useAll(cwd: string): Promise<string[]> {
  const lockPath: string = workspaceLockPath(cwd);
  const handle: WorkspaceLockHandle = await acquireWorkspaceLock(cwd, "goal", opts);
  const fields: [string, string, string, number | undefined] = [handle.cwd, handle.goalId, handle.lockPath, handle.startTime];
  const extras: [boolean | undefined, string | undefined, string | undefined] = [handle.compromised, handle.compromisedReason, handle.reclaimed?.reason];
  const refresh: [string | undefined, number | undefined] = [handle.heartbeatError?.code, handle.heartbeatError?.attempts];
  handle.release();
  const busy: string | undefined = isWorkspaceBusy(cwd, { startTimeResolver: resolver, heartbeatStaleMs: 1, now: () => 0 });
  const reclaimed: string[] = reclaimStaleLocks(lockPath, { heartbeatStaleMs: 1 });
  const status: WorkspaceLockStatus = inspectWorkspaceLock(cwd, { heartbeatStaleMs: 1 });
  const state: "free" | "held" | "stale" | "unreadable" = status.state;
  const late: true | undefined = status.heartbeatLate;
  const all: WorkspaceLockStatus[] = inspectWorkspaceLocks(lockPath);
  const contents: WorkspaceLockContents = { pid: 1, startTime: fields[3], heartbeat: 0, goalId: fields[1], acquiredAt: "" };
  return [busy ?? "", ...reclaimed, state, String(all.length), contents.goalId, String(extras[0]), String(refresh[0]), String(late)];
}
`
    // What @types/node declares for the AbortSignal that index.d.ts names (the DOM lib would
    // do too, at three times the checking time).
    fs.writeFileSync(
      path.join(tsDir, 'globals.d.ts'),
      'interface AbortSignal { readonly aborted: boolean; readonly reason: unknown }\n' +
        'declare var AbortSignal: { prototype: AbortSignal; timeout(ms: number): AbortSignal };\n',
    )
    fs.writeFileSync(path.join(tsDir, 'consumer.mts'), body('pi-crew-workspace-lock'))
    fs.writeFileSync(path.join(tsDir, 'consumer.cts'), body('pi-crew-workspace-lock'))
    fs.writeFileSync(path.join(tsDir, 'tsconfig.json'), JSON.stringify({ compilerOptions, files: ['globals.d.ts', 'consumer.mts', 'consumer.cts'] }, null, 2))
    // The same consumer as a bundler-resolved project (vite, tsx, esbuild users).
    fs.writeFileSync(path.join(tsDir, 'consumer.ts'), body('pi-crew-workspace-lock'))
    const bundler = { ...compilerOptions, module: 'Preserve', moduleResolution: 'Bundler' }
    fs.writeFileSync(path.join(tsDir, 'tsconfig.bundler.json'), JSON.stringify({ compilerOptions: bundler, files: ['globals.d.ts', 'consumer.ts'] }, null, 2))
    const wrong = [
      'import { acquireWorkspaceLock, isWorkspaceBusy, inspectWorkspaceLock, workspaceLockPath, type WorkspaceLockHandle } from "pi-crew-workspace-lock";',
      'workspaceLockPath(42);',
      'acquireWorkspaceLock("/tmp", "g", { pollMs: "5" });',
      'acquireWorkspaceLock("/tmp");',
      'const busy: string = isWorkspaceBusy("/tmp");',
      'declare const handle: WorkspaceLockHandle;',
      'handle.goalId = "other";',
      'const state: "locked" = inspectWorkspaceLock("/tmp").state;',
      'export { busy, state };',
    ]
    fs.writeFileSync(path.join(tsDir, 'wrong.mts'), wrong.join('\n') + '\n')
    fs.writeFileSync(path.join(tsDir, 'tsconfig.wrong.json'), JSON.stringify({ compilerOptions, files: ['globals.d.ts', 'wrong.mts'] }, null, 2))

    const [good, goodBundler, bad] = await Promise.all([
      node([tsc, '-p', 'tsconfig.json', '--pretty', 'false'], { cwd: tsDir, timeoutMs: 30_000 }),
      node([tsc, '-p', 'tsconfig.bundler.json', '--pretty', 'false'], { cwd: tsDir, timeoutMs: 30_000 }),
      node([tsc, '-p', 'tsconfig.wrong.json', '--pretty', 'false'], { cwd: tsDir, timeoutMs: 30_000 }),
    ])
    assert.equal(good.code, 0, good.out)
    assert.equal(goodBundler.code, 0, goodBundler.out)
    assert.notEqual(bad.code, 0, bad.out)
    const errorLines = [...bad.stdout.matchAll(/^wrong\.mts\((\d+),\d+\): error TS/gm)].map((m) => Number(m[1]))
    assert.deepEqual(errorLines, [2, 3, 4, 5, 7, 8], bad.out)
  })
})

// The platform packages of every supported target, as committed in npm/: no build needed.
describe('platform packages (npm/) for every supported target', () => {
  // Linux x64/arm64 glibc and musl, macOS x64/arm64, Windows x64 (SPEC: "Every platform pi-crew runs on").
  const SUPPORTED = {
    'x86_64-unknown-linux-gnu': { abi: 'linux-x64-gnu', os: 'linux', cpu: 'x64', libc: 'glibc' },
    'aarch64-unknown-linux-gnu': { abi: 'linux-arm64-gnu', os: 'linux', cpu: 'arm64', libc: 'glibc' },
    'x86_64-unknown-linux-musl': { abi: 'linux-x64-musl', os: 'linux', cpu: 'x64', libc: 'musl' },
    'aarch64-unknown-linux-musl': { abi: 'linux-arm64-musl', os: 'linux', cpu: 'arm64', libc: 'musl' },
    'x86_64-apple-darwin': { abi: 'darwin-x64', os: 'darwin', cpu: 'x64' },
    'aarch64-apple-darwin': { abi: 'darwin-arm64', os: 'darwin', cpu: 'arm64' },
    'x86_64-pc-windows-msvc': { abi: 'win32-x64-msvc', os: 'win32', cpu: 'x64' },
  }
  const npmDir = path.join(root, 'npm')
  const readPlatform = (abi) => JSON.parse(fs.readFileSync(path.join(npmDir, abi, 'package.json'), 'utf8'))

  it('napi.targets names exactly the supported targets', () => {
    assert.deepEqual([...rootPkg.napi.targets].sort(), Object.keys(SUPPORTED).sort())
  })

  it('npm/ holds one folder per target, each a package for that target only, at the root version', () => {
    const dirs = fs.readdirSync(npmDir).filter((d) => fs.statSync(path.join(npmDir, d)).isDirectory())
    assert.deepEqual(dirs.sort(), Object.values(SUPPORTED).map((t) => t.abi).sort())
    for (const [triple, t] of Object.entries(SUPPORTED)) {
      const p = readPlatform(t.abi)
      const node = `workspace-lock.${t.abi}.node`
      assert.equal(p.name, `${rootPkg.name}-${t.abi}`, triple)
      assert.equal(p.version, rootPkg.version, `${triple}: the loader requires the same version`)
      assert.deepEqual(p.os, [t.os], triple)
      assert.deepEqual(p.cpu, [t.cpu], triple)
      assert.deepEqual(p.libc, t.libc && [t.libc], triple)
      assert.equal(p.main, node, triple)
      assert.deepEqual(p.files, [node], triple)
      assert.equal(p.license, rootPkg.license, triple)
      assert.deepEqual(p.engines, rootPkg.engines, triple)
    }
  })

  it('the root package installs on exactly the targets\' systems and CPUs (os, cpu)', () => {
    const all = Object.values(SUPPORTED)
    assert.deepEqual([...rootPkg.os].sort(), [...new Set(all.map((t) => t.os))].sort())
    assert.deepEqual([...rootPkg.cpu].sort(), [...new Set(all.map((t) => t.cpu))].sort())
  })

  it('npm/ is exactly what `napi create-npm-dirs` makes of package.json (regenerate it after changing targets)', { timeout: 30_000 }, async () => {
    const cliPkgPath = createRequire(import.meta.url).resolve('@napi-rs/cli/package.json')
    const cli = path.join(path.dirname(cliPkgPath), JSON.parse(fs.readFileSync(cliPkgPath, 'utf8')).bin.napi)
    const scratch = tempDir('wslock-npmdirs')
    fs.copyFileSync(path.join(root, 'package.json'), path.join(scratch, 'package.json'))
    const r = await node([cli, 'create-npm-dirs', '--cwd', scratch], { cwd: scratch, timeoutMs: 30_000 })
    assert.equal(r.code, 0, r.out)
    const list = (dir) => fs.readdirSync(dir, { recursive: true }).map(String).sort()
    assert.deepEqual(list(path.join(scratch, 'npm')), list(npmDir))
    for (const f of list(npmDir)) {
      const committed = path.join(npmDir, f)
      if (fs.statSync(committed).isDirectory()) continue
      assert.equal(fs.readFileSync(committed, 'utf8'), fs.readFileSync(path.join(scratch, 'npm', f), 'utf8'), `npm/${f}`)
    }
  })

  it('binding.js (the napi-rs loader) looks for each platform package', () => {
    const loader = fs.readFileSync(path.join(root, 'binding.js'), 'utf8')
    for (const t of Object.values(SUPPORTED)) {
      assert.ok(loader.includes(`require('${rootPkg.name}-${t.abi}')`), `binding.js requires ${rootPkg.name}-${t.abi}`)
      assert.ok(loader.includes(`require('./workspace-lock.${t.abi}.node')`), `binding.js tries ./workspace-lock.${t.abi}.node`)
    }
  })
})
