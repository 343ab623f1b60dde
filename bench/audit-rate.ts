/**
 * `npx tsx bench/audit-rate.ts`: the audit store's write rate on its own (no gateway), the same
 * loads as the audit section of bench/run.ts: 200 000 batched `file` events committed in batches
 * of 5 000, then 2 000 non-batched `exec` events (one transaction each), then batched events
 * committed by the tick (1 000 per tick). Prints events/s for each (best of BENCH_ROUNDS, default 3).
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openAuditStore } from "../src/audit/index.ts";

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const dir = mkdtempSync(join(process.env.BENCH_DIR ?? tmpdir(), "varco-audit-rate-"));
const rate = (n: number, t0: bigint) => Math.round(n / (Number(process.hrtime.bigint() - t0) / 1e9));
const best: Record<string, number> = {};
try {
  for (let round = 0; round < ROUNDS; round++) {
    const store = openAuditStore(join(dir, `r${round}.db`));
    let n = 200_000;
    let t0 = process.hrtime.bigint();
    for (let i = 0; i < n; i++) {
      store.append({ type: "file", sessionId: "s", uid: "u", data: { protocol: "sftp", op: "close", path: `/data/f${i}`, bytesRead: i } });
      if (i % 5000 === 4999) store.flush();
    }
    store.flush();
    best.batched = Math.max(best.batched ?? 0, rate(n, t0));
    n = 2_000;
    t0 = process.hrtime.bigint();
    for (let i = 0; i < n; i++) store.append({ type: "exec", sessionId: "s", uid: "u", data: { command: `ls ${i}` } });
    best.immediate = Math.max(best.immediate ?? 0, rate(n, t0));
    n = 100_000;
    t0 = process.hrtime.bigint();
    for (let tick = 0; tick < n / 1000; tick++) {
      for (let i = 0; i < 1000; i++)
        store.append({ type: "file", sessionId: "s", uid: "u", data: { op: "close", path: `/t/${tick}/${i}` } });
      await new Promise((r) => setImmediate(r));
      await new Promise((r) => setImmediate(r));
    }
    store.flush();
    best.per_tick = Math.max(best.per_tick ?? 0, rate(n, t0));
    if (!store.verify().ok) throw new Error("chain does not verify");
    store.close();
  }
  console.log(JSON.stringify({ dir, ...best }));
} finally {
  rmSync(dir, { recursive: true, force: true });
}
