export { runDemo } from "./demo.ts";
export { DEMO_GROUPS, DEMO_TOTP, DEMO_USERS, type DemoEnvironment, startDemoEnvironment } from "./environment.ts";
export { freePort, waitForPort } from "./ports.ts";
export { type DemoGroup, type DemoUser, type Slapd, type SlapdOptions, startSlapd, stopChild } from "./slapd.ts";
export { type Sshd, startSshd } from "./sshd.ts";
