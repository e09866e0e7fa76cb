// The CUDA kernels of the backend (declarations and contracts in cuda_backend.h). Decode is
// bandwidth-bound, so every weight kernel streams its matrix once with 16-byte loads per lane and
// several loads in flight; everything runs on one stream, so host code only waits where it must read
// a result (download, topk's indices, hire_ffn's selections).
//
// Numerics follow the CPU backend: f32 accumulation, weights converted on the fly, x quantized to
// int8 per group for the quantized scoring exactly as quantize_x does (same codes and scales), the
// same top-k selection rules (ties to the lower index, NaN last, shards as topk_shard_range). Sums run
// in a different order, so results match the CPU within rounding, not bit for bit.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "cuda_backend.h"

namespace hire::cuda {
namespace {

enum : int { kF32 = 0, kF16 = 1, kBF16 = 2 };
enum : int { kRelu = 0, kGelu = 1, kGeluTanh = 2, kSilu = 3 };

void check(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return;
  cudaGetLastError();  // the runtime also keeps a failed call's error as the "last error": clear it
  throw std::runtime_error(std::string("CUDA: ") + cudaGetErrorString(e) + " (" + what + ")");
}
#define CK(call) check((call), #call)
#define LAUNCHED(name) check(cudaGetLastError(), name)

// ---- per-process state: device, stream, pinned staging ring, device scratch -----------------------

struct State {
  int device = -1;
  cudaStream_t stream = nullptr;
  int sms = 0;
  // Host arrays reach the device through this pinned ring and its device twin (same offsets), so an
  // op's indices are copied asynchronously; when the ring wraps, the stream is drained first.
  unsigned char* ring = nullptr;
  unsigned char* d_ring = nullptr;
  size_t ring_size = 0, ring_pos = 0;
  // Grow-only device scratch for intermediates, one slot per kind so that an op composed of others
  // (hire_ffn) never has one step's scratch overwrite another's.
  unsigned char* d_scratch[6] = {};
  size_t scratch_size[6] = {};
  // Pinned landing area for results read back (indices).
  unsigned char* host_out = nullptr;
  size_t host_out_size = 0;
  cudaEvent_t ev[4] = {nullptr, nullptr, nullptr, nullptr};
  // Graph recording (see cuda_backend.h): the step block (token id, position) in pinned memory and
  // its device twin, copied by the first node of every recorded step.
  bool capturing = false;
  bool graph_pending = false;  // a launched graph may not have read the step block yet
  uint64_t epoch = 0;          // bumped when a scratch buffer moves: graphs recorded before are stale
  int32_t* h_step = nullptr;
  int32_t* d_step = nullptr;
  // argmax's result and its blocks' keys and arrival counter (zero between launches).
  int32_t* d_argmax = nullptr;
  unsigned long long* d_argmax_state = nullptr;
  cudaEvent_t marks[1024] = {};
  // Per-slot results of hire_ffn / hire_head: pinned index lists and step events.
  struct Slot {
    int32_t* host = nullptr;
    size_t bytes = 0;
    cudaEvent_t ev[4] = {nullptr, nullptr, nullptr, nullptr};
  };
  Slot slots[1024];
  // Device copies of constant host vectors (rope's inverse frequencies), never freed or rewritten,
  // so a recorded graph may keep pointing at them.
  std::vector<std::pair<std::vector<unsigned char>, void*>> consts;
};
State g;
std::mutex g_init;

State& st() {
  if (g.device < 0) use_device(0);
  return g;
}

// Record a timing event. While a graph is recorded, only the External flag makes the record a node
// of the graph (a plain record would only order streams), so its time is taken at each replay.
void record(cudaEvent_t e) {
  State& s = st();
  check(cudaEventRecordWithFlags(e, s.stream, s.capturing ? cudaEventRecordExternal : cudaEventRecordDefault),
        "cudaEventRecordWithFlags");
}

// Ops that talk to the host or allocate cannot be recorded into a graph.
void no_capture(const char* what) {
  if (g.capturing) throw std::runtime_error(std::string("CUDA: ") + what + " cannot be recorded in a decode graph");
}

enum Slot : int { kSlotQuantX = 0, kSlotLists = 1, kSlotPartials = 2, kSlotTopk = 3, kSlotAttn = 4, kSlotAttnCounters = 5 };

// Bytes [0, bytes) of a device scratch slot, zero-filled when it grows. Ops may not rely on contents
// between them, except the arrival counters of kSlotAttnCounters, which their kernel keeps at zero.
unsigned char* scratch(Slot slot, size_t bytes) {
  State& s = st();
  if (bytes > s.scratch_size[slot]) {
    no_capture("growing a scratch buffer");
    CK(cudaStreamSynchronize(s.stream));  // nothing in flight may still use the old memory
    if (s.d_scratch[slot]) {
      CK(cudaFree(s.d_scratch[slot]));
      ++s.epoch;  // graphs recorded with the old address are stale
    }
    s.scratch_size[slot] = std::max(bytes, s.scratch_size[slot] * 2);
    CK(cudaMalloc(&s.d_scratch[slot], s.scratch_size[slot]));
    CK(cudaMemsetAsync(s.d_scratch[slot], 0, s.scratch_size[slot], s.stream));
  }
  return s.d_scratch[slot];
}

// A constant host vector's permanent device copy (the same contents always give the same address).
template <class T>
const T* constant(const T* src, int64_t count) {
  State& s = st();
  const size_t bytes = static_cast<size_t>(count) * sizeof(T);
  for (auto& c : s.consts)
    if (c.first.size() == bytes && std::memcmp(c.first.data(), src, bytes) == 0) return static_cast<const T*>(c.second);
  no_capture("a new constant vector");
  void* d = nullptr;
  CK(cudaMalloc(&d, std::max<size_t>(bytes, 16)));
  CK(cudaMemcpy(d, src, bytes, cudaMemcpyHostToDevice));
  const unsigned char* b = reinterpret_cast<const unsigned char*>(src);
  s.consts.emplace_back(std::vector<unsigned char>(b, b + bytes), d);
  return static_cast<const T*>(d);
}

unsigned char* host_out(size_t bytes) {
  State& s = st();
  if (bytes > s.host_out_size) {
    if (s.host_out) CK(cudaFreeHost(s.host_out));
    s.host_out_size = std::max(bytes, size_t{1} << 20);
    CK(cudaHostAlloc(reinterpret_cast<void**>(&s.host_out), s.host_out_size, cudaHostAllocDefault));
  }
  return s.host_out;
}

// Copy `bytes` of host memory into the pinned ring and enqueue its copy to d_dst (or, when d_dst is
// null, to the ring's device twin); returns the device address written.
void* ring_copy(void* d_dst, const void* src, size_t bytes) {
  State& s = st();
  const size_t need = (bytes + 255) & ~size_t{255};
  if (s.ring_pos + need > s.ring_size) {
    CK(cudaStreamSynchronize(s.stream));  // every earlier copy out of the ring has completed
    s.ring_pos = 0;
  }
  unsigned char* h = s.ring + s.ring_pos;
  void* d = d_dst ? d_dst : s.d_ring + s.ring_pos;
  std::memcpy(h, src, bytes);
  CK(cudaMemcpyAsync(d, h, bytes, cudaMemcpyHostToDevice, s.stream));
  s.ring_pos += need;
  return d;
}

// A host array's device copy (through the ring), valid for the ops enqueued next.
template <class T>
const T* stage(const T* src, int64_t count) {
  const size_t bytes = static_cast<size_t>(count) * sizeof(T);
  if (bytes == 0) return nullptr;
  no_capture("an op with host indices");
  if (bytes > st().ring_size / 2)
    throw std::runtime_error("CUDA: a host array of " + std::to_string(bytes) + " bytes exceeds the staging ring");
  return static_cast<const T*>(ring_copy(nullptr, src, bytes));
}

unsigned grid_for(int64_t items, int per_block) {
  const int64_t b = (items + per_block - 1) / per_block;
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(b, 1 << 30)));
}

// ---- element access ---------------------------------------------------------------------------------

__device__ __forceinline__ float bf16_bits(uint32_t h) { return __uint_as_float(h << 16); }
__device__ __forceinline__ float half_bits(uint16_t h) { return __half2float(__ushort_as_half(h)); }

__device__ __forceinline__ float load_elem(int dt, const void* p, int64_t i) {
  if (dt == kF32) return static_cast<const float*>(p)[i];
  const uint16_t h = static_cast<const uint16_t*>(p)[i];
  return dt == kF16 ? half_bits(h) : bf16_bits(h);
}

// Elements per 16-byte vector, and the conversion of one vector to floats.
template <int DT> struct Vec;
template <> struct Vec<kF32> {
  static constexpr int E = 4;
  __device__ static void cvt(const uint4& v, float* f) {
    f[0] = __uint_as_float(v.x); f[1] = __uint_as_float(v.y); f[2] = __uint_as_float(v.z); f[3] = __uint_as_float(v.w);
  }
};
template <> struct Vec<kBF16> {
  static constexpr int E = 8;
  __device__ static void cvt(const uint4& v, float* f) {
    const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      f[2 * i] = __uint_as_float(w[i] << 16);
      f[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
    }
  }
};
template <> struct Vec<kF16> {
  static constexpr int E = 8;
  __device__ static void cvt(const uint4& v, float* f) {
    const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      f[2 * i] = half_bits(static_cast<uint16_t>(w[i] & 0xffffu));
      f[2 * i + 1] = half_bits(static_cast<uint16_t>(w[i] >> 16));
    }
  }
};

// Streaming load that skips L1 (weights are read once per token).
__device__ __forceinline__ uint4 ld_stream(const uint4* p) { return __ldcs(p); }

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float apply_act(float v, int act) {
  switch (act) {
    case kRelu: return v > 0.0f ? v : 0.0f;
    case kGelu: return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
    case kGeluTanh: return 0.5f * v * (1.0f + tanhf(0.79788456080286536f * (v + 0.044715f * v * v * v)));
    default: return v / (1.0f + expf(-v));
  }
}

// ---- GEMV family: one block per output row --------------------------------------------------------

constexpr int kMaxTok = 4;        // tokens per pass of the batched GEMV (each weight vector feeds all)
constexpr int kGemvThreads = 128; // threads per row of the GEMV

// y[t][r] = W[row(r)] . x[t] (+ bias[row]) for t < nt, r < count; row(r) = idx ? idx[r] : r.
// x rows have `cols` floats; y rows have ldy. One block of kGemvThreads per row, so even a 512-row
// matrix gives the chip 512 blocks; each thread keeps 4 16-byte loads in flight, then the block sums.
// Vector path when every row starts 16-byte aligned.
template <int DT, int NT>
__global__ void __launch_bounds__(kGemvThreads) gemv_kernel(float* __restrict__ y, int64_t ldy,
                                                           const float* __restrict__ x, const void* __restrict__ W,
                                                           int64_t cols, const int32_t* __restrict__ idx, int64_t count,
                                                           int nt, const void* bias, int bias_dt, bool vec, bool accumulate) {
  __shared__ float red[NT][kGemvThreads / 32];
  const int64_t r = blockIdx.x;
  if (r >= count) return;
  const int64_t row = idx ? idx[r] : r;
  const int tid = threadIdx.x;
  constexpr int E = Vec<DT>::E;
  constexpr int esz = DT == kF32 ? 4 : 2;
  const unsigned char* wrow = static_cast<const unsigned char*>(W) + row * cols * esz;
  float acc[NT];
#pragma unroll
  for (int t = 0; t < NT; ++t) acc[t] = 0.0f;
  int64_t c0 = 0;
  if (vec) {
    const uint4* wv = reinterpret_cast<const uint4*>(wrow);
    const int64_t nvec = cols / E;
    constexpr int U = 4;  // vectors in flight per thread
    int64_t v = tid;
    for (; v + kGemvThreads * (U - 1) < nvec; v += kGemvThreads * U) {
      uint4 w[U];
#pragma unroll
      for (int u = 0; u < U; ++u) w[u] = ld_stream(wv + v + kGemvThreads * u);
#pragma unroll
      for (int u = 0; u < U; ++u) {
        float f[E];
        Vec<DT>::cvt(w[u], f);
        const int64_t c = (v + kGemvThreads * u) * E;
#pragma unroll
        for (int t = 0; t < NT; ++t) {
          if (t < nt) {
            const float4* xv = reinterpret_cast<const float4*>(x + t * cols + c);
#pragma unroll
            for (int e = 0; e < E / 4; ++e) {
              const float4 xx = xv[e];
              acc[t] += f[4 * e] * xx.x + f[4 * e + 1] * xx.y + f[4 * e + 2] * xx.z + f[4 * e + 3] * xx.w;
            }
          }
        }
      }
    }
    for (; v < nvec; v += kGemvThreads) {
      float f[E];
      Vec<DT>::cvt(ld_stream(wv + v), f);
      const int64_t c = v * E;
#pragma unroll
      for (int t = 0; t < NT; ++t)
        if (t < nt)
#pragma unroll
          for (int e = 0; e < E; ++e) acc[t] += f[e] * x[t * cols + c + e];
    }
    c0 = nvec * E;
  }
  for (int64_t c = c0 + tid; c < cols; c += kGemvThreads) {
    const float wv = load_elem(DT, wrow, c);
#pragma unroll
    for (int t = 0; t < NT; ++t)
      if (t < nt) acc[t] += wv * x[t * cols + c];
  }
  const int lane = tid & 31, warp = tid >> 5;
#pragma unroll
  for (int t = 0; t < NT; ++t) {
    const float sum = warp_sum(acc[t]);
    if (lane == 0) red[t][warp] = sum;
  }
  __syncthreads();
  if (tid < NT && tid < nt) {
    float sum = 0.0f;
#pragma unroll
    for (int w = 0; w < kGemvThreads / 32; ++w) sum += red[tid][w];
    float& out = y[tid * ldy + r];
    out = (accumulate ? out : 0.0f) + sum + (bias ? load_elem(bias_dt, bias, row) : 0.0f);
  }
}

