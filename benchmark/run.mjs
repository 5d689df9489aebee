#!/usr/bin/env node
// `npm run bench`: pi-crew-workspace-lock against proper-lockfile, lockfile and a syscall
// floor written in Rust (benchmark/floor), side by side in one run. See docs/benchmarks.md.
//
//   node benchmark/run.mjs                 measure, print the table and one JSON line
//   node benchmark/run.mjs --write-docs    ... and regenerate docs/benchmarks.md and
//                                          docs/benchmark-latency.svg from this run
//   node benchmark/run.mjs --from=FILE [--write-docs]
//                                          no measuring: report a saved JSON line (FILE)
//   --json-out=FILE   also save the JSON line to FILE
//   --quick           fewer rounds and trials (a smoke test, ~1 min; not for the docs)
//   --only=a,b        only these workloads (cycle, busy, handoff, recovery, contention,
//                     afterDeletions, reclaim, load); for working on one of them
//
// Every workload runs in fresh directories under os.tmpdir() (removed at the end), every
// child process is killed after a deadline, and the whole run is killed after 6 minutes.
import { spawn, spawnSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import readline from 'node:readline'
import { fileURLToPath } from 'node:url'
import { createRequire } from 'node:module'
import { LIBS, wallMs } from './libs.mjs'
import { printTable, writeDocs } from './report.mjs'

const here = path.dirname(fileURLToPath(import.meta.url))
const repo = path.dirname(here)
const require = createRequire(import.meta.url)

const argv = process.argv.slice(2)
const flag = (name) => argv.includes(`--${name}`)
const option = (name) => argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3)
const QUICK = flag('quick')

const OURS = 'pi-crew-workspace-lock'
const NODE_LIBS = [OURS, 'proper-lockfile', 'lockfile']
const FLOOR = 'floor'
const ALL = [...NODE_LIBS, FLOOR]

const CONFIG = {
  cycle: { rounds: QUICK ? 2 : 5, cycles: QUICK ? 200 : 500, warmup: 100 },
  afterDeletions: { cycles: 200, warmup: 50, deleted: 10000 },
  busy: { rounds: QUICK ? 1 : 3, iterations: 2000 },
  reclaim: { rounds: QUICK ? 1 : 3, sizes: [1000, 10000], live: 10000, staleMs: 60000 },
  handoff: { trials: QUICK ? 10 : 50, holdMs: [20, 120] },
  recovery: { fastTrials: QUICK ? 3 : 8, slowTrials: QUICK ? 1 : 4, capMs: 15000, slowHoldMs: [200, 5200] },
  contention: { procs: [2, 4, 8], seconds: QUICK ? 1 : 2, rounds: QUICK ? 1 : 3 },
  load: { rounds: QUICK ? 2 : 5 },
}

// ---------------------------------------------------------------------------------------
// Processes and directories, always cleaned up

const live = new Set()
let ROOT
function cleanup() {
  for (const child of live) child.kill('SIGKILL')
  live.clear()
  if (ROOT) fs.rmSync(ROOT, { recursive: true, force: true })
  ROOT = undefined
}
process.on('exit', cleanup)
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => {
    cleanup()
    process.exit(130)
  })
}

const log = (...a) => process.stderr.write(a.join(' ') + '\n')
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))
const rand = ([lo, hi]) => lo + Math.random() * (hi - lo)

let seq = 0
/** A fresh workspace: `<ws>/.git` (so the package puts its lock in `<ws>/.crew`), the
 *  package's lock directory, and `<ws>/locks` for the floor. */
function workspace(label) {
  const ws = path.join(ROOT, `${label}-${seq++}`)
  fs.mkdirSync(path.join(ws, '.git'), { recursive: true })
  fs.mkdirSync(path.join(ws, '.crew', 'state', 'workspace-locks'), { recursive: true })
  fs.mkdirSync(path.join(ws, 'locks'))
  return ws
}
const floorLock = (ws) => path.join(ws, 'locks', 'workspace.lock')
/** A workspace inside `dir` (not spread to another block group: `dir` is no TOPDIR). */
function workspaceIn(dir, label) {
  const ws = path.join(dir, `${label}-${seq++}`)
  fs.mkdirSync(path.join(ws, '.git'), { recursive: true })
  fs.mkdirSync(path.join(ws, '.crew', 'state', 'workspace-locks'), { recursive: true })
  fs.mkdirSync(path.join(ws, 'locks'))
  return ws
}

/** Runs a command to completion, killed after `timeoutMs`; resolves to its stdout. */
function run(cmd, args, { timeoutMs = 60000 } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] })
    live.add(child)
    let out = ''
    let err = ''
    child.stdout.on('data', (d) => (out += d))
    child.stderr.on('data', (d) => (err += d))
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
    child.on('exit', (code, signal) => {
      clearTimeout(timer)
      live.delete(child)
      if (code === 0) resolve(out)
      else reject(new Error(`${path.basename(cmd)} ${args.join(' ').slice(0, 200)}: ${signal ?? code}\n${err}`))
    })
  })
}
const lastJson = (out) => JSON.parse(out.trim().split('\n').pop())

