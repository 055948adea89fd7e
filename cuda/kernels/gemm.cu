// msgl_gemm: y[M, N] = x[M, K] · w[N, K]^T (+ bias), bf16 in, fp32 accumulate, bf16 or fp32 out.
// The engine's hot path uses cuBLASLt except for M ≤ 2, where the GEMV below streams w faster; the tiled
// kernel is the ABI's own tensor-core implementation and a reference.
// Block tile BM×BN×BK, 8 warps as 2 (M) × 4 (N), warp tile (16·MT)×(8·NT) of mma.sync m16n8k16 bf16 → fp32,
// operands fed by ldmatrix from XOR-swizzled shared memory, a 3- or 4-stage cp.async pipeline (48 KB).
// Out-of-range rows and k columns are zero-filled, so any M, N, K work. When K, x_stride or the pointers do not
// allow 16-byte copies, the same kernel fills shared memory with checked scalar loads instead.
#include "bf16_rows.cuh"

using namespace msgl;

namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ uint32_t smem_address(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16 bytes global → shared; with valid = false nothing is read and the destination is zero-filled.
__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_address(dst)), "l"(src), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_address(p)));
}

__device__ __forceinline__ void mma_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
               "{%0, %1, %2, %3};\n"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// A tile row holds BK bf16 = CPR 16-byte chunks (CPR = 4 or 8). Chunk c of row r is stored at c ^ ((r >> 1) & 3)
// (CPR 4) or c ^ (r & 7) (CPR 8), so the 8 rows one ldmatrix phase reads fall in 8 different bank groups.
template <int CPR>
__device__ __forceinline__ int swizzle(int r, int c) {
  static_assert(CPR == 4 || CPR == 8, "rows of 32 or 64 bf16");
  return r * CPR + (c ^ (CPR == 4 ? (r >> 1) & 3 : r & 7));
}

// Loads rows [row0, row0 + R) × columns [k0, k0 + 8·CPR) of src (row-major, leading dimension ld) into tile.
template <int R, int CPR, bool kAsync>
__device__ __forceinline__ void load_tile(uint4* tile, const msgl_bf16* src, size_t ld, int row0, int rows, int k0, int K) {
#pragma unroll
  for (int c = threadIdx.x; c < R * CPR; c += kThreads) {
    int r = c / CPR, gr = row0 + r, gk = k0 + (c % CPR) * 8;
    uint4* dst = tile + swizzle<CPR>(r, c % CPR);
    const msgl_bf16* p = src + (size_t)gr * ld + gk;
    if constexpr (kAsync) {
      bool valid = gr < rows && gk < K;  // K % 8 == 0 here: a chunk is wholly inside or outside
      cp_async16(dst, valid ? p : src, valid);
    } else {
      uint32_t w[4];
#pragma unroll
      for (int e = 0; e < 4; e++) {
        uint32_t lo = gr < rows && gk + 2 * e < K ? p[2 * e] : 0;
        uint32_t hi = gr < rows && gk + 2 * e + 1 < K ? p[2 * e + 1] : 0;
        w[e] = lo | hi << 16;
      }
      *dst = make_uint4(w[0], w[1], w[2], w[3]);
    }
  }
}

