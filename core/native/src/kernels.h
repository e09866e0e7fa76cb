// The ops of the CPU backend on raw pointers: one function per addon entry point, arguments already
// validated by addon.cc. ops.cc implements them (threading, tiling) on top of the per-path primitives
// in kernel_table.h. A GPU backend can mirror these signatures. To add an op: declare it here,
// implement it in ops.cc (primitives in kernels_portable.cc / kernels_avx2.cc), bind it in addon.cc.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "dtype.h"

namespace hire {

enum class Activation : int { kRelu = 0, kGelu = 1, kGeluTanh = 2, kSilu = 3 };

// y[n][w.rows] = x[n][w.cols] . W^T (+ bias[w.rows]); bias is any contiguous vector weight or null.
void matmul(float* y, const float* x, const Mat& w, int64_t n, const Mat* bias);
// One token (n = 1) through several matrices that share x (q, k and v): the same results as one
// matmul per part, in one dispatch, each thread taking a contiguous run of the parts' rows.
struct MatvecPart {
  float* y;
  Mat w;  // not transposed; cols == every other part's
  const Mat* bias;
};
void matvec_many(const float* x, const MatvecPart* parts, int64_t count);
// y[i][:] = W[ids[i]][:] (W not transposed).
// y[i] = W[ids[i]] * scale (Gemma scales its embeddings by sqrt(hidden); 1 otherwise).
void embed(float* y, const Mat& w, const int32_t* ids, int64_t n, float scale = 1.0f);
// y may equal x. g (and b) are contiguous vectors of `dim` elements.
void rms_norm(float* y, const float* x, const Mat& g, int64_t n, int64_t dim, float eps);
void layer_norm(float* y, const float* x, const Mat& g, const Mat& b, int64_t n, int64_t dim, float eps);
// In place, HF rotate_half; half = rotDim / 2 = number of inverse frequencies; cos and sin times
// factor (longrope's attention factor, 1 otherwise).
void rope(float* x, int64_t n, int64_t n_heads, int64_t head_dim, const int32_t* positions,
          const float* inv_freq, int64_t half, float factor);
// Causal GQA attention over [n_kv][capacity][head_dim] caches; out may equal q. window > 0: a query
// at position p attends to the `window` positions p - window + 1 .. p only (sliding-window layers).
// softcap > 0: scores become softcap * tanh(score / softcap) before the softmax (Gemma 2).
// kv_f16: the caches hold IEEE halves (cache_write with kv_f16 wrote them), else floats.
void attention(float* out, const float* q, const void* k_cache, const void* v_cache, int64_t n,
               int64_t n_heads, int64_t n_kv, int64_t head_dim, int64_t pos0, int64_t capacity,
               float scale, int64_t window = 0, float softcap = 0.0f, bool kv_f16 = false);
// x = cap * tanh(x / cap), -inf kept (soft-capped logits, Gemma 2; -inf marks tokens HiRE left out).
void softcap(float* x, int64_t count, float cap);
// Rows of k and v ([n][n_kv][head_dim]) into the caches' slots (pos0 + i) % capacity, as floats or,
// with kv_f16, rounded to IEEE halves.
void cache_write(void* k_cache, void* v_cache, const float* k, const float* v, int64_t n, int64_t n_kv,
                 int64_t head_dim, int64_t pos0, int64_t capacity, bool kv_f16 = false);
void silu_mul(float* gate, const float* up, int64_t count);
void activate(float* x, int64_t count, Activation kind);
void add(float* y, const float* x, int64_t count);
void softmax(float* x, int64_t n, int64_t dim);
// Greedy sampling: the index of the largest of x[0..n) as sampler.ts's argmax picks it (the first on
// ties; NaN never wins, except that x[0] is kept when it is NaN).
int64_t argmax(const float* x, int64_t n);
// Best-of-reps read bandwidth in GB/s over a cached, pre-touched buffer of `bytes` bytes.
double read_bandwidth(size_t bytes, int reps, size_t chunk = 0);

struct CpuFeatures {
  bool avx2, fma, f16c;
  bool avx512vnni;  // AVX-512 F, BW, VL and VNNI together
};
CpuFeatures cpu_features();
// Names of the kernel paths this CPU can run, best first ("avx512", "avx2", "portable").
std::vector<std::string> kernel_paths();
// "auto" (the best) or one of kernel_paths(); false (and no change) for any other name.
bool set_kernel_path(const std::string& name);
const char* kernel_path_name();

}  // namespace hire
