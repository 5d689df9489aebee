// The PostgreSQL backend (README "Beyond one machine") against a real server started here
// (pg-server.mjs): the API over the backend, fencing tokens, the lockfile record, abort,
// contention with file-only processes, 100 waiters in 4 processes, errors with codes, the
// CLI, and the cost of loading the package without a backend.
import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import os from 'node:os'
import net from 'node:net'
import path from 'node:path'
import { execFile, execFileSync } from 'node:child_process'
import { lock, workspace, startChild, fixturesDir, sleep, require } from './helpers.mjs'
import { startPostgres, unavailable, advisoryLocks, freePort, holderEvent, USER, PASSWORD, DB } from './pg-server.mjs'

const skip = unavailable()
if (skip) console.log(`# SKIPPED: the PostgreSQL backend tests: ${skip}`)

const BIN = path.join(fixturesDir, '..', '..', 'bin', 'workspace-lock.js')

function tool(args, env, timeoutMs = 15_000) {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { timeout: timeoutMs, killSignal: 'SIGKILL', env: { ...process.env, NO_COLOR: '1', ...env } }, (err, stdout, stderr) => {
      resolve({ code: err ? (err.code ?? null) : 0, stdout, stderr })
    })
  })
}

async function rejectsWithin(promise, ms) {
  const started = performance.now()
  const err = await promise.then(
    () => assert.fail('resolved'),
    (e) => e,
  )
  const took = performance.now() - started
  assert.ok(took < ms, `took ${took} ms`)
  return err
}

