// Element-wise, normalization and gather ops: embedding, RMSNorm (plain, with residual add, per head), RoPE,
// SiLU-and-mul, KV store, row gather, random fill and the decode token pool. Same semantics and rounding
// points as cuda/cpu/{misc,norm,rope}.cpp. Each kernel has a 16-byte path (V = 8) taken when the row lengths,
// strides and pointers allow it, and a scalar path (V = 1) otherwise.
#include "bf16_rows.cuh"

using namespace msgl;

namespace {

// Block-stride copy / zero of one row of n bf16 values.
template <int V>
__device__ __forceinline__ void copy_row(msgl_bf16* dst, const msgl_bf16* src, int n) {
  for (int i = threadIdx.x * V; i < n; i += blockDim.x * V) copy_bf16<V>(dst + i, src + i);
}

template <int V>
__device__ __forceinline__ void zero_row(msgl_bf16* dst, int n) {
  const float zero[V] = {};
  for (int i = threadIdx.x * V; i < n; i += blockDim.x * V) store_bf16<V>(dst + i, zero);
}

// One block per token.
template <int V>
__global__ void embedding_kernel(msgl_bf16* out, const msgl_bf16* table, const int32_t* ids, int hidden, int vocab_start,
                                 int vocab_local) {
  begin_dependent();
  int local = ids[blockIdx.x] - vocab_start;
  msgl_bf16* dst = out + (size_t)blockIdx.x * hidden;
  if (local >= 0 && local < vocab_local) copy_row<V>(dst, table + (size_t)local * hidden, hidden);
  else zero_row<V>(dst, hidden);
}

// One block per row (msgl::rmsnorm_row).
template <int V>
__global__ void rmsnorm_kernel(msgl_bf16* out, msgl_bf16* residual, const msgl_bf16* x, const msgl_bf16* w, int dim,
                               float eps) {
  begin_dependent();
  const size_t base = (size_t)blockIdx.x * dim;
  const msgl_bf16* xr = x + base;
  rmsnorm_row<V>(out + base, residual ? residual + base : nullptr, [xr](int i, float (&v)[V]) { load_bf16<V>(xr + i, v); }, w,
                 dim, eps);
}

constexpr int kWarpsPerBlock = 8;

// One warp per (token, head).
template <int V>
__global__ void head_rmsnorm_kernel(msgl_bf16* x, const msgl_bf16* w, int64_t items, int heads, int head_dim, int stride,
                                    float eps) {
  int64_t item = (int64_t)blockIdx.x * kWarpsPerBlock + threadIdx.x / 32;
  if (item >= items) return;
  int64_t t = item / heads;
  int h = static_cast<int>(item % heads);
  norm_rope_head<V>(x + t * stride + (int64_t)h * head_dim, nullptr, w, nullptr, head_dim, 0, eps);
}

// One warp per (token, head); heads [0, q_heads) are q's, the rest k's.
template <int V>
__global__ void rope_kernel(msgl_bf16* q, msgl_bf16* k, const int32_t* positions, const float* cos_sin, int64_t items,
                            int q_heads, int heads, int head_dim, int rotary_dim, int q_stride, int k_stride) {
  int64_t item = (int64_t)blockIdx.x * kWarpsPerBlock + threadIdx.x / 32;
  if (item >= items) return;
  int64_t t = item / heads;
  int h = static_cast<int>(item % heads);
  msgl_bf16* x = h < q_heads ? q + t * q_stride + (int64_t)h * head_dim : k + t * k_stride + (int64_t)(h - q_heads) * head_dim;
  const float* cs = cos_sin + (size_t)positions[t] * rotary_dim;
  norm_rope_head<V>(x, nullptr, nullptr, cs, head_dim, rotary_dim, 0.f);
}

// grid (rows, column blocks); one vector per thread.
template <int V>
__global__ void silu_mul_kernel(msgl_bf16* out, const msgl_bf16* gate_up, int inter) {
  begin_dependent();
  int i = (blockIdx.y * blockDim.x + threadIdx.x) * V;
  if (i >= inter) return;
  const msgl_bf16* g = gate_up + (size_t)blockIdx.x * 2 * inter + i;
  float a[V], u[V];
  load_bf16<V>(g, a);
  load_bf16<V>(g + inter, u);
#pragma unroll
  for (int j = 0; j < V; j++) a[j] = a[j] / (1.f + expf(-a[j])) * u[j];
  store_bf16<V>(out + (size_t)blockIdx.x * inter + i, a);
}

// grid (tokens, 2): blockIdx.y picks k or v.
template <int V>
__global__ void store_kv_kernel(msgl_bf16* k_cache, msgl_bf16* v_cache, const msgl_bf16* k, const msgl_bf16* v,
                                const int32_t* slots, int kv_dim, int k_stride, int v_stride) {
  size_t t = blockIdx.x, dst = (size_t)slots[t] * kv_dim;
  if (blockIdx.y == 0) copy_row<V>(k_cache + dst, k + t * k_stride, kv_dim);
  else copy_row<V>(v_cache + dst, v + t * v_stride, kv_dim);
}

template <int V>
__global__ void gather_rows_kernel(msgl_bf16* out, const msgl_bf16* x, const int32_t* indices, int dim) {
  copy_row<V>(out + (size_t)blockIdx.x * dim, x + (size_t)indices[blockIdx.x] * dim, dim);
}

// splitmix64 finalizer: the same counter-based hash as cuda/cpu/misc.cpp.
__device__ __forceinline__ uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Grid-stride over groups of V elements.
template <int V>
__global__ void fill_random_kernel(msgl_bf16* x, int64_t n, uint64_t seed, float mean, float std) {
  // g++ -O3 hoists std * sqrt3 and contracts mean + s * (2u - 1) into one fma; written out to match its bits.
  const float scale = __fmul_rn(std, 1.7320508075688772f);
  for (int64_t i0 = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) * V; i0 < n; i0 += (int64_t)gridDim.x * blockDim.x * V) {
    float f[V];
#pragma unroll
    for (int j = 0; j < V; j++) {
      uint64_t h = mix64(seed * 0x9e3779b97f4a7c15ull + (uint64_t)(i0 + j));
      float u = (float)(h >> 40) * (1.0f / 16777216.0f);  // [0, 1) from 24 bits
      f[j] = __fmaf_rn(scale, 2.f * u - 1.f, mean);
    }
    if (i0 + V <= n) {
      store_bf16<V>(x + i0, f);
    } else {
      for (int j = 0; i0 + j < n; j++) x[i0 + j] = to_bf16(f[j]);
    }
  }
}

