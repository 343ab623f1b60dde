export {
  type Authenticator,
  type AuthenticatorParts,
  createAuthenticator,
  type Enrolment,
  type PasswordVerdict,
  type TotpVerdict,
} from "./authenticator.ts";
export {
  createLdapDirectory,
  type Directory,
  DirectoryUnavailableError,
  type DirectoryVerdict,
  fillFilter,
  firstRdnValue,
  type LdapConfig,
} from "./ldap.ts";
export { createLocalUsers, hashPassword, type LocalUser, LocalUserError, type LocalUsers } from "./local.ts";
export { type LockedAttempts, type Lockout, type LockoutSettings, MAX_LOCKED_KEYS, openLockout } from "./lockout.ts";
export { findKey, keysFilePath, parseAuthorizedKeys } from "./publickey.ts";
export { displayAddress, sourceKey } from "./source.ts";
export {
  checkCandidate,
  currentCode,
  newOneTimeCode,
  newRecoveryCodes,
  newSecret,
  normaliseOneTimeCode,
  normaliseSecret,
  openTotpStore,
  otpauthUri,
  TotpSecretError,
  type TotpSettings,
  type TotpStore,
} from "./totp.ts";
