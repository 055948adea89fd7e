// Prefill / extend attention on Hopper's warpgroup MMA (wgmma, sm_90a), head_dim 128.
//
// The same work items, GQA-packed 128-row tiles and slot-gathered K/V copies as attention_prefill.cu's
// kernel (attention_prefill.cuh); what differs is the MMA. A CTA of two warpgroups owns a 128-row Q tile,
// 64 rows each. Per key tile of 128 keys, each warpgroup computes S = Q·Kᵀ as eight m64n128k16 wgmmas with
// both operands in shared memory, runs the online softmax on S in registers (the accumulator fragment of a
// warp is laid out as mma.sync's), and adds P·V as eight m64n128k16 wgmmas with P from registers and V read
// transposed from shared memory; the tensor cores read shared memory themselves (no ldmatrix). Within an
// item, the scores of the next key tile are issued before this tile's softmax, so the tensor cores compute
// them while the softmax runs; that needs K/V three stages deep (copied two tiles ahead: 224 KB, one CTA
// per SM).
// Shared memory tiles use wgmma's 128-byte swizzle: a [rows, 128] bf16 tile is two halves of 64 columns,
// each rows × 128 B, with 16-byte chunk c of row r stored at chunk (c ^ r) & 7 of its row. cp.async writes
// them (generic proxy) and wgmma reads them (async proxy): fence.proxy.async sits between the two.
#include <algorithm>
#include "attention_prefill.cuh"
#include "common.cuh"

namespace msgl::attn::prefill {
// A named namespace: helpers in an anonymous one would warn as unused in the sm_80 / sm_89 passes.
namespace wgmma {

constexpr int D = 128, BN = 128, kRows = 128, kThreads = 256, kStages = 3;
constexpr int kQBytes = kRows * D * 2, kKvBytes = BN * D * 2;   // 32 KB each
constexpr int kSlotOff = kQBytes + kStages * 2 * kKvBytes;       // Q, then 3 stages of K and V (224 KB in all)
constexpr int kSmem = kSlotOff + kStages * BN * 4;

// Byte offset of 16-byte chunk c (0..15) of row r in a [ROWS, 128] bf16 tile (layout above).
template <int ROWS>
__device__ __forceinline__ uint32_t sw128(int r, int c) {
  return (c >> 3) * (ROWS * 128) + r * 128 + (((c ^ r) & 7) << 4);
}

// Shared memory matrix descriptor: start address, leading and stride byte offsets, 128-byte swizzle.
__device__ __forceinline__ uint64_t smem_desc(uint32_t addr, uint32_t lbo, uint32_t sbo) {
  return (uint64_t)((addr & 0x3FFFF) >> 4) | (uint64_t)(lbo >> 4) << 16 | (uint64_t)(sbo >> 4) << 32 | 1ull << 62;
}

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_wait_all() { asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory"); }
__device__ __forceinline__ void fence_async_smem() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

// After wgmma_wait_all: the compiler must not move reads of the accumulators above the wait (it sees the wgmma
// asm as having produced them already).
__device__ __forceinline__ void settle(float (&d)[64]) {
#pragma unroll
  for (int i = 0; i < 64; i++) asm volatile("" : "+f"(d[i])::"memory");
}

// The 64 fp32 accumulators of an m64n128 wgmma: their register list in the instruction (operands %0..%63) and
// the matching asm operands of d.
#define MSGL_WGMMA_D_REGS \
  "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15," \
  "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31," \
  "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47," \
  "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
#define MSGL_WGMMA_D_OPERANDS(d) \
  "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), \
  "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), \
  "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), \
  "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), \
  "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), \
  "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), \
  "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), \
  "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])

// d (+)= A·B for a 64 × 128 × 16 step, A and B (K-major) in shared memory; accumulate = false overwrites d.
__device__ __forceinline__ void wgmma_ss(float (&d)[64], uint64_t a, uint64_t b, bool accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {" MSGL_WGMMA_D_REGS "}, %64, %65, p, 1, 1, 0, 0;\n}\n"
      : MSGL_WGMMA_D_OPERANDS(d)
      : "l"(a), "l"(b), "r"((int)accumulate));
}

