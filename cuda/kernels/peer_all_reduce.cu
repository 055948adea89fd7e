// One-shot all-reduce over peer access, for the small all-reduces of tensor-parallel decode (a few KB to a few
// MB, where NCCL's fixed cost dominates), alone or fused with the residual add + RMSNorm that follows every
// all-reduce in the model. The ranks are threads of one process on GPUs of one node with peer access, so every
// rank's buffers are addresses every GPU can use (no IPC handles). GPU only: the CPU twin reduces in shared
// memory, and larger or multi-node all-reduces go to NCCL (src/backend/nccl.ts).
//
// Each rank owns a region: a signal area (flags[block][rank], epochs[block]) and two staging areas with one
// slot per rank. A call with epoch e (the call count, kept per block on the GPU so CUDA graphs replay it) has
// every block write its share of the input into slot `rank` of staging area e % 2 of EVERY rank (remote
// stores, which need no round trip), tell every peer "block b reached e", wait for the same word from every
// peer, then sum its share over the slots of its own region in rank order (so every rank gets the same bits).
// The grid is always kBlocks, so block b's share is the same on every rank and in every call. Two staging
// areas make one barrier per call enough: a peer writes area e % 2 again only in call e + 2, after its call
// e + 1 met this rank's call e + 1, which starts after this rank's call e ended.
#include <cstdint>
#include "bf16_rows.cuh"

