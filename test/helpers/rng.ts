// mulberry32: a small seeded PRNG for tests, so every failure replays exactly.
export type Rng = () => number;

export function rng(seed: number): Rng {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** msgl_sample's uniform draw, written out independently of the kernels (cuda/include/msgl.h):
 * (splitmix64(seed << 32 | step) >> 11) · 2^-53. */
export function sampleUniform(seed: number, step: number): number {
  const M = (1n << 64n) - 1n;
  let z = ((BigInt(seed >>> 0) << 32n) | BigInt(step >>> 0)) + 0x9e3779b97f4a7c15n & M;
  z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & M;
  z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & M;
  z ^= z >> 31n;
  return Number(z >> 11n) * 2 ** -53;
}