// d += A·B for a 64 × 128 × 16 step, A (bf16 fragments as mma.sync's) in registers, B in shared memory read
// transposed (stored [k][n], n contiguous).
__device__ __forceinline__ void wgmma_rs_tb(float (&d)[64], const uint32_t (&a)[4], uint64_t b) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {" MSGL_WGMMA_D_REGS "}, {%64, %65, %66, %67}, %68, p, 1, 1, 1;\n}\n"
      : MSGL_WGMMA_D_OPERANDS(d)
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(1));
}

__device__ __forceinline__ void issue_kv(const Args& a, const Item& it, int j, uint32_t st, const int* slots) {
  const int kvh = it.hg / a.chunks, vmax = it.visible_max() - j * BN;
  const int r0 = threadIdx.x / 16, c = threadIdx.x % 16;
#pragma unroll
  for (int i = 0; i < BN / 16; i++) {
    const int r = r0 + 16 * i;
    const bool ok = r < vmax;
    const long long off = ok ? ((long long)slots[r] * a.kv_heads + kvh) * D + c * 8 : 0;
    const uint32_t dst = st + sw128<BN>(r, c);
    cp_async16(dst, a.k + off, ok);
    cp_async16(dst + kKvBytes, a.v + off, ok);
  }
}

// hc comes from a volatile shared copy, as in attention_prefill.cu (keeps r / hc out of the main loop).
__device__ __forceinline__ void issue_q(const Args& a, const Item& it, int hc, uint32_t qs) {
  const int kvh = it.hg / a.chunks, c0 = (it.hg - kvh * a.chunks) * hc;
  const int h0 = kvh * a.group + c0, nh = min(hc, a.group - c0);
  const int r0 = threadIdx.x / 16, c = threadIdx.x % 16;
#pragma unroll
  for (int i = 0; i < kRows / 16; i++) {
    const int r = r0 + 16 * i, tok = r / hc, h = r - tok * hc;
    const bool ok = tok < it.ntok && h < nh;
    const long long off = ok ? (long long)(it.q0 + tok) * a.q_stride + (h0 + h) * D + c * 8 : 0;
    cp_async16(qs + sw128<kRows>(r, c), a.q + off, ok);
  }
}