namespace {
constexpr int kMaxRanks = 8;
constexpr int kBlocks = 32;
constexpr int kThreads = 512;
constexpr int64_t kSignalBytes = 4096;  // flags [kBlocks][kMaxRanks], then epochs [kBlocks]
static_assert((kBlocks * kMaxRanks + kBlocks) * 4 <= kSignalBytes, "signal area too small");

struct Group {
  char* regions[kMaxRanks];
  int64_t capacity;                // bytes of one slot
  const volatile int* abort_flag;  // mapped host memory: non-zero once the group failed
  uint64_t timeout_ns;
  int rank, size;
};

__device__ __forceinline__ uint32_t* flags(char* region) { return reinterpret_cast<uint32_t*>(region); }
__device__ __forceinline__ uint32_t* epochs(char* region) { return reinterpret_cast<uint32_t*>(region) + kBlocks * kMaxRanks; }
// Slot `from` of staging area `area` in `region`.
__device__ __forceinline__ int4* slot(const Group& g, char* region, uint32_t area, int from) {
  return reinterpret_cast<int4*>(region + kSignalBytes + ((int64_t)area * g.size + from) * g.capacity);
}

__device__ __forceinline__ void store_release(uint32_t* p, uint32_t v) {
  asm volatile("st.release.sys.global.u32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
}
__device__ __forceinline__ uint32_t load_acquire(const uint32_t* p) {
  uint32_t v;
  asm volatile("ld.acquire.sys.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}
__device__ __forceinline__ uint64_t now_ns() {
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

// The block's epoch for this call (its previous one + 1).
__device__ __forceinline__ uint32_t begin(const Group& g) {
  __shared__ uint32_t epoch;
  if (threadIdx.x == 0) epoch = epochs(g.regions[g.rank])[blockIdx.x] + 1;
  __syncthreads();
  return epoch;
}

// After this block pushed its share to every rank: signals them and waits for theirs. Returns false when the
// group failed meanwhile (the block then skips the sum; the output is discarded anyway).
__device__ bool meet(const Group& g, uint32_t epoch) {
  __shared__ int ok;
  char* self = g.regions[g.rank];
  __syncthreads();
  if (threadIdx.x == 0) ok = 1;
  if (threadIdx.x < g.size) {
    __threadfence_system();
    store_release(flags(g.regions[threadIdx.x]) + blockIdx.x * kMaxRanks + g.rank, epoch);
    const uint32_t* flag = flags(self) + blockIdx.x * kMaxRanks + threadIdx.x;
    const uint64_t start = now_ns();
    for (uint32_t spin = 1; static_cast<int32_t>(load_acquire(flag) - epoch) < 0; spin++) {  // a peer may be at epoch + 1
      if ((spin & 1023) != 0) continue;
      if (*g.abort_flag) {
        ok = 0;
        break;
      }
      if (now_ns() - start > g.timeout_ns) __trap();  // no host left to free us: fail the context, don't hang
    }
  }
  __syncthreads();
  if (threadIdx.x == 0) epochs(self)[blockIdx.x] = epoch;
  return ok;
}

// Sum of vector i over every rank's slot of staging area `area` here, in rank order, in fp32.
__device__ __forceinline__ void sum_slots(const Group& g, uint32_t area, int64_t i, float (&sum)[8]) {
  char* self = g.regions[g.rank];
#pragma unroll
  for (int j = 0; j < 8; j++) sum[j] = 0.f;
  for (int r = 0; r < g.size; r++) {
    float v[8];
    msgl::load_bf16<8>(reinterpret_cast<const msgl_bf16*>(slot(g, self, area, r) + i), v);
#pragma unroll
    for (int j = 0; j < 8; j++) sum[j] += v[j];
  }
}

__device__ __forceinline__ void push(const Group& g, uint32_t area, int64_t i, int4 v) {
  for (int r = 0; r < g.size; r++) slot(g, g.regions[r], area, g.rank)[i] = v;
}

// buf[0, vectors · 8) in place; block b's share: vectors b·kThreads + t, strided by the grid.
__global__ void __launch_bounds__(kThreads) all_reduce_kernel(const Group g, msgl_bf16* buf, int64_t vectors) {
  msgl::begin_dependent();
  const uint32_t epoch = begin(g), area = epoch & 1;
  int4* v = reinterpret_cast<int4*>(buf);
  const int64_t first = (int64_t)blockIdx.x * kThreads + threadIdx.x, step = (int64_t)kBlocks * kThreads;
  for (int64_t i = first; i < vectors; i += step) push(g, area, i, v[i]);
  if (!meet(g, epoch)) return;
  for (int64_t i = first; i < vectors; i += step) {
    float sum[8];
    sum_slots(g, area, i, sum);
    msgl::store_bf16<8>(reinterpret_cast<msgl_bf16*>(v + i), sum);
  }
}

// residual += Σ_ranks x (the sum rounded to bf16 first); out = rmsnorm(residual) · w. Block b's share: rows b,
// b + kBlocks, ...; the norm is msgl_add_rmsnorm's own row routine (msgl::rmsnorm_row) on the reduced x.
__global__ void __launch_bounds__(kThreads) all_reduce_add_rmsnorm_kernel(const Group g, msgl_bf16* out, msgl_bf16* residual,
                                                                          const msgl_bf16* x, const msgl_bf16* w, int rows,
                                                                          int dim, float eps) {
  msgl::begin_dependent();
  const uint32_t epoch = begin(g), area = epoch & 1;
  const int vecs = dim / 8;
  for (int row = blockIdx.x; row < rows; row += kBlocks)
    for (int c = threadIdx.x; c < vecs; c += kThreads) {
      const int64_t i = (int64_t)row * vecs + c;
      push(g, area, i, reinterpret_cast<const int4*>(x)[i]);
    }
  if (!meet(g, epoch)) return;
  for (int row = blockIdx.x; row < rows; row += kBlocks) {
    const int64_t first = (int64_t)row * vecs;
    auto reduced_x = [&](int i, float (&v)[8]) {  // Σ_ranks x, rounded to bf16 as the all-reduce would store it
      sum_slots(g, area, first + i / 8, v);
#pragma unroll
      for (int j = 0; j < 8; j++) v[j] = msgl::round_bf16(v[j]);
    };
    msgl::rmsnorm_row<8>(out + (int64_t)row * dim, residual + (int64_t)row * dim, reduced_x, w, dim, eps);
  }
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
extern "C" int64_t msgl_peer_region_bytes(int64_t capacity, int size) { return kSignalBytes + 2 * (int64_t)size * capacity; }

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
// after an all-reduce of x, bit for bit. rows · dim · 2 <= capacity, dim a multiple of 8, pointers 16-byte aligned.
extern "C" int msgl_peer_all_reduce_add_rmsnorm(msgl_bf16* out, msgl_bf16* residual, const msgl_bf16* x, const msgl_bf16* w,
                                                int rows, int dim, float eps, const uint64_t* regions, int rank, int size,
                                                int64_t capacity, const int32_t* abort_flag, int64_t timeout_ns,
                                                msgl_stream stream) {
  Group g{};
  if (int e = make_group(g, regions, rank, size, capacity, abort_flag, timeout_ns)) return e;
  MSGL_CHECK(out && residual && x && w && rows >= 0 && dim > 0 && dim % 8 == 0 && (int64_t)rows * dim * 2 <= capacity &&
                 msgl::aligned16(out) && msgl::aligned16(residual) && msgl::aligned16(x) && msgl::aligned16(w),
             "peer_all_reduce_add_rmsnorm: rows · dim must fit a slot, dim be a multiple of 8 and pointers 16-byte aligned");
  msgl::launch_early(all_reduce_add_rmsnorm_kernel, kBlocks, kThreads, 0, msgl::as_stream(stream), g, out, residual, x, w,
                     rows, dim, eps);
  return msgl::launched("peer_all_reduce_add_rmsnorm");
}