describe('PostgreSQL backend', { skip, timeout: 180_000 }, () => {
  let pg
  let url
  const opts = () => ({ backend: url })
  before(async () => {
    pg = await startPostgres()
    url = pg.url()
  })
  after(() => pg?.stop())
  /** Options for a new login role of its own (with `settings` set for it): no grants yet. */
  const role = (name, password, settings = []) => {
    pg.psql([`CREATE ROLE ${name} LOGIN PASSWORD '${password}'`, ...settings.map((v) => `ALTER ROLE ${name} SET ${v}`)].join('; '))
    return { backend: url.replace(`${USER}:${PASSWORD}@`, `${name}:${password}@`) }
  }
  /** What the README asks for on tables an administrator made. */
  const grantTables = (name) =>
    pg.psql(`GRANT SELECT, INSERT, UPDATE ON workspace_lock_tokens, workspace_lock_epochs TO ${name}; GRANT USAGE ON SEQUENCE workspace_lock_token_seq TO ${name}`)

  it('acquires and releases over the server; tokens strictly increase; release is idempotent', async () => {
    const cwd = workspace()
    const h1 = await lock.acquireWorkspaceLock(cwd, 'g1', opts())
    assert.equal(typeof h1.fencingToken, 'bigint')
    assert.deepEqual(Object.keys(h1), ['cwd', 'goalId', 'lockPath', 'startTime', 'release'])
    assert.equal(h1.lockPath, lock.workspaceLockPath(cwd))
    assert.equal(h1.compromised, false)
    assert.equal(lock.isWorkspaceBusy(cwd, opts()), 'g1')
    const key = JSON.parse(fs.readFileSync(h1.lockPath, 'utf8')).backendKey
    assert.ok(key)
    h1.release()
    h1.release()
    assert.equal(h1.compromised, false)
    assert.equal(lock.isWorkspaceBusy(cwd, opts()), undefined)
    const h2 = await lock.acquireWorkspaceLock(cwd, 'g2', opts())
    assert.ok(h2.fencingToken > h1.fencingToken)
    h2.release()
    // The file backend's handles have no token.
    const f = await lock.acquireWorkspaceLock(cwd, 'gf', { backend: 'file' })
    assert.equal(f.fencingToken, undefined)
    f.release()
  })

  it('a role that may not create tables works on tables an administrator made: SELECT, INSERT, UPDATE and USAGE on the sequence are enough (README)', async () => {
    const cwd = workspace()
    const owner = await lock.acquireWorkspaceLock(cwd, 'owner', opts())
    owner.release()
    const plain = role('wl_plain', 'plain-pw')
    // Without its grants: an error with a code, promptly, and nothing held or written.
    const err = await rejectsWithin(lock.acquireWorkspaceLock(cwd, 'plain', plain), 10_000)
    assert.equal(err.code, 'EBACKENDSERVER')
    assert.match(err.message, /permission denied for table workspace_lock_/)
    assert.ok(!err.message.includes('plain-pw'), err.message)
    assert.equal(fs.existsSync(lock.workspaceLockPath(cwd)), false)
    grantTables('wl_plain')
    const h = await lock.acquireWorkspaceLock(cwd, 'plain', plain)
    assert.ok(h.fencingToken > owner.fencingToken)
    assert.equal(lock.isWorkspaceBusy(cwd, opts()), 'plain')
    assert.equal(lock.inspectWorkspaceLock(cwd, plain).backend.holder.goalId, 'plain')
    await assert.rejects(lock.acquireWorkspaceLock(cwd, 'other', { ...plain, failOnWorkspaceBusy: true }), /held by goalId=plain /)
    h.release()
    assert.equal(lock.isWorkspaceBusy(cwd, plain), undefined)
  })

  it('backendLeaseMs from 1000 to 32767000 (Linux caps TCP_KEEPIDLE at 32767 s): outside, a RangeError before any server work; at the top, the server takes the keep-alive idle', async () => {
    const cwd = workspace()
    for (const bad of [999, 32_767_001, 2 ** 31 - 1, 'soon', NaN]) {
      await assert.rejects(lock.acquireWorkspaceLock(cwd, 'g', { ...opts(), backendLeaseMs: bad }), (e) => e instanceof RangeError && /opts.backendLeaseMs must be a number of milliseconds between 1000 and 32767000/.test(e.message), String(bad))
    }
    assert.equal(fs.existsSync(lock.workspaceLockPath(cwd)), false)
    const logFile = path.join(pg.dir, 'log')
    const logBefore = fs.readFileSync(logFile, 'utf8').length
    const h = await lock.acquireWorkspaceLock(cwd, 'long', { ...opts(), backendLeaseMs: 32_767_000 })
    await sleep(200)
    assert.equal(h.compromised, false)
    h.release()
    const logged = fs.readFileSync(logFile, 'utf8').slice(logBefore)
    assert.doesNotMatch(logged, /setsockopt\(TCP_KEEPIDLE\) failed/)
  })

  it('a role with statement_timeout and lock_timeout (as production roles often have) still waits in the queue as long as it takes', async () => {
    const cwd = workspace()
    const first = await lock.acquireWorkspaceLock(cwd, 'first', opts())
    const strict = role('wl_strict', 'strict-pw', ["statement_timeout = '300ms'", "lock_timeout = '300ms'"])
    grantTables('wl_strict')
    const waiting = lock.acquireWorkspaceLock(cwd, 'strict', strict)
    let settled = false
    waiting.then(() => (settled = true), () => (settled = true))
    await sleep(1200)
    assert.equal(settled, false, 'still waiting after 4 × its timeouts')
    first.release()
    const h = await waiting
    assert.ok(h.fencingToken > first.fencingToken)
    assert.equal(lock.isWorkspaceBusy(cwd, opts()), 'strict')
    h.release()
  })

  it('on one host, a backend holder stopped past its lease keeps its lockfile until it runs again: the next one, granted by the server, waits for it, then holds', async () => {
    const cwd = workspace()
    const env = { WORKSPACE_LOCK_BACKEND: url }
    const holder = startChild('pg-holder.mjs', [cwd, 'sleeper', '1000'], { env, timeoutMs: 60_000 })
    const first = await holderEvent(holder, 'acquired')
    process.kill(holder.pid, 'SIGSTOP')
    const stoppedAt = Date.now()
    const heir = startChild('pg-holder.mjs', [cwd, 'heir', '1000'], { env, timeoutMs: 60_000 })
    try {
      await holderEvent(heir, 'started')
      // Past the lease the server grants the heir its lock; the stopped holder's kernel lock
      // still proves it alive, so its lockfile stands and the heir waits for it.
      await sleep(3000)
      assert.equal(JSON.parse(fs.readFileSync(lock.workspaceLockPath(cwd), 'utf8')).goalId, 'sleeper')
      assert.equal(lock.inspectWorkspaceLock(cwd, { backend: url }).backend.holder.goalId, 'heir', 'the server already granted the heir')
    } finally {
      process.kill(holder.pid, 'SIGCONT')
    }
    const resumedAt = Date.now()
    const lost = await holderEvent(holder, 'lost')
    assert.match(lost.reason, /lease expired|session lost/)
    const got = await holderEvent(heir, 'acquired')
    assert.ok(got.t >= resumedAt - 50, `the heir held ${got.t - stoppedAt} ms after the stop, ${got.t - resumedAt} ms after the resume`)
    assert.ok(got.t - resumedAt < 2000, `the heir held ${got.t - resumedAt} ms after the resume`)
    assert.ok(BigInt(got.token) > BigInt(first.token))
    holder.send('release')
    assert.equal((await holderEvent(holder, 'released')).compromised, true)
    assert.equal(lock.isWorkspaceBusy(cwd, { backend: url }), 'heir')
    heir.send('release')
    await holderEvent(heir, 'released')
    holder.send('exit')
    heir.send('exit')
    await Promise.all([holder.exited, heir.exited])
  })

  it('writes the usual lockfile: the original five keys first, then the backend and the token', async () => {
    const cwd = workspace()
    const h = await lock.acquireWorkspaceLock(cwd, 'goal_rec', opts())
    const text = fs.readFileSync(lock.workspaceLockPath(cwd), 'utf8')
    const rec = JSON.parse(text)
    assert.deepEqual(Object.keys(rec).slice(0, 5), ['pid', 'startTime', 'heartbeat', 'goalId', 'acquiredAt'])
    assert.equal(rec.goalId, 'goal_rec')
    assert.equal(rec.backend, 'postgres')
    assert.equal(rec.fencingToken, String(h.fencingToken))
    assert.ok(!text.includes(PASSWORD))
    assert.equal(rec.backendTarget, `postgres://${USER}@127.0.0.1:${pg.port}/${DB}`)
    // Inspect: the file's judgement and the server's view.
    const st = lock.inspectWorkspaceLock(cwd, opts())
    assert.equal(st.state, 'held')
    assert.equal(st.backend.state, 'held')
    assert.equal(st.backend.holder.goalId, 'goal_rec')
    assert.equal(st.backend.holder.fencingToken, h.fencingToken)
    const all = lock.inspectWorkspaceLocks(path.dirname(h.lockPath), opts())
    assert.equal(all.length, 1)
    assert.equal(all[0].backend.holder.fencingToken, h.fencingToken)
    h.release()
    assert.equal(fs.existsSync(h.lockPath), false)
    assert.equal(lock.inspectWorkspaceLock(cwd, opts()).backend.state, 'free')
  })

  it('failOnWorkspaceBusy rejects with the file lock message, naming the holder on the server', async () => {
    const cwd = workspace()
    const holder = startChild('pg-holder.mjs', [cwd, 'goal_far'], { env: { WORKSPACE_LOCK_BACKEND: url } })
    try {
      await holder.nextLine()
      const got = JSON.parse(await holder.nextLine())
      assert.equal(got.event, 'acquired')
      const err = await rejectsWithin(lock.acquireWorkspaceLock(cwd, 'g', { ...opts(), failOnWorkspaceBusy: true }), 2000)
      assert.equal(err.message, `workspace busy: cwd=${cwd} held by goalId=goal_far (pid=${holder.pid})`)
    } finally {
      holder.kill()
      await holder.exited
    }
  })

  it('abort while waiting rejects at once and leaves nothing in pg_locks', async () => {
    const cwd = workspace()
    const h = await lock.acquireWorkspaceLock(cwd, 'holder', opts())
    const key = lock.inspectWorkspaceLock(cwd, opts()).backend.key
    const controller = new AbortController()
    const waiting = lock.acquireWorkspaceLock(cwd, 'waiter', { ...opts(), signal: controller.signal })
    await sleep(200)
    const numeric = pgKeyNumber(key)
    assert.equal(advisoryLocks(pg, numeric), '2') // the holder's and the waiter's
    controller.abort()
    const err = await rejectsWithin(waiting, 1000)
    assert.equal(err.message, 'workspace lock acquisition aborted')
    assert.equal(advisoryLocks(pg, numeric), '1')
    h.release()
    await sleep(100)
    assert.equal(advisoryLocks(pg, numeric), '0')
    // Already aborted: the original's message, no server work.
    const err2 = await rejectsWithin(lock.acquireWorkspaceLock(cwd, 'late', { ...opts(), signal: AbortSignal.abort() }), 500)
    assert.equal(err2.message, `workspace lock acquisition aborted for goal late (cwd=${cwd})`)
  })

  it('100 waiters in 4 processes all acquire in turn, each with its own token', async () => {
    const cwd = workspace()
    const procs = [0, 1, 2, 3].map((i) => startChild('pg-waiters.mjs', [cwd, `p${i}`, '25'], { env: { WORKSPACE_LOCK_BACKEND: url }, timeoutMs: 120_000 }))
    const results = []
    for (const p of procs) {
      const line = JSON.parse(await p.nextLine(110_000))
      results.push(line)
      await p.exited
    }
    const tokens = results.flatMap((r) => r.tokens.map(BigInt))
    assert.equal(tokens.length, 100)
    assert.equal(new Set(tokens.map(String)).size, 100)
    assert.equal(results.reduce((n, r) => n + r.overlaps, 0), 0)
    assert.equal(fs.readFileSync(path.join(cwd, 'counter'), 'utf8'), '100')
  })

  it('a backend holder makes the workspace busy for file-only processes, and a file-only holder for backend ones', async () => {
    const cwd = workspace()
    const h = await lock.acquireWorkspaceLock(cwd, 'pg_holder', opts())
    assert.equal(lock.isWorkspaceBusy(cwd, { backend: 'file' }), 'pg_holder')
    const err = await rejectsWithin(lock.acquireWorkspaceLock(cwd, 'file_goal', { backend: 'file', failOnWorkspaceBusy: true }), 1000)
    assert.match(err.message, /^workspace busy: .* held by goalId=pg_holder /)
    h.release()
    const f = await lock.acquireWorkspaceLock(cwd, 'file_holder', { backend: 'file' })
    assert.equal(lock.isWorkspaceBusy(cwd, opts()), 'file_holder')
    const key = pgKeyNumber(lock.inspectWorkspaceLock(cwd, opts()).backend.key)
    const err2 = await rejectsWithin(lock.acquireWorkspaceLock(cwd, 'pg_goal', { ...opts(), failOnWorkspaceBusy: true }), 1000)
    assert.equal(err2.message, `workspace busy: cwd=${cwd} held by goalId=file_holder (pid=${process.pid})`)
    assert.equal(advisoryLocks(pg, key), '0')
    // A waiting backend acquisition gets it when the file holder releases.
    const waiting = lock.acquireWorkspaceLock(cwd, 'pg_goal', opts())
    await sleep(100)
    f.release()
    const h2 = await waiting
    assert.equal(lock.isWorkspaceBusy(cwd, { backend: 'file' }), 'pg_goal')
    h2.release()
  })

  it('one workspace reached by two paths has one key; another workspace another', async () => {
    const cwd = workspace()
    fs.mkdirSync(path.join(cwd, '.git'))
    const sub = path.join(cwd, 'sub')
    fs.mkdirSync(sub)
    const alias = `${cwd}-alias`
    fs.symlinkSync(cwd, alias)
    try {
      const h = await lock.acquireWorkspaceLock(sub, 'one', opts())
      assert.equal(lock.isWorkspaceBusy(path.join(alias, 'sub'), opts()), 'one')
      assert.equal(lock.isWorkspaceBusy(cwd, opts()), undefined)
      const other = workspace()
      fs.mkdirSync(path.join(other, 'sub'))
      assert.equal(lock.isWorkspaceBusy(path.join(other, 'sub'), opts()), undefined)
      // The user's override: one key for whatever cwd.
      const k1 = await lock.acquireWorkspaceLock(other, 'k1', { ...opts(), backendKey: 'team-ws' })
      assert.equal(lock.isWorkspaceBusy(workspace(), { ...opts(), backendKey: 'team-ws' }), 'k1')
      k1.release()
      h.release()
    } finally {
      fs.rmSync(alias, { force: true })
    }
  })

  it('the CLI: status shows the backend and token, run exports WORKSPACE_LOCK_TOKEN', async () => {
    const cwd = workspace()
    const env = { WORKSPACE_LOCK_BACKEND: url }
    const run = await tool(['run', cwd, '--goal', 'cli_goal', '--', process.execPath, '-e', 'console.log("TOKEN=" + process.env.WORKSPACE_LOCK_TOKEN)'], env)
    assert.equal(run.code, 0, run.stderr)
    const token = /TOKEN=(\d+)/.exec(run.stdout)?.[1]
    assert.ok(token, run.stdout)
    const h = await lock.acquireWorkspaceLock(cwd, 'st_goal', opts())
    assert.ok(h.fencingToken > BigInt(token))
    const st = await tool(['status', cwd], env)
    assert.equal(st.code, 1, st.stderr)
    assert.match(st.stdout, new RegExp(`token +${h.fencingToken}`))
    assert.match(st.stdout, /backend +postgres:\/\/wl_user@/)
    assert.ok(!st.stdout.includes(PASSWORD))
    const js = JSON.parse((await tool(['status', cwd, '--json'], env)).stdout)
    assert.equal(js.backend.holder.fencingToken, String(h.fencingToken))
    const list = await tool(['list', path.dirname(h.lockPath)], env)
    assert.equal(list.code, 0, list.stderr)
    assert.match(list.stdout, /st_goal/)
    const reclaim = await tool(['reclaim', path.dirname(h.lockPath), '--dry-run'], env)
    assert.equal(reclaim.code, 0, reclaim.stderr)
    h.release()
    const st2 = await tool(['status', cwd], env)
    assert.equal(st2.code, 0, st2.stdout)
    const wait = await tool(['wait', cwd, '--timeout', '5'], env)
    assert.equal(wait.code, 0, wait.stderr)
    const bad = await tool(['status', cwd], { WORKSPACE_LOCK_BACKEND: `postgres://${USER}:${PASSWORD}@127.0.0.1:${pg.port}/nosuchdb` })
    assert.equal(bad.code, 3)
    assert.match(bad.stderr, /EBACKENDDB|does not exist/)
    assert.ok(!bad.stderr.includes(PASSWORD))
  })

  it('the CLI waiting behind a file-only holder names that holder, not itself (the server has granted it its lock by then)', async () => {
    const cwd = workspace()
    const fileOnly = await lock.acquireWorkspaceLock(cwd, 'file_only', { backend: 'file' })
    try {
      const r = await tool(['run', cwd, '--goal', 'cli_waiter', '--timeout', '1.5', '--', 'true'], { WORKSPACE_LOCK_BACKEND: url })
      assert.equal(r.code, 1, r.stderr)
      assert.match(r.stderr, new RegExp(`timed out after 1\\.5 s waiting for goal file_only \\(pid ${process.pid}\\)`))
      assert.doesNotMatch(r.stderr, /cli_waiter/)
    } finally {
      fileOnly.release()
    }
  })

  it('bad URL, wrong password, missing database, nobody listening: an error with a code, promptly, no fallback', async () => {
    const cwd = workspace()
    const port = await freePort()
    const cases = [
      ['postgres://u:p@host:notaport/db', 'EBACKENDURL'],
      ['mysql://u@h/db', 'EBACKENDURL'],
      [`postgres://${USER}:wrong-${PASSWORD}@127.0.0.1:${pg.port}/${DB}`, 'EBACKENDAUTH'],
      [`postgres://${USER}:${PASSWORD}@127.0.0.1:${pg.port}/missing_db`, 'EBACKENDDB'],
      [`postgres://${USER}:${PASSWORD}@127.0.0.1:${port}/${DB}`, 'EBACKENDCONNECT'],
    ]
    for (const [bad, code] of cases) {
      const err = await rejectsWithin(lock.acquireWorkspaceLock(cwd, 'g', { backend: bad }), 6000)
      assert.equal(err.code, code, `${bad}: ${err.message}`)
      assert.ok(!err.message.includes(PASSWORD) && !err.message.includes(':p@'), err.message)
      assert.throws(() => lock.isWorkspaceBusy(cwd, { backend: bad }), (e) => e.code === code)
      assert.equal(fs.existsSync(lock.workspaceLockPath(cwd)), false, 'no fallback to the file lock')
    }
  })

  it('a session terminated by an administrator: the holder reports the loss at once, and never takes the lock again by itself', async () => {
    const cwd = workspace()
    let lostErr
    const h = await lock.acquireWorkspaceLock(cwd, 'victim', { ...opts(), onCompromised: (e) => (lostErr = e) })
    const key = pgKeyNumber(lock.inspectWorkspaceLock(cwd, opts()).backend.key)
    const u = BigInt.asUintN(64, BigInt(key))
    const killedAt = Date.now()
    assert.equal(pg.psql(`select count(pg_terminate_backend(pid)) from pg_locks where locktype = 'advisory' and granted and classid = ${u >> 32n} and objid = ${u & 0xffffffffn}`), '1')
    while (!lostErr && Date.now() - killedAt < 3000) await sleep(10)
    assert.ok(lostErr, 'onCompromised called')
    assert.ok(Date.now() - killedAt < 1000)
    assert.equal(lostErr.code, 'ECOMPROMISED')
    assert.match(lostErr.message, /^workspace lock compromised for goal victim \(cwd=.*\): session lost: /)
    assert.equal(h.compromised, true)
    // Its lockfile went with it; the server holds nothing for it.
    assert.equal(fs.existsSync(h.lockPath), false)
    await sleep(100)
    assert.equal(advisoryLocks(pg, key), '0')
    assert.equal(lock.isWorkspaceBusy(cwd, opts()), undefined)
    h.release()
    assert.equal(h.compromised, true)
    const next = await lock.acquireWorkspaceLock(cwd, 'next', opts())
    next.release()
  })

  it('loading the package without a backend loads nothing of it', () => {
    const out = execFileSync(process.execPath, [
      '-e',
      `const l = require(${JSON.stringify(path.join(fixturesDir, '..', '..', 'index.js'))});
       const fs = require('fs');
       l.isWorkspaceBusy(process.cwd());
       const threads = fs.readdirSync('/proc/self/task').map((t) => fs.readFileSync('/proc/self/task/' + t + '/comm', 'utf8').trim());
       console.log(JSON.stringify({ backend: Object.keys(require.cache).some((f) => f.endsWith('backend.js')), threads }))`,
    ], { env: { ...process.env, WORKSPACE_LOCK_BACKEND: '' } })
    const r = JSON.parse(out)
    assert.equal(r.backend, false)
    assert.ok(!r.threads.includes('workspace-lock-'), r.threads.join(','))
  })
})

