/**
 * Starts a node:worker_threads worker from a module next to the caller, from the built JavaScript
 * (`dist/`, `name.js`) or, when the caller itself runs from the TypeScript sources (tests, benches
 * under tsx), from `name.ts` with tsx registered in the new thread (a module loader is per thread).
 */
import { Worker } from "node:worker_threads";

/**
 * @param callerUrl the caller's `import.meta.url`; the worker module is looked up next to it.
 * @param name the worker module's file name without extension, e.g. `"raw-writer"`.
 * @param workerData passed as `workerData` (structured clone).
 * @returns the started worker (not unref'ed).
 */
export function startWorker(callerUrl: string, name: string, workerData?: unknown): Worker {
  if (!callerUrl.endsWith(".ts")) return new Worker(new URL(`./${name}.js`, callerUrl), { workerData });
  const href = new URL(`./${name}.ts`, callerUrl).href;
  // Resolved here, from this module, not inside the worker (an eval worker resolves bare names from the working directory).
  const tsx = import.meta.resolve("tsx/esm/api");
  return new Worker(`import(${JSON.stringify(tsx)}).then((t) => { t.register(); return import(${JSON.stringify(href)}); });`, {
    eval: true,
    workerData,
  });
}