// x (cols floats) into shared memory, once per block, for the warp-per-row kernels below.
__device__ __forceinline__ void stage_x(float* xs, const float* x, int64_t cols) {
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) xs[c] = x[c];
  __syncthreads();
}

// One warp's dot products of R weight rows with xs (shared memory). Every row starts 16-byte aligned
// and holds nvec vectors of Vec<DT>::E values. A lane issues its 8 loads of every row before using
// any (a 2048-column bf16 row is exactly 8 per lane), so each SM keeps enough bytes in flight to
// stream at memory speed even for the small matrices of 1B-class models. acc: the warp's sums.
template <int DT, int R>
__device__ __forceinline__ void warp_rows_dot(const uint4* const (&rows)[R], int64_t nvec, const float* xs, float (&acc)[R]) {
  constexpr int E = Vec<DT>::E;
  constexpr int U = 8;
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int q = 0; q < R; ++q) acc[q] = 0.0f;
  for (int64_t v0 = lane; v0 < nvec; v0 += 32 * U) {
    uint4 w[R][U];
#pragma unroll
    for (int q = 0; q < R; ++q)
#pragma unroll
      for (int u = 0; u < U; ++u) w[q][u] = v0 + 32 * u < nvec ? ld_stream(rows[q] + v0 + 32 * u) : make_uint4(0, 0, 0, 0);
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int64_t v = v0 + 32 * u;
      if (v >= nvec) break;
      const float4* xv = reinterpret_cast<const float4*>(xs + v * E);
      float xf[E];
#pragma unroll
      for (int e = 0; e < E / 4; ++e) {
        const float4 t = xv[e];
        xf[4 * e] = t.x;
        xf[4 * e + 1] = t.y;
        xf[4 * e + 2] = t.z;
        xf[4 * e + 3] = t.w;
      }
#pragma unroll
      for (int q = 0; q < R; ++q) {
        float f[E];
        Vec<DT>::cvt(w[q][u], f);
#pragma unroll
        for (int e = 0; e < E; ++e) acc[q] += f[e] * xf[e];
      }
    }
  }
#pragma unroll
  for (int q = 0; q < R; ++q) acc[q] = warp_sum(acc[q]);
}

// Decode GEMV (one token): y[r] = W[row(r)] . x (+ bias), RPW rows per warp (warp_rows_dot).
template <int DT, int RPW>
__global__ void gemv1_kernel(float* __restrict__ y, const float* __restrict__ x, const void* __restrict__ W, int64_t cols,
                             const int32_t* __restrict__ idx, int64_t count, const void* bias, int bias_dt,
                             bool accumulate) {
  extern __shared__ float xs[];
  stage_x(xs, x, cols);
  constexpr int esz = DT == kF32 ? 4 : 2;
  const int64_t r0 = (static_cast<int64_t>(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5)) * RPW;
  if (r0 >= count) return;
  const uint4* rows[RPW];
#pragma unroll
  for (int q = 0; q < RPW; ++q) {
    const int64_t r = min(r0 + q, count - 1);
    rows[q] = reinterpret_cast<const uint4*>(static_cast<const unsigned char*>(W) + (idx ? idx[r] : r) * cols * esz);
  }
  float acc[RPW];
  warp_rows_dot<DT, RPW>(rows, cols / Vec<DT>::E, xs, acc);
#pragma unroll
  for (int q = 0; q < RPW; ++q) {
    const int64_t r = r0 + q;
    if ((threadIdx.x & 31) == 0 && r < count) {
      const int64_t row = idx ? idx[r] : r;
      y[r] = (accumulate ? y[r] : 0.0f) + acc[q] + (bias ? load_elem(bias_dt, bias, row) : 0.0f);
    }
  }
}

template <int DT>
void launch_gemv(float* y, int64_t ldy, const float* x, const DMat& w, const int32_t* d_idx, int64_t count, int64_t n,
                 const DMat* bias, bool acc) {
  State& s = st();
  const int esz = DT == kF32 ? 4 : 2;
  const bool vec = (w.cols * esz) % 16 == 0 && (reinterpret_cast<uintptr_t>(w.data) & 15) == 0 && (w.cols % 4) == 0;
  // Measured on an H200 (tools/cuda/kernel-bench.mjs): long rows (8192 columns) stream best with a
  // block per row and x read through L1 (staging 32 KB of x per block costs more than it saves);
  // 2048-column rows with x staged in shared memory, two rows per warp and 8 warps per block once
  // there are enough rows to give every SM several blocks (128256 rows: 90 % of the read bandwidth).
  if (n == 1 && vec && w.cols <= 4096) {
    const bool big = count >= 4096;
    const int warps = big ? 8 : 4;
    const size_t smem = static_cast<size_t>(w.cols) * 4;
    const void* b = bias ? bias->data : nullptr;
    const int bdt = bias ? bias->dtype : 0;
    if (big)
      gemv1_kernel<DT, 2><<<grid_for(count, 2 * warps), 32 * warps, smem, s.stream>>>(y, x, w.data, w.cols, d_idx, count, b, bdt, acc);
    else
      gemv1_kernel<DT, 1><<<grid_for(count, warps), 32 * warps, smem, s.stream>>>(y, x, w.data, w.cols, d_idx, count, b, bdt, acc);
    LAUNCHED("gemv1");
    return;
  }
  for (int64_t t0 = 0; t0 < n; t0 += kMaxTok) {
    const int nt = static_cast<int>(std::min<int64_t>(kMaxTok, n - t0));
    const dim3 grid(static_cast<unsigned>(count));
    if (nt == 1)
      gemv_kernel<DT, 1><<<grid, kGemvThreads, 0, s.stream>>>(y + t0 * ldy, ldy, x + t0 * w.cols, w.data, w.cols, d_idx, count,
                                                           1, bias ? bias->data : nullptr, bias ? bias->dtype : 0, vec, acc);
    else
      gemv_kernel<DT, kMaxTok><<<grid, kGemvThreads, 0, s.stream>>>(y + t0 * ldy, ldy, x + t0 * w.cols, w.data, w.cols, d_idx,
                                                                 count, nt, bias ? bias->data : nullptr,
                                                                 bias ? bias->dtype : 0, vec, acc);
    LAUNCHED("gemv");
  }
}

void gemv_dispatch(float* y, int64_t ldy, const float* x, const DMat& w, const int32_t* d_idx, int64_t count, int64_t n,
                   const DMat* bias, bool acc = false) {
  switch (w.dtype) {
    case kF32: return launch_gemv<kF32>(y, ldy, x, w, d_idx, count, n, bias, acc);
    case kF16: return launch_gemv<kF16>(y, ldy, x, w, d_idx, count, n, bias, acc);
    default: return launch_gemv<kBF16>(y, ldy, x, w, d_idx, count, n, bias, acc);
  }
}

// ---- column accumulation: y = sum_i a[i] * Wt[idx[i]][:] (rows of the transposed storage) ------------

constexpr int kColThreads = 128;

// Block (bx, s): outputs [bx * kColThreads * E, +kColThreads * E), indices [s*count/S, (s+1)*count/S);
// writes partial[s][R].
template <int DT>
__global__ void __launch_bounds__(kColThreads) acc_cols_kernel(float* __restrict__ partial, const float* __restrict__ a,
                                                             const void* __restrict__ Wt, int64_t R,
                                                             const int32_t* __restrict__ idx, int64_t count, int splits,
                                                             bool vec) {
  constexpr int E = Vec<DT>::E;
  constexpr int esz = DT == kF32 ? 4 : 2;
  const int s = blockIdx.y;
  const int64_t i0 = count * s / splits, i1 = count * (s + 1) / splits;
  float* out = partial + static_cast<int64_t>(s) * R;
  if (vec) {
    const int64_t r0 = (static_cast<int64_t>(blockIdx.x) * kColThreads + threadIdx.x) * E;
    if (r0 >= R) return;
    float acc[E];
#pragma unroll
    for (int e = 0; e < E; ++e) acc[e] = 0.0f;
    int64_t i = i0;
    for (; i + 4 <= i1; i += 4) {
      uint4 w[4];
      float av[4];
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        const int64_t c = idx ? idx[i + u] : i + u;
        w[u] = ld_stream(reinterpret_cast<const uint4*>(static_cast<const unsigned char*>(Wt) + (c * R + r0) * esz));
        av[u] = a[i + u];
      }
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        float f[E];
        Vec<DT>::cvt(w[u], f);
#pragma unroll
        for (int e = 0; e < E; ++e) acc[e] += av[u] * f[e];
      }
    }
    for (; i < i1; ++i) {
      const int64_t c = idx ? idx[i] : i;
      float f[E];
      Vec<DT>::cvt(ld_stream(reinterpret_cast<const uint4*>(static_cast<const unsigned char*>(Wt) + (c * R + r0) * esz)), f);
#pragma unroll
      for (int e = 0; e < E; ++e) acc[e] += a[i] * f[e];
    }
#pragma unroll
    for (int e = 0; e < E; ++e) out[r0 + e] = acc[e];
  } else {
    const int64_t r = static_cast<int64_t>(blockIdx.x) * kColThreads + threadIdx.x;
    if (r >= R) return;
    float acc = 0.0f;
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t c = idx ? idx[i] : i;
      acc += a[i] * load_elem(DT, Wt, c * R + r);
    }
    out[r] = acc;
  }
}

__global__ void reduce_partials_kernel(float* __restrict__ y, const float* __restrict__ partial, int64_t R, int splits,
                                       const void* bias, int bias_dt, bool accumulate) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= R) return;
  float s = 0.0f;
  for (int k = 0; k < splits; ++k) s += partial[static_cast<int64_t>(k) * R + r];
  y[r] = (accumulate ? y[r] : 0.0f) + s + (bias ? load_elem(bias_dt, bias, r) : 0.0f);
}

