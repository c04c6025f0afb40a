import { env } from "cloudflare:workers";

/**
 * The real WORKSPACE_LIMITER namespace, except that the named methods of its stubs reject, as a Durable Object call
 * that fails does (overloaded, reset): for routes that must answer a retryable 503 then, not a 500.
 */
export function limiterFailing(
  methods: readonly string[],
  message = "Durable Object is overloaded.",
): typeof env.WORKSPACE_LIMITER {
  return new Proxy(env.WORKSPACE_LIMITER, {
    get(namespace, property) {
      if (property !== "getByName") return Reflect.get(namespace, property);
      return (name: string) => {
        const stub = namespace.getByName(name);
        return new Proxy(stub, {
          get(target, method) {
            if (typeof method === "string" && methods.includes(method)) return () => Promise.reject(new Error(message));
            if (method === "id" || method === "name" || typeof method === "symbol") return Reflect.get(target, method);
            // Every other name is an RPC method of the stub's, called on the stub (an RPC stub has no `bind`).
            return (...args: unknown[]) =>
              (target as unknown as Record<string, (...a: unknown[]) => unknown>)[method](...args);
          },
        });
      };
    },
  });
}
