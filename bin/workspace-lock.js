#!/usr/bin/env node
// workspace-lock: the operators' command line of pi-crew-workspace-lock. It answers "who
// holds this workspace, since when, is it alive?", cleans up stale locks, and runs a
// command under a workspace lock the way flock(1) does.
//
// No dependencies beyond Node and the addon: the argument parser is hand-written below.
'use strict'

const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { spawn } = require('node:child_process')

const PROG = 'workspace-lock'

// Exit codes (also in the help text). `run` exits with its command's status once the
// command has started, so these only describe what happens before and around it.
const EXIT_OK = 0 // done; the workspace is free (or only stale: free to take)
const EXIT_BUSY = 1 // the workspace is held by a live goal, or a wait timed out
const EXIT_USAGE = 2 // bad command line
const EXIT_ERROR = 3 // anything else: I/O errors, the addon failing to load, …
const EXIT_NO_COMMAND = 127 // `run`: the command could not be started (as in a shell)

const FORWARDED_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP']

// `run` and `wait` trap these signals once, for their whole life, and route them to what
// is going on (abort the wait, forward to CMD, or nothing while releasing). Adding and
// removing listeners instead would restore the default action (death, lock still held)
// for an instant between the phases.
let onSignal = () => {}
function trapSignals() {
  for (const sig of FORWARDED_SIGNALS) process.on(sig, (s) => onSignal(s))
}

/** A bad command line: exit 2, with a hint to the command's help. */
class UsageError extends Error {
  constructor(message, command) {
    super(message)
    this.command = command
  }
}

/** A failure with a chosen exit code (busy, timed out, interrupted). */
class Exit extends Error {
  constructor(message, code) {
    super(message)
    this.exitCode = code
  }
}

// ---------------------------------------------------------------------------------------
// Help texts

const EXIT_CODES = `Exit codes:
  0      ok; the workspace is free (a stale lock counts as free: it is taken over on acquire)
  1      the workspace is busy (held by a live goal), or a wait timed out
  2      usage error
  3      other error (I/O, …)`

const RUN_EXIT_CODES = `Exit codes:
  (CMD)  CMD's exit status, once CMD has started; 128+N if CMD died of signal N
  1      the workspace is busy (--no-wait), or the wait timed out (--timeout)
  2      usage error
  3      other error (I/O, …)
  127    CMD could not be started
  128+N  this tool got signal N while still waiting for the lock`

const JSON_OPTION = ['--json', 'print one JSON document instead of text']
const TIMEOUT_OPTION = ['--timeout S', 'give up waiting after S seconds (exit 1)']
const VERBOSE_OPTION = ['-v, --verbose', 'say on stderr when the lock is acquired and released']

