// Summary statistics as numpy computes them (sglang.bench_serving reports np.mean / np.median /
// np.percentile, whose default is linear interpolation between the closest ranks).

export function mean(xs: readonly number[]): number {
  if (xs.length === 0) return Number.NaN;
  let s = 0;
  for (const x of xs) s += x;
  return s / xs.length;
}

/** np.percentile(xs, p) with linear interpolation; NaN for no values. */
export function percentile(xs: readonly number[], p: number): number {
  if (xs.length === 0) return Number.NaN;
  const sorted = [...xs].sort((a, b) => a - b);
  const rank = (p / 100) * (sorted.length - 1);
  const lo = Math.floor(rank);
  const hi = Math.ceil(rank);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo);
}

export function median(xs: readonly number[]): number {
  return percentile(xs, 50);
}

export function max(xs: readonly number[]): number {
  return xs.length === 0 ? Number.NaN : xs.reduce((a, b) => Math.max(a, b), -Infinity);
}

export interface Summary {
  mean_ms: number;
  median_ms: number;
  p95_ms: number;
  p99_ms: number;
  max_ms: number;
}

/** Mean, median, p95, p99 and max of values in milliseconds. */
export function summarize(ms: readonly number[]): Summary {
  return { mean_ms: mean(ms), median_ms: median(ms), p95_ms: percentile(ms, 95), p99_ms: percentile(ms, 99), max_ms: max(ms) };
}
