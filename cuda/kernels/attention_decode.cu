// Decode attention (one query token per request) over slot-indexed KV: GQA-grouped split-KV flash-decoding
// on tensor cores.
//
// One CTA per (split, kv head · head chunk, request): the up to 16 q heads of one kv head that share a chunk
// are the 16 rows of one m16 tile, so each K/V row is read once per kv head. Key tiles of BN = 16·WARPS keys
// are gathered by slot with cp.async into a STAGES-deep ring; warp w takes keys [16w, 16w+16) of each tile:
// S = Q Kᵀ and O += P V with mma.sync m16n8k16 (bf16 → fp32), online softmax in fp32, base 2. The warps'
// partial results are merged through shared memory at the end.
// Splits: the grid's S is a function of (batch, kv heads, group, page_stride, SM count) only, so a captured
// launch replays with any kv_lens. Each request divides its keys into whole tiles, at least one per split
// (split_keys), so a short request uses fewer than S splits and the CTAs past them exit at once. S == 1
// writes bf16 out directly, otherwise fp32 O (normalized) and its base-2 LSE go to the workspace and a merge
// kernel combines the request's splits.
// Before waiting for the kernel before it (programmatic dependent launch), a CTA loads what that kernel does
// not write: the request's row, length and slots, and its first K/V tiles except the newest key, which that
// kernel (msgl_qk_norm_rope_store) has just stored; Q and the newest key are copied after the wait.
#include <algorithm>
#include <cfloat>
#include <cmath>
#include "attention.cuh"
#include "common.cuh"

