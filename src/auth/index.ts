export { type Authenticator, createAuthenticator, type PasswordVerdict } from "./authenticator.ts";
export {
  createLdapDirectory,
  type Directory,
  DirectoryUnavailableError,
  type DirectoryVerdict,
  fillFilter,
  type LdapConfig,
} from "./ldap.ts";
export {
  currentCode,
  newSecret,
  normaliseSecret,
  openTotpStore,
  otpauthUri,
  TotpSecretError,
  type TotpSettings,
  type TotpStore,
} from "./totp.ts";
