// `npm run bench` (second part): the PostgreSQL backend against the file backend and against
// what Node users do today (the `pg` package, pg_advisory_lock on a dedicated connection),
// on a real local server started here (loopback TCP), stopped at the end. Prints a table
// and one JSON line; asserts nothing.
//
//   node benchmark/pg.mjs [--quick] [--baseline=DIR]
//     --baseline=DIR   also measure load time and RSS of the package in DIR (a build of
//                      main), for "before/after" in the same run
import { spawn, execFileSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { startPostgres, unavailable } from '../__test__/pg-server.mjs'

const here = path.dirname(fileURLToPath(import.meta.url))
const repo = path.dirname(here)
const argv = process.argv.slice(2)
const QUICK = argv.includes('--quick')
const baseline = argv.find((a) => a.startsWith('--baseline='))?.slice(11)
const log = (...a) => process.stderr.write(a.join(' ') + '\n')
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))
const q = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b)
  return s.length ? s[Math.min(s.length - 1, Math.floor(p * s.length))] : undefined
}
const r3 = (x) => (x === undefined ? x : Math.round(x * 1000) / 1000)

const why = unavailable()
if (why) {
  console.log(`PostgreSQL benchmark SKIPPED: ${why}`)
  process.exit(0)
}

const killAll = new Set()
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'wl-pgbench-'))
const deadline = setTimeout(() => {
  log('benchmark: 8 minutes passed, stopping')
  process.exit(2)
}, 8 * 60_000)
deadline.unref()

const pg = await startPostgres()
const url = pg.url()
process.on('exit', () => {
  for (const c of killAll) c.kill('SIGKILL')
  pg.stop()
  fs.rmSync(tmp, { recursive: true, force: true })
})

function workspace(label) {
  const ws = fs.mkdtempSync(path.join(tmp, `${label}-`))
  fs.mkdirSync(path.join(ws, '.crew', 'state', 'workspace-locks'), { recursive: true })
  return ws
}

/** A child running benchmark/pg-peer.mjs for `kind` (file, ours-pg, pg-peer), line protocol. */
function peer(kind, ws) {
  const child = spawn(process.execPath, [path.join(here, 'pg-peer.mjs'), kind, ws, url], { stdio: ['pipe', 'pipe', 'inherit'] })
  killAll.add(child)
  child.on('exit', () => killAll.delete(child))
  const lines = []
  const waiters = []
  let buf = ''
  child.stdout.on('data', (d) => {
    buf += d
    let i
    while ((i = buf.indexOf('\n')) >= 0) {
      lines.push(buf.slice(0, i))
      buf = buf.slice(i + 1)
      waiters.splice(0).forEach((w) => w())
    }
  })
  const next = async (prefix, ms = 20_000) => {
    const until = Date.now() + ms
    for (;;) {
      const idx = lines.findIndex((l) => l.startsWith(prefix))
      if (idx >= 0) return lines.splice(0, idx + 1).pop()
      if (Date.now() > until || child.exitCode !== null) throw new Error(`${kind}: no "${prefix}"`)
      await new Promise((r) => {
        waiters.push(r)
        setTimeout(r, 50)
      })
    }
  }
  return { child, send: (l) => child.stdin.write(l + '\n'), next, exited: new Promise((r) => child.on('exit', r)) }
}

const KINDS = ['file', 'ours-pg', 'pg-peer']
const results = Object.fromEntries(KINDS.map((k) => [k, {}]))
// The kinds run interleaved, in rounds (rotated order), and each figure is the median of the
// rounds' figures (tails and maxima over all samples): this VM's speed drifts by phases, and
// kinds run one after another would each get a different phase.
const ROUNDS = QUICK ? 2 : 5
const rotated = (r) => KINDS.map((_, i) => KINDS[(i + r) % KINDS.length])
const median = (xs) => q(xs, 0.5)
const perRound = Object.fromEntries(KINDS.map((k) => [k, { cycle: [], handoff: [], recovery: [], contend: [], least: [] }]))
const pooled = Object.fromEntries(KINDS.map((k) => [k, { cycle: [], handoff: [], recovery: [] }]))

