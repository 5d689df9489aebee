// `npm run demo`: several goal processes contend for one workspace; one is SIGKILLed while
// it holds the lock. Prints what happened and how long each handover took.
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { createRequire } from 'node:module'
const lock = createRequire(import.meta.url)('../index.js')

const here = path.dirname(fileURLToPath(import.meta.url))
const cwd = fs.mkdtempSync(path.join(os.tmpdir(), 'workspace-lock-demo-'))
fs.mkdirSync(path.join(cwd, '.git')) // a repository: the lock lives in <repo>/.crew
const GOALS = ['goal-1', 'goal-2', 'goal-3', 'goal-4', 'goal-5']
const VICTIM = 'goal-3'
const WORK_MS = 300

const events = []
const children = new Map()
let t0
const fmt = (t) => `${(t - t0).toFixed(1).padStart(8)} ms`

function startGoal(goalId) {
  const child = spawn(process.execPath, [path.join(here, 'goal.mjs'), cwd, goalId, String(WORK_MS)], { stdio: ['ignore', 'pipe', 'inherit'] })
  children.set(goalId, child)
  let buf = ''
  child.stdout.on('data', (d) => {
    buf += d
    for (let nl; (nl = buf.indexOf('\n')) >= 0; buf = buf.slice(nl + 1)) {
      const e = JSON.parse(buf.slice(0, nl))
      events.push(e)
      onEvent(e)
    }
  })
  return new Promise((resolve) => child.on('exit', (code, signal) => resolve({ goalId, code, signal })))
}

let killedAt
function onEvent(e) {
  if (e.event === 'acquired' && e.goalId === VICTIM) {
    // Kill it half-way through its work: no release, no exit handler, nothing.
    setTimeout(() => {
      killedAt = performance.timeOrigin + performance.now()
      events.push({ t: killedAt, goalId: VICTIM, pid: e.pid, event: 'SIGKILL' })
      children.get(VICTIM).kill('SIGKILL')
    }, WORK_MS / 2)
  }
}

console.log(`Workspace ${cwd}`)
console.log(`Lockfile  ${lock.workspaceLockPath(cwd)}\n`)
console.log(`${GOALS.length} goal processes start at once; each holds the lock for ${WORK_MS} ms of work.`)
console.log(`${VICTIM} will be SIGKILLed half-way through its work, while holding the lock.\n`)
t0 = performance.timeOrigin + performance.now()
const exits = await Promise.all(GOALS.map(startGoal))

events.sort((a, b) => a.t - b.t)
console.log('Timeline')
for (const e of events) {
  let note = ''
  if (e.event === 'start') note = e.holder ? `(workspace held by ${e.holder}: waits)` : '(workspace free)'
  if (e.event === 'acquired' && e.reclaimed) note = `(reclaimed the lock of ${e.reclaimed.goalId}: ${e.reclaimed.reason})`
  console.log(`  ${fmt(e.t)}  ${e.goalId.padEnd(7)} pid ${String(e.pid).padEnd(7)} ${e.event.padEnd(9)} ${note}`)
}

// Handover: from a release (or the holder's death) to the next goal's acquisition.
const order = events.filter((e) => ['acquired', 'releasing', 'SIGKILL'].includes(e.event))
const handovers = []
for (let i = 1; i < order.length; i++) {
  const prev = order[i - 1]
  const cur = order[i]
  if (cur.event === 'acquired' && prev.event !== 'acquired') handovers.push({ from: prev, to: cur, ms: cur.t - prev.t })
}
console.log('\nHandovers')
for (const h of handovers) {
  const why = h.from.event === 'SIGKILL' ? 'died (SIGKILL)' : 'released'
  console.log(`  ${h.from.goalId} ${why.padEnd(14)} -> ${h.to.goalId} acquired ${h.ms.toFixed(2)} ms later`)
}

// The journal proves nobody worked at the same time.
const journal = fs.readFileSync(path.join(cwd, 'journal.txt'), 'utf8').trim().split('\n')
let overlaps = 0
for (let i = 0; i < journal.length; i++) {
  const [goal, what] = journal[i].split(' ')
  if (what === 'begins' && journal[i + 1] && journal[i + 1] !== `${goal} ends` && goal !== VICTIM) overlaps++
}
const crash = handovers.find((h) => h.from.event === 'SIGKILL')
console.log('\nSummary')
console.log(`  goals finished: ${exits.filter((x) => x.code === 0).length} of ${GOALS.length} (${VICTIM} killed: ${exits.find((x) => x.goalId === VICTIM).signal})`)
console.log(`  overlapping work in the journal: ${overlaps}`)
console.log(`  median handover after a release: ${median(handovers.filter((h) => h.from.event !== 'SIGKILL').map((h) => h.ms)).toFixed(2)} ms`)
console.log(`  recovery after the holder was killed: ${crash ? crash.ms.toFixed(2) + ' ms' : 'n/a'}`)
console.log(`  (pi-crew's original lock: ~250 ms per handover on average, polling every 500 ms, and`)
console.log(`   60 s before a killed holder's lock is considered stale.)`)
console.log(`  lockfile left behind: ${fs.existsSync(lock.workspaceLockPath(cwd)) ? 'yes' : 'no'}`)
fs.rmSync(cwd, { recursive: true, force: true })

function median(xs) {
  const s = [...xs].sort((a, b) => a - b)
  return s.length ? s[Math.floor(s.length / 2)] : NaN
}
