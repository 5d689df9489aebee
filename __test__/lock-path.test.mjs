// workspaceLockPath(cwd) against SPEC.md "Where the lockfile lives": an independent JS
// reference implementation of the spec text, explicit expected strings for hand-made layouts
// (which check the reference too), home/tmp boundaries in child processes with controlled
// HOME/TMPDIR, cwd spellings, errors, and a seeded randomized differential over many trees.
//
// Reproduce a randomized failure with LOCK_PATH_SEED=<seed printed in the message>.
import { describe, it, before } from 'node:test'
import assert from 'node:assert/strict'
import crypto from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { isDeepStrictEqual as util_isDeepStrictEqual } from 'node:util'
import { lock, tempDir, startChild } from './helpers.mjs'

// ---------------------------------------------------------------------------------------------
// Reference implementation, written from SPEC.md only.
// ---------------------------------------------------------------------------------------------

const MARKERS = [
  '.git', '.pi', '.crew', '.hg', '.svn', '.factory', '.omc', 'package.json', 'pyproject.toml',
  'Cargo.toml', 'go.mod', 'pom.xml', 'composer.json', 'build.gradle', 'build.gradle.kts',
]

const sha256 = (s) => crypto.createHash('sha256').update(Buffer.from(s, 'utf8')).digest('hex')

/** The process facts the spec depends on; defaults are this process's. */
const hostCtx = () => ({ cwd: process.cwd(), home: os.homedir(), tmp: os.tmpdir() })

function realpathOr(p) {
  try {
    return fs.realpathSync(p)
  } catch {
    return p
  }
}

const hasMarker = (dir) => MARKERS.some((m) => fs.existsSync(path.join(dir, m)))

function refFindRepoRoot(absCwd, ctx) {
  let start
  try {
    start = fs.realpathSync(absCwd)
  } catch (e) {
    if (e.code !== 'ENOENT') throw e
    start = absCwd
  }
  const home = realpathOr(path.resolve(ctx.cwd, ctx.home))
  const tmp = realpathOr(path.resolve(ctx.cwd, ctx.tmp))
  let current = start
  while (current !== '/') {
    if (current === home || current === tmp) return undefined
    if (hasMarker(current)) return current
    current = path.dirname(current)
  }
  if ('/' === home || '/' === tmp) return undefined
  return hasMarker('/') ? '/' : undefined
}

function refCrewRoot(repoRoot) {
  const crew = path.join(repoRoot, '.crew')
  if (fs.existsSync(crew)) return { crewRoot: fs.realpathSync(crew), kind: 'crew' }
  const pi = path.join(repoRoot, '.pi')
  if (fs.existsSync(pi)) return { crewRoot: path.join(fs.realpathSync(pi), 'teams'), kind: 'pi' }
  return { crewRoot: crew, kind: 'lexical' }
}

/** Reference workspaceLockPath with details (repo root, crew root kind). */
function refDetails(cwd, ctx = hostCtx()) {
  if (typeof cwd !== 'string') throw new TypeError('cwd must be a string')
  const absCwd = path.resolve(ctx.cwd, cwd)
  const hash = sha256(absCwd)
  const found = refFindRepoRoot(absCwd, ctx)
  const repoRoot = found ?? absCwd
  const { crewRoot, kind } = refCrewRoot(repoRoot)
  return {
    absCwd,
    repoRoot: found,
    crewKind: kind,
    lockPath: path.join(crewRoot, 'state', 'workspace-locks', `${hash}.lock`),
  }
}

const refLockPath = (cwd, ctx) => refDetails(cwd, ctx).lockPath

/** Hand-written expectation: `<crewRoot>/state/workspace-locks/<sha256(absCwd)>.lock`. */
const L = (crewRoot, absCwd) => `${crewRoot}/state/workspace-locks/${sha256(absCwd)}.lock`

/** {ok} or {err:{name, code}} for a thunk. */
function outcomeOf(fn) {
  try {
    return { ok: fn() }
  } catch (e) {
    return { err: { name: e?.constructor?.name, code: e?.code } }
  }
}

/** Asserts the reference and the package both give `expected` for `cwd` in this process. */
function check(cwd, expected, note = '') {
  const what = `${note} cwd=${JSON.stringify(cwd)}`
  assert.equal(refLockPath(cwd), expected, `reference disagrees with hand-made expectation: ${what}`)
  assert.equal(lock.workspaceLockPath(cwd), expected, `package: ${what}`)
}

// ---------------------------------------------------------------------------------------------
// Fixture helpers
// ---------------------------------------------------------------------------------------------

/** A fresh, canonical test root under the OS temp dir (removed at exit). */
const root = (label = 'lockpath') => fs.realpathSync(tempDir(label))

function mkdir(p) {
  fs.mkdirSync(p, { recursive: true })
  return p
}

function touch(p, body = '{}') {
  fs.mkdirSync(path.dirname(p), { recursive: true })
  fs.writeFileSync(p, body)
  return p
}

function link(target, at) {
  fs.mkdirSync(path.dirname(at), { recursive: true })
  fs.symlinkSync(target, at)
  return at
}

