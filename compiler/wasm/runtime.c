/*
 * The few runtime symbols TVM's generated CPU kernels call, for a standalone WebAssembly
 * module with no TVM runtime in it. TVM's own web runtime is linked by emscripten and carries
 * the whole C++ runtime; the browser side here only calls kernels, so these are all it needs.
 *
 * - Kernels reach the parallel launcher and the workspace allocator through pointer variables
 *   that a TVM runtime fills in when it loads a library (weak definitions in the kernels'
 *   object); the strong definitions below fill them in at link time.
 * - A kernel's failed check (wrong shape, dtype or alignment of an argument) reports its
 *   message through TVMFFIErrorSetRaisedFromCStrParts and returns non-zero; the message is
 *   kept for the caller to read with kiln_last_error().
 * - kiln_alloc / kiln_free give the JS runtime 64-byte aligned memory for weights, the KV
 *   cache, activations and the argument blocks it passes to kernels.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  void* sync_handle;
  int32_t num_task;
} TVMParallelGroupEnv;

typedef int (*FTVMParallelLambda)(int task_id, TVMParallelGroupEnv* penv, void* cdata);

#define ALIGNMENT 64

static int parallel_launch(FTVMParallelLambda lambda, void* cdata, int num_task) {
  (void)num_task; /* one task: this module runs on one thread */
  TVMParallelGroupEnv env = {0, 1};
  return lambda(0, &env, cdata);
}

static int parallel_barrier(int task_id, TVMParallelGroupEnv* penv) {
  (void)task_id;
  (void)penv;
  return 0;
}

static void* alloc_workspace(int device_type, int device_id, uint64_t nbytes, int code_hint,
                             int bits_hint) {
  (void)device_type;
  (void)device_id;
  (void)code_hint;
  (void)bits_hint;
  return aligned_alloc(ALIGNMENT, (size_t)((nbytes + ALIGNMENT - 1) / ALIGNMENT * ALIGNMENT));
}

static int free_workspace(int device_type, int device_id, void* ptr) {
  (void)device_type;
  (void)device_id;
  free(ptr);
  return 0;
}

void* __TVMBackendParallelLaunch = (void*)parallel_launch;
void* __TVMBackendParallelBarrier = (void*)parallel_barrier;
void* __TVMBackendAllocWorkspace = (void*)alloc_workspace;
void* __TVMBackendFreeWorkspace = (void*)free_workspace;

static char last_error[1024];

void TVMFFIErrorSetRaisedFromCStrParts(const char* kind, const char** parts, int32_t count) {
  size_t used = 0;
  const size_t room = sizeof(last_error) - 1;
  const char* pieces[2] = {kind, ": "};
  for (int i = 0; i < 2 + count; ++i) {
    const char* piece = i < 2 ? pieces[i] : parts[i - 2];
    size_t length = strlen(piece);
    if (length > room - used) length = room - used;
    memcpy(last_error + used, piece, length);
    used += length;
  }
  last_error[used] = 0;
}

__attribute__((export_name("kiln_last_error"))) const char* kiln_last_error(void) {
  return last_error;
}

__attribute__((export_name("kiln_alloc"))) void* kiln_alloc(uint32_t nbytes) {
  return alloc_workspace(0, 0, nbytes, 0, 0);
}

__attribute__((export_name("kiln_free"))) void kiln_free(void* ptr) { free(ptr); }
