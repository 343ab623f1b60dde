/**
 * Reading secrets that the policy references (`*_file` paths or `env:VAR`). Never inline.
 */
import { readFileSync, statSync } from "node:fs";

/** Thrown when a referenced secret is missing or too widely readable. The message never holds the secret. */
export class SecretError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "SecretError";
  }
}

/**
 * Reads a secret reference: `env:VAR` reads the environment variable, anything else is a file path
 * (already resolved against the policy folder). A trailing newline is removed.
 * @throws SecretError when the variable is unset, the file is unreadable, or the file is readable by group/others.
 */
export function readSecret(ref: string, field: string): string {
  if (ref.startsWith("env:")) {
    const name = ref.slice(4);
    const value = process.env[name];
    if (value === undefined || value === "") {
      throw new SecretError(`${field}: environment variable ${name} is not set`);
    }
    return value;
  }
  let mode: number;
  try {
    mode = statSync(ref).mode;
  } catch (err) {
    throw new SecretError(`${field}: cannot read ${ref} (${(err as NodeJS.ErrnoException).code ?? "error"})`);
  }
  if ((mode & 0o077) !== 0) {
    throw new SecretError(`${field}: ${ref} is readable by group or others; run: chmod 600 ${ref}`);
  }
  return readFileSync(ref, "utf8").replace(/\r?\n$/, "");
}