// y[0..R) = sum over count columns; d_idx null = columns 0..count-1. a and d_idx are device arrays.
void acc_cols(float* y, const float* a, const DMat& w, const int32_t* d_idx, int64_t count, const DMat* bias,
              bool accumulate = false) {
  State& s = st();
  const int64_t R = w.rows;
  const int esz = w.dtype == kF32 ? 4 : 2;
  const int E = w.dtype == kF32 ? 4 : 8;
  const bool vec = (R * esz) % 16 == 0 && (reinterpret_cast<uintptr_t>(w.data) & 15) == 0;
  const int64_t per_block = vec ? int64_t{kColThreads} * E : kColThreads;
  const unsigned gx = grid_for(R, static_cast<int>(per_block));
  // Enough blocks to fill the chip, at least 4 columns per block.
  int splits = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>((4 * s.sms + gx - 1) / gx, count / 4)));
  if (count == 0) splits = 1;
  float* partial = reinterpret_cast<float*>(scratch(kSlotPartials, static_cast<size_t>(splits) * R * sizeof(float)));
  const dim3 grid(gx, splits);
  switch (w.dtype) {
    case kF32: acc_cols_kernel<kF32><<<grid, kColThreads, 0, s.stream>>>(partial, a, w.data, R, d_idx, count, splits, vec); break;
    case kF16: acc_cols_kernel<kF16><<<grid, kColThreads, 0, s.stream>>>(partial, a, w.data, R, d_idx, count, splits, vec); break;
    default: acc_cols_kernel<kBF16><<<grid, kColThreads, 0, s.stream>>>(partial, a, w.data, R, d_idx, count, splits, vec); break;
  }
  LAUNCHED("accumulate_cols");
  reduce_partials_kernel<<<grid_for(R, 256), 256, 0, s.stream>>>(y, partial, R, splits, bias ? bias->data : nullptr,
                                                                 bias ? bias->dtype : 0, accumulate);
  LAUNCHED("accumulate_cols reduce");
}

// ---- small ops --------------------------------------------------------------------------------------

__global__ void embed_kernel(float* y, const void* W, int dt, int64_t cols, const int32_t* ids, int64_t n, float scale) {
  const int64_t t = blockIdx.y;
  const int64_t row = ids[t];
  for (int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; c < cols; c += int64_t{gridDim.x} * blockDim.x)
    y[t * cols + c] = load_elem(dt, W, row * cols + c) * scale;
}

__device__ float block_sum(float v, float* sh) {
  v = warp_sum(v);
  const int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
  __syncthreads();
  if (lane == 0) sh[w] = v;
  __syncthreads();
  const int nw = (blockDim.x + 31) >> 5;
  float t = lane < nw ? sh[lane] : 0.0f;
  return warp_sum(t);
}

__global__ void rms_norm_kernel(float* y, const float* x, const void* g, int gdt, int64_t dim, float eps) {
  __shared__ float sh[32];
  const float* xr = x + blockIdx.x * dim;
  float* yr = y + blockIdx.x * dim;
  float ss = 0.0f;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) ss += xr[i] * xr[i];
  ss = block_sum(ss, sh);
  const float inv = 1.0f / sqrtf(ss / static_cast<float>(dim) + eps);
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) yr[i] = (xr[i] * inv) * load_elem(gdt, g, i);
}

__global__ void layer_norm_kernel(float* y, const float* x, const void* g, int gdt, const void* b, int bdt, int64_t dim,
                                  float eps) {
  __shared__ float sh[32];
  const float* xr = x + blockIdx.x * dim;
  float* yr = y + blockIdx.x * dim;
  float s = 0.0f;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) s += xr[i];
  const float mean = block_sum(s, sh) / static_cast<float>(dim);
  float v = 0.0f;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) v += (xr[i] - mean) * (xr[i] - mean);
  const float inv = 1.0f / sqrtf(block_sum(v, sh) / static_cast<float>(dim) + eps);
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x)
    yr[i] = (xr[i] - mean) * inv * load_elem(gdt, g, i) + load_elem(bdt, b, i);
}

// HF rotate_half on pair j of one head (p: the head's values): cos/sin of pos * inv_freq in double,
// rounded once to f32, times factor in f32 (as the CPU backend).
__device__ __forceinline__ void rope_pair(float* p, int64_t j, int64_t half, int32_t pos, const float* inv_freq,
                                          float factor) {
  const double a = static_cast<double>(pos) * static_cast<double>(inv_freq[j]);
  const float c = static_cast<float>(cos(a)) * factor, s = static_cast<float>(sin(a)) * factor;
  const float x1 = p[j], x2 = p[j + half];
  p[j] = x1 * c - x2 * s;
  p[j + half] = x2 * c + x1 * s;
}

__global__ void rope_kernel(float* x, int64_t heads, int64_t head_dim, const int32_t* pos, const float* inv_freq,
                            int64_t half, float factor) {
  const int64_t t = blockIdx.y;
  const int64_t j = threadIdx.x;  // pair index, < half
  if (j >= half) return;
  for (int64_t h = blockIdx.x; h < heads; h += gridDim.x) rope_pair(x + (t * heads + h) * head_dim, j, half, pos[t], inv_freq, factor);
}

// rope on q and k, then k and v into the cache, in one launch: block (hh, t) is q head hh for
// hh < heads, else kv head hh - heads (roped, then written with its v row at position pos0 + t, which
// lives in slot (pos0 + t) % capacity: sliding-window layers keep a ring).
__global__ void rope_cache_kernel(float* q, float* k, const float* v, float* kc, float* vc, int64_t heads,
                                  int64_t kv_heads, int64_t head_dim, const int32_t* pos, const float* inv_freq,
                                  int64_t half, float factor, const int32_t* pos0p, int64_t capacity) {
  const int64_t t = blockIdx.y, hh = blockIdx.x;
  const bool is_q = hh < heads;
  const int64_t h = is_q ? hh : hh - heads;
  float* p = is_q ? q + (t * heads + h) * head_dim : k + (t * kv_heads + h) * head_dim;
  if (inv_freq)
    for (int64_t j = threadIdx.x; j < half; j += blockDim.x) rope_pair(p, j, half, pos[t], inv_freq, factor);
  if (is_q) return;
  __syncthreads();  // the roped pairs are other threads' elements
  const int64_t row = (h * capacity + (*pos0p + t) % capacity) * head_dim;  // ring slot, as on the CPU
  const float* vr = v + (t * kv_heads + h) * head_dim;
  for (int64_t d = threadIdx.x; d < head_dim; d += blockDim.x) {
    kc[row + d] = p[d];
    vc[row + d] = vr[d];
  }
}

__global__ void cache_write_kernel(float* kc, float* vc, const float* k, const float* v, int64_t n, int64_t kv_heads,
                                   int64_t head_dim, const int32_t* pos0p, int64_t capacity) {
  const int64_t pos0 = *pos0p;
  const int64_t total = n * kv_heads * head_dim;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t d = i % head_dim, h = (i / head_dim) % kv_heads, t = i / (head_dim * kv_heads);
    const int64_t dst = (h * capacity + (pos0 + t) % capacity) * head_dim + d;
    kc[dst] = k[i];
    vc[dst] = v[i];
  }
}

constexpr int kAttnWarps = 4;
constexpr int kAttnPos = 4;  // positions a warp scores at once (their K and V loads in flight together)

// Attention over the KV cache, split over positions (flash-decoding): block (h, i, s) of S = gridDim.z
// takes positions [s*len/S, (s+1)*len/S) of query token i and head h; each of its warps keeps an
// online softmax (running max m, sum l, weighted values acc) over every kAttnWarps-th group of
// kAttnPos positions, lane l owning head dims l, l+32, ... (DPL of them). The warps merge in shared
// memory, the block's (m, l, acc) goes to `part`, and the block that arrives last for (i, h) (a
// counter per pair, reset by that block) merges the S partials into out. A recorded step replays
// with any position because S is fixed by the cache's capacity, not by the length.
template <int DPL>
__global__ void __launch_bounds__(32 * kAttnWarps) attention_kernel(float* __restrict__ out, const float* __restrict__ q,
                                                                    const float* __restrict__ kc,
                                                                    const float* __restrict__ vc, int64_t heads,
                                                                    int64_t group, int64_t head_dim, const int32_t* pos0p,
                                                                    int64_t capacity, float scale, int64_t window,
                                                                    float softcap,
                                                                    float* __restrict__ part,
                                                                    unsigned* __restrict__ counters) {
  __shared__ float wm[kAttnWarps], wl[kAttnWarps];
  __shared__ float wacc[kAttnWarps][32 * DPL];
  __shared__ bool last;
  const int64_t i = blockIdx.y, h = blockIdx.x, kvh = h / group;
  const int64_t S = gridDim.z, s = blockIdx.z;
  // Visible positions [start, end): all of them, or the last `window` (sliding-window layers).
  const int64_t end = *pos0p + i + 1;
  const int64_t start = window > 0 && end > window ? end - window : 0;
  const int64_t len = end - start;
  const int64_t lo = start + s * len / S, hi = start + (s + 1) * len / S;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const float* qp = q + (i * heads + h) * head_dim;
  float qd[DPL];
#pragma unroll
  for (int j = 0; j < DPL; ++j) qd[j] = lane + 32 * j < head_dim ? qp[lane + 32 * j] : 0.0f;
  const float* kb = kc + kvh * capacity * head_dim;
  const float* vb = vc + kvh * capacity * head_dim;
  float m = -INFINITY, l = 0.0f, acc[DPL];
#pragma unroll
  for (int j = 0; j < DPL; ++j) acc[j] = 0.0f;
  for (int64_t t0 = lo + warp * kAttnPos; t0 < hi; t0 += kAttnWarps * kAttnPos) {
    float kv[kAttnPos][DPL], vv[kAttnPos][DPL];
#pragma unroll
    for (int u = 0; u < kAttnPos; ++u)
#pragma unroll
      for (int j = 0; j < DPL; ++j) {
        const bool ok = t0 + u < hi && lane + 32 * j < head_dim;
        const int64_t at = ((t0 + u) % capacity) * head_dim + lane + 32 * j;  // position p in slot p % capacity
        kv[u][j] = ok ? kb[at] : 0.0f;
        vv[u][j] = ok ? vb[at] : 0.0f;
      }
    float sc[kAttnPos], mn = m;
#pragma unroll
    for (int u = 0; u < kAttnPos; ++u) {
      float d = 0.0f;
#pragma unroll
      for (int j = 0; j < DPL; ++j) d += qd[j] * kv[u][j];
      float v = warp_sum(d) * scale;
      if (softcap > 0.0f) v = softcap * tanhf(v / softcap);
      sc[u] = t0 + u < hi ? v : -INFINITY;
      mn = fmaxf(mn, sc[u]);
    }
    const float corr = m == -INFINITY ? 0.0f : expf(m - mn);
    l *= corr;
#pragma unroll
    for (int j = 0; j < DPL; ++j) acc[j] *= corr;
#pragma unroll
    for (int u = 0; u < kAttnPos; ++u) {
      const float p = sc[u] == -INFINITY ? 0.0f : expf(sc[u] - mn);
      l += p;
#pragma unroll
      for (int j = 0; j < DPL; ++j) acc[j] += p * vv[u][j];
    }
    m = mn;
  }
  if (lane == 0) {
    wm[warp] = m;
    wl[warp] = l;
  }
#pragma unroll
  for (int j = 0; j < DPL; ++j) wacc[warp][lane + 32 * j] = acc[j];
  __syncthreads();
  // The block's merge of its warps; then its partial: [m, l, acc[0..head_dim)].
  float M = wm[0];
  for (int w = 1; w < kAttnWarps; ++w) M = fmaxf(M, wm[w]);
  float* mine = part + ((i * heads + h) * S + s) * (head_dim + 2);
  for (int64_t d = threadIdx.x; d < head_dim + 1; d += blockDim.x) {
    float v = 0.0f;
    for (int w = 0; w < kAttnWarps; ++w) {
      const float f = wm[w] == -INFINITY ? 0.0f : expf(wm[w] - M);
      v += f * (d == 0 ? wl[w] : wacc[w][d - 1]);
    }
    mine[1 + d] = v;
  }
  if (threadIdx.x == 0) mine[0] = M;
  // Publish the partial, then take a ticket; the last block of (i, h) merges all S.
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) {
    unsigned* cnt = counters + i * heads + h;
    last = atomicAdd(cnt, 1u) == S - 1;
    if (last) *cnt = 0;  // ready for the next step
  }
  __syncthreads();
  if (!last) return;
  __threadfence();
  const float* all = part + (i * heads + h) * S * (head_dim + 2);
  float Mall = -INFINITY;
  for (int64_t b = 0; b < S; ++b) Mall = fmaxf(Mall, __ldcg(all + b * (head_dim + 2)));
  float* op = out + (i * heads + h) * head_dim;
  for (int64_t d = threadIdx.x; d < head_dim; d += blockDim.x) {
    float L = 0.0f, v = 0.0f;
    for (int64_t b = 0; b < S; ++b) {
      const float* pb = all + b * (head_dim + 2);
      const float mb = __ldcg(pb);
      const float f = mb == -INFINITY ? 0.0f : expf(mb - Mall);
      L += f * __ldcg(pb + 1);
      v += f * __ldcg(pb + 2 + d);
    }
    op[d] = v / L;
  }
}

