#!/usr/bin/env node
// Entry point: runs the TypeScript sources through tsx so `npx varco` works from a clone after `npm ci`.
import { register } from "tsx/esm/api";

register();
const { main } = await import("../src/cli/main.ts");
await main(process.argv);
