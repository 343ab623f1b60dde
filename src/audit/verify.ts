/**
 * PLACEHOLDER created by slice SEAL only so that seal.ts compiles; slice VERIFY owns this file.
 * On merge take VERIFY's verify.ts (it declares the same `VerifyIssue`, as agreed in issue 12).
 */

/** One problem found by the audit verification, with what was expected and what was found. */
export interface VerifyIssue {
  kind: "event" | "session" | "recording" | "checkpoint" | "seal" | "anchor" | "file";
  id: string;
  expected?: string;
  found?: string;
  reason: string;
}
