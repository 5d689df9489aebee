// The *work* of one pi-crew goal in the demo, run by `workspace-lock run … -- node goal.mjs`:
// the lock is already held by the time this starts. Reports its start and end as JSON lines
// with wall-clock timestamps (ms), and appends to a journal in the workspace: two goals
// working at once would interleave their lines there.
import fs from 'node:fs'
import path from 'node:path'

const [cwd, goalId, workMs] = process.argv.slice(2)
const now = () => performance.timeOrigin + performance.now()
const say = (event) => console.log(JSON.stringify({ t: now(), goalId, pid: process.pid, event }))
const journal = path.join(cwd, 'journal.txt')

say('work starts')
fs.appendFileSync(journal, `${goalId} begins\n`)
await new Promise((r) => setTimeout(r, Number(workMs)))
fs.appendFileSync(journal, `${goalId} ends\n`)
say('work ends')
