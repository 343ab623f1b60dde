export {
  aliasesFor,
  type ApprovedTarget,
  type AuthenticatedIdentity,
  markAuthenticated,
  parseAccount,
  refusalMessage,
  resolveRoute,
  type RouteDecision,
} from "./route.ts";
