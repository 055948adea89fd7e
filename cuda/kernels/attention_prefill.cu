// Prefill / extend attention, FlashAttention-2 style on tensor cores (mma.sync m16n8k16 bf16 → fp32).
//
// A CTA of 4 warps computes a tile of ROWS = 64·MT query rows; each warp owns MT m16 row blocks (so every K/V
// fragment it loads feeds MT MMAs), keeps O in registers and runs the online softmax in fp32 (base 2).
// GQA: a tile's rows are (token, q head) pairs of ONE kv head, token-major (hc heads × tpt tokens), so one
// K/V tile in shared memory serves every q head of the group.
// Shared memory: the Q tile (re-read by ldmatrix every key tile), two stages of K/V tiles of BN keys gathered
// by slot with cp.async, and two small arrays of those slots, copied one tile ahead of their K/V rows.
// Persistent grid: SMs × occupancy CTAs (the launch shape depends only on integer arguments); CTA i walks
// the work items i, 2G-1-i, 2G+i, ... (zigzag) and the K/V copies run on across item boundaries.
#include <algorithm>
#include <cfloat>
#include <cmath>
#include "attention_prefill.cuh"
#include "common.cuh"

namespace {
using namespace msgl::attn;
using namespace msgl::attn::prefill;

constexpr int kWarps = 4, kThreads = 32 * kWarps;

template <int D, int MT, int BN>
struct Tile {
  static constexpr int kRows = 16 * MT * kWarps, kCh = D / 8;  // kCh: 16-byte chunks per row
  static constexpr int kQBytes = kRows * D * 2, kKvBytes = BN * D * 2;
  static constexpr int kSlotOff = kQBytes + 4 * kKvBytes, kSmem = kSlotOff + 2 * BN * 4;
  static constexpr int kRowsPerThread = (BN * kCh + kThreads - 1) / kThreads;  // K/V rows each thread copies
};

template <class T, int D, int BN>
__device__ __forceinline__ void issue_kv(const Args& a, const Item& it, int j, uint32_t st, const int* slots) {
  constexpr int kStep = kThreads / T::kCh;  // rows between a thread's copies
  const int kvh = it.hg / a.chunks, vmax = it.visible_max() - j * BN;
  const int r0 = threadIdx.x / T::kCh, c = threadIdx.x % T::kCh;
#pragma unroll
  for (int i = 0; i < T::kRowsPerThread; i++) {
    const int r = r0 + i * kStep;
    if (r < BN) {
      const bool ok = r < vmax;
      const long long off = ok ? ((long long)slots[r] * a.kv_heads + kvh) * D + c * 8 : 0;
      const uint32_t dst = st + swz<D>(r, c);
      cp_async16(dst, a.k + off, ok);
      cp_async16(dst + T::kKvBytes, a.v + off, ok);
    }
  }
}

// hc comes from a volatile shared copy: row / hc is then not hoisted out of the main loop (it would occupy
// registers for the whole loop and spill).
template <class T, int D>
__device__ __forceinline__ void issue_q(const Args& a, const Item& it, int hc, uint32_t qs) {
  const int kvh = it.hg / a.chunks, c0 = (it.hg - kvh * a.chunks) * hc;
  const int h0 = kvh * a.group + c0, nh = min(hc, a.group - c0);
  const int r0 = threadIdx.x / T::kCh, c = threadIdx.x % T::kCh;
#pragma unroll
  for (int i = 0; i < T::kRows * T::kCh / kThreads; i++) {
    const int r = r0 + i * (kThreads / T::kCh), tok = r / hc, h = r - tok * hc;
    const bool ok = tok < it.ntok && h < nh;
    const long long off = ok ? (long long)(it.q0 + tok) * a.q_stride + (h0 + h) * D + c * 8 : 0;
    cp_async16(qs + swz<D>(r, c), a.q + off, ok);
  }
}

template <int D, int MT, int BN>
__global__ void __launch_bounds__(kThreads, 2) prefill_kernel(const Args a) {
  using T = Tile<D, MT, BN>;
  constexpr int NT = BN / 8, DT = D / 8;  // n-tiles of S and of O
  extern __shared__ __align__(128) unsigned char smem[];
  const uint32_t qs = smem_u32(smem), kv0 = qs + T::kQBytes, slot0 = qs + T::kSlotOff;
  const int* slot_sh = reinterpret_cast<const int*>(smem + T::kSlotOff);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;

  // The copy cursor `in` runs one key tile ahead of the compute cursor `cur`.
  __shared__ Item cursors[kWarps][2];
  __shared__ int hc_sh;
  volatile Item &in_sh = cursors[warp][0], &cur_sh = cursors[warp][1];
  volatile int& vhc = hc_sh;
  if (!start_cursors<BN>(a, in_sh, cur_sh, vhc, slot0)) return;
  int in_j = 0;  // key tile of `in`, -1 once this CTA has no more
  // At compute step c: issues K/V of tile c + 1 (where `in` points; its slots landed), then the slots of c + 2.
  auto issue_next = [&](int c) {
    if (in_j >= 0) {
      Item in = load(in_sh);
      issue_kv<T, D, BN>(a, in, in_j, kv0 + ((c + 1) & 1) * 2 * T::kKvBytes, slot_sh + ((c + 1) & 1) * BN);
      advance_copy<BN>(a, in_sh, in, in_j, slot0 + (c & 1) * BN * 4);
    }
    cp_async_commit();
  };
  cp_async_commit();
  cp_async_wait<0>();
  __syncthreads();
  issue_next(-1);

  float o[MT][DT][4], m[MT][2], l[MT][2];
  for (int c = 0, j = 0;; c++) {
    cp_async_wait<0>();
    __syncthreads();  // tile c and the next slots landed; everyone is done with tile c-1 (and its Q)
    if (j == 0) {
      issue_q<T, D>(a, load(cur_sh), vhc, qs);
      cp_async_commit();
    }
    issue_next(c);
    if (j == 0) {  // a new item: wait for its Q only; fresh accumulators
      cp_async_wait<1>();
      __syncthreads();
      if (a.negate_q) {  // each warp flips its own rows: S = (−Q)·K, then the scale is positive
        uint4* rows = reinterpret_cast<uint4*>(smem + warp * 16 * MT * D * 2);
        for (int i = lane; i < 16 * MT * D / 8; i += 32) {
          uint4 x = rows[i];
          x.x ^= 0x80008000u, x.y ^= 0x80008000u, x.z ^= 0x80008000u, x.w ^= 0x80008000u;
          rows[i] = x;
        }
        __syncwarp();
      }
#pragma unroll
      for (int mt = 0; mt < MT; mt++) {
#pragma unroll
        for (int nt = 0; nt < DT; nt++) o[mt][nt][0] = o[mt][nt][1] = o[mt][nt][2] = o[mt][nt][3] = 0.f;
        m[mt][0] = m[mt][1] = -INFINITY;
        l[mt][0] = l[mt][1] = 0.f;
      }
    }
    const uint32_t ks = kv0 + (c & 1) * 2 * T::kKvBytes, vs = ks + T::kKvBytes;

    // S = Q Kᵀ for this warp's 16·MT rows × BN keys. Fragments are loaded one step ahead of their MMAs (the
    // warp's own ILP hides the ldmatrix latency; only two warps share an SM sub-partition).
    constexpr int KS = D / 16, NP = NT / 2;
    float s[MT][NT][4];
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
      for (int nt = 0; nt < NT; nt++) s[mt][nt][0] = s[mt][nt][1] = s[mt][nt][2] = s[mt][nt][3] = 0.f;
    uint32_t qa0[MT][4], qa1[MT][4], kf0[4], kf1[4];
    auto load_q = [&](int kk, uint32_t (&dst)[MT][4]) {
#pragma unroll
      for (int mt = 0; mt < MT; mt++)
        ldmatrix_x4(dst[mt], qs + swz<D>(warp * 16 * MT + mt * 16 + (lane & 15), kk * 2 + (lane >> 4)));
    };
    auto load_k = [&](int i, uint32_t (&dst)[4]) {  // step i = kk · NP + np
      ldmatrix_x4(dst, ks + swz<D>((i % NP) * 16 + (lane & 7) + ((lane >> 4) << 3), (i / NP) * 2 + ((lane >> 3) & 1)));
    };
    load_q(0, qa0);
    load_k(0, kf0);
#pragma unroll
    for (int i = 0; i < KS * NP; i++) {
      const int kk = i / NP, np = i % NP;
      uint32_t(&q)[MT][4] = (kk & 1) ? qa1 : qa0;
      uint32_t(&k)[4] = (i & 1) ? kf1 : kf0;
      if (i + 1 < KS * NP) load_k(i + 1, (i & 1) ? kf0 : kf1);
      if (np == 0 && kk + 1 < KS) load_q(kk + 1, (kk & 1) ? qa0 : qa1);
#pragma unroll
      for (int mt = 0; mt < MT; mt++) {
        mma_bf16(s[mt][2 * np], q[mt], k[0], k[1]);
        mma_bf16(s[mt][2 * np + 1], q[mt], k[2], k[3]);
      }
    }

    // Mask only tiles that reach past the first row's last visible key.
    if ((j + 1) * BN > cur_sh.base + 1) {
      const int base = cur_sh.base, ntok = cur_sh.ntok, hc = vhc;
#pragma unroll
      for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int rh = 0; rh < 2; rh++) {  // padding rows borrow the last real token's limit
          const int tok = min((warp * 16 * MT + mt * 16 + (lane >> 2) + rh * 8) / hc, ntok - 1);
          const int lim = base + tok + 1 - j * BN - (lane & 3) * 2;
#pragma unroll
          for (int nt = 0; nt < NT; nt++) {
            if (nt * 8 >= lim) s[mt][nt][2 * rh] = -INFINITY;
            if (nt * 8 + 1 >= lim) s[mt][nt][2 * rh + 1] = -INFINITY;
          }
        }
    }

    online_softmax(s, o, m, l, a.scale_log2);
    mma_pv<D>(o, s, vs, 0, lane);

    if (++j < cur_sh.nkt) continue;
    // Item done: normalize and store this warp's valid rows as bf16.
    Item cur = load(cur_sh);
    const int hc = vhc, kvh = cur.hg / a.chunks, c0 = (cur.hg - kvh * a.chunks) * hc;
    const int h0 = kvh * a.group + c0, nh = min(hc, a.group - c0);
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
      for (int rh = 0; rh < 2; rh++) {
        float sum = l[mt][rh];
        sum += __shfl_xor_sync(0xffffffffu, sum, 1);
        sum += __shfl_xor_sync(0xffffffffu, sum, 2);
        const float inv = 1.f / sum;
        const int r = warp * 16 * MT + mt * 16 + (lane >> 2) + rh * 8, tok = r / hc, h = r - tok * hc;
        if (tok < cur.ntok && h < nh) {
          msgl_bf16* dst = a.out + ((long long)(cur.q0 + tok) * a.q_heads + h0 + h) * D + (lane & 3) * 2;
#pragma unroll
          for (int nt = 0; nt < DT; nt++)
            *reinterpret_cast<uint32_t*>(dst + nt * 8) =
                pack_bf16(o[mt][nt][2 * rh] * inv, o[mt][nt][2 * rh + 1] * inv);
        }
      }
    cur.k++;
    j = 0;
    if (!find_item<BN>(a, cur)) break;
    store(cur_sh, cur);
  }
}

