// One-shot all-reduce over peer access, for the small all-reduces of tensor-parallel decode (a few KB to a few
// MB, where NCCL's fixed cost dominates). The ranks are threads of one process on GPUs of one node with peer
// access, so every rank's buffers are addresses every GPU can read (no IPC handles). GPU only: the CPU twin
// reduces in shared memory, and larger or multi-node all-reduces go to NCCL (src/backend/nccl.ts).
//
// Each rank owns a region: a signal area (flags[block][rank], epochs[block]) and two staging buffers. A call
// with epoch e (the call count, kept per block on the GPU so CUDA graphs replay it) has every block copy its
// share of the input into staging buffer e % 2, tell every peer "block b reached e", wait for the same word
// from every peer, then sum its share over all ranks' staging in rank order (so every rank gets the same
// bits) into the input buffer. The grid is always kBlocks, so block b's share is the same on every rank and
// in every call. Two buffers make one barrier per call enough: a peer can write buffer e % 2 again only in
// call e + 2, after its call e + 1 met this rank's call e + 1, which starts after this rank's call e ended.
#include <cstdint>
#include "common.cuh"

namespace {
constexpr int kMaxRanks = 8;
constexpr int kBlocks = 32;
constexpr int kThreads = 512;
constexpr int64_t kSignalBytes = 4096;  // flags [kBlocks][kMaxRanks], then epochs [kBlocks]
static_assert((kBlocks * kMaxRanks + kBlocks) * 4 <= kSignalBytes, "signal area too small");

struct Args {
  msgl_bf16* buf;
  char* regions[kMaxRanks];
  int64_t vectors;        // 16-byte vectors in buf
  int64_t capacity;       // bytes of one staging buffer
  const volatile int* abort_flag;  // mapped host memory: non-zero once the group failed
  uint64_t timeout_ns;
  int rank;
};

__device__ __forceinline__ uint32_t* flags(char* region) { return reinterpret_cast<uint32_t*>(region); }
__device__ __forceinline__ uint32_t* epochs(char* region) { return reinterpret_cast<uint32_t*>(region) + kBlocks * kMaxRanks; }

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

// Returns false when the group failed meanwhile (the caller then skips the sum; its output is discarded).
__device__ bool wait_for(const uint32_t* flag, uint32_t epoch, const Args& a) {
  const uint64_t start = now_ns();
  for (uint32_t spin = 1;; spin++) {
    if (static_cast<int32_t>(load_acquire(flag) - epoch) >= 0) return true;  // a peer may already be at epoch + 1
    if ((spin & 1023) == 0) {
      if (*a.abort_flag) return false;
      if (now_ns() - start > a.timeout_ns) __trap();  // no host left to free us: fail the context, not hang
    }
  }
}

template <int N>
__global__ void __launch_bounds__(kThreads) one_shot_kernel(const Args a) {
  char* self = a.regions[a.rank];
  __shared__ uint32_t epoch_sh;
  __shared__ int ok_sh;
  if (threadIdx.x == 0) epoch_sh = epochs(self)[blockIdx.x] + 1;
  __syncthreads();
  const uint32_t epoch = epoch_sh;
  const int64_t offset = kSignalBytes + (epoch & 1) * a.capacity;
  const int64_t first = (int64_t)blockIdx.x * kThreads + threadIdx.x, step = (int64_t)kBlocks * kThreads;
  int4* in = reinterpret_cast<int4*>(a.buf);
  int4* mine = reinterpret_cast<int4*>(self + offset);
  for (int64_t i = first; i < a.vectors; i += step) mine[i] = in[i];
  __syncthreads();
  if (threadIdx.x < N) store_release(flags(a.regions[threadIdx.x]) + blockIdx.x * kMaxRanks + a.rank, epoch);
  if (threadIdx.x == 0) ok_sh = 1;
  __syncthreads();
  if (threadIdx.x < N && !wait_for(flags(self) + blockIdx.x * kMaxRanks + threadIdx.x, epoch, a)) ok_sh = 0;
  __syncthreads();
  if (threadIdx.x == 0) epochs(self)[blockIdx.x] = epoch;
  if (!ok_sh) return;
  const int4* staged[N];
#pragma unroll
  for (int r = 0; r < N; r++) staged[r] = reinterpret_cast<const int4*>(a.regions[r] + offset);
  for (int64_t i = first; i < a.vectors; i += step) {
    float sum[8] = {};
#pragma unroll
    for (int r = 0; r < N; r++) {
      const int4 v = staged[r][i];
      const msgl_bf16* h = reinterpret_cast<const msgl_bf16*>(&v);
#pragma unroll
      for (int j = 0; j < 8; j++) sum[j] += msgl::to_f32(h[j]);
    }
    int4 o;
    msgl_bf16* oh = reinterpret_cast<msgl_bf16*>(&o);
#pragma unroll
    for (int j = 0; j < 8; j++) oh[j] = msgl::to_bf16(sum[j]);
    in[i] = o;
  }
}
}  // namespace

