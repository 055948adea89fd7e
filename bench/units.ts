// Numbers with their unit, scaled to stay readable (1.19 GB, 3.4 TFLOP, 12.5 µs).

function scaled(x: number, unit: string, base: number, prefixes: string[], digits = 3): string {
  let i = 0;
  while (Math.abs(x) >= base && i < prefixes.length - 1) {
    x /= base;
    i++;
  }
  return `${Number(x.toPrecision(digits))} ${prefixes[i]}${unit}`;
}

const SI = ["", "k", "M", "G", "T", "P"];

export const bytes = (n: number): string => scaled(n, "B", 1000, SI);
export const flops = (n: number): string => scaled(n, "FLOP", 1000, SI);
export const bandwidth = (bytesPerSecond: number): string => scaled(bytesPerSecond, "B/s", 1000, SI);
export const flopRate = (flopsPerSecond: number): string => scaled(flopsPerSecond, "FLOP/s", 1000, SI);

/** Microseconds as µs, ms or s. */
export function duration(us: number): string {
  if (us < 1000) return `${Number(us.toPrecision(3))} µs`;
  if (us < 1e6) return `${Number((us / 1000).toPrecision(3))} ms`;
  return `${Number((us / 1e6).toPrecision(3))} s`;
}