__global__ void gated_act_kernel(float* gate, const float* up, int64_t count, int act) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += int64_t{gridDim.x} * blockDim.x)
    gate[i] = apply_act(gate[i], act) * up[i];
}
__global__ void activate_kernel(float* x, int64_t count, int act) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += int64_t{gridDim.x} * blockDim.x)
    x[i] = apply_act(x[i], act);
}
__global__ void softcap_kernel(float* x, int64_t count, float cap) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += int64_t{gridDim.x} * blockDim.x)
    if (x[i] != -INFINITY) x[i] = cap * tanhf(x[i] / cap);
}
__global__ void add_kernel(float* y, const float* x, int64_t count) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += int64_t{gridDim.x} * blockDim.x)
    y[i] += x[i];
}
__global__ void gather_kernel(float* y, const float* x, const int32_t* idx, int64_t count) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += int64_t{gridDim.x} * blockDim.x)
    y[i] = x[idx[i]];
}

unsigned elementwise_grid(int64_t count) {
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>((count + 255) / 256, 8 * st().sms)));
}

// ---- quantized scoring ------------------------------------------------------------------------------

// x to int8 per group of G exactly as quantize_x (sparse_ops.cc): scale = max|x_g| / 127,
// q = round_even(clamp(x * (127 / max|x_g|))), NaN -> 0, zero padding. One block per group.
__global__ void quantize_x_kernel(int8_t* xq, float* xs, const float* x, int64_t cols, int64_t G) {
  __shared__ float red[32];
  const int64_t g = blockIdx.x, lo = g * G, n = min(G, cols - lo);
  float amax = 0.0f;
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
    const float a = fabsf(x[lo + j]);
    amax = a > amax ? a : amax;  // NaN never wins
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float b = __shfl_xor_sync(0xffffffffu, amax, o);
    amax = b > amax ? b : amax;
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) red[warp] = amax;
  __syncthreads();
  amax = 0.0f;
  for (int w = 0; w < static_cast<int>(blockDim.x >> 5); ++w) amax = red[w] > amax ? red[w] : amax;
  if (threadIdx.x == 0) xs[g] = __fdiv_rn(amax, 127.0f);
  const float inv = amax > 0.0f ? __fdiv_rn(127.0f, amax) : 0.0f;
  for (int64_t j = threadIdx.x; j < G; j += blockDim.x) {
    float v = j < n ? __fmul_rn(x[lo + j], inv) : 0.0f;
    if (v != v) v = 0.0f;
    v = fminf(fmaxf(v, -127.0f), 127.0f);
    xq[lo + j] = static_cast<int8_t>(__float2int_rn(v));
  }
}

// y[r] = sum_g wscale_g * xscale_g * sum_{j in g} q_j * xq_j (+ bias[r]), then act when act >= 0.
// One warp per row; each lane reads 16 code bytes at a time: int8, 16 values of one group; int4, the
// low nibbles (values j..j+15 of a 64-value block) and the high nibbles (j+32..j+47).
// One 16-byte chunk `ch` of a row's codes (w) against x: int8, 16 values of one group; int4, the low
// nibbles (values j..j+15 of a 64-value block) and the high nibbles (j+32..j+47). sc: the row's scales.
template <int BITS>
__device__ __forceinline__ float chunk_dot(const uint32_t (&w)[4], int64_t ch, const int8_t* xq, const float* xs,
                                           const unsigned char* sc, const DQuant& q) {
  if (BITS == 8) {
    const int64_t c = ch * 16;
    const int32_t* xv = reinterpret_cast<const int32_t*>(xq + c);
    int s = 0;
#pragma unroll
    for (int i = 0; i < 4; ++i) s = __dp4a(static_cast<int>(w[i]), xv[i], s);
    const int64_t gi = c / q.group;
    uint16_t hb;
    memcpy(&hb, sc + 2 * gi, 2);
    return half_bits(hb) * xs[gi] * static_cast<float>(s);
  }
  const int64_t blk = ch / 2, j = (ch % 2) * 16;  // 32 code bytes per 64 values
  const int64_t c_lo = blk * 64 + j, c_hi = c_lo + 32;
  const int32_t* xlo = reinterpret_cast<const int32_t*>(xq + c_lo);
  const int32_t* xhi = reinterpret_cast<const int32_t*>(xq + c_hi);
  int slo = 0, shi = 0;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int lo = static_cast<int>(__vsub4(w[i] & 0x0f0f0f0fu, 0x08080808u));
    const int hi = static_cast<int>(__vsub4((w[i] >> 4) & 0x0f0f0f0fu, 0x08080808u));
    slo = __dp4a(lo, xlo[i], slo);
    shi = __dp4a(hi, xhi[i], shi);
  }
  // Values past `padded` (the nibble padding up to 64) have no group and zero codes.
  float acc = 0.0f;
  uint16_t hb;
  if (c_lo < q.padded) {
    memcpy(&hb, sc + 2 * (c_lo / q.group), 2);
    acc += half_bits(hb) * xs[c_lo / q.group] * static_cast<float>(slo);
  }
  if (c_hi < q.padded) {
    memcpy(&hb, sc + 2 * (c_hi / q.group), 2);
    acc += half_bits(hb) * xs[c_hi / q.group] * static_cast<float>(shi);
  }
  return acc;
}

// y[r] = sum_g wscale_g * xscale_g * sum_{j in g} q_j * xq_j (+ bias[r]), then act when act >= 0.
// The quantized x and its scales are staged in shared memory; each warp scores RPW rows and, on the
// vector path, issues all its code loads for a stretch of the rows before using any.
template <int BITS, int RPW>
__global__ void quant_gemv_kernel(float* __restrict__ y, const int8_t* __restrict__ xq_g, const float* __restrict__ xs_g,
                                  const unsigned char* __restrict__ Q, DQuant q, int64_t span,
                                  const float* __restrict__ bias, int act, bool vec) {
  extern __shared__ __align__(16) unsigned char smem[];
  int8_t* xq = reinterpret_cast<int8_t*>(smem);
  float* xs = reinterpret_cast<float*>(smem + ((span + 15) & ~int64_t{15}));
  for (int64_t i = threadIdx.x; i < span / 4; i += blockDim.x)
    reinterpret_cast<int32_t*>(xq)[i] = reinterpret_cast<const int32_t*>(xq_g)[i];
  for (int64_t i = threadIdx.x; i < q.groups; i += blockDim.x) xs[i] = xs_g[i];
  __syncthreads();
  const int lane = threadIdx.x & 31;
  const int64_t warps = blockDim.x >> 5;
  const int64_t r0 = (static_cast<int64_t>(blockIdx.x) * warps + (threadIdx.x >> 5)) * RPW;
  if (r0 >= q.rows) return;
  const int64_t chunks = q.row_bytes / 16;
  float acc[RPW];
  const unsigned char* codes[RPW];
#pragma unroll
  for (int k = 0; k < RPW; ++k) {
    acc[k] = 0.0f;
    codes[k] = Q + min(r0 + k, q.rows - 1) * q.row_stride;
  }
  if (vec) {
    constexpr int U = 4;
    for (int64_t c0 = lane; c0 < chunks; c0 += 32 * U) {
      uint4 v[RPW][U];
#pragma unroll
      for (int k = 0; k < RPW; ++k)
#pragma unroll
        for (int u = 0; u < U; ++u)
          v[k][u] = c0 + 32 * u < chunks ? ld_stream(reinterpret_cast<const uint4*>(codes[k]) + c0 + 32 * u)
                                        : make_uint4(0, 0, 0, 0);
#pragma unroll
      for (int u = 0; u < U; ++u) {
        if (c0 + 32 * u >= chunks) break;
#pragma unroll
        for (int k = 0; k < RPW; ++k) {
          const uint32_t w[4] = {v[k][u].x, v[k][u].y, v[k][u].z, v[k][u].w};
          acc[k] += chunk_dot<BITS>(w, c0 + 32 * u, xq, xs, codes[k] + q.row_bytes, q);
        }
      }
    }
  } else {
#pragma unroll
    for (int k = 0; k < RPW; ++k)
      for (int64_t ch = lane; ch < chunks; ch += 32) {
        uint32_t w[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const unsigned char* p = codes[k] + ch * 16 + 4 * i;
          w[i] = p[0] | (p[1] << 8) | (p[2] << 16) | (static_cast<uint32_t>(p[3]) << 24);
        }
        acc[k] += chunk_dot<BITS>(w, ch, xq, xs, codes[k] + q.row_bytes, q);
      }
  }
#pragma unroll
  for (int k = 0; k < RPW; ++k) {
    float a = warp_sum(acc[k]);
    const int64_t r = r0 + k;
    if (lane == 0 && r < q.rows) {
      if (bias) a += bias[r];
      y[r] = act >= 0 ? apply_act(a, act) : a;
    }
  }
}

// Quantize x into scratch and score every row; act < 0: no activation.
void quant_scores(float* y, const float* x, const DQuant& q, const float* d_bias, int act) {
  State& s = st();
  // int4 codes span the padding up to a multiple of 64 values: zero x there too.
  const int64_t span = q.bits == 4 ? q.row_bytes * 2 : q.row_bytes;
  unsigned char* base = scratch(kSlotQuantX, static_cast<size_t>(span) + 16 * static_cast<size_t>(q.groups + 1) + 256);
  int8_t* xq = reinterpret_cast<int8_t*>(base);
  float* xs = reinterpret_cast<float*>(base + ((span + 255) & ~int64_t{255}));
  if (span > q.padded) CK(cudaMemsetAsync(xq + q.padded, 0, span - q.padded, s.stream));
  quantize_x_kernel<<<static_cast<unsigned>(q.groups), 128, 0, s.stream>>>(xq, xs, x, q.cols, q.group);
  LAUNCHED("quantize_x");
  const bool vec = (q.row_stride % 16) == 0 && (reinterpret_cast<uintptr_t>(q.data) & 15) == 0;
  const size_t smem = static_cast<size_t>((span + 15) & ~int64_t{15}) + 4 * static_cast<size_t>(q.groups);
  if (smem > 48 * 1024) throw std::runtime_error("CUDA: quantized scoring supports up to about 45000 columns");
  // Two rows per warp and 8 warps per block for tall matrices (the LM head), one row per warp and
  // 4 warps otherwise, so a layer's predictor still spreads over every SM.
  const bool big = q.rows >= 4096;
  const int warps = big ? 8 : 4;
  const unsigned grid = grid_for(q.rows, (big ? 2 : 1) * warps);
  if (q.bits == 8) {
    if (big) quant_gemv_kernel<8, 2><<<grid, 32 * warps, smem, s.stream>>>(y, xq, xs, q.data, q, span, d_bias, act, vec);
    else quant_gemv_kernel<8, 1><<<grid, 32 * warps, smem, s.stream>>>(y, xq, xs, q.data, q, span, d_bias, act, vec);
  } else {
    if (big) quant_gemv_kernel<4, 2><<<grid, 32 * warps, smem, s.stream>>>(y, xq, xs, q.data, q, span, d_bias, act, vec);
    else quant_gemv_kernel<4, 1><<<grid, 32 * warps, smem, s.stream>>>(y, xq, xs, q.data, q, span, d_bias, act, vec);
  }
  LAUNCHED("quant_gemv");
}

// ---- HiRE exact rows ---------------------------------------------------------------------------------

