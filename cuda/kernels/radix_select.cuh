// Radix selection in rank order over one row of fp32 logits, by one block of kThreads (the sampling kernels' core).
// rank_select finds the first token in rank order (descending logit, ties lower id first) at which a running
// weight (1 per token, or w = exp((logit - max) / temperature)) reaches a target. It is an MSD radix select over
// the rank key R = ordered logit bits << idbits | (vocab - 1 - id) (descending R = rank order), 11 bits a level,
// with shared-memory histograms of count and mass. Masses are fixed point (w * 2^(63 - idbits): a row's total fits
// 64 bits) summed by integer atomics, so every sum is exact and a result does not depend on thread timing. Tokens
// that fit kCap are gathered into shared memory, and later levels and selections read them there.
#pragma once
#include <climits>
#include "common.cuh"

namespace msgl::radix {

using u64 = unsigned long long;
constexpr int kThreads = 1024;
constexpr int kBins = 2048;  // 11-bit digits; the scan gives each thread two bins
constexpr int kCap = 3072;   // tokens kept in shared memory
constexpr u64 kNone = ~0ull;

struct Reduce {
  float v[32];
  int i[32];
  double d[32];
};

struct Shared {
  uint32_t cnt[kBins];  // per-bin histogram of one level: count, fixed-point mass, and the bin's first token
  u64 mass[kBins];
  int32_t last[kBins];
  int32_t list[kCap];  // gathered token ids
  u64 scan_w[32];
  uint32_t scan_c[32];
  Reduce red;
  int pick, low, nlist;
  uint32_t base_c;
  u64 base_w;
};

// An unsigned key whose order is the float order (-0 counts as +0), as in the CPU library.
__device__ __forceinline__ uint32_t ordered_bits(float f) {
  uint32_t u = __float_as_uint(f + 0.0f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__device__ __forceinline__ void take_better(float& v, int& i, float v2, int i2) {
  if (v2 > v || (v2 == v && i2 < i)) v = v2, i = i2;
}

// The row's argmax from each thread's candidate: lowest index on ties, NaN never unless l[0] is (the CPU's rule).
__device__ int reduce_argmax(Reduce& red, float v, int id, const float* l) {
  for (int o = 16; o > 0; o >>= 1) take_better(v, id, __shfl_xor_sync(~0u, v, o), __shfl_xor_sync(~0u, id, o));
  const int lane = threadIdx.x & 31;
  if (lane == 0) red.v[threadIdx.x >> 5] = v, red.i[threadIdx.x >> 5] = id;
  __syncthreads();
  v = red.v[lane], id = red.i[lane];
  for (int o = 16; o > 0; o >>= 1) take_better(v, id, __shfl_xor_sync(~0u, v, o), __shfl_xor_sync(~0u, id, o));
  __syncthreads();
  return id == INT_MAX || isnan(l[0]) ? 0 : id;
}

__device__ int block_argmax(Reduce& red, const float* __restrict__ l, int vocab) {
  float v = -INFINITY;
  int id = INT_MAX, i = threadIdx.x;
  for (; i + 3 * kThreads < vocab; i += 4 * kThreads) {
    const float x0 = l[i], x1 = l[i + kThreads], x2 = l[i + 2 * kThreads], x3 = l[i + 3 * kThreads];
    take_better(v, id, x0, i), take_better(v, id, x1, i + kThreads);
    take_better(v, id, x2, i + 2 * kThreads), take_better(v, id, x3, i + 3 * kThreads);
  }
  for (; i < vocab; i += kThreads) take_better(v, id, l[i], i);
  return reduce_argmax(red, v, id, l);
}

__device__ __forceinline__ void warp_scan(u64& w, uint32_t& c) {
  for (int o = 1; o < 32; o <<= 1) {
    const u64 yw = __shfl_up_sync(~0u, w, o);
    const uint32_t yc = __shfl_up_sync(~0u, c, o);
    if ((threadIdx.x & 31) >= o) w += yw, c += yc;
  }
}

// Exclusive scan over the block in thread order of (w, c); totals in tw / tc. Every thread calls it.
__device__ void block_scan(Shared& s, u64& w, uint32_t& c, u64& tw, uint32_t& tc) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  u64 iw = w;
  uint32_t ic = c;
  warp_scan(iw, ic);
  if (lane == 31) s.scan_w[warp] = iw, s.scan_c[warp] = ic;
  __syncthreads();
  if (warp == 0) {
    u64 sw = s.scan_w[lane];
    uint32_t sc = s.scan_c[lane];
    warp_scan(sw, sc);
    s.scan_w[lane] = sw, s.scan_c[lane] = sc;
  }
  __syncthreads();
  w = (warp ? s.scan_w[warp - 1] : 0) + iw - w;
  c = (warp ? s.scan_c[warp - 1] : 0) + ic - c;
  tw = s.scan_w[31], tc = s.scan_c[31];
}

struct Row {
  const float* l;
  int vocab, idbits;
  float lmax, temperature, min_p, scale;  // scale = 2^(63 - idbits), the fixed-point unit of w
  __device__ u64 rank_key(int i, float x) const { return (u64)ordered_bits(x) << idbits | (uint32_t)(vocab - 1 - i); }
  __device__ u64 rank_key(int i) const { return rank_key(i, l[i]); }
};

// Calls f(ok, i, logit) for every token of the row (or of s.list) with whole warps in step, so f may use warp
// collectives; ok is false on the padding lanes of the last step.
template <class F>
__device__ void for_tokens(const Shared& s, const Row& row, bool from_list, F&& f) {
  const int lane = threadIdx.x & 31;
  if (from_list) {
    for (int j = threadIdx.x; j - lane < s.nlist; j += kThreads) {
      const int i = j < s.nlist ? s.list[j] : 0;
      f(j < s.nlist, i, row.l[i]);
    }
    return;
  }
  int i = threadIdx.x;
  for (; i - lane + 3 * kThreads + 31 < row.vocab; i += 4 * kThreads) {
    const float x0 = row.l[i], x1 = row.l[i + kThreads], x2 = row.l[i + 2 * kThreads], x3 = row.l[i + 3 * kThreads];
    f(true, i, x0), f(true, i + kThreads, x1), f(true, i + 2 * kThreads, x2), f(true, i + 3 * kThreads, x3);
  }
  for (; i - lane < row.vocab; i += kThreads) f(i < row.vocab, i, row.l[i < row.vocab ? i : 0]);
}

// A 64-bit shared atomicAdd compiles to a CAS loop; two native 32-bit adds are exact: the add that wraps the low
// word carries into the high word.
__device__ __forceinline__ void add_u64(u64* p, u64 v) {
  uint32_t* half = reinterpret_cast<uint32_t*>(p);
  const uint32_t lo = (uint32_t)v, old = atomicAdd(half, lo);
  const uint32_t hi = (uint32_t)(v >> 32) + (old + lo < old);
  if (hi) atomicAdd(half + 1, hi);
}

// Warp-collective: counts token i (when ok) into bin d with weight wf. A warp whose counted tokens share one bin
// (flat rows, deep levels) adds once.
__device__ void hist_add(Shared& s, bool ok, int d, u64 wf, int i, bool weighted) {
  const int lane = threadIdx.x & 31;
  const unsigned m = __ballot_sync(~0u, ok);
  if (!m) return;
  const int leader = __ffs(m) - 1, dl = __shfl_sync(~0u, d, leader);
  if (__all_sync(~0u, !ok || d == dl)) {
    u64 sum = ok ? wf : 0;  // distinct tokens of one row: the sum fits
    if (weighted)
      for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(~0u, sum, o);
    if (lane == leader) {
      if (atomicAdd(&s.cnt[dl], (uint32_t)__popc(m)) == 0) s.last[dl] = i;
      if (weighted) add_u64(&s.mass[dl], sum);
    }
  } else if (ok) {
    if (atomicAdd(&s.cnt[d], 1u) == 0) s.last[d] = i;  // the bin's first token: its only one when cnt ends at 1
    if (weighted) add_u64(&s.mass[d], wf);
  }
}

// Warp-collective: appends token i to s.list when keep.
__device__ void list_add(Shared& s, bool keep, int i) {
  const int lane = threadIdx.x & 31;
  if (const unsigned k = __ballot_sync(~0u, keep)) {
    int at = 0;
    if (lane == __ffs(k) - 1) at = atomicAdd(&s.nlist, __popc(k));
    at = __shfl_sync(~0u, at, __ffs(k) - 1) + __popc(k & ((1u << lane) - 1));
    if (keep && at < kCap) s.list[at] = i;
  }
}

// The first pass over a row: its argmax, and in s.cnt / s.last the level-0 histogram of counts (key >> 21), which
// is top-k's first level. region_lo: R bound of the most top bins whose tokens fit s.list (kNone: none do).
__device__ int first_pass(Shared& s, const Row& row, u64& region_lo) {
  for (int b = threadIdx.x; b < kBins; b += kThreads) s.cnt[b] = 0;
  if (threadIdx.x == 0) s.low = kBins;
  __syncthreads();
  float v = -INFINITY;
  int id = INT_MAX;
  for_tokens(s, row, false, [&](bool ok, int i, float x) {
    if (ok) take_better(v, id, x, i);
    hist_add(s, ok, ordered_bits(x) >> 21, 1, i, false);
  });
  const int best = reduce_argmax(s.red, v, id, row.l);
  const int d0 = kBins - 1 - 2 * threadIdx.x, d1 = d0 - 1;  // thread order is descending bin order
  const uint32_t c0 = s.cnt[d0], c1 = s.cnt[d1];
  u64 ew = c0 + c1, tw;
  uint32_t ec = c0 + c1, tc;
  block_scan(s, ew, ec, tw, tc);
  if (ew + c0 + c1 <= kCap) atomicMin(&s.low, d1);
  else if (ew + c0 <= kCap) atomicMin(&s.low, d0);
  __syncthreads();
  region_lo = s.low < kBins ? (u64)s.low << (21 + row.idbits) : kNone;
  __syncthreads();
  return best;
}

// How the target t comes from the candidates' total weight W; the selected token is the first at which the
// running weight is >= t.
enum Mode { kCount, kAtLeast, kAbove };  // t = param; t = ceil(param * W); t = floor(param * W) + 1

struct Selected {
  int id;         // -1 when there are no candidates
  uint32_t kept;  // candidates ranked at or before it
};

// Candidates: tokens with R >= lo; weighted: those with fixed-point w > 0 (and, with min_p_filter, w >= min_p),
// weighing w; otherwise all, weighing 1. `expected` bounds their number. list_lo: s.list holds every token with
// R >= list_lo (kNone: it does not hold a rank prefix); level0: s.cnt already holds level 0 (top-k from lo = 0).
__device__ Selected rank_select(Shared& s, Row row, u64 lo, uint32_t expected, bool weighted, bool min_p_filter,
                                Mode mode, double param, u64& list_lo, u64& region_lo, bool level0) {
  u64 prefix = 0, base_w = 0, t = 0;
  uint32_t base_c = 0, prev = expected;
  bool bin_list = false;  // s.list holds the candidates of the current bin
  for (int top = 32 + row.idbits, level = 0; top > 0; level++) {
    const int shift = top > 11 ? top - 11 : 0;
    const u64 least = lo > prefix ? lo : prefix;  // the lowest R a candidate of this level can have
    const bool pass = !(level == 0 && level0), from_list = bin_list || list_lo <= least;
    // A pass over the whole row gathers what later steps need, by priority: this selection's candidates, the
    // top region, or this bin's candidates.
    u64 gather_lo = kNone;
    bool gather_bin = false;
    if (pass && !from_list) {
      if (level == 0 && expected <= kCap) gather_lo = lo;
      else if (region_lo != kNone && list_lo != region_lo && (level == 0 || least >= region_lo)) gather_lo = region_lo;
      else gather_bin = prev <= kCap;
    }
    if (threadIdx.x == 0) s.pick = -1, s.low = kBins;
    if (threadIdx.x == 0 && (gather_lo != kNone || gather_bin)) s.nlist = 0;
    if (pass) {
      for (int b = threadIdx.x; b < kBins; b += kThreads) s.cnt[b] = 0, s.mass[b] = 0;
      __syncthreads();
      for_tokens(s, row, from_list, [&](bool ok, int i, float x) {
        const u64 r = row.rank_key(i, x);
        ok = ok && r >= lo && (r >> top) == (prefix >> top);
        u64 wf = 1;
        if (weighted && ok) {
          const float w = expf((x - row.lmax) / row.temperature);
          wf = __float2ull_rn(w * row.scale);
          ok = wf > 0 && (!min_p_filter || w >= row.min_p);
        }
        if (gather_bin) list_add(s, ok, i);
        else if (gather_lo != kNone) list_add(s, r >= gather_lo && i < row.vocab, i);
        hist_add(s, ok, (int)(r >> shift) & (kBins - 1), wf, i, weighted);
      });
      __syncthreads();
      if (gather_lo != kNone && s.nlist > kCap) region_lo = kNone;  // a guessed region overflowed: drop it
      if (gather_lo != kNone) list_lo = s.nlist <= kCap ? gather_lo : kNone;
      if (gather_bin) list_lo = kNone, bin_list = true;
    }
    const int d0 = kBins - 1 - 2 * threadIdx.x, d1 = d0 - 1;  // thread order is descending digit order
    const uint32_t c0 = s.cnt[d0], c1 = s.cnt[d1];
    const u64 w0 = weighted ? s.mass[d0] : c0, w1 = weighted ? s.mass[d1] : c1;
    u64 ew = w0 + w1, tw;
    uint32_t ec = c0 + c1, tc;
    block_scan(s, ew, ec, tw, tc);
    if (level == 0) {
      if (tc == 0) return {-1, 0};
      const double x = param * (double)tw;
      t = mode == kCount ? (u64)param : mode == kAtLeast ? (x > 0 ? __double2ull_ru(x) : 0) : __double2ull_rd(x) + 1;
    }
    const u64 b0 = base_w + ew;
    if (c0 && b0 + w0 >= t) atomicMax(&s.pick, d0);
    else if (c1 && b0 + w0 + w1 >= t) atomicMax(&s.pick, d1);
    if (c1) atomicMin(&s.low, d1);
    else if (c0) atomicMin(&s.low, d0);
    __syncthreads();
    const int d = s.pick >= 0 ? s.pick : s.low;  // no bin reaches t (rounding): the last candidate, as on the CPU
    if (d == d0) s.base_w = b0, s.base_c = base_c + ec;
    if (d == d1) s.base_w = b0 + w0, s.base_c = base_c + ec + c0;
    __syncthreads();
    base_w = s.base_w, base_c = s.base_c, prev = s.cnt[d];
    const int id = s.last[d];
    if (weighted && shift <= row.idbits && prev > 1) {
      // Every key bit is fixed: the candidates left tie and weigh the same, so the first at which the running
      // weight reaches t is the j-th in id order. Go on counting (no more exp) with t = j.
      const u64 each = s.mass[d] / prev;
      t = t > base_w ? (t - base_w + each - 1) / each : 0;
      base_w = 0, weighted = false;
    }
    prefix |= (u64)d << shift;
    top = shift;
    __syncthreads();  // everyone has read this level's results before the next level clears them
    if (prev == 1 || top == 0) return {id, base_c + 1};
  }
  return {-1, 0};  // not reached
}

}  // namespace msgl::radix
