#include <cstdio>
#include "common.cuh"

namespace {
thread_local const char* last_error = "";
thread_local char launch_message[256];
}  // namespace

int msgl::fail(int code, const char* message) {
  last_error = message;
  return code;
}

int msgl::launched(const char* op) {
  cudaError_t e = cudaGetLastError();
  if (e == cudaSuccess) return MSGL_OK;
  snprintf(launch_message, sizeof launch_message, "%s: %s", op, cudaGetErrorString(e));
  return fail(MSGL_ERR_DEVICE, launch_message);
}

extern "C" int msgl_abi_version(void) { return MSGL_ABI_VERSION; }
extern "C" const char* msgl_last_error(void) { return last_error; }