/** Runs `fn(call)` against a fresh child with `env`; the child is always killed after. */
async function withChild(env, fn) {
  const c = startChild('lock-path-child.mjs', [], { timeoutMs: 30_000, env })
  const call = async (msg) => {
    c.send(JSON.stringify(msg))
    const reply = JSON.parse(await c.nextLine(15_000))
    if (reply.fatal) throw new Error(`child failed: ${reply.fatal}`)
    return reply
  }
  try {
    return await fn(call)
  } finally {
    c.child.stdin.end()
    c.kill()
  }
}

/** Queries the child for `cwds`; checks each against `expected[i]` (if given) and the reference. */
async function checkInChild(call, cwds, expected, note) {
  const { ctx, results } = await call({ op: 'paths', cwds })
  cwds.forEach((cwd, i) => {
    const what = `${note} cwd=${JSON.stringify(cwd)} ctx=${JSON.stringify(ctx)}`
    const ref = refLockPath(cwd, ctx)
    if (expected) assert.equal(ref, expected[i], `reference disagrees with hand-made expectation: ${what}`)
    assert.deepEqual(results[i], { ok: ref }, `package in child: ${what}`)
  })
  return ctx
}

// ---------------------------------------------------------------------------------------------
// Hand-made layouts in this process (tmp = os.tmpdir(), so every walk stops at the temp dir
// right above the test roots).
// ---------------------------------------------------------------------------------------------

describe('workspaceLockPath: hashing', () => {
  it('uses the lowercase hex SHA-256 of the absolute cwd as UTF-8', () => {
    // Known value, so the reference's hashing itself is checked.
    assert.equal(sha256('/'), '8a5edab282632443219e051e4ade2d1d5bbc671c781051bf1437897cbdfea0f1')
    if (!['/.crew', '/.pi'].some((p) => fs.existsSync(p))) {
      check('/', '/.crew/state/workspace-locks/8a5edab282632443219e051e4ade2d1d5bbc671c781051bf1437897cbdfea0f1.lock')
    }
    const R = root()
    const cwd = mkdir(path.join(R, 'é 日本', 'ß'))
    mkdir(path.join(R, 'é 日本', '.git'))
    const expected = L(path.join(R, 'é 日本', '.crew'), cwd)
    check(cwd, expected, 'non-ASCII')
    assert.match(lock.workspaceLockPath(cwd), /\/[0-9a-f]{64}\.lock$/)
  })
})

describe('workspaceLockPath: markers', () => {
  it('finds a marker at the cwd and 1, 2 and 3 levels up', () => {
    const R = root()
    const P = mkdir(path.join(R, 'p'))
    mkdir(path.join(P, '.hg'))
    for (const rel of ['', 'a', 'a/b', 'a/b/c']) {
      const cwd = mkdir(path.join(P, rel))
      check(cwd, L(`${P}/.crew`, cwd), `level ${rel}`)
    }
  })

  it('recognises each of the 15 markers, as a file and as a directory', () => {
    const R = root()
    MARKERS.forEach((m, i) => {
      for (const kind of ['file', 'dir']) {
        const P = mkdir(path.join(R, `m${i}-${kind}`))
        if (kind === 'file') touch(path.join(P, m))
        else mkdir(path.join(P, m))
        const cwd = mkdir(path.join(P, 'x', 'y'))
        // `.pi` is also the legacy crew root; `.crew` as a file still exists and realpaths to itself.
        const crew = m === '.pi' ? `${P}/.pi/teams` : `${P}/.crew`
        check(cwd, L(crew, cwd), `marker ${m} (${kind})`)
      }
    })
  })

  it('does not count a dangling symlink (or a symlink loop) as a marker', () => {
    const R = root()
    const P = mkdir(path.join(R, 'p'))
    link(path.join(R, 'nowhere'), path.join(P, '.git'))
    link(path.join(R, 'nowhere2'), path.join(P, 'package.json'))
    link('go.mod', path.join(P, 'go.mod')) // ELOOP on stat
    const cwd = mkdir(path.join(P, 'sub'))
    check(cwd, L(`${cwd}/.crew`, cwd), 'dangling markers below')
    check(P, L(`${P}/.crew`, P), 'dangling markers at cwd')
  })

  it('counts a symlink to a file (or to a directory) as a marker', () => {
    const R = root()
    const target = touch(path.join(R, 'elsewhere', 'real.txt'))
    const P = mkdir(path.join(R, 'p'))
    link(target, path.join(P, 'Cargo.toml'))
    const cwd = mkdir(path.join(P, 'sub'))
    check(cwd, L(`${P}/.crew`, cwd), 'symlink to file')
    const Q = mkdir(path.join(R, 'q'))
    link('../elsewhere', path.join(Q, '.svn'))
    check(Q, L(`${Q}/.crew`, Q), 'relative symlink to dir')
  })

  it('lets the nearest marker win', () => {
    const R = root()
    const outer = mkdir(path.join(R, 'outer'))
    mkdir(path.join(outer, '.git'))
    const inner = mkdir(path.join(outer, 'inner'))
    touch(path.join(inner, 'pom.xml'))
    const deep = mkdir(path.join(inner, 'src', 'main'))
    check(deep, L(`${inner}/.crew`, deep), 'inner wins')
    check(inner, L(`${inner}/.crew`, inner), 'inner at cwd')
    const side = mkdir(path.join(outer, 'side'))
    check(side, L(`${outer}/.crew`, side), 'outer for a sibling')
  })

  it('reflects markers that appear and vanish between calls (no stale cache)', () => {
    const R = root()
    const P = mkdir(path.join(R, 'p'))
    const cwd = mkdir(path.join(P, 'sub'))
    check(cwd, L(`${cwd}/.crew`, cwd), 'before')
    touch(path.join(P, 'composer.json'))
    check(cwd, L(`${P}/.crew`, cwd), 'after marker appears')
    fs.rmSync(path.join(P, 'composer.json'))
    check(cwd, L(`${cwd}/.crew`, cwd), 'after marker vanishes')
  })
})

