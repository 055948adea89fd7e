// Helpers of the attention kernels: cp.async, ldmatrix, mma.sync (sm_80+), and cached device facts.
#pragma once
#include <atomic>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>
#include "common.cuh"

namespace msgl::attn {

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16-byte global → shared copy; when !valid nothing is read and the 16 bytes become zeros.
__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// d += a · b for one m16n8k16 tile: a 16×16 bf16 (row), b 16×8 bf16 (col), d fp32.
__device__ __forceinline__ void mma_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Two floats → packed bf16x2 (lo in the low half), round to nearest even.
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}

// The two bf16 of a packed word as floats.
__device__ __forceinline__ float bf16_lo(uint32_t w) { return __uint_as_float(w << 16); }
__device__ __forceinline__ float bf16_hi(uint32_t w) { return __uint_as_float(w & 0xffff0000u); }

// Byte offset of 16-byte chunk c of row r in a [rows, D] bf16 tile in shared memory. The XOR swizzle puts the
// 8 rows that one ldmatrix phase reads into different banks.
template <int D>
__device__ __forceinline__ uint32_t swz(int r, int c) {
  constexpr int kMask = (D / 8 < 8 ? D / 8 : 8) - 1;
  return r * (D * 2) + ((c ^ (r & kMask)) << 4);
}

__device__ __forceinline__ float fast_exp2(float x) {  // ex2.approx(-inf) = +0
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// Online softmax of one key tile for a warp's MT m16 row blocks, in base 2: s holds raw scores (masked ones
// -inf) and becomes P; m (scaled units) and l are per row, o is rescaled. The max of raw scores scales
// because scale_log2 > 0. A quad of lanes shares each row (lane/4 and lane/4 + 8 of each block).
// Straight-line over all 2·MT rows, with one vote and branch for the rescale at the end: a branch per row
// would split the code into blocks the compiler cannot interleave, leaving each row's short dependency
// chains (max, shuffles, exp, sum) exposed.
template <int MT, int NT, int DT>
__device__ __forceinline__ void online_softmax(float (&s)[MT][NT][4], float (&o)[MT][DT][4], float (&m)[MT][2],
                                               float (&l)[MT][2], float scale_log2) {
  float alpha[MT][2];
  bool rescale = false;
#pragma unroll
  for (int mt = 0; mt < MT; mt++)
#pragma unroll
    for (int rh = 0; rh < 2; rh++) {
      float mx0 = -INFINITY, mx1 = -INFINITY;  // two chains: shorter dependencies
#pragma unroll
      for (int nt = 0; nt < NT; nt += 2) {
        mx0 = fmaxf(mx0, fmaxf(s[mt][nt][2 * rh], s[mt][nt][2 * rh + 1]));
        mx1 = fmaxf(mx1, fmaxf(s[mt][nt + 1][2 * rh], s[mt][nt + 1][2 * rh + 1]));
      }
      float mx = fmaxf(mx0, mx1);
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float mn = fmaxf(m[mt][rh], mx * scale_log2), ref = mn == -INFINITY ? 0.f : mn;
      alpha[mt][rh] = fast_exp2(m[mt][rh] - ref);
      rescale |= alpha[mt][rh] != 1.f;
      m[mt][rh] = mn;
      float sum0 = 0.f, sum1 = 0.f;
#pragma unroll
      for (int nt = 0; nt < NT; nt++) {
        s[mt][nt][2 * rh] = fast_exp2(fmaf(s[mt][nt][2 * rh], scale_log2, -ref));
        s[mt][nt][2 * rh + 1] = fast_exp2(fmaf(s[mt][nt][2 * rh + 1], scale_log2, -ref));
        sum0 += s[mt][nt][2 * rh];
        sum1 += s[mt][nt][2 * rh + 1];
      }
      l[mt][rh] = l[mt][rh] * alpha[mt][rh] + (sum0 + sum1);
    }
  if (__any_sync(0xffffffffu, rescale)) {  // once the maxima settle, most tiles skip the rescale
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
      for (int nt = 0; nt < DT; nt++) {
        o[mt][nt][0] *= alpha[mt][0];
        o[mt][nt][1] *= alpha[mt][0];
        o[mt][nt][2] *= alpha[mt][1];
        o[mt][nt][3] *= alpha[mt][1];
      }
  }
}

// O += P V for NT/2 k16 steps of keys from the V tile at shared address vs (rows row0 + 16·kk): the S
// accumulators of two n-tiles are exactly the A fragment of one k16 step (P rounded to bf16). The V
// fragments are loaded one step ahead of their MMAs.
template <int D, int MT, int NT>
__device__ __forceinline__ void mma_pv(float (&o)[MT][D / 8][4], const float (&s)[MT][NT][4], uint32_t vs, int row0,
                                       int lane) {
  constexpr int KS = D / 16, STEPS = NT / 2 * KS;
  uint32_t vf0[4], vf1[4];
  auto load_v = [&](int i, uint32_t (&dst)[4]) {  // step i = kk · KS + dp
    ldmatrix_x4_trans(dst, vs + swz<D>(row0 + (i / KS) * 16 + (lane & 7) + (((lane >> 3) & 1) << 3),
                                       (i % KS) * 2 + (lane >> 4)));
  };
  load_v(0, vf0);
#pragma unroll
  for (int kk = 0; kk < NT / 2; kk++) {
    uint32_t pa[MT][4];
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
      pa[mt][0] = pack_bf16(s[mt][2 * kk][0], s[mt][2 * kk][1]);
      pa[mt][1] = pack_bf16(s[mt][2 * kk][2], s[mt][2 * kk][3]);
      pa[mt][2] = pack_bf16(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
      pa[mt][3] = pack_bf16(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
    }
#pragma unroll
    for (int dp = 0; dp < KS; dp++) {
      const int i = kk * KS + dp;
      uint32_t(&v)[4] = (i & 1) ? vf1 : vf0;  // two named buffers (an indexed array could go to local memory)
      if (i + 1 < STEPS) load_v(i + 1, (i & 1) ? vf0 : vf1);
#pragma unroll
      for (int mt = 0; mt < MT; mt++) {
        mma_bf16(o[mt][2 * dp], pa[mt], v[0], v[1]);
        mma_bf16(o[mt][2 * dp + 1], pa[mt], v[2], v[3]);
      }
    }
  }
}

using msgl::device_info;
using msgl::DeviceInfo;
using msgl::kMaxDevices;

// This thread's msgl_attention_variants choice (attention_variants.cu), with MSGL_ATTN_AUTO resolved and
// MSGL_ATTN_PREFILL_WGMMA replaced by M128 where the wgmma kernel cannot run (wgmma: whether it can).
int prefill_variant(int tokens, bool wgmma);
int decode_variant();

}  // namespace msgl::attn
