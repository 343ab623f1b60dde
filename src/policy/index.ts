export { canonicalHostName, policyHostName } from "./hostname.ts";
export { formatIssue, type LoadedPolicy, loadPolicyFile, PolicyError, type PolicyIssue, parsePolicyText } from "./load.ts";
export { insideAny } from "./network.ts";
export { assertPrivateFiles, checkPrivateFiles, PrivateFileError } from "./permissions.ts";
export { type JsonSchemaNode, type PolicyKeyRow, policyKeyRows, renderPolicyReference } from "./reference.ts";
export {
  type AuthMethod,
  type NetworkPolicy,
  type Policy,
  type PolicyRoute,
  type PolicyTarget,
  policyJsonSchema,
  type RecordSettings,
  type RouteAllow,
  SECRET_PATHS,
} from "./schema.ts";
export { readSecret, SecretError } from "./secrets.ts";
export { parseDurationMs, parseHostPort, parseSizeBytes } from "./units.ts";