namespace {
using namespace msgl::attn;

constexpr int kRowsPerCta = 16;        // q heads per CTA (one m16 tile)
constexpr int kTargetCtasPerSm = 4;    // split until batch × kv heads × splits fills the SMs about this deep
constexpr int kMinKeysPerSplit = 64;   // ... but never into splits shorter than this at full page_stride
constexpr int kMaxSplits = 64;

struct Args {
  msgl_bf16* out;
  const msgl_bf16 *q, *k, *v;
  const int32_t *page_table, *rows, *kv_lens;
  float *ws_o, *ws_lse;  // [batch, q_heads, splits, D] and [batch, q_heads, splits]
  int page_stride, q_heads, kv_heads, group, chunks, q_stride, splits;
  float scale_log2;  // |scale| · log2(e), > 0
  int negate_q;      // scale < 0: Q's signs are flipped instead
};

int splits_for(int batch, int kv_heads, int group, int page_stride, int sms) {
  const long long ctas = (long long)batch * kv_heads * ((group + kRowsPerCta - 1) / kRowsPerCta);
  if (ctas <= 0) return 1;
  const long long want = ((long long)sms * kTargetCtasPerSm + ctas - 1) / ctas;
  const long long by_len = ((long long)page_stride + kMinKeysPerSplit - 1) / kMinKeysPerSplit;
  return (int)std::max(1LL, std::min({want, by_len, (long long)kMaxSplits}));
}

// Keys per split of a request with kv_len keys over `splits` splits: whole tiles of bn keys, at least one.
__host__ __device__ __forceinline__ int split_keys(int kv_len, int splits, int bn) {
  const int per = (kv_len + splits - 1) / splits;
  const int whole = (per + bn - 1) / bn * bn;
  return whole > bn ? whole : bn;
}

template <int D, int WARPS, int STAGES>
struct Tile {
  static constexpr int kThreads = 32 * WARPS, kBN = 16 * WARPS, kCh = D / 8;
  static constexpr int kQBytes = kRowsPerCta * D * 2, kKvBytes = kBN * D * 2, kStage = 2 * kKvBytes;
  static constexpr int kRowsPerThread = kBN * kCh / kThreads;  // = D / 16
  static constexpr int kMergeBytes = WARPS * kRowsPerCta * D * 4;
  static constexpr int kSmem = kQBytes + std::max(STAGES * kStage, kMergeBytes);
};

template <int D, int WARPS, int STAGES>
__global__ void __launch_bounds__(32 * WARPS) decode_kernel(const Args a) {
  using T = Tile<D, WARPS, STAGES>;
  constexpr int DT = D / 8, kStep = T::kThreads / T::kCh;  // O n-tiles; rows between a thread's copies
  extern __shared__ __align__(128) unsigned char smem[];
  __shared__ float sh_m[WARPS][kRowsPerCta], sh_l[WARPS][kRowsPerCta];
  const uint32_t qs = smem_u32(smem), ring = qs + T::kQBytes;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int split = blockIdx.x, hg = blockIdx.y, b = blockIdx.z;
  const int kvh = hg / a.chunks, c0 = (hg - kvh * a.chunks) * kRowsPerCta, h0 = kvh * a.group + c0;
  const int nh = min(kRowsPerCta, a.group - c0);
  const int kv_len = __ldg(a.kv_lens + b), per = split_keys(kv_len, a.splits, T::kBN), k0 = split * per;
  if (k0 >= kv_len) return;  // past the request's splits: the merge does not read this one
  const int k1 = min(k0 + per, kv_len), ntiles = (k1 - k0 + T::kBN - 1) / T::kBN, newest = kv_len - 1;
  const int32_t* slots = a.page_table + (long long)__ldg(a.rows + b) * a.page_stride;

  // Each thread copies rows r0 + i·kStep (chunk c) of every K/V tile; their slots are loaded a tile ahead.
  const int r0 = threadIdx.x / T::kCh, c = threadIdx.x % T::kCh;
  const long long col = (long long)kvh * D + c * 8, row_elems = (long long)a.kv_heads * D;
  int slot[T::kRowsPerThread];
  auto load_slots = [&](int t) {
#pragma unroll
    for (int i = 0; i < T::kRowsPerThread; i++) {
      const int key = k0 + t * T::kBN + r0 + i * kStep;
      slot[i] = key < k1 ? __ldg(slots + key) : 0;
    }
  };
  // Tile t into stage t % STAGES, then the next tile's slots. Before the wait the newest key is left out.
  auto issue = [&](int t, bool before_wait) {
    if (t < ntiles) {
      const uint32_t st = ring + (t % STAGES) * T::kStage;
#pragma unroll
      for (int i = 0; i < T::kRowsPerThread; i++) {
        const int r = r0 + i * kStep, key = k0 + t * T::kBN + r;
        if (before_wait && key == newest) continue;
        const bool ok = key < k1;  // past the split: zeros (stale slots may point anywhere)
        const long long off = ok ? slot[i] * row_elems + col : 0;
        cp_async16(st + swz<D>(r, c), a.k + off, ok);
        cp_async16(st + T::kKvBytes + swz<D>(r, c), a.v + off, ok);
      }
      load_slots(t + 1);
    }
    cp_async_commit();
  };
  load_slots(0);
#pragma unroll
  for (int t = 0; t < STAGES - 1; t++) issue(t, true);
  msgl::begin_dependent();

  const int newest_tile = (newest - k0) / T::kBN, newest_row = newest - k0 - newest_tile * T::kBN;
  if (newest < k1 && newest_tile < STAGES - 1 && newest_row % kStep == r0) {
    const long long off = __ldg(slots + newest) * row_elems + col;
    const uint32_t st = ring + (newest_tile % STAGES) * T::kStage;
    cp_async16(st + swz<D>(newest_row, c), a.k + off, true);
    cp_async16(st + T::kKvBytes + swz<D>(newest_row, c), a.v + off, true);
  }
  // Q: rows = this CTA's q heads (zeros past nh).
  for (int idx = threadIdx.x; idx < kRowsPerCta * T::kCh; idx += T::kThreads) {
    const int r = idx / T::kCh, qc = idx % T::kCh;
    const long long off = r < nh ? (long long)b * a.q_stride + (h0 + r) * D + qc * 8 : 0;
    cp_async16(qs + swz<D>(r, qc), a.q + off, r < nh);
  }
  cp_async_commit();

  constexpr bool kQInRegs = D <= 128;  // at D = 256 the Q fragments are re-read per step (registers are full)
  uint32_t qa[kQInRegs ? D / 16 : 1][4];
  auto q_frag = [&](int kk, uint32_t (&f)[4]) {
    ldmatrix_x4(f, qs + swz<D>(lane & 15, kk * 2 + (lane >> 4)));
    if (a.negate_q) f[0] ^= 0x80008000u, f[1] ^= 0x80008000u, f[2] ^= 0x80008000u, f[3] ^= 0x80008000u;
  };
  float o[1][DT][4], m[1][2] = {{-INFINITY, -INFINITY}}, l[1][2] = {{0.f, 0.f}};
#pragma unroll
  for (int nt = 0; nt < DT; nt++) o[0][nt][0] = o[0][nt][1] = o[0][nt][2] = o[0][nt][3] = 0.f;
  for (int t = 0; t < ntiles; t++) {
    if (t == 0) cp_async_wait<0>();  // Q and the newest key were committed after the first tiles
    else cp_async_wait<STAGES - 2>();
    __syncthreads();  // tile t landed for everyone; everyone is done with tile t - 1
    issue(t + STAGES - 1, false);
    if (kQInRegs && t == 0) {
#pragma unroll
      for (int kk = 0; kk < D / 16; kk++) q_frag(kk, qa[kQInRegs ? kk : 0]);
    }
    const uint32_t ks = ring + (t % STAGES) * T::kStage, vs = ks + T::kKvBytes;
    float s[1][2][4] = {{{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}}};
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++) {
      uint32_t kf[4], qf[4];
      if (kQInRegs) {
#pragma unroll
        for (int e = 0; e < 4; e++) qf[e] = qa[kQInRegs ? kk : 0][e];
      } else {
        q_frag(kk, qf);
      }
      ldmatrix_x4(kf, ks + swz<D>(warp * 16 + (lane & 7) + ((lane >> 4) << 3), kk * 2 + ((lane >> 3) & 1)));
      mma_bf16(s[0][0], qf, kf[0], kf[1]);
      mma_bf16(s[0][1], qf, kf[2], kf[3]);
    }
    const int key0 = k0 + t * T::kBN + warp * 16 + (lane & 3) * 2;
#pragma unroll
    for (int nt = 0; nt < 2; nt++)
#pragma unroll
      for (int e = 0; e < 4; e++)
        if (key0 + nt * 8 + (e & 1) >= k1) s[0][nt][e] = -INFINITY;
    online_softmax(s, o, m, l, a.scale_log2);
    mma_pv<D>(o, s, vs, warp * 16, lane);
  }