template <int D, int MT, int BN>
int launch(Args a, int tokens, const DeviceInfo& dev, cudaStream_t stream) {
  using T = Tile<D, MT, BN>;
  auto kernel = prefill_kernel<D, MT, BN>;
  static std::atomic<int> occupancy[kMaxDevices];  // CTAs per SM, per device; 0 = not yet asked
  int occ = occupancy[dev.id].load(std::memory_order_relaxed);
  if (occ == 0) {
    if (cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, T::kSmem) != cudaSuccess ||
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, kernel, kThreads, T::kSmem) != cudaSuccess || occ < 1)
      return msgl::fail(MSGL_ERR_DEVICE, "attention_prefill: kernel configuration refused by the device");
    occupancy[dev.id].store(occ, std::memory_order_relaxed);
  }
  const long long items = tile_items(a, T::kRows, tokens);
  if (items > INT32_MAX) return msgl::fail(MSGL_ERR_UNSUPPORTED, "attention_prefill: too many tokens");
  const int grid = (int)std::min<long long>((long long)dev.sms * occ, items);
  kernel<<<grid, kThreads, T::kSmem, stream>>>(a);
  return msgl::launched("attention_prefill");
}

// MT m16 row blocks per warp (2: 128-row tiles, 1: 64-row tiles). Shared memory at MT = 2: Q 128·D·2 + 2 stages
// · 2 · 64·D·2 bytes (96 KB at D = 128: two CTAs per H100 SM).
template <int MT>
int launch_tiles(const Args& a, int head_dim, int tokens, const DeviceInfo& dev, cudaStream_t s) {
  switch (head_dim) {
    case 16: return launch<16, MT, 64>(a, tokens, dev, s);
    case 32: return launch<32, MT, 64>(a, tokens, dev, s);
    case 64: return launch<64, MT, 64>(a, tokens, dev, s);
    case 128: return launch<128, MT, 64>(a, tokens, dev, s);
    default: return launch<256, 1, 32>(a, tokens, dev, s);  // both variants: O of 16 rows × 256 already fills the registers
  }
}
}  // namespace

