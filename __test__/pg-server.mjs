// A real PostgreSQL for the backend's tests and benchmark: initdb into a temporary
// directory, pg_ctl on a private port and socket directory, stopped and removed at the end.
// As root (CI) the server runs as the `postgres` user: PostgreSQL refuses to run as root.
import { execFileSync, spawnSync } from 'node:child_process'
import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'

export const PG_BIN = process.env.WORKSPACE_LOCK_PG_BIN ?? '/usr/lib/postgresql/15/bin'
export const USER = 'wl_user'
export const PASSWORD = 'wl-s3cret-pw'
export const DB = 'wl_locks'

/** Why the machine cannot run the server, or `undefined` when it can. */
export function unavailable() {
  if (!fs.existsSync(path.join(PG_BIN, 'initdb'))) return `no PostgreSQL binaries in ${PG_BIN} (apt-get install postgresql-15)`
  if (process.getuid?.() === 0 && spawnSync('id', ['postgres']).status !== 0) return 'running as root without a postgres user'
  return undefined
}

export async function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address()
      s.close(() => resolve(port))
    })
  })
}

const asRoot = process.getuid?.() === 0

function runAsPg(cmd, args, opts = {}) {
  const [file, argv] = asRoot ? ['setpriv', ['--reuid=postgres', '--regid=postgres', '--init-groups', cmd, ...args]] : [cmd, args]
  return execFileSync(file, argv, { stdio: ['ignore', 'pipe', 'pipe'], timeout: 60_000, ...opts })
}

/**
 * Starts a server. `listen` is the TCP address (127.0.0.1 unless a test needs another);
 * returns { url(user?), adminUrl, port, dir, socketDir, stop(), restart(), psql(sql) }.
 */
export async function startPostgres({ listen = '127.0.0.1', conf = [] } = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wl-pg-'))
  fs.chmodSync(dir, 0o755)
  const data = path.join(dir, 'data')
  const socketDir = path.join(dir, 'sock')
  fs.mkdirSync(socketDir)
  const pwfile = path.join(dir, 'pw')
  fs.writeFileSync(pwfile, 'admin-pw\n')
  if (asRoot) execFileSync('chown', ['-R', 'postgres:postgres', dir])
  const port = await freePort()
  let started = false
  const server = {
    dir,
    port,
    socketDir,
    listen,
    host: listen.split(',')[0],
    url: (extra = '') => `postgres://${USER}:${PASSWORD}@${listen.split(',')[0]}:${port}/${DB}${extra}`,
    socketUrl: () => `postgres://${USER}:${PASSWORD}@${encodeURIComponent(socketDir)}:${port}/${DB}`,
    psql(sql) {
      return runAsPg(path.join(PG_BIN, 'psql'), ['-h', socketDir, '-p', String(port), '-U', 'postgres', '-d', DB, '-XAtq', '-v', 'ON_ERROR_STOP=1', '-c', sql], { env: { ...process.env, PGPASSWORD: 'admin-pw' } })
        .toString()
        .trim()
    },
    ctl(...args) {
      return runAsPg(path.join(PG_BIN, 'pg_ctl'), ['-D', data, ...args]).toString()
    },
    restart() {
      server.ctl('restart', '-m', 'fast', '-w', '-t', '30', '-l', path.join(dir, 'log'), '-o', options())
    },
    stopServer() {
      if (started) server.ctl('stop', '-m', 'immediate', '-w', '-t', '30')
      started = false
    },
    startServer() {
      server.ctl('start', '-w', '-t', '30', '-l', path.join(dir, 'log'), '-o', options())
      started = true
    },
    stop() {
      try {
        server.stopServer()
      } catch {}
      fs.rmSync(dir, { recursive: true, force: true })
    },
  }
  const options = () => [`-p ${port}`, `-k ${socketDir}`, `-c listen_addresses=${listen}`, '-c max_connections=300', ...conf.map((c) => `-c ${c}`)].join(' ')
  try {
    runAsPg(path.join(PG_BIN, 'initdb'), ['-D', data, '-U', 'postgres', `--pwfile=${pwfile}`, '--auth-local=trust', '--auth-host=scram-sha-256', '-E', 'UTF8', '--no-sync'])
    // Clients on the subnets of the server's own addresses (a test's veth pair) too.
    fs.appendFileSync(path.join(data, 'pg_hba.conf'), '\nhost all all samenet scram-sha-256\n')
    server.startServer()
  } catch (err) {
    server.stop()
    throw err
  }
  runAsPg(path.join(PG_BIN, 'psql'), ['-h', socketDir, '-p', String(port), '-U', 'postgres', '-d', 'postgres', '-XAtq', '-v', 'ON_ERROR_STOP=1', '-c', `CREATE ROLE ${USER} LOGIN PASSWORD '${PASSWORD}'`])
  runAsPg(path.join(PG_BIN, 'psql'), ['-h', socketDir, '-p', String(port), '-U', 'postgres', '-d', 'postgres', '-XAtq', '-v', 'ON_ERROR_STOP=1', '-c', `CREATE DATABASE ${DB} OWNER ${USER}`])
  return server
}

