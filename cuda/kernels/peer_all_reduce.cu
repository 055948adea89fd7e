// One-shot all-reduce over peer access, for the small all-reduces of tensor-parallel decode (a few KB to a few
// MB, where NCCL's fixed cost dominates), alone or fused with the residual add + RMSNorm that follows every
// all-reduce in the model. The ranks are threads of one process on GPUs of one node with peer access, so every
// rank's buffers are addresses every GPU can use (no IPC handles). GPU only: the CPU twin reduces in shared
// memory, and larger or multi-node all-reduces go to NCCL (src/backend/nccl.ts).
//
// Each rank owns a region: a signal area (per block its call count, per staging area how many vectors its
// last call filled) and three staging areas with one slot per rank. Call e (the count, kept per block on the
// GPU so CUDA graphs replay it) uses area e % 3: every block writes its share of the input into slot `rank`
// of that area on EVERY rank (remote stores), then reads its share of every slot of its own region, each
// 16-byte vector as soon as it has arrived, and sums the slots in rank order (so every rank gets the same
// bits). Arrival needs no flag and no fence: slots hold bf16 values with the sign bit flipped, so an all-zero
// half-word, which a cleared slot holds, is a value never sent (−0 is sent as +0, the sum does not change).
// Call e also clears area (e − 1) % 3 of its own region. That is safe: every peer finished writing it before
// this rank finished call e − 1, and a peer writes it again only in call e + 2, after this rank's call e + 1
// data reached it. The grid is always kBlocks, so block b's share is the same on every rank and in every call.
#include <cstdint>
#include "bf16_rows.cuh"

