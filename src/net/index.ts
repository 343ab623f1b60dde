export { netDirFromPolicyFile, type RestoreResult, restoreCurrent } from "./boot.ts";
export { bridgeRefusals, liveRefusals, vipRefusals } from "./guard.ts";
export {
  applyHostBridge,
  type HostBridgeApplyResult,
  type HostBridgeOptions,
  hostBridgeGatewayAddresses,
  renderHostBridge,
  renderHostBridgeDelete,
} from "./host-bridge.ts";
export { type GatewayServices, renderInputChain, type ServiceAddress } from "./input.ts";
export {
  AUTH_PASS_MAX,
  authPassProblem,
  type FileFacts,
  includesFile,
  KeepalivedConfigError,
  type KeepalivedInputs,
  keepalivedHostRefusals,
  LIVENESS_SCRIPT,
  notifyScriptProblem,
  redactKeepalived,
  renderKeepalived,
  SYNC_GROUP,
  usesSyncGroup,
} from "./keepalived.ts";
export {
  bridgeMember,
  DEFAULT_BRIDGE_VIDS,
  type LinkCheck,
  type LinkOp,
  linkCheckHolds,
  ownedLinks,
  removedLinkOps,
  renderInterfaces,
  renderLinkOps,
  withLiveUndo,
} from "./links.ts";
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
export { untrustedStateProblem } from "./trust.ts";
