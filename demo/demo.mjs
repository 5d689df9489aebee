// `npm run demo`: five goals contend for one workspace through the operators' command,
//   workspace-lock run <cwd> --goal goal-N -- node demo/goal.mjs <cwd> goal-N <workMs>
// and one of them is SIGKILLed, whole (the tool and its work), while it holds the lock.
// Prints what `workspace-lock status` says meanwhile, the timeline, and how long each
// handover took.
import { execFile, spawn } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { createRequire } from 'node:module'
const lock = createRequire(import.meta.url)('../index.js')

const here = path.dirname(fileURLToPath(import.meta.url))
const BIN = path.join(here, '..', 'bin', 'workspace-lock.js')
const WORK = path.join(here, 'goal.mjs')
const cwd = fs.mkdtempSync(path.join(os.tmpdir(), 'workspace-lock-demo-'))
fs.mkdirSync(path.join(cwd, '.git')) // a repository: the lock lives in <repo>/.crew
const GOALS = ['goal-1', 'goal-2', 'goal-3', 'goal-4', 'goal-5']
const WORK_MS = 300

const now = () => performance.timeOrigin + performance.now()
const events = [] // {t, goalId, pid, event, note?}
const goals = new Map() // goalId -> the `workspace-lock run` child
let t0
let victim // the second goal to start working: others are sure to be waiting behind it
let statusShown = false
const waited = new Set()

// Self-cleaning: each goal is its own process group; kill what is left, remove the workspace.
function cleanUp() {
  for (const child of goals.values()) {
    try {
      process.kill(-child.pid, 'SIGKILL')
    } catch {}
  }
  fs.rmSync(cwd, { recursive: true, force: true })
}
process.on('exit', cleanUp)
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(130))

/** Splits a stream into lines. */
function onLines(stream, fn) {
  let buf = ''
  stream.on('data', (d) => {
    buf += d
    for (let nl; (nl = buf.indexOf('\n')) >= 0; buf = buf.slice(nl + 1)) fn(buf.slice(0, nl))
  })
}

function startGoal(goalId) {
  const args = [BIN, 'run', cwd, '--goal', goalId, '--verbose', '--', process.execPath, WORK, cwd, goalId, String(WORK_MS)]
  // detached: its own process group, so that killing the goal kills the tool and its work.
  const child = spawn(process.execPath, args, { detached: true, stdio: ['ignore', 'pipe', 'pipe'] })
  goals.set(goalId, child)
  const record = (event, note) => events.push({ t: now(), goalId, pid: child.pid, event, note })
  // The work's own reports (stdout): timestamped by the work itself.
  onLines(child.stdout, (line) => {
    const e = JSON.parse(line)
    events.push(e)
    if (e.event === 'work starts') onWorkStarts(e)
  })
  // The tool's reports (stderr): timestamped on arrival.
  onLines(child.stderr, (line) => {
    let m
    if ((m = /^workspace-lock: waiting for goal (\S+ \(pid \d+\))/.exec(line))) {
      // The tool says it again each time the lock changes hands: the first time is enough here.
      if (!waited.has(goalId)) record('waits', `for ${m[1]}`)
      waited.add(goalId)
    } else if (/^workspace-lock: acquired the lock/.test(line)) record('acquired')
    else if (/^workspace-lock: releasing the lock/.test(line)) record('releasing')
    else if ((m = /^workspace-lock: took over the stale lock of goal (.*)$/.exec(line))) record('took over', `the stale lock of ${m[1]}`)
    else process.stderr.write(`[${goalId}] ${line}\n`)
  })
  return new Promise((resolve) => child.on('exit', (code, signal) => resolve({ goalId, code, signal })))
}

let working = 0
function onWorkStarts(e) {
  working++
  if (!statusShown) {
    statusShown = true
    showStatus(e.goalId)
  }
  if (working === 2) {
    victim = e.goalId
    // Half-way through its work, kill the whole goal: no release, no exit handler, nothing.
    setTimeout(() => {
      const run = goals.get(victim)
      events.push({ t: now(), goalId: victim, pid: run.pid, event: 'SIGKILL', note: `the whole goal: workspace-lock pid ${run.pid} and its work pid ${e.pid}` })
      process.kill(-run.pid, 'SIGKILL')
    }, WORK_MS / 2)
  }
}