  // Merge the warps: O = Σ_w 2^(m_w − M) O_w / Σ_w 2^(m_w − M) l_w, per q head (row).
  cp_async_wait<0>();
  __syncthreads();  // the ring is free: it holds the warps' O now
  float* sh_o = reinterpret_cast<float*>(smem + T::kQBytes);
#pragma unroll
  for (int rh = 0; rh < 2; rh++) {
    const int row = (lane >> 2) + rh * 8;
    float sum = l[0][rh];
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    sum += __shfl_xor_sync(0xffffffffu, sum, 2);
    if ((lane & 3) == 0) {
      sh_m[warp][row] = m[0][rh];
      sh_l[warp][row] = sum;
    }
    float* dst = sh_o + (warp * kRowsPerCta + row) * D + (lane & 3) * 2;
#pragma unroll
    for (int nt = 0; nt < DT; nt++) *reinterpret_cast<float2*>(dst + nt * 8) = make_float2(o[0][nt][2 * rh], o[0][nt][2 * rh + 1]);
  }
  __syncthreads();
  for (int idx = threadIdx.x; idx < nh * D; idx += T::kThreads) {
    const int h = idx / D, d = idx - h * D;
    float mx = -INFINITY;
#pragma unroll
    for (int w = 0; w < WARPS; w++) mx = fmaxf(mx, sh_m[w][h]);
    const float ref = mx == -INFINITY ? 0.f : mx;
    float sum = 0.f, acc = 0.f;
#pragma unroll
    for (int w = 0; w < WARPS; w++) {
      const float wt = fast_exp2(sh_m[w][h] - ref);
      sum += wt * sh_l[w][h];
      acc += wt * sh_o[(w * kRowsPerCta + h) * D + d];
    }
    const long long row = (long long)b * a.q_heads + h0 + h;
    if (a.splits == 1) {
      a.out[row * D + d] = msgl::to_bf16(acc / sum);  // kv_len >= 1: the only split has keys
    } else {
      const long long r = row * a.splits + split;  // every split that runs has keys
      a.ws_o[r * D + d] = acc / sum;
      if (d == 0) a.ws_lse[r] = ref + log2f(sum);
    }
  }
}

