// A pi-crew style consumer: re-exports everything, then uses each declaration as
// pi-crew's code and tests do. Must pass `tsc --noEmit --strict`.
export * from "../../index.js";
import {
	acquireWorkspaceLock,
	defaultStartTimeResolver,
	isWorkspaceBusy,
	reclaimStaleLocks,
	workspaceLockPath,
	type AcquireWorkspaceLockOptions,
	type StartTimeResolver,
	type WorkspaceLockContents,
	type WorkspaceLockHandle,
} from "../../index.js";

const resolver: StartTimeResolver = defaultStartTimeResolver;
const mock: StartTimeResolver = (pid: number) => (pid === 1 ? 1000 : undefined);
const opts: AcquireWorkspaceLockOptions = {
	failOnWorkspaceBusy: true,
	heartbeatStaleMs: 60_000,
	pollMs: 5,
	startTimeResolver: mock,
	now: () => Date.now(),
	pid: 12345,
	signal: new AbortController().signal,
	onCompromised: (err: Error) => console.error(err.message),
};

export async function run(cwd: string): Promise<string | undefined> {
	const path: string = workspaceLockPath(cwd);
	const handle: WorkspaceLockHandle = await acquireWorkspaceLock(cwd, "goal", opts);
	const st: number | undefined = handle.startTime;
	const keys: [string, string, string] = [handle.cwd, handle.goalId, handle.lockPath];
	handle.release();
	const busy: string | undefined = isWorkspaceBusy(cwd, { startTimeResolver: resolver, heartbeatStaleMs: 1, now: Date.now });
	const reclaimed: string[] = reclaimStaleLocks(path, { heartbeatStaleMs: 1 });
	const contents: WorkspaceLockContents = { pid: 1, startTime: st, heartbeat: 2, goalId: keys[1], acquiredAt: "x" };
	return busy ?? reclaimed[0] ?? contents.goalId;
}
