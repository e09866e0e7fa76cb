// Portable C++ primitives (kPortableKernels): the reference path for every CPU, and the fallback
// when AVX2/FMA/F16C are missing. Written so that -O3 auto-vectorises the inner loops; weights are
// read through memcpy-based loads because their addresses need not be aligned.
// To add a primitive: implement it here with the signature from kernel_table.h and add it to the table.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernel_table.h"
#include "quant_kernels.h"

namespace hire {
namespace {

constexpr int64_t kChunk = 512;  // weight elements converted to f32 at a time

void p_to_f32(int dt, const void* src, int64_t count, float* dst) {
  const unsigned char* s = static_cast<const unsigned char*>(src);
  if (dt == kF32) {
    std::memcpy(dst, s, static_cast<size_t>(count) * 4);
  } else if (dt == kBF16) {
    for (int64_t i = 0; i < count; ++i) {
      uint16_t h;
      std::memcpy(&h, s + 2 * i, 2);
      dst[i] = bf16_to_float(h);
    }
  } else {
    for (int64_t i = 0; i < count; ++i) {
      uint16_t h;
      std::memcpy(&h, s + 2 * i, 2);
      dst[i] = half_to_float(h);
    }
  }
}

// Dot product with 8 lane accumulators; the order only depends on k, not on who calls it.
float p_dot(int dt, const void* row, const float* x, int64_t k) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  float buf[kChunk];
  const size_t es = dtype_size(dt);
  int64_t tail_start = (k / 8) * 8;
  for (int64_t c0 = 0; c0 < tail_start; c0 += kChunk) {
    const int64_t len = std::min<int64_t>(kChunk, tail_start - c0);
    const float* w;
    if (dt == kF32 && (reinterpret_cast<uintptr_t>(row) & 3) == 0) {
      w = static_cast<const float*>(row) + c0;
    } else {
      p_to_f32(dt, static_cast<const unsigned char*>(row) + c0 * es, len, buf);
      w = buf;
    }
    const float* xc = x + c0;
    for (int64_t i = 0; i < len; i += 8)
      for (int j = 0; j < 8; ++j) acc[j] += w[i + j] * xc[i + j];
  }
  float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
  for (int64_t i = tail_start; i < k; ++i) s += load_elem(dt, row, i) * x[i];
  return s;
}

void p_gemv(const Mat& w, const float* x, float* y, int64_t r0, int64_t r1, float*) {
  const size_t stride = static_cast<size_t>(w.cols) * dtype_size(w.dtype);
  const unsigned char* base = static_cast<const unsigned char*>(w.data);
  for (int64_t r = r0; r < r1; ++r) y[r] = p_dot(w.dtype, base + r * stride, x, w.cols);
}

void p_pack_panel(const Mat& w, int64_t r0, int64_t nr, float* panel) {
  const size_t es = dtype_size(w.dtype);
  const unsigned char* base = static_cast<const unsigned char*>(w.data);
  const int64_t K = w.cols;
  if (w.transposed) {
    for (int64_t k = 0; k < K; ++k) {
      float* dst = panel + k * kPanel;
      p_to_f32(w.dtype, base + (static_cast<size_t>(k) * w.rows + r0) * es, nr, dst);
      for (int64_t j = nr; j < kPanel; ++j) dst[j] = 0.0f;
    }
  } else {
    float buf[kChunk];
    for (int64_t j = 0; j < kPanel; ++j) {
      if (j >= nr) {
        for (int64_t k = 0; k < K; ++k) panel[k * kPanel + j] = 0.0f;
        continue;
      }
      const unsigned char* row = base + static_cast<size_t>(r0 + j) * K * es;
      for (int64_t k0 = 0; k0 < K; k0 += kChunk) {
        const int64_t len = std::min<int64_t>(kChunk, K - k0);
        p_to_f32(w.dtype, row + k0 * es, len, buf);
        for (int64_t k = 0; k < len; ++k) panel[(k0 + k) * kPanel + j] = buf[k];
      }
    }
  }
}

// NT tokens x kPanel outputs, accumulators kept in registers (NT is a compile-time constant).
template <int NT>
void p_micro(const float* x, int64_t ldx, const float* panel, int64_t K, const float* bias16, float* y,
             int64_t ldy, int64_t nr) {
  float acc[NT][kPanel] = {};
  for (int64_t k = 0; k < K; ++k) {
    const float* p = panel + k * kPanel;
    for (int t = 0; t < NT; ++t) {
      const float xv = x[t * ldx + k];
      for (int j = 0; j < kPanel; ++j) acc[t][j] += xv * p[j];
    }
  }
  for (int t = 0; t < NT; ++t)
    for (int64_t j = 0; j < nr; ++j) y[t * ldy + j] = acc[t][j] + bias16[j];
}

void p_gemm_panel(const float* x, int64_t ldx, int64_t nt, const float* panel, int64_t K,
                  const float* bias16, float* y, int64_t ldy, int64_t nr) {
  int64_t t = 0;
  for (; t + 4 <= nt; t += 4) p_micro<4>(x + t * ldx, ldx, panel, K, bias16, y + t * ldy, ldy, nr);
  switch (nt - t) {
    case 3: p_micro<3>(x + t * ldx, ldx, panel, K, bias16, y + t * ldy, ldy, nr); break;
    case 2: p_micro<2>(x + t * ldx, ldx, panel, K, bias16, y + t * ldy, ldy, nr); break;
    case 1: p_micro<1>(x + t * ldx, ldx, panel, K, bias16, y + t * ldy, ldy, nr); break;
    default: break;
  }
}

void p_gemm_panels(const float* x, int64_t ldx, int64_t nt, const float* panels, int np, int64_t K,
                   const float* bias, float* y, int64_t ldy, int64_t nr) {
  each_panel(p_gemm_panel, x, ldx, nt, panels, np, K, bias, y, ldy, nr);
}

void p_rms_norm_row(float* y, const float* x, const void* g, int gdt, int64_t dim, float eps) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= dim; i += 8)
    for (int j = 0; j < 8; ++j) acc[j] += x[i + j] * x[i + j];
  float ss = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
  for (; i < dim; ++i) ss += x[i] * x[i];
  const float inv = 1.0f / std::sqrt(ss / static_cast<float>(dim) + eps);
  for (int64_t j = 0; j < dim; ++j) y[j] = (x[j] * inv) * load_elem(gdt, g, j);
}