/** The advisory lock key of a key text, as the package derives it. */
function pgKeyNumber(text) {
  const binding = require('../binding.js')
  return JSON.parse(binding.pgKey('', text)).key
}

describe('PostgreSQL backend over TLS (sslmode=require, rustls)', { skip, timeout: 120_000 }, () => {
  let pg
  let certs
  before(async () => {
    certs = fs.mkdtempSync(path.join(os.tmpdir(), 'wl-pg-tls-'))
    const sh = (cmd) => execFileSync('sh', ['-c', cmd], { cwd: certs, stdio: ['ignore', 'pipe', 'pipe'], timeout: 60_000 })
    sh('openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=wl-test-ca -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign')
    sh('openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=127.0.0.1')
    fs.writeFileSync(path.join(certs, 'ext'), 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n')
    sh('openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile ext')
    fs.chmodSync(certs, 0o755)
    fs.chmodSync(path.join(certs, 'server.key'), 0o600)
    if (process.getuid() === 0) execFileSync('chown', ['postgres', path.join(certs, 'server.key'), path.join(certs, 'server.pem')])
    pg = await startPostgres({ conf: ['ssl=on', `ssl_cert_file=${certs}/server.pem`, `ssl_key_file=${certs}/server.key`] })
  })
  after(() => {
    pg?.stop()
    if (certs) fs.rmSync(certs, { recursive: true, force: true })
  })

  it('holds the lock over a verified TLS session; an unknown CA is refused with a code', async () => {
    const cwd = workspace()
    const url = pg.url(`?sslmode=require&sslrootcert=${encodeURIComponent(path.join(certs, 'ca.pem'))}&application_name=wl-tls-test`)
    const h = await lock.acquireWorkspaceLock(cwd, 'tls_goal', { backend: url })
    assert.equal(typeof h.fencingToken, 'bigint')
    assert.equal(pg.psql("select count(*) from pg_stat_ssl s join pg_stat_activity a using (pid) where a.application_name = 'wl-tls-test' and s.ssl"), '1')
    assert.equal(lock.isWorkspaceBusy(cwd, { backend: url }), 'tls_goal')
    h.release()
    // The Mozilla roots do not know this CA: refused, promptly, never sent in clear.
    const err = await rejectsWithin(lock.acquireWorkspaceLock(cwd, 'g', { backend: pg.url('?sslmode=require') }), 6000)
    assert.equal(err.code, 'EBACKENDCONNECT')
    assert.match(err.message, /certificate|UnknownIssuer/i)
    // A CA file that does not exist: the URL's fault.
    const bad = await rejectsWithin(lock.acquireWorkspaceLock(cwd, 'g', { backend: pg.url('?sslmode=require&sslrootcert=/nonexistent.pem') }), 2000)
    assert.equal(bad.code, 'EBACKENDURL')
  })

  it('a server that accepts only encrypted sessions, given a URL without sslmode: refused, and the error says to add sslmode=require', async () => {
    const hba = path.join(pg.dir, 'data', 'pg_hba.conf')
    fs.writeFileSync(hba, 'hostnossl all all 0.0.0.0/0 reject\n' + fs.readFileSync(hba, 'utf8'))
    pg.psql('select pg_reload_conf()')
    await sleep(300)
    const cwd = workspace()
    const err = await rejectsWithin(lock.acquireWorkspaceLock(cwd, 'g', { backend: pg.url() }), 6000)
    assert.equal(err.code, 'EBACKENDAUTH')
    assert.match(err.message, /no encryption \(28000\); this package uses TLS only when the URL asks for it: add sslmode=require$/)
    assert.ok(!err.message.includes(PASSWORD), err.message)
    assert.throws(() => lock.isWorkspaceBusy(cwd, { backend: pg.url() }), /add sslmode=require$/)
    // And with it, verified against the test CA: held over TLS.
    const h = await lock.acquireWorkspaceLock(cwd, 'g', { backend: pg.url(`?sslmode=require&sslrootcert=${encodeURIComponent(path.join(certs, 'ca.pem'))}`) })
    h.release()
  })
})

describe('PostgreSQL backend against a server that never answers', () => {
  it('the synchronous calls give up after backendTimeoutMs (EBACKENDTIMEOUT), acquire after connect_timeout (EBACKENDCONNECT)', async () => {
    // A listening socket that accepts (the kernel completes the handshake) and says nothing.
    const silent = net.createServer(() => {})
    await new Promise((r) => silent.listen(0, '127.0.0.1', r))
    const url = `postgres://u:${PASSWORD}@127.0.0.1:${silent.address().port}/db?connect_timeout=1`
    try {
      const cwd = workspace()
      const t0 = performance.now()
      assert.throws(() => lock.isWorkspaceBusy(cwd, { backend: url, backendTimeoutMs: 300 }), (e) => e.code === 'EBACKENDTIMEOUT' && !e.message.includes(PASSWORD))
      assert.throws(() => lock.inspectWorkspaceLock(cwd, { backend: url, backendTimeoutMs: 300 }), (e) => e.code === 'EBACKENDTIMEOUT')
      const took = performance.now() - t0
      assert.ok(took >= 500 && took < 2000, `took ${took} ms`)
      const err = await rejectsWithin(lock.acquireWorkspaceLock(cwd, 'g', { backend: url }), 3000)
      assert.equal(err.code, 'EBACKENDCONNECT')
      assert.ok(!err.message.includes(PASSWORD))
    } finally {
      silent.close()
    }
  })
})

describe('PostgreSQL backend in a build without it', () => {
  it('a backend URL with an addon built without the "postgres" feature: EBACKENDUNAVAILABLE, no fallback', async () => {
    const binding = require('../binding.js')
    const without = Object.fromEntries(Object.entries(binding).filter(([name]) => !name.startsWith('pg')))
    const backend = require('../backend.js').makeBackend(without, () => assert.fail('no handle'))
    const cwd = workspace()
    const err = await backend.acquire('postgres://u@127.0.0.1:1/db', cwd, 'g', {}).then(() => assert.fail('resolved'), (e) => e)
    assert.equal(err.code, 'EBACKENDUNAVAILABLE')
    assert.throws(() => backend.isBusy('postgres://u@127.0.0.1:1/db', cwd, {}), (e) => e.code === 'EBACKENDUNAVAILABLE')
    assert.throws(() => backend.inspect('postgres://u@127.0.0.1:1/db', cwd, {}), (e) => e.code === 'EBACKENDUNAVAILABLE')
    assert.equal(fs.existsSync(lock.workspaceLockPath(cwd)), false)
  })
})
