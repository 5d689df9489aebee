// pi-crew's src/runtime/workspace-lock.ts (`export * from "pi-crew-workspace-lock"`) as
// TypeScript compiles it to CommonJS; the package is required by relative path.
'use strict'
const mod = require('../../../index.js')
for (const k of Object.keys(mod)) {
  if (k !== 'default' && !Object.prototype.hasOwnProperty.call(exports, k)) {
    Object.defineProperty(exports, k, { enumerable: true, get: () => mod[k] })
  }
}