// One warp per (request, q head): out = Σ_s 2^(lse_s − M) O_s / Σ_s 2^(lse_s − M) over the request's splits.
// Lane s holds LSE s and s + 32 (splits ≤ kMaxSplits = 64), and the O rows are read kChunk splits at a time,
// all of a chunk's loads in flight together: at batch 1 this kernel is latency, not bandwidth.
template <int D>
__global__ void __launch_bounds__(128) merge_kernel(msgl_bf16* out, const float* ws_o, const float* ws_lse,
                                                    const int32_t* kv_lens, int rows, int q_heads, int splits, int bn) {
  static_assert(kMaxSplits <= 64, "two LSEs per lane");
  constexpr int CPL = (D / 4 + 31) / 32;  // float4 chunks per lane
  constexpr int kChunk = 16 / CPL;
  const int row = blockIdx.x * 4 + (threadIdx.x >> 5), lane = threadIdx.x & 31;
  const int kv_len = row < rows ? __ldg(kv_lens + row / q_heads) : 0;
  msgl::begin_dependent();
  if (row >= rows) return;
  const int per = split_keys(kv_len, splits, bn), used = (kv_len + per - 1) / per;
  const float* lse = ws_lse + (long long)row * splits;
  const float4* o = reinterpret_cast<const float4*>(ws_o + (long long)row * splits * D);
  const float lse_lo = lane < used ? __ldg(lse + lane) : -INFINITY;
  const float lse_hi = lane + 32 < used ? __ldg(lse + lane + 32) : -INFINITY;
  const float mx = msgl::warp_max(fmaxf(lse_lo, lse_hi));  // split 0 has keys: finite
  float4 acc[CPL];
#pragma unroll
  for (int c = 0; c < CPL; c++) acc[c] = make_float4(0.f, 0.f, 0.f, 0.f);
  float sum = 0.f;
  for (int s0 = 0; s0 < used; s0 += kChunk) {
    float4 v[kChunk][CPL];
#pragma unroll
    for (int j = 0; j < kChunk; j++)
#pragma unroll
      for (int c = 0; c < CPL; c++)
        v[j][c] = s0 + j < used && lane + 32 * c < D / 4 ? __ldg(o + (s0 + j) * (D / 4) + lane + 32 * c)
                                                         : make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
    for (int j = 0; j < kChunk; j++) {
      const int s = s0 + j;
      const float l = __shfl_sync(0xffffffffu, s < 32 ? lse_lo : lse_hi, s & 31);
      if (s >= used) break;
      const float w = exp2f(l - mx);
      sum += w;
#pragma unroll
      for (int c = 0; c < CPL; c++) {
        acc[c].x += w * v[j][c].x, acc[c].y += w * v[j][c].y, acc[c].z += w * v[j][c].z, acc[c].w += w * v[j][c].w;
      }
    }
  }
  const float inv = 1.f / sum;
#pragma unroll
  for (int c = 0; c < CPL; c++) {
    if (lane + 32 * c < D / 4) {
      uint2 packed = make_uint2(pack_bf16(acc[c].x * inv, acc[c].y * inv), pack_bf16(acc[c].z * inv, acc[c].w * inv));
      *reinterpret_cast<uint2*>(out + (long long)row * D + 4 * (lane + 32 * c)) = packed;
    }
  }
}

template <int D, int WARPS, int STAGES>
int launch(Args a, int batch, const DeviceInfo& dev, cudaStream_t stream) {
  using T = Tile<D, WARPS, STAGES>;
  auto kernel = decode_kernel<D, WARPS, STAGES>;
  static std::atomic<bool> configured[kMaxDevices];
  if (!configured[dev.id].load(std::memory_order_relaxed)) {
    if (cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, T::kSmem) != cudaSuccess)
      return msgl::fail(MSGL_ERR_DEVICE, "attention_decode: kernel configuration refused by the device");
    configured[dev.id].store(true, std::memory_order_relaxed);
  }
  a.chunks = (a.group + kRowsPerCta - 1) / kRowsPerCta;
  msgl::launch_early(kernel, dim3(a.splits, a.kv_heads * a.chunks, batch), T::kThreads, T::kSmem, stream, a);
  if (a.splits > 1) {
    const int rows = batch * a.q_heads;
    msgl::launch_early(merge_kernel<D>, (rows + 3) / 4, 128, 0, stream, a.out, a.ws_o, a.ws_lse, a.kv_lens, rows,
                       a.q_heads, a.splits, T::kBN);
  }
  return msgl::launched("attention_decode");
}
}  // namespace

