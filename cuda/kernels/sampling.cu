// Sampling ops on the GPU: argmax, penalties, sparse logit adds, filtered sampling, log-probabilities. One block
// per row; top-k, top-p, the draw and the top logprobs are rank selections (radix_select.cuh), so the row is never
// sorted. Semantics and rounding points follow cuda/cpu/sampling.cpp.
#include "radix_select.cuh"

namespace {

using namespace msgl::radix;

__device__ __forceinline__ double uniform01(uint32_t seed, int32_t step) {
  u64 z = ((u64)seed << 32 | (uint32_t)step) + 0x9e3779b97f4a7c15ull;  // splitmix64's first output
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return (double)((z ^ (z >> 31)) >> 11) * 0x1.0p-53;
}

__global__ void __launch_bounds__(kThreads) sample_kernel(int32_t* out, const float* __restrict__ logits, int vocab,
                                                          const float* temperature, const int32_t* top_k,
                                                          const float* top_p, const float* min_p,
                                                          const uint32_t* seeds, const int32_t* steps) {
  msgl::begin_dependent();
  __shared__ Shared s;
  const int r = blockIdx.x, idbits = vocab > 1 ? 32 - __clz(vocab - 1) : 0;
  Row row{logits + (size_t)r * vocab, vocab, idbits, 0.f, temperature[r], min_p[r], ldexpf(1.f, 63 - idbits)};
  const int k = top_k[r];
  const float p = top_p[r];
  if (!(row.temperature > 0)) {
    const int best = block_argmax(s.red, row.l, vocab);
    if (threadIdx.x == 0) out[r] = best;
    return;
  }
  u64 region_lo, list_lo = kNone, lo = 0;
  int best;
  if (k > 0 && k < vocab) {
    best = first_pass(s, row, region_lo);
  } else {  // a histogram would cost more than it saves: guess the region as the argmax's bin and the next two
    best = block_argmax(s.red, row.l, vocab);
    const uint32_t bin = ordered_bits(row.l[best]) >> 21;
    region_lo = (u64)(bin > 2 ? bin - 2 : 0) << (21 + idbits);
  }
  row.lmax = row.l[best];
  int token = best;  // also when only the argmax can be kept: it ranks first and has w = 1
  if (isfinite(row.lmax) && k != 1) {
    uint32_t expected = vocab;
    if (k > 0 && k < vocab) {
      lo = row.rank_key(rank_select(s, row, lo, expected, false, false, kCount, k, list_lo, region_lo, true).id);
      expected = k;
    }
    if (p < 1) {  // the argmax is always a candidate, so an id is found
      const Selected sel = rank_select(s, row, lo, expected, true, false, kAtLeast, p, list_lo, region_lo, false);
      lo = row.rank_key(sel.id), expected = sel.kept;
    }
    if (expected > 1) {
      const double u = uniform01(seeds[r], steps[r]);
      const int id = rank_select(s, row, lo, expected, true, true, kAbove, u, list_lo, region_lo, false).id;
      if (id >= 0) token = id;
    }
  }
  if (threadIdx.x == 0) out[r] = token;
}

__global__ void __launch_bounds__(kThreads) argmax_kernel(int32_t* out, const float* __restrict__ logits, int vocab) {
  msgl::begin_dependent();
  __shared__ Reduce red;
  const int best = block_argmax(red, logits + (size_t)blockIdx.x * vocab, vocab);
  if (threadIdx.x == 0) out[blockIdx.x] = best;
}

__global__ void __launch_bounds__(kThreads) logprobs_kernel(float* chosen_logprob, int32_t* top_ids,
                                                            float* top_logprobs, const float* __restrict__ logits,
                                                            const int32_t* chosen, int vocab, int k) {
  __shared__ Shared s;
  const int r = blockIdx.x, idbits = vocab > 1 ? 32 - __clz(vocab - 1) : 0;
  const Row row{logits + (size_t)r * vocab, vocab, idbits, 0.f, 1.f, 0.f, 1.f};
  const float* l = row.l;
  u64 region_lo, list_lo = kNone;
  const float lmax = l[first_pass(s, row, region_lo)];
  double sum = 0;  // as the CPU: fp32 exp, fp64 sum
  for (int i = threadIdx.x; i < vocab; i += kThreads) sum += expf(l[i] - lmax);
  for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(~0u, sum, o);
  if ((threadIdx.x & 31) == 0) s.red.d[threadIdx.x >> 5] = sum;
  __syncthreads();
  sum = s.red.d[threadIdx.x & 31];
  for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(~0u, sum, o);
  const float lse = lmax + (float)log(sum);
  if (threadIdx.x == 0) {
    const int c = chosen[r];
    chosen_logprob[r] = c >= 0 && c < vocab ? l[c] - lse : NAN;  // the CPU rejects such a token up front
  }
  if (k == 0) return;
  const u64 lo = row.rank_key(rank_select(s, row, 0, vocab, false, false, kCount, k, list_lo, region_lo, true).id);
  // Exactly k tokens have R >= lo: collect them with their keys (in s.mass), then place each at its rank.
  const bool from_list = list_lo <= lo;
  if (threadIdx.x == 0) s.low = 0;
  __syncthreads();
  for_tokens(s, row, from_list, [&](bool ok, int i, float x) {
    const u64 key = row.rank_key(i, x);
    if (ok && key >= lo) {
      const int at = atomicAdd(&s.low, 1);
      s.cnt[at] = i, s.mass[at] = key;
    }
  });
  __syncthreads();
  for (int j = threadIdx.x; j < k; j += kThreads) {
    int rank = 0;
    for (int m = 0; m < k; m++) rank += s.mass[m] > s.mass[j];
    top_ids[(size_t)r * k + rank] = s.cnt[j];
    top_logprobs[(size_t)r * k + rank] = l[s.cnt[j]] - lse;
  }
}

__global__ void penalties_kernel(float* logits, int vocab, int entries, const int32_t* rows, const int32_t* tokens,
                                 const int32_t* output_counts, const float* presence, const float* frequency,
                                 const float* repetition) {
  const int e = blockIdx.x * blockDim.x + threadIdx.x;
  if (e >= entries || rows[e] < 0 || tokens[e] < 0 || tokens[e] >= vocab) return;  // the CPU rejects these
  const int r = rows[e];
  float* x = logits + (size_t)r * vocab + tokens[e];
  float v = *x > 0 ? __fdiv_rn(*x, repetition[r]) : __fmul_rn(*x, repetition[r]);
  // The CPU library (-march=native) contracts frequency * count + presence into one FMA; so does this.
  if (output_counts[e] > 0) v = __fsub_rn(v, __fmaf_rn(frequency[r], (float)output_counts[e], presence[r]));
  *x = v;
}

__global__ void add_sparse_kernel(float* logits, int vocab, int entries, const int32_t* rows, const int32_t* tokens,
                                  const float* values) {
  const int e = blockIdx.x * blockDim.x + threadIdx.x;
  if (e >= entries || rows[e] < 0 || tokens[e] < 0 || tokens[e] >= vocab) return;
  float* x = logits + (size_t)rows[e] * vocab + tokens[e];
  *x = __fadd_rn(*x, values[e]);
}

}  // namespace

