/** Who is calling: set on the context by the authentication middleware (`c.get("principal")`). */

export const SCOPES = ["tasks:read", "tasks:write", "events:read", "audit:read", "admin"] as const;
export type Scope = (typeof SCOPES)[number];

export type Principal =
  | {
      kind: "api_key";
      workspaceId: string;
      keyId: string;
      scopes: ReadonlySet<Scope>;
      /** Safe to show and log: the key's name and display prefix. */
      display: string;
      /** When the key stops working (its `expires_at`); null or absent: never. Event streams close then. */
      expiresAtMs?: number | null;
    }
  | {
      kind: "user";
      workspaceId: string;
      /** The JWT `sub`. */
      userId: string;
      scopes: ReadonlySet<Scope>;
      display: string;
      /** When the token stops being accepted (its `exp`, plus the clock skew allowed). Event streams close then. */
      expiresAtMs?: number | null;
    }
  | {
      /** Bearer = ADMIN_TOKEN; acts across workspaces on operator routes only. */
      kind: "operator";
      workspaceId: null;
      scopes: ReadonlySet<Scope>;
      display: "operator";
    };

/** The audit log's actor for a principal. */
export function actorOf(principal: Principal): { type: "api_key" | "user" | "operator"; id: string; display: string } {
  switch (principal.kind) {
    case "api_key":
      return { type: "api_key", id: principal.keyId, display: principal.display };
    case "user":
      return { type: "user", id: principal.userId, display: principal.display };
    case "operator":
      return { type: "operator", id: "operator", display: "operator" };
  }
}
