// One pi-crew "goal" of the demo: takes the workspace lock, works on the workspace for a
// while, releases. Reports each step as a JSON line with a wall-clock timestamp in ms.
import { createRequire } from 'node:module'
import fs from 'node:fs'
import path from 'node:path'
const lock = createRequire(import.meta.url)('../index.js')

const [cwd, goalId, workMs] = process.argv.slice(2)
const now = () => performance.timeOrigin + performance.now()
const say = (event, extra = {}) => console.log(JSON.stringify({ t: now(), goalId, pid: process.pid, event, ...extra }))

const holder = lock.isWorkspaceBusy(cwd)
say('start', { holder })
const handle = await lock.acquireWorkspaceLock(cwd, goalId)
say('acquired', { reclaimed: handle.reclaimed })
// The work: append to a journal in the workspace. Two goals at once would interleave here.
const journal = path.join(cwd, 'journal.txt')
fs.appendFileSync(journal, `${goalId} begins\n`)
await new Promise((r) => setTimeout(r, Number(workMs)))
fs.appendFileSync(journal, `${goalId} ends\n`)
say('releasing')
handle.release()