let FLOOR_BIN
const micro = async (spec, timeoutMs = 60000) =>
  lastJson(await run(process.execPath, [path.join(here, 'micro.mjs'), JSON.stringify(spec)], { timeoutMs }))
const floor = async (args, timeoutMs = 60000) => lastJson(await run(FLOOR_BIN, args.map(String), { timeoutMs }))

/** A long-lived lock process speaking the line protocol of peer.mjs / the floor's `peer`. */
class Peer {
  constructor(lib, ws, maxMs) {
    const [cmd, args] =
      lib === FLOOR ? [FLOOR_BIN, ['peer', floorLock(ws)]] : [process.execPath, [path.join(here, 'peer.mjs'), lib, ws]]
    this.child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] })
    live.add(this.child)
    this.lines = []
    this.waiting = undefined
    this.stderr = ''
    this.child.stderr.on('data', (d) => (this.stderr += d))
    this.child.stdin.on('error', () => {})
    readline.createInterface({ input: this.child.stdout }).on('line', (line) => {
      this.lines.push(line)
      this.waiting?.()
    })
    const timer = setTimeout(() => this.child.kill('SIGKILL'), maxMs)
    this.exited = new Promise((resolve) =>
      this.child.on('exit', (code, signal) => {
        this.exitedAt = wallMs()
        clearTimeout(timer)
        live.delete(this.child)
        this.waiting?.()
        resolve({ code, signal })
      }),
    )
  }
  send(line) {
    this.child.stdin.write(line + '\n')
  }
  /** The next line, which must start with `word`; its rest as a string. */
  async next(word, timeoutMs = 20000) {
    const deadline = Date.now() + timeoutMs
    while (this.lines.length === 0) {
      if (this.exitedAt !== undefined) throw new Error(`peer exited waiting for "${word}": ${this.stderr}`)
      const left = deadline - Date.now()
      if (left <= 0) throw Object.assign(new Error(`timeout waiting for "${word}"`), { timeout: true })
      await new Promise((resolve) => {
        const t = setTimeout(resolve, left)
        this.waiting = () => {
          clearTimeout(t)
          resolve()
        }
      })
      this.waiting = undefined
    }
    const line = this.lines.shift()
    if (!line.startsWith(word)) throw new Error(`expected "${word}", got "${line}" ${this.stderr}`)
    return line.slice(word.length).trim()
  }
  kill() {
    this.child.kill('SIGKILL')
  }
  async close() {
    this.send('exit')
    const t = setTimeout(() => this.kill(), 3000)
    await this.exited
    clearTimeout(t)
  }
}

// ---------------------------------------------------------------------------------------
// Statistics

const sorted = (xs) => [...xs].sort((a, b) => a - b)
const median = (xs) => {
  const s = sorted(xs)
  const n = s.length
  return n === 0 ? undefined : n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2
}
/** Nearest-rank quantile (p99 of 50 samples is their maximum). */
const quantile = (xs, p) => {
  const s = sorted(xs)
  return s[Math.max(0, Math.ceil(p * s.length) - 1)]
}
const r3 = (x) => (x === undefined || x === null ? x : Math.round(x * 1000) / 1000)
/** Rotates the order of `items` by `round`: each library runs first, second, ... in turn. */
const rotate = (items, round) => items.map((_, i) => items[(i + round) % items.length])

// ---------------------------------------------------------------------------------------
// The machine and the floor

function machine() {
  const cpu = fs.readFileSync('/proc/cpuinfo', 'utf8').match(/^model name\s*:\s*(.*)$/m)?.[1] ?? os.cpus()[0]?.model
  const tmp = fs.realpathSync(os.tmpdir())
  let mount = { fs: 'unknown', options: '', point: '', device: '' }
  try {
    for (const line of fs.readFileSync('/proc/mounts', 'utf8').split('\n')) {
      const [device, point, type, options] = line.split(' ')
      if (!point) continue
      const p = point.replace(/\\040/g, ' ')
      if ((tmp === p || tmp.startsWith(p.endsWith('/') ? p : p + '/')) && p.length >= mount.point.length)
        mount = { fs: type, options, point: p, device }
    }
  } catch {}
  // ext4 keeps a journal through jbd2, which lists the journalled devices.
  let journal
  if (mount.fs === 'ext4' && mount.device) {
    try {
      const dev = path.basename(mount.device)
      journal = fs.readdirSync('/proc/fs/jbd2').some((d) => d.startsWith(dev + '-'))
    } catch {
      journal = false
    }
  }
  return {
    cpu,
    cores: os.cpus().length,
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    node: process.version,
    kernel: `${os.type()} ${os.release()}`,
    tmpdir: tmp,
    fs: mount.fs,
    mountPoint: mount.point,
    mountOptions: mount.options,
    fsJournal: journal,
  }
}

