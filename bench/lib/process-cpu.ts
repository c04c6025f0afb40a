import { readdirSync, readFileSync } from "node:fs";

/**
 * CPU time of process groups, from /proc (Linux): which process spent a
 * benchmark's CPU, per request. On a 2-core machine shared by the load
 * generator, the servers and the upstream, latency under load follows the
 * CPU each request costs, so this tells where a difference in p50 comes from.
 */

/** Clock ticks per second of /proc's utime and stime (USER_HZ: 100 on Linux). */
const TICKS_PER_SECOND = 100;

export interface ProcessCpu {
  pid: number;
  /** Its process group. */
  group: number;
  /** The command line, each part without its directory. */
  command: string;
  cpuMs: number;
}

/** Every process of the given process groups with its CPU so far (user + system). */
export function groupCpu(processGroups: number[]): ProcessCpu[] {
  const wanted = new Set(processGroups);
  const found: ProcessCpu[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      // Fields after "(comm)": state, ppid, pgrp, … utime is the 12th, stime the 13th.
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      if (!wanted.has(Number(fields[2]))) continue;
      const command = readFileSync(`/proc/${entry}/cmdline`, "utf8").split("\0").filter(Boolean);
      found.push({
        pid: Number(entry),
        group: Number(fields[2]),
        command: command.map((part) => part.split("/").at(-1)).join(" "),
        cpuMs: ((Number(fields[11]) + Number(fields[12])) * 1000) / TICKS_PER_SECOND,
      });
    } catch {
      // The process ended between the listing and the read.
    }
  }
  return found;
}

/** CPU per process between two readings (processes that appeared count from zero). */
export function cpuSpent(before: ProcessCpu[], after: ProcessCpu[]): Map<number, ProcessCpu> {
  const earlier = new Map(before.map((process) => [process.pid, process.cpuMs]));
  return new Map(
    after.map((process) => [process.pid, { ...process, cpuMs: process.cpuMs - (earlier.get(process.pid) ?? 0) }]),
  );
}

/** This process's own CPU (the load generator and the fake upstream run here), in ms. */
export function ownCpuMs(): number {
  const usage = process.cpuUsage();
  return (usage.user + usage.system) / 1000;
}