// g[i] = act(W[2c] . x) * (W[2c+1] . x) for c = cand[i] (gate/up rows interleaved), or
// act(W[c] . x + bias[c]) when not gated. One warp per candidate (warp_rows_dot on the vector path).
template <int DT>
__global__ void exact_rows_kernel(float* __restrict__ g, const float* __restrict__ x, const void* __restrict__ W,
                                  int64_t cols, const int32_t* __restrict__ cand, int64_t count, bool gated,
                                  const float* bias, int act, bool vec) {
  extern __shared__ float xs[];
  stage_x(xs, x, cols);
  const int lane = threadIdx.x & 31;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (i >= count) return;
  const int64_t c = cand ? cand[i] : i;
  constexpr int esz = DT == kF32 ? 4 : 2;
  const unsigned char* base = static_cast<const unsigned char*>(W) + (gated ? 2 * c : c) * cols * esz;
  float acc[2] = {0.0f, 0.0f};
  if (vec && gated) {
    const uint4* rows[2] = {reinterpret_cast<const uint4*>(base), reinterpret_cast<const uint4*>(base + cols * esz)};
    warp_rows_dot<DT, 2>(rows, cols / Vec<DT>::E, xs, acc);
  } else if (vec) {
    const uint4* rows[1] = {reinterpret_cast<const uint4*>(base)};
    float one[1];
    warp_rows_dot<DT, 1>(rows, cols / Vec<DT>::E, xs, one);
    acc[0] = one[0];
  } else {
    const int64_t len = gated ? 2 * cols : cols;
    for (int64_t k = lane; k < len; k += 32) {
      const int half = k >= cols;
      acc[half] += load_elem(DT, base, k) * xs[k - half * cols];
    }
    acc[0] = warp_sum(acc[0]);
    acc[1] = warp_sum(acc[1]);
  }
  if (lane == 0) g[i] = gated ? apply_act(acc[0], act) * acc[1] : apply_act(acc[0] + (bias ? bias[c] : 0.0f), act);
}

void exact_rows(float* g, const float* x, const DMat& w, const int32_t* d_cand, int64_t count, bool gated,
                const float* d_bias, int act) {
  State& s = st();
  const int esz = w.dtype == kF32 ? 4 : 2;
  const int E = w.dtype == kF32 ? 4 : 8;
  // The vector path needs every row to start 16-byte aligned and a row to hold whole vectors.
  const bool vec = (w.cols * esz) % 16 == 0 && (reinterpret_cast<uintptr_t>(w.data) & 15) == 0 && w.cols % E == 0;
  const size_t smem = static_cast<size_t>(w.cols) * 4;
  if (smem > 48 * 1024) throw std::runtime_error("CUDA: exact rows support up to 12288 columns");
  constexpr int warps = 4;
  const unsigned grid = grid_for(count, warps);
  switch (w.dtype) {
    case kF32: exact_rows_kernel<kF32><<<grid, 32 * warps, smem, s.stream>>>(g, x, w.data, w.cols, d_cand, count, gated, d_bias, act, vec); break;
    case kF16: exact_rows_kernel<kF16><<<grid, 32 * warps, smem, s.stream>>>(g, x, w.data, w.cols, d_cand, count, gated, d_bias, act, vec); break;
    default: exact_rows_kernel<kBF16><<<grid, 32 * warps, smem, s.stream>>>(g, x, w.data, w.cols, d_cand, count, gated, d_bias, act, vec); break;
  }
  LAUNCHED("exact_rows");
}

// ---- top-k: one block per DA-top-k shard, radix select then an ordered compaction -------------------

constexpr int kTopkThreads = 512;

// Order-preserving key; larger key = ranks higher. NaN -> 0, below everything; -0 == +0.
__device__ __forceinline__ uint32_t rank_key(float v, bool by_abs) {
  if (v != v) return 0u;
  if (by_abs) return (__float_as_uint(v) & 0x7fffffffu) + 1u;
  if (v == 0.0f) v = 0.0f;
  const uint32_t b = __float_as_uint(v);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

// Inclusive block scan of one int per thread (blockDim.x = kTopkThreads); returns the inclusive prefix,
// total in *total. Uses sh[32].
__device__ int block_scan(int v, int* sh, int* total) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  int x = v;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const int y = __shfl_up_sync(0xffffffffu, x, o);
    if (lane >= o) x += y;
  }
  __syncthreads();
  if (lane == 31) sh[warp] = x;
  __syncthreads();
  if (warp == 0) {
    int w = lane < static_cast<int>(blockDim.x >> 5) ? sh[lane] : 0;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const int y = __shfl_up_sync(0xffffffffu, w, o);
      if (lane >= o) w += y;
    }
    sh[lane] = w;
  }
  __syncthreads();
  *total = sh[(blockDim.x >> 5) - 1];
  return x + (warp > 0 ? sh[warp - 1] : 0);
}

// Shard s of n values in P shards: [lo, lo + m), keeping ks (topk_shard_range in topk.cc); off = the
// output position of its first index.
__device__ void shard_range(int64_t n, int64_t k, int64_t P, int64_t s, int64_t* lo, int64_t* m, int64_t* ks, int64_t* off) {
  int64_t o = 0;
  for (int64_t t = 0; t <= s; ++t) {
    const int64_t l = t * n / P, h = (t + 1) * n / P;
    const int64_t kt = min(k / P + (t < k % P ? 1 : 0), h - l);
    if (t == s) {
      *lo = l;
      *m = h - l;
      *ks = kt;
      *off = o;
    }
    o += kt;
  }
}

// out[off + j] = (map ? map[pos] : pos) for the chosen positions in ascending order; vals_out (if
// given) gets values[pos]. Each thread owns one contiguous chunk of the shard, so the chosen indices
// come out in order from two block-wide scans, with no sort: a radix select finds the threshold key
// T (the ks-th largest) in four 8-bit passes, then every key > T is kept, and of the keys equal to T
// the first ones in index order until ks.
__device__ void select_segment(const float* __restrict__ values, int64_t lo, int64_t m, int64_t ks, bool by_abs,
                               int32_t* __restrict__ out, int64_t off, const int32_t* __restrict__ map,
                               float* __restrict__ vals_out) {
  __shared__ int hist[256];
  __shared__ int sh[32];
  __shared__ uint32_t s_prefix;
  __shared__ int s_krem;
  if (ks <= 0) return;
  if (ks >= m) {
    for (int64_t j = threadIdx.x; j < m; j += blockDim.x) {
      const int64_t p = lo + j;
      out[off + j] = map ? map[p] : static_cast<int32_t>(p);
      if (vals_out) vals_out[off + j] = values[p];
    }
    return;
  }
  const float* v = values + lo;
  const int64_t chunk = (m + blockDim.x - 1) / blockDim.x;
  const int64_t j0 = min(m, static_cast<int64_t>(threadIdx.x) * chunk), j1 = min(m, j0 + chunk);
  // The passes below are bound by load latency, not bandwidth: a chunk of up to 16 keys (shards of
  // up to 8192 values on 512 threads: the FFN selections of 1B-class models) is loaded once into
  // registers; longer chunks are read 8 independent loads at a time.
  constexpr int kCache = 16;
  const bool cached = chunk <= kCache;
  uint32_t kc[kCache];
  if (cached) {
#pragma unroll
    for (int q = 0; q < kCache; ++q) kc[q] = j0 + q < j1 ? rank_key(v[j0 + q], by_abs) : 0u;
  }
  auto each = [&](auto&& f) {
    if (cached) {
#pragma unroll
      for (int q = 0; q < kCache; ++q)
        if (j0 + q < j1) f(j0 + q, kc[q]);
      return;
    }
    for (int64_t jb = j0; jb < j1; jb += 8) {
      uint32_t kk[8];
#pragma unroll
      for (int q = 0; q < 8; ++q) kk[q] = jb + q < j1 ? rank_key(v[jb + q], by_abs) : 0u;
#pragma unroll
      for (int q = 0; q < 8; ++q)
        if (jb + q < j1) f(jb + q, kk[q]);
    }
  };
  uint32_t prefix = 0, mask = 0;
  int krem = static_cast<int>(ks);
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int b = threadIdx.x; b < 256; b += blockDim.x) hist[b] = 0;
    __syncthreads();
    each([&](int64_t, uint32_t key) {
      if ((key & mask) == prefix) {
        // Warp-aggregated: keys crowd into few bins (one float exponent), so one atomic per bin per warp.
        const int bin = (key >> shift) & 0xff;
        const unsigned peers = __match_any_sync(__activemask(), bin);
        if ((threadIdx.x & 31) == __ffs(peers) - 1) atomicAdd(&hist[bin], __popc(peers));
      }
    });
    __syncthreads();
    if (threadIdx.x < 32) {
      // Warp 0 finds the bucket holding the krem-th largest: lane l owns bins 255-8l down to 248-8l.
      const int lane = threadIdx.x;
      int c[8], sum = 0;
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        c[i] = hist[255 - 8 * lane - i];
        sum += c[i];
      }
      int incl = sum;
#pragma unroll
      for (int o = 1; o < 32; o <<= 1) {
        const int y = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o) incl += y;
      }
      const unsigned hit = __ballot_sync(0xffffffffu, incl >= krem);
      if (lane == __ffs(hit) - 1) {
        int cum = incl - sum, i = 0;
        for (; i < 7; ++i) {
          if (cum + c[i] >= krem) break;
          cum += c[i];
        }
        s_prefix = prefix | (static_cast<uint32_t>(255 - 8 * lane - i) << shift);
        s_krem = krem - cum;
      }
    }
    __syncthreads();
    prefix = s_prefix;
    krem = s_krem;
    mask |= 0xffu << shift;
  }
  const uint32_t T = prefix;
  int gt = 0, eq = 0;
  each([&](int64_t, uint32_t key) {
    gt += key > T;
    eq += key == T;
  });
  int total;
  const int eq_before = block_scan(eq, sh, &total) - eq;
  const int take_eq = max(0, min(eq, krem - eq_before));
  const int take = gt + take_eq;
  int64_t o = off + block_scan(take, sh, &total) - take;
  int seen = 0;
  each([&](int64_t j, uint32_t key) {
    if (key > T || (key == T && seen++ < take_eq)) {
      const int64_t p = lo + j;
      out[o] = map ? map[p] : static_cast<int32_t>(p);
      if (vals_out) vals_out[o] = values[p];
      ++o;
    }
  });
}

// One block per DA-top-k shard (topk_shard_range's shards) of up to kTopkDirect values.
__global__ void __launch_bounds__(kTopkThreads) topk_kernel(const float* __restrict__ values, int64_t n, int64_t k,
                                                           int64_t P, bool by_abs, int32_t* __restrict__ out,
                                                           const int32_t* __restrict__ map, float* __restrict__ vals_out) {
  int64_t lo, m, ks, off;
  shard_range(n, k, P, blockIdx.x, &lo, &m, &ks, &off);
  select_segment(values, lo, m, ks, by_abs, out, off, map, vals_out);
}

// Longer shards in two stages. Stage 1: block (b, s) keeps the top-min(ks, its size) of piece b
// (kTopkPiece values) of shard s, as (position, value) in ascending order at stage offset
// base_s + b * min(ks, kTopkPiece); every piece but the last is full, so each shard's survivors are
// contiguous and ascending. Stage 2 selects the shard's ks among its survivors. The two give the
// one-stage result: a value a piece drops has ks others in that piece ranked ahead of it.
constexpr int64_t kTopkPiece = 4096;

__device__ int64_t survivors(int64_t m, int64_t ks) {
  const int64_t pieces = (m + kTopkPiece - 1) / kTopkPiece;
  return pieces == 0 ? 0 : (pieces - 1) * min(ks, kTopkPiece) + min(ks, m - (pieces - 1) * kTopkPiece);
}

__device__ int64_t survivor_base(int64_t n, int64_t k, int64_t P, int64_t s) {
  int64_t base = 0;
  for (int64_t t = 0; t < s; ++t) {
    int64_t lo, m, ks, off;
    shard_range(n, k, P, t, &lo, &m, &ks, &off);
    base += survivors(m, ks);
  }
  return base;
}

__global__ void __launch_bounds__(kTopkThreads) topk_stage1_kernel(const float* __restrict__ values, int64_t n, int64_t k,
                                                                  int64_t P, bool by_abs, int32_t* __restrict__ st_idx,
                                                                  float* __restrict__ st_val) {
  const int64_t s = blockIdx.y, b = blockIdx.x;
  int64_t lo, m, ks, off;
  shard_range(n, k, P, s, &lo, &m, &ks, &off);
  const int64_t plo = b * kTopkPiece;
  if (plo >= m) return;
  const int64_t pm = min(kTopkPiece, m - plo);
  const int64_t o = survivor_base(n, k, P, s) + b * min(ks, kTopkPiece);
  select_segment(values, lo + plo, pm, min(ks, pm), by_abs, st_idx, o, nullptr, st_val);
}

