import { readdir, readFile } from "node:fs/promises";

/**
 * Memory of the workerd processes behind one `wrangler dev` (for e2e checks and
 * benchmarks on Linux): the harness starts wrangler as a process-group leader,
 * so its workerd children are the group's members named workerd.
 */

export async function workerdPids(port: number): Promise<number[]> {
  let leader: number | null = null;
  const stats = new Map<number, { comm: string; pgid: number }>();
  for (const pid of (await readdir("/proc")).filter((name) => /^\d+$/.test(name))) {
    try {
      const cmdline = (await readFile(`/proc/${pid}/cmdline`, "utf8")).split("\0");
      if (
        cmdline.some((arg) => arg.endsWith("wrangler.js")) &&
        cmdline.includes("dev") &&
        cmdline.includes(String(port))
      ) {
        leader = Number(pid);
      }
      const fields = (await readFile(`/proc/${pid}/stat`, "utf8")).replace(/^.*\) /, "").split(" ");
      stats.set(Number(pid), { comm: (await readFile(`/proc/${pid}/comm`, "utf8")).trim(), pgid: Number(fields[2]) });
    } catch {
      // Gone meanwhile.
    }
  }
  if (leader === null) return [];
  return [...stats].filter(([, stat]) => stat.pgid === leader && stat.comm.startsWith("workerd")).map(([pid]) => pid);
}

/**
 * Anonymous resident memory only: SQLite reads the local D1 file through the
 * page cache, and file pages say nothing about what the Worker holds.
 */
export async function rssAnonBytes(pids: number[]): Promise<number> {
  let total = 0;
  for (const pid of pids) {
    try {
      const match = /RssAnon:\s+(\d+) kB/.exec(await readFile(`/proc/${pid}/status`, "utf8"));
      if (match) total += Number(match[1]) * 1024;
    } catch {
      // Gone.
    }
  }
  return total;
}
