/*
 * The few runtime symbols TVM's generated CPU kernels call, for a standalone WebAssembly
 * module with no TVM runtime in it. TVM's own web runtime is linked by emscripten and carries
 * the whole C++ runtime; the browser side here only calls kernels, so these are all it needs.
 *
 * - Kernels reach the parallel launcher and the workspace allocator through pointer variables
 *   that a TVM runtime fills in when it loads a library (weak definitions in the kernels'
 *   object); the strong definitions below fill them in at link time.
 * - Parallel loops: the module's memory is shared, and worker threads (Web Workers, each with
 *   its own instance of this module and its own stack) wait in kiln_thread_loop for a job. A
 *   launch gives task 0 to the calling thread and task i to worker i; the caller (the page's
 *   main thread may not block) spins until the workers are done. With no workers it is a
 *   plain call.
 * - A kernel's failed check (wrong shape, dtype or alignment of an argument) reports its
 *   message through TVMFFIErrorSetRaisedFromCStrParts and returns non-zero; the message is
 *   kept for the caller to read with kiln_last_error().
 * - kiln_alloc gives the JS runtime 64-byte aligned memory for weights, the KV cache,
 *   activations, argument blocks and worker stacks (freed with the module's memory).
 *   wasi-libc's malloc is not thread-safe, so a lock guards it (kernels may allocate
 *   workspace inside a parallel loop).
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

static int32_t heap_lock;

static void lock(void) {
  while (__atomic_exchange_n(&heap_lock, 1, __ATOMIC_ACQUIRE)) {
  }
}

static void unlock(void) { __atomic_store_n(&heap_lock, 0, __ATOMIC_RELEASE); }

/* The job the threads share: written by the launching thread before `generation` moves on. */
static struct {
  FTVMParallelLambda lambda;
  void* cdata;
  int32_t num_task;
  int32_t failed;
} job;
static int32_t generation; /* bumped once per job; workers wait on it */
static int32_t pending;    /* workers still running the current job */
static int32_t workers;    /* worker threads waiting in kiln_thread_loop */

static int parallel_launch(FTVMParallelLambda lambda, void* cdata, int num_task) {
  (void)num_task; /* TVM's hint; the tasks are the threads there are */
  int32_t threads = __atomic_load_n(&workers, __ATOMIC_ACQUIRE) + 1;
  TVMParallelGroupEnv env = {0, threads};
  if (threads == 1) return lambda(0, &env, cdata);
  job.lambda = lambda;
  job.cdata = cdata;
  job.num_task = threads;
  job.failed = 0;
  __atomic_store_n(&pending, threads - 1, __ATOMIC_RELEASE);
  __atomic_fetch_add(&generation, 1, __ATOMIC_RELEASE);
  __builtin_wasm_memory_atomic_notify(&generation, (uint32_t)(threads - 1));
  int result = lambda(0, &env, cdata);
  while (__atomic_load_n(&pending, __ATOMIC_ACQUIRE) != 0) {
  }
  return result != 0 ? result : __atomic_load_n(&job.failed, __ATOMIC_ACQUIRE);
}

/* Worker thread `index` (1, 2, ...): joins the pool and runs its task of every job. */
__attribute__((export_name("kiln_thread_loop"))) void kiln_thread_loop(int32_t index) {
  int32_t seen = __atomic_load_n(&generation, __ATOMIC_ACQUIRE);
  __atomic_fetch_add(&workers, 1, __ATOMIC_ACQ_REL);
  for (;;) {
    /* A model step launches hundreds of short jobs back to back: poll a while for the next
       one before sleeping (decode was faster with it than waking each time). */
    for (int32_t spin = 0; spin < 200000; ++spin) {
      if (__atomic_load_n(&generation, __ATOMIC_ACQUIRE) != seen) break;
    }
    while (__atomic_load_n(&generation, __ATOMIC_ACQUIRE) == seen) {
      __builtin_wasm_memory_atomic_wait32(&generation, seen, -1);
    }
    seen = __atomic_load_n(&generation, __ATOMIC_ACQUIRE);
    TVMParallelGroupEnv env = {0, job.num_task};
    if (index < job.num_task && job.lambda(index, &env, job.cdata) != 0) {
      __atomic_store_n(&job.failed, -1, __ATOMIC_RELEASE);
    }
    __atomic_fetch_sub(&pending, 1, __ATOMIC_ACQ_REL);
  }
}

/* How many worker threads have joined the pool. */
__attribute__((export_name("kiln_threads_ready"))) int32_t kiln_threads_ready(void) {
  return __atomic_load_n(&workers, __ATOMIC_ACQUIRE);
}

static int parallel_barrier(int task_id, TVMParallelGroupEnv* penv) {
  (void)task_id;
  (void)penv;
  return 0; /* no kernel of ours synchronizes inside a parallel loop */
}

static void* alloc_workspace(int device_type, int device_id, uint64_t nbytes, int code_hint,
                             int bits_hint) {
  (void)device_type;
  (void)device_id;
  (void)code_hint;
  (void)bits_hint;
  lock();
  void* ptr = aligned_alloc(ALIGNMENT, (size_t)((nbytes + ALIGNMENT - 1) / ALIGNMENT * ALIGNMENT));
  unlock();
  return ptr;
}

static int free_workspace(int device_type, int device_id, void* ptr) {
  (void)device_type;
  (void)device_id;
  lock();
  free(ptr);
  unlock();
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
