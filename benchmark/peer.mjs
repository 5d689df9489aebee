// A lock-holding process for the multi-process workloads: `node peer.mjs <lib> <ws>`.
// The same line protocol as the floor's `peer` command (benchmark/floor/src/main.rs):
//   (on start)           -> "ready"
//   acquire              -> "waiting" (right after the call), then "acquired <wall ms>"
//   release <delay ms>   -> waits, records the instant just before release: "released <wall ms>"
//   contend <start wall ms> <end wall ms> <journal> <letter>
//                        -> from <start>, acquire/release in a loop until <end>; each hold appends
//                           <LETTER> then <letter> to the journal: "done <cycles>"
//   exit
import fs from 'node:fs'
import readline from 'node:readline'
import { LIBS, wallMs } from './libs.mjs'

const [libName, ws] = process.argv.slice(2)
const lib = LIBS[libName]
const mod = lib.module()
const target = lib.target(ws)
const say = (line) => process.stdout.write(line + '\n')

let release
say('ready')
for await (const line of readline.createInterface({ input: process.stdin })) {
  const [cmd, ...args] = line.trim().split(/\s+/)
  if (cmd === 'acquire') {
    const pending = lib.acquire(mod, target)
    say('waiting')
    release = await pending
    say(`acquired ${wallMs().toFixed(4)}`)
  } else if (cmd === 'release') {
    await new Promise((resolve) => setTimeout(resolve, Number(args[0])))
    const t = wallMs()
    const done = release()
    release = undefined
    say(`released ${t.toFixed(4)}`)
    await done
  } else if (cmd === 'contend') {
    const [start, end] = [Number(args[0]), Number(args[1])]
    const journal = fs.openSync(args[2], 'a')
    const leave = args[3].toLowerCase()
    const enter = leave.toUpperCase()
    let cycles = 0
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, start - wallMs())))
    for (;;) {
      const rel = await lib.acquire(mod, target)
      if (wallMs() >= end) {
        await rel()
        break
      }
      fs.writeSync(journal, enter)
      fs.writeSync(journal, leave)
      await rel()
      cycles++
    }
    fs.closeSync(journal)
    say(`done ${cycles}`)
  } else if (cmd === 'exit' || cmd === undefined) {
    break
  }
}
process.exit(0)
