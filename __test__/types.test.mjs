// index.d.ts declares the API as pi-crew's module does: a pi-crew style consumer that
// re-exports everything type-checks under --strict, and wrong calls do not.
import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import path from 'node:path'
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'

const here = path.dirname(fileURLToPath(import.meta.url))
const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc')
const run = (args) => spawnSync(process.execPath, [tsc, ...args], { cwd: here, encoding: 'utf8', timeout: 120_000 })

describe('TypeScript declarations', () => {
  it('type-check a consumer that re-exports everything, with --strict', { timeout: 120_000 }, () => {
    const r = run(['-p', path.join(here, 'types', 'tsconfig.json')])
    assert.equal(r.status, 0, r.stdout + r.stderr)
  })

  it('reject wrong calls', { timeout: 120_000 }, () => {
    const r = run(['--noEmit', '--strict', '--target', 'ES2022', '--module', 'NodeNext', '--moduleResolution', 'NodeNext', '--lib', 'ES2022,DOM', path.join(here, 'types', 'wrong-calls.ts')])
    assert.notEqual(r.status, 0)
    for (const line of [4, 5, 6, 8]) assert.match(r.stdout, new RegExp(`wrong-calls\\.ts\\(${line},\\d+\\): error TS`), `line ${line}:\n${r.stdout}`)
    assert.equal((r.stdout.match(/error TS/g) ?? []).length, 4, r.stdout)
  })
})