__global__ void scatter_tokens_kernel(int32_t* pool, const int32_t* rows, const int32_t* tokens, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) pool[rows[i]] = tokens[i];
}

__global__ void gather_tokens_kernel(int32_t* out, const int32_t* pool, const int32_t* rows, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = pool[rows[i]];
}

int norm_launch(const char* op, msgl_bf16* out, msgl_bf16* residual, const msgl_bf16* x, const msgl_bf16* w, int rows,
                int dim, float eps, msgl_stream stream) {
  if (rows == 0) return MSGL_OK;
  bool vec = dim % 8 == 0 && aligned16(out) && aligned16(residual) && aligned16(x) && aligned16(w);
  int threads = block_threads(vec ? dim / 8 : dim, 512);
  launch_early(vec ? rmsnorm_kernel<8> : rmsnorm_kernel<1>, rows, threads, 0, as_stream(stream), out, residual, x, w, dim, eps);
  return launched(op);
}

unsigned warp_blocks(int64_t items) { return static_cast<unsigned>((items + kWarpsPerBlock - 1) / kWarpsPerBlock); }

}  // namespace

extern "C" int msgl_embedding(msgl_bf16* out, const msgl_bf16* table, const int32_t* ids, int tokens, int hidden,
                              int vocab_start, int vocab_local, msgl_stream stream) {
  MSGL_CHECK(tokens >= 0 && hidden > 0 && vocab_local > 0, "embedding: bad shape");
  if (tokens == 0) return MSGL_OK;
  bool vec = hidden % 8 == 0 && aligned16(out) && aligned16(table);
  int threads = block_threads(vec ? hidden / 8 : hidden, 256);
  launch_early(vec ? embedding_kernel<8> : embedding_kernel<1>, tokens, threads, 0, as_stream(stream), out, table, ids, hidden,
               vocab_start, vocab_local);
  return launched("embedding");
}

