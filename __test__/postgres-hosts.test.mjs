// The PostgreSQL backend across "hosts": processes in their own UTS, PID and mount
// namespaces (unshare), each seeing the shared tree bind-mounted at a different path, and
// one in its own network namespace joined to the server by a veth pair (addresses in a
// private /30 made here; traffic never leaves this machine). Needs root and a real server.
import { after, afterEach, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import path from 'node:path'
import { execFileSync, spawnSync } from 'node:child_process'
import { lock, tempDir, startChild, sleep } from './helpers.mjs'
import { startPostgres, unavailable, USER, PASSWORD, DB, holderEvent as event } from './pg-server.mjs'

function why() {
  const pg = unavailable()
  if (pg) return pg
  if (process.getuid() !== 0) return 'needs root (unshare, mounts, network namespaces)'
  if (spawnSync('unshare', ['--uts', '--pid', '--mount', '--fork', 'true']).status !== 0) return 'unshare is not permitted here'
  return undefined
}
const skip = why()
if (skip) console.log(`# SKIPPED: the PostgreSQL multi-host tests: ${skip}`)

const NS = `wlpart${process.pid}`
const VETH_HOST = `wlh${process.pid % 100000}`
const VETH_NS = `wln${process.pid % 100000}`
const SERVER_ADDR = '10.231.77.1'
const HOLDER_ADDR = '10.231.77.2'

const ip = (...args) => execFileSync('ip', args, { stdio: ['ignore', 'pipe', 'pipe'], timeout: 10_000 })

function netnsUp() {
  ip('netns', 'add', NS)
  ip('link', 'add', VETH_HOST, 'type', 'veth', 'peer', 'name', VETH_NS)
  ip('link', 'set', VETH_NS, 'netns', NS)
  ip('addr', 'add', `${SERVER_ADDR}/30`, 'dev', VETH_HOST)
  ip('link', 'set', VETH_HOST, 'up')
  ip('netns', 'exec', NS, 'ip', 'addr', 'add', `${HOLDER_ADDR}/30`, 'dev', VETH_NS)
  ip('netns', 'exec', NS, 'ip', 'link', 'set', VETH_NS, 'up')
  ip('netns', 'exec', NS, 'ip', 'link', 'set', 'lo', 'up')
}

function netnsDown() {
  for (const args of [['link', 'del', VETH_HOST], ['netns', 'del', NS]]) {
    try {
      ip(...args)
    } catch {}
  }
}

/** The pid of a process's only child (the namespaced node under unshare). */
function childOf(pid) {
  const text = fs.readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim()
  return Number(text.split(/\s+/)[0])
}

describe('PostgreSQL backend across hosts', { skip, timeout: 300_000 }, () => {
  let pg
  let shared
  let hostsDir
  before(async () => {
    netnsDown()
    netnsUp()
    pg = await startPostgres({ listen: `127.0.0.1,${SERVER_ADDR}` })
    shared = tempDir('wl-shared')
    hostsDir = tempDir('wl-hosts')
  })
  after(() => {
    pg?.stop()
    netnsDown()
  })
  // Whatever a test started is gone at its end, passed or failed.
  const started = []
  afterEach(async () => {
    for (const p of started.splice(0)) {
      p.kill('SIGKILL')
      await p.exited
    }
  })

  /** A fresh workspace in the shared tree: a repo with crew state and a counter. */
  function sharedWorkspace(name) {
    const ws = path.join(shared, name)
    fs.mkdirSync(path.join(ws, '.git'), { recursive: true })
    fs.mkdirSync(path.join(ws, '.crew', 'state', 'workspace-locks'), { recursive: true })
    fs.writeFileSync(path.join(ws, 'counter'), '0')
    return ws
  }

  /** Runs a fixture on "host" `n`: its own hostname, pids and mounts, the shared tree at its own path. */
  function onHost(n, script, args, { env = {}, netns = false, timeoutMs = 120_000 } = {}) {
    const mnt = path.join(hostsDir, `host${n}`, `mnt-${n}`)
    fs.mkdirSync(mnt, { recursive: true })
    const prefix = [
      ...(netns ? ['ip', 'netns', 'exec', NS] : []),
      'unshare', '--uts', '--pid', '--mount', '--fork', '--kill-child', '--mount-proc',
      'sh', '-c', 'hostname "$0" && mount --bind "$1" "$2" && shift 2 && exec "$@"', `host${n}`, shared, mnt,
    ]
    const argv = args.map((a) => (typeof a === 'function' ? a(mnt) : a))
    const p = startChild(script, argv, { prefix, timeoutMs, env: { WORKSPACE_LOCK_BACKEND: pg.url(), ...env } })
    started.push(p)
    return p
  }

  it('4 hosts × 200 cycles: no overlap, no lost update, tokens increasing in acquisition order', async () => {
    const ws = sharedWorkspace('cycles')
    const logs = [0, 1, 2, 3].map((n) => path.join(hostsDir, `cycles-${n}.log`))
    const hosts = [0, 1, 2, 3].map((n) => onHost(n, 'pg-cycler.mjs', [(m) => path.join(m, 'cycles'), `goal${n}`, '200', logs[n]], { timeoutMs: 200_000 }))
    let overlaps = 0
    for (const h of hosts) {
      overlaps += JSON.parse(await h.nextLine(190_000)).overlaps
      assert.equal((await h.exited).code, 0, h.stderr())
    }
    assert.equal(overlaps, 0)
    assert.equal(fs.readFileSync(path.join(ws, 'counter'), 'utf8'), '800')
    const entries = logs.flatMap((f) =>
      fs.readFileSync(f, 'utf8').trim().split('\n').map((l) => {
        const [token, seen, compromised] = l.split(' ')
        return { token: BigInt(token), seen: Number(seen), compromised }
      }),
    )
    entries.sort((a, b) => a.seen - b.seen)
    assert.deepEqual(entries.map((e) => e.seen), Array.from({ length: 800 }, (_, i) => i))
    for (let i = 1; i < entries.length; i++) assert.ok(entries[i].token > entries[i - 1].token, `token order at ${i}`)
    assert.ok(entries.every((e) => e.compromised === '0'))
    // Four hosts, four lockfile names (their paths differ), one key.
    assert.ok(fs.existsSync(path.join(ws, '.crew', 'state', 'workspace-lock.id')))
  })

  it('a holder SIGKILLed on one host: a waiter on another acquires well under a second later', async () => {
    sharedWorkspace('kill')
    const holder = onHost(0, 'pg-holder.mjs', [(m) => path.join(m, 'kill'), 'victim'])
    await event(holder, 'acquired')
    const waiter = onHost(1, 'pg-holder.mjs', [(m) => path.join(m, 'kill'), 'heir'])
    await event(waiter, 'started')
    await sleep(300) // queued in the server
    const killedAt = Date.now()
    holder.kill('SIGKILL')
    const got = await event(waiter, 'acquired', 5000)
    const took = got.t - killedAt
    assert.ok(took < 500, `took ${took} ms`)
    waiter.kill()
    await Promise.all([holder.exited, waiter.exited])
  })

  it('a holder SIGSTOPped past its lease: the lock passes on; after SIGCONT it reports the loss and its release leaves the new holder alone', async () => {
    sharedWorkspace('stop')
    const holder = onHost(0, 'pg-holder.mjs', [(m) => path.join(m, 'stop'), 'sleeper', '1500'])
    const first = await event(holder, 'acquired')
    const waiter = onHost(1, 'pg-holder.mjs', [(m) => path.join(m, 'stop'), 'heir', '1500'])
    await event(waiter, 'started')
    await sleep(200)
    const inner = childOf(holder.pid)
    process.kill(inner, 'SIGSTOP')
    const stoppedAt = Date.now()
    try {
      const got = await event(waiter, 'acquired', 10_000)
      assert.ok(got.t - stoppedAt >= 1000, `passed on after ${got.t - stoppedAt} ms, within the lease`)
      assert.ok(BigInt(got.token) > BigInt(first.token))
    } finally {
      process.kill(inner, 'SIGCONT')
    }
    const lost = await event(holder, 'lost', 5000)
    assert.equal(lost.code, 'ECOMPROMISED')
    holder.send('release')
    const rel = await event(holder, 'released')
    assert.equal(rel.compromised, true)
    await sleep(200)
    waiter.send('status')
    const st = await event(waiter, 'status')
    assert.equal(st.compromised, false)
    assert.equal(lock.isWorkspaceBusy(path.join(shared, 'stop'), { backend: pg.url() }), 'heir')
    holder.kill()
    waiter.kill()
    await Promise.all([holder.exited, waiter.exited])
  })

  it('pg_ctl restart -m fast: every holder reports the loss, a waiter fails with EBACKENDLOST, tokens keep increasing', async () => {
    sharedWorkspace('restart-a')
    sharedWorkspace('restart-b')
    const a = onHost(0, 'pg-holder.mjs', [(m) => path.join(m, 'restart-a'), 'ha'])
    const b = onHost(1, 'pg-holder.mjs', [(m) => path.join(m, 'restart-b'), 'hb'])
    const ta = BigInt((await event(a, 'acquired')).token)
    const tb = BigInt((await event(b, 'acquired')).token)
    const w = onHost(2, 'pg-holder.mjs', [(m) => path.join(m, 'restart-a'), 'wa'])
    await event(w, 'started')
    await sleep(300)
    pg.restart()
    const [la, lb] = await Promise.all([event(a, 'lost', 10_000), event(b, 'lost', 10_000)])
    assert.match(la.reason, /session lost/)
    assert.match(lb.reason, /session lost/)
    const werr = JSON.parse(await w.nextLine(10_000))
    assert.equal(werr.event, 'error')
    assert.equal(werr.code, 'EBACKENDLOST')
    a.send('release')
    b.send('release')
    await Promise.all([event(a, 'released'), event(b, 'released')])
    const a2 = onHost(3, 'pg-holder.mjs', [(m) => path.join(m, 'restart-a'), 'ha2'])
    const b2 = onHost(3, 'pg-holder.mjs', [(m) => path.join(m, 'restart-b'), 'hb2'])
    assert.ok(BigInt((await event(a2, 'acquired')).token) > ta)
    assert.ok(BigInt((await event(b2, 'acquired')).token) > tb)
    for (const p of [a, b, w, a2, b2]) p.kill()
    await Promise.all([a, b, w, a2, b2].map((p) => p.exited))
  })

  /**
   * The holder on host 0 in its own network namespace (lease `lease`), a waiter on host 1,
   * then the link taken down: the holder reports the loss within its lease and before the
   * lock passes on. The holder's loss event.
   */
  async function partitioned(name, lease, waitMs) {
    sharedWorkspace(name)
    const farUrl = `postgres://${USER}:${PASSWORD}@${SERVER_ADDR}:${pg.port}/${DB}`
    const holder = onHost(0, 'pg-holder.mjs', [(m) => path.join(m, name), 'islander', String(lease)], { netns: true, env: { WORKSPACE_LOCK_BACKEND: farUrl } })
    let waiter
    try {
      await event(holder, 'acquired')
      waiter = onHost(1, 'pg-holder.mjs', [(m) => path.join(m, name), 'mainland', String(lease)])
      await event(waiter, 'started')
      await sleep(300)
      ip('link', 'set', VETH_HOST, 'down')
      const downAt = Date.now()
      const lost = await event(holder, 'lost', waitMs)
      const got = await event(waiter, 'acquired', waitMs)
      assert.ok(lost.t < got.t, `lost at ${lost.t - downAt} ms, lock passed on at ${got.t - downAt} ms`)
      assert.ok(lost.t - downAt <= lease, `reported ${lost.t - downAt} ms after the link went down`)
      return lost
    } finally {
      ip('link', 'set', VETH_HOST, 'up')
      for (const p of [holder, waiter]) p?.kill()
      await Promise.all([holder.exited, waiter?.exited])
    }
  }

  it('a partition: the holder reports the loss at its deadline, before any other host gets the lock', async () => {
    const lost = await partitioned('part', 2000, 10_000)
    assert.match(lost.reason, /lease expired/)
  })

  it('a partition at the default lease (10 s, longer than the server\'s keep-alive probing): the holder still reports the loss before any other host gets the lock', async () => {
    // The server's keep-alives (2 s idle, 3 probes) once ended a partitioned holder's
    // session ~5 s after its last packet, before a 10 s lease ran out: the lock passed on at
    // 4.6 s, the holder reported the loss at 7.1 s.
    await partitioned('part10', 10_000, 20_000)
  })
})