// Each command: its synopsis, what its parser accepts, its help, and its function.
const COMMANDS = {
  status: {
    usage: 'status [cwd] [--json]',
    summary: 'who holds the lock of a workspace, since when, and whether it is alive',
    positionals: ['cwd'],
    flags: ['json'],
    about: `Shows the lockfile of <cwd> (default: the current directory) and its holder: goal id,
pid, host, when it acquired the lock, the age of its heartbeat, and whether it is alive
and why ("alive (kernel lock held)", "stale: holder_dead — its kernel lock is free", …).
Exits 0 when the workspace is free or its lock is stale, 1 when a live goal holds it (or
a claim is being written), 3 when the lock path is unusable (a directory).`,
    optionHelp: [JSON_OPTION],
    run: cmdStatus,
  },
  list: {
    usage: 'list [dir] [--json]',
    summary: 'every lock of a locks directory, one row each',
    positionals: ['dir'],
    flags: ['json'],
    about: `Lists every *.lock in <dir> with the same facts as 'status'. <dir> is a locks directory
(<crewRoot>/state/workspace-locks), or a workspace, meaning its locks directory (default:
the current directory's). A table on a terminal; tab-separated columns with a header line
otherwise.`,
    optionHelp: [JSON_OPTION],
    run: cmdList,
  },
  reclaim: {
    usage: 'reclaim [dir] [--dry-run] [--json]',
    summary: 'remove the stale locks of a locks directory',
    positionals: ['dir'],
    flags: ['json', 'dry-run'],
    about: `Removes the stale locks in <dir> (a locks directory, or a workspace meaning its locks
directory, as for 'list'; a workspace's own *.lock files, such as yarn.lock, are never
touched): holders that died, pids that were recycled, heartbeats older than 60 s, corrupt
lockfiles. Live locks are never touched. Prints each removed lock and why it was stale.`,
    optionHelp: [['--dry-run', 'remove nothing; print what would be removed'], JSON_OPTION],
    run: cmdReclaim,
  },
  run: {
    usage: 'run [cwd] [--goal ID] [--no-wait] [--timeout S] [--verbose] -- CMD [ARGS…]',
    summary: 'run a command while holding the lock of a workspace (like flock(1))',
    positionals: ['cwd'],
    flags: ['no-wait', 'verbose'],
    options: ['goal', 'timeout'],
    command: true,
    about: `Takes the lock of <cwd> (default: the current directory), waiting while another goal
holds it (who it waits for is printed to stderr), runs CMD with this terminal's stdin,
stdout and stderr, and releases the lock when CMD ends, however it ends. CMD runs in the
current directory, not in <cwd>. SIGINT, SIGTERM and SIGHUP are forwarded to CMD. If the
lock is lost while CMD runs, a warning is printed to stderr.`,
    optionHelp: [
      ['--goal ID', 'the goal id written to the lockfile (default cli-<pid>)'],
      ['--no-wait', 'fail at once (exit 1) if the workspace is busy'],
      TIMEOUT_OPTION,
      VERBOSE_OPTION,
    ],
    exitCodes: RUN_EXIT_CODES,
    run: cmdRun,
  },
  wait: {
    usage: 'wait [cwd] [--timeout S] [--json] [--verbose]',
    summary: 'block until a workspace is free',
    positionals: ['cwd'],
    flags: ['json', 'verbose'],
    options: ['timeout'],
    about: `Waits until the workspace <cwd> (default: the current directory) is free, by taking its
lock and releasing it at once (a stale lock is taken over on the way). Prints who it
waits for to stderr. Exits 0 once free, 1 if the timeout passed first.`,
    optionHelp: [TIMEOUT_OPTION, JSON_OPTION, VERBOSE_OPTION],
    run: cmdWait,
  },
}

const optionLines = (rows) => rows.map(([flag, text]) => `  ${flag.padEnd(15)}${text}`).join('\n')

function globalHelp() {
  const commands = Object.values(COMMANDS).map((c) => `  ${PROG} ${c.usage}\n      ${c.summary}`)
  return `Usage: ${PROG} <command> [options]

Who holds a pi-crew workspace lock, since when, and is it alive?

Commands:
${commands.join('\n')}

Options:
${optionLines([
  ['--json', 'print one JSON document (status, list, reclaim, wait)'],
  ['-h, --help', `this help; '${PROG} <command> --help' for a command's`],
  ['--version', 'the version'],
])}

