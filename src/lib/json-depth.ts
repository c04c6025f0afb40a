/**
 * Whether a parsed JSON value nests objects or arrays more than `maxLevels` deep (the value itself is level 1).
 * Walked with a stack of its own, not by recursion: the values it is for are those too deep to recurse through.
 */
export function nestsDeeperThan(value: unknown, maxLevels: number): boolean {
  const pending: { value: unknown; level: number }[] = [{ value, level: 1 }];
  for (let next = pending.pop(); next !== undefined; next = pending.pop()) {
    if (typeof next.value !== "object" || next.value === null) continue;
    if (next.level > maxLevels) return true;
    for (const inner of Object.values(next.value)) pending.push({ value: inner, level: next.level + 1 });
  }
  return false;
}