/** What an operator sees while a goal works (run asynchronously: the timeline keeps going). */
function showStatus(goalId) {
  execFile(process.execPath, [BIN, 'status', cwd], (err, stdout) => {
    console.log(`$ workspace-lock status <workspace>      (while ${goalId} works; exit status ${err?.code ?? 0})`)
    console.log(stdout.replace(/^/gm, '  ').trimEnd() + '\n')
  })
}

console.log(`Workspace ${cwd}`)
console.log(`Lockfile  ${lock.workspaceLockPath(cwd)}\n`)
console.log(`${GOALS.length} goals start at once, each as`)
console.log(`  workspace-lock run <workspace> --goal goal-N -- node demo/goal.mjs <workspace> goal-N ${WORK_MS}`)
console.log(`The second goal to get the lock is SIGKILLed half-way through its work (its whole process group).\n`)
t0 = now()
const exits = await Promise.all(GOALS.map(startGoal))

events.sort((a, b) => a.t - b.t)
const fmt = (t) => `${(t - t0).toFixed(1).padStart(8)} ms`
console.log('Timeline ("work …" timed by the work; "waits", "acquired", "releasing" as the tool says them)')
for (const e of events) {
  console.log(`  ${fmt(e.t)}  ${e.goalId}  pid ${String(e.pid).padEnd(7)} ${e.event.padEnd(11)} ${e.note ?? ''}`.trimEnd())
}

// Handover: from the end of a goal's work (or its death) to the start of the next goal's
// work. Of it, the lock's own share: from "releasing" (or the death) to the next "acquired";
// the rest is the work's process ending and the next one's starting.
const handovers = []
let ended
let releasing
for (const e of events) {
  if (e.event === 'work ends' || e.event === 'SIGKILL') ended = e
  if (e.event === 'releasing' || e.event === 'SIGKILL') releasing = e
  if (e.event === 'acquired' && ended && releasing) {
    const next = events.find((x) => x.goalId === e.goalId && x.event === 'work starts')
    if (next) handovers.push({ from: ended, to: e.goalId, ms: next.t - ended.t, lockMs: e.t - releasing.t })
    ended = releasing = undefined
  }
}
console.log('\nHandovers (previous work ended or was killed -> next work starts; the lock: releasing or killed -> acquired)')
for (const h of handovers) {
  const why = h.from.event === 'SIGKILL' ? 'killed (SIGKILL)' : 'work ended'
  console.log(`  ${h.from.goalId} ${why.padEnd(16)} -> ${h.to} works ${h.ms.toFixed(1).padStart(5)} ms later  (the lock: ${h.lockMs.toFixed(2)} ms)`)
}

// The journal proves nobody worked at the same time: each "begins" is followed by its own
// "ends" (but for the killed goal, which never ends).
const journal = fs.readFileSync(path.join(cwd, 'journal.txt'), 'utf8').trim().split('\n')
let overlaps = 0
for (let i = 0; i < journal.length; i++) {
  const [goal, what] = journal[i].split(' ')
  if (what === 'begins' && journal[i + 1] && journal[i + 1] !== `${goal} ends` && goal !== victim) overlaps++
}
const crash = handovers.find((h) => h.from.event === 'SIGKILL')
const released = handovers.filter((h) => h.from.event !== 'SIGKILL')
const killed = exits.find((x) => x.goalId === victim)
console.log('\nSummary')
console.log(`  goals finished: ${exits.filter((x) => x.code === 0).length} of ${GOALS.length} (${victim} killed: ${killed?.signal ?? 'no'})`)
console.log(`  overlapping work in the journal: ${overlaps}`)
console.log(`  median handover after a work ended: ${median(released.map((h) => h.ms)).toFixed(1)} ms (the lock: ${median(released.map((h) => h.lockMs)).toFixed(1)} ms; the rest is the processes ending and starting)`)
console.log(`  recovery after the holder was killed: ${crash ? `${crash.ms.toFixed(1)} ms (the lock: ${crash.lockMs.toFixed(1)} ms)` : 'n/a'}`)
console.log(`  (pi-crew's original lock: ~250 ms per handover on average, polling every 500 ms, and`)
console.log(`   60 s before a killed holder's lock is considered stale.)`)
console.log(`  lockfile left behind: ${fs.existsSync(lock.workspaceLockPath(cwd)) ? 'yes' : 'no'}`)

function median(xs) {
  const s = [...xs].sort((a, b) => a - b)
  return s.length ? s[Math.floor(s.length / 2)] : NaN
}
