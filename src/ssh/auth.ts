/**
 * The ssh2 auth adapter: maps ssh2's auth contexts (RFC 4252 none/password/publickey, RFC 4256
 * keyboard-interactive) onto the login state machine and its answers back onto the wire. No
 * decision is made here.
 */
import type { AuthContext, Connection, KeyboardAuthContext } from "ssh2";
import type { Credential, Login, LoginStep } from "../auth/index.ts";
import type { Logger } from "../obs/index.ts";

function credentialOf(ctx: AuthContext): Credential {
  switch (ctx.method) {
    case "none":
      return { method: "none" };
    case "password": {
      // ssh2 hands an RFC 4252 §8 change request as { oldPassword, newPassword }.
      const p = ctx.password as unknown;
      if (typeof p === "string") return { method: "password", password: p };
      const change = p as { oldPassword?: unknown; newPassword?: unknown };
      return { method: "password", password: String(change.oldPassword ?? ""), newPassword: String(change.newPassword ?? "") };
    }
    case "publickey":
      return {
        method: "publickey",
        key: ctx.key,
        signed: ctx.signature && ctx.blob ? { blob: ctx.blob, signature: ctx.signature, hashAlgo: ctx.hashAlgo } : undefined,
      };
    case "keyboard-interactive":
      return { method: "keyboard-interactive" };
    default:
      return { method: "other" };
  }
}

/**
 * Handles every `authentication` event of `client` with `login`. Resolves `onAccepted` with the
 * step that accepted; ends the connection after `disconnect`.
 */
export function adaptAuthentication(
  client: Connection,
  login: Login,
  log: Logger,
  onAccepted: (step: Extract<LoginStep, { kind: "accepted" }>) => void,
): void {
  const apply = (ctx: AuthContext, step: LoginStep): void => {
    switch (step.kind) {
      case "continue":
        ctx.reject(step.methods as never[], step.partial);
        return;
      case "pk_ok":
        ctx.accept();
        return;
      case "accepted":
        onAccepted(step);
        ctx.accept();
        return;
      case "disconnect":
        ctx.reject(step.methods as never[]);
        client.end();
        return;
      case "ignore":
        return;
      case "prompt":
        (ctx as KeyboardAuthContext).prompt([...step.prompts], step.title, step.instructions, (answers: unknown) =>
          // ssh2 passes an Error when the client abandoned the round with a new request.
          run(ctx, { method: "answers", answers: Array.isArray(answers) ? answers.map(String) : undefined }),
        );
        return;
    }
  };
  const run = (ctx: AuthContext, c: Credential) =>
    void login.submit(ctx.username, c).then(
      (step) => apply(ctx, step),
      (err: unknown) => {
        log.error({ err: (err as Error).message }, "authentication error");
        ctx.reject();
      },
    );
  client.on("authentication", (ctx) => run(ctx, credentialOf(ctx)));
}
