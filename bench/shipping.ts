/**
 * The shared audit's append rate: a node's audit.db with `n` chained events shipped to a real
 * PostgreSQL (Debian's `postgresql`, started in a temp folder as in the tests) by the gateway's
 * shipper (src/audit/ship.ts: batches of 5 000 events, multi-row INSERTs, the chain continuity
 * checked in the transaction). Undefined when PostgreSQL is not installed or not root.
 */
import { startShipper } from "../src/audit/ship.ts";
import { openAuditReplica, openPostgresState } from "../src/state/index.ts";
import { havePostgres, startPostgres } from "../test/helpers/postgres.ts";

/** Ships `file` (holding `n` events) to a fresh PostgreSQL; returns events/s persisted, or undefined. */
export async function shippingRate(file: string, n: number): Promise<number | undefined> {
  if (!havePostgres) return undefined;
  const pg = await startPostgres();
  try {
    await (await openPostgresState(pg.url)).close();
    const replica = await openAuditReplica(pg.url);
    const log = { info: () => undefined, warn: () => undefined, error: (o: object, m: string) => console.error(m, o) };
    const t0 = process.hrtime.bigint();
    const shipper = startShipper({ file, node: "bench", replica, log, intervalMs: 10 });
    for (let i = 0; i < 60_000 && shipper.health().pending > 0; i++) await new Promise((r) => setTimeout(r, 5));
    const s = Number(process.hrtime.bigint() - t0) / 1e9;
    const left = await shipper.stop(0);
    const head = await replica.head("bench");
    await replica.close();
    if (left > 0 || head?.id !== n) throw new Error(`shipping bench: ${left} events left, PostgreSQL head ${head?.id}`);
    return n / s;
  } finally {
    await pg.destroy();
  }
}
