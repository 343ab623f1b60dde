#!/usr/bin/env node
// Tiny TCP probe for namespace tests.
//   serve NAME PORT [PORT…]   answer every connection with "NAME:PORT:<peer address>\n"
//   connect HOST PORT [MS]    print the answer, or TIMEOUT / ERROR:<code>; always exit 0
import { connect, createServer } from "node:net";

const [mode, ...args] = process.argv.slice(2);
if (mode === "serve") {
  const [name, ...ports] = args;
  for (const port of ports) {
    createServer((s) => s.end(`${name}:${port}:${s.remoteAddress?.replace(/^::ffff:/, "")}\n`)).listen(Number(port), "0.0.0.0");
  }
  console.log("READY");
} else if (mode === "connect") {
  const [host, port, ms] = args;
  const s = connect({ host, port: Number(port) });
  let out = "";
  const t = setTimeout(
    () => {
      console.log("TIMEOUT");
      process.exit(0);
    },
    Number(ms ?? 2000),
  );
  s.on("data", (d) => {
    out += d;
  });
  s.on("end", () => {
    clearTimeout(t);
    console.log(out.trim());
    process.exit(0);
  });
  s.on("error", (e) => {
    clearTimeout(t);
    console.log(`ERROR:${e.code}`);
    process.exit(0);
  });
} else {
  console.error("usage: netprobe serve NAME PORT… | connect HOST PORT [MS]");
  process.exit(2);
}
