// One measurement in a fresh process, for run.mjs: `node micro.mjs '<json spec>'`.
// Prints one JSON line: per-operation timings (ns) or a reclaim's elapsed time.
//   {job:'cycle', lib, ws, cycles, warmup}   await acquire(); await release()
//   {job:'busy', lib, ws, iterations}         check() (sync)
//   {job:'path', ws, iterations}              workspaceLockPath(ws) (this package only)
//   {job:'reclaim', dir, repeat}              reclaimStaleLocks(dir) (this package only)
import { LIBS } from './libs.mjs'

const spec = JSON.parse(process.argv[2])

function summary(samples) {
  samples.sort((a, b) => a - b)
  const q = (p) => samples[Math.round((samples.length - 1) * p)]
  const mean = samples.reduce((a, b) => a + b, 0) / samples.length
  return { n: samples.length, median_ns: q(0.5), p10_ns: q(0.1), p90_ns: q(0.9), mean_ns: mean }
}

const ns = (ms) => Math.round(ms * 1e6)

async function main() {
  if (spec.job === 'cycle') {
    const lib = LIBS[spec.lib]
    const mod = lib.module()
    const target = lib.target(spec.ws)
    const samples = []
    for (let i = 0; i < spec.cycles + spec.warmup; i++) {
      const t0 = performance.now()
      const release = await lib.acquire(mod, target)
      await release()
      if (i >= spec.warmup) samples.push(ns(performance.now() - t0))
    }
    return { job: 'cycle', lib: spec.lib, ...summary(samples) }
  }
  if (spec.job === 'busy') {
    const lib = LIBS[spec.lib]
    const mod = lib.module()
    const target = lib.target(spec.ws)
    const samples = []
    let held
    for (let i = 0; i < spec.iterations + 100; i++) {
      const t0 = performance.now()
      held = lib.check(mod, target)
      if (i >= 100) samples.push(ns(performance.now() - t0))
    }
    return { job: 'busy', lib: spec.lib, held, ...summary(samples) }
  }
  const mod = LIBS['pi-crew-workspace-lock'].module()
  if (spec.job === 'path') {
    const samples = []
    for (let i = 0; i < spec.iterations + 100; i++) {
      const t0 = performance.now()
      mod.workspaceLockPath(spec.ws)
      if (i >= 100) samples.push(ns(performance.now() - t0))
    }
    return { job: 'path', ...summary(samples) }
  }
  if (spec.job === 'reclaim') {
    mod.reclaimStaleLocks(spec.dir + '-missing') // loads and warms the code path
    const runs = []
    let reclaimed
    for (let i = 0; i < spec.repeat; i++) {
      const t0 = performance.now()
      reclaimed = mod.reclaimStaleLocks(spec.dir).length
      runs.push(ns(performance.now() - t0))
    }
    return { job: 'reclaim', reclaimed, runs_ns: runs }
  }
  throw new Error(`unknown job ${spec.job}`)
}

console.log(JSON.stringify(await main()))