__global__ void __launch_bounds__(kThreads, 1) wgmma_prefill_kernel(const Args a) {
#if !defined(__CUDA_ARCH__) || defined(__CUDA_ARCH_FEAT_SM90_ALL)  // the host pass parses the body too
  extern __shared__ __align__(1024) unsigned char smem[];  // the swizzle atoms need 1024-byte alignment
  const uint32_t qs = smem_u32(smem), kv0 = qs + kQBytes, slot0 = qs + kSlotOff;
  const int* slot_sh = reinterpret_cast<const int*>(smem + kSlotOff);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, wg = warp >> 2;
  const int row0 = wg * 64 + (warp & 3) * 16 + (lane >> 2);  // this thread's first row; the second is row0 + 8
  auto stage = [&](int t) { return kv0 + (uint32_t)(t % kStages) * 2 * kKvBytes; };  // K of tile t; V follows

  // The copy cursor `in` runs two key tiles ahead of the compute cursor `cur`; each warp keeps its own copy.
  __shared__ Item cursors[kThreads / 32][2];
  __shared__ int hc_sh;
  volatile Item &in_sh = cursors[warp][0], &cur_sh = cursors[warp][1];
  volatile int& vhc = hc_sh;
  if (!start_cursors<BN>(a, in_sh, cur_sh, vhc, slot0)) return;
  int in_j = 0;  // key tile of `in`, -1 once this CTA has no more
  // At step t: K/V of tile t + 2 (where `in` points; its slots landed), then the slots of tile t + 3.
  auto issue_next = [&](int t) {
    if (in_j >= 0) {
      Item in = load(in_sh);
      issue_kv(a, in, in_j, stage(t + 2), slot_sh + ((t + 2) % kStages) * BN);
      advance_copy<BN>(a, in_sh, in, in_j, slot0 + ((t + 3) % kStages) * BN * 4);
    }
    cp_async_commit();
  };
  cp_async_commit();
  cp_async_wait<0>();
  __syncthreads();
  issue_next(-2);  // tile 0
  cp_async_wait<0>();
  __syncthreads();
  issue_next(-1);  // tile 1

  float o[1][16][4], s[1][16][4], sn[1][16][4], m[1][2], l[1][2];
  float(&of)[64] = reinterpret_cast<float(&)[64]>(o);
  float(&sf)[64] = reinterpret_cast<float(&)[64]>(s);
  float(&snf)[64] = reinterpret_cast<float(&)[64]>(sn);
  // S = Q Kᵀ of key tile t for this warpgroup's 64 rows × 128 keys: 8 k16 steps along the head dim (4 per
  // swizzle half), issued and committed, not waited for.
  auto issue_qk = [&](float(&d)[64], int t) {
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++) {
      const uint32_t half = kk >> 2, koff = (kk & 3) * 32;
      wgmma_ss(d, smem_desc(qs + half * kRows * 128 + wg * 64 * 128 + koff, 16, 1024),
               smem_desc(stage(t) + half * BN * 128 + koff, 16, 1024), kk > 0);
    }
    wgmma_commit();
  };
  bool s_ready = false;  // s already holds this tile's scores (computed during the previous tile)
  for (int c = 0, j = 0;; c++) {
    cp_async_wait<0>();
    fence_async_smem();
    __syncthreads();  // tile c + 1 and the slots of c + 2 landed; everyone is done with tile c - 1 (and its Q)
    if (j == 0) {
      issue_q(a, load(cur_sh), vhc, qs);
      cp_async_commit();
    }
    issue_next(c);
    if (j == 0) {  // a new item: wait for its Q only; fresh accumulators
      cp_async_wait<1>();
      if (a.negate_q) {  // S = (−Q)·K, then the scale is positive; each thread flips the chunks it copied
        const int r0 = threadIdx.x / 16, cc = threadIdx.x % 16;
        for (int i = 0; i < kRows / 16; i++) {
          uint4* p = reinterpret_cast<uint4*>(smem + sw128<kRows>(r0 + 16 * i, cc));
          uint4 x = *p;
          x.x ^= 0x80008000u, x.y ^= 0x80008000u, x.z ^= 0x80008000u, x.w ^= 0x80008000u;
          *p = x;
        }
      }
      fence_async_smem();
      __syncthreads();
#pragma unroll
      for (int i = 0; i < 64; i++) of[i] = 0.f;
      m[0][0] = m[0][1] = -INFINITY;
      l[0][0] = l[0][1] = 0.f;
    }
    if (!s_ready) {
      issue_qk(sf, c);
      wgmma_wait_all();
      settle(sf);
    }
    // The next tile's scores run on the tensor cores while this one's softmax runs here.
    const bool next = j + 1 < cur_sh.nkt;
    if (next) issue_qk(snf, c + 1);

    // Mask only tiles that reach past the first row's last visible key.
    if ((j + 1) * BN > cur_sh.base + 1) {
      const int base = cur_sh.base, ntok = cur_sh.ntok, hc = vhc;
#pragma unroll
      for (int rh = 0; rh < 2; rh++) {  // padding rows borrow the last real token's limit
        const int tok = min((row0 + rh * 8) / hc, ntok - 1);
        const int lim = base + tok + 1 - j * BN - (lane & 3) * 2;
#pragma unroll
        for (int nt = 0; nt < BN / 8; nt++) {
          if (nt * 8 >= lim) s[0][nt][2 * rh] = -INFINITY;
          if (nt * 8 + 1 >= lim) s[0][nt][2 * rh + 1] = -INFINITY;
        }
      }
    }

    online_softmax(s, o, m, l, a.scale_log2);

    // O += P V: P's accumulators of n-tiles 2kk and 2kk + 1 are the A fragment of k16 step kk; V's rows
    // 16kk.. are the B operand, its two 64-column halves LBO apart, its 8-row groups 1024 B apart.
    uint32_t pa[BN / 16][4];
#pragma unroll
    for (int kk = 0; kk < BN / 16; kk++) {
      pa[kk][0] = pack_bf16(s[0][2 * kk][0], s[0][2 * kk][1]);
      pa[kk][1] = pack_bf16(s[0][2 * kk][2], s[0][2 * kk][3]);
      pa[kk][2] = pack_bf16(s[0][2 * kk + 1][0], s[0][2 * kk + 1][1]);
      pa[kk][3] = pack_bf16(s[0][2 * kk + 1][2], s[0][2 * kk + 1][3]);
    }
    const uint32_t vs = stage(c) + kKvBytes;
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < BN / 16; kk++) wgmma_rs_tb(of, pa[kk], smem_desc(vs + kk * 16 * 128, BN * 128, 1024));
    wgmma_commit();
    wgmma_wait_all();  // P·V and the next tile's scores
    settle(of);
    s_ready = next;
    if (next) {
      settle(snf);
#pragma unroll
      for (int i = 0; i < 64; i++) sf[i] = snf[i];
    }

    if (++j < cur_sh.nkt) continue;
    // Item done: normalize and store this thread's valid rows as bf16.
    Item cur = load(cur_sh);
    const int hc = vhc, kvh = cur.hg / a.chunks, c0 = (cur.hg - kvh * a.chunks) * hc;
    const int h0 = kvh * a.group + c0, nh = min(hc, a.group - c0);
