/** The database, except that its batches reject, as a locked or overloaded D1 rejects them. */
export function withFailingBatches(db: D1Database, message = "D1_ERROR: database is locked"): D1Database {
  return new Proxy(db, {
    get(target, property) {
      if (property === "batch") return () => Promise.reject(new Error(message));
      const value = Reflect.get(target, property);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}
