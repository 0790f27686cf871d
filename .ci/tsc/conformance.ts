// The implementation (build/client.js, typed from its JSDoc) must fit the
// declarations (build/herald-client.d.ts) that TypeScript users compile against.
import * as impl from "./build/client.js";
import * as decl from "./build/herald-client.js";

export const checks: {
  HeraldClient: typeof decl.HeraldClient;
  HeraldError: typeof decl.HeraldError;
  decodeToken: typeof decl.decodeToken;
  State: typeof decl.State;
  CloseCode: typeof decl.CloseCode;
  default: typeof decl.default;
} = impl;

// Nothing exported without a declaration.
type Undeclared = Exclude<keyof typeof impl, keyof typeof decl>;
export const nothingUndeclared: [Undeclared] extends [never] ? true : Undeclared = true;