extern "C" int msgl_argmax(int32_t* out, const float* logits, int rows, int vocab, msgl_stream stream) {
  MSGL_CHECK(rows >= 0 && vocab > 0, "argmax: bad shape");
  if (rows == 0) return MSGL_OK;
  msgl::launch_early(argmax_kernel, rows, kThreads, 0, msgl::as_stream(stream), out, logits, vocab);
  return msgl::launched("argmax");
}

extern "C" int msgl_apply_penalties(float* logits, int vocab, int entries, const int32_t* rows, const int32_t* tokens,
                                    const int32_t* output_counts, const float* presence, const float* frequency,
                                    const float* repetition, msgl_stream stream) {
  MSGL_CHECK(vocab > 0 && entries >= 0, "apply_penalties: bad shape");
  if (entries == 0) return MSGL_OK;
  penalties_kernel<<<(entries + 255) / 256, 256, 0, msgl::as_stream(stream)>>>(logits, vocab, entries, rows, tokens,
                                                                              output_counts, presence, frequency,
                                                                              repetition);
  return msgl::launched("apply_penalties");
}

extern "C" int msgl_add_sparse(float* logits, int vocab, int entries, const int32_t* rows, const int32_t* tokens,
                               const float* values, msgl_stream stream) {
  MSGL_CHECK(vocab > 0 && entries >= 0, "add_sparse: bad shape");
  if (entries == 0) return MSGL_OK;
  add_sparse_kernel<<<(entries + 255) / 256, 256, 0, msgl::as_stream(stream)>>>(logits, vocab, entries, rows, tokens,
                                                                               values);
  return msgl::launched("add_sparse");
}

extern "C" int msgl_sample(int32_t* out, const float* logits, int rows, int vocab, const float* temperature,
                           const int32_t* top_k, const float* top_p, const float* min_p, const uint32_t* seeds,
                           const int32_t* steps, msgl_stream stream) {
  MSGL_CHECK(rows >= 0 && vocab > 0, "sample: bad shape");
  if (rows == 0) return MSGL_OK;
  msgl::launch_early(sample_kernel, rows, kThreads, 0, msgl::as_stream(stream), out, logits, vocab, temperature, top_k,
                     top_p, min_p, seeds, steps);
  return msgl::launched("sample");
}

extern "C" int msgl_logprobs(float* chosen_logprob, int32_t* top_ids, float* top_logprobs, const float* logits,
                             const int32_t* chosen, int rows, int vocab, int k, msgl_stream stream) {
  MSGL_CHECK(rows >= 0 && vocab > 0 && k >= 0 && k <= vocab, "logprobs: bad shape");
  MSGL_CHECK(k == 0 || (top_ids && top_logprobs), "logprobs: top_ids / top_logprobs are null with k > 0");
  if (k > kBins) return msgl::fail(MSGL_ERR_UNSUPPORTED, "logprobs: k > 2048 is not supported on the GPU");
  if (rows == 0) return MSGL_OK;
  logprobs_kernel<<<rows, kThreads, 0, msgl::as_stream(stream)>>>(chosen_logprob, top_ids, top_logprobs, logits,
                                                                  chosen, vocab, k);
  return msgl::launched("logprobs");
}