__global__ void __launch_bounds__(kTopkThreads) topk_stage2_kernel(const int32_t* __restrict__ st_idx,
                                                                  const float* __restrict__ st_val, int64_t n, int64_t k,
                                                                  int64_t P, bool by_abs, int32_t* __restrict__ out,
                                                                  const int32_t* __restrict__ map, float* __restrict__ vals_out) {
  const int64_t s = blockIdx.x;
  int64_t lo, m, ks, off;
  shard_range(n, k, P, s, &lo, &m, &ks, &off);
  const int64_t base = survivor_base(n, k, P, s);
  // Positions in the survivor list map to value indices through st_idx, then through `map`.
  select_segment(st_val, base, survivors(m, ks), ks, by_abs, out, off, st_idx, vals_out);
  if (map) {
    __syncthreads();
    for (int64_t j = threadIdx.x; j < ks; j += blockDim.x) out[off + j] = map[out[off + j]];
  }
}

int64_t topk_count(int64_t n, int64_t k, int64_t P) {
  if (n <= 0 || k <= 0) return 0;
  if (k >= n) return n;
  int64_t total = 0;
  for (int64_t s = 0; s < P; ++s) {
    const int64_t lo = s * n / P, hi = (s + 1) * n / P;
    total += std::min(k / P + (s < k % P ? 1 : 0), hi - lo);
  }
  return total;
}

// Device top-k into d_out (and the gathered values / mapped indices); returns the count.
int64_t topk_device(const float* values, int64_t n, int64_t k, bool by_abs, int64_t P, int32_t* d_out,
                    const int32_t* d_map, float* d_vals) {
  State& s = st();
  const int64_t count = topk_count(n, k, P);
  if (count == 0) return 0;
  if (k >= n) {
    k = n;
    P = 1;  // every index, one block
  }
  const int64_t longest = (n + P - 1) / P;
  if (k >= n || longest <= 2 * kTopkPiece) {
    topk_kernel<<<static_cast<unsigned>(P), kTopkThreads, 0, s.stream>>>(values, n, k, P, by_abs, d_out, d_map, d_vals);
    LAUNCHED("topk");
    return count;
  }
  unsigned char* st_buf = scratch(kSlotTopk, static_cast<size_t>(n) * 8 + 256);
  int32_t* st_idx = reinterpret_cast<int32_t*>(st_buf);
  float* st_val = reinterpret_cast<float*>(st_buf + ((static_cast<size_t>(n) * 4 + 255) & ~size_t{255}));
  const dim3 g1(static_cast<unsigned>((longest + kTopkPiece - 1) / kTopkPiece), static_cast<unsigned>(P));
  topk_stage1_kernel<<<g1, kTopkThreads, 0, s.stream>>>(values, n, k, P, by_abs, st_idx, st_val);
  LAUNCHED("topk stage 1");
  topk_stage2_kernel<<<static_cast<unsigned>(P), kTopkThreads, 0, s.stream>>>(st_idx, st_val, n, k, P, by_abs, d_out, d_map,
                                                                              d_vals);
  LAUNCHED("topk stage 2");
  return count;
}

// ---- greedy argmax on the device ---------------------------------------------------------------------

constexpr int kArgmaxBlocks = 32;

// (rank key, inverted index): the larger wins, so ties go to the lower index and NaN (key 0) never
// wins; sampler.ts's argmax, except that it keeps x[0] when x[0] is NaN (applied at the end).
__device__ __forceinline__ unsigned long long argmax_key(float v, int64_t i) {
  return (static_cast<unsigned long long>(rank_key(v, false)) << 32) | (0xffffffffu - static_cast<uint32_t>(i));
}
__device__ __forceinline__ unsigned long long max_u64(unsigned long long a, unsigned long long b) { return a > b ? a : b; }

__device__ unsigned long long block_max_u64(unsigned long long v, unsigned long long* sh) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = max_u64(v, __shfl_xor_sync(0xffffffffu, v, o));
  const int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
  if (lane == 0) sh[w] = v;
  __syncthreads();
  v = lane < static_cast<int>(blockDim.x >> 5) ? sh[lane] : 0ull;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = max_u64(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Each block reduces a strided share of x to its best key; the block that arrives last reduces those
// and writes the index to out[0] (state: kArgmaxBlocks keys, then the arrival counter).
__global__ void __launch_bounds__(256) argmax_kernel(const float* __restrict__ x, int64_t n, int32_t* out,
                                                    unsigned long long* state) {
  __shared__ unsigned long long sh[32];
  __shared__ bool last;
  unsigned long long best = 0;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x)
    best = max_u64(best, argmax_key(x[i], i));
  best = block_max_u64(best, sh);
  unsigned* counter = reinterpret_cast<unsigned*>(state + kArgmaxBlocks);
  if (threadIdx.x == 0) {
    state[blockIdx.x] = best;
    __threadfence();
    last = atomicAdd(counter, 1u) == gridDim.x - 1;
  }
  __syncthreads();
  if (!last) return;
  __threadfence();
  unsigned long long v = threadIdx.x < gridDim.x ? __ldcg(state + threadIdx.x) : 0ull;
  __syncthreads();
  v = block_max_u64(v, sh);
  if (threadIdx.x == 0) {
    *counter = 0;
    const float x0 = x[0];
    out[0] = x0 != x0 ? 0 : static_cast<int32_t>(0xffffffffu - static_cast<uint32_t>(v & 0xffffffffull));
  }
}

// ---- bandwidth probe -----------------------------------------------------------------------------

__global__ void read_sum_kernel(const uint4* p, int64_t n, unsigned* sink) {
  uint32_t acc = 0;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    const uint4 v = ld_stream(p + i);
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x9e3779b9u) atomicAdd(sink, 1u);  // keeps the loads alive
}

__global__ void fill_kernel(uint32_t* p, int64_t n) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x)
    p[i] = static_cast<uint32_t>(i * 2654435761u);
}

}  // namespace

// ---- API ---------------------------------------------------------------------------------------------

bool compiled() { return true; }

std::vector<DeviceInfo> devices(std::string* why) {
  std::vector<DeviceInfo> out;
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    // Without any NVIDIA driver the runtime reports an "insufficient" one: say what it means.
    if (why)
      *why = e == cudaErrorInsufficientDriver
                 ? "no NVIDIA driver that supports CUDA 13 was found (cudaErrorInsufficientDriver)"
                 : std::string("no usable CUDA device: ") + cudaGetErrorString(e);
    cudaGetLastError();
    return out;
  }
  if (n == 0 && why) *why = "the CUDA driver reports no device";
  for (int i = 0; i < n; ++i) {
    cudaDeviceProp p{};
    if (cudaGetDeviceProperties(&p, i) != cudaSuccess) continue;
    DeviceInfo d{};
    d.index = i;
    d.name = p.name;
    d.major = p.major;
    d.minor = p.minor;
    d.sms = p.multiProcessorCount;
    d.total_bytes = p.totalGlobalMem;
    d.l2_bytes = static_cast<size_t>(p.l2CacheSize);
    int clock_khz = 0, bus = 0;
    cudaDeviceGetAttribute(&clock_khz, cudaDevAttrMemoryClockRate, i);
    cudaDeviceGetAttribute(&bus, cudaDevAttrGlobalMemoryBusWidth, i);
    d.peak_gbps = 2.0 * clock_khz * 1e3 * (bus / 8.0) / 1e9;
    out.push_back(d);
  }
  return out;
}

void use_device(int index) {
  std::lock_guard<std::mutex> lock(g_init);
  if (g.device == index) return;
  if (g.device >= 0) throw std::runtime_error("CUDA: the backend already uses device " + std::to_string(g.device));
  CK(cudaSetDevice(index));
  CK(cudaStreamCreateWithFlags(&g.stream, cudaStreamNonBlocking));
  cudaDeviceProp p{};
  CK(cudaGetDeviceProperties(&p, index));
  g.sms = p.multiProcessorCount;
  g.ring_size = size_t{8} << 20;
  CK(cudaHostAlloc(reinterpret_cast<void**>(&g.ring), g.ring_size, cudaHostAllocDefault));
  CK(cudaMalloc(&g.d_ring, g.ring_size));
  for (auto& e : g.ev) CK(cudaEventCreate(&e));
  for (auto& e : g.marks) CK(cudaEventCreate(&e));
  CK(cudaHostAlloc(reinterpret_cast<void**>(&g.h_step), 64, cudaHostAllocDefault));
  CK(cudaMalloc(&g.d_step, 64));
  CK(cudaMalloc(&g.d_argmax, 16));
  CK(cudaMalloc(&g.d_argmax_state, (kArgmaxBlocks + 1) * 8));
  CK(cudaMemset(g.d_argmax_state, 0, (kArgmaxBlocks + 1) * 8));
  g.h_step[0] = g.h_step[1] = 0;
  g.device = index;
}

void* alloc(size_t bytes) {
  no_capture("alloc");
  State& s = st();
  void* p = nullptr;
  CK(cudaMalloc(&p, std::max<size_t>(bytes, 16)));
  CK(cudaMemsetAsync(p, 0, std::max<size_t>(bytes, 16), s.stream));
  return p;
}

void release(void* p) {
  if (!p || g.device < 0) return;
  cudaStreamSynchronize(g.stream);
  cudaFree(p);
}

void upload(void* d_dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
  no_capture("write");
  State& s = st();
  if (bytes <= s.ring_size / 4) {
    ring_copy(d_dst, src, bytes);
    return;
  }
  CK(cudaStreamSynchronize(s.stream));
  CK(cudaMemcpy(d_dst, src, bytes, cudaMemcpyHostToDevice));
}

void download(void* dst, const void* d_src, size_t bytes) {
  if (bytes == 0) return;
  no_capture("read");
  g.graph_pending = false;
  State& s = st();
  if (bytes <= (size_t{64} << 20)) {
    unsigned char* h = host_out(bytes);
    CK(cudaMemcpyAsync(h, d_src, bytes, cudaMemcpyDeviceToHost, s.stream));
    CK(cudaStreamSynchronize(s.stream));
    std::memcpy(dst, h, bytes);
    return;
  }
  CK(cudaStreamSynchronize(s.stream));
  CK(cudaMemcpy(dst, d_src, bytes, cudaMemcpyDeviceToHost));
}

void synchronize() {
  no_capture("synchronize");
  CK(cudaStreamSynchronize(st().stream));
  g.graph_pending = false;
}

// ---- graphs ----

struct Graph {
  cudaGraphExec_t exec;
  uint64_t epoch;
};

void set_step(int32_t id, int32_t pos) {
  State& s = st();
  if (s.graph_pending) synchronize();  // the last replay must have copied the old values first
  s.h_step[0] = id;
  s.h_step[1] = pos;
}

bool capturing() { return g.capturing; }

void graph_begin() {
  State& s = st();
  no_capture("graph_begin");
  // Relaxed: the recording thread may still make calls that are unsafe during a capture elsewhere.
  CK(cudaStreamBeginCapture(s.stream, cudaStreamCaptureModeRelaxed));
  s.capturing = true;
  const cudaError_t e = cudaMemcpyAsync(s.d_step, s.h_step, 8, cudaMemcpyHostToDevice, s.stream);
  if (e != cudaSuccess) {
    graph_abort();
    check(e, "graph_begin: step copy");
  }
}

Graph* graph_end() {
  State& s = st();
  if (!s.capturing) throw std::runtime_error("CUDA: graph_end without graph_begin");
  s.capturing = false;
  cudaGraph_t graph = nullptr;
  CK(cudaStreamEndCapture(s.stream, &graph));
  cudaGraphExec_t exec = nullptr;
  const cudaError_t e = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);
  check(e, "cudaGraphInstantiate");
  return new Graph{exec, s.epoch};
}

void graph_abort() {
  State& s = st();
  if (!s.capturing) return;
  s.capturing = false;
  cudaGraph_t graph = nullptr;
  cudaStreamEndCapture(s.stream, &graph);
  if (graph) cudaGraphDestroy(graph);
  cudaGetLastError();  // an invalidated capture leaves an error behind
}

bool graph_launch(Graph* gr) {
  State& s = st();
  no_capture("graph_launch");
  if (gr->epoch != s.epoch) return false;
  CK(cudaGraphLaunch(gr->exec, s.stream));
  s.graph_pending = true;
  return true;
}

