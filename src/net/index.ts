export { bridgeRefusals, liveRefusals, vipRefusals } from "./guard.ts";
export { type GatewayServices, renderInputChain, type ServiceAddress } from "./input.ts";
export { type KeepalivedInputs, redactKeepalived, renderKeepalived } from "./keepalived.ts";
export { type LinkCheck, type LinkOp, renderInterfaces, renderLinkOps } from "./links.ts";
export { type LiveLink, liveLinks } from "./live.ts";
export { renderNft, renderNftDelete } from "./nft.ts";
export {
  ApplyError,
  type ApplyResult,
  apply,
  applySavedPlan,
  canonicalElement,
  confirm,
  currentGeneration,
  type Desired,
  desiredHash,
  desiredState,
  formatElement,
  type Generation,
  type HostFingerprint,
  hostFingerprint,
  listGenerations,
  makeSavedPlan,
  NetLockedError,
  netStateDir,
  normaliseListing,
  type Pending,
  type Plan,
  plan,
  readPending,
  readSavedPlan,
  revertIfExpired,
  rollback,
  type SavedPlan,
  type Status,
  setPending,
  splitElements,
  status,
  type TableSnapshot,
  withNetLock,
  writeSavedPlan,
} from "./reconcile.ts";
export { CommandError, type CommandRunner, createExecaRunner, createRecordingRunner, type RunResult } from "./runner.ts";