template <int MT, int NT, int BK, int kStages, bool kAsync>
__global__ void __launch_bounds__(kThreads) gemm_kernel(void* y, const msgl_bf16* x, const msgl_bf16* w,
                                                        const msgl_bf16* bias, int M, int N, int K, int x_stride,
                                                        int out_f32) {
  constexpr int WM = 16 * MT, WN = 8 * NT, BM = 2 * WM, BN = 4 * WN, CPR = BK / 8;
  static_assert(NT % 2 == 0, "B fragments are loaded for pairs of n tiles");
  __shared__ uint4 smem[kStages * (BM + BN) * CPR];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, wm = warp >> 2, wn = warp & 3;
  const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
  auto a_tile = [&](int s) { return smem + s * (BM + BN) * CPR; };
  auto b_tile = [&](int s) { return smem + s * (BM + BN) * CPR + BM * CPR; };
  auto load_stage = [&](int s, int k0) {
    load_tile<BM, CPR, kAsync>(a_tile(s), x, x_stride, m0, M, k0, K);
    load_tile<BN, CPR, kAsync>(b_tile(s), w, K, n0, N, k0, K);
  };

  float acc[MT][NT][4] = {};
  const int ktiles = (K + BK - 1) / BK;
#pragma unroll
  for (int s = 0; s < kStages - 1; s++) {
    if (s < ktiles) load_stage(s, s * BK);
    cp_async_commit();
  }
  for (int kt = 0; kt < ktiles; kt++) {
    cp_async_wait<kStages - 2>();
    __syncthreads();  // stage kt is complete for all threads, and stage kt - 1 is no longer read
    int next = kt + kStages - 1;
    if (next < ktiles) load_stage(next % kStages, next * BK);
    cp_async_commit();

    const uint4* at = a_tile(kt % kStages);
    const uint4* bt = b_tile(kt % kStages);
#pragma unroll
    for (int ks = 0; ks < BK / 16; ks++) {
      uint32_t a[MT][4], b[NT][2];
#pragma unroll
      for (int mt = 0; mt < MT; mt++) {
        int r = wm * WM + mt * 16 + (lane & 15);
        ldmatrix_x4(a[mt], at + swizzle<CPR>(r, ks * 2 + (lane >> 4)));
      }
#pragma unroll
      for (int p = 0; p < NT / 2; p++) {
        int r = wn * WN + p * 16 + (lane & 7) + ((lane >> 4) << 3);
        uint32_t q[4];
        ldmatrix_x4(q, bt + swizzle<CPR>(r, ks * 2 + ((lane >> 3) & 1)));
        b[2 * p][0] = q[0], b[2 * p][1] = q[1], b[2 * p + 1][0] = q[2], b[2 * p + 1][1] = q[3];
      }
#pragma unroll
      for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int nt = 0; nt < NT; nt++) mma_bf16(acc[mt][nt], a[mt], b[nt][0], b[nt][1]);
    }
  }

  // Accumulator layout of m16n8: elements 0, 1 at (row g, cols 2c, 2c+1), 2, 3 at row g + 8; g = lane/4, c = lane%4.
#pragma unroll
  for (int mt = 0; mt < MT; mt++) {
#pragma unroll
    for (int nt = 0; nt < NT; nt++) {
#pragma unroll
      for (int e = 0; e < 4; e++) {
        int row = m0 + wm * WM + mt * 16 + (lane >> 2) + (e >> 1) * 8;
        int col = n0 + wn * WN + nt * 8 + (lane & 3) * 2 + (e & 1);
        if (row >= M || col >= N) continue;
        float v = acc[mt][nt][e];
        if (bias) v += to_f32(bias[col]);
        size_t at = (size_t)row * N + col;
        if (out_f32) static_cast<float*>(y)[at] = v;
        else static_cast<msgl_bf16*>(y)[at] = to_bf16(v);
      }
    }
  }
}

template <int MT, int NT, int BK, int kStages>
int launch(void* y, const msgl_bf16* x, const msgl_bf16* w, const msgl_bf16* bias, int M, int N, int K, int x_stride,
           int out_f32, cudaStream_t stream) {
  constexpr int BM = 32 * MT, BN = 32 * NT;
  dim3 grid((N + BN - 1) / BN, (M + BM - 1) / BM);
  bool async = K % 8 == 0 && x_stride % 8 == 0 && aligned16(x) && aligned16(w);
  if (async) gemm_kernel<MT, NT, BK, kStages, true><<<grid, kThreads, 0, stream>>>(y, x, w, bias, M, N, K, x_stride, out_f32);
  else gemm_kernel<MT, NT, BK, kStages, false><<<grid, kThreads, 0, stream>>>(y, x, w, bias, M, N, K, x_stride, out_f32);
  return launched("gemm");
}

