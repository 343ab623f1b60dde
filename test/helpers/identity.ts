/**
 * An AuthenticatedIdentity for unit tests of code downstream of the login. It is minted the only
 * way there is: a completed login, here with factors that accept one password.
 */
import { type AuthenticatedIdentity, createLogin, DEFAULT_UID_PATTERN } from "../../src/auth/index.ts";

export async function identityFor(uid: string, groups: readonly string[]): Promise<AuthenticatedIdentity> {
  const login = createLogin({
    factors: {
      lookup: async () => ({ kind: "found", account: { uid, groups, local: false, active: true } }),
      password: async (_a, _t, pw) => (pw === "pw" ? "ok" : "invalid"),
      publickey: async () => false,
      hasTotp: () => true,
      totp: async () => "invalid",
      enrolOnFirstLogin: false,
      invitationValid: () => false,
      enrolment: async () => ({ secret: "", uri: "", qr: "" }),
      confirmEnrolment: async () => undefined,
      locked: () => false,
      failed: () => ({ lockedUid: false, lockedSource: false }),
      lockedAttempt: () => undefined,
      succeeded: () => undefined,
    },
    chains: [["password"]],
    maxAttempts: 1,
    uidPattern: new RegExp(DEFAULT_UID_PATTERN, "u"),
    source: "192.0.2.1",
    now: () => 0,
    emit: () => undefined,
  });
  const step = await login.submit(uid, { method: "password", password: "pw" });
  if (step.kind !== "accepted") throw new Error(`test login refused: ${step.kind}`);
  return step.identity;
}
