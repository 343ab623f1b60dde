import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    globalSetup: ["test/helpers/global-setup.ts"],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // e2e files each start slapd, two sshd targets and a gateway: two at a time on a 2-core machine.
    maxWorkers: 2,
    pool: "forks",
  },
});