describe('workspaceLockPath: crew root', () => {
  it('uses an existing .crew directory', () => {
    const R = root()
    const P = mkdir(path.join(R, 'p'))
    mkdir(path.join(P, '.git'))
    mkdir(path.join(P, '.crew', 'state'))
    const cwd = mkdir(path.join(P, 'src'))
    check(cwd, L(`${P}/.crew`, cwd))
  })

  it('realpaths a .crew symlink to a directory elsewhere (also through a relative chain)', () => {
    const R = root()
    const data = mkdir(path.join(R, 'store', 'crewdata'))
    const P = mkdir(path.join(R, 'p'))
    link(data, path.join(P, '.crew'))
    const cwd = mkdir(path.join(P, 'src'))
    check(cwd, L(data, cwd), 'absolute link')
    const data2 = mkdir(path.join(R, 'store', 'crewdata2'))
    link('crewdata2', path.join(R, 'store', 'hop'))
    const Q = mkdir(path.join(R, 'q'))
    link('../store/hop', path.join(Q, '.crew'))
    check(Q, L(data2, Q), 'relative chain')
  })

  it('uses realpath(.pi)/teams when only .pi exists', () => {
    const R = root()
    const P = mkdir(path.join(R, 'p'))
    mkdir(path.join(P, '.pi'))
    const cwd = mkdir(path.join(P, 'a', 'b'))
    check(cwd, L(`${P}/.pi/teams`, cwd), '.pi directory')
    const pidata = mkdir(path.join(R, 'store', 'pidata'))
    const Q = mkdir(path.join(R, 'q'))
    mkdir(path.join(Q, '.git'))
    link(pidata, path.join(Q, '.pi'))
    check(Q, L(`${pidata}/teams`, Q), '.pi symlink')
    // A dangling .crew does not exist, so .pi takes over.
    const S = mkdir(path.join(R, 's'))
    mkdir(path.join(S, '.git'))
    mkdir(path.join(S, '.pi'))
    link(path.join(R, 'nowhere'), path.join(S, '.crew'))
    check(S, L(`${S}/.pi/teams`, S), 'dangling .crew')
  })

  it('prefers .crew when both .crew and .pi exist', () => {
    const R = root()
    const P = mkdir(path.join(R, 'p'))
    mkdir(path.join(P, '.pi'))
    mkdir(path.join(P, '.crew'))
    const cwd = mkdir(path.join(P, 'x'))
    check(cwd, L(`${P}/.crew`, cwd))
  })

  it('uses repoRoot/.crew as is when neither exists (and absCwd/.crew with no repo root)', () => {
    const R = root()
    const P = mkdir(path.join(R, 'p'))
    touch(path.join(P, 'package.json'))
    const cwd = mkdir(path.join(P, 'x'))
    check(cwd, L(`${P}/.crew`, cwd), 'repo root')
    const lone = mkdir(path.join(R, 'lone', 'dir'))
    check(lone, L(`${lone}/.crew`, lone), 'no repo root')
    // A dangling .crew with no .pi: neither exists, so the lexical join is kept.
    const S = mkdir(path.join(R, 's'))
    mkdir(path.join(S, '.git'))
    link(path.join(R, 'nowhere'), path.join(S, '.crew'))
    check(S, L(`${S}/.crew`, S), 'dangling .crew, no .pi')
  })
})

