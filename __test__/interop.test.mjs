// Processes of the original module and of this package contend for one workspace and
// never both hold it. The original's behaviour is simulated from SPEC.md's description
// (fixtures/legacy-cycler.mjs).
import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import path from 'node:path'
import { lock, workspace, startChild, sleep } from './helpers.mjs'

function files(cwd) {
  const witness = path.join(cwd, 'witness')
  const counter = path.join(cwd, 'counter')
  fs.writeFileSync(counter, '0')
  return { witness, counter }
}

describe('original and native processes side by side', () => {
  it('2 original + 2 native processes x 150 cycles: no overlap, no lost update', { timeout: 120_000 }, async () => {
    const cwd = workspace()
    const lockPath = lock.workspaceLockPath(cwd)
    const { witness, counter } = files(cwd)
    const kids = [
      startChild('legacy-cycler.mjs', [lockPath, witness, counter, '150', '2'], { timeoutMs: 110_000 }),
      startChild('legacy-cycler.mjs', [lockPath, witness, counter, '150', '2'], { timeoutMs: 110_000 }),
      startChild('native-cycler.mjs', [cwd, witness, counter, '150'], { timeoutMs: 110_000 }),
      startChild('native-cycler.mjs', [cwd, witness, counter, '150'], { timeoutMs: 110_000 }),
    ]
    const results = await Promise.all(kids.map(async (k) => JSON.parse(await k.nextLine(105_000))))
    for (const r of results) assert.equal(r.overlaps, 0, JSON.stringify(r))
    assert.ok(!fs.existsSync(path.join(cwd, 'overlaps.log')))
    assert.equal(fs.readFileSync(counter, 'utf8'), '600')
    assert.equal(lock.isWorkspaceBusy(cwd), undefined)
  })

  it('native processes SIGKILLed at random among original ones: no overlap, and the lock is recovered', { timeout: 120_000 }, async () => {
    const cwd = workspace()
    const lockPath = lock.workspaceLockPath(cwd)
    const { witness, counter } = files(cwd)
    // The original-style processes cycle until the natives have been killed often enough.
    const enough = path.join(cwd, 'enough-kills')
    const legacy = [0, 1].map(() => startChild('legacy-cycler.mjs', [lockPath, witness, counter, '100', '2', enough], { timeoutMs: 110_000 }))
    let kills = 0
    const natives = new Set()
    const spawnNative = () => {
      const c = startChild('native-cycler.mjs', [cwd, witness, counter, '100000', '4'], { timeoutMs: 110_000 })
      natives.add(c)
      return c
    }
    spawnNative()
    spawnNative()
    const legacyDone = Promise.all(legacy.map(async (k) => JSON.parse(await k.nextLine(105_000))))
    while (kills < 15) {
      await sleep(20 + Math.random() * 60)
      const victim = [...natives][Math.floor(Math.random() * natives.size)]
      natives.delete(victim)
      victim.kill('SIGKILL')
      kills++
      spawnNative()
    }
    fs.writeFileSync(enough, '')
    // Natives keep running until the original-style processes are done: a native killed
    // while holding is reclaimed at once by the other natives, whereas the original would
    // wait out the 60 s heartbeat.
    await legacyDone
    for (const n of natives) n.kill('SIGKILL')
    await Promise.all([...natives].map((n) => n.exited))
    const results = await legacyDone
    for (const r of results) assert.equal(r.overlaps, 0, JSON.stringify(r))
    assert.ok(!fs.existsSync(path.join(cwd, 'overlaps.log')), fs.existsSync(path.join(cwd, 'overlaps.log')) && fs.readFileSync(path.join(cwd, 'overlaps.log'), 'utf8'))
    for (const r of results) assert.ok(r.cycles >= 100, JSON.stringify(r))
    // A native holder killed while holding is recovered at once by this package.
    const h = await lock.acquireWorkspaceLock(cwd, 'final', { failOnWorkspaceBusy: true })
    h.release()
  })
})
