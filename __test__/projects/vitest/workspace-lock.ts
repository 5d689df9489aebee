// pi-crew's src/runtime/workspace-lock.ts once it switches to this package (the package is
// imported by relative path: this folder lives inside it).
export * from "../../../index.js";
