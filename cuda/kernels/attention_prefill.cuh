// The work items of the prefill / extend attention kernels (attention_prefill.cu, attention_prefill_wgmma.cu):
// their arguments, the persistent zigzag walk over (request, q tile, head chunk) items, and the copy of a
// key tile's slots into shared memory. A tile holds ROWS (token, q head) rows of one kv head.
#pragma once
#include "attention.cuh"

namespace msgl::attn::prefill {

struct Args {
  msgl_bf16* out;
  const msgl_bf16 *q, *k, *v;
  const int32_t *page_table, *rows, *qo_indptr, *kv_lens;
  int page_stride, batch, q_heads, kv_heads, group, q_stride;
  int hc;      // q heads per tile: min(group, ROWS)
  int chunks;  // tiles side by side to cover one group: ceil(group / hc)
  int tpt;     // tokens per tile: ROWS / hc
  float scale_log2;  // |scale| · log2(e), > 0
  int negate_q;      // scale < 0: Q's signs are flipped once per item instead
};

__device__ __forceinline__ void cp_async4(uint32_t dst, const void* src, bool valid) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 4 : 0));
}

// One work item: q tile of tpt tokens × hc heads of one request and one head chunk (hg = kv head · chunks + c).
struct Item {
  int k;      // position in this CTA's item sequence
  int hg;     // head chunk
  int q0;     // token index (in q / out) of the tile's first token
  int ntok;   // tokens in the tile
  int base;   // kv_len - n + tok0: the first token sees keys [0, base + 1)
  int nkt;    // key tiles
  const int32_t* slots;  // the request's page-table row
  __device__ int visible_max() const { return base + ntok; }
};

// The cursors live in warp-private shared memory between uses (every lane stores the same values), which
// leaves the registers to the accumulators.
__device__ __forceinline__ Item load(const volatile Item& v) {
  Item t;
  t.k = v.k, t.hg = v.hg, t.q0 = v.q0, t.ntok = v.ntok, t.base = v.base, t.nkt = v.nkt, t.slots = v.slots;
  return t;
}
__device__ __forceinline__ void store(volatile Item& v, const Item& t) {
  v.k = t.k, v.hg = t.hg, v.q0 = t.q0, v.ntok = t.ntok, v.base = t.base, v.nkt = t.nkt, v.slots = t.slots;
}

// Finds the first non-empty item at or after it.k. Items run request by request; within a request q tiles in
// descending order (rows with the most keys first), all head chunks of one q tile side by side, so the
// zigzag deals out nearly equal work. (Grouping head chunks for L2 locality instead measured slower: the
// balance matters more.) Request b owns the virtual tiles [P(b), P(b+1)), P(b) = b + qo_indptr[b] / tpt:
// enough for its ceil(n / tpt) tiles and computable without a prefix sum; the one spare tile a request may
// get is skipped. Items = head chunks × P(batch).
template <int BN>
__device__ bool find_item(const Args& a, Item& it) {
  const int grid = gridDim.x, bid = blockIdx.x, hgs = a.kv_heads * a.chunks;
  const int items = hgs * (a.batch + __ldg(a.qo_indptr + a.batch) / a.tpt);
  for (;; it.k++) {
    const int w = it.k * grid + ((it.k & 1) ? grid - 1 - bid : bid);
    if (w >= items) return false;
    const int vt = w / hgs;
    int lo = 0, hi = a.batch - 1;  // largest b with P(b) <= vt
    while (lo < hi) {
      const int mid = (lo + hi + 1) >> 1;
      if (mid + __ldg(a.qo_indptr + mid) / a.tpt <= vt) lo = mid;
      else hi = mid - 1;
    }
    const int qo = __ldg(a.qo_indptr + lo), qo_end = __ldg(a.qo_indptr + lo + 1);
    const int p0 = lo + qo / a.tpt, span = lo + 1 + qo_end / a.tpt - p0;
    const int l = w - hgs * p0, t = span - 1 - l / hgs;
    const int n = qo_end - qo, tok0 = t * a.tpt;
    if (tok0 >= n) continue;
    it.hg = l % hgs;
    it.q0 = qo + tok0;
    it.ntok = min(a.tpt, n - tok0);
    it.base = __ldg(a.kv_lens + lo) - n + tok0;
    it.slots = a.page_table + (long long)__ldg(a.rows + lo) * a.page_stride;
    it.nkt = (it.visible_max() + BN - 1) / BN;
    return true;
  }
}

// Copies the slots of key tile j of `it` into shared memory (keys past the last visible one: slot 0, and
// their K/V rows are zero-filled, since stale page-table entries may point anywhere).
template <int BN>
__device__ __forceinline__ void issue_slots(const Item& it, int j, uint32_t dst) {
  if (threadIdx.x < BN) {
    const int key = j * BN + threadIdx.x;
    const bool ok = key < it.visible_max();
    cp_async4(dst + threadIdx.x * 4, ok ? it.slots + key : it.slots, ok);
  }
}

// Moves the copy cursor `in` (at key tile in_j of its item, whose K/V copies were just issued) one tile on, to
// the next item's first when this item is done (in_j = -1 once the CTA has no more), and copies the slots of
// its new tile into `next_slots`.
template <int BN>
__device__ __forceinline__ void advance_copy(const Args& a, volatile Item& in_sh, Item& in, int& in_j, uint32_t next_slots) {
  if (++in_j == in.nkt) {
    in.k++;
    in_j = find_item<BN>(a, in) ? 0 : -1;
    store(in_sh, in);
  }
  if (in_j >= 0) issue_slots<BN>(in, in_j, next_slots);
}

// A CTA's start: every thread stores the head-chunk size into `hc`, and both cursors (copy and compute) go to
// the CTA's first work item, whose first tile's slots are copied into `slots`. False when the CTA has none.
template <int BN>
__device__ __forceinline__ bool start_cursors(const Args& a, volatile Item& in_sh, volatile Item& cur_sh, volatile int& hc,
                                              uint32_t slots) {
  hc = a.hc;
  Item first;
  first.k = 0;
  if (!find_item<BN>(a, first)) return false;
  store(in_sh, first);
  store(cur_sh, first);
  issue_slots<BN>(first, 0, slots);
  return true;
}

// Sets a's tiling for tiles of `rows` rows and returns an upper bound of the work items: request b has at most
// n_b / tpt + 1 q tiles per head chunk.
inline long long tile_items(Args& a, int rows, int tokens) {
  a.hc = a.group < rows ? a.group : rows;
  a.chunks = (a.group + a.hc - 1) / a.hc;
  a.tpt = rows / a.hc;
  return (long long)a.kv_heads * a.chunks * (a.batch + (long long)tokens / a.tpt);
}

// The wgmma kernel (attention_prefill_wgmma.cu): head_dim 128 on compute capability 9.0, in builds with sm_90a.
bool wgmma_available(const DeviceInfo& dev, int head_dim);
int launch_wgmma(Args a, int tokens, const DeviceInfo& dev, cudaStream_t stream);

}  // namespace msgl::attn::prefill
