// The package under vitest, imported through a pi-crew style `export *` module (TypeScript,
// transformed by vite): runs in the default pool (forks) and with --pool=threads.
import { afterAll, describe, expect, it, vi } from "vitest";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { isMainThread } from "node:worker_threads";
import * as lock from "./workspace-lock.js";
import { acquireWorkspaceLock, isWorkspaceBusy, type WorkspaceLockHandle } from "./workspace-lock.js";

const dirs: string[] = [];
function workspace(): string {
  const cwd = fs.mkdtempSync(path.join(os.tmpdir(), "wslock-vitest-"));
  dirs.push(cwd);
  fs.mkdirSync(path.join(cwd, ".crew", "state", "workspace-locks"), { recursive: true });
  return cwd;
}
afterAll(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});
const realSetTimeout = globalThis.setTimeout;
const realSleep = (ms: number) => new Promise((r) => realSetTimeout(r, ms));

/** Acquire; a second acquire waits; release; the waiter gets the lock at once. */
async function handover(cwd: string) {
  const first = await acquireWorkspaceLock(cwd, "first");
  expect(isWorkspaceBusy(cwd)).toBe("first");
  let second: WorkspaceLockHandle | undefined;
  const waiting = acquireWorkspaceLock(cwd, "second", { pollMs: 60_000 }).then((h) => (second = h));
  await realSleep(150);
  expect(second).toBeUndefined();
  expect(isWorkspaceBusy(cwd)).toBe("first");
  const t0 = Date.now();
  first.release();
  await waiting;
  expect(Date.now() - t0).toBeLessThan(2000); // woken by the release, not by pollMs
  expect(second!.goalId).toBe("second");
  expect(isWorkspaceBusy(cwd)).toBe("second");
  expect(JSON.parse(fs.readFileSync(second!.lockPath, "utf8")).goalId).toBe("second");
  second!.release();
  expect(isWorkspaceBusy(cwd)).toBeUndefined();
}

describe("pi-crew-workspace-lock under vitest", () => {
  it("reports where it runs (runtimes.test.mjs checks the pool)", () => {
    const dir = process.env.WSLOCK_REPORT_DIR;
    if (dir) fs.writeFileSync(path.join(dir, "lock.vitest.ts.json"), JSON.stringify({ pid: process.pid, isMainThread }));
  });

  it("exports every function through `export *`", () => {
    expect(Object.keys(lock).sort()).toEqual([
      "acquireWorkspaceLock",
      "defaultStartTimeResolver",
      "inspectWorkspaceLock",
      "inspectWorkspaceLocks",
      "isWorkspaceBusy",
      "reclaimStaleLocks",
      "workspaceLockPath",
    ]);
  });

  it("acquires, a second acquire waits, release hands over to the waiter", async () => {
    await handover(workspace());
  });

  it("rejects with the original messages: busy, aborted", async () => {
    const cwd = workspace();
    const h = await acquireWorkspaceLock(cwd, "holder");
    await expect(acquireWorkspaceLock(cwd, "other", { failOnWorkspaceBusy: true })).rejects.toThrow(
      /^workspace busy: cwd=.* held by goalId=holder \(pid=\d+\)$/,
    );
    const ac = new AbortController();
    const waiting = acquireWorkspaceLock(cwd, "other", { signal: ac.signal });
    ac.abort();
    await expect(waiting).rejects.toThrow("workspace lock acquisition aborted");
    await expect(waiting).rejects.toBeInstanceOf(Error);
    expect(() => lock.workspaceLockPath(42 as unknown as string)).toThrow(TypeError);
    h.release();
    expect(isWorkspaceBusy(cwd)).toBeUndefined();
  });

  it("hands over with fake timers installed (waiters do not depend on JS timers)", async () => {
    vi.useFakeTimers();
    try {
      await handover(workspace());
    } finally {
      vi.useRealTimers();
    }
  });
});
