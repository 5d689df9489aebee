// One process of benchmark/pg.mjs: `node pg-peer.mjs <file|ours-pg|pg-peer> <ws> <url>`.
//   cycle N              -> "cycle [ms, …]": N uncontended acquire+release, each timed
//   acquire              -> "waiting", then "acquired <wall ms>"
//   release <delay ms>   -> "released <wall ms>" (the instant just before releasing)
//   contend <start> <end>-> acquire/release in a loop between two wall instants: "done <n>"
//   exit
import readline from 'node:readline'
import { createRequire } from 'node:module'
const require = createRequire(import.meta.url)
const [kind, ws, url] = process.argv.slice(2)
const wall = () => performance.timeOrigin + performance.now()
const say = (l) => process.stdout.write(l + '\n')

let acquire
if (kind === 'pg-peer') {
  // What Node users do today: a dedicated connection, pg_advisory_lock / pg_advisory_unlock.
  const { Client } = require('pg')
  const client = new Client({ connectionString: url })
  await client.connect()
  const KEY = '4242'
  acquire = async () => {
    await client.query('SELECT pg_advisory_lock($1)', [KEY])
    return () => client.query('SELECT pg_advisory_unlock($1)', [KEY])
  }
} else {
  const lock = require('../index.js')
  const opts = { backend: kind === 'file' ? 'file' : url }
  acquire = async () => {
    const h = await lock.acquireWorkspaceLock(ws, 'bench', opts)
    return () => h.release()
  }
}

say('ready')
let release
for await (const line of readline.createInterface({ input: process.stdin })) {
  const [cmd, ...args] = line.trim().split(/\s+/)
  if (cmd === 'cycle') {
    const n = Number(args[0])
    for (let i = 0; i < 50; i++) await (await acquire())()
    const lat = []
    for (let i = 0; i < n; i++) {
      const t = performance.now()
      await (await acquire())()
      lat.push(performance.now() - t)
    }
    say(`cycle ${JSON.stringify(lat)}`)
  } else if (cmd === 'acquire') {
    const p = acquire()
    say('waiting')
    release = await p
    say(`acquired ${wall().toFixed(4)}`)
  } else if (cmd === 'release') {
    await new Promise((r) => setTimeout(r, Number(args[0])))
    const t = wall()
    const done = release()
    release = undefined
    say(`released ${t.toFixed(4)}`)
    await done
  } else if (cmd === 'contend') {
    const [start, end] = [Number(args[0]), Number(args[1])]
    await new Promise((r) => setTimeout(r, Math.max(0, start - wall())))
    let n = 0
    for (;;) {
      const rel = await acquire()
      if (wall() >= end) {
        await rel()
        break
      }
      await rel()
      n++
    }
    say(`done ${n}`)
  } else if (cmd === 'exit') {
    break
  }
}
process.exit(0)
