import { createServer } from "node:net";

/**
 * Whether something already listens on host:port. `npm run dev` asks before it
 * starts: wrangler would fail on a taken port only after the launcher saw the
 * other server's /health answer and printed it as its own, with a demo key that
 * server (another checkout's D1) does not know.
 */
export function portInUse(host: string, port: number): Promise<boolean> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once("error", (error: NodeJS.ErrnoException) => {
      if (error.code === "EADDRINUSE") resolve(true);
      else reject(error);
    });
    probe.listen({ host, port, exclusive: true }, () => probe.close(() => resolve(false)));
  });
}