/** The next event `name` a pg-holder.mjs child prints (one JSON line each); its error fails. */
export async function holderEvent(proc, name, ms = 20_000) {
  for (;;) {
    const e = JSON.parse(await proc.nextLine(ms))
    if (e.event === name) return e
    if (e.event === 'error') throw new Error(`${e.code}: ${e.message}`)
  }
}

/** The advisory locks (granted or waiting) the server has for a key. */
export function advisoryLocks(server, key) {
  const k = BigInt(key)
  const u = BigInt.asUintN(64, k)
  const classid = u >> 32n
  const objid = u & 0xffffffffn
  return server.psql(`select count(*) from pg_locks where locktype = 'advisory' and classid = ${classid} and objid = ${objid} and objsubid = 1`)
}

// A server's control through a directory, for a client that cannot run pg_ctl or psql
// itself (node.exe under Wine: Linux programs are out of its reach, and its TCP connects
// through libuv fail there). A request is a file `<id>.req` holding {what, body}; the answer
// `<id>.res` holds {ok, text}. `what`: "restart" (pg_ctl restart -m fast) or "psql" (the
// body run as the superuser). Both sides write under a temporary name, then rename.

/** Serves requests in `dir` for `server` until the process ends. */
export function serveControl(server, dir) {
  fs.mkdirSync(dir, { recursive: true })
  const timer = setInterval(() => {
    for (const name of fs.readdirSync(dir)) {
      if (!name.endsWith('.req')) continue
      const id = name.slice(0, -4)
      let answer
      try {
        const { what, body } = JSON.parse(fs.readFileSync(path.join(dir, name), 'utf8'))
        if (what === 'restart') answer = { ok: true, text: String(server.restart() ?? '') }
        else if (what === 'psql') answer = { ok: true, text: server.psql(body) }
        else answer = { ok: false, text: `no such control: ${what}` }
      } catch (err) {
        answer = { ok: false, text: String(err.stderr ?? err.message) }
      }
      fs.rmSync(path.join(dir, name), { force: true })
      fs.writeFileSync(path.join(dir, `${id}.tmp`), JSON.stringify(answer))
      fs.renameSync(path.join(dir, `${id}.tmp`), path.join(dir, `${id}.res`))
    }
  }, 20)
  return () => clearInterval(timer)
}

let controlSeq = 0

/** Asks the server controlled through `dir`; its answer's text, or an error. */
export async function controlRequest(dir, what, body = '', timeoutMs = 60_000) {
  const id = `${process.pid}-${Date.now()}-${controlSeq++}`
  fs.writeFileSync(path.join(dir, `${id}.part`), JSON.stringify({ what, body }))
  fs.renameSync(path.join(dir, `${id}.part`), path.join(dir, `${id}.req`))
  const res = path.join(dir, `${id}.res`)
  const until = Date.now() + timeoutMs
  while (!fs.existsSync(res)) {
    if (Date.now() > until) throw new Error(`control ${what}: no answer in ${timeoutMs} ms`)
    await new Promise((r) => setTimeout(r, 10))
  }
  const { ok, text } = JSON.parse(fs.readFileSync(res, 'utf8'))
  fs.rmSync(res, { force: true })
  if (!ok) throw new Error(`control ${what}: ${text}`)
  return text.trim()
}
