// Group-quantized weights (HiRE-Q's cheap copy of W_gate / W_in / the LM head) and the int8 copy of x
// that quant_gemv multiplies them with. Header-only plain C++ (no SIMD attributes).
//
// QuantMatrix storage, row after row with no padding between rows (row_stride = row_bytes +
// 2 * groups bytes each, 4 * groups with mins; the buffer is 64-byte aligned and has kQuantSlack
// spare bytes at the end, so kernels may over-read the last row's scales by one vector):
//   codes  [row_bytes]   int8: one signed byte per value (-127..127), values 0 .. padded-1 in order.
//                        int4: per 64 values, 32 bytes; byte j = code(j) | code(j + 32) << 4, with
//                        code = q + 8 (q in -7..7, -8 from a GGUF's Q4_0); padded is rounded up to 64
//                        for the nibbles.
//   scales [groups]      f16, one per group of `group` values.
//   mins   [groups]      f16, int4 with mins only (kQ4M).
// So a 32-value vector v of a row is codes[32v ..] (int8) or the low / high nibbles (v even / odd) of
// codes[32 (v/2) ..] (int4), and always lies in group 32v / group: one load feeds one group. Rows are
// 32-byte aligned whenever 2 * groups is a multiple of 32 (e.g. 2048 columns in groups of 32 or 64).
// Dequantized value: q * f16(scale); with mins, code * f16(scale) + f16(min) for the raw code (0..15):
// the asymmetric 4-bit of a GGUF's Q4_1 and Q4_K and of AWQ / asymmetric GPTQ, kept as their
// files hold them. The kernels compute a row with mins as the symmetric product over the same codes
// and scales plus sum_g (min_g + 8 scale_g) * xsum_g (xsum: QuantVector). To add a format: extend
// QuantMatrix::shape, quantize_row / quant_row (sparse_ops.cc) and the quant_gemv primitives
// (quant_avx2.cc, quant_avx512.cc, quant_portable.cc).
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>

#include "buffer.h"
#include "dtype.h"

namespace hire {

struct QuantMatrix {
  int64_t rows = 0, cols = 0;
  int bits = 8;              // 4 or 8
  int64_t group = 32;        // values per scale: a multiple of 32
  int64_t groups = 0;        // per row: ceil(cols / group)
  int64_t padded = 0;        // groups * group (values per row, zero-padded)
  int64_t row_bytes = 0;     // code bytes per row, a multiple of 32
  int64_t row_stride = 0;    // bytes per row: row_bytes + 2 * groups (4 * groups with mins)
  bool mins = false;         // int4 only: an f16 minimum per group after the scales (kQ4M)
  int64_t scale_pad = 0;     // groups rounded up to 16: length of the per-call scale arrays
  std::shared_ptr<Buffer> mem;  // bytes() + kQuantSlack
  const unsigned char* view = nullptr;  // when mem is null: the rows of a kQ8 / kQ4 weight (quant_view), not owned

  const unsigned char* data() const { return mem ? mem->data() : view; }
  const unsigned char* codes(int64_t r) const { return data() + r * row_stride; }
  const uint16_t* scales(int64_t r) const {
    return reinterpret_cast<const uint16_t*>(data() + r * row_stride + row_bytes);
  }
  const uint16_t* min_values(int64_t r) const { return scales(r) + groups; }
  int64_t bytes() const { return rows * row_stride; }
  static constexpr int64_t kQuantSlack = 64;

  // Shape only (mem stays null): the caller allocates bytes() + kQuantSlack.
  static QuantMatrix shape(int64_t rows, int64_t cols, int bits, int64_t group, bool mins = false) {
    QuantMatrix q;
    q.mins = mins && bits == 4;
    q.rows = rows;
    q.cols = cols;
    q.bits = bits;
    q.group = group;
    q.groups = (cols + group - 1) / group;
    q.padded = q.groups * group;
    q.row_bytes = bits == 8 ? q.padded : ((q.padded + 63) / 64) * 32;
    q.row_stride = q.row_bytes + (q.mins ? 4 : 2) * q.groups;
    q.scale_pad = (q.groups + 15) & ~int64_t{15};
    return q;
  }
};

// A kQ8 / kQ4 / kQ4M weight (dtype.h) is the memory of an int8 / int4 QuantMatrix of its shape and
// group, kQuantSlack bytes included: the weights of a model loaded with int8 or int4 weights
// (quantizeWeight and quantizeGguf in addon.cc).
inline QuantMatrix quant_shape(const Mat& w, int64_t rows) {
  return QuantMatrix::shape(rows, w.cols, quant_bits(w.dtype), w.group, quant_has_min(w.dtype));
}
inline QuantMatrix quant_view(const Mat& w) {
  QuantMatrix q = quant_shape(w, w.rows);
  q.view = static_cast<const unsigned char*>(w.data);
  return q;
}
// Row r alone, as a one-row matrix (quant_gemv writes y[0] for it).
inline QuantMatrix quant_row_view(const QuantMatrix& q, int64_t r) {
  QuantMatrix one = q;
  one.mem = nullptr;
  one.view = q.codes(r);
  one.rows = 1;
  return one;
}

// Bytes of one memory row of a weight (not transposed), and of the whole weight.
inline int64_t mat_row_bytes(const Mat& w) {
  return is_quant(w.dtype) ? quant_shape(w, 1).row_stride
                           : w.cols * static_cast<int64_t>(dtype_size(w.dtype));
}
inline int64_t mat_bytes(const Mat& w) {
  return is_quant(w.dtype) ? w.rows * mat_row_bytes(w) : w.rows * w.cols * static_cast<int64_t>(dtype_size(w.dtype));
}

// x quantized for one quant_gemv call, in the groups of the matrix (arrays owned by the caller,
// 32-byte aligned). q: int8 [padded] (zeros past cols); scale: f32 [scale_pad] (max|x_g| / 127,
// zeros past groups). xsum (int4 with mins only): f32 [scale_pad], scale_g * sum of q over group g
// (zeros past groups), what a group's minimum multiplies. corr (int4 only; what the AVX2 kernels
// subtract so that they can multiply the raw codes q + 8 and still sum exact, unbiased integers lane
// by lane), int32:
//   group 32:  per block of 4 groups, 8 values: [8 * sum(q[0..16)) of groups 0..3 of the block,
//              8 * sum(q[16..32)) of groups 0..3]; ceil(groups / 4) blocks.
//   otherwise: per group, 8 values: lane l = 8 * the sum of q over bytes 4l .. 4l+3 of every
//              32-value vector of the group.
struct QuantVector {
  const int8_t* q;
  const float* scale;
  const int32_t* corr;
  const float* xsum = nullptr;
};

// Number of int32 in QuantVector::corr for a matrix.
inline int64_t quant_corr_len(const QuantMatrix& m) {
  return m.bits != 4 ? 0 : m.group == 32 ? 8 * ((m.groups + 3) / 4) : 8 * m.groups;
}

}  // namespace hire
