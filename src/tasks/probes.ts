import type { AppConfig } from "../env.ts";
import { newId } from "../lib/ids.ts";

/**
 * Benchmark floors (ENABLE_DEBUG_ROUTES only): no-op messages that ask the
 * consumer for one piece of a task's work before their ack, so a benchmark
 * can tell what the runtime itself charges for that piece from what the task
 * code adds. `r2_put` is the one R2 put every task makes for its report,
 * with the same size and options as TaskFiles.write; the puts of a batch run
 * concurrently, as the agents' do.
 */

const REPORT_LIKE_BODY = new TextEncoder().encode(`# bench probe\n\n${"[simulated] ".repeat(20)}\n`);

export async function putProbeObjects(config: Pick<AppConfig, "ARTIFACTS">, messages: Message<unknown>[]) {
  const digest = await crypto.subtle.digest("SHA-256", REPORT_LIKE_BODY);
  await Promise.all(
    messages.map(async (message) => {
      const id = newId("artifact");
      await config.ARTIFACTS.put(`__bench/probes/${id}`, REPORT_LIKE_BODY, {
        sha256: digest,
        httpMetadata: { contentType: "text/markdown; charset=utf-8" },
        customMetadata: { task_id: message.id, path: "REPORT.md" },
      });
      message.ack();
    }),
  );
}