void p_layer_norm_row(float* y, const float* x, const void* g, int gdt, const void* b, int bdt,
                      int64_t dim, float eps) {
  // Sums in double: one float accumulator over a few thousand values put the mean off by ~1e-5 of x's
  // scale (seen as a kernel test failure at dim 4099), where the vector paths sum in 8-16 lanes.
  double s = 0.0;
  for (int64_t i = 0; i < dim; ++i) s += x[i];
  const float mean = static_cast<float>(s / static_cast<double>(dim));
  double v = 0.0;
  for (int64_t i = 0; i < dim; ++i) v += static_cast<double>(x[i] - mean) * (x[i] - mean);
  const float inv = 1.0f / std::sqrt(static_cast<float>(v / static_cast<double>(dim)) + eps);
  for (int64_t j = 0; j < dim; ++j)
    y[j] = (x[j] - mean) * inv * load_elem(gdt, g, j) + load_elem(bdt, b, j);
}

void p_softmax_row(float* x, int64_t dim) {
  float m = -INFINITY;
  for (int64_t i = 0; i < dim; ++i) m = std::max(m, x[i]);
  double s = 0.0;  // long rows (vocabularies): keep the normaliser accurate
  for (int64_t i = 0; i < dim; ++i) {
    x[i] = std::exp(x[i] - m);
    s += x[i];
  }
  const float inv = static_cast<float>(1.0 / s);
  for (int64_t i = 0; i < dim; ++i) x[i] *= inv;
}

inline float silu(float v) { return v / (1.0f + std::exp(-v)); }

void p_silu_mul(float* gate, const float* up, int64_t count) {
  for (int64_t i = 0; i < count; ++i) gate[i] = silu(gate[i]) * up[i];
}

void p_activate(float* x, int64_t count, int kind) {
  switch (kind) {
    case 0:
      for (int64_t i = 0; i < count; ++i) x[i] = x[i] > 0.0f ? x[i] : 0.0f;
      break;
    case 1:
      for (int64_t i = 0; i < count; ++i) x[i] = 0.5f * x[i] * (1.0f + std::erf(x[i] * 0.70710678118654752f));
      break;
    case 2:
      for (int64_t i = 0; i < count; ++i) {
        const float v = x[i];
        x[i] = 0.5f * v * (1.0f + std::tanh(0.79788456080286536f * (v + 0.044715f * v * v * v)));
      }
      break;
    default:
      for (int64_t i = 0; i < count; ++i) x[i] = silu(x[i]);
  }
}

