/**
 * Parsers for the policy's duration and size strings. Pure functions.
 */

const DURATION_UNITS_MS: Record<string, number> = {
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
};

const SIZE_UNITS_BYTES: Record<string, number> = {
  B: 1,
  KiB: 1024,
  MiB: 1024 ** 2,
  GiB: 1024 ** 3,
  KB: 1000,
  MB: 1000 ** 2,
  GB: 1000 ** 3,
};

/**
 * Parses a duration such as `30s`, `15m`, `12h`, `1d` or `500ms`.
 * @returns the duration in milliseconds, or `undefined` when the text is not a duration.
 */
export function parseDurationMs(text: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/.exec(text.trim());
  if (!m) return undefined;
  const unit = DURATION_UNITS_MS[m[2] as string];
  return unit === undefined ? undefined : Math.round(Number(m[1]) * unit);
}

/**
 * Parses `host:port` or `[v6]:port` (the port may be omitted when `defaultPort` is given).
 * @returns host (without brackets) and port, or `undefined` when the text has neither form.
 */
export function parseHostPort(text: string, defaultPort?: number): { host: string; port: number } | undefined {
  const m = /^(?:\[([^\]]+)\]|([^:]+))(?::(\d{1,5}))?$/.exec(text);
  const host = m?.[1] ?? m?.[2];
  if (!m || host === undefined || (m[3] === undefined && defaultPort === undefined)) return undefined;
  return { host, port: m[3] === undefined ? (defaultPort as number) : Number(m[3]) };
}

/**
 * Parses a size such as `64MiB`, `1GiB`, `512KiB` or `100B`.
 * @returns the size in bytes, or `undefined` when the text is not a size.
 */
export function parseSizeBytes(text: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)\s*(B|KiB|MiB|GiB|KB|MB|GB)$/.exec(text.trim());
  if (!m) return undefined;
  const unit = SIZE_UNITS_BYTES[m[2] as string];
  return unit === undefined ? undefined : Math.round(Number(m[1]) * unit);
}
