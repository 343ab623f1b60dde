export { type ChannelAudit, createChannelAudit, type Tap } from "./channel.ts";
export { createRecorder, type Recorder, type RecordingResult, recordingPath } from "./recording.ts";
export { RecordingFormatError, type ReplayOptions, readCast, replay } from "./replay.ts";
export {
  anchorOf,
  checkpointSealMessage,
  checkSeals,
  computeSeal,
  createSealer,
  createSealState,
  deriveEpochKey,
  parseVerificationKey,
  ratchetKey,
  type SealAnchor,
  type Sealer,
  SealStateError,
  sealMessage,
} from "./seal.ts";
export {
  type AuditEvent,
  type AuditEventInput,
  type AuditEventType,
  type AuditSession,
  type AuditSink,
  type AuditStore,
  canonicalEvent,
  hashEvent,
  hashFile,
  openAuditStore,
  type RecordingRow,
  type SealRow,
  type SealStep,
  type SessionEnd,
  type SessionFilter,
  type SessionStart,
  type VerifyProblem,
  type VerifyReport,
} from "./store.ts";
export { type FileEvent, rsyncPaths, scpObserver, sftpObserver, type TransferObserver } from "./transfers.ts";
