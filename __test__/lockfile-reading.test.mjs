// Lockfile reading, differentially: with an injected resolver and clock the package must
// judge every record exactly as the original does, odd records included (missing fields,
// strings for numbers, null, arrays, duplicate keys). The reference below is written from
// SPEC.md's rules with plain JavaScript semantics: JSON.parse, `typeof`, `!==`, `-`, `>`.
import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import { lock, workspace } from './helpers.mjs'

function referenceBusy(text, resolver, now, staleMs) {
  let parsed
  try {
    parsed = JSON.parse(text)
  } catch {
    return undefined
  }
  if (!parsed || typeof parsed !== 'object') return undefined
  const nowValue = now()
  if (parsed.startTime !== undefined) {
    const current = resolver(parsed.pid)
    if (current !== undefined && current !== parsed.startTime) return undefined
  }
  if (nowValue - parsed.heartbeat > staleMs) return undefined
  return parsed.goalId
}

// A small seeded PRNG so that a failure can be replayed.
function prng(seed) {
  let s = seed >>> 0
  return () => ((s = (s * 1664525 + 1013904223) >>> 0) / 2 ** 32)
}

function randomValue(rand, kind) {
  const r = rand()
  if (kind === 'time') {
    if (r < 0.55) return 1_000_000 - Math.floor(rand() * 200_000)
    if (r < 0.65) return String(1_000_000 - Math.floor(rand() * 200_000))
    if (r < 0.7) return null
    if (r < 0.75) return [900_000]
    if (r < 0.8) return {}
    if (r < 0.85) return true
    if (r < 0.9) return 'soon'
    return 999_999.5
  }
  if (kind === 'start') {
    if (r < 0.6) return [1000, 2000, 3000][Math.floor(rand() * 3)]
    if (r < 0.7) return '1000'
    if (r < 0.8) return null
    return 1000.5
  }
  if (kind === 'pid') {
    if (r < 0.7) return [11, 22, 33][Math.floor(rand() * 3)]
    if (r < 0.8) return '22'
    if (r < 0.9) return null
    return 22.5
  }
  // goalId
  if (r < 0.8) return `goal-${Math.floor(rand() * 100)}`
  if (r < 0.85) return 42
  if (r < 0.9) return null
  if (r < 0.95) return ['a', 'b']
  return { nested: true }
}

function randomRecord(rand) {
  const r = rand()
  if (r < 0.04) return ''
  if (r < 0.07) return '{"pid":'
  if (r < 0.1) return JSON.stringify(rand() < 0.5 ? 7 : 'text')
  if (r < 0.13) return '[1,2]'
  const fields = {}
  for (const [name, kind] of [['pid', 'pid'], ['startTime', 'start'], ['heartbeat', 'time'], ['goalId', 'goal'], ['acquiredAt', 'goal']]) {
    if (rand() < 0.9) fields[name] = randomValue(rand, kind)
  }
  let text = JSON.stringify(fields)
  if (rand() < 0.05) text = text.replace('{', '{"heartbeat":1,') // a duplicate key: the last wins
  return text
}

describe('lockfile reading matches the original', () => {
  it('isWorkspaceBusy agrees with the reference on 1,500 random records', () => {
    const seed = Number(process.env.LOCKFILE_READING_SEED ?? Date.now() % 1_000_000)
    const rand = prng(seed)
    const cwd = workspace()
    const lockPath = lock.workspaceLockPath(cwd)
    const startTimes = new Map([[11, 1000], [22, 2000], ['22', 3000]])
    const resolver = (pid) => startTimes.get(pid)
    for (let i = 0; i < 1500; i++) {
      const text = randomRecord(rand)
      fs.writeFileSync(lockPath, text)
      const staleMs = rand() < 0.5 ? 60_000 : 120_000
      const opts = { startTimeResolver: resolver, now: () => 1_000_000, heartbeatStaleMs: staleMs }
      const expected = referenceBusy(text, resolver, () => 1_000_000, staleMs)
      // An unreadable record has no goalId to name: both say undefined.
      assert.deepEqual(lock.isWorkspaceBusy(cwd, opts), expected, `seed ${seed}, record ${i}: ${text}`)
    }
  })
})
