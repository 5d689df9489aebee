// pi-crew-workspace-lock, ESM entry (package.json "exports" → "import"). The package itself
// is CommonJS (index.js, and binding.js, which loads the platform's .node file); this file
// hands the very same module to `import`, with exactly its named exports.
//
// Why not `export * from './index.js'`: a bundler (esbuild, as pi-crew bundles its
// extension into one ESM file) would follow that into binding.js and stop at the `.node`
// file, which cannot be bundled. Instead the CommonJS entry is loaded at run time, by the
// package's own name, through a `require` made by `createRequire`: bundlers leave calls of
// such a local function alone, and Node resolves the name from wherever this code runs.
// Unbundled, that is the package itself (a package may name itself once it has "exports");
// bundled, it is the `node_modules` beside the bundle, where the consumer installed it.
import { createRequire } from 'node:module'

const loadInstalled = createRequire(import.meta.url)

let lib
try {
  lib = loadInstalled('pi-crew-workspace-lock')
} catch (err) {
  if (err && err.code === 'MODULE_NOT_FOUND' && /'pi-crew-workspace-lock'/.test(String(err.message))) {
    throw new Error(
      "pi-crew-workspace-lock: the package is not installed where this code runs. It loads a native (.node) file at run time, so bundling it does not remove it: install it beside the bundle (a dependency of the bundling package) or mark it as external.",
      { cause: err },
    )
  }
  throw err
}

export const workspaceLockPath = lib.workspaceLockPath
export const acquireWorkspaceLock = lib.acquireWorkspaceLock
export const isWorkspaceBusy = lib.isWorkspaceBusy
export const reclaimStaleLocks = lib.reclaimStaleLocks
export const defaultStartTimeResolver = lib.defaultStartTimeResolver
export const inspectWorkspaceLock = lib.inspectWorkspaceLock
export const inspectWorkspaceLocks = lib.inspectWorkspaceLocks
export default lib