function buildFloor() {
  const targetDir = process.env.CARGO_TARGET_DIR ? path.resolve(repo, process.env.CARGO_TARGET_DIR) : path.join(repo, 'target')
  const bin = path.join(targetDir, 'release', 'workspace-lock-floor')
  const limit = { timeout: 600000, killSignal: 'SIGKILL' }
  let r = spawnSync('cargo', ['build', '--release', '--quiet', '-p', 'workspace-lock-floor'], { cwd: repo, encoding: 'utf8', ...limit })
  if (r.status !== 0 && /did not match any packages|believes it's in a workspace/.test(r.stderr)) {
    // Not (yet) a member of the root workspace: build a copy as its own workspace, with the
    // root's lockfile and release profile, into the same target directory.
    const copy = path.join(os.tmpdir(), 'workspace-lock-floor-build')
    fs.rmSync(copy, { recursive: true, force: true })
    fs.mkdirSync(copy)
    fs.cpSync(path.join(here, 'floor', 'src'), path.join(copy, 'src'), { recursive: true })
    const manifest = fs.readFileSync(path.join(here, 'floor', 'Cargo.toml'), 'utf8')
    const profile = fs.readFileSync(path.join(repo, 'Cargo.toml'), 'utf8').match(/\[profile\.release\][^[]*/)?.[0] ?? ''
    fs.writeFileSync(path.join(copy, 'Cargo.toml'), `${manifest}\n[workspace]\n\n${profile}`)
    fs.copyFileSync(path.join(repo, 'Cargo.lock'), path.join(copy, 'Cargo.lock'))
    r = spawnSync('cargo', ['build', '--release', '--quiet'], {
      cwd: copy,
      encoding: 'utf8',
      env: { ...process.env, CARGO_TARGET_DIR: targetDir },
      ...limit,
    })
    fs.rmSync(copy, { recursive: true, force: true })
  }
  if (r.status !== 0) throw new Error(`building benchmark/floor failed:\n${r.stderr}`)
  return bin
}

// ---------------------------------------------------------------------------------------
// 1. Uncontended acquire + release

async function workloadCycle() {
  const { rounds, cycles, warmup } = CONFIG.cycle
  const variants = [...NODE_LIBS, FLOOR, 'floor-link']
  const perRound = Object.fromEntries(variants.map((v) => [v, []]))
  for (let r = 0; r < rounds; r++) {
    for (const v of rotate(variants, r)) {
      const ws = workspace(`cycle-${v}`)
      let res
      if (v === FLOOR) res = await floor(['cycle', floorLock(ws), cycles, warmup])
      else if (v === 'floor-link') res = await floor(['cycle-link', floorLock(ws), cycles, warmup])
      else res = await micro({ job: 'cycle', lib: v, ws, cycles, warmup })
      perRound[v].push(res.median_ns / 1000)
      fs.rmSync(ws, { recursive: true, force: true })
    }
    log(`  cycle round ${r + 1}/${rounds}: ` + variants.map((v) => `${v} ${perRound[v].at(-1).toFixed(1)}`).join(', '))
  }
  const syscalls = {}
  for (const v of variants) syscalls[v] = await syscallsPer(v, 'cycle')
  return Object.fromEntries(
    variants.map((v) => [
      v,
      { median_us: r3(median(perRound[v])), rounds_us: perRound[v].map(r3), cycles_per_round: cycles, syscalls_per_cycle: syscalls[v] },
    ]),
  )
}

// Syscalls per operation, counted by `strace -f -c` (threads included) as the difference
// between a run of N1 and one of N2 operations, so that start-up cancels out.

let STRACE = spawnSync('strace', ['-V']).status === 0

/** All syscalls of `cmd` and its threads and children (strace -f -c), or undefined. */
async function straceCount(cmd) {
  if (!STRACE) return undefined
  const out = path.join(ROOT, `strace-${seq++}.txt`)
  try {
    await run('strace', ['-f', '-c', '-o', out, '--', ...cmd], { timeoutMs: 60000 })
  } catch {
    STRACE = false // not permitted here (ptrace), or not working: no counts
    return undefined
  }
  // The "calls" column, found by the header's layout (older straces print no usecs/call
  // in the total line).
  const lines = fs.readFileSync(out, 'utf8').split('\n')
  fs.rmSync(out, { force: true })
  const header = lines.find((l) => l.includes('calls')) ?? ''
  const total = lines.find((l) => /\stotal\s*$/.test(l)) ?? ''
  const from = header.indexOf('usecs/call') + 'usecs/call'.length
  return Number(total.slice(from, header.indexOf('calls') + 'calls'.length))
}
async function syscallsPer(variant, job) {
  if (!STRACE) return undefined
  const counts = []
  const [n1, n2] = [100, 300]
  for (const n of [n1, n2]) {
    const ws = workspace(`strace-${variant}`)
    let cmd
    if (variant === FLOOR || variant === 'floor-link') {
      const sub = job === 'busy' ? ['busy', floorLock(ws), n] : [variant === FLOOR ? 'cycle' : 'cycle-link', floorLock(ws), n, 0]
      cmd = [FLOOR_BIN, ...sub.map(String)]
    } else {
      const spec = job === 'busy' ? { job, lib: variant, ws, iterations: n } : { job, lib: variant, ws, cycles: n, warmup: 0 }
      cmd = [process.execPath, path.join(here, 'micro.mjs'), JSON.stringify(spec)]
    }
    const count = await straceCount(cmd)
    if (count === undefined) return undefined
    counts.push(count)
    fs.rmSync(ws, { recursive: true, force: true })
  }
  // busy runs 100 extra warm-up checks in both runs: they cancel out too.
  return r3((counts[1] - counts[0]) / (n2 - n1))
}

// 1b. The same right after 10,000 deletions in the same directory tree: on ext4 without a
// journal, creating an inode then gets much slower for a while (see docs/benchmarks.md).
// Two rounds in two fresh block groups, the second in reverse order.

async function workloadAfterDeletions() {
  const { cycles, warmup, deleted } = CONFIG.afterDeletions
  const variants = [FLOOR, 'floor-link', ...NODE_LIBS]
  const perRound = Object.fromEntries(variants.map((v) => [v, []]))
  const probes = []
  for (let r = 0; r < 2; r++) {
    const tree = path.join(ROOT, `after-deletions-${seq++}`)
    fs.mkdirSync(tree)
    const spaces = Object.fromEntries(variants.map((v) => [v, workspaceIn(tree, v)]))
    const churn = path.join(tree, 'churn')
    const probeLock = floorLock(workspaceIn(tree, 'probe'))
    const probe = async () => (await floor(['cycle', probeLock, 20, 2])).median_ns / 1000
    const quiet = await probe()
    writeLocks(churn, deleted, (goalId) => ({ goalId }))
    fs.rmSync(churn, { recursive: true })
    // The slowdown sets in a moment after the deletions (at the next writeback, it seems):
    // wait for it, at most 6 s, so that every library runs inside it.
    const t0 = Date.now()
    let now = await probe()
    while (now < 5 * quiet && Date.now() - t0 < 6000) {
      await sleep(200)
      now = await probe()
    }
    probes.push({ quiet_us: r3(quiet), slow_us: r3(now), waited_ms: Date.now() - t0 })
    for (const v of r === 0 ? variants : [...variants].reverse()) {
      const ws = spaces[v]
      let res
      if (v === FLOOR) res = await floor(['cycle', floorLock(ws), cycles, warmup])
      else if (v === 'floor-link') res = await floor(['cycle-link', floorLock(ws), cycles, warmup])
      else res = await micro({ job: 'cycle', lib: v, ws, cycles, warmup })
      perRound[v].push(res.median_ns / 1000)
    }
    log(`  after ${deleted} deletions, round ${r + 1}/2 (floor probe ${probes.at(-1).quiet_us} -> ${probes.at(-1).slow_us} µs after ${probes.at(-1).waited_ms} ms): ` + variants.map((v) => `${v} ${perRound[v].at(-1).toFixed(1)}`).join(', '))
    fs.rmSync(tree, { recursive: true, force: true })
  }
  return {
    ...Object.fromEntries(variants.map((v) => [v, { median_us: r3(median(perRound[v])), rounds_us: perRound[v].map(r3), deleted }])),
    probes,
  }
}

// 2. Busy check, free and held (held by another live process)

async function workloadBusy() {
  const { rounds, iterations } = CONFIG.busy
  const free = Object.fromEntries(ALL.map((v) => [v, []]))
  const held = Object.fromEntries(ALL.map((v) => [v, []]))
  const pathCost = []
  for (let r = 0; r < rounds; r++) {
    for (const lib of rotate(ALL, r)) {
      const ws = workspace(`busy-${lib}`)
      const check = (expect) =>
        (lib === FLOOR ? floor(['busy', floorLock(ws), iterations]) : micro({ job: 'busy', lib, ws, iterations })).then((res) => {
          if (res.held !== expect) throw new Error(`${lib}: busy check said ${res.held}, expected ${expect}`)
          return res
        })
      free[lib].push((await check(false)).median_ns / 1000)
      const holder = new Peer(lib, ws, 30000)
      await holder.next('ready')
      holder.send('acquire')
      await holder.next('waiting')
      await holder.next('acquired')
      held[lib].push((await check(true)).median_ns / 1000)
      holder.send('release 0')
      await holder.next('released')
      await holder.close()
      if (lib === OURS) pathCost.push((await micro({ job: 'path', ws, iterations })).median_ns / 1000)
      fs.rmSync(ws, { recursive: true, force: true })
    }
  }
  const pack = (m) => Object.fromEntries(ALL.map((v) => [v, { median_us: r3(median(m[v])), rounds_us: m[v].map(r3) }]))
  const result = { free: pack(free), held: pack(held), ours_path_us: r3(median(pathCost)) }
  for (const v of ALL) result.free[v].syscalls_per_check = await syscallsPer(v, 'busy')
  return result
}

// 3. reclaimStaleLocks over stale and live lockfiles (this package and the floor only)

function writeLocks(dir, n, record) {
  fs.mkdirSync(dir, { recursive: true })
  for (let i = 0; i < n; i++) {
    const goalId = `goal-${i}`
    fs.writeFileSync(path.join(dir, `${String(i).padStart(64, '0')}.lock`), JSON.stringify(record(goalId)))
  }
}

function deadPid() {
  for (;;) {
    const pid = spawnSync('true').pid
    if (pid && !fs.existsSync(`/proc/${pid}`)) return pid
  }
}

async function workloadReclaim() {
  const { rounds, sizes, live: liveCount, staleMs } = CONFIG.reclaim
  const ours = require('../index.js')
  const out = {}
  const dead = deadPid()
  const stale = (goalId) => {
    const heartbeat = Date.now() - 2 * 3600 * 1000
    return { pid: dead, startTime: 12345, heartbeat, goalId, acquiredAt: new Date(heartbeat).toISOString() }
  }
  for (const n of sizes) {
    const res = { [OURS]: [], [FLOOR]: [] }
    for (let r = 0; r < rounds; r++) {
      for (const impl of rotate([OURS, FLOOR], r)) {
        const dir = path.join(workspace(`reclaim-${n}-${impl}`), 'locks', 'many')
        writeLocks(dir, n, stale)
        let elapsedNs
        let reclaimed
        if (impl === OURS) {
          const m = await micro({ job: 'reclaim', dir, repeat: 1 })
          elapsedNs = m.runs_ns[0]
          reclaimed = m.reclaimed
        } else {
          const m = await floor(['reclaim', dir, staleMs])
          elapsedNs = m.elapsed_ns
          reclaimed = m.reclaimed
        }
        if (reclaimed !== n) throw new Error(`${impl} reclaimed ${reclaimed} of ${n} stale locks`)
        res[impl].push(elapsedNs / 1000 / n)
        fs.rmSync(path.dirname(path.dirname(dir)), { recursive: true, force: true })
      }
    }
    out[`stale${n}`] = Object.fromEntries(
      Object.entries(res).map(([k, v]) => [k, { us_per_file: r3(median(v)), rounds_us_per_file: v.map(r3), files: n }]),
    )
    log(`  reclaim ${n} stale: ours ${median(res[OURS]).toFixed(2)} µs/file, floor ${median(res[FLOOR]).toFixed(2)}`)
  }
  // Live: this (runner) process, with its real start time and a fresh heartbeat.
  const startTime = ours.defaultStartTimeResolver(process.pid)
  const dir = path.join(workspace('reclaim-live'), 'locks', 'many')
  writeLocks(dir, liveCount, (goalId) => {
    const heartbeat = Date.now()
    return { pid: process.pid, startTime, heartbeat, goalId, acquiredAt: new Date(heartbeat).toISOString() }
  })
  const res = { [OURS]: [], [FLOOR]: [] }
  for (let r = 0; r < rounds; r++) {
    for (const impl of rotate([OURS, FLOOR], r)) {
      let elapsedNs
      let reclaimed
      if (impl === OURS) {
        const m = await micro({ job: 'reclaim', dir, repeat: 1 })
        ;[elapsedNs, reclaimed] = [m.runs_ns[0], m.reclaimed]
      } else {
        const m = await floor(['reclaim', dir, staleMs])
        ;[elapsedNs, reclaimed] = [m.elapsed_ns, m.reclaimed]
      }
      if (reclaimed !== 0) throw new Error(`${impl} reclaimed ${reclaimed} live locks`)
      res[impl].push(elapsedNs / 1000 / liveCount)
    }
  }
  out[`live${liveCount}`] = Object.fromEntries(
    Object.entries(res).map(([k, v]) => [k, { us_per_file: r3(median(v)), rounds_us_per_file: v.map(r3), files: liveCount }]),
  )
  log(`  reclaim ${liveCount} live: ours ${median(res[OURS]).toFixed(2)} µs/file, floor ${median(res[FLOOR]).toFixed(2)}`)
  fs.rmSync(path.dirname(path.dirname(dir)), { recursive: true, force: true })
  // Syscalls per file: one sweep of 1,000 files against one of an empty directory.
  if (STRACE) {
    const liveRecord = (goalId) => ({ pid: process.pid, startTime, heartbeat: Date.now(), goalId, acquiredAt: new Date().toISOString() })
    for (const [key, record] of [[`stale${sizes[0]}`, stale], [`live${liveCount}`, liveRecord]]) {
      for (const impl of [OURS, FLOOR]) {
        const counts = []
        for (const n of [0, 1000]) {
          const d = path.join(workspace(`strace-reclaim`), 'locks', 'many')
          writeLocks(d, n, record)
          const cmd =
            impl === OURS
              ? [process.execPath, path.join(here, 'micro.mjs'), JSON.stringify({ job: 'reclaim', dir: d, repeat: 1 })]
              : [FLOOR_BIN, 'reclaim', d, String(staleMs)]
          counts.push(await straceCount(cmd))
          fs.rmSync(path.dirname(path.dirname(d)), { recursive: true, force: true })
        }
        if (counts.every((c) => Number.isFinite(c))) out[key][impl].syscalls_per_file = r3((counts[1] - counts[0]) / 1000)
      }
    }
  }
  return out
}

// 4. Handoff latency: A holds, B waits; A releases at a random moment; B's acquisition

async function workloadHandoff() {
  const { trials, holdMs } = CONFIG.handoff
  const out = {}
  for (const lib of ALL) {
    const ws = workspace(`handoff-${lib}`)
    const peers = [new Peer(lib, ws, 120000), new Peer(lib, ws, 120000)]
    await Promise.all(peers.map((p) => p.next('ready')))
    peers[0].send('acquire')
    await peers[0].next('waiting')
    await peers[0].next('acquired')
    const samples = []
    let failures = 0
    for (let i = 0; i < trials; i++) {
      const [holder, waiter] = i % 2 === 0 ? peers : [peers[1], peers[0]]
      waiter.send('acquire')
      await waiter.next('waiting')
      holder.send(`release ${rand(holdMs).toFixed(1)}`)
      const released = Number(await holder.next('released'))
      try {
        const acquired = Number(await waiter.next('acquired', 10000))
        samples.push(acquired - released)
      } catch (e) {
        if (!e.timeout) throw e
        failures++
        break // the pair is out of step: stop this library's trials
      }
    }
    await Promise.all(peers.map((p) => p.close()))
    fs.rmSync(ws, { recursive: true, force: true })
    out[lib] = {
      p50_ms: r3(quantile(samples, 0.5)),
      p99_ms: r3(quantile(samples, 0.99)),
      min_ms: r3(Math.min(...samples)),
      mean_ms: r3(samples.reduce((a, b) => a + b, 0) / samples.length),
      trials: samples.length,
      failures,
      samples_ms: samples.map(r3),
    }
    log(`  handoff ${lib}: p50 ${out[lib].p50_ms} ms, p99 ${out[lib].p99_ms} ms (${samples.length} trials)`)
  }
  return out
}

// 5. Recovery after SIGKILL of the holder, measured by a waiter already waiting

async function recoveryTrial(lib, ws, waiter, holdMs, capMs) {
  const holder = new Peer(lib, ws, capMs + holdMs[1] + 30000)
  await holder.next('ready')
  holder.send('acquire')
  await holder.next('waiting')
  await holder.next('acquired')
  waiter.send('acquire')
  await waiter.next('waiting')
  await sleep(rand(holdMs))
  const killedAt = wallMs()
  holder.kill()
  let result
  try {
    const acquired = Number(await waiter.next('acquired', capMs))
    await holder.exited
    result = { ms: acquired - killedAt, exitSeenMs: holder.exitedAt - killedAt }
  } catch (e) {
    if (!e.timeout) throw e
    result = { ms: undefined, censored: true }
  }
  await holder.exited
  return result
}

async function workloadRecovery() {
  const { fastTrials, slowTrials, capMs, slowHoldMs } = CONFIG.recovery
  const out = {}
  const summarize = (lib, results, holdMs) => {
    const ok = results.filter((r) => r.ms !== undefined).map((r) => r.ms)
    const censored = results.length - ok.length
    const all = [...ok, ...Array(censored).fill(Infinity)]
    out[lib] = {
      median_ms: r3(median(all) === Infinity ? capMs : median(all)),
      median_censored: median(all) === Infinity,
      min_ms: r3(ok.length ? Math.min(...ok) : undefined),
      max_ms: r3(censored ? capMs : Math.max(...ok)),
      trials: results.length,
      censored,
      cap_ms: capMs,
      held_before_kill_ms: holdMs,
      holder_exit_seen_ms: r3(median(results.filter((r) => r.exitSeenMs !== undefined).map((r) => r.exitSeenMs))),
      samples_ms: ok.map(r3),
    }
    log(`  recovery ${lib}: median ${out[lib].median_ms} ms (${ok.length} of ${results.length} within ${capMs} ms)`)
  }
  // Event-driven ones: one after another, a persistent waiter and a new holder per trial.
  for (const lib of [OURS, FLOOR]) {
    const ws = workspace(`recovery-${lib}`)
    const waiter = new Peer(lib, ws, 120000)
    await waiter.next('ready')
    const results = []
    for (let i = 0; i < fastTrials; i++) {
      const res = await recoveryTrial(lib, ws, waiter, [20, 120], capMs)
      results.push(res)
      if (res.censored) break
      waiter.send('release 0')
      await waiter.next('released')
    }
    await waiter.close()
    fs.rmSync(ws, { recursive: true, force: true })
    summarize(lib, results, [20, 120])
  }
  // Staleness-driven ones wait seconds: all their trials at once, each in its own workspace
  // (the processes sleep while they poll). Holding 0.2–5.2 s before the kill puts the kill
  // uniformly within proper-lockfile's 5 s refresh period.
  const slow = ['proper-lockfile', 'lockfile']
  const jobs = []
  for (const lib of slow) {
    for (let i = 0; i < slowTrials; i++) {
      jobs.push(
        (async () => {
          await sleep(jobs.length * 150)
          const ws = workspace(`recovery-${lib}`)
          const waiter = new Peer(lib, ws, capMs + 60000)
          await waiter.next('ready')
          const res = await recoveryTrial(lib, ws, waiter, slowHoldMs, capMs)
          waiter.kill()
          await waiter.exited
          return { lib, res }
        })(),
      )
    }
  }
  const done = await Promise.all(jobs)
  for (const lib of slow)
    summarize(
      lib,
      done.filter((d) => d.lib === lib).map((d) => d.res),
      slowHoldMs,
    )
  return out
}

// 6. Throughput and fairness of N contending processes

function readJournal(file, n) {
  const text = fs.existsSync(file) ? fs.readFileSync(file, 'latin1') : ''
  const counts = Array(n).fill(0)
  let violations = 0
  let switches = 0
  let prev = -1
  for (let i = 0; i + 1 < text.length; i += 2) {
    const enter = text.charCodeAt(i) - 65
    const leave = text.charCodeAt(i + 1) - 97
    if (enter !== leave || enter < 0 || enter >= n) {
      violations++ // two holders at once: their bytes interleave
      i -= 1 // resynchronise one byte on
      continue
    }
    counts[enter]++
    if (prev >= 0 && enter !== prev) switches++
    prev = enter
  }
  return { counts, violations, switches }
}

async function contendOnce(n, lib, seconds) {
  const ws = workspace(`contend-${n}-${lib}`)
  const journal = path.join(ws, 'journal')
  const peers = Array.from({ length: n }, () => new Peer(lib, ws, seconds * 1000 + 30000))
  await Promise.all(peers.map((p) => p.next('ready')))
  // Everyone gets its command now and starts at the same instant, 100 ms later.
  const start = wallMs() + 100
  const end = start + seconds * 1000
  peers.forEach((p, i) => p.send(`contend ${start} ${end} ${journal} ${String.fromCharCode(97 + i)}`))
  const reported = await Promise.all(peers.map((p) => p.next('done', seconds * 1000 + 20000).then(Number)))
  await Promise.all(peers.map((p) => p.close()))
  const { counts, violations, switches } = readJournal(journal, n)
  fs.rmSync(ws, { recursive: true, force: true })
  const total = counts.reduce((a, b) => a + b, 0)
  return {
    cycles_per_s: r3(total / seconds),
    busiest_share: r3(Math.max(...counts) / total),
    least_share: r3(Math.min(...counts) / total),
    switch_rate: r3(total > 1 ? switches / (total - 1) : 0),
    counts,
    reported_cycles: reported,
    violations,
  }
}

// Rounds interleave process counts and libraries, so that a slow spell of the machine hits
// all of them; each figure is the median of its rounds.
async function workloadContention() {
  const { procs, seconds, rounds } = CONFIG.contention
  const runs = Object.fromEntries(procs.map((n) => [n, Object.fromEntries(ALL.map((lib) => [lib, []]))]))
  for (let r = 0; r < rounds; r++) {
    for (const n of procs) {
      for (const lib of rotate(ALL, n + r)) {
        const one = await contendOnce(n, lib, seconds)
        runs[n][lib].push(one)
        log(
          `  contention round ${r + 1}/${rounds}, ${n} × ${lib}: ${one.cycles_per_s} cycles/s, busiest ${(one.busiest_share * 100).toFixed(1)}%, ` +
            `least ${(one.least_share * 100).toFixed(1)}%, switches ${(one.switch_rate * 100).toFixed(1)}%` +
            (one.violations ? `, ${one.violations} OVERLAPS` : ''),
        )
      }
    }
  }
  const out = {}
  for (const n of procs) {
    out[n] = {}
    for (const lib of ALL) {
      const rs = runs[n][lib]
      const mid = (key) => r3(median(rs.map((x) => x[key])))
      // The journal counts shown are those of the round with the median throughput.
      const typical = [...rs].sort((a, b) => a.cycles_per_s - b.cycles_per_s)[Math.floor((rs.length - 1) / 2)]
      out[n][lib] = {
        cycles_per_s: mid('cycles_per_s'),
        busiest_share: mid('busiest_share'),
        least_share: mid('least_share'),
        switch_rate: mid('switch_rate'),
        rounds_cycles_per_s: rs.map((x) => x.cycles_per_s),
        counts: typical.counts,
        reported_cycles: typical.reported_cycles,
        violations: rs.reduce((a, x) => a + x.violations, 0),
      }
    }
  }
  return out
}

// 7. Memory and load time in fresh processes

async function workloadLoad() {
  const { rounds } = CONFIG.load
  const names = ['none', ...NODE_LIBS]
  const res = Object.fromEntries(names.map((n) => [n, []]))
  for (let r = 0; r < rounds; r++) {
    for (const name of rotate(names, r)) {
      const ws = workspace(`load-${name}`)
      res[name].push(lastJson(await run(process.execPath, [path.join(here, 'load.mjs'), name, ws], { timeoutMs: 20000 })))
      fs.rmSync(ws, { recursive: true, force: true })
    }
  }
  const MB = 2 ** 20
  return Object.fromEntries(
    names.map((n) => [
      n,
      {
        rss_added_mb: r3(median(res[n].map((x) => (x.rssAfter - x.rssBefore) / MB))),
        rss_added_by_first_use_mb: r3(median(res[n].map((x) => (x.rssAfterUse - x.rssAfter) / MB))),
        load_ms: r3(median(res[n].map((x) => x.loadMs))),
        rounds: res[n].length,
      },
    ]),
  )
}

// ---------------------------------------------------------------------------------------

function versions() {
  const v = (p) => {
    try {
      return require(p).version
    } catch {
      return undefined
    }
  }
  return {
    [OURS]: { version: v('../package.json'), options: LIBS[OURS].options },
    'proper-lockfile': { version: v('proper-lockfile/package.json'), options: LIBS['proper-lockfile'].options },
    lockfile: { version: v('lockfile/package.json'), options: LIBS.lockfile.options },
    floor: { version: 'benchmark/floor', options: 'O_EXCL create / unlink; inotify + pidfd waits' },
  }
}

async function measure() {
  for (const lib of ['proper-lockfile', 'lockfile']) {
    try {
      require.resolve(lib)
    } catch {
      throw new Error(`${lib} is not installed: npm install (it is a devDependency)`)
    }
  }
  const t0 = Date.now()
  log('building benchmark/floor ...')
  FLOOR_BIN = buildFloor()
  ROOT = fs.mkdtempSync(path.join(os.tmpdir(), 'wslock-bench-'))
  // Spread our directories over ext4 block groups (the Orlov allocator treats a TOPDIR
  // directory's children like top-level ones), so that no library creates its inodes in a
  // group where another one just deleted thousands (see docs/benchmarks.md).
  const topdir = spawnSync('chattr', ['+T', ROOT]).status === 0
  const results = {
    benchmark: OURS,
    date: new Date().toISOString(),
    command: `node benchmark/run.mjs${QUICK ? ' --quick' : ''}`,
    quick: QUICK,
    machine: { ...machine(), topdirSpread: topdir, loadavgStart: os.loadavg().map(r3) },
    libs: versions(),
    config: CONFIG,
  }
  const steps = [
    ['cycle', workloadCycle],
    ['busy', workloadBusy],
    ['handoff', workloadHandoff],
    ['recovery', workloadRecovery],
    ['contention', workloadContention],
    ['afterDeletions', workloadAfterDeletions],
    ['reclaim', workloadReclaim], // late: it deletes tens of thousands of inodes
    ['load', workloadLoad],
  ]
  const only = option('only')?.split(',')
  for (const [name, fn] of steps) {
    if (only && !only.includes(name)) continue
    const s = Date.now()
    log(`${name} ...`)
    results[name] = await fn()
    log(`${name}: ${((Date.now() - s) / 1000).toFixed(1)} s`)
  }
  results.duration_s = Math.round((Date.now() - t0) / 100) / 10
  results.machine.loadavgEnd = os.loadavg().map(r3)
  return results
}

const watchdog = setTimeout(() => {
  log('benchmark: over 6 minutes, giving up')
  cleanup()
  process.exit(1)
}, 6 * 60 * 1000)
watchdog.unref()

const from = option('from')
const results = from ? JSON.parse(fs.readFileSync(from, 'utf8').trim().split('\n').pop()) : await measure()
cleanup()
printTable(results)
console.log(JSON.stringify(results))
if (option('json-out')) fs.writeFileSync(option('json-out'), JSON.stringify(results) + '\n')
if (flag('write-docs')) {
  const written = writeDocs(results, path.join(repo, 'docs'))
  log(`wrote ${written.map((f) => path.relative(repo, f)).join(', ')}`)
}
process.exit(0)
