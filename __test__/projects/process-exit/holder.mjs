// Child process of runtimes.test.mjs: acquires the workspace lock of argv[2] (CommonJS
// require of the package), prints `held <lockPath>`, then ends as argv[3] says, never
// calling release().
import { createRequire } from 'node:module'
const lock = createRequire(import.meta.url)('../../../index.js')
const [cwd, how] = process.argv.slice(2)
const handle = await lock.acquireWorkspaceLock(cwd, `exit-${how}`)
console.log(`held ${handle.lockPath}`)
const ends = {
  // the event loop runs dry: the heartbeat thread must not keep the process alive
  'normal end': () => {},
  'process.exit(0)': () => process.exit(0),
  'process.exit(3) from a timer': () => setTimeout(() => process.exit(3), 10),
  'uncaught exception': () => setTimeout(() => { throw new Error('crash') }, 10),
  'unhandled rejection': () => { Promise.reject(new Error('rejected')) },
  'SIGTERM (default action)': () => process.kill(process.pid, 'SIGTERM'),
}
ends[how]()