${EXIT_CODES}
  ('run' exits with its command's status: see '${PROG} run --help'.)
`
}

function commandHelp(name) {
  const c = COMMANDS[name]
  return `Usage: ${PROG} ${c.usage}

${c.about}

Options:
${optionLines([...c.optionHelp, ['-h, --help', 'this help']])}

${c.exitCodes ?? EXIT_CODES}
`
}

// ---------------------------------------------------------------------------------------
// Argument parsing

/**
 * Parses the arguments of one command against its spec: `--flag`, `--option value`,
 * `--option=value`, `-h`/`--help`, `-v` for `--verbose`, and `--`. For `run`, everything
 * after `--` is the command; elsewhere it only ends option parsing. Help wins over any
 * other mistake on the line, so that `cmd --bogus --help` still helps.
 */
function parseArgs(name, argv) {
  const spec = COMMANDS[name]
  const flags = spec.flags ?? []
  const options = spec.options ?? []
  const result = { positionals: [], flags: {}, options: {}, command: undefined, help: false }
  let error
  const fail = (message) => {
    error ??= new UsageError(message, name)
  }
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]
    if (arg === '--') {
      if (spec.command) {
        result.command = argv.slice(i + 1)
      } else {
        result.positionals.push(...argv.slice(i + 1))
      }
      break
    }
    if (arg === '-h' || arg === '--help') {
      result.help = true
      continue
    }
    if (arg === '-v' && flags.includes('verbose')) {
      result.flags.verbose = true
      continue
    }
    if (arg.startsWith('--')) {
      const eq = arg.indexOf('=')
      const key = eq < 0 ? arg.slice(2) : arg.slice(2, eq)
      if (flags.includes(key)) {
        if (eq >= 0) fail(`${name}: option '--${key}' takes no value`)
        result.flags[key] = true
      } else if (options.includes(key)) {
        const value = eq >= 0 ? arg.slice(eq + 1) : argv[++i]
        if (value === undefined) fail(`${name}: option '--${key}' needs a value`)
        else result.options[key] = value
      } else {
        fail(`${name}: unknown option '${arg}'`)
      }
      continue
    }
    if (arg.startsWith('-') && arg !== '-') {
      fail(`${name}: unknown option '${arg}'`)
      continue
    }
    result.positionals.push(arg)
  }
  if (result.help) return result
  if (error) throw error
  if (result.positionals.length > spec.positionals.length) {
    const extra = result.positionals[spec.positionals.length]
    const hint = spec.command && result.command === undefined ? " (put '--' before the command)" : ''
    throw new UsageError(`${name}: unexpected argument '${extra}'${hint}`, name)
  }
  if (spec.command && !result.command?.length) {
    throw new UsageError(`${name}: missing the command to run after '--'`, name)
  }
  return result
}

/** `--timeout S` in milliseconds, or undefined. */
function parseTimeout(name, value) {
  if (value === undefined) return undefined
  const seconds = value.trim() === '' ? NaN : Number(value)
  // AbortSignal.timeout takes whole milliseconds and at most a 32-bit signed delay.
  if (!Number.isFinite(seconds) || seconds < 0 || seconds * 1000 > 2 ** 31 - 1) {
    throw new UsageError(`${name}: --timeout expects seconds (a number from 0 to 2147483), got '${value}'`, name)
  }
  return Math.ceil(seconds * 1000)
}

// ---------------------------------------------------------------------------------------
// Output helpers

/** Colour functions for a stream: real ones on a terminal without NO_COLOR, else identity. */
function painter(stream) {
  const on = Boolean(stream.isTTY) && !process.env.NO_COLOR // no-color.org: set and non-empty
  const code = (open) => (text) => (on ? `\x1b[${open}m${text}\x1b[0m` : String(text))
  return { bold: code(1), dim: code(2), red: code(31), green: code(32), yellow: code(33), magenta: code(35) }
}

const print = (text = '') => process.stdout.write(`${text}\n`)
/** A lockfile's strings, made safe to show: a goal id is anyone's text, and control
 *  characters in it could move the cursor, recolour the terminal or break the columns. */
const safe = (value) => (value === undefined || value === null ? '-' : String(value).replace(/[\x00-\x1f\x7f-\x9f]/g, '?'))
const note = (text) => process.stderr.write(`${PROG}: ${text}\n`)
// Fencing tokens are bigints: printed as strings (exact).
const printJson = (doc) => print(JSON.stringify(doc, (_k, v) => (typeof v === 'bigint' ? String(v) : v), 2))

/** "340 ms", "1.2 s", "75 s", "12 min 5 s", "3 h 20 min". */
function duration(ms) {
  if (!Number.isFinite(ms)) return '?'
  if (ms < 1000) return `${Math.round(ms)} ms`
  const s = ms / 1000
  if (s < 10) return `${s.toFixed(1)} s`
  if (s < 120) return `${Math.round(s)} s`
  const m = Math.floor(s / 60)
  if (m < 120) return `${m} min ${Math.round(s % 60)} s`
  return `${Math.floor(m / 60)} h ${m % 60} min`
}

// ---------------------------------------------------------------------------------------
// Judging a lock: turns inspectWorkspaceLock's {state, reason, evidence} into words

/**
 * What an operator wants to read about one lock: `word` (free, alive, stale, unreadable),
 * `why` (the evidence), `summary` (both in one phrase) and `busy` (whether an acquire
 * would have to wait).
 */
function judge(st) {
  const r = st.record ?? {}
  const heartbeat = `heartbeat ${duration(st.heartbeatAgeMs)} old`
  switch (st.state) {
    case 'free':
      return { word: 'free', why: '', summary: 'free', busy: false }
    case 'held': {
      const why =
        st.evidence === 'kernel_lock'
          ? 'kernel lock held'
          : st.evidence === 'pid'
            ? `pid ${r.pid} running`
            : st.evidence === 'heartbeat'
              ? `${heartbeat}, holder on another host`
              : st.evidence === 'backend'
                ? `held on ${st.backend?.target} by goal ${st.backend?.holder?.goalId} (pid ${st.backend?.holder?.pid} on ${st.backend?.holder?.host})`
                : `judged by ${st.evidence ?? 'nothing said'}`
      // Proven alive yet not refreshing: say so plainly, so an operator can act.
      const late = st.heartbeatLate ? `, heartbeat not refreshed for ${duration(st.heartbeatAgeMs)}: stopped or hung?` : ''
      return { word: 'alive', why: `${why}${late}`, summary: `alive (${why})${late}`, busy: true }
    }
    case 'stale': {
      const why =
        {
          holder_dead: st.evidence === 'kernel_lock' ? 'its kernel lock is free' : `pid ${r.pid} is not running`,
          pid_recycled: `pid ${r.pid} now belongs to another process`,
          heartbeat_stale: heartbeat,
          corrupt: `unparsable lockfile, ${duration(st.ageMs)} old`,
        }[st.reason] ?? 'no detail given'
      return { word: 'stale', why: `${st.reason}: ${why}`, summary: `stale: ${st.reason} — ${why}`, busy: false }
    }
    case 'unreadable': {
      // Both count as not free: a claim being written is busy, a directory blocks acquiring.
      const why =
        st.reason === 'being_written'
          ? 'empty or unparsable and only just written: a claim in progress'
          : st.reason === 'directory'
            ? 'the lock path is a directory'
            : 'no detail given'
      return { word: 'unreadable', why: `${st.reason}: ${why}`, summary: `unreadable: ${st.reason} — ${why}`, busy: true }
    }
    default:
      return { word: String(st.state), why: '', summary: String(st.state), busy: true }
  }
}

/** The status as one JSON-friendly object: the package's fields plus our reading of them. */
function statusDoc(st) {
  const j = judge(st)
  return { ...st, summary: j.summary, busy: j.busy }
}

/** "2026-11-24T05:09:42.952Z (3.2 s ago)". */
function acquiredText(acquiredAt) {
  if (typeof acquiredAt !== 'string') return '?'
  const age = Date.now() - Date.parse(acquiredAt)
  return Number.isFinite(age) ? `${acquiredAt} (${duration(age)} ago)` : acquiredAt
}

// ---------------------------------------------------------------------------------------
// Commands

function cmdStatus(args, lock) {
  const cwd = path.resolve(args.positionals[0] ?? '.')
  const st = lock.inspectWorkspaceLock(cwd)
  const j = judge(st)
  // A typo in the path would otherwise read as "free": say so, but still answer.
  if (!fs.existsSync(cwd)) note(`note: ${cwd} does not exist`)
  if (args.flags.json) {
    printJson({ cwd, ...statusDoc(st) })
  } else {
    const c = painter(process.stdout)
    const colour = { free: c.green, alive: c.yellow, stale: c.magenta, unreadable: c.red }[j.word] ?? String
    const row = (label, value) => print(`${c.dim(label.padEnd(10))} ${value}`)
    row('workspace', cwd)
    row('lock', st.lockPath)
    row('state', colour(safe(st.state === 'held' ? `held: ${j.summary}` : j.summary)))
    if (st.record) {
      const r = st.record
      row('goal', safe(r.goalId))
      row('pid', r.host === undefined ? safe(r.pid) : `${safe(r.pid)} on ${safe(r.host)}`)
      row('acquired', safe(acquiredText(r.acquiredAt)))
      row('heartbeat', `${duration(st.heartbeatAgeMs)} ago`)
    }
    // A lock backend (WORKSPACE_LOCK_BACKEND): the server's view, with the fencing token.
    if (st.backend) {
      const h = st.backend.holder
      row('backend', safe(`${st.backend.target} (${st.backend.state})`))
      if (h) {
        row('holder', safe(`goal ${h.goalId} (pid ${h.pid} on ${h.host}), ${h.waiters} waiting`))
        row('token', safe(String(h.fencingToken)))
      }
    }
    if (st.state === 'stale') row('', `free to take: the next acquire takes it over (or run '${PROG} reclaim')`)
  }
  if (st.state === 'unreadable' && st.reason === 'directory') return EXIT_ERROR
  return j.busy ? EXIT_BUSY : EXIT_OK
}

// A lockfile's name: the SHA-256 of a workspace path, in hex.
const LOCK_NAME = /^[0-9a-f]{64}\.lock$/

/**
 * Whether `dir` is a locks directory rather than a workspace: named `workspace-locks`
 * (always so in pi-crew's layout: <crewRoot>/state/workspace-locks), or holding a lockfile
 * or this package's `.owners` file (`.owners.d` on macOS). A workspace's own `*.lock` files (yarn.lock,
 * Cargo.lock, flake.lock…) do not make it one.
 */
function isLocksDir(dir) {
  if (path.basename(dir) === 'workspace-locks') return true
  let names
  try {
    names = fs.readdirSync(dir)
  } catch {
    return false
  }
  return names.some((n) => LOCK_NAME.test(n) || n === '.owners' || n === '.owners.d')
}

/**
 * The locks directory a command works on, and the workspace it was found from (if it was):
 * by default the current directory's workspace's; given a locks directory, that one; given
 * a workspace, its locks directory (the folder of `workspaceLockPath(workspace)`).
 */
function locksDir(args, lock) {
  const arg = args.positionals[0]
  const workspace = arg === undefined ? process.cwd() : path.resolve(arg)
  if (arg !== undefined && isLocksDir(workspace)) return { dir: workspace }
  return { dir: path.dirname(lock.workspaceLockPath(workspace)), workspace }
}

function cmdList(args, lock) {
  const { dir, workspace } = locksDir(args, lock)
  const locks = lock.inspectWorkspaceLocks(dir)
  if (args.flags.json) {
    printJson({ dir, workspace, locks: locks.map(statusDoc) })
    return EXIT_OK
  }
  const tty = Boolean(process.stdout.isTTY)
  const header = ['LOCK', 'STATE', 'GOAL', 'PID', 'HOST', 'ACQUIRED', 'HEARTBEAT', 'WHY']
  const rows = locks.map((st) => {
    const r = st.record ?? {}
    const j = judge(st)
    // On a terminal the 64-hex-digit names only need to be told apart; scripts get them whole.
    const base = path.basename(st.lockPath)
    const name = !tty ? st.lockPath : base.length > 13 ? `${base.slice(0, 12)}…` : base
    const acquired = typeof r.acquiredAt === 'string' && tty ? acquiredText(r.acquiredAt) : r.acquiredAt
    const heartbeat = st.heartbeatAgeMs === undefined ? undefined : duration(st.heartbeatAgeMs)
    return [name, j.word, r.goalId, r.pid, r.host, acquired, heartbeat, j.why || undefined].map(safe)
  })
  if (!tty) {
    for (const row of [header, ...rows]) print(row.join('\t'))
    return EXIT_OK
  }
  const of = workspace === undefined ? '' : ` (the locks directory of ${workspace})`
  if (!rows.length) {
    print(`no locks in ${dir}${of}`)
    return EXIT_OK
  }
  const c = painter(process.stdout)
  const colour = { free: c.green, alive: c.yellow, stale: c.magenta, unreadable: c.red }
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i].length)))
  // Pad, then colour: escape codes would throw the column widths off.
  const line = (row, paint = () => String) =>
    row
      .map((cell, i) => paint(i)(i === row.length - 1 ? cell : cell.padEnd(widths[i])))
      .join('  ')
  print(c.dim(`${dir}${of}`))
  print(c.bold(line(header)))
  for (const row of rows) print(line(row, (i) => (i === 1 ? (colour[row[1]] ?? String) : String)))
  return EXIT_OK
}

function cmdReclaim(args, lock) {
  const { dir, workspace } = locksDir(args, lock)
  const dryRun = Boolean(args.flags['dry-run'])
  // The package's reclaim only returns paths: judge first to be able to say why.
  const judged = lock.inspectWorkspaceLocks(dir)
  const entry = (st) => ({
    lockPath: st.lockPath,
    state: st.state,
    reason: st.reason,
    evidence: st.evidence,
    summary: judge(st).summary,
    goalId: st.record?.goalId,
    pid: st.record?.pid,
  })
  const stale = judged.filter((st) => st.state === 'stale').map(entry)
  let removed = []
  if (!dryRun) {
    const byPath = new Map(stale.map((e) => [e.lockPath, e]))
    // A lock can turn stale between the two calls (its holder died meanwhile).
    removed = lock.reclaimStaleLocks(dir).map((p) => byPath.get(p) ?? { lockPath: p, summary: 'stale (became stale after it was inspected)' })
  }
  const gone = new Set((dryRun ? stale : removed).map((e) => e.lockPath))
  // What stays, and why: alive, a claim being written, a directory in the way.
  const keptLocks = judged.filter((st) => !gone.has(st.lockPath)).map(entry)
  const kept = keptLocks.length
  if (args.flags.json) {
    printJson({ dir, workspace, dryRun, stale, removed, kept, keptLocks })
    return EXIT_OK
  }
  const listed = dryRun ? stale : removed
  for (const e of listed) {
    const who = e.goalId === undefined ? '' : `${safe(e.goalId)} (pid ${safe(e.pid)}): `
    print(`${dryRun ? 'would remove' : 'removed'}  ${e.lockPath}  ${who}${safe(e.summary.replace(/^stale: /, ''))}`)
  }
  // Live holders need no word; what is kept for another reason gets one.
  for (const e of keptLocks.filter((k) => k.state === 'unreadable')) print(`kept  ${e.lockPath}  ${safe(e.summary)}`)
  const locks = (n) => `${n} stale lock${n === 1 ? '' : 's'}`
  if (!listed.length) print(`no stale locks in ${dir} (${kept} kept)`)
  else print(`${locks(listed.length)} ${dryRun ? 'would be removed' : 'removed'}, ${kept} kept`)
  return EXIT_OK
}

/**
 * Acquires the lock of `cwd`, showing on stderr who it waits for. Handles --no-wait,
 * --timeout, and SIGINT/SIGTERM/SIGHUP while waiting (abort, exit 128+N). Resolves with
 * the handle and what the wait looked like.
 */
async function acquireShowingWait(lock, cwd, goalId, { noWait = false, timeoutMs, onCompromised }) {
  const started = Date.now()
  const controller = new AbortController()
  let interruptedBy
  const interrupt = (sig) => {
    interruptedBy = sig
    controller.abort()
  }
  onSignal = interrupt
  // AbortSignal.timeout, chained into our controller (AbortSignal.any needs Node 20).
  const timeout = timeoutMs === undefined ? undefined : AbortSignal.timeout(timeoutMs)
  const onTimeout = () => controller.abort()
  timeout?.addEventListener('abort', onTimeout, { once: true })

  const waitedFor = []
  const progress = waitDisplay(cwd, started)
  const watch = () => {
    let holder = lock.isWorkspaceBusy(cwd)
    // With a backend, once the server has granted this process its lock, the wait is for
    // the file lock of a file-only holder: the server would name this very goal.
    if (holder === goalId) holder = lock.isWorkspaceBusy(cwd, { backend: 'file' })
    if (holder === goalId) return
    if (holder !== undefined && holder !== waitedFor[waitedFor.length - 1]) {
      waitedFor.push(holder)
      progress.holder(holder, holderPid(lock, cwd, holder))
    }
  }
  if (!noWait) watch()
  // The addon wakes the acquire itself; this poll only keeps the "waiting for" line true
  // when the lock changes hands among other waiters.
  const poll = noWait ? undefined : setInterval(watch, 100)
  try {
    const handle = await lock.acquireWorkspaceLock(cwd, goalId, {
      failOnWorkspaceBusy: noWait,
      signal: controller.signal,
      onCompromised,
    })
    return { handle, waitedFor, waitedMs: Date.now() - started }
  } catch (err) {
    const last = waitedFor[waitedFor.length - 1]
    const holder = last === undefined ? '' : ` for ${describeHolder(last, holderPid(lock, cwd, last))}`
    if (interruptedBy) {
      throw new Exit(`interrupted by ${interruptedBy} while waiting${holder}`, 128 + os.constants.signals[interruptedBy])
    }
    if (timeout?.aborted) {
      const e = new Exit(`timed out after ${duration(timeoutMs)} waiting${holder}`, EXIT_BUSY)
      e.waitedFor = waitedFor
      throw e
    }
    // The package gives this rejection no code: its message is the only way to tell it.
    if (/^workspace busy:/.test(err?.message)) throw new Exit(err.message, EXIT_BUSY)
    throw err
  } finally {
    clearInterval(poll)
    progress.done()
    timeout?.removeEventListener('abort', onTimeout)
    onSignal = () => {}
  }
}

/** The pid of the current lockfile's holder, if it is still `goalId`. */
function holderPid(lock, cwd, goalId) {
  try {
    const r = lock.inspectWorkspaceLock(cwd).record
    return r?.goalId === goalId ? r.pid : undefined
  } catch {
    return undefined
  }
}

const describeHolder = (goalId, pid) => (pid === undefined ? `goal ${safe(goalId)}` : `goal ${safe(goalId)} (pid ${safe(pid)})`)

/**
 * What the user sees while waiting: on a terminal, one line redrawn with a spinner and the
 * time waited; otherwise one plain line each time the holder changes (logs stay clean).
 */
function waitDisplay(cwd, started) {
  const tty = Boolean(process.stderr.isTTY)
  let text
  let timer
  let frame = 0
  const frames = '⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏'
  const draw = () => {
    const spin = frames[frame++ % frames.length]
    process.stderr.write(`\r\x1b[K${spin} ${text} — ${duration(Date.now() - started)}`)
  }
  return {
    holder(goalId, pid) {
      text = `waiting for ${describeHolder(goalId, pid)} to release ${cwd}`
      if (!tty) return note(text)
      draw()
      timer ??= setInterval(draw, 100)
    },
    done() {
      clearInterval(timer)
      if (!tty || text === undefined) return
      // Leave a trace of the wait in place of the redrawn line.
      process.stderr.write('\r\x1b[K')
      note(`${text.replace(/^waiting/, 'waited')} (${duration(Date.now() - started)})`)
    },
  }
}

async function cmdRun(args, lock) {
  const cwd = path.resolve(args.positionals[0] ?? '.')
  const goalId = args.options.goal ?? `cli-${process.pid}`
  if (goalId === '') throw new UsageError('run: --goal needs a non-empty id', 'run')
  const timeoutMs = parseTimeout('run', args.options.timeout)
  const verbose = Boolean(args.flags.verbose)
  const onCompromised = (err) => note(`warning: lost the workspace lock of ${cwd} while the command runs: ${err.message}`)
  trapSignals()

  const { handle } = await acquireShowingWait(lock, cwd, goalId, { noWait: Boolean(args.flags['no-wait']), timeoutMs, onCompromised })
  try {
    if (handle.reclaimed) {
      const r = handle.reclaimed
      note(`took over the stale lock of ${describeHolder(r.goalId, r.pid)}: ${r.reason}`)
    }
    if (verbose) note(`acquired the lock of ${cwd} as goal ${goalId}`)
    // A lock backend's fencing token, for CMD to hand to the resources it writes.
    const env = handle.fencingToken === undefined ? undefined : { ...process.env, WORKSPACE_LOCK_TOKEN: String(handle.fencingToken) }
    return await runCommand(args.command, env)
  } finally {
    // Said before, not after: a waiter may take the lock the instant it is released.
    if (verbose) note(`releasing the lock of ${cwd}`)
    handle.release()
  }
}

/**
 * Runs `command` with inherited stdio, forwarding signals, and resolves with a shell's
 * exit status: its code, 128+N if it died of signal N, 127 if it could not be started.
 */
function runCommand([file, ...argv], env) {
  return new Promise((resolve) => {
    let child
    const done = (status) => {
      onSignal = () => {} // CMD is gone: what is left is to release, and that must happen
      resolve(status)
    }
    // On a terminal, Ctrl-C reaches CMD twice (from the terminal and from us): programs
    // treat a repeated SIGINT like one.
    onSignal = (sig) => child?.kill(sig)
    try {
      child = spawn(file, argv, { stdio: 'inherit', env })
    } catch (err) {
      note(`cannot run ${file}: ${err.message}`)
      return done(EXIT_NO_COMMAND)
    }
    child.once('error', (err) => {
      // 'exit' may or may not follow a spawn error; the first of the two settles.
      const why = { ENOENT: 'command not found', EACCES: 'permission denied' }[err.code] ?? err.message
      note(`cannot run ${file}: ${why}`)
      done(EXIT_NO_COMMAND)
    })
    child.once('exit', (code, signal) => done(code ?? 128 + (os.constants.signals[signal] ?? 0)))
  })
}

async function cmdWait(args, lock) {
  const cwd = path.resolve(args.positionals[0] ?? '.')
  const timeoutMs = parseTimeout('wait', args.options.timeout)
  const json = Boolean(args.flags.json)
  trapSignals()
  let result
  try {
    result = await acquireShowingWait(lock, cwd, `cli-wait-${process.pid}`, { timeoutMs })
  } catch (err) {
    if (json && err instanceof Exit && err.exitCode === EXIT_BUSY) {
      const st = lock.inspectWorkspaceLock(cwd)
      printJson({ cwd, lockPath: st.lockPath, free: false, timedOut: true, waitedFor: err.waitedFor, holder: statusDoc(st) })
    }
    throw err
  }
  const { handle, waitedFor, waitedMs } = result
  // Free now: let it go at once, the point was only to see it free.
  const reclaimed = handle.reclaimed
  handle.release()
  if (args.flags.verbose && reclaimed) note(`took over the stale lock of ${describeHolder(reclaimed.goalId, reclaimed.pid)}: ${reclaimed.reason}`)
  if (json) {
    printJson({ cwd, lockPath: handle.lockPath, free: true, timedOut: false, waitedMs, waitedFor, reclaimed })
  } else {
    const after = waitedFor.length ? ` after ${duration(waitedMs)} (waited for ${waitedFor.map(safe).join(', ')})` : ''
    print(`${cwd} is free${after}`)
  }
  return EXIT_OK
}

// ---------------------------------------------------------------------------------------
// Main

async function main(argv) {
  // Global options come before the command; --json there applies to the command.
  const lead = []
  while (argv.length && argv[0].startsWith('-')) {
    const arg = argv.shift()
    if (arg === '-h' || arg === '--help') {
      process.stdout.write(globalHelp())
      return EXIT_OK
    }
    if (arg === '--version') {
      print(`${PROG} ${require('../package.json').version}`)
      return EXIT_OK
    }
    if (arg === '--json') lead.push(arg)
    else throw new UsageError(`unknown option '${arg}'`)
  }
  let name = argv.shift()
  if (name === 'help') {
    name = argv.shift()
    if (name === undefined) {
      process.stdout.write(globalHelp())
      return EXIT_OK
    }
    argv = ['--help']
  }
  if (name === undefined) throw new UsageError('missing command')
  if (!Object.hasOwn(COMMANDS, name)) throw new UsageError(`unknown command '${name}'`)
  const args = parseArgs(name, [...lead, ...argv])
  if (args.help) {
    process.stdout.write(commandHelp(name))
    return EXIT_OK
  }
  return COMMANDS[name].run(args, loadAddon())
}

function loadAddon() {
  try {
    return require('../index.js')
  } catch (err) {
    throw new Error(`cannot load the native addon: ${firstLine(err)}`)
  }
}

const firstLine = (err) => String(err?.message ?? err).split('\n')[0]

/** One line on stderr, no stack: the exit code says what kind of failure it was. */
function report(err) {
  if (err instanceof UsageError) {
    const help = err.command ? `${PROG} ${err.command} --help` : `${PROG} --help`
    note(`${err.message} (see '${help}')`)
    return EXIT_USAGE
  }
  // A lock backend's failures carry a code (README "Beyond one machine"): say it.
  note(typeof err?.code === 'string' && err.code.startsWith('EBACKEND') ? `${err.code}: ${firstLine(err)}` : firstLine(err))
  return err instanceof Exit ? err.exitCode : EXIT_ERROR
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code
  },
  (err) => {
    process.exitCode = report(err)
  },
)
