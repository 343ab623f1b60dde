/**
 * The storage interface of the login state (TOTP secrets, used steps, recovery codes, enrolment
 * invitations, lockout failures): one interface, two engines (SQLite in `<state_dir>/state.db`,
 * the default; PostgreSQL for N gateways sharing one state). Rules and crypto stay in
 * src/auth/totp.ts and src/auth/lockout.ts; this layer only stores, and does every
 * compare-and-set in one SQL statement so two callers (two gateways) never both win.
 */

/** Which engine holds the state. */
export type StateEngine = "sqlite" | "postgres";

/** A TOTP secret as stored: AES-256-GCM parts (the uid is the additional data). */
export interface SealedSecret {
  readonly nonce: Buffer;
  readonly ciphertext: Buffer;
  readonly tag: Buffer;
}

/** A stored secret with the last time step used with it (null: none yet). */
export interface SecretRow extends SealedSecret {
  readonly lastStep: number | null;
}

/** Lockout thresholds the SQL needs (ms). */
export interface LockWindow {
  readonly maxFailures: number;
  readonly withinMs: number;
  readonly lockForMs: number;
  readonly maxFailuresPerSource: number;
}

/** Every row of the login state, engine-neutral (for `varco state copy`). Times as stored. */
export interface AuthStateDump {
  readonly totp: readonly {
    uid: string;
    nonce: Buffer;
    ciphertext: Buffer;
    tag: Buffer;
    lastStep: number | null;
    createdAt: string;
  }[];
  readonly totpSteps: readonly { uid: string; lastStep: number }[];
  readonly recoveryCodes: readonly { uid: string; codeHash: string; usedAt: string | null }[];
  readonly invitations: readonly { uid: string; codeMac: string; expiresAt: number; createdAt: number }[];
  readonly failures: readonly { uid: string; source: string; at: number }[];
  /** Remembered second factors (`auth.totp.remember`); absent in a dump made before schema version 3. */
  readonly remembered?: readonly RememberedRow[];
  /** `state_meta` rows (e.g. the totp.key check value). */
  readonly meta: readonly { name: string; value: string }[];
}

/**
 * A remembered second factor (`auth.totp.remember`): after a full login of the canonical `uid`
 * with the public key whose SHA-256 fingerprint is `keyFp` (`SHA256:…`, as `ssh-keygen -l` prints
 * it) from the source network `sourceNet` (an IPv4 /24 or an IPv6 /64, e.g. `192.0.2.0/24`), the
 * code is not asked again before `expiresAtMs`. Times in ms since the epoch.
 */
export interface RememberedRow {
  readonly uid: string;
  readonly keyFp: string;
  readonly sourceNet: string;
  readonly createdAtMs: number;
  readonly expiresAtMs: number;
  /**
   * The TOTP secret the entry stands in for: `local` (the login state's secret, whose re-enrolment
   * or reset deletes the entries) or `ldap:` and a keyed HMAC of the directory's secret
   * ({@link import("../auth/totp.ts").directorySecretBinding}). Honoured only while the user's
   * current secret gives the same value; `""` (entries stored before schema version 5, or in an
   * older dump) never is.
   */
  readonly totpBinding: string;
}

/**
 * The login state of one gateway, or of every gateway sharing one database. All methods may
 * reject (PostgreSQL unreachable, disk full): callers fail closed (a login is refused).
 */
export interface AuthState {
  readonly engine: StateEngine;
  /** Where the state lives, for messages (a file path, or the PostgreSQL URL without its password). */
  readonly where: string;

  /** The secret row of `uid`, or undefined. */
  secret(uid: string): Promise<SecretRow | undefined>;
  hasSecret(uid: string): Promise<boolean>;
  /**
   * Stores (replacing) the sealed secret with no used step and drops any invitation and every
   * remembered second factor of `uid` (a re-enrolment revokes them), in one transaction. `createdAt`: ISO 8601.
   */
  putSecret(uid: string, sealed: SealedSecret, createdAt: string): Promise<void>;
  /**
   * Deletes the secret, recovery codes, invitation and remembered second factors of `uid` in one
   * transaction; whether a secret existed. Used steps of directory secrets stay.
   */
  resetUser(uid: string): Promise<boolean>;
  /** Compare-and-set of the stored secret's last step: sets it to `step` iff it is null or below; true if this caller won. */
  consumeSecretStep(uid: string, step: number): Promise<boolean>;
  /** Last step used with a directory-held secret of `uid`, or undefined. */
  externalStep(uid: string): Promise<number | undefined>;
  /** Compare-and-set (upsert) of the directory-secret step: true iff `step` is above the stored one (or none was stored). */
  consumeExternalStep(uid: string, step: number): Promise<boolean>;

