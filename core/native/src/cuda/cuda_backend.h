// The CUDA backend on raw pointers: the same ops as kernels.h / sparse.h, on device memory, ordered on
// one stream. Implemented in cuda_backend.cu (built with nvcc when the CUDA toolkit is found at
// install time) or by cuda_stub.cc (every call throws "built without CUDA"). Bound to JavaScript in
// cuda_addon.cc, used through core/backend/cuda.ts. Plain C++ types only, so g++ and nvcc both read it.
//
// Pointers named d_* or typed float* are device memory; arguments documented as host arrays
// (ids, positions, idx, inv_freq) are copied to the device through a pinned staging ring, so the
// caller may reuse them as soon as the call returns. Errors throw std::runtime_error("CUDA: ...").
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace hire::cuda {

struct DeviceInfo {
  int index;
  std::string name;
  int major, minor;           // compute capability
  int sms;                    // multiprocessors
  size_t total_bytes, free_bytes;
  size_t l2_bytes;
  double peak_gbps;           // memory clock x bus width x 2 (DDR), from the device properties
};

// Whether this build has the CUDA kernels (nvcc was found when the addon was built).
bool compiled();
// Devices the driver reports; empty with *why set when CUDA cannot be used here.
std::vector<DeviceInfo> devices(std::string* why);
// Make `index` the backend's device (once per process; the same index again is a no-op).
void use_device(int index);
int current_device();

// A weight on the device, as the kernels see it (same layout rules as hire::Mat).
struct DMat {
  const void* data;
  int dtype;  // hire::DType
  int64_t rows, cols;
  bool transposed;
};
// A group-quantized matrix on the device: the bytes of hire::QuantMatrix, same layout (quant.h).
struct DQuant {
  const unsigned char* data;
  int64_t rows, cols;
  int bits;
  int64_t group, groups, padded, row_bytes, row_stride;
};

void* alloc(size_t bytes);  // zero-filled
void release(void* p);
void upload(void* d_dst, const void* src, size_t bytes);    // ordered on the stream; src reusable on return
void download(void* dst, const void* d_src, size_t bytes);  // waits for the stream
void synchronize();

void copy2d(float* dst, int64_t dst_stride, const float* src, int64_t src_stride, int64_t rows, int64_t width);
void matmul(float* y, const float* x, const DMat& w, int64_t n, const DMat* bias);
void embed(float* y, const DMat& w, const int32_t* ids, int64_t n);  // ids: host
void rms_norm(float* y, const float* x, const DMat& g, int64_t n, int64_t dim, float eps);
void layer_norm(float* y, const float* x, const DMat& g, const DMat& b, int64_t n, int64_t dim, float eps);
// positions, inv_freq: host.
void rope(float* x, int64_t n, int64_t heads, int64_t head_dim, const int32_t* positions, const float* inv_freq,
          int64_t half);
void cache_write(float* kc, float* vc, const float* k, const float* v, int64_t n, int64_t kv_heads, int64_t head_dim,
                 int64_t pos0, int64_t capacity);
void attention(float* out, const float* q, const float* kc, const float* vc, int64_t n, int64_t heads,
               int64_t kv_heads, int64_t head_dim, int64_t pos0, int64_t capacity, float scale);
// act: hire::Activation (0 relu, 1 gelu, 2 gelu_tanh, 3 silu). gate = act(gate) * up.
void gated_act(float* gate, const float* up, int64_t count, int act);
void activate(float* x, int64_t count, int act);
void add(float* y, const float* x, int64_t count);
// y[i] = x[idx[i]] (idx: host).
void gather(float* y, const float* x, const int32_t* idx, int64_t count);

// ---- sparse ops (HiRE) ----
void quant_matvec(float* y, const float* x, const DQuant& q);
void matvec_rows(float* y, const float* x, const DMat& w, const int32_t* idx, int64_t count);  // idx: host
void accumulate_cols(float* y, const float* a, const DMat& w, const int32_t* idx, int64_t count);  // idx: host
// DA-top-k over device values, same selection rules as hire::topk; ascending indices into out (host).
int64_t topk(const float* values, int64_t n, int64_t k, bool by_abs, int64_t shards, int32_t* out);

struct HireFfnArgs {
  const float* x;
  DQuant pred;
  const float* bias_in;  // device [F] or null
  DMat rows;             // W_gate/W_up interleaved (gated) or W_in, not transposed
  bool gated;
  int act;
  DMat down;             // transposed
  int64_t k, kp, shards;
  float* y;
  float* scores;  // device [F]
  float* a_sel;   // device [k]
  int32_t* cand;  // host
  int32_t* sel;   // host
  int64_t n_cand = 0, n_sel = 0;
  double ms[3] = {0, 0, 0};  // GPU time: scoring + top-k', exact rows + top-k, down product
};
void hire_ffn(HireFfnArgs& a);

// Device memory read bandwidth in GB/s: best of `reps` reads of a `bytes` buffer by a streaming kernel.
double read_bandwidth(size_t bytes, int reps);

}  // namespace hire::cuda
