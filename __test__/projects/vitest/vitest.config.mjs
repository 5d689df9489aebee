// vitest project for runtimes.test.mjs (run with cwd = this folder, by vitest's own CLI from
// the repository's node_modules, with `--configLoader runner` so that nothing is written
// here). Test files end in .vitest.* so that `node --test __test__/` does not pick them up.
// A plain object: no import of vitest needed here.
import os from 'node:os'
import path from 'node:path'

export default {
  // vite's cache (vitest keeps its results there): outside the repository.
  cacheDir: process.env.WSLOCK_VITE_CACHE_DIR ?? path.join(os.tmpdir(), 'wslock-vitest-cache'),
  test: {
    include: ['*.vitest.{ts,mjs}'],
    testTimeout: 15_000,
    hookTimeout: 15_000,
    watch: false,
  },
}