// Bytes of one rank's region for staging buffers of `capacity` bytes each; zero it before any peer may write.
extern "C" int64_t msgl_peer_region_bytes(int64_t capacity) { return kSignalBytes + 2 * capacity; }

// Lets this thread's GPU read `peer_device`'s memory. Returns MSGL_OK, MSGL_ERR_UNSUPPORTED when the two GPUs
// have no peer access, MSGL_ERR_DEVICE on other errors.
extern "C" int msgl_peer_enable(int peer_device) {
  int device = 0, can = 0;
  if (cudaGetDevice(&device) != cudaSuccess || cudaDeviceCanAccessPeer(&can, device, peer_device) != cudaSuccess)
    return msgl::fail(MSGL_ERR_DEVICE, "peer_enable: cannot query peer access");
  if (device == peer_device) return MSGL_OK;
  if (!can) return msgl::fail(MSGL_ERR_UNSUPPORTED, "peer_enable: these GPUs have no peer access");
  const cudaError_t e = cudaDeviceEnablePeerAccess(peer_device, 0);
  cudaGetLastError();  // "already enabled" must not surface as the next kernel's launch error
  if (e != cudaSuccess && e != cudaErrorPeerAccessAlreadyEnabled) return msgl::fail(MSGL_ERR_DEVICE, "peer_enable: cudaDeviceEnablePeerAccess failed");
  return MSGL_OK;
}

// In place: buf[0, count) (bf16) becomes the sum over the `size` ranks, identical on all. regions[r]: rank r's
// region (msgl_peer_region_bytes(capacity) bytes, readable from this GPU); count · 2 <= capacity, a multiple
// of 16 bytes. Every rank must make the same calls in the same order. abort_flag: host memory mapped for
// every GPU; once non-zero, waiting blocks give up. A block waiting longer than timeout_ns traps.
extern "C" int msgl_peer_all_reduce(msgl_bf16* buf, int64_t count, const uint64_t* regions, int rank, int size,
                                    int64_t capacity, const int32_t* abort_flag, int64_t timeout_ns, msgl_stream stream) {
  MSGL_CHECK(size >= 2 && size <= kMaxRanks && (size & (size - 1)) == 0, "peer_all_reduce: size must be 2, 4 or 8");
  MSGL_CHECK(rank >= 0 && rank < size && regions && abort_flag && buf, "peer_all_reduce: bad rank or null pointer");
  MSGL_CHECK(count >= 0 && count * 2 <= capacity && count % 8 == 0 && (uintptr_t)buf % 16 == 0,
             "peer_all_reduce: count must fit the staging buffer and buf be 16-byte vectors");
  Args a{};
  a.buf = buf;
  for (int r = 0; r < size; r++) a.regions[r] = reinterpret_cast<char*>(regions[r]);
  a.vectors = count / 8;
  a.capacity = capacity;
  a.abort_flag = abort_flag;
  a.timeout_ns = (uint64_t)timeout_ns;
  a.rank = rank;
  cudaStream_t s = msgl::as_stream(stream);
  switch (size) {
    case 2: one_shot_kernel<2><<<kBlocks, kThreads, 0, s>>>(a); break;
    case 4: one_shot_kernel<4><<<kBlocks, kThreads, 0, s>>>(a); break;
    default: one_shot_kernel<8><<<kBlocks, kThreads, 0, s>>>(a); break;
  }
  return msgl::launched("peer_all_reduce");
}