extern "C" int msgl_attention_prefill(msgl_bf16* out, const msgl_bf16* q, const msgl_bf16* k_cache,
                                      const msgl_bf16* v_cache, const int32_t* page_table, int page_stride,
                                      const int32_t* rows, const int32_t* qo_indptr, const int32_t* kv_lens,
                                      int batch, int tokens, int q_heads, int kv_heads, int head_dim, int q_stride,
                                      float scale, msgl_stream stream) {
  MSGL_CHECK(batch >= 0 && tokens >= 0 && q_heads > 0 && kv_heads > 0 && head_dim > 0 && q_heads % kv_heads == 0,
             "attention_prefill: bad shape");
  MSGL_CHECK(page_stride >= 0 && q_stride >= q_heads * head_dim, "attention_prefill: bad page_stride or q_stride");
  if (head_dim != 16 && head_dim != 32 && head_dim != 64 && head_dim != 128 && head_dim != 256)
    return msgl::fail(MSGL_ERR_UNSUPPORTED, "attention_prefill: head_dim must be 16, 32, 64, 128 or 256 on CUDA");
  if (batch == 0) return MSGL_OK;
  MSGL_CHECK(out && q && k_cache && v_cache && page_table && rows && qo_indptr && kv_lens,
             "attention_prefill: null pointer");
  MSGL_CHECK(((uintptr_t)q | (uintptr_t)k_cache | (uintptr_t)v_cache) % 16 == 0 && q_stride % 8 == 0 &&
                 (uintptr_t)out % 4 == 0,
             "attention_prefill: q, k_cache, v_cache need 16-byte alignment and q_stride a multiple of 8");
  DeviceInfo dev;
  if (device_info(dev) != cudaSuccess) return msgl::fail(MSGL_ERR_DEVICE, "attention_prefill: no CUDA device");
  const Args a{out, q, k_cache, v_cache, page_table, rows, qo_indptr, kv_lens, page_stride, batch, q_heads, kv_heads,
               q_heads / kv_heads, q_stride, 0, 0, 0,
               std::max(std::fabs(scale) * 1.4426950408889634f, FLT_MIN), scale < 0.f};
  cudaStream_t s = msgl::as_stream(stream);
  switch (prefill_variant(tokens, wgmma_available(dev, head_dim))) {
    case MSGL_ATTN_PREFILL_WGMMA: return launch_wgmma(a, tokens, dev, s);
    case MSGL_ATTN_PREFILL_M64: return launch_tiles<1>(a, head_dim, tokens, dev, s);
    default: return launch_tiles<2>(a, head_dim, tokens, dev, s);
  }
}
