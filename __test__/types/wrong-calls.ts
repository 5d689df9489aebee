// Every line below is a mistake the types must catch: `tsc` fails on this file.
import { acquireWorkspaceLock, isWorkspaceBusy, workspaceLockPath, type WorkspaceLockHandle } from "../../index.js";

workspaceLockPath(42);
acquireWorkspaceLock("/tmp", "g", { pollMs: "5" });
const busy: string = isWorkspaceBusy("/tmp");
declare const handle: WorkspaceLockHandle;
handle.goalId = "other";
export { busy };
