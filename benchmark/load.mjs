// Load cost of one library in a fresh process, for run.mjs: `node load.mjs <lib|none> <ws>`.
// Prints one JSON line: RSS before/after `require`, the require time, and RSS after one
// acquire+release (what a first use adds: threads, watchers, caches).
import { createRequire } from 'node:module'
import { LIBS } from './libs.mjs'

const [name, ws] = process.argv.slice(2)
const require = createRequire(import.meta.url)
require('node:path') // the CommonJS loader is warm for every library alike

const rssBefore = process.memoryUsage.rss()
const t0 = performance.now()
const mod = name === 'none' ? undefined : LIBS[name].module()
const loadMs = performance.now() - t0
const rssAfter = process.memoryUsage.rss()
if (mod) {
  const lib = LIBS[name]
  const release = await lib.acquire(mod, lib.target(ws))
  await release()
}
const rssAfterUse = process.memoryUsage.rss()
console.log(JSON.stringify({ lib: name, rssBefore, rssAfter, rssAfterUse, loadMs }))
process.exit(0)