extern "C" int64_t msgl_attention_decode_workspace(int batch, int q_heads, int head_dim, int page_stride) {
  if (batch <= 0 || q_heads <= 0 || head_dim <= 0) return 0;
  DeviceInfo dev;
  int worst = kMaxSplits;  // no device to ask: the cap
  if (device_info(dev) == cudaSuccess) {
    worst = 1;  // kv_heads is not an argument here: take the worst over every kv_heads that divides q_heads
    for (int kvh = 1; kvh <= q_heads; kvh++)
      if (q_heads % kvh == 0) worst = std::max(worst, splits_for(batch, kvh, q_heads / kvh, page_stride, dev.sms));
  }
  return worst == 1 ? 0 : (int64_t)batch * q_heads * worst * (head_dim + 1) * (int64_t)sizeof(float);
}

extern "C" int msgl_attention_decode(msgl_bf16* out, const msgl_bf16* q, const msgl_bf16* k_cache,
                                     const msgl_bf16* v_cache, const int32_t* page_table, int page_stride,
                                     const int32_t* rows, const int32_t* kv_lens, int batch, int q_heads,
                                     int kv_heads, int head_dim, int q_stride, float scale, void* workspace,
                                     int64_t workspace_bytes, msgl_stream stream) {
  MSGL_CHECK(batch >= 0 && q_heads > 0 && kv_heads > 0 && head_dim > 0 && q_heads % kv_heads == 0,
             "attention_decode: bad shape");
  MSGL_CHECK(page_stride >= 0 && q_stride >= q_heads * head_dim, "attention_decode: bad page_stride or q_stride");
  if (head_dim != 16 && head_dim != 32 && head_dim != 64 && head_dim != 128 && head_dim != 256)
    return msgl::fail(MSGL_ERR_UNSUPPORTED, "attention_decode: head_dim must be 16, 32, 64, 128 or 256 on CUDA");
  if (batch == 0) return MSGL_OK;
  MSGL_CHECK(batch <= 65535, "attention_decode: batch above 65535");
  MSGL_CHECK(out && q && k_cache && v_cache && page_table && rows && kv_lens, "attention_decode: null pointer");
  MSGL_CHECK(((uintptr_t)q | (uintptr_t)k_cache | (uintptr_t)v_cache | (uintptr_t)out) % 16 == 0 && q_stride % 8 == 0,
             "attention_decode: q, k_cache, v_cache, out need 16-byte alignment and q_stride a multiple of 8");
  DeviceInfo dev;
  if (device_info(dev) != cudaSuccess) return msgl::fail(MSGL_ERR_DEVICE, "attention_decode: no CUDA device");
  const int group = q_heads / kv_heads;
  const int splits = decode_variant() == MSGL_ATTN_DECODE_NOSPLIT ? 1 : splits_for(batch, kv_heads, group, page_stride, dev.sms);
  const long long partial = (long long)batch * q_heads * splits;
  if (splits > 1)
    MSGL_CHECK(workspace && workspace_bytes >= partial * (head_dim + 1) * (long long)sizeof(float) &&
                   (uintptr_t)workspace % 16 == 0,
               "attention_decode: workspace smaller than msgl_attention_decode_workspace() (or not 16-byte aligned)");
  float* ws = static_cast<float*>(workspace);
  Args a{out, q, k_cache, v_cache, page_table, rows, kv_lens, ws, ws ? ws + partial * head_dim : nullptr,
         page_stride, q_heads, kv_heads, group, 1, q_stride, splits,
         std::max(std::fabs(scale) * 1.4426950408889634f, FLT_MIN), scale < 0.f};
  cudaStream_t s = msgl::as_stream(stream);
  switch (head_dim) {
    case 16: return launch<16, 4, 2>(a, batch, dev, s);
    case 32: return launch<32, 4, 2>(a, batch, dev, s);
    case 64: return launch<64, 4, 2>(a, batch, dev, s);
    case 128: return launch<128, 4, 2>(a, batch, dev, s);
    default: return launch<256, 2, 2>(a, batch, dev, s);  // 64 KB of ring: fits every target
  }
}