// 1. Uncontended acquire + release, in one process per kind (kept across rounds).
{
  const ps = Object.fromEntries(KINDS.map((k) => [k, peer(k, workspace('cycle'))]))
  await Promise.all(Object.values(ps).map((p) => p.next('ready')))
  for (let r = 0; r < ROUNDS; r++) {
    for (const kind of rotated(r)) {
      ps[kind].send(`cycle ${QUICK ? 200 : 500}`)
      const lat = JSON.parse((await ps[kind].next('cycle', 120_000)).slice(6))
      perRound[kind].cycle.push(q(lat, 0.5))
      pooled[kind].cycle.push(...lat)
    }
  }
  for (const p of Object.values(ps)) p.send('exit')
  await Promise.all(Object.values(ps).map((p) => p.exited))
}

// 2. Handoff: A holds, B waits; A releases; B's acquisition minus A's release instant.
{
  const pairs = {}
  for (const kind of KINDS) {
    const ws = workspace('handoff')
    pairs[kind] = [peer(kind, ws), peer(kind, ws)]
  }
  await Promise.all(Object.values(pairs).flat().map((p) => p.next('ready')))
  for (let r = 0; r < ROUNDS; r++) {
    for (const kind of rotated(r)) {
      const xs = []
      let [holder, waiter] = pairs[kind]
      holder.send('acquire')
      await holder.next('acquired')
      for (let i = 0; i < (QUICK ? 10 : 24); i++) {
        waiter.send('acquire')
        await waiter.next('waiting')
        await sleep(5 + Math.random() * 5)
        holder.send('release 0')
        const rel = Number((await holder.next('released')).split(' ')[1])
        const acq = Number((await waiter.next('acquired')).split(' ')[1])
        xs.push(acq - rel)
        ;[holder, waiter] = [waiter, holder]
      }
      holder.send('release 0')
      await holder.next('released')
      perRound[kind].handoff.push(q(xs, 0.5))
      pooled[kind].handoff.push(...xs)
    }
  }
  for (const p of Object.values(pairs).flat()) p.send('exit')
  await Promise.all(Object.values(pairs).flat().map((p) => p.exited))
}

// 3. Recovery: a waiter already waiting; the holder SIGKILLed; the waiter's acquisition
// minus the kill instant.
{
  const waiters = {}
  for (const kind of KINDS) {
    const ws = workspace('recovery')
    waiters[kind] = { ws, p: peer(kind, ws) }
  }
  await Promise.all(KINDS.map((k) => waiters[k].p.next('ready')))
  for (let r = 0; r < ROUNDS; r++) {
    for (const kind of rotated(r)) {
      const { ws, p: waiter } = waiters[kind]
      const xs = []
      for (let i = 0; i < (QUICK ? 2 : 4); i++) {
        const holder = peer(kind, ws)
        await holder.next('ready')
        holder.send('acquire')
        await holder.next('acquired')
        waiter.send('acquire')
        await waiter.next('waiting')
        await sleep(30 + Math.random() * 20)
        const killedAt = performance.timeOrigin + performance.now()
        holder.child.kill('SIGKILL')
        const acq = Number((await waiter.next('acquired', 70_000)).split(' ')[1])
        xs.push(acq - killedAt)
        await holder.exited
        waiter.send('release 0')
        await waiter.next('released')
      }
      perRound[kind].recovery.push(q(xs, 0.5))
      pooled[kind].recovery.push(...xs)
    }
  }
  for (const kind of KINDS) waiters[kind].p.send('exit')
  await Promise.all(KINDS.map((k) => waiters[k].p.exited))
}

// 4. Throughput: 4 processes acquire/release in a loop for a few seconds.
for (let r = 0; r < ROUNDS; r++) {
  for (const kind of rotated(r)) {
    const ws = workspace('contend')
    const ps = [0, 1, 2, 3].map(() => peer(kind, ws))
    await Promise.all(ps.map((p) => p.next('ready')))
    const start = performance.timeOrigin + performance.now() + 300
    const end = start + (QUICK ? 1000 : 2000)
    ps.forEach((p) => p.send(`contend ${start} ${end}`))
    const counts = await Promise.all(ps.map(async (p) => Number((await p.next('done', 60_000)).split(' ')[1])))
    const total = counts.reduce((a, b) => a + b, 0)
    perRound[kind].contend.push(total / ((end - start) / 1000))
    perRound[kind].least.push(Math.min(...counts) / Math.max(1, total))
    ps.forEach((p) => p.send('exit'))
    await Promise.all(ps.map((p) => p.exited))
  }
}

