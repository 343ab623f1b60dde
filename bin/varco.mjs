#!/usr/bin/env node
// Entry point: runs the compiled JavaScript in dist/ (`npm run build` makes it; the release tarball ships it).
import { existsSync } from "node:fs";

const entry = new URL("../dist/cli/main.js", import.meta.url);
if (!existsSync(entry)) {
  console.error("varco: dist/ is missing: run `npm run build` in this clone first (npm test and npm run demo build it)");
  process.exit(1);
}
const { main } = await import(entry.href);
await main(process.argv);
