/**
 * Creates workspaces and keys through the operator API, as a real operator
 * would. `fetcher` is `exports.default.fetch` inside workerd or global fetch
 * against wrangler dev in e2e tests.
 */

export const TEST_ADMIN_TOKEN = "test-admin-token-0123456789abcdef";

export type Fetcher = (input: string, init?: RequestInit) => Promise<Response>;

export interface TestWorkspace {
  id: string;
  /** An API key with the scopes asked for (default: admin). */
  key: string;
  keyId: string;
  headers: Record<string, string>;
}

export interface WorkspaceOptions {
  name?: string;
  plan?: "free" | "team" | "enterprise";
  limits?: Record<string, number>;
  scopes?: string[];
  adminToken?: string;
}

export function bearer(token: string): Record<string, string> {
  return { Authorization: `Bearer ${token}` };
}

export async function createTestWorkspace(
  fetcher: Fetcher,
  baseUrl: string,
  options: WorkspaceOptions = {},
): Promise<TestWorkspace> {
  const response = await fetcher(`${baseUrl}/api/v1/workspaces`, {
    method: "POST",
    headers: { "Content-Type": "application/json", ...bearer(options.adminToken ?? TEST_ADMIN_TOKEN) },
    body: JSON.stringify({
      name: options.name ?? "Test workspace",
      plan: options.plan ?? "enterprise",
      ...(options.limits ? { limits: options.limits } : {}),
      api_key: { name: "test key", scopes: options.scopes ?? ["admin"] },
    }),
  });
  if (response.status !== 201)
    throw new Error(`creating a workspace answered ${response.status}: ${await response.text()}`);
  const body = (await response.json()) as { workspace: { id: string }; api_key: { id: string; key: string } };
  return { id: body.workspace.id, key: body.api_key.key, keyId: body.api_key.id, headers: bearer(body.api_key.key) };
}

/** Another key in the same workspace, made with an admin key. */
export async function createTestKey(
  fetcher: Fetcher,
  baseUrl: string,
  adminKey: string,
  scopes: string[],
  options: { expiresAt?: string } = {},
): Promise<{ id: string; key: string; headers: Record<string, string> }> {
  const response = await fetcher(`${baseUrl}/api/v1/api-keys`, {
    method: "POST",
    headers: { "Content-Type": "application/json", ...bearer(adminKey) },
    body: JSON.stringify({
      name: `key ${scopes.join(" ")}`,
      scopes,
      ...(options.expiresAt ? { expires_at: options.expiresAt } : {}),
    }),
  });
  if (response.status !== 201) throw new Error(`creating a key answered ${response.status}: ${await response.text()}`);
  const body = (await response.json()) as { id: string; key: string };
  return { id: body.id, key: body.key, headers: bearer(body.key) };
}
