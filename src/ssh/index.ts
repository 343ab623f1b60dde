export type { GatewayRuntime } from "./connection.ts";
export { createKeyIfMissing, generateEd25519, KeyFileError, loadKey, loadOrCreateKey, publicKeyLine } from "./keys.ts";
export { type ByteCounter, type ExitInfo, finishDownstream, pump, relaySession, watchExit } from "./relay.ts";
export { type ScannedKey, scanHostKeys } from "./scan.ts";
export {
  CODE_PROMPT,
  createGateway,
  type Gateway,
  type GatewayDeps,
  HOST_KEY_CHANGED_MESSAGE,
  type LiveSessionInfo,
  PASSWORD_PROMPT,
} from "./server.ts";
export { connectUpstream, fingerprint, HostKeyMismatchError, parseHostKeyLine, UpstreamError } from "./upstream.ts";
