// Tests of the operators' command, bin/workspace-lock.js, run as a real child process.
// Children: fixtures/cli-holder.mjs (a goal holding a lock through the API) and
// fixtures/cli-cmd.mjs (the command given to `run`). Every child is bounded in time.
import { afterEach, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import path from 'node:path'
import { execFile } from 'node:child_process'
import { lock, workspace, startChild, fixturesDir, sleep, setAge } from './helpers.mjs'

const { isWorkspaceBusy, workspaceLockPath, defaultStartTimeResolver } = lock

const BIN = path.join(fixturesDir, '..', '..', 'bin', 'workspace-lock.js')
const CMD = path.join(fixturesDir, 'cli-cmd.mjs')
const node = process.execPath

/** Runs the tool to its end (SIGKILLed after `timeoutMs`): {code, signal, stdout, stderr, ms}. */
function tool(args, { cwd, timeoutMs = 10_000 } = {}) {
  const started = performance.now()
  return new Promise((resolve) => {
    execFile(node, [BIN, ...args], { cwd, timeout: timeoutMs, killSignal: 'SIGKILL', env: { ...process.env, NO_COLOR: '1' } }, (err, stdout, stderr) => {
      resolve({ code: err ? (err.code ?? null) : 0, signal: err?.signal ?? null, stdout, stderr, ms: performance.now() - started })
    })
  })
}

/** Starts the tool in the background, as helpers' startChild does for fixtures (same bounds). */
const startTool = (args, opts) => track(startChild(path.relative(fixturesDir, BIN), args, opts))

// Children still running at the end of a test are killed there: a live child keeps the
// test process (and `node --test`) waiting.
const running = new Set()
afterEach(async () => {
  const all = [...running]
  running.clear()
  for (const c of all) c.kill('SIGKILL')
  await Promise.all(all.map((c) => c.exited))
})
const track = (child) => (running.add(child), child)

/** A goal process holding the lock of `cwd` through the API. */
async function holder(cwd, goalId) {
  const h = track(startChild('cli-holder.mjs', [cwd, goalId], { timeoutMs: 20_000 }))
  assert.match(await h.nextLine(), /^held \d+$/)
  return h
}

/** A holder that was SIGKILLed while holding: its lockfile stays behind. */
async function crashedHolder(cwd, goalId) {
  const h = await holder(cwd, goalId)
  h.kill('SIGKILL')
  await h.exited
  return h
}

/**
 * A lockfile written as the original module writes one, for a live process of ours (its
 * pid and start time), with a heartbeat `heartbeatAgeMs` old (the original never refreshes it).
 */
async function originalHolder(cwd, goalId, heartbeatAgeMs = 0) {
  const child = track(startChild('cli-cmd.mjs', ['sleep', '15000'], { timeoutMs: 20_000 }))
  assert.equal(await child.nextLine(), 'started')
  const heartbeat = Date.now() - heartbeatAgeMs
  const record = { pid: child.pid, startTime: defaultStartTimeResolver(child.pid), heartbeat, goalId, acquiredAt: new Date(heartbeat).toISOString() }
  fs.writeFileSync(workspaceLockPath(cwd), JSON.stringify(record), { flag: 'wx' })
  return child
}

const oneLine = (s) => assert.equal(s.trim().split('\n').length, 1, `expected one line: ${JSON.stringify(s)}`)

describe('workspace-lock: help and usage', () => {
  it('--help, for the tool and for each command, exits 0 and documents the exit codes', async () => {
    for (const args of [['--help'], ['-h'], ['help'], ['status', '--help'], ['list', '-h'], ['reclaim', '--help'], ['run', '--help'], ['wait', '--help'], ['help', 'run']]) {
      const r = await tool(args)
      assert.equal(r.code, 0, `${args}: ${r.stderr}`)
      assert.match(r.stdout, /^Usage: workspace-lock/, String(args))
      assert.match(r.stdout, /Exit codes:/, String(args))
      assert.match(r.stdout, /\n {2}2 +usage error/, String(args))
      assert.equal(r.stderr, '')
    }
    const r = await tool(['--version'])
    assert.equal(r.code, 0)
    assert.match(r.stdout, /^workspace-lock \d+\.\d+\.\d+/)
  })

  it('usage errors exit 2 with one line on stderr', async () => {
    const cases = [
      [[], /missing command/],
      [['bogus'], /unknown command 'bogus'/],
      [['status', '--bogus'], /status: unknown option '--bogus'/],
      [['status', 'a', 'b'], /status: unexpected argument 'b'/],
      [['list', '--json=yes'], /takes no value/],
      [['run', '.'], /missing the command to run after '--'/],
      [['run', '.', 'true'], /unexpected argument 'true' \(put '--' before the command\)/],
      [['run', '--goal'], /'--goal' needs a value/],
      [['run', '--timeout', 'soon', '--', 'true'], /--timeout expects seconds/],
      [['wait', '--timeout', '-1'], /--timeout expects seconds/],
      [['reclaim', '--no-wait'], /unknown option '--no-wait'/],
    ]
    for (const [args, message] of cases) {
      const r = await tool(args)
      assert.equal(r.code, 2, `${JSON.stringify(args)}: ${r.stderr}`)
      assert.match(r.stderr, /^workspace-lock: /)
      assert.match(r.stderr, message)
      assert.doesNotMatch(r.stderr, /\n\s+at /) // no stack trace
      oneLine(r.stderr)
      assert.equal(r.stdout, '')
    }
  })

  it('other errors exit 3 with one line, no stack trace', async () => {
    const r = await tool(['status', '/dev/null/inside-a-file'])
    assert.equal(r.code, 3, r.stderr)
    assert.match(r.stderr, /^workspace-lock: ENOTDIR/)
    oneLine(r.stderr)
  })
})

describe('workspace-lock status', () => {
  it('a free workspace: exit 0, "free", the lock path; --json carries them', async () => {
    const cwd = workspace('cli-free')
    const r = await tool(['status', cwd])
    assert.equal(r.code, 0, r.stderr)
    assert.match(r.stdout, /^state +free$/m)
    assert.ok(r.stdout.includes(workspaceLockPath(cwd)))
    const j = await tool(['status', cwd, '--json'])
    assert.equal(j.code, 0)
    const doc = JSON.parse(j.stdout)
    assert.equal(doc.state, 'free')
    assert.equal(doc.lockPath, workspaceLockPath(cwd))
    assert.equal(doc.cwd, cwd)
    assert.equal(doc.busy, false)
    // Default cwd: the current directory; --json may also come before the command.
    const here = JSON.parse((await tool(['--json', 'status'], { cwd })).stdout)
    assert.equal(here.lockPath, workspaceLockPath(cwd))
  })

  it('held by a live goal: exit 1, goal, pid, host, acquired, heartbeat, "alive (kernel lock held)"', async () => {
    const cwd = workspace('cli-held')
    const h = await holder(cwd, 'goal-held')
    const r = await tool(['status', cwd])
    assert.equal(r.code, 1, r.stderr)
    assert.match(r.stdout, /^state +held: alive \(kernel lock held\)$/m)
    assert.match(r.stdout, /^goal +goal-held$/m)
    assert.match(r.stdout, new RegExp(`^pid +${h.pid} on \\S+$`, 'm'))
    assert.match(r.stdout, /^acquired +\d{4}-\d\d-\d\dT[\d:.]+Z \(.+ ago\)$/m)
    assert.match(r.stdout, /^heartbeat +\d+(\.\d)? m?s ago$/m)
    const j = await tool(['status', cwd, '--json'])
    assert.equal(j.code, 1)
    const doc = JSON.parse(j.stdout)
    assert.equal(doc.state, 'held')
    assert.equal(doc.evidence, 'kernel_lock')
    assert.equal(doc.record.goalId, 'goal-held')
    assert.equal(doc.record.pid, h.pid)
    assert.equal(typeof doc.record.acquiredAt, 'string')
    assert.equal(typeof doc.heartbeatAgeMs, 'number')
    assert.equal(doc.summary, 'alive (kernel lock held)')
    assert.equal(doc.busy, true)
  })

  it('a crashed holder (SIGKILLed): exit 0, "stale: holder_dead — its kernel lock is free", free to take', async () => {
    const cwd = workspace('cli-crashed')
    const h = await crashedHolder(cwd, 'goal-crashed')
    const r = await tool(['status', cwd])
    assert.equal(r.code, 0, r.stderr)
    assert.match(r.stdout, /^state +stale: holder_dead — its kernel lock is free$/m)
    assert.match(r.stdout, /^goal +goal-crashed$/m)
    assert.match(r.stdout, new RegExp(`^pid +${h.pid}\\b`, 'm'))
    assert.match(r.stdout, /free to take/)
    const doc = JSON.parse((await tool(['status', cwd, '--json'])).stdout)
    assert.equal(doc.state, 'stale')
    assert.equal(doc.reason, 'holder_dead')
    assert.equal(doc.evidence, 'kernel_lock')
    assert.equal(doc.busy, false)
  })

  it("held by an original-module holder (pid and start time only): exit 1, evidence pid", async () => {
    const cwd = workspace('cli-original')
    const child = await originalHolder(cwd, 'goal-original')
    const r = await tool(['status', cwd])
    assert.equal(r.code, 1, r.stderr)
    assert.match(r.stdout, new RegExp(`^state +held: alive \\(pid ${child.pid} running\\)$`, 'm'))
    assert.match(r.stdout, new RegExp(`^pid +${child.pid}$`, 'm')) // no host in original records
    const doc = JSON.parse((await tool(['status', cwd, '--json'])).stdout)
    assert.equal(doc.state, 'held')
    assert.equal(doc.evidence, 'pid')
    assert.equal(doc.record.goalId, 'goal-original')
  })
})

describe('workspace-lock list and reclaim', () => {
  /** One repository, three workspaces (subdirectories): held, crashed, an original holder alive but with a 75 s old heartbeat. */
  async function threeLocks() {
    const root = workspace('cli-many')
    const [a, b, c] = ['a', 'b', 'c'].map((d) => path.join(root, d))
    for (const d of [a, b, c]) fs.mkdirSync(d)
    const h = await holder(a, 'goal-a')
    await crashedHolder(b, 'goal-b')
    await originalHolder(c, 'goal-c', 75_000)
    const dir = path.dirname(workspaceLockPath(a))
    assert.equal(path.dirname(workspaceLockPath(c)), dir)
    return { root, a, b, c, h, dir, paths: [a, b, c].map((d) => workspaceLockPath(d)) }
  }

  it('list: one row per lock with the same facts; plain columns off a terminal; --json', async () => {
    const { a, h, dir, paths } = await threeLocks()
    const r = await tool(['list', dir])
    assert.equal(r.code, 0, r.stderr)
    const [header, ...rows] = r.stdout.trimEnd().split('\n').map((line) => line.split('\t'))
    assert.deepEqual(header, ['LOCK', 'STATE', 'GOAL', 'PID', 'HOST', 'ACQUIRED', 'HEARTBEAT', 'WHY'])
    assert.equal(rows.length, 3)
    const byGoal = Object.fromEntries(rows.map((row) => [row[2], row]))
    assert.equal(byGoal['goal-a'][0], paths[0])
    assert.equal(byGoal['goal-a'][1], 'alive')
    assert.equal(byGoal['goal-a'][3], String(h.pid))
    assert.equal(byGoal['goal-a'][7], 'kernel lock held')
    assert.deepEqual([byGoal['goal-b'][1], byGoal['goal-b'][7]], ['stale', 'holder_dead: its kernel lock is free'])
    assert.equal(byGoal['goal-c'][1], 'stale')
    assert.match(byGoal['goal-c'][7], /^heartbeat_stale: heartbeat 75 s old$/)
    // --json, and the default directory: the current workspace's.
    const j = await tool(['list', '--json'], { cwd: a })
    const doc = JSON.parse(j.stdout)
    assert.equal(doc.dir, dir)
    assert.deepEqual(
      doc.locks.map((l) => [l.record.goalId, l.state, l.reason]).sort(),
      [['goal-a', 'held', undefined], ['goal-b', 'stale', 'holder_dead'], ['goal-c', 'stale', 'heartbeat_stale']],
    )
  })

  it('reclaim --dry-run names the stale locks and why, removing nothing; reclaim removes them', async () => {
    const { a, dir, paths } = await threeLocks()
    const dry = await tool(['reclaim', dir, '--dry-run'])
    assert.equal(dry.code, 0, dry.stderr)
    assert.match(dry.stdout, new RegExp(`^would remove  ${paths[1]}  goal-b \\(pid \\d+\\): holder_dead — its kernel lock is free$`, 'm'))
    assert.match(dry.stdout, new RegExp(`^would remove  ${paths[2]}  goal-c \\(pid \\d+\\): heartbeat_stale — heartbeat 75 s old$`, 'm'))
    assert.doesNotMatch(dry.stdout, /goal-a/)
    assert.match(dry.stdout, /2 stale locks would be removed, 1 kept/)
    for (const p of paths) assert.ok(fs.existsSync(p), `${p} must still exist`)

    const dryJson = JSON.parse((await tool(['reclaim', dir, '--dry-run', '--json'])).stdout)
    assert.equal(dryJson.dryRun, true)
    assert.deepEqual(dryJson.removed, [])
    assert.deepEqual(dryJson.stale.map((e) => [e.goalId, e.reason]).sort(), [['goal-b', 'holder_dead'], ['goal-c', 'heartbeat_stale']])

    const r = await tool(['reclaim', dir, '--json'])
    assert.equal(r.code, 0, r.stderr)
    const doc = JSON.parse(r.stdout)
    assert.deepEqual(doc.removed.map((e) => [e.lockPath, e.reason]).sort(), [[paths[1], 'holder_dead'], [paths[2], 'heartbeat_stale']].sort())
    assert.equal(doc.kept, 1)
    assert.deepEqual(paths.map((p) => fs.existsSync(p)), [true, false, false])
    assert.equal(isWorkspaceBusy(a), 'goal-a')
    const again = await tool(['reclaim', dir])
    assert.match(again.stdout, /^no stale locks in .* \(1 kept\)$/m)
  })
})

describe('workspace-lock list and reclaim, given a workspace instead of a locks directory', () => {
  /** Tab-separated rows of `list` (off a terminal), without the header. */
  const rowsOf = (r) => r.stdout.trimEnd().split('\n').slice(1).map((line) => line.split('\t'))

  it('list <workspace> lists its locks directory: the rows of list <locks dir>; --json names both', async () => {
    const root = workspace('cli-list-ws')
    const [a, b] = ['a', 'b'].map((d) => path.join(root, d))
    for (const d of [a, b]) fs.mkdirSync(d)
    const h = await holder(a, 'goal-a')
    await crashedHolder(b, 'goal-b')
    const dir = path.dirname(workspaceLockPath(a))
    const byDir = await tool(['list', dir])
    assert.equal(byDir.code, 0, byDir.stderr)
    assert.equal(rowsOf(byDir).length, 2)
    const sorted = (r) => rowsOf(r).map((row) => row.filter((_, i) => i !== 6)).sort() // not the heartbeat's age
    for (const [args, opts] of [[['list', a]], [['list', b]], [['list', root]], [['list', 'a'], { cwd: root }]]) {
      const r = await tool(args, opts)
      assert.equal(r.code, 0, `${args}: ${r.stderr}`)
      assert.deepEqual(sorted(r), sorted(byDir), `${args.join(' ')} lists ${dir}`)
    }
    const byGoal = Object.fromEntries(rowsOf(await tool(['list', a])).map((row) => [row[2], row]))
    assert.deepEqual([byGoal['goal-a'][1], byGoal['goal-a'][3]], ['alive', String(h.pid)])
    assert.equal(byGoal['goal-b'][1], 'stale')
    const doc = JSON.parse((await tool(['list', a, '--json'])).stdout)
    assert.equal(doc.dir, dir)
    assert.equal(doc.workspace, a)
    assert.deepEqual(doc.locks.map((l) => l.record.goalId).sort(), ['goal-a', 'goal-b'])
    // Given the locks directory itself, that is what it lists (no workspace in between).
    const direct = JSON.parse((await tool(['list', dir, '--json'])).stdout)
    assert.equal(direct.dir, dir)
    assert.equal(direct.workspace, undefined)
  })

  it("a workspace's own *.lock files (yarn.lock, Cargo.lock) are not its locks: list shows none, reclaim removes none of them", async () => {
    const ws = workspace('cli-own-locks')
    fs.mkdirSync(path.join(ws, '.git'))
    const own = ['yarn.lock', 'Cargo.lock', 'flake.lock'].map((n) => path.join(ws, n))
    for (const f of own) {
      fs.writeFileSync(f, '# not a workspace lock\n')
      setAge(f, 3_600_000) // an hour old: "corrupt" and old enough to delete, were it a lockfile
    }
    await crashedHolder(ws, 'goal-dead')
    const list = await tool(['list', ws])
    assert.equal(list.code, 0, list.stderr)
    assert.deepEqual(rowsOf(list).map((row) => [row[0], row[1], row[2]]), [[workspaceLockPath(ws), 'stale', 'goal-dead']])
    const dry = JSON.parse((await tool(['reclaim', ws, '--dry-run', '--json'])).stdout)
    assert.deepEqual(dry.stale.map((e) => e.lockPath), [workspaceLockPath(ws)])
    const r = await tool(['reclaim', ws])
    assert.equal(r.code, 0, r.stderr)
    assert.match(r.stdout, /^1 stale lock removed, 0 kept$/m)
    assert.equal(fs.existsSync(workspaceLockPath(ws)), false, 'the dead goal\'s lock is gone')
    for (const f of own) assert.ok(fs.existsSync(f), `${path.basename(f)} is untouched`)
  })

  it('a locks directory by any other name is still one: it holds lockfiles', async () => {
    const ws = workspace('cli-custom-dir')
    await crashedHolder(ws, 'goal-elsewhere')
    const custom = path.join(ws, 'kept-locks')
    fs.mkdirSync(custom)
    const name = path.basename(workspaceLockPath(ws))
    fs.copyFileSync(workspaceLockPath(ws), path.join(custom, name))
    const doc = JSON.parse((await tool(['list', custom, '--json'])).stdout)
    assert.equal(doc.dir, custom)
    assert.equal(doc.workspace, undefined)
    assert.deepEqual(doc.locks.map((l) => [path.basename(l.lockPath), l.record.goalId]), [[name, 'goal-elsewhere']])
  })
})

describe('workspace-lock run', () => {
  it('holds the lock while CMD runs (default goal cli-<pid>), releases after, exits 0', async () => {
    const cwd = workspace('cli-run')
    const t = startTool(['run', cwd, '--', node, CMD, 'sleep', '800'], { timeoutMs: 15_000 })
    assert.equal(await t.nextLine(), 'started') // CMD's stdout is the tool's
    assert.equal(isWorkspaceBusy(cwd), `cli-${t.pid}`)
    assert.equal(await t.nextLine(), 'done')
    assert.deepEqual(await t.exited, { code: 0, signal: null })
    assert.equal(isWorkspaceBusy(cwd), undefined)
    assert.equal(fs.existsSync(workspaceLockPath(cwd)), false)
  })

  it("exits with CMD's status: 3, 128+15 when CMD dies of SIGTERM, 127 when CMD cannot start", async () => {
    const cwd = workspace('cli-status')
    const three = await tool(['run', cwd, '--goal', 'g', '--', node, CMD, 'exit', '3'])
    assert.equal(three.code, 3, three.stderr)
    const term = await tool(['run', cwd, '--', node, CMD, 'kill', 'SIGTERM'])
    assert.equal(term.code, 128 + 15, term.stderr)
    const missing = await tool(['run', cwd, '--', path.join(cwd, 'no-such-command')])
    assert.equal(missing.code, 127)
    assert.match(missing.stderr, /^workspace-lock: cannot run .*no-such-command: command not found\n$/)
    oneLine(missing.stderr)
    assert.equal(fs.existsSync(workspaceLockPath(cwd)), false, 'released every time')
  })

  it('forwards SIGTERM sent to the tool to CMD, then releases', async () => {
    const cwd = workspace('cli-forward')
    const t = startTool(['run', cwd, '--goal', 'goal-trap', '--', node, CMD, 'trap'], { timeoutMs: 15_000 })
    assert.equal(await t.nextLine(), 'ready')
    assert.equal(isWorkspaceBusy(cwd), 'goal-trap')
    t.kill('SIGTERM')
    assert.equal(await t.nextLine(), 'got SIGTERM')
    assert.deepEqual(await t.exited, { code: 7, signal: null })
    assert.equal(isWorkspaceBusy(cwd), undefined)
  })

  it('warns on stderr when the lock is lost while CMD runs (lockfile deleted by hand)', { timeout: 15_000 }, async () => {
    const cwd = workspace('cli-lost')
    const t = startTool(['run', cwd, '--goal', 'goal-lost', '--', node, CMD, 'sleep', '9000'], { timeoutMs: 15_000 })
    assert.equal(await t.nextLine(), 'started')
    fs.unlinkSync(workspaceLockPath(cwd))
    // The addon's heartbeat thread notices within one refresh period (at most 5 s).
    const deadline = performance.now() + 8000
    while (!/warning: lost the workspace lock/.test(t.stderr()) && performance.now() < deadline) await sleep(50)
    assert.match(t.stderr(), /^workspace-lock: warning: lost the workspace lock of .* while the command runs: /m)
    t.kill('SIGTERM') // CMD does not trap it: it dies of it, and so the tool exits 128+15
    assert.deepEqual(await t.exited, { code: 128 + 15, signal: null })
  })

  it('--no-wait on a busy workspace exits 1 at once with a clear message, without running CMD', async () => {
    const cwd = workspace('cli-nowait')
    const h = await holder(cwd, 'goal-busy')
    const r = await tool(['run', cwd, '--no-wait', '--', node, CMD, 'sleep', '0'])
    assert.equal(r.code, 1, r.stderr)
    assert.match(r.stderr, new RegExp(`^workspace-lock: workspace busy: cwd=.* held by goalId=goal-busy \\(pid=${h.pid}\\)\n$`))
    oneLine(r.stderr)
    assert.equal(r.stdout, '')
    assert.equal(isWorkspaceBusy(cwd), 'goal-busy')
  })

  it('--timeout 0.3 on a busy workspace exits 1 after ~0.3 s, saying whom it waited for', async () => {
    const cwd = workspace('cli-timeout')
    const h = await holder(cwd, 'goal-slow')
    const r = await tool(['run', cwd, '--timeout', '0.3', '--', node, CMD, 'sleep', '0'])
    assert.equal(r.code, 1, r.stderr)
    assert.ok(r.ms >= 300 && r.ms < 3000, `took ${r.ms} ms`)
    assert.match(r.stderr, new RegExp(`waiting for goal goal-slow \\(pid ${h.pid}\\)`))
    assert.match(r.stderr, /^workspace-lock: timed out after 300 ms waiting for goal goal-slow/m)
    assert.equal(r.stdout, '')
  })

  it('waits for the holder, saying so on stderr, then runs CMD', async () => {
    const cwd = workspace('cli-queue')
    const h = await holder(cwd, 'goal-first')
    const t = startTool(['run', cwd, '--goal', 'goal-second', '--', node, CMD, 'sleep', '0'], { timeoutMs: 15_000 })
    await sleep(300)
    assert.match(t.stderr(), new RegExp(`^workspace-lock: waiting for goal goal-first \\(pid ${h.pid}\\) to release `, 'm'))
    assert.equal(isWorkspaceBusy(cwd), 'goal-first')
    h.send('release')
    assert.equal(await t.nextLine(), 'started')
    assert.deepEqual(await t.exited, { code: 0, signal: null })
  })
})

describe('workspace-lock wait', () => {
  it('returns when the holder releases', async () => {
    const cwd = workspace('cli-wait')
    const h = await holder(cwd, 'goal-w')
    const t = startTool(['wait', cwd], { timeoutMs: 15_000 })
    await sleep(300)
    assert.equal(t.child.exitCode, null, 'still waiting')
    assert.match(t.stderr(), /waiting for goal goal-w/)
    const released = performance.now()
    h.send('release')
    assert.match(await t.nextLine(), /is free after .* \(waited for goal-w\)$/)
    assert.deepEqual(await t.exited, { code: 0, signal: null })
    assert.ok(performance.now() - released < 2000)
    assert.equal(fs.existsSync(workspaceLockPath(cwd)), false, 'wait leaves no lock behind')
  })

  it('--json: free at once on a free workspace; timedOut and exit 1 on a busy one', async () => {
    const cwd = workspace('cli-wait-json')
    const free = await tool(['wait', cwd, '--json'])
    assert.equal(free.code, 0, free.stderr)
    const freeDoc = JSON.parse(free.stdout)
    assert.equal(typeof freeDoc.waitedMs, 'number')
    assert.deepEqual({ ...freeDoc, waitedMs: 0 }, { cwd, lockPath: workspaceLockPath(cwd), free: true, timedOut: false, waitedMs: 0, waitedFor: [] })
    await holder(cwd, 'goal-stays')
    const busy = await tool(['wait', cwd, '--json', '--timeout', '0.2'])
    assert.equal(busy.code, 1, busy.stderr)
    const doc = JSON.parse(busy.stdout)
    assert.equal(doc.timedOut, true)
    assert.equal(doc.free, false)
    assert.deepEqual(doc.waitedFor, ['goal-stays'])
    assert.equal(doc.holder.record.goalId, 'goal-stays')
  })
})
