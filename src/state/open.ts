/**
 * The one place that opens the login state for a policy: `state.backend: sqlite` (default) is
 * `<state_dir>/state.db`; `postgres` reads the libpq URL from `state.url_file` (a secret: mode
 * 0600, or `env:VAR`) and connects. Both migrate the schema on open.
 */
import { readSecret } from "../policy/secrets.ts";
import { openPostgresState } from "./postgres.ts";
import { openSqliteState } from "./sqlite.ts";
import { type AuthState, StateError } from "./types.ts";

/** The policy's `state` key (see src/policy/schema.ts). */
export interface StateSettings {
  readonly backend: "sqlite" | "postgres";
  /** The file (or `env:VAR`) holding the PostgreSQL URL, as written in the policy. */
  readonly url_file?: string | undefined;
}

export interface OpenStateOptions {
  /** `gateway.state_dir`, resolved. */
  readonly stateDir: string;
  /** The policy's `state` key (undefined: SQLite). */
  readonly state?: StateSettings | undefined;
  /** Resolves a path of the policy against its folder. */
  readonly resolvePath: (p: string) => string;
  /** Overrides `state.url_file` (e.g. `varco state copy --url-file`), already resolved. */
  readonly urlFile?: string | undefined;
  /** false: refuse a newer schema but apply no migration (default true). */
  readonly migrate?: boolean;
  /** Errors of idle PostgreSQL connections (logged by the gateway; never thrown). */
  readonly onIdleError?: (err: Error) => void;
}

/**
 * Reads the PostgreSQL URL from its secret file.
 * @throws SecretError when the file is missing or readable by group/others; StateError when it is not a postgres:// URL.
 */
export function readStateUrl(ref: string): string {
  const url = readSecret(ref, "state.url_file").trim();
  if (!/^postgres(ql)?:\/\//.test(url))
    throw new StateError(
      `state.url_file: ${ref} must hold one libpq URL, e.g. postgres://varco:PASSWORD@db.example:5432/varco?sslmode=verify-full`,
    );
  return url;
}

/**
 * Opens (and migrates) the login state the policy names.
 * @throws StateError (unreachable PostgreSQL, schema newer than this binary, bad URL), SecretError (URL file).
 */
export async function openState(o: OpenStateOptions): Promise<AuthState> {
  const url = postgresUrl(o);
  if (url === undefined) return openSqliteState(o.stateDir);
  return openPostgresState(url, {
    ...(o.migrate === undefined ? {} : { migrate: o.migrate }),
    ...(o.onIdleError ? { onIdleError: o.onIdleError } : {}),
  });
}

/**
 * The PostgreSQL URL of the state `o` names (undefined for SQLite).
 * @throws StateError (no url_file, not a postgres:// URL), SecretError (URL file missing or readable by others).
 */
export function postgresUrl(o: Omit<OpenStateOptions, "stateDir">): string | undefined {
  if ((o.state?.backend ?? "sqlite") === "sqlite" && o.urlFile === undefined) return undefined;
  const ref =
    o.urlFile ??
    (o.state?.url_file === undefined
      ? undefined
      : o.state.url_file.startsWith("env:")
        ? o.state.url_file
        : o.resolvePath(o.state.url_file));
  if (ref === undefined)
    throw new StateError("state.backend is postgres but state.url_file is not set: name the file holding the PostgreSQL URL");
  return readStateUrl(ref);
}