void graph_free(Graph* gr) {
  if (!gr) return;
  if (g.device >= 0) {
    cudaStreamSynchronize(g.stream);
    cudaGraphExecDestroy(gr->exec);
  }
  delete gr;
}

void mark(int i) {
  if (i < 0 || i >= 1024) throw std::runtime_error("CUDA: mark index out of range");
  record(st().marks[i]);
}

double mark_ms(int i, int j) {
  if (i < 0 || i >= 1024 || j < 0 || j >= 1024) throw std::runtime_error("CUDA: mark index out of range");
  float ms = 0;
  CK(cudaEventElapsedTime(&ms, st().marks[i], st().marks[j]));
  return ms;
}

void copy2d(float* dst, int64_t dst_stride, const float* src, int64_t src_stride, int64_t rows, int64_t width) {
  if (rows <= 0 || width <= 0) return;
  CK(cudaMemcpy2DAsync(dst, dst_stride * 4, src, src_stride * 4, width * 4, rows, cudaMemcpyDeviceToDevice, st().stream));
}

void matmul(float* y, const float* x, const DMat& w, int64_t n, const DMat* bias, bool accumulate) {
  if (n <= 0) return;
  if (!w.transposed) {
    gemv_dispatch(y, w.rows, x, w, nullptr, w.rows, n, bias, accumulate);
    return;
  }
  // Stored [cols][rows]: each token is a column accumulation over every stored row.
  for (int64_t t = 0; t < n; ++t) acc_cols(y + t * w.rows, x + t * w.cols, w, nullptr, w.cols, bias, accumulate);
}

namespace {

// matmul_many's products in one launch: part p owns blocks [first[p], first[p + 1]).
struct ManyParts {
  const void* w[4];
  float* y[4];
  const void* bias[4];
  int bias_dt[4];
  int64_t rows[4];
  int64_t first[5];
  int count;
};

template <int DT>
__global__ void gemv_many_kernel(ManyParts parts, const float* __restrict__ x, int64_t cols) {
  extern __shared__ float xs[];
  stage_x(xs, x, cols);
  int p = 0;
  while (p + 1 < parts.count && blockIdx.x >= parts.first[p + 1]) ++p;
  constexpr int esz = DT == kF32 ? 4 : 2;
  const int64_t r = (static_cast<int64_t>(blockIdx.x) - parts.first[p]) * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (r >= parts.rows[p]) return;
  const uint4* rows[1] = {reinterpret_cast<const uint4*>(static_cast<const unsigned char*>(parts.w[p]) + r * cols * esz)};
  float acc[1];
  warp_rows_dot<DT, 1>(rows, cols / Vec<DT>::E, xs, acc);
  if ((threadIdx.x & 31) == 0)
    parts.y[p][r] = acc[0] + (parts.bias[p] ? load_elem(parts.bias_dt[p], parts.bias[p], r) : 0.0f);
}

// act(gate . x + bg) * (up . x + bu), one warp per neuron, both rows' loads in flight together.
template <int DT>
__global__ void gated_gemv_kernel(float* __restrict__ y, const float* __restrict__ x, const void* __restrict__ G,
                                  const void* __restrict__ Up, int64_t rows, int64_t cols, const void* gb, int gb_dt,
                                  const void* ub, int ub_dt, int act) {
  extern __shared__ float xs[];
  stage_x(xs, x, cols);
  constexpr int esz = DT == kF32 ? 4 : 2;
  const int64_t r = static_cast<int64_t>(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (r >= rows) return;
  const uint4* wr[2] = {reinterpret_cast<const uint4*>(static_cast<const unsigned char*>(G) + r * cols * esz),
                        reinterpret_cast<const uint4*>(static_cast<const unsigned char*>(Up) + r * cols * esz)};
  float acc[2];
  warp_rows_dot<DT, 2>(wr, cols / Vec<DT>::E, xs, acc);
  if ((threadIdx.x & 31) == 0) {
    const float g = acc[0] + (gb ? load_elem(gb_dt, gb, r) : 0.0f);
    const float u = acc[1] + (ub ? load_elem(ub_dt, ub, r) : 0.0f);
    y[r] = apply_act(g, act) * u;
  }
}

// Whether a product can take the one-launch decode kernels: not transposed, rows 16-byte aligned,
// x small enough for shared memory.
bool vector_rows(const DMat& w) {
  const int esz = w.dtype == kF32 ? 4 : 2;
  const int E = w.dtype == kF32 ? 4 : 8;
  return !w.transposed && (w.cols * esz) % 16 == 0 && w.cols % E == 0 &&
         (reinterpret_cast<uintptr_t>(w.data) & 15) == 0 && w.cols <= 8192;
}

}  // namespace

void matmul_many(int count, float* const* ys, const float* x, const DMat* const* ws, const DMat* const* biases, int64_t n) {
  bool one = n == 1 && count >= 1 && count <= 4;
  for (int i = 0; one && i < count; ++i)
    one = vector_rows(*ws[i]) && ws[i]->dtype == ws[0]->dtype && ws[i]->cols == ws[0]->cols;
  if (!one) {
    for (int i = 0; i < count; ++i) matmul(ys[i], x, *ws[i], n, biases[i]);
    return;
  }
  constexpr int warps = 4;
  ManyParts parts{};
  parts.count = count;
  parts.first[0] = 0;
  for (int i = 0; i < count; ++i) {
    parts.w[i] = ws[i]->data;
    parts.y[i] = ys[i];
    parts.bias[i] = biases[i] ? biases[i]->data : nullptr;
    parts.bias_dt[i] = biases[i] ? biases[i]->dtype : 0;
    parts.rows[i] = ws[i]->rows;
    parts.first[i + 1] = parts.first[i] + (ws[i]->rows + warps - 1) / warps;
  }
  const int64_t cols = ws[0]->cols;
  const size_t smem = static_cast<size_t>(cols) * 4;
  const unsigned grid = static_cast<unsigned>(parts.first[count]);
  switch (ws[0]->dtype) {
    case kF32: gemv_many_kernel<kF32><<<grid, 32 * warps, smem, st().stream>>>(parts, x, cols); break;
    case kF16: gemv_many_kernel<kF16><<<grid, 32 * warps, smem, st().stream>>>(parts, x, cols); break;
    default: gemv_many_kernel<kBF16><<<grid, 32 * warps, smem, st().stream>>>(parts, x, cols); break;
  }
  LAUNCHED("matmul_many");
}

void gated_matmul(float* y, const float* x, const DMat& gate, const DMat& up, const DMat* gate_bias, const DMat* up_bias,
                  int64_t n, int act, float* scratch_up) {
  if (n <= 0) return;
  const bool one = n == 1 && vector_rows(gate) && vector_rows(up) && gate.dtype == up.dtype && gate.cols == up.cols &&
                   gate.rows == up.rows;
  if (!one) {
    matmul(y, x, gate, n, gate_bias);
    matmul(scratch_up, x, up, n, up_bias);
    gated_act(y, scratch_up, n * gate.rows, act);
    return;
  }
  constexpr int warps = 8;
  const size_t smem = static_cast<size_t>(gate.cols) * 4;
  const unsigned grid = grid_for(gate.rows, warps);
  const void* gb = gate_bias ? gate_bias->data : nullptr;
  const void* ub = up_bias ? up_bias->data : nullptr;
  const int gbt = gate_bias ? gate_bias->dtype : 0, ubt = up_bias ? up_bias->dtype : 0;
  switch (gate.dtype) {
    case kF32: gated_gemv_kernel<kF32><<<grid, 32 * warps, smem, st().stream>>>(y, x, gate.data, up.data, gate.rows, gate.cols, gb, gbt, ub, ubt, act); break;
    case kF16: gated_gemv_kernel<kF16><<<grid, 32 * warps, smem, st().stream>>>(y, x, gate.data, up.data, gate.rows, gate.cols, gb, gbt, ub, ubt, act); break;
    default: gated_gemv_kernel<kBF16><<<grid, 32 * warps, smem, st().stream>>>(y, x, gate.data, up.data, gate.rows, gate.cols, gb, gbt, ub, ubt, act); break;
  }
  LAUNCHED("gated_matmul");
}

void embed(float* y, const DMat& w, const int32_t* ids, int64_t n, bool from_step, float scale) {
  if (n <= 0) return;
  const int32_t* d_ids = from_step ? st().d_step : stage(ids, n);
  const dim3 grid(grid_for(w.cols, 256), static_cast<unsigned>(n));
  embed_kernel<<<grid, 256, 0, st().stream>>>(y, w.data, w.dtype, w.cols, d_ids, n, scale);
  LAUNCHED("embed");
}

void rms_norm(float* y, const float* x, const DMat& g, int64_t n, int64_t dim, float eps) {
  if (n <= 0) return;
  rms_norm_kernel<<<static_cast<unsigned>(n), 512, 0, st().stream>>>(y, x, g.data, g.dtype, dim, eps);
  LAUNCHED("rms_norm");
}

void layer_norm(float* y, const float* x, const DMat& g, const DMat& b, int64_t n, int64_t dim, float eps) {
  if (n <= 0) return;
  layer_norm_kernel<<<static_cast<unsigned>(n), 512, 0, st().stream>>>(y, x, g.data, g.dtype, b.data, b.dtype, dim, eps);
  LAUNCHED("layer_norm");
}

void rope(float* x, int64_t n, int64_t heads, int64_t head_dim, const int32_t* positions, const float* inv_freq,
          int64_t half, float factor, bool from_step) {
  if (n <= 0 || half <= 0) return;
  if (half > 1024) throw std::runtime_error("CUDA: rope supports up to 1024 frequency pairs");
  const float* d_inv = constant(inv_freq, half);
  const int32_t* d_pos = from_step ? st().d_step + 1 : stage(positions, n);
  const dim3 grid(static_cast<unsigned>(std::min<int64_t>(heads, 64)), static_cast<unsigned>(n));
  rope_kernel<<<grid, static_cast<unsigned>((half + 31) / 32 * 32), 0, st().stream>>>(x, heads, head_dim, d_pos, d_inv, half, factor);
  LAUNCHED("rope");
}

void cache_write(float* kc, float* vc, const float* k, const float* v, int64_t n, int64_t kv_heads, int64_t head_dim,
                 int64_t pos0, int64_t capacity, bool from_step) {
  const int64_t total = n * kv_heads * head_dim;
  if (total <= 0) return;
  const int32_t p0 = static_cast<int32_t>(pos0);
  const int32_t* d_pos0 = from_step ? st().d_step + 1 : stage(&p0, 1);
  cache_write_kernel<<<elementwise_grid(total), 256, 0, st().stream>>>(kc, vc, k, v, n, kv_heads, head_dim, d_pos0, capacity);
  LAUNCHED("cache_write");
}

void rope_cache_write(float* q, float* k, const float* v, float* kc, float* vc, int64_t n, int64_t heads, int64_t kv_heads,
                      int64_t head_dim, const int32_t* positions, const float* inv_freq, int64_t half, float factor,
                      int64_t pos0, int64_t capacity, bool from_step) {
  if (n <= 0) return;
  if (half > 1024) throw std::runtime_error("CUDA: rope supports up to 1024 frequency pairs");
  const float* d_inv = inv_freq && half > 0 ? constant(inv_freq, half) : nullptr;
  const int32_t p0 = static_cast<int32_t>(pos0);
  const int32_t* d_pos = from_step ? st().d_step + 1 : (d_inv ? stage(positions, n) : nullptr);
  const int32_t* d_pos0 = from_step ? st().d_step + 1 : stage(&p0, 1);
  const dim3 grid(static_cast<unsigned>(heads + kv_heads), static_cast<unsigned>(n));
  const unsigned threads = static_cast<unsigned>(std::min<int64_t>(256, std::max<int64_t>(32, (head_dim / 2 + 31) / 32 * 32)));
  rope_cache_kernel<<<grid, threads, 0, st().stream>>>(q, k, v, kc, vc, heads, kv_heads, head_dim, d_pos, d_inv, half,
                                                       factor, d_pos0, capacity);
  LAUNCHED("rope_cache_write");
}

void attention(float* out, const float* q, const float* kc, const float* vc, int64_t n, int64_t heads,
               int64_t kv_heads, int64_t head_dim, int64_t pos0, int64_t capacity, float scale, bool from_step,
               int64_t window, float softcap) {
  if (n <= 0) return;
  if (head_dim > 256) throw std::runtime_error("CUDA: attention supports head_dim up to 256");
  State& s = st();
  const int32_t p0 = static_cast<int32_t>(pos0);
  const int32_t* d_pos0 = from_step ? s.d_step + 1 : stage(&p0, 1);
  // Splits by the cache's capacity (fixed for a recorded step): about 128 positions per block at full
  // length, so a 1B model's 32 heads give the chip 256 blocks at capacity 1024.
  const int64_t S = std::min<int64_t>(32, std::max<int64_t>(1, (capacity + 127) / 128));
  float* part = reinterpret_cast<float*>(scratch(kSlotAttn, static_cast<size_t>(n * heads * S * (head_dim + 2)) * 4));
  unsigned* counters = reinterpret_cast<unsigned*>(scratch(kSlotAttnCounters, static_cast<size_t>(n * heads) * 4));
  const dim3 grid(static_cast<unsigned>(heads), static_cast<unsigned>(n), static_cast<unsigned>(S));
  const int64_t group = heads / kv_heads;
  if (head_dim <= 32)
    attention_kernel<1><<<grid, 32 * kAttnWarps, 0, s.stream>>>(out, q, kc, vc, heads, group, head_dim, d_pos0, capacity, scale, window, softcap, part, counters);
  else if (head_dim <= 64)
    attention_kernel<2><<<grid, 32 * kAttnWarps, 0, s.stream>>>(out, q, kc, vc, heads, group, head_dim, d_pos0, capacity, scale, window, softcap, part, counters);
  else if (head_dim <= 128)
    attention_kernel<4><<<grid, 32 * kAttnWarps, 0, s.stream>>>(out, q, kc, vc, heads, group, head_dim, d_pos0, capacity, scale, window, softcap, part, counters);
  else
    attention_kernel<8><<<grid, 32 * kAttnWarps, 0, s.stream>>>(out, q, kc, vc, heads, group, head_dim, d_pos0, capacity, scale, window, softcap, part, counters);
  LAUNCHED("attention");
}

void gated_act(float* gate, const float* up, int64_t count, int act) {
  if (count <= 0) return;
  gated_act_kernel<<<elementwise_grid(count), 256, 0, st().stream>>>(gate, up, count, act);
  LAUNCHED("gated_act");
}

void activate(float* x, int64_t count, int act) {
  if (count <= 0) return;
  activate_kernel<<<elementwise_grid(count), 256, 0, st().stream>>>(x, count, act);
  LAUNCHED("activate");
}

void softcap(float* x, int64_t count, float cap) {
  if (count <= 0) return;
  softcap_kernel<<<elementwise_grid(count), 256, 0, st().stream>>>(x, count, cap);
  LAUNCHED("softcap");
}

void add(float* y, const float* x, int64_t count) {
  if (count <= 0) return;
  add_kernel<<<elementwise_grid(count), 256, 0, st().stream>>>(y, x, count);
  LAUNCHED("add");
}

void gather(float* y, const float* x, const int32_t* idx, int64_t count) {
  if (count <= 0) return;
  const int32_t* d_idx = stage(idx, count);
  gather_kernel<<<elementwise_grid(count), 256, 0, st().stream>>>(y, x, d_idx, count);
  LAUNCHED("gather");
}

void quant_matvec(float* y, const float* x, const DQuant& q) { quant_scores(y, x, q, nullptr, -1); }

void matvec_rows(float* y, const float* x, const DMat& w, const int32_t* idx, int64_t count) {
  if (count <= 0) return;
  const int32_t* d_idx = stage(idx, count);
  gemv_dispatch(y, count, x, w, d_idx, count, 1, nullptr);
}

void accumulate_cols(float* y, const float* a, const DMat& w, const int32_t* idx, int64_t count) {
  const int32_t* d_idx = stage(idx, count);
  acc_cols(y, a, w, d_idx, count, nullptr);
}

int64_t topk(const float* values, int64_t n, int64_t k, bool by_abs, int64_t shards, int32_t* out) {
  no_capture("topk");
  const int64_t count = topk_count(n, k, shards);
  if (count == 0) return 0;
  int32_t* d_out = reinterpret_cast<int32_t*>(scratch(kSlotLists, static_cast<size_t>(count) * 4));
  topk_device(values, n, k, by_abs, shards, d_out, nullptr, nullptr);
  download(out, d_out, static_cast<size_t>(count) * 4);
  return count;
}

void argmax(const float* x, int64_t n) {
  if (n <= 0) throw std::runtime_error("CUDA: argmax of no values");
  State& s = st();
  argmax_kernel<<<kArgmaxBlocks, 256, 0, s.stream>>>(x, n, s.d_argmax, s.d_argmax_state);
  LAUNCHED("argmax");
}

int32_t read_argmax() {
  int32_t id = 0;
  download(&id, st().d_argmax, 4);
  return id;
}

namespace {

// The slot's pinned list area (at least `bytes`) and events, made outside recordings.
State::Slot& slot_for(int slot, size_t bytes) {
  State& s = st();
  if (slot < 0 || slot >= 1024) throw std::runtime_error("CUDA: slot out of range");
  State::Slot& sl = s.slots[slot];
  if (!sl.ev[0]) {
    no_capture("a new result slot");
    for (auto& e : sl.ev) CK(cudaEventCreate(&e));
  }
  if (bytes > sl.bytes) {
    no_capture("growing a result slot");
    CK(cudaStreamSynchronize(s.stream));
    if (sl.host) CK(cudaFreeHost(sl.host));
    sl.bytes = std::max(bytes, size_t{4096});
    CK(cudaHostAlloc(reinterpret_cast<void**>(&sl.host), sl.bytes, cudaHostAllocDefault));
  }
  return sl;
}

__global__ void fill_scatter_kernel(float* y, int64_t n, float fill, const int32_t* idx, const float* vals, int64_t count) {
  // One block: fill, then scatter (the block barrier orders the two).
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) y[i] = fill;
  __syncthreads();
  for (int64_t i = threadIdx.x; i < count; i += blockDim.x) y[idx[i]] = vals[i];
}

}  // namespace

