// Rotary embedding tables: inverse frequencies (with llama3 / linear scaling) and the cos|sin cache
// the msgl_rope op reads. Float32 rounding follows transformers' float32 computation.
import type { ModelConfig } from "./config.ts";

const f32 = Math.fround;

export function ropeInverseFrequencies(config: ModelConfig, rotaryDim = config.headDim): Float32Array {
  const half = rotaryDim / 2;
  const inv = new Float32Array(half);
  for (let i = 0; i < half; i++) inv[i] = f32(1 / f32(config.ropeTheta ** f32((2 * i) / rotaryDim)));
  const s = config.ropeScaling;
  switch (s.type) {
    case "default":
      return inv;
    case "linear":
      return inv.map((x) => f32(x / s.factor));
    case "llama3":
      return llama3Scaled(inv, s.factor, s.lowFreqFactor ?? 1, s.highFreqFactor ?? 4,
        s.originalMaxPositionEmbeddings ?? 8192);
    case "yarn":
    case "dynamic":
      // TODO(yarn): needs the ramp mask between betaFast/betaSlow over the original context and the
      // attention factor (mscale) folded into the cos|sin values; "dynamic" needs per-length rescaling.
      throw new Error(`RoPE scaling "${s.type}" is not supported yet (supported: default, linear, llama3)`);
  }
}

// transformers' _compute_llama3_parameters: keep high frequencies, divide low ones by `factor`,
// interpolate smoothly in between.
function llama3Scaled(inv: Float32Array, factor: number, low: number, high: number, original: number): Float32Array {
  const lowFreqWavelen = original / low;
  const highFreqWavelen = original / high;
  return inv.map((x) => {
    const wavelen = (2 * Math.PI) / x;
    if (wavelen < highFreqWavelen) return x;
    if (wavelen > lowFreqWavelen) return f32(x / factor);
    const smooth = (original / wavelen - low) / (high - low);
    return f32((1 - smooth) * (x / factor) + smooth * x);
  });
}

/** fp32 [maxPositions, rotaryDim]: cos of each frequency in the first half of a row, sin in the second. */
export function ropeCosSinCache(config: ModelConfig, maxPositions: number, rotaryDim = config.headDim): Float32Array {
  const inv = ropeInverseFrequencies(config, rotaryDim);
  const half = rotaryDim / 2;
  const cache = new Float32Array(maxPositions * rotaryDim);
  for (let p = 0; p < maxPositions; p++) {
    for (let i = 0; i < half; i++) {
      const angle = f32(p * inv[i]);
      cache[p * rotaryDim + i] = Math.cos(angle);
      cache[p * rotaryDim + half + i] = Math.sin(angle);
    }
  }
  return cache;
}
