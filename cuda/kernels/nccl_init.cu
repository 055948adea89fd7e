// ncclCommInitRank takes its 128-byte ncclUniqueId by value, which bun:ffi cannot pass; this forwards a
// pointer to it. NCCL itself is opened at run time, so the library builds without NCCL's headers; every
// other NCCL call goes straight from TypeScript (src/backend/nccl.ts). Host code only.
#include <dlfcn.h>
#include <cstring>

namespace {
struct NcclUniqueId {
  char internal[128];
};
using InitRank = int (*)(void** comm, int nranks, NcclUniqueId id, int rank);
}  // namespace

// Returns NCCL's result, or -1 when the library cannot be opened, -2 when it lacks ncclCommInitRank.
extern "C" int msgl_nccl_comm_init_rank(const char* nccl_library, void** comm, int nranks, const void* unique_id, int rank) {
  void* lib = dlopen(nccl_library, RTLD_NOW | RTLD_GLOBAL);
  if (!lib) return -1;
  auto init = reinterpret_cast<InitRank>(dlsym(lib, "ncclCommInitRank"));
  if (!init) return -2;
  NcclUniqueId id;
  std::memcpy(&id, unique_id, sizeof id);
  return init(comm, nranks, id, rank);
}
