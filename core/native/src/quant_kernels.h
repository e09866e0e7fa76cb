// The quant_gemv primitive of each kernel path (quant_portable.cc, quant_avx2.cc, quant_avx512.cc),
// declared here so the KernelTables in kernels_portable.cc, kernels_avx2.cc and kernels_avx512.cc can
// point at them (avx512_quant_gemv falls back to avx2_quant_gemv for the groups it skips).
#pragma once
#include <cstdint>

#include "kernel_table.h"

namespace hire {

void portable_quant_gemv(const QuantMatrix& q, const QuantVector& x, float* y, int64_t r0, int64_t r1);
#if HIRE_X86_64
void avx2_quant_gemv(const QuantMatrix& q, const QuantVector& x, float* y, int64_t r0, int64_t r1);
void avx512_quant_gemv(const QuantMatrix& q, const QuantVector& x, float* y, int64_t r0, int64_t r1);
bool avx512_quant_gemv_rows(const QuantMatrix& q, const QuantVector& x, const int32_t* idx, int64_t i0, int64_t i1,
                            float* y);
#endif

}  // namespace hire
