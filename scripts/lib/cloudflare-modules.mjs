// Node module hooks: lets Node scripts import Worker code that imports
// `cloudflare:*` modules, for work that runs no Worker (e.g. writing the OpenAPI
// document). The stubs are inert: anything that would really need the runtime
// runs under workerd instead.
const STUB = `
export const env = {};
export class DurableObject { constructor(ctx, env) { this.ctx = ctx; this.env = env; } }
export class WorkerEntrypoint { constructor(ctx, env) { this.ctx = ctx; this.env = env; } }
export class WorkflowEntrypoint { constructor(ctx, env) { this.ctx = ctx; this.env = env; } }
export class RpcTarget {}
`;

export async function resolve(specifier, context, nextResolve) {
  if (specifier.startsWith("cloudflare:")) {
    return { url: `data:text/javascript,${encodeURIComponent(STUB)}`, shortCircuit: true };
  }
  return nextResolve(specifier, context);
}
