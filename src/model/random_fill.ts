// Dummy-weight fills of part of a tensor. msgl_fill_random(x, n, seed) writes x[i] = f(mix64(seed · φ + i))
// with φ = 0x9e3779b97f4a7c15 (cuda/cpu/misc.cpp; the CUDA kernel must keep the same formula). φ is odd,
// so it is invertible mod 2^64, and the elements [offset, offset + n) of the tensor filled with `seed` are
// exactly a fill of n elements with seed + offset · φ⁻¹: a rank fills its slice of a tensor with the very
// values the unsharded fill gives, without the C ABI needing an offset argument.
import type { DevicePtr, NativeOps } from "../backend/native_ops.ts";

const MOD = 1n << 64n;
const PHI = 0x9e3779b97f4a7c15n;

function inverseMod64(a: bigint): bigint {
  let x = a; // correct to 3 bits for odd a; each Newton step doubles the correct bits
  for (let i = 0; i < 6; i++) x = (x * (2n - a * x)) % MOD;
  return ((x % MOD) + MOD) % MOD;
}

const PHI_INVERSE = inverseMod64(PHI);

/** The seed whose fill starts where the fill with `seed` is at element `offset`. */
export function seedAtOffset(seed: number, offset: number): bigint {
  return (BigInt(seed) + BigInt(offset) * PHI_INVERSE) % MOD;
}

/** x[0, n) = elements [offset, offset + n) of fill_random(seed). */
export function fillRandomAt(ops: NativeOps, x: DevicePtr, n: number, seed: number, offset: number, mean: number, std: number): void {
  ops.fillRandom(x, n, seedAtOffset(seed, offset), mean, std);
}
