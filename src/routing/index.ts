export {
  type ApprovedTarget,
  type AuthenticatedIdentity,
  aliasesFor,
  markAuthenticated,
  parseAccount,
  type RouteDecision,
  refusalMessage,
  resolveRoute,
} from "./route.ts";