void hire_ffn(HireFfnArgs& a) {
  State& s = st();
  const int64_t F = a.pred.rows;
  const int64_t nc = a.kp >= F ? F : topk_count(F, a.kp, a.shards);
  const int64_t kk = std::min(a.k, nc);
  const int64_t ns = topk_count(nc, kk, a.shards);
  State::Slot& sl = slot_for(a.slot, static_cast<size_t>(nc + ns) * 4);
  unsigned char* base = scratch(kSlotLists, static_cast<size_t>((nc + ns) * 4 + nc * 4 + 512));
  int32_t* d_cand = reinterpret_cast<int32_t*>(base);
  int32_t* d_sel = d_cand + nc;
  float* d_g = reinterpret_cast<float*>(((reinterpret_cast<uintptr_t>(d_sel + ns) + 255) & ~uintptr_t{255}));

  record(sl.ev[0]);
  quant_scores(a.scores, a.x, a.pred, a.bias_in, a.act);
  if (a.kp >= F)
    topk_device(a.scores, F, F, true, 1, d_cand, nullptr, nullptr);  // every neuron, in order
  else
    topk_device(a.scores, F, a.kp, true, a.shards, d_cand, nullptr, nullptr);
  record(sl.ev[1]);
  exact_rows(d_g, a.x, a.rows, d_cand, nc, a.gated, a.bias_in, a.act);
  // The candidate list is in shard order, so sharding it at the same boundaries keeps each shard's
  // second selection inside its own neurons (as the CPU op does).
  topk_device(d_g, nc, kk, true, a.shards, d_sel, d_cand, a.a_sel);
  record(sl.ev[2]);
  acc_cols(a.y, a.a_sel, a.down, d_sel, ns, nullptr);
  record(sl.ev[3]);
  // Both lists (adjacent) to the slot's pinned area, for hire_results.
  CK(cudaMemcpyAsync(sl.host, d_cand, static_cast<size_t>(nc + ns) * 4, cudaMemcpyDeviceToHost, s.stream));
  a.n_cand = nc;
  a.n_sel = ns;
}

void hire_results(int slot, int32_t* cand, int64_t n_cand, int32_t* sel, int64_t n_sel, double ms[3]) {
  State& s = st();
  if (slot < 0 || slot >= 1024 || !s.slots[slot].ev[0]) throw std::runtime_error("CUDA: hire_results of an unused slot");
  State::Slot& sl = s.slots[slot];
  if (static_cast<size_t>(n_cand + n_sel) * 4 > sl.bytes) throw std::runtime_error("CUDA: hire_results: counts exceed the slot");
  if (cand) std::memcpy(cand, sl.host, static_cast<size_t>(n_cand) * 4);
  if (sel) std::memcpy(sel, sl.host + n_cand, static_cast<size_t>(n_sel) * 4);
  for (int i = 0; i < 3; ++i) {
    float t = 0;
    CK(cudaEventElapsedTime(&t, sl.ev[i], sl.ev[i + 1]));
    ms[i] = t;
  }
}

void hire_head(HireHeadArgs& a) {
  State& s = st();
  const int64_t V = a.pred.rows;
  const int64_t nc = a.kp >= V ? V : topk_count(V, a.kp, a.shards);
  const int64_t kk = std::min(a.k, nc);
  const int64_t ns = topk_count(nc, kk, a.shards);
  State::Slot& sl = slot_for(a.slot, 16);
  unsigned char* base = scratch(kSlotLists, static_cast<size_t>((nc + ns) * 8 + nc * 4 + 1024));
  int32_t* d_cand = reinterpret_cast<int32_t*>(base);
  int32_t* d_sel = d_cand + nc;
  float* d_g = reinterpret_cast<float*>(((reinterpret_cast<uintptr_t>(d_sel + ns) + 255) & ~uintptr_t{255}));
  float* d_vals = reinterpret_cast<float*>(((reinterpret_cast<uintptr_t>(d_g + nc) + 255) & ~uintptr_t{255}));

  record(sl.ev[0]);
  quant_scores(a.scores, a.x, a.pred, nullptr, -1);
  if (a.kp >= V)
    topk_device(a.scores, V, V, false, 1, d_cand, nullptr, nullptr);
  else
    topk_device(a.scores, V, a.kp, false, a.shards, d_cand, nullptr, nullptr);
  record(sl.ev[1]);
  gemv_dispatch(d_g, nc, a.x, a.head, d_cand, nc, 1, nullptr);
  topk_device(d_g, nc, kk, false, a.shards, d_sel, d_cand, d_vals);
  record(sl.ev[2]);
  fill_scatter_kernel<<<1, 1024, 0, s.stream>>>(a.logits, V, -INFINITY, d_sel, d_vals, ns);
  LAUNCHED("hire_head scatter");
  record(sl.ev[3]);
  a.n_cand = nc;
  a.n_sel = ns;
}

double read_bandwidth(size_t bytes, int reps) {
  no_capture("read_bandwidth");
  State& s = st();
  bytes &= ~size_t{15};
  void* buf = nullptr;
  unsigned* sink = nullptr;
  CK(cudaMalloc(&buf, bytes));
  CK(cudaMalloc(&sink, 4));
  fill_kernel<<<8 * s.sms, 256, 0, s.stream>>>(static_cast<uint32_t*>(buf), static_cast<int64_t>(bytes / 4));
  LAUNCHED("fill");
  double best = 0;
  for (int r = 0; r < reps + 1; ++r) {
    CK(cudaEventRecord(s.ev[0], s.stream));
    read_sum_kernel<<<8 * s.sms, 512, 0, s.stream>>>(static_cast<const uint4*>(buf), static_cast<int64_t>(bytes / 16), sink);
    LAUNCHED("read_sum");
    CK(cudaEventRecord(s.ev[1], s.stream));
    CK(cudaEventSynchronize(s.ev[1]));
    float ms = 0;
    CK(cudaEventElapsedTime(&ms, s.ev[0], s.ev[1]));
    if (r > 0) best = std::max(best, bytes / (ms * 1e-3) / 1e9);  // the first run warms up
  }
  CK(cudaFree(buf));
  CK(cudaFree(sink));
  return best;
}

}  // namespace hire::cuda