// GEMV for M ≤ kGemvMaxRows (decode): a warp computes whole outputs y[·, n], its lanes reading w's row n in
// 16-byte pieces, kGemvUnroll of them in flight (streaming: evict-first), with the matching pieces of x's rows
// (L1 hits), fp32 FMAs and one warp reduction. The grid is one wave of resident warps, each taking every
// W-th row, so every warp gets the same number of rows (± 1) and no partial last wave stretches the tail.
// Beside cuBLASLt, H100 Qwen3-8B batch-1 decode step: 6.30 ms against 6.66 (bench/RESULTS.md); from 3 rows
// up the x conversions make it slower than cuBLASLt. Needs K, x_stride multiples of 8, 16-byte aligned x, w.
constexpr int kGemvMaxRows = 2, kGemvWarps = 4, kGemvUnroll = 8;

// 16 bytes (evict-first when kStream), zeros when !valid (then nothing is read). volatile keeps the unrolled
// loads of a round ahead of their uses; otherwise each may be sunk to its use, leaving fewer in flight.
template <bool kStream>
__device__ __forceinline__ uint4 load16(const void* p, bool valid) {
  uint4 r = make_uint4(0, 0, 0, 0);
  if (kStream)
    asm volatile("{ .reg .pred p; setp.ne.b32 p, %5, 0;\n @p ld.global.cs.v4.u32 {%0,%1,%2,%3}, [%4]; }\n"
                 : "+r"(r.x), "+r"(r.y), "+r"(r.z), "+r"(r.w) : "l"(p), "r"((int)valid));
  else
    asm volatile("{ .reg .pred p; setp.ne.b32 p, %5, 0;\n @p ld.global.nc.v4.u32 {%0,%1,%2,%3}, [%4]; }\n"
                 : "+r"(r.x), "+r"(r.y), "+r"(r.z), "+r"(r.w) : "l"(p), "r"((int)valid));
  return r;
}

