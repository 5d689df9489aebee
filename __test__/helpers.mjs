// Shared helpers for the Node tests: temp workspaces that clean up after themselves, child
// processes that are always bounded in time and killed at the end, and small probes.
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { createRequire } from 'node:module'

export const require = createRequire(import.meta.url)
export const lock = require('../index.js')
export const fixturesDir = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures')

const made = new Set()
const children = new Set()

/** A fresh directory under the OS temp dir, removed at process exit. */
export function tempDir(label = 'wslock') {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `${label}-`))
  made.add(dir)
  return dir
}

/** A workspace the way pi-crew's own tests make one: a temp dir holding `.crew/state/workspace-locks`. */
export function workspace(label = 'wslock-ws') {
  const cwd = tempDir(label)
  fs.mkdirSync(path.join(cwd, '.crew', 'state', 'workspace-locks'), { recursive: true })
  return cwd
}

export function removeAll() {
  for (const child of children) child.kill('SIGKILL')
  for (const dir of made) fs.rmSync(dir, { recursive: true, force: true })
  made.clear()
}
process.on('exit', removeAll)

/**
 * Starts `node fixtures/<script> ...args` (optionally under `prefix`), line-buffered. The child is SIGKILLed after
 * `timeoutMs` and at the end of the test process, whatever happens.
 */
export function startChild(script, args = [], { timeoutMs = 60_000, env = {}, prefix = [] } = {}) {
  // `prefix` runs node under another command (e.g. `unshare --pid --fork ...`).
  const argv = [...prefix, process.execPath, path.join(fixturesDir, script), ...args]
  const child = spawn(argv[0], argv.slice(1), {
    stdio: ['pipe', 'pipe', 'pipe'],
    env: { ...process.env, ...env },
  })
  children.add(child)
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
  timer.unref()
  const lines = []
  const waiters = []
  let buffer = ''
  let stderr = ''
  child.stdout.on('data', (chunk) => {
    buffer += chunk
    let nl
    while ((nl = buffer.indexOf('\n')) >= 0) {
      const line = buffer.slice(0, nl)
      buffer = buffer.slice(nl + 1)
      lines.push(line)
      for (const w of [...waiters]) w()
    }
  })
  child.stderr.on('data', (chunk) => {
    stderr += chunk
  })
  const exited = new Promise((resolve) => {
    child.on('exit', (code, signal) => {
      clearTimeout(timer)
      children.delete(child)
      for (const w of [...waiters]) w()
      resolve({ code, signal })
    })
  })
  let consumed = 0
  /** The next line the child prints (rejects if it exits first or after `ms`). */
  function nextLine(ms = 20_000) {
    return new Promise((resolve, reject) => {
      const check = () => {
        if (consumed < lines.length) {
          cleanup()
          resolve(lines[consumed++])
        } else if (child.exitCode !== null || child.signalCode !== null) {
          cleanup()
          reject(new Error(`child ${script} exited (${child.exitCode ?? child.signalCode}) before a line; stderr: ${stderr}`))
        }
      }
      const t = setTimeout(() => {
        cleanup()
        reject(new Error(`no line from ${script} within ${ms} ms; stderr: ${stderr}`))
      }, ms)
      const cleanup = () => {
        clearTimeout(t)
        const i = waiters.indexOf(check)
        if (i >= 0) waiters.splice(i, 1)
      }
      waiters.push(check)
      check()
    })
  }
  return {
    child,
    pid: child.pid,
    nextLine,
    send: (line) => child.stdin.write(`${line}\n`),
    exited,
    stderr: () => stderr,
    kill: (sig = 'SIGKILL') => child.kill(sig),
  }
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

/** Whether a pid is a process that can still hold anything (zombies count as dead). */
export function pidAlive(pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3)
    return state !== 'Z' && state !== 'X'
  } catch {
    return false
  }
}

/** A lockfile as the original module writes one. */
export function originalRecord({ pid = 12345, startTime = 1000, heartbeat = Date.now(), goalId = 'g', acquiredAt } = {}) {
  return JSON.stringify({ pid, startTime, heartbeat, goalId, acquiredAt: acquiredAt ?? new Date(heartbeat).toISOString() })
}

export function setAge(file, ms) {
  const t = new Date(Date.now() - ms)
  fs.utimesSync(file, t, t)
}