describe('workspaceLockPath: cwd spellings and failures', () => {
  it('gives the clean absolute path\'s result for trailing slash, //, /./ and .. forms', () => {
    const R = root()
    const P = mkdir(path.join(R, 'p'))
    mkdir(path.join(P, '.git'))
    const cwd = mkdir(path.join(P, 'sub'))
    const expected = L(`${P}/.crew`, cwd)
    const forms = [
      cwd, `${cwd}/`, `${cwd}//`, `${P}//sub`, `${P}/./sub`, `${cwd}/.`, `${cwd}/./`, `${P}/x/../sub`,
      `${P}/sub/../sub/`, `/${cwd}`, `${cwd.replaceAll('/', '//')}//`, path.relative(process.cwd(), cwd),
      `./${path.relative(process.cwd(), cwd)}/`,
    ]
    for (const form of forms) check(form, expected, 'spelling')
  })

  it('walks up lexically from a nonexistent cwd', () => {
    const R = root()
    const P = mkdir(path.join(R, 'p'))
    touch(path.join(P, 'pyproject.toml'))
    const ghost = path.join(P, 'not', 'there', 'yet')
    check(ghost, L(`${P}/.crew`, ghost), 'under a repo')
    check(`${ghost}/`, L(`${P}/.crew`, ghost), 'trailing slash')
    const lost = path.join(R, 'lost', 'ghost', 'dir')
    check(lost, L(`${lost}/.crew`, lost), 'no repo')
    // Through a dangling symlink: realpath is ENOENT, so the lexical path is walked.
    link(path.join(R, 'nowhere'), path.join(P, 'dl'))
    check(path.join(P, 'dl', 'x'), L(`${P}/.crew`, path.join(P, 'dl', 'x')), 'dangling link component')
    // Through a live symlink then a missing tail: the walk stays lexical (markers in the
    // lexical parent count, not those of the link target's parents).
    const other = mkdir(path.join(R, 'other'))
    touch(path.join(other, 'package.json'))
    const real = mkdir(path.join(R, 'repo', 'sub'))
    mkdir(path.join(R, 'repo', '.git'))
    link(real, path.join(other, 'link'))
    const tail = path.join(other, 'link', 'ghost')
    check(tail, L(`${other}/.crew`, tail), 'live link + missing tail')
  })

  it('hashes a symlinked cwd lexically but finds the repo root through its realpath', () => {
    const R = root()
    const proj = mkdir(path.join(R, 'real', 'proj'))
    mkdir(path.join(proj, '.git'))
    const src = mkdir(path.join(proj, 'src'))
    const other = mkdir(path.join(R, 'other'))
    touch(path.join(other, 'package.json')) // must NOT be used: the walk follows the realpath
    const ln = link(src, path.join(other, 'link'))
    check(ln, L(`${proj}/.crew`, ln), 'link to a dir in a repo')
    assert.notEqual(lock.workspaceLockPath(ln), lock.workspaceLockPath(src))
    link(path.join(R, 'real'), path.join(R, 'alias'))
    const viaAlias = path.join(R, 'alias', 'proj', 'src')
    check(viaAlias, L(`${proj}/.crew`, viaAlias), 'symlinked ancestor')
    // A link to a marker-less dir: no root, and the crew root is the lexical cwd's .crew.
    const plain = mkdir(path.join(R, 'plain', 'dir'))
    const ln2 = link(plain, path.join(R, 'real', 'proj', 'tolink'))
    check(ln2, L(`${ln2}/.crew`, ln2), 'link out of a repo')
  })

  it('accepts a cwd that is a regular file (realpath succeeds)', () => {
    const R = root()
    const P = mkdir(path.join(R, 'p'))
    mkdir(path.join(P, '.git'))
    const file = touch(path.join(P, 'file'))
    check(file, L(`${P}/.crew`, file))
  })

  it('throws an Error with code ENOTDIR and a path when a cwd component is a regular file', () => {
    const R = root()
    const P = mkdir(path.join(R, 'p'))
    mkdir(path.join(P, '.git'))
    const file = touch(path.join(P, 'file'))
    for (const cwd of [path.join(file, 'sub'), `${file}/sub/deeper/`, path.relative(process.cwd(), `${file}/x`)]) {
      const abs = path.resolve(cwd)
      assert.deepEqual(outcomeOf(() => refLockPath(cwd)), { err: { name: 'Error', code: 'ENOTDIR' } }, `reference ${cwd}`)
      let thrown
      try {
        lock.workspaceLockPath(cwd)
      } catch (e) {
        thrown = e
      }
      assert.ok(thrown instanceof Error, `package did not throw for ${cwd}`)
      assert.equal(thrown.code, 'ENOTDIR', `code for ${cwd}`)
      assert.equal(typeof thrown.path, 'string', `path property for ${cwd}`)
      assert.ok(thrown.path.length > file.length && abs.startsWith(thrown.path), `path ${thrown.path} for ${abs}`)
      assert.match(thrown.message, /^ENOTDIR: not a directory, /)
    }
  })

  it('throws ELOOP for a symlink loop in the cwd', () => {
    const R = root()
    link('b', path.join(R, 'a'))
    link('a', path.join(R, 'b'))
    for (const cwd of [path.join(R, 'a'), path.join(R, 'a', 'x')]) {
      assert.deepEqual(outcomeOf(() => refLockPath(cwd)), { err: { name: 'Error', code: 'ELOOP' } }, `reference ${cwd}`)
      assert.deepEqual(outcomeOf(() => lock.workspaceLockPath(cwd)), { err: { name: 'Error', code: 'ELOOP' } }, `package ${cwd}`)
    }
  })

  it('throws the realpath TypeError for a NUL byte in the cwd', () => {
    const R = root()
    const cwd = `${R}/a\0b`
    let refErr
    try {
      refLockPath(cwd)
    } catch (e) {
      refErr = e
    }
    assert.ok(refErr instanceof TypeError)
    assert.throws(() => lock.workspaceLockPath(cwd), (e) => e instanceof TypeError && e.message === refErr.message)
  })

  it('throws a TypeError for a non-string cwd', () => {
    const values = [undefined, null, 5, 0, true, {}, [], ['/tmp'], Buffer.from('/tmp'), new String('/tmp'), Symbol('x'), () => '/tmp', 1n]
    for (const v of values) {
      assert.throws(() => lock.workspaceLockPath(v), TypeError, `value ${typeof v}`)
    }
    assert.throws(() => lock.workspaceLockPath(), TypeError, 'no argument')
  })
})

