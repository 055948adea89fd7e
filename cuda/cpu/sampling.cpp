// Sampling ops: penalties, sparse logit adds, filtered sampling, log-probabilities.
// Top-k / top-p / inverse-CDF selection is a radix select over the logits' bits (histogram passes, as the
// CUDA kernels do it), so the vocabulary is never sorted.
#include <vector>
#include "common.h"

using namespace msgl;

namespace {

// An unsigned key whose order is the float order (-0 counts as +0, so ties match argmax's float compare).
inline uint32_t ordered_bits(float f) {
  f += 0.0f;
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// Rank order: larger logit first, lower id first on ties. True when token a ranks at or before token b.
inline bool at_or_before(const float* logits, int a, int b) {
  uint32_t ka = ordered_bits(logits[a]), kb = ordered_bits(logits[b]);
  return ka > kb || (ka == kb && a <= b);
}

int argmax_row(const float* l, int vocab) {
  int best = 0;
  for (int i = 1; i < vocab; i++)
    if (l[i] > l[best]) best = i;
  return best;
}

// splitmix64 finalizer, as in misc.cpp.
inline uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

inline double uniform01(uint32_t seed, int32_t step) {
  uint64_t state = (uint64_t)seed << 32 | (uint32_t)step;
  return (double)(mix64(state + 0x9e3779b97f4a7c15ull) >> 11) * 0x1.0p-53;
}

int32_t* index_scratch(size_t n) {
  thread_local std::vector<int32_t> buffer;
  if (buffer.size() < n) buffer.resize(n);
  return buffer.data();
}

// Among candidates c[0..n) (n >= 1, ascending ids) taken in rank order, returns the first one at which the
// running total of weights (w[id], or 1 when w is null) passes `target` (> when strict, >= otherwise), or
// the last one when the total never does (rounding). Overwrites c.
int select_ranked(const float* logits, const float* w, int32_t* c, int n, double target, bool strict) {
  double before = 0;  // weight of the candidates ranked before the ones still in c
  for (int shift = 24; shift >= 0 && n > 1; shift -= 8) {
    double mass[256] = {};
    int count[256] = {};
    for (int i = 0; i < n; i++) {
      int b = (ordered_bits(logits[c[i]]) >> shift) & 255;
      mass[b] += w ? w[c[i]] : 1.0;
      count[b]++;
    }
    int pick = 0;
    double pick_before = before;
    for (int b = 255; b >= 0; b--) {
      if (!count[b]) continue;
      pick = b;
      pick_before = before;
      double through = before + mass[b];
      if (strict ? through > target : through >= target) break;
      before = through;
    }
    before = pick_before;
    int m = 0;
    for (int i = 0; i < n; i++)
      if (((ordered_bits(logits[c[i]]) >> shift) & 255) == (uint32_t)pick) c[m++] = c[i];
    n = m;
  }
  // The candidates left share one logit; they rank in id order, which stable compaction kept.
  for (int i = 0; i < n - 1; i++) {
    before += w ? w[c[i]] : 1.0;
    if (strict ? before > target : before >= target) return c[i];
  }
  return c[n - 1];
}

int sample_row(const float* l, int vocab, float temperature, int top_k, float top_p, float min_p, double u) {
  int best = argmax_row(l, vocab);
  if (!(temperature > 0) || l[best] == -INFINITY) return best;
  float* w = scratch(vocab);
  int32_t* c = index_scratch(vocab);
  for (int i = 0; i < vocab; i++) w[i] = std::exp((l[i] - l[best]) / temperature);

  int last = -1;  // the last kept token in rank order; -1 while all are kept
  if (top_k > 0 && top_k < vocab) {
    for (int i = 0; i < vocab; i++) c[i] = i;
    last = select_ranked(l, nullptr, c, vocab, top_k - 1, true);
  }
  // Gathers the kept tokens with w >= floor (and w > 0) into c; returns their count and w-sum.
  auto gather = [&](float floor, double& mass) {
    int n = 0;
    mass = 0;
    for (int i = 0; i < vocab; i++) {
      if (w[i] > 0 && w[i] >= floor && (last < 0 || at_or_before(l, i, last))) {
        c[n++] = i;
        mass += w[i];
      }
    }
    return n;
  };
  double mass;
  int n;
  if (top_p < 1) {
    n = gather(0, mass);
    last = select_ranked(l, w, c, n, (double)top_p * mass, false);
  }
  n = gather(min_p, mass);  // holds the argmax (w = 1) unless min_p > 1
  return n > 0 ? select_ranked(l, w, c, n, u * mass, true) : best;
}

}  // namespace

extern "C" int msgl_apply_penalties(float* logits, int vocab, int entries, const int32_t* rows,
                                    const int32_t* tokens, const int32_t* output_counts, const float* presence,
                                    const float* frequency, const float* repetition, msgl_stream) {
  MSGL_CHECK(vocab > 0 && entries >= 0, "apply_penalties: bad shape");
  for (int e = 0; e < entries; e++)
    MSGL_CHECK(rows[e] >= 0 && tokens[e] >= 0 && tokens[e] < vocab, "apply_penalties: entry out of range");
  for (int e = 0; e < entries; e++) {
    int r = rows[e];
    float* x = logits + (size_t)r * vocab + tokens[e];
    float v = *x > 0 ? *x / repetition[r] : *x * repetition[r];
    if (output_counts[e] > 0) v -= frequency[r] * (float)output_counts[e] + presence[r];
    *x = v;
  }
  return MSGL_OK;
}

extern "C" int msgl_add_sparse(float* logits, int vocab, int entries, const int32_t* rows, const int32_t* tokens,
                               const float* values, msgl_stream) {
  MSGL_CHECK(vocab > 0 && entries >= 0, "add_sparse: bad shape");
  for (int e = 0; e < entries; e++)
    MSGL_CHECK(rows[e] >= 0 && tokens[e] >= 0 && tokens[e] < vocab, "add_sparse: entry out of range");
  for (int e = 0; e < entries; e++) logits[(size_t)rows[e] * vocab + tokens[e]] += values[e];
  return MSGL_OK;
}

extern "C" int msgl_sample(int32_t* out, const float* logits, int rows, int vocab, const float* temperature,
                           const int32_t* top_k, const float* top_p, const float* min_p, const uint32_t* seeds,
                           const int32_t* steps, msgl_stream) {
  MSGL_CHECK(rows >= 0 && vocab > 0, "sample: bad shape");
#pragma omp parallel for schedule(dynamic, 1) if (rows > 1)
  for (int r = 0; r < rows; r++) {
    out[r] = sample_row(logits + (size_t)r * vocab, vocab, temperature[r], top_k[r], top_p[r], min_p[r],
                        uniform01(seeds[r], steps[r]));
  }
  return MSGL_OK;
}

extern "C" int msgl_logprobs(float* chosen_logprob, int32_t* top_ids, float* top_logprobs, const float* logits,
                             const int32_t* chosen, int rows, int vocab, int k, msgl_stream) {
  MSGL_CHECK(rows >= 0 && vocab > 0 && k >= 0 && k <= vocab, "logprobs: bad shape");
  MSGL_CHECK(k == 0 || (top_ids && top_logprobs), "logprobs: top_ids / top_logprobs are null with k > 0");
  for (int r = 0; r < rows; r++) MSGL_CHECK(chosen[r] >= 0 && chosen[r] < vocab, "logprobs: chosen token out of range");
#pragma omp parallel for schedule(static) if (rows > 4)
  for (int r = 0; r < rows; r++) {
    const float* l = logits + (size_t)r * vocab;
    float max = l[argmax_row(l, vocab)];
    double sum = 0;
    for (int i = 0; i < vocab; i++) sum += std::exp(l[i] - max);
    float lse = max + (float)std::log(sum);
    chosen_logprob[r] = l[chosen[r]] - lse;
    if (k == 0) continue;
    // Insertion into the running top k (k is small: at most 20 from the API).
    int32_t* ids = top_ids + (size_t)r * k;
    int filled = 0;
    for (int i = 0; i < vocab; i++) {
      if (filled == k && at_or_before(l, ids[k - 1], i)) continue;
      int j = filled < k ? filled++ : k - 1;
      for (; j > 0 && !at_or_before(l, ids[j - 1], i); j--) ids[j] = ids[j - 1];
      ids[j] = i;
    }
    for (int j = 0; j < k; j++) top_logprobs[(size_t)r * k + j] = l[ids[j]] - lse;
  }
  return MSGL_OK;
}
