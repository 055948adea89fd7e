#include "common.h"

namespace {
thread_local const char* last_error = "";
}

int msgl::fail(int code, const char* message) {
  last_error = message;
  return code;
}

extern "C" int msgl_abi_version(void) { return MSGL_ABI_VERSION; }
extern "C" const char* msgl_last_error(void) { return last_error; }