// ---------------------------------------------------------------------------------------------
// Home and tmp boundaries: child processes whose HOME/TMPDIR point inside the test root.
// ---------------------------------------------------------------------------------------------

describe('workspaceLockPath: home and tmp boundaries (child processes)', () => {
  let B
  let cases
  before(() => {
    B = root('lockpath-home')
    mkdir(path.join(B, '.git')) // ABOVE home and tmp: must never be found from inside them
    mkdir(path.join(B, 'home', '.git')) // home itself never counts
    mkdir(path.join(B, 'home', 'a', 'b'))
    touch(path.join(B, 'home', 'proj', 'package.json'))
    mkdir(path.join(B, 'home', 'proj', 'src'))
    mkdir(path.join(B, 'tmp', '.git'))
    mkdir(path.join(B, 'tmp', 'x', 'y'))
    touch(path.join(B, 'tmp', 'proj', 'go.mod'))
    mkdir(path.join(B, 'tmp', 'proj', 'deep'))
    mkdir(path.join(B, 'other', 'p'))
    link(path.join(B, 'home'), path.join(B, 'homelink'))
    link('tmp', path.join(B, 'tmplink'))
    const c = (rel) => path.join(B, rel)
    // [cwd, expected] with home = B/home and tmp = B/tmp (however spelled).
    cases = [
      [c('home/a/b'), L(`${c('home/a/b')}/.crew`, c('home/a/b'))],
      [c('home/a'), L(`${c('home/a')}/.crew`, c('home/a'))],
      [c('home'), L(`${c('home')}/.crew`, c('home'))],
      [`${c('home')}/`, L(`${c('home')}/.crew`, c('home'))],
      [c('home/proj/src'), L(`${c('home/proj')}/.crew`, c('home/proj/src'))],
      [c('home/ghost/dir'), L(`${c('home/ghost/dir')}/.crew`, c('home/ghost/dir'))],
      [c('homelink/a/b'), L(`${c('homelink/a/b')}/.crew`, c('homelink/a/b'))],
      [c('tmp'), L(`${c('tmp')}/.crew`, c('tmp'))],
      [c('tmp/x/y'), L(`${c('tmp/x/y')}/.crew`, c('tmp/x/y'))],
      [c('tmp/proj/deep'), L(`${c('tmp/proj')}/.crew`, c('tmp/proj/deep'))],
      [c('tmplink/x'), L(`${c('tmplink/x')}/.crew`, c('tmplink/x'))],
      // Control: outside home and tmp the marker above is reached.
      [c('other/p'), L(`${B}/.crew`, c('other/p'))],
      [B, L(`${B}/.crew`, B)],
    ]
  })

  const plainEnv = () => ({ HOME: path.join(B, 'home'), TMPDIR: path.join(B, 'tmp'), TMP: '', TEMP: '' })

  it('stops at $HOME and os.tmpdir(); a marker above home is never found; cwd = home has no root', async () => {
    await withChild(plainEnv(), async (call) => {
      const ctx = await checkInChild(call, cases.map((x) => x[0]), cases.map((x) => x[1]), 'plain HOME/TMPDIR')
      assert.equal(ctx.home, path.join(B, 'home'))
      assert.equal(ctx.tmp, path.join(B, 'tmp'))
    })
  })

  it('realpaths a symlinked HOME and TMPDIR, and drops a trailing slash from TMPDIR', async () => {
    const env = { HOME: path.join(B, 'homelink'), TMPDIR: `${path.join(B, 'tmplink')}/`, TMP: '', TEMP: '' }
    await withChild(env, async (call) => {
      const ctx = await checkInChild(call, cases.map((x) => x[0]), cases.map((x) => x[1]), 'symlinked HOME/TMPDIR')
      assert.equal(ctx.home, path.join(B, 'homelink'))
      assert.equal(ctx.tmp, path.join(B, 'tmplink'))
    })
  })

  it('falls back to $TMP when $TMPDIR is empty, and accepts a trailing slash on HOME', async () => {
    const env = { HOME: `${path.join(B, 'home')}/`, TMPDIR: '', TMP: `${path.join(B, 'tmp')}/`, TEMP: '/nonexistent-temp' }
    await withChild(env, async (call) => {
      const ctx = await checkInChild(call, cases.map((x) => x[0]), cases.map((x) => x[1]), 'TMP fallback')
      assert.equal(ctx.tmp, path.join(B, 'tmp'))
    })
  })

  it('compares a nonexistent HOME lexically and resolves a relative HOME against the cwd', async () => {
    const c = (rel) => path.join(B, rel)
    // HOME does not exist: B/home is an ordinary folder with .git, so it becomes a root.
    await withChild({ HOME: c('nohome'), TMPDIR: c('tmp'), TMP: '', TEMP: '' }, async (call) => {
      await checkInChild(
        call,
        [c('home/a/b'), c('home'), c('nohome/x'), c('tmp/x/y'), c('other/p')],
        [
          L(`${c('home')}/.crew`, c('home/a/b')),
          L(`${c('home')}/.crew`, c('home')),
          // Missing cwd under the missing HOME: both lexical, so they meet and the walk stops.
          L(`${c('nohome/x')}/.crew`, c('nohome/x')),
          L(`${c('tmp/x/y')}/.crew`, c('tmp/x/y')),
          L(`${B}/.crew`, c('other/p')),
        ],
        'nonexistent HOME',
      )
    })
    // HOME relative: path.resolve(os.homedir()) against the process cwd at call time.
    await withChild({ HOME: 'home', TMPDIR: c('tmp'), TMP: '', TEMP: '' }, async (call) => {
      await call({ op: 'chdir', dir: B })
      await checkInChild(
        call,
        [c('home/a/b'), 'home/a/b', 'home/proj/src', c('other/p')],
        [
          L(`${c('home/a/b')}/.crew`, c('home/a/b')),
          L(`${c('home/a/b')}/.crew`, c('home/a/b')),
          L(`${c('home/proj')}/.crew`, c('home/proj/src')),
          L(`${B}/.crew`, c('other/p')),
        ],
        'relative HOME',
      )
      // From elsewhere, HOME=home means another folder: B/home becomes an ordinary repo.
      await call({ op: 'chdir', dir: c('other') })
      await checkInChild(call, [c('home/a/b')], [L(`${c('home')}/.crew`, c('home/a/b'))], 'relative HOME elsewhere')
    })
  })

  it('stops at / when HOME is /', async () => {
    const c = (rel) => path.join(B, rel)
    await withChild({ HOME: '/', TMPDIR: c('tmp'), TMP: '', TEMP: '' }, async (call) => {
      const ghost = '/nonexistent-lockpath-dir/q'
      const cwds = [c('other/p'), ghost]
      const expected = [L(`${B}/.crew`, c('other/p')), L(`${ghost}/.crew`, ghost)]
      if (!['/.crew', '/.pi'].some((p) => fs.existsSync(p))) {
        cwds.push('/')
        expected.push(L('/.crew', '/'))
      }
      await checkInChild(call, cwds, expected, 'HOME=/')
    })
  })

  it('resolves relative cwds (sub/dir, ., empty, .., ./x/../src/) against the process cwd', async () => {
    const c = (rel) => path.join(B, rel)
    await withChild(plainEnv(), async (call) => {
      await call({ op: 'chdir', dir: c('home/proj') })
      const proj = c('home/proj')
      const rel = [
        ['src', L(`${proj}/.crew`, c('home/proj/src'))],
        ['sub/dir', L(`${proj}/.crew`, c('home/proj/sub/dir'))],
        ['.', L(`${proj}/.crew`, proj)],
        ['', L(`${proj}/.crew`, proj)],
        ['./', L(`${proj}/.crew`, proj)],
        ['..', L(`${c('home')}/.crew`, c('home'))],
        ['../', L(`${c('home')}/.crew`, c('home'))],
        ['./x/../src/', L(`${proj}/.crew`, c('home/proj/src'))],
        ['src//.', L(`${proj}/.crew`, c('home/proj/src'))],
        ['../../other/p', L(`${B}/.crew`, c('other/p'))],
      ]
      await checkInChild(call, rel.map((x) => x[0]), rel.map((x) => x[1]), 'relative in home/proj')
      // Each relative form equals its clean absolute spelling in the same process.
      const { results } = await call({ op: 'paths', cwds: rel.map((x) => path.resolve(proj, x[0])) })
      results.forEach((r, i) => assert.deepEqual(r, { ok: rel[i][1] }, `absolute of ${rel[i][0]}`))

      await call({ op: 'chdir', dir: c('tmp/proj/deep') })
      const deep = [
        ['.', L(`${c('tmp/proj')}/.crew`, c('tmp/proj/deep'))],
        ['..', L(`${c('tmp/proj')}/.crew`, c('tmp/proj'))],
        ['../..', L(`${c('tmp')}/.crew`, c('tmp'))],
        ['../../..', L(`${B}/.crew`, B)],
        ['', L(`${c('tmp/proj')}/.crew`, c('tmp/proj/deep'))],
      ]
      await checkInChild(call, deep.map((x) => x[0]), deep.map((x) => x[1]), 'relative in tmp/proj/deep')
    })
  })
})