__device__ __forceinline__ float dot8(uint4 a, uint4 b, float acc) {
  const uint32_t av[4] = {a.x, a.y, a.z, a.w}, bv[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
  for (int i = 0; i < 4; i++) {
    acc = fmaf(__uint_as_float(av[i] << 16), __uint_as_float(bv[i] << 16), acc);
    acc = fmaf(__uint_as_float(av[i] & 0xffff0000u), __uint_as_float(bv[i] & 0xffff0000u), acc);
  }
  return acc;
}

// What the GEMV writes: bf16, fp32, or bf16 as the peer all-reduce reads its staging (sign bit flipped, −0
// sent as +0, so that a zero half-word means "not written yet").
enum GemvOut { kOutBf16 = 0, kOutF32 = 1, kOutStaged = 2 };

// kSiluMul: N is inter, w has 2 · inter rows, and the warp of output n computes gate row n and up row
// n + inter, then y[·, n] = silu(gate) · up as msgl_silu_mul computes it (bf16 y, no bias).
template <int M, bool kSiluMul>
__global__ void __launch_bounds__(32 * kGemvWarps) gemv_kernel(void* y, const msgl_bf16* x, const msgl_bf16* w,
                                                               const msgl_bf16* bias, int N, int K, int x_stride,
                                                               int out_kind) {
  const int lane = threadIdx.x & 31, first = blockIdx.x * kGemvWarps + (threadIdx.x >> 5), warps = gridDim.x * kGemvWarps;
  const int chunks = K / 8;
  constexpr int kRound = 32 * kGemvUnroll;  // chunks per round of loads
  uint4 wv[kGemvUnroll];
  auto load_round = [&](int n, int base) {
    const msgl_bf16* wr = w + (size_t)n * K;
#pragma unroll
    for (int u = 0; u < kGemvUnroll; u++) {
      const int c = base + lane + 32 * u;
      wv[u] = load16<true>(wr + 8 * c, c < chunks);
    }
  };
  // w is no output of the previous kernel: the first round of this warp's loads goes out while that kernel
  // still runs (programmatic dependent launch), which hides the start of the stream behind it.
  if (first < N) load_round(first, 0);
  begin_dependent();
  bool loaded = first < N;
  auto dot_row = [&](int r, float (&acc)[M]) {  // x rows · w row r, on every lane
#pragma unroll
    for (int m = 0; m < M; m++) acc[m] = 0.f;
    for (int base = 0; base < chunks; base += kRound) {
      if (!loaded) load_round(r, base);
      loaded = false;
#pragma unroll
      for (int u = 0; u < kGemvUnroll; u++) {
        const int c = base + lane + 32 * u;
#pragma unroll
        for (int m = 0; m < M; m++) acc[m] = dot8(wv[u], load16<false>(x + (size_t)m * x_stride + 8 * c, c < chunks), acc[m]);
      }
    }
#pragma unroll
    for (int m = 0; m < M; m++) acc[m] = warp_sum(acc[m]);
  };
  for (int n = first; n < N; n += warps) {
    float acc[M];
    dot_row(n, acc);
    if constexpr (kSiluMul) {
      float up[M];
      dot_row(n + N, up);
      if (lane == 0) {
#pragma unroll
        for (int m = 0; m < M; m++) {  // + 0.f: msgl_gemm adds its (zero) bias before rounding
          const float g = round_bf16(acc[m] + 0.f), u = round_bf16(up[m] + 0.f);
          static_cast<msgl_bf16*>(y)[(size_t)m * N + n] = to_bf16(g / (1.f + expf(-g)) * u);
        }
      }
    } else if (lane == 0) {
      const float b = bias ? to_f32(bias[n]) : 0.f;
#pragma unroll
      for (int m = 0; m < M; m++) {
        const size_t at = (size_t)m * N + n;
        if (out_kind == kOutF32) {
          static_cast<float*>(y)[at] = acc[m] + b;
        } else if (out_kind == kOutStaged) {
          const uint16_t sent = static_cast<uint16_t>(to_bf16(acc[m] + b)) ^ 0x8000u;
          static_cast<uint16_t*>(y)[at] = sent == 0 ? 0x8000u : sent;
        } else {
          static_cast<msgl_bf16*>(y)[at] = to_bf16(acc[m] + b);
        }
      }
    }
  }
}

template <int M, bool kSiluMul = false>
int launch_gemv(void* y, const msgl_bf16* x, const msgl_bf16* w, const msgl_bf16* bias, int N, int K, int x_stride,
                int out_kind, cudaStream_t s) {
  static std::atomic<int> occupancy[kMaxDevices];  // blocks per SM, per device; 0 = not yet asked
  DeviceInfo dev;
  if (device_info(dev) != cudaSuccess) return fail(MSGL_ERR_DEVICE, "gemm: no CUDA device");
  int occ = occupancy[dev.id].load(std::memory_order_relaxed);
  if (occ == 0) {
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, gemv_kernel<M, kSiluMul>, 32 * kGemvWarps, 0) != cudaSuccess || occ < 1)
      return fail(MSGL_ERR_DEVICE, "gemm: kernel configuration refused by the device");
    occupancy[dev.id].store(occ, std::memory_order_relaxed);
  }
  // The fewest rows per warp that one wave of resident warps covers, then just enough warps for them.
  const long long wave = (long long)dev.sms * occ * kGemvWarps, per_warp = (N + wave - 1) / wave;
  const int grid = (int)(((N + per_warp - 1) / per_warp + kGemvWarps - 1) / kGemvWarps);
  launch_early(gemv_kernel<M, kSiluMul>, grid, 32 * kGemvWarps, 0, s, y, x, w, bias, N, K, x_stride, out_kind);
  return launched("gemm");
}

}  // namespace

