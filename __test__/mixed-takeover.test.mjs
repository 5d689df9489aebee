// Issue 14 §8: processes of the original module and of this package take over the same
// stale lock at the same instant. The original judges the lock stale, then unlinks whatever
// is at the path and creates its own claim; a native takeover in that window would be
// deleted under it. A native claim over a lock the original may also judge stale resolves
// only once it has survived a settle time (and is then watched closely), so the two never
// both hold it without the native being told.
import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import { spawnSync } from 'node:child_process'
import { lock, workspace, startChild, pidAlive, sleep } from './helpers.mjs'

/** A pid that was a process a moment ago and is now dead (and reaped). */
function deadPid() {
  for (;;) {
    const r = spawnSync('/bin/true')
    if (r.pid && !pidAlive(r.pid)) return r.pid
  }
}

/** Reads a child's lines, keeping the `lost …` reports apart from the answers. */
function reader(kid) {
  const lost = []
  return {
    lost,
    async answer(prefixes) {
      for (;;) {
        const line = await kid.nextLine(10_000)
        if (line.startsWith('lost ')) lost.push(line)
        else if (prefixes.some((p) => line.startsWith(p))) return line
        else throw new Error(`unexpected line: ${line}`)
      }
    },
  }
}

describe('a stale lock taken over by original and native processes at once', () => {
  it('2 original + 2 native processes x 60 rounds: never two holders without the native told', { timeout: 90_000 }, async () => {
    const cwd = workspace('mixed-takeover')
    const lockPath = lock.workspaceLockPath(cwd)
    const legacy = [0, 1].map(() => startChild('mixed-stampede-legacy.mjs', [lockPath], { timeoutMs: 85_000 }))
    const native = [0, 1].map(() => startChild('mixed-stampede-native.mjs', [cwd], { timeoutMs: 85_000 }))
    const kids = [...legacy, ...native]
    for (const k of kids) assert.equal(await k.nextLine(15_000), 'READY')
    const readers = kids.map(reader)
    const stats = { rounds: 0, nativeWins: 0, legacyWins: 0, originalPairs: 0, doubleClaims: 0, told: 0, silent: [] }
    for (let round = 1; round <= 60; round++) {
      const heartbeat = Date.now() - 120_000
      fs.writeFileSync(lockPath, JSON.stringify({ pid: deadPid(), startTime: 1000, heartbeat, goalId: `stale-${round}`, acquiredAt: new Date(heartbeat).toISOString() }))
      const at = Date.now() + 20
      kids.forEach((k, i) => k.send(`try ${round} r${round}-k${i} ${at}`))
      const answers = await Promise.all(readers.map((r) => r.answer([`won ${round}`, `busy ${round}`, `error ${round}`])))
      const ctx = `round ${round}: ${JSON.stringify(answers)}`
      for (const a of answers) assert.doesNotMatch(a, /^error/, ctx)
      const winners = answers.map((a, i) => (a.startsWith('won') ? i : -1)).filter((i) => i >= 0)
      assert.ok(winners.length >= 1, `nobody took the stale lock, ${ctx}`)
      // Give a native that lost its claim time to be told (it checks every 50 ms at first).
      await sleep(150)
      const before = native.map((_, j) => readers[2 + j].lost.length)
      const record = JSON.parse(fs.readFileSync(lockPath, 'utf8'))
      if (winners.length > 1 && winners.every((w) => w < 2)) {
        // Two original processes racing each other: the original's own flaw, not ours.
        stats.originalPairs++
      } else if (winners.length > 1) {
        stats.doubleClaims++
        // Whoever is not in the lockfile must have been told, if it is a native.
        for (const w of winners) {
          if (record.goalId === `r${round}-k${w}`) continue
          if (w >= 2 && readers[w].lost.some((l) => l.startsWith(`lost ${round} `))) stats.told++
          else stats.silent.push(`${ctx}; holder in the file: ${record.goalId}; k${w} believes it holds`)
        }
      }
      for (const w of winners) (w < 2 ? stats.legacyWins++ : stats.nativeWins++)
      for (const w of winners) kids[w].send(`release ${round}`)
      for (const w of winners) await readers[w].answer([`released ${round}`])
      // A native's release of a lock it lost reports nothing new.
      native.forEach((_, j) => assert.ok(readers[2 + j].lost.length - before[j] <= 1, ctx))
      if (fs.existsSync(lockPath)) fs.unlinkSync(lockPath)
      stats.rounds++
    }
    console.log(`# mixed takeover: ${JSON.stringify({ ...stats, silent: stats.silent.length })}`)
    assert.equal(stats.rounds, 60)
    assert.ok(stats.nativeWins > 0 && stats.legacyWins > 0, `both kinds must take the lock sometimes: ${JSON.stringify(stats)}`)
    assert.deepEqual(stats.silent, [])
    for (const k of kids) k.send('exit')
    for (const k of kids) assert.deepEqual(await k.exited, { code: 0, signal: null }, k.stderr())
  })
})
