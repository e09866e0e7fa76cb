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
  size_t total_bytes;
  size_t l2_bytes;
  double peak_gbps;           // memory clock x bus width x 2 (DDR), from the device properties
};

// Whether this build has the CUDA kernels (nvcc was found when the addon was built).
bool compiled();
// Devices the driver reports; empty with *why set when CUDA cannot be used here.
std::vector<DeviceInfo> devices(std::string* why);
// Make `index` the backend's device (once per process; the same index again is a no-op).
void use_device(int index);

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

// ---- decode steps as CUDA graphs ----
// A decode step (one token) can be recorded once and replayed: between graph_begin and graph_end the
// ops are recorded, not run, and the position-dependent ones (embed, rope, cache_write, attention,
// called with from_step) read the token id and position that set_step last wrote, so one graph
// serves every position. Ops that must return data to the host, allocate, or take host index
// arrays throw while recording (the caller then runs that step op by op). Growing a scratch buffer
// outside a recording makes earlier graphs stale (graph_launch returns false).
struct Graph;
void set_step(int32_t id, int32_t pos);
void graph_begin();
Graph* graph_end();
void graph_abort();  // end a recording that failed part-way
bool graph_launch(Graph* g);
void graph_free(Graph* g);
bool capturing();
// Timing marks on the stream (recorded in graphs too): mark(i); after a wait, mark_ms(i, j) is the
// GPU time from mark i to mark j. i < 1024.
void mark(int i);
double mark_ms(int i, int j);

void copy2d(float* dst, int64_t dst_stride, const float* src, int64_t src_stride, int64_t rows, int64_t width);
// accumulate: y += W.x (+ bias) instead of y = W.x (+ bias) (a residual add folded into the product).
void matmul(float* y, const float* x, const DMat& w, int64_t n, const DMat* bias, bool accumulate = false);
// Up to 4 products of the same x in one launch when they share dtype and width (q, k and v); any
// other case runs them one by one. ys[i] = W_i . x (+ bias_i).
void matmul_many(int count, float* const* ys, const float* x, const DMat* const* ws, const DMat* const* biases, int64_t n);
// y = act(W_gate . x + bg) * (W_up . x + bu): the gated FFN's first half, one launch at n = 1.
void gated_matmul(float* y, const float* x, const DMat& gate, const DMat& up, const DMat* gate_bias,
                  const DMat* up_bias, int64_t n, int act, float* scratch_up);
void embed(float* y, const DMat& w, const int32_t* ids, int64_t n, bool from_step, float scale);  // ids: host
void rms_norm(float* y, const float* x, const DMat& g, int64_t n, int64_t dim, float eps);
void layer_norm(float* y, const float* x, const DMat& g, const DMat& b, int64_t n, int64_t dim, float eps);
// positions, inv_freq: host.
// factor: cos and sin times it (longrope's attention factor, 1 otherwise).
void rope(float* x, int64_t n, int64_t heads, int64_t head_dim, const int32_t* positions, const float* inv_freq,
          int64_t half, float factor, bool from_step);
void cache_write(float* kc, float* vc, const float* k, const float* v, int64_t n, int64_t kv_heads, int64_t head_dim,
                 int64_t pos0, int64_t capacity, bool from_step);
// rope on q and k (inv_freq null: none), then k and v into the cache at pos0: one launch for the three.
void rope_cache_write(float* q, float* k, const float* v, float* kc, float* vc, int64_t n, int64_t heads, int64_t kv_heads,
                      int64_t head_dim, const int32_t* positions, const float* inv_freq, int64_t half, float factor,
                      int64_t pos0, int64_t capacity, bool from_step);
// window > 0: each query attends to its last `window` positions only (sliding-window layers).
void attention(float* out, const float* q, const float* kc, const float* vc, int64_t n, int64_t heads,
               int64_t kv_heads, int64_t head_dim, int64_t pos0, int64_t capacity, float scale, bool from_step,
               int64_t window, float softcap);
// Greedy sampling on the device: argmax enqueues the index of the largest of x[0..n) (first on ties,
// NaN never wins unless it is x[0], as sampler.ts's argmax); read_argmax waits and returns it.
void argmax(const float* x, int64_t n);
int32_t read_argmax();
// act: hire::Activation (0 relu, 1 gelu, 2 gelu_tanh, 3 silu). gate = act(gate) * up.
void gated_act(float* gate, const float* up, int64_t count, int act);
void activate(float* x, int64_t count, int act);
void add(float* y, const float* x, int64_t count);
// x = cap * tanh(x / cap), -inf kept (Gemma 2's soft-capped logits).
void softcap(float* x, int64_t count, float cap);
// y[i] = x[idx[i]] (idx: host).
void gather(float* y, const float* x, const int32_t* idx, int64_t count);

// ---- sparse ops (HiRE) ----
void quant_matvec(float* y, const float* x, const DQuant& q);
void matvec_rows(float* y, const float* x, const DMat& w, const int32_t* idx, int64_t count);  // idx: host
void accumulate_cols(float* y, const float* a, const DMat& w, const int32_t* idx, int64_t count);  // idx: host
// DA-top-k over device values, same selection rules as hire::topk; ascending indices into out (host).
int64_t topk(const float* values, int64_t n, int64_t k, bool by_abs, int64_t shards, int32_t* out);

// Results of hire_ffn / hire_head land in a per-slot pinned area and events (one slot per layer and
// one for the head), so a recorded step can hand them back after each replay (hire_results).
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
  int slot;       // 0 .. 1023
  int64_t n_cand = 0, n_sel = 0;
};
// Enqueues the step (no wait): n_cand and n_sel are set from the shapes.
void hire_ffn(HireFfnArgs& a);
// After the stream has finished the step: copies the slot's candidates and selection (cand, sel:
// host, or null) and returns the GPU time of scoring + top-k', exact rows + top-k, down product.
void hire_results(int slot, int32_t* cand, int64_t n_cand, int32_t* sel, int64_t n_sel, double ms[3]);

// HiRE on the output layer, all on the device: scores from the quantized head, top-kp/P candidates per
// shard, their exact logits, the top-k/P of those; logits = those k values at their token ids and
// -inf elsewhere. Timing in hire_results(slot) (ms[0] = scoring + top-k', ms[1] = exact rows + top-k).
struct HireHeadArgs {
  const float* x;
  DQuant pred;
  DMat head;  // [V][hidden], not transposed
  int64_t k, kp, shards;
  float* logits;  // [V]
  float* scores;  // [V]
  int slot;
  int64_t n_cand = 0, n_sel = 0;
};
void hire_head(HireHeadArgs& a);

// Device memory read bandwidth in GB/s: best of `reps` reads of a `bytes` buffer by a streaming kernel.
double read_bandwidth(size_t bytes, int reps);

}  // namespace hire::cuda