extern "C" int msgl_gemm(void* y, const msgl_bf16* x, const msgl_bf16* w, const msgl_bf16* bias, int M, int N, int K,
                         int x_stride, int out_f32, msgl_stream stream) {
  MSGL_CHECK(M >= 0 && N > 0 && K > 0 && x_stride >= K, "gemm: bad shape");
  if (M == 0) return MSGL_OK;
  MSGL_CHECK((M + 31) / 32 <= 65535, "gemm: M too large");
  cudaStream_t s = as_stream(stream);
  if (M <= kGemvMaxRows && K % 8 == 0 && x_stride % 8 == 0 && aligned16(x) && aligned16(w))
    return M == 1 ? launch_gemv<1>(y, x, w, bias, N, K, x_stride, out_f32 ? kOutF32 : kOutBf16, s)
                  : launch_gemv<2>(y, x, w, bias, N, K, x_stride, out_f32 ? kOutF32 : kOutBf16, s);
  // Tile choice from the sizes alone: 128×128 tiles when they still fill a large GPU, else 64×64, and 32×64 for
  // the few rows of decode, which mostly stream w (64-wide k tiles: longer contiguous reads of each w row).
  if (M <= 32) return launch<1, 2, 64, 4>(y, x, w, bias, M, N, K, x_stride, out_f32, s);
  if ((int64_t)((M + 127) / 128) * ((N + 127) / 128) >= 132) return launch<4, 4, 32, 3>(y, x, w, bias, M, N, K, x_stride, out_f32, s);
  return launch<2, 2, 64, 3>(y, x, w, bias, M, N, K, x_stride, out_f32, s);
}

// The GEMV of msgl_gemm (M ≤ 2, no bias) writing y in the peer all-reduce's staging encoding (see GemvOut),
// for msgl_peer_gemv_all_reduce_add_rmsnorm. Not part of the ABI: peer_all_reduce.cu calls it.
int msgl_gemv_staged(uint16_t* y, const msgl_bf16* x, const msgl_bf16* w, int M, int N, int K, int x_stride,
                     cudaStream_t s) {
  MSGL_CHECK(M >= 1 && M <= kGemvMaxRows && N > 0 && K > 0 && x_stride >= K && K % 8 == 0 && x_stride % 8 == 0 &&
                 aligned16(x) && aligned16(w),
             "gemv_staged: 1 or 2 rows, K and x_stride multiples of 8, x and w 16-byte aligned");
  return M == 1 ? launch_gemv<1>(y, x, w, nullptr, N, K, x_stride, kOutStaged, s)
                : launch_gemv<2>(y, x, w, nullptr, N, K, x_stride, kOutStaged, s);
}

extern "C" int msgl_gemm_silu_mul(msgl_bf16* act, const msgl_bf16* x, const msgl_bf16* w, int M, int inter, int K,
                                  int x_stride, msgl_stream stream) {
  MSGL_CHECK(M >= 0 && inter > 0 && K > 0 && x_stride >= K, "gemm_silu_mul: bad shape");
  if (M == 0) return MSGL_OK;
  MSGL_CHECK(K % 8 == 0 && x_stride % 8 == 0 && aligned16(x) && aligned16(w),
             "gemm_silu_mul: K and x_stride must be multiples of 8, x and w 16-byte aligned");
  cudaStream_t s = as_stream(stream);
  for (int m0 = 0; m0 < M; m0 += kGemvMaxRows) {  // more than kGemvMaxRows rows: one GEMV per pair (not the fast path)
    const msgl_bf16* xm = x + (size_t)m0 * x_stride;
    msgl_bf16* out = act + (size_t)m0 * inter;
    const int e = M - m0 == 1 ? launch_gemv<1, true>(out, xm, w, nullptr, inter, K, x_stride, 0, s)
                              : launch_gemv<2, true>(out, xm, w, nullptr, inter, K, x_stride, 0, s);
    if (e != MSGL_OK) return e;
  }
  return MSGL_OK;
}