  /** Replaces the uid's invitation. Times in ms since the epoch. */
  putInvitation(uid: string, codeMac: string, expiresAtMs: number, createdAtMs: number): Promise<void>;
  /** Whether `uid` has an invitation expiring after `nowMs`. */
  hasInvitation(uid: string, nowMs: number): Promise<boolean>;
  /** Whether the invitation of `uid` has this MAC, expires after `nowMs` and `uid` has no secret (read only). */
  invitationMatches(uid: string, codeMac: string, nowMs: number): Promise<boolean>;
  /** The same test as {@link invitationMatches} as one compare-and-delete statement: true for at most one caller. */
  takeInvitation(uid: string, codeMac: string, nowMs: number): Promise<boolean>;

  /** Replaces the uid's recovery codes (MACs) in one transaction. */
  replaceRecoveryCodes(uid: string, codeMacs: readonly string[]): Promise<void>;
  /** Whether this MAC is an unused recovery code of `uid` (read only). */
  recoveryCodeUnused(uid: string, codeMac: string): Promise<boolean>;
  /** Marks it used iff unused (one statement): true for at most one caller. `usedAt`: ISO 8601. */
  useRecoveryCode(uid: string, codeMac: string, usedAt: string): Promise<boolean>;
  /** Unused codes of `uid` whose MAC starts with `prefix`. */
  recoveryCodesLeft(uid: string, prefix: string): Promise<number>;

  /**
   * Lock state at `nowMs`, computed in SQL: the uid is locked iff among its 1000 newest failures
   * since `nowMs - lockForMs - withinMs` some `maxFailures` consecutive ones span at most `withinMs`
   * and the newest of them is less than `lockForMs` old; the source key is locked iff it has at
   * least `maxFailuresPerSource` failures after `nowMs - withinMs`.
   */
  lockState(uid: string, sourceKey: string, nowMs: number, w: LockWindow): Promise<{ uid: boolean; source: boolean }>;
  /** Stores one failure at `atMs` and deletes every failure older than `expireBeforeMs`. */
  addFailure(uid: string, sourceKey: string, atMs: number, expireBeforeMs: number): Promise<void>;
  /** Forgets the uid's failures; how many there were. */
  forgetFailures(uid: string): Promise<number>;

  /**
   * Remembers a second factor (upsert: a later full login with the same key from the same network
   * moves `createdAtMs` and `expiresAtMs`) and deletes every entry expired at `createdAtMs`.
   */
  remember(row: RememberedRow): Promise<void>;
  /** The entry of (`uid`, `keyFp`, `sourceNet`) if it expires after `nowMs`, else undefined (read only). */
  remembered(uid: string, keyFp: string, sourceNet: string, nowMs: number): Promise<RememberedRow | undefined>;
  /** Deletes every remembered second factor of `uid`, expired or not; how many there were. */
  forgetRemembered(uid: string): Promise<number>;

  /**
   * Stores `value` under `name` in `state_meta` unless a value is there already (one statement);
   * returns the stored value (the caller compares it with its own, e.g. the totp.key check value).
   */
  claimMeta(name: string, value: string): Promise<string>;

  /** Every row (for `varco state copy`). */
  dump(): Promise<AuthStateDump>;
  /** Inserts every row of `dump` in one transaction (with `replace`, deletes all rows first). */
  load(dump: AuthStateDump, replace: boolean): Promise<void>;
  /** Rows held in all login-state tables together (`state_meta` not counted). */
  rowCount(): Promise<number>;
  /** The schema version of the database. */
  schemaVersion(): Promise<number>;
  /** A cheap round trip (for /healthz). */
  ping(): Promise<void>;
  close(): Promise<void>;
}

/** Thrown when the state cannot be opened or used as configured; the message says what to do. */
export class StateError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "StateError";
  }
}

/**
 * `state` with every rejection turned into a {@link StateError} that names where the state lives
 * ("login state unavailable (WHERE): CAUSE"), so callers can tell an unreachable state from a
 * wrong code and fail closed with a clear log line.
 */
export function withStateErrors(state: AuthState): AuthState {
  const wrapped: Record<string, unknown> = { engine: state.engine, where: state.where };
  for (const k of Object.keys(state) as (keyof AuthState)[]) {
    const v = state[k];
    if (typeof v !== "function") continue;
    wrapped[k] = async (...args: unknown[]) => {
      try {
        return await (v as (...a: unknown[]) => Promise<unknown>)(...args);
      } catch (err) {
        if (err instanceof StateError) throw err;
        throw new StateError(`login state unavailable (${state.where}): ${(err as Error).message}`);
      }
    };
  }
  return wrapped as unknown as AuthState;
}