for (const kind of KINDS) {
  const [R, P] = [perRound[kind], pooled[kind]]
  Object.assign(results[kind], {
    cycleP50Ms: r3(median(R.cycle)),
    cycleP99Ms: r3(q(P.cycle, 0.99)),
    handoffP50Ms: r3(median(R.handoff)),
    handoffP99Ms: r3(q(P.handoff, 0.99)),
    recoveryP50Ms: r3(median(R.recovery)),
    recoveryMaxMs: r3(Math.max(...P.recovery)),
    contend4PerSec: Math.round(median(R.contend)),
    contend4LeastShare: r3(median(R.least)),
    rounds: { cycleP50Ms: R.cycle.map(r3), handoffP50Ms: R.handoff.map(r3), recoveryP50Ms: R.recovery.map(r3), contend4PerSec: R.contend.map(Math.round) },
  })
}

// 5. Load time and RSS with no backend: this package, and the baseline build if given.
function loadCost(dir) {
  const samples = []
  for (let i = 0; i < (QUICK ? 5 : 15); i++) {
    const out = execFileSync(process.execPath, [
      '-e',
      `const st = () => Object.fromEntries(require('fs').readFileSync('/proc/self/status', 'utf8').split('\\n').filter((l) => /^Rss(Anon|File)/.test(l)).map((l) => [l.split(':')[0], parseInt(l.split(':')[1])]));
       const s0 = st(); const r0 = process.memoryUsage.rss(); const t0 = performance.now();
       const l = require(${JSON.stringify(path.join(dir, 'index.js'))});
       const ms = performance.now() - t0; l.isWorkspaceBusy(${JSON.stringify(tmp)});
       const s1 = st();
       console.log(JSON.stringify({ ms, rss: process.memoryUsage.rss() - r0, rssTotal: process.memoryUsage.rss(), anonKiB: s1.RssAnon - s0.RssAnon, fileKiB: s1.RssFile - s0.RssFile }))`,
    ], { env: { ...process.env, WORKSPACE_LOCK_BACKEND: '' } })
    samples.push(JSON.parse(out))
  }
  return {
    loadMsP50: r3(q(samples.map((s) => s.ms), 0.5)),
    rssAddedMiBP50: r3(q(samples.map((s) => s.rss), 0.5) / 2 ** 20),
    rssTotalMiBP50: r3(q(samples.map((s) => s.rssTotal), 0.5) / 2 ** 20),
    // Private (anonymous) pages, and clean file-backed pages shared with every process
    // mapping the same addon.
    rssAnonAddedKiBP50: q(samples.map((s) => s.anonKiB), 0.5),
    rssFileAddedKiBP50: q(samples.map((s) => s.fileKiB), 0.5),
  }
}
const load = { thisBuild: loadCost(repo) }
if (baseline) load.baseline = loadCost(path.resolve(baseline))
const nodeFile = fs.readdirSync(repo).find((f) => f.endsWith('.node'))
if (nodeFile) load.addonBytes = fs.statSync(path.join(repo, nodeFile)).size
if (baseline) {
  const base = fs.readdirSync(baseline).find((f) => f.endsWith('.node'))
  if (base) load.baselineAddonBytes = fs.statSync(path.join(baseline, base)).size
}

// The table.
const rows = [
  ['acquire+release p50 (ms)', 'cycleP50Ms'],
  ['acquire+release p99 (ms)', 'cycleP99Ms'],
  ['handoff p50 (ms)', 'handoffP50Ms'],
  ['handoff p99 (ms)', 'handoffP99Ms'],
  ['recovery after SIGKILL p50 (ms)', 'recoveryP50Ms'],
  ['recovery after SIGKILL max (ms)', 'recoveryMaxMs'],
  ['4 processes, cycles/s', 'contend4PerSec'],
  ['4 processes, least share', 'contend4LeastShare'],
]
const label = { file: 'file backend', 'ours-pg': 'postgres backend', 'pg-peer': 'pg + pg_advisory_lock' }
const pad = (s, n) => String(s).padEnd(n)
console.log(`\nPostgreSQL backend (server: local PostgreSQL ${pg.psql('show server_version')}, loopback TCP; ${ROUNDS} interleaved rounds: medians of the rounds' medians, p99 and max over all samples)`)
console.log(pad('', 34) + KINDS.map((k) => pad(label[k], 24)).join(''))
for (const [name, key] of rows) console.log(pad(name, 34) + KINDS.map((k) => pad(results[k][key] ?? '-', 24)).join(''))
console.log('\nLoad with no backend (fresh process, p50):')
for (const [k, v] of Object.entries(load)) console.log(`  ${k}: ${JSON.stringify(v)}`)
console.log(JSON.stringify({ pgBench: results, load, quick: QUICK }))
process.exit(0)