extern "C" int msgl_rmsnorm(msgl_bf16* out, const msgl_bf16* x, const msgl_bf16* w, int rows, int dim, float eps,
                            msgl_stream stream) {
  MSGL_CHECK(rows >= 0 && dim > 0, "rmsnorm: bad shape");
  return norm_launch("rmsnorm", out, nullptr, x, w, rows, dim, eps, stream);
}

extern "C" int msgl_add_rmsnorm(msgl_bf16* out, msgl_bf16* residual, const msgl_bf16* x, const msgl_bf16* w, int rows,
                                int dim, float eps, msgl_stream stream) {
  MSGL_CHECK(rows >= 0 && dim > 0, "add_rmsnorm: bad shape");
  return norm_launch("add_rmsnorm", out, residual, x, w, rows, dim, eps, stream);
}

extern "C" int msgl_head_rmsnorm(msgl_bf16* x, const msgl_bf16* w, int tokens, int heads, int head_dim, int stride,
                                 float eps, msgl_stream stream) {
  MSGL_CHECK(tokens >= 0 && heads > 0 && head_dim > 0 && stride >= heads * head_dim, "head_rmsnorm: bad shape");
  int64_t items = (int64_t)tokens * heads;
  if (items == 0) return MSGL_OK;
  bool vec = head_dim % 8 == 0 && stride % 8 == 0 && aligned16(x) && aligned16(w);
  if (vec) head_rmsnorm_kernel<8><<<warp_blocks(items), 32 * kWarpsPerBlock, 0, as_stream(stream)>>>(x, w, items, heads, head_dim, stride, eps);
  else head_rmsnorm_kernel<1><<<warp_blocks(items), 32 * kWarpsPerBlock, 0, as_stream(stream)>>>(x, w, items, heads, head_dim, stride, eps);
  return launched("head_rmsnorm");
}

extern "C" int msgl_rope(msgl_bf16* q, msgl_bf16* k, const int32_t* positions, const float* cos_sin, int tokens,
                         int q_heads, int k_heads, int head_dim, int rotary_dim, int q_stride, int k_stride,
                         msgl_stream stream) {
  MSGL_CHECK(tokens >= 0 && rotary_dim > 0 && rotary_dim % 2 == 0 && rotary_dim <= head_dim, "rope: bad shape");
  // Negative head counts rotate nothing, as in the CPU loops.
  q_heads = q_heads > 0 ? q_heads : 0;
  k_heads = k_heads > 0 ? k_heads : 0;
  int heads = q_heads + k_heads;
  int64_t items = (int64_t)tokens * heads;
  if (items == 0) return MSGL_OK;
  bool vec = head_dim % 8 == 0 && rotary_dim % 16 == 0 && q_stride % 8 == 0 && k_stride % 8 == 0 && aligned16(q) &&
             aligned16(k) && aligned16(cos_sin);
  if (vec)
    rope_kernel<8><<<warp_blocks(items), 32 * kWarpsPerBlock, 0, as_stream(stream)>>>(q, k, positions, cos_sin, items, q_heads, heads, head_dim, rotary_dim, q_stride, k_stride);
  else
    rope_kernel<1><<<warp_blocks(items), 32 * kWarpsPerBlock, 0, as_stream(stream)>>>(q, k, positions, cos_sin, items, q_heads, heads, head_dim, rotary_dim, q_stride, k_stride);
  return launched("rope");
}