void p_add(float* y, const float* x, int64_t count) {
  for (int64_t i = 0; i < count; ++i) y[i] += x[i];
}

void p_rope_token(float* x, int64_t n_heads, int64_t head_dim, const float* cs, const float* sn, int64_t half) {
  for (int64_t h = 0; h < n_heads; ++h) {
    float* a = x + h * head_dim;
    float* b = a + half;
    for (int64_t j = 0; j < half; ++j) {
      const float x1 = a[j], x2 = b[j];
      a[j] = x1 * cs[j] - x2 * sn[j];
      b[j] = x2 * cs[j] + x1 * sn[j];
    }
  }
}

void p_attn_part(float* part, const float* q, const KvRows& kv, int64_t len, int64_t d, int64_t group, float scale,
                 float softcap, float* scores) {
  for (int64_t j = 0; j < len; ++j) {
    const unsigned char* kj = kv.key(j, d);
    for (int64_t g = 0; g < group; ++g) {
      const float* qg = q + g * d;
      float s = 0.0f;
      for (int64_t i = 0; i < d; ++i) s += qg[i] * kv.at(kj, i);
      s *= scale;
      if (softcap > 0.0f) s = softcap * std::tanh(s / softcap);
      scores[g * len + j] = s;
    }
  }
  for (int64_t g = 0; g < group; ++g) {
    float* s = scores + g * len;
    float* out = part + g * (d + 2);
    float m = -INFINITY;
    for (int64_t j = 0; j < len; ++j) m = std::max(m, s[j]);
    double l = 0.0;
    for (int64_t j = 0; j < len; ++j) l += s[j] = std::exp(s[j] - m);
    out[0] = m;
    out[1] = static_cast<float>(l);
    for (int64_t i = 0; i < d; ++i) out[2 + i] = 0.0f;
  }
  for (int64_t j = 0; j < len; ++j) {
    const unsigned char* vj = kv.value(j, d);
    for (int64_t g = 0; g < group; ++g) {
      const float p = scores[g * len + j];
      float* acc = part + g * (d + 2) + 2;
      for (int64_t i = 0; i < d; ++i) acc[i] += p * kv.at(vj, i);
    }
  }
}

// ---- HiRE sparse primitives ---------------------------------------------------------------------

void p_gemv_rows(const Mat& w, const float* x, const int32_t* idx, int64_t i0, int64_t i1, float* y, float*) {
  const size_t stride = static_cast<size_t>(w.cols) * dtype_size(w.dtype);
  const unsigned char* base = static_cast<const unsigned char*>(w.data);
  for (int64_t i = i0; i < i1; ++i) y[i] = p_dot(w.dtype, base + static_cast<size_t>(idx[i]) * stride, x, w.cols);
}

// Selected columns of a transposed W, summed in idx order into each y[r].
void p_accumulate_cols(const Mat& w, const float* a, const int32_t* idx, int64_t count, float* y, int64_t r0,
                       int64_t r1) {
  const size_t es = dtype_size(w.dtype);
  const unsigned char* base = static_cast<const unsigned char*>(w.data);
  float buf[kChunk];
  for (int64_t cb = r0; cb < r1; cb += kChunk) {
    const int64_t len = std::min<int64_t>(kChunk, r1 - cb);
    float* yc = y + cb;
    for (int64_t c = 0; c < len; ++c) yc[c] = 0.0f;
    for (int64_t i = 0; i < count; ++i) {
      p_to_f32(w.dtype, base + (static_cast<size_t>(idx[i]) * w.rows + cb) * es, len, buf);
      const float ai = a[i];
      for (int64_t c = 0; c < len; ++c) yc[c] += ai * buf[c];
    }
  }
}

float p_read_sum(const float* p, size_t count) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  size_t i = 0;
  for (; i + 8 <= count; i += 8)
    for (int j = 0; j < 8; ++j) acc[j] += p[i + j];
  for (; i < count; ++i) acc[0] += p[i];
  return acc[0] + acc[1] + acc[2] + acc[3] + acc[4] + acc[5] + acc[6] + acc[7];
}

}  // namespace

const KernelTable kPortableKernels = {
    "portable",     p_gemv,       p_pack_panel,   p_gemm_panels, 1,
    p_to_f32,       p_rms_norm_row, p_layer_norm_row, p_softmax_row, p_silu_mul,
    p_activate,     p_add,        p_rope_token, p_attn_part,   p_read_sum,
    p_gemv_rows,    p_accumulate_cols, portable_quant_gemv,
};

}  // namespace hire
