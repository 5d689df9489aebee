// jest project for runtimes.test.mjs (run with cwd = this folder, by jest's own CLI from the
// repository's node_modules). Test files end in .jest.cjs so that `node --test __test__/`
// does not pick them up. No transform: the files are plain CommonJS.
module.exports = {
  rootDir: __dirname,
  testEnvironment: 'node',
  testMatch: ['<rootDir>/*.jest.cjs'],
  transform: {},
  watchman: false,
  testTimeout: 15000,
}