extern "C" int msgl_silu_mul(msgl_bf16* out, const msgl_bf16* gate_up, int rows, int inter, msgl_stream stream) {
  MSGL_CHECK(rows >= 0 && inter > 0, "silu_mul: bad shape");
  if (rows == 0) return MSGL_OK;
  bool vec = inter % 8 == 0 && aligned16(out) && aligned16(gate_up);
  int units = vec ? inter / 8 : inter, threads = block_threads(units, 256);
  dim3 grid(rows, (units + threads - 1) / threads);
  launch_early(vec ? silu_mul_kernel<8> : silu_mul_kernel<1>, grid, threads, 0, as_stream(stream), out, gate_up, inter);
  return launched("silu_mul");
}

extern "C" int msgl_store_kv(msgl_bf16* k_cache, msgl_bf16* v_cache, const msgl_bf16* k, const msgl_bf16* v,
                             const int32_t* slots, int tokens, int kv_dim, int k_stride, int v_stride, msgl_stream stream) {
  MSGL_CHECK(tokens >= 0 && kv_dim > 0, "store_kv: bad shape");
  if (tokens == 0) return MSGL_OK;
  bool vec = kv_dim % 8 == 0 && k_stride % 8 == 0 && v_stride % 8 == 0 && aligned16(k_cache) && aligned16(v_cache) &&
             aligned16(k) && aligned16(v);
  int threads = block_threads(vec ? kv_dim / 8 : kv_dim, 256);
  dim3 grid(tokens, 2);
  if (vec) store_kv_kernel<8><<<grid, threads, 0, as_stream(stream)>>>(k_cache, v_cache, k, v, slots, kv_dim, k_stride, v_stride);
  else store_kv_kernel<1><<<grid, threads, 0, as_stream(stream)>>>(k_cache, v_cache, k, v, slots, kv_dim, k_stride, v_stride);
  return launched("store_kv");
}

extern "C" int msgl_gather_rows(msgl_bf16* out, const msgl_bf16* x, const int32_t* indices, int n, int dim,
                                msgl_stream stream) {
  MSGL_CHECK(n >= 0 && dim > 0, "gather_rows: bad shape");
  if (n == 0) return MSGL_OK;
  bool vec = dim % 8 == 0 && aligned16(out) && aligned16(x);
  int threads = block_threads(vec ? dim / 8 : dim, 256);
  if (vec) gather_rows_kernel<8><<<n, threads, 0, as_stream(stream)>>>(out, x, indices, dim);
  else gather_rows_kernel<1><<<n, threads, 0, as_stream(stream)>>>(out, x, indices, dim);
  return launched("gather_rows");
}

extern "C" int msgl_fill_random(msgl_bf16* x, int64_t n, uint64_t seed, float mean, float std, msgl_stream stream) {
  MSGL_CHECK(n >= 0, "fill_random: negative size");
  if (n == 0) return MSGL_OK;
  bool vec = aligned16(x);
  int64_t per_block = 256 * (vec ? 8 : 1), blocks = (n + per_block - 1) / per_block;
  unsigned grid = static_cast<unsigned>(blocks < (1 << 20) ? blocks : (1 << 20));
  if (vec) fill_random_kernel<8><<<grid, 256, 0, as_stream(stream)>>>(x, n, seed, mean, std);
  else fill_random_kernel<1><<<grid, 256, 0, as_stream(stream)>>>(x, n, seed, mean, std);
  return launched("fill_random");
}

extern "C" int msgl_scatter_tokens(int32_t* pool, const int32_t* rows, const int32_t* tokens, int n, msgl_stream stream) {
  MSGL_CHECK(n >= 0, "scatter_tokens: bad shape");
  if (n == 0) return MSGL_OK;
  scatter_tokens_kernel<<<(n + 255) / 256, 256, 0, as_stream(stream)>>>(pool, rows, tokens, n);
  return launched("scatter_tokens");
}

extern "C" int msgl_gather_tokens(int32_t* out, const int32_t* pool, const int32_t* rows, int n, msgl_stream stream) {
  MSGL_CHECK(n >= 0, "gather_tokens: bad shape");
  if (n == 0) return MSGL_OK;
  gather_tokens_kernel<<<(n + 255) / 256, 256, 0, as_stream(stream)>>>(out, pool, rows, n);
  return launched("gather_tokens");
}