// ---------------------------------------------------------------------------------------------
// Randomized differential.
// ---------------------------------------------------------------------------------------------

function mulberry32(seed) {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

const BASE_SEED = process.env.LOCK_PATH_SEED ? Number(process.env.LOCK_PATH_SEED) : (Math.random() * 2 ** 31) >>> 0

const NAMES = ['a', 'b', 'c', 'src', 'é', 'sp ace', 'x.y']

/**
 * Builds a random small tree in `T` (extra absolute link targets in `extraTargets`) and returns
 * cwds to query. Every fs failure (e.g. mkdir below a file) is just skipped.
 */
function randomTree(T, seed, extraTargets = []) {
  const rnd = mulberry32(seed)
  const int = (n) => Math.floor(rnd() * n)
  const pick = (arr) => arr[int(arr.length)]
  const realT = fs.realpathSync(T)
  const dirs = [T]
  const files = []
  const links = []
  // Links may lead anywhere (/, the temp dir, other trees): those are only ever read. Every
  // write creates one new name, exclusively (never through an existing link), in a folder
  // whose realpath is inside this tree.
  const canWriteIn = (dir) => {
    try {
      const r = fs.realpathSync(dir)
      return r === realT || r.startsWith(`${realT}/`)
    } catch {
      return false
    }
  }
  const create = (dir, fn) => {
    if (!canWriteIn(dir)) return false
    try {
      fn()
      return true
    } catch {
      return false
    }
  }
  const steps = 4 + int(14)
  // About a third of the trees get no marker of their own (only what links lead to).
  const markerFree = rnd() < 0.35
  for (let s = 0; s < steps; s++) {
    let r = rnd()
    if (markerFree && r >= 0.42 && r < 0.6) r = rnd() * 0.42
    const dir = pick(dirs)
    if (r < 0.42) {
      const p = path.join(dir, pick(NAMES))
      if (create(dir, () => fs.mkdirSync(p))) dirs.push(p)
    } else if (r < 0.52) {
      const p = path.join(dir, pick(MARKERS))
      if (rnd() < 0.5) create(dir, () => fs.mkdirSync(p))
      else if (create(dir, () => fs.writeFileSync(p, '{}', { flag: 'wx' }))) files.push(p)
    } else if (r < 0.6) {
      const p = path.join(dir, pick(['.crew', '.pi']))
      const k = rnd()
      if (k < 0.5) create(dir, () => fs.mkdirSync(p))
      else if (k < 0.6) create(dir, () => fs.writeFileSync(p, '', { flag: 'wx' }))
      else if (k < 0.85) {
        const target = pick([...dirs, ...extraTargets])
        create(dir, () => fs.symlinkSync(rnd() < 0.5 ? target : path.relative(dir, target) || '.', p))
      } else create(dir, () => fs.symlinkSync(path.join(T, `nowhere${s}`), p))
    } else if (r < 0.68) {
      const p = path.join(dir, `f${s}`)
      if (create(dir, () => fs.writeFileSync(p, 'x', { flag: 'wx' }))) files.push(p)
    } else {
      const name = rnd() < 0.6 ? pick([...NAMES, `l${s}`]) : pick(MARKERS)
      const p = path.join(dir, name)
      const k = rnd()
      let target
      if (k < 0.3) target = pick([...dirs, ...extraTargets])
      else if (k < 0.45) target = path.relative(dir, pick(dirs)) || '.'
      else if (k < 0.6) target = pick(['..', '../..', '../../..', '.'])
      else if (k < 0.75) target = path.join(T, `nowhere${s}`)
      else if (k < 0.9 && files.length) target = pick(files)
      else if (k < 0.95) target = name // self loop: ELOOP
      else target = pick(['/', '/nonexistent-lockpath-target'])
      if (create(dir, () => fs.symlinkSync(target, p))) {
        links.push(p)
        try {
          if (fs.statSync(p).isDirectory()) dirs.push(p)
        } catch {}
      }
    }
  }
  const queries = []
  const nq = 6 + int(6)
  for (let q = 0; q < nq; q++) {
    let p = pick([...dirs, ...dirs, ...links, ...files, ...extraTargets, T])
    if (rnd() < 0.3) p = path.join(p, pick(['ghost', 'ghost/deeper', '.git', 'package.json']))
    if (rnd() < 0.25) p = `${p}/${pick(['..', '../..', '../x', '..//ghost/..'])}`
    if (rnd() < 0.15) p = `${p}/${pick(['..', 'ghost'])}`
    if (rnd() < 0.2) {
      const parts = p.split('/')
      const i = 1 + int(Math.max(1, parts.length - 1))
      parts.splice(i, 0, pick(['', '.', 'ghost/..']))
      p = parts.join('/')
    }
    if (rnd() < 0.2) p = `${p}${pick(['/', '//', '/.', '/./'])}`
    if (rnd() < 0.15) p = path.relative(process.cwd(), p) + (rnd() < 0.3 ? '/' : '')
    queries.push(p)
  }
  return queries
}

function describeTree(T) {
  const out = []
  const walk = (d, depth) => {
    if (depth > 5) return
    let entries
    try {
      entries = fs.readdirSync(d, { withFileTypes: true })
    } catch {
      return
    }
    for (const e of entries) {
      const p = path.join(d, e.name)
      if (e.isSymbolicLink()) out.push(`${path.relative(T, p)} -> ${fs.readlinkSync(p)}`)
      else if (e.isDirectory()) {
        out.push(`${path.relative(T, p)}/`)
        walk(p, depth + 1)
      } else out.push(path.relative(T, p))
    }
  }
  walk(T, 0)
  return out.join('\n  ')
}

/** Generator-vocabulary names directly in / and the temp dir (the generator must create none). */
function strayNames() {
  const vocab = new Set([...NAMES, ...MARKERS, '.crew', '.pi', 'nonexistent-lockpath-target'])
  const out = new Set()
  for (const d of ['/', os.tmpdir()]) {
    for (const n of fs.readdirSync(d)) if (vocab.has(n) || /^[fl]\d+$/.test(n)) out.add(path.join(d, n))
  }
  return out
}

function assertNoStrays(before) {
  const added = [...strayNames()].filter((p) => !before.has(p))
  assert.deepEqual(added, [], `the random tree generator wrote outside its trees (seed ${BASE_SEED})`)
}

const shortOutcome = (o) => (o.ok !== undefined ? { ok: o.ok } : { err: { name: o.err.name, code: o.err.code } })

describe('workspaceLockPath: randomized differential against the reference', () => {
  it('matches the reference over 300 random trees', (t) => {
    t.diagnostic(`LOCK_PATH_SEED=${BASE_SEED}`)
    const strays = strayNames()
    const base = root('lockpath-rand')
    const stats = { ok: 0, root: 0, noRoot: 0, pi: 0, crew: 0, crewElsewhere: 0, err: {} }
    for (let i = 0; i < 300; i++) {
      const seed = (BASE_SEED + i) >>> 0
      const T = mkdir(path.join(base, `t${i}`))
      const queries = randomTree(T, seed)
      for (const cwd of queries) {
        let refOut
        try {
          const d = refDetails(cwd)
          refOut = { ok: d.lockPath }
          stats.ok++
          if (d.repoRoot !== undefined) stats.root++
          else stats.noRoot++
          if (d.crewKind === 'pi') stats.pi++
          if (d.crewKind === 'crew') stats.crew++
          if (d.crewKind !== 'lexical' && !d.lockPath.startsWith(`${d.repoRoot ?? d.absCwd}/`)) stats.crewElsewhere++
        } catch (e) {
          refOut = { err: { name: e?.constructor?.name, code: e?.code } }
          stats.err[e?.code] = (stats.err[e?.code] ?? 0) + 1
        }
        const got = outcomeOf(() => lock.workspaceLockPath(cwd))
        if (!util_isDeepStrictEqual(got, refOut)) {
          assert.fail(
            `seed ${seed} (LOCK_PATH_SEED=${BASE_SEED}, tree ${i}): cwd=${JSON.stringify(cwd)}\n` +
              `expected ${JSON.stringify(refOut)}\ngot      ${JSON.stringify(got)}\n` +
              `tree ${T}:\n  ${describeTree(T)}`,
          )
        }
      }
    }
    assertNoStrays(strays)
    t.diagnostic(`stats ${JSON.stringify(stats)}`)
    // The generator must exercise every branch, or the comparison proves little.
    assert.ok(stats.root >= 100, `too few repo roots found: ${JSON.stringify(stats)} seed ${BASE_SEED}`)
    assert.ok(stats.noRoot >= 100, `too few no-root cases: ${JSON.stringify(stats)} seed ${BASE_SEED}`)
    assert.ok(stats.pi >= 10, `too few .pi crew roots: ${JSON.stringify(stats)} seed ${BASE_SEED}`)
    assert.ok(stats.crew >= 30, `too few .crew crew roots: ${JSON.stringify(stats)} seed ${BASE_SEED}`)
    assert.ok(stats.crewElsewhere >= 5, `too few symlinked crew roots: ${JSON.stringify(stats)} seed ${BASE_SEED}`)
    assert.ok(Object.values(stats.err).reduce((a, b) => a + b, 0) >= 5, `too few errors: ${JSON.stringify(stats)} seed ${BASE_SEED}`)
  })

  it('matches the reference with HOME and TMPDIR inside random trees, in a child', async (t) => {
    const strays = strayNames()
    const B = root('lockpath-rand-home')
    const home = mkdir(path.join(B, 'h'))
    const tmp = mkdir(path.join(B, 'tmpx'))
    mkdir(path.join(B, 'free'))
    link(home, path.join(B, 'hl'))
    const rnd = mulberry32(BASE_SEED ^ 0x5eed)
    // Markers at and above the boundaries, randomly.
    for (const dir of [B, home, tmp]) {
      if (rnd() < 0.6) mkdir(path.join(dir, MARKERS[Math.floor(rnd() * MARKERS.length)]))
    }
    const all = []
    for (let i = 0; i < 80; i++) {
      const seed = (BASE_SEED + 100_000 + i) >>> 0
      const parent = [home, tmp, path.join(B, 'free'), path.join(home, 'deep'), path.join(B, 'hl')][i % 5]
      const T = mkdir(path.join(parent, `t${i}`))
      const queries = randomTree(T, seed, [home, tmp, B, path.join(B, 'hl')])
      for (const q of queries) all.push({ q, seed, T })
    }
    assertNoStrays(strays)
    const env = { HOME: path.join(B, 'hl'), TMPDIR: `${tmp}/`, TMP: '', TEMP: '' }
    await withChild(env, async (call) => {
      const { ctx, results } = await call({ op: 'paths', cwds: all.map((x) => x.q) })
      assert.equal(ctx.tmp, tmp)
      all.forEach(({ q, seed, T }, i) => {
        const refOut = outcomeOf(() => refLockPath(q, ctx))
        const got = shortOutcome(results[i])
        if (!util_isDeepStrictEqual(got, refOut)) {
          assert.fail(
            `seed ${seed} (LOCK_PATH_SEED=${BASE_SEED}): cwd=${JSON.stringify(q)} ctx=${JSON.stringify(ctx)}\n` +
              `expected ${JSON.stringify(refOut)}\ngot      ${JSON.stringify(got)}\n` +
              `boundaries: ${describeTree(B).split('\n').filter((l) => !l.includes('/t')).join('\n')}\n` +
              `tree ${T}:\n  ${describeTree(T)}`,
          )
        }
      })
      t.diagnostic(`${all.length} queries in the child`)
    })
  })
})