namespace {
constexpr int kMaxRanks = 8;
constexpr int kBlocks = 32;
constexpr int kThreads = 512;
constexpr int kAreas = 3;
constexpr int64_t kSignalBytes = 4096;  // epochs [kBlocks], then vectors used [kAreas]
static_assert((kBlocks + kAreas) * 4 <= kSignalBytes, "signal area too small");

struct Group {
  char* regions[kMaxRanks];
  int64_t capacity;                // bytes of one slot
  const volatile int* abort_flag;  // mapped host memory: non-zero once the group failed
  uint64_t timeout_ns;
  int rank, size;
};

__device__ __forceinline__ uint32_t* epochs(char* region) { return reinterpret_cast<uint32_t*>(region); }
__device__ __forceinline__ uint32_t* used(char* region) { return reinterpret_cast<uint32_t*>(region) + kBlocks; }
// Slot `from` of staging area `area` in `region`.
__device__ __forceinline__ uint4* slot(const Group& g, char* region, uint32_t area, int from) {
  return reinterpret_cast<uint4*>(region + kSignalBytes + ((int64_t)area * g.size + from) * g.capacity);
}

__device__ __forceinline__ uint64_t now_ns() {
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

// Two bf16 values as sent: sign bits flipped, and a half that would be zero (the value was −0) sent as +0.
__device__ __forceinline__ uint32_t encode(uint32_t v) {
  uint32_t w = v ^ 0x80008000u;
  if ((w & 0xffffu) == 0) w |= 0x8000u;
  if ((w >> 16) == 0) w |= 0x80000000u;
  return w;
}
__device__ __forceinline__ bool has_arrived(uint32_t w) { return (w & 0xffffu) != 0 && (w >> 16) != 0; }

__device__ __forceinline__ void store_volatile(uint4* p, uint4 v) {
  asm volatile("st.volatile.global.v4.u32 [%0], {%1, %2, %3, %4};" ::"l"(p), "r"(v.x), "r"(v.y), "r"(v.z), "r"(v.w) : "memory");
}
__device__ __forceinline__ uint4 load_volatile(const uint4* p) {
  uint4 v;
  asm volatile("ld.volatile.global.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p) : "memory");
  return v;
}

// This block's call number (its previous one + 1). Every thread reads it, so the read goes out with the
// block's first loads instead of before a barrier; finish() records the new one after a barrier.
__device__ __forceinline__ uint32_t begin(const Group& g) { return epochs(g.regions[g.rank])[blockIdx.x] + 1; }

// Writes vector i of this rank's input into slot `rank` of `area` on every rank.
__device__ __forceinline__ void push(const Group& g, uint32_t area, int64_t i, uint4 v) {
  const uint4 w = make_uint4(encode(v.x), encode(v.y), encode(v.z), encode(v.w));
  for (int r = 0; r < g.size; r++) store_volatile(slot(g, g.regions[r], area, g.rank) + i, w);
}

// Zeroes this block's share of what the previous call left in its area of this rank's region.
__device__ void clear_previous(const Group& g, uint32_t epoch) {
  char* self = g.regions[g.rank];
  const uint32_t area = (epoch + kAreas - 1) % kAreas;
  const int64_t vectors = used(self)[area], total = vectors * g.size;
  for (int64_t j = (int64_t)blockIdx.x * kThreads + threadIdx.x; j < total; j += (int64_t)kBlocks * kThreads)
    slot(g, self, area, (int)(j / vectors))[j % vectors] = make_uint4(0, 0, 0, 0);
}

// After every block's pushes: records how many vectors this call put in each slot (for the call that clears
// them) and the block's call number.
__device__ __forceinline__ void finish(const Group& g, uint32_t epoch, int64_t vectors) {
  char* self = g.regions[g.rank];
  __syncthreads();  // every thread has read the block's previous call number
  if (threadIdx.x == 0) {
    if (blockIdx.x == 0) used(self)[epoch % kAreas] = (uint32_t)vectors;
    epochs(self)[blockIdx.x] = epoch;
  }
}

// The 16-byte vector at p once all 8 of its values have arrived, decoded. Once the group failed it stops
// waiting (the result is discarded then); a wait past timeout_ns traps, as no host is left to free it.
__device__ uint4 wait_vector(const Group& g, const uint4* p) {
  uint4 w = load_volatile(p);
  if (!(has_arrived(w.x) && has_arrived(w.y) && has_arrived(w.z) && has_arrived(w.w))) {
    const uint64_t start = now_ns();
    for (uint32_t spin = 1;; spin++) {
      w = load_volatile(p);
      if (has_arrived(w.x) && has_arrived(w.y) && has_arrived(w.z) && has_arrived(w.w)) break;
      if ((spin & 1023) != 0) continue;
      if (*g.abort_flag) break;
      if (now_ns() - start > g.timeout_ns) __trap();
    }
  }
  return make_uint4(w.x ^ 0x80008000u, w.y ^ 0x80008000u, w.z ^ 0x80008000u, w.w ^ 0x80008000u);
}

// Sum of vector i over every rank's slot of `area` here, in rank order, in fp32, each as soon as it arrived.
__device__ void sum_slots(const Group& g, uint32_t area, int64_t i, float (&sum)[8]) {
  char* self = g.regions[g.rank];
#pragma unroll
  for (int j = 0; j < 8; j++) sum[j] = 0.f;
  for (int r = 0; r < g.size; r++) {
    const uint4 w = wait_vector(g, slot(g, self, area, r) + i);
    const uint32_t v[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
    for (int j = 0; j < 4; j++) {
      sum[2 * j] += __uint_as_float(v[j] << 16);
      sum[2 * j + 1] += __uint_as_float(v[j] & 0xffff0000u);
    }
  }
}

// buf[0, vectors · 8) in place; block b's share: vectors b·kThreads + t, strided by the grid.
__global__ void __launch_bounds__(kThreads) all_reduce_kernel(const Group g, msgl_bf16* buf, int64_t vectors) {
  msgl::begin_dependent();
  const uint32_t epoch = begin(g), area = epoch % kAreas;
  uint4* v = reinterpret_cast<uint4*>(buf);
  const int64_t first = (int64_t)blockIdx.x * kThreads + threadIdx.x, step = (int64_t)kBlocks * kThreads;
  for (int64_t i = first; i < vectors; i += step) push(g, area, i, v[i]);
  clear_previous(g, epoch);
  for (int64_t i = first; i < vectors; i += step) {
    float sum[8];
    sum_slots(g, area, i, sum);
    msgl::store_bf16<8>(reinterpret_cast<msgl_bf16*>(v + i), sum);
  }
  finish(g, epoch, vectors);
}

// residual += Σ_ranks x (the sum rounded to bf16 first); out = rmsnorm(residual) · w, with msgl_add_rmsnorm's
// arithmetic in its order (msgl::rmsnorm_row's), so the result is the same bits. Block b's share: rows b,
// b + kBlocks, ...; thread t holds vectors t and t + kThreads of a row in registers. Every load a row needs
// (x, residual, w) goes out at once, and those of the block's next row before its sums wait for the peers:
// the wait for the peers is the critical path of a decode step's all-reduce, and nothing else should queue
// behind it.
constexpr int kRowVectors = 2;  // per thread: rows up to 8 · kThreads · kRowVectors = 8192 wide

// Vector i of a staged input (msgl_gemv_staged's encoding) once all of its 8 values are written, decoded; the
// vector is zeroed again for the next call.
__device__ uint4 take_staged(const Group& g, uint4* staged, int64_t i) {
  const uint4 w = wait_vector(g, staged + i);
  staged[i] = make_uint4(0, 0, 0, 0);
  return w;
}

// kStaged: x is the staging buffer that msgl_gemv_staged (the kernel before this one) fills, read as its values
// arrive instead of after that kernel has finished; the kernel after this one may launch once they all have.
template <bool kStaged>
__global__ void __launch_bounds__(kThreads) all_reduce_add_rmsnorm_kernel(const Group g, msgl_bf16* out, msgl_bf16* residual,
                                                                          msgl_bf16* x, const msgl_bf16* w, int rows,
                                                                          int dim, float eps) {
  if constexpr (!kStaged) msgl::begin_dependent();
  const uint32_t epoch = begin(g), area = epoch % kAreas;
  const int vecs = dim / 8;
  uint4* xs = reinterpret_cast<uint4*>(x);
  const uint4* ws = reinterpret_cast<const uint4*>(w);
  uint4* rs = reinterpret_cast<uint4*>(residual);
  uint4 xv[kRowVectors], rv[kRowVectors], wv[kRowVectors];
  auto load_row = [&](int row) {
#pragma unroll
    for (int k = 0; k < kRowVectors; k++) {
      const int c = threadIdx.x + k * kThreads;
      if (c < vecs) rv[k] = rs[(int64_t)row * vecs + c], wv[k] = ws[c];
    }
#pragma unroll
    for (int k = 0; k < kRowVectors; k++) {
      const int c = threadIdx.x + k * kThreads;
      if (c < vecs) xv[k] = kStaged ? take_staged(g, xs, (int64_t)row * vecs + c) : xs[(int64_t)row * vecs + c];
    }
  };
  if (blockIdx.x < rows) load_row(blockIdx.x);
  if constexpr (kStaged) {  // rows ≤ kBlocks here: every staged value this block reads has arrived
    __syncthreads();
    msgl::allow_dependents();
  }
  for (int row = blockIdx.x; row < rows; row += kBlocks) {
    const int64_t first = (int64_t)row * vecs;
#pragma unroll
    for (int k = 0; k < kRowVectors; k++) {
      const int c = threadIdx.x + k * kThreads;
      if (c < vecs) push(g, area, first + c, xv[k]);
    }
    float v[kRowVectors][8], wf[kRowVectors][8], sq = 0.f;
#pragma unroll
    for (int k = 0; k < kRowVectors; k++) {
      const int c = threadIdx.x + k * kThreads;
      if (c >= vecs) continue;
      float r[8];
      msgl::load_bf16<8>(reinterpret_cast<const msgl_bf16*>(&rv[k]), r);
      msgl::load_bf16<8>(reinterpret_cast<const msgl_bf16*>(&wv[k]), wf[k]);
      sum_slots(g, area, first + c, v[k]);
#pragma unroll
      for (int j = 0; j < 8; j++) v[k][j] = msgl::round_bf16(msgl::round_bf16(v[k][j]) + r[j]);
      msgl::store_bf16<8>(residual + 8 * (first + c), v[k]);
#pragma unroll
      for (int j = 0; j < 8; j++) sq = __fmaf_rn(v[k][j], v[k][j], sq);
    }
    if (row + kBlocks < rows) load_row(row + kBlocks);
    const float inv = 1.f / sqrtf(msgl::block_sum(sq) / dim + eps);
#pragma unroll
    for (int k = 0; k < kRowVectors; k++) {
      const int c = threadIdx.x + k * kThreads;
      if (c >= vecs) continue;
#pragma unroll
      for (int j = 0; j < 8; j++) v[k][j] = v[k][j] * inv * wf[k][j];
      msgl::store_bf16<8>(out + 8 * (first + c), v[k]);
    }
  }
  clear_previous(g, epoch);
  finish(g, epoch, (int64_t)rows * vecs);
}

int make_group(Group& g, const uint64_t* regions, int rank, int size, int64_t capacity, const int32_t* abort_flag,
               int64_t timeout_ns) {
  MSGL_CHECK(size >= 2 && size <= kMaxRanks, "peer_all_reduce: size must be 2 to 8");
  MSGL_CHECK(rank >= 0 && rank < size && regions && abort_flag, "peer_all_reduce: bad rank or null pointer");
  for (int r = 0; r < size; r++) g.regions[r] = reinterpret_cast<char*>(regions[r]);
  g.capacity = capacity;
  g.abort_flag = abort_flag;
  g.timeout_ns = (uint64_t)timeout_ns;
  g.rank = rank;
  g.size = size;
  return MSGL_OK;
}
}  // namespace

// Bytes of one rank's region for a group of `size` with slots of `capacity` bytes; zero it before any peer
// may write.
extern "C" int64_t msgl_peer_region_bytes(int64_t capacity, int size) { return kSignalBytes + kAreas * (int64_t)size * capacity; }

// Lets this thread's GPU use `peer_device`'s memory. Returns MSGL_OK, MSGL_ERR_UNSUPPORTED when the two GPUs
// have no peer access, MSGL_ERR_DEVICE on other errors.
extern "C" int msgl_peer_enable(int peer_device) {
  int device = 0, can = 0;
  if (cudaGetDevice(&device) != cudaSuccess) return msgl::fail(MSGL_ERR_DEVICE, "peer_enable: no CUDA device");
  if (device == peer_device) return MSGL_OK;
  if (cudaDeviceCanAccessPeer(&can, device, peer_device) != cudaSuccess) return msgl::fail(MSGL_ERR_DEVICE, "peer_enable: cannot query peer access");
  if (!can) return msgl::fail(MSGL_ERR_UNSUPPORTED, "peer_enable: these GPUs have no peer access");
  const cudaError_t e = cudaDeviceEnablePeerAccess(peer_device, 0);
  cudaGetLastError();  // "already enabled" must not surface as the next kernel's launch error
  if (e != cudaSuccess && e != cudaErrorPeerAccessAlreadyEnabled) return msgl::fail(MSGL_ERR_DEVICE, "peer_enable: cudaDeviceEnablePeerAccess failed");
  return MSGL_OK;
}

// The group arguments of both calls: regions[r] is rank r's region (msgl_peer_region_bytes(capacity, size)
// bytes, usable from this GPU); every rank makes the same calls in the same order. abort_flag: host memory
// mapped for every GPU; once non-zero, waiting blocks give up. A block waiting longer than timeout_ns traps.

// In place: buf[0, count) (bf16) becomes the sum over the ranks, identical on all. count · 2 <= capacity,
// count a multiple of 8, buf 16-byte aligned.
extern "C" int msgl_peer_all_reduce(msgl_bf16* buf, int64_t count, const uint64_t* regions, int rank, int size,
                                    int64_t capacity, const int32_t* abort_flag, int64_t timeout_ns, msgl_stream stream) {
  Group g{};
  if (int e = make_group(g, regions, rank, size, capacity, abort_flag, timeout_ns)) return e;
  MSGL_CHECK(buf && count >= 0 && count * 2 <= capacity && count % 8 == 0 && msgl::aligned16(buf),
             "peer_all_reduce: count must fit a slot, be a multiple of 8 and buf 16-byte aligned");
  msgl::launch_early(all_reduce_kernel, kBlocks, kThreads, 0, msgl::as_stream(stream), g, buf, count / 8);
  return msgl::launched("peer_all_reduce");
}

// residual += Σ_ranks x (x: [rows, dim], unchanged); out = residual / rms(residual) · w, as msgl_add_rmsnorm
// after an all-reduce of x, bit for bit. rows · dim · 2 <= capacity, dim a multiple of 8 up to 8192, pointers
// 16-byte aligned.
extern "C" int msgl_peer_all_reduce_add_rmsnorm(msgl_bf16* out, msgl_bf16* residual, const msgl_bf16* x, const msgl_bf16* w,
                                                int rows, int dim, float eps, const uint64_t* regions, int rank, int size,
                                                int64_t capacity, const int32_t* abort_flag, int64_t timeout_ns,
                                                msgl_stream stream) {
  Group g{};
  if (int e = make_group(g, regions, rank, size, capacity, abort_flag, timeout_ns)) return e;
  MSGL_CHECK(out && residual && x && w && rows >= 0 && dim > 0 && dim % 8 == 0 && dim <= 8 * kThreads * kRowVectors &&
                 (int64_t)rows * dim * 2 <= capacity &&
                 msgl::aligned16(out) && msgl::aligned16(residual) && msgl::aligned16(x) && msgl::aligned16(w),
             "peer_all_reduce_add_rmsnorm: rows · dim must fit a slot, dim be a multiple of 8 up to 8192 and pointers "
             "16-byte aligned");
  msgl::launch_early(all_reduce_add_rmsnorm_kernel<false>, kBlocks, kThreads, 0, msgl::as_stream(stream), g, out, residual,
                     const_cast<msgl_bf16*>(x), w, rows, dim, eps);
  return msgl::launched("peer_all_reduce_add_rmsnorm");
}

// out / residual as msgl_peer_all_reduce_add_rmsnorm of x = a · mat^T (msgl_gemm's GEMV, rows ≤ 2, mat [dim, k]),
// bit for bit, where the all-reduce reads each GEMV output as soon as it is written: the GEMV writes into
// `staged` (rows · dim bf16 slots, zero before the first call; every call leaves it zero again).
int msgl_gemv_staged(uint16_t* y, const msgl_bf16* x, const msgl_bf16* w, int M, int N, int K, int x_stride, cudaStream_t s);

extern "C" int msgl_peer_gemv_all_reduce_add_rmsnorm(msgl_bf16* out, msgl_bf16* residual, const msgl_bf16* a,
                                                     const msgl_bf16* mat, int k, msgl_bf16* staged, const msgl_bf16* w,
                                                     int rows, int dim, float eps, const uint64_t* regions, int rank,
                                                     int size, int64_t capacity, const int32_t* abort_flag,
                                                     int64_t timeout_ns, msgl_stream stream) {
  Group g{};
  if (int e = make_group(g, regions, rank, size, capacity, abort_flag, timeout_ns)) return e;
  MSGL_CHECK(out && residual && a && mat && staged && w && rows >= 1 && rows <= 2 && dim > 0 && dim % 8 == 0 &&
                 dim <= 8 * kThreads * kRowVectors && (int64_t)rows * dim * 2 <= capacity && msgl::aligned16(out) &&
                 msgl::aligned16(residual) && msgl::aligned16(staged) && msgl::aligned16(w),
             "peer_gemv_all_reduce_add_rmsnorm: 1 or 2 rows, dim a multiple of 8 up to 8192 that fits a slot, pointers "
             "16-byte aligned");
  cudaStream_t s = msgl::as_stream(stream);
  if (int e = msgl_gemv_staged(reinterpret_cast<uint16_t*>(staged), a, mat, rows, dim, k, k, s)) return e;
  msgl::launch_early(all_reduce_add_rmsnorm_kernel<true>, kBlocks, kThreads, 0, s, g, out, residual, staged, w, rows, dim,
                     eps);
  return msgl::launched("peer_gemv_all_reduce_add_rmsnorm");
}