#pragma unroll
    for (int rh = 0; rh < 2; rh++) {
      float sum = l[0][rh];
      sum += __shfl_xor_sync(0xffffffffu, sum, 1);
      sum += __shfl_xor_sync(0xffffffffu, sum, 2);
      const float inv = 1.f / sum;
      const int r = row0 + rh * 8, tok = r / hc, h = r - tok * hc;
      if (tok < cur.ntok && h < nh) {
        msgl_bf16* dst = a.out + ((long long)(cur.q0 + tok) * a.q_heads + h0 + h) * D + (lane & 3) * 2;
#pragma unroll
        for (int nt = 0; nt < D / 8; nt++)
          *reinterpret_cast<uint32_t*>(dst + nt * 8) = pack_bf16(o[0][nt][2 * rh] * inv, o[0][nt][2 * rh + 1] * inv);
      }
    }
    cur.k++;
    j = 0;
    if (!find_item<BN>(a, cur)) break;
    store(cur_sh, cur);
  }
#endif
}
}  // namespace wgmma

#ifdef MSGL_WGMMA_BUILT
bool wgmma_available(const DeviceInfo& dev, int head_dim) { return dev.major == 9 && head_dim == wgmma::D; }
#else
bool wgmma_available(const DeviceInfo&, int) { return false; }
#endif

int launch_wgmma(Args a, int tokens, const DeviceInfo& dev, cudaStream_t stream) {
  using namespace wgmma;
  static std::atomic<bool> configured[kMaxDevices];
  if (!configured[dev.id].load(std::memory_order_relaxed)) {
    if (cudaFuncSetAttribute(wgmma_prefill_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem) != cudaSuccess)
      return msgl::fail(MSGL_ERR_DEVICE, "attention_prefill: wgmma kernel configuration refused by the device");
    configured[dev.id].store(true, std::memory_order_relaxed);
  }
  const long long items = tile_items(a, kRows, tokens);
  if (items > INT32_MAX) return msgl::fail(MSGL_ERR_UNSUPPORTED, "attention_prefill: too many tokens");
  const int grid = (int)std::min<long long>(dev.sms, items);
  wgmma_prefill_kernel<<<grid, kThreads, kSmem, stream>>>(a);
  return msgl::launched("attention_prefill");
}

}  // namespace msgl::attn::prefill
