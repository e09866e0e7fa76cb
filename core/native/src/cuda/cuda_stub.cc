// The CUDA backend of a build without the CUDA toolkit (nvcc was not found when the addon was built):
// the same functions as cuda_backend.cu, reporting no device and refusing every op, so the addon and
// its `cuda` object look the same in every build.
#include <stdexcept>

#include "cuda_backend.h"

namespace hire::cuda {
namespace {
[[noreturn]] void none() {
  throw std::runtime_error("CUDA: this build has no CUDA backend (nvcc was not found when the addon was built)");
}
}  // namespace

bool compiled() { return false; }
std::vector<DeviceInfo> devices(std::string* why) {
  if (why) *why = "this build has no CUDA backend (nvcc was not found when the addon was built)";
  return {};
}
void use_device(int) { none(); }
void* alloc(size_t) { none(); }
void release(void*) {}
void upload(void*, const void*, size_t) { none(); }
void download(void*, const void*, size_t) { none(); }
void synchronize() { none(); }
void copy2d(float*, int64_t, const float*, int64_t, int64_t, int64_t) { none(); }
void matmul(float*, const float*, const DMat&, int64_t, const DMat*, bool) { none(); }
void matmul_many(int, float* const*, const float*, const DMat* const*, const DMat* const*, int64_t) { none(); }
void gated_matmul(float*, const float*, const DMat&, const DMat&, const DMat*, const DMat*, int64_t, int, float*) { none(); }
void embed(float*, const DMat&, const int32_t*, int64_t, bool, float) { none(); }
void rms_norm(float*, const float*, const DMat&, int64_t, int64_t, float) { none(); }
void layer_norm(float*, const float*, const DMat&, const DMat&, int64_t, int64_t, float) { none(); }
void rope(float*, int64_t, int64_t, int64_t, const int32_t*, const float*, int64_t, float, bool) { none(); }
void cache_write(float*, float*, const float*, const float*, int64_t, int64_t, int64_t, int64_t, int64_t, bool) {
  none();
}
void rope_cache_write(float*, float*, const float*, float*, float*, int64_t, int64_t, int64_t, int64_t, const int32_t*,
                      const float*, int64_t, float, int64_t, int64_t, bool) {
  none();
}
void attention(float*, const float*, const float*, const float*, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
               float, bool, int64_t, float) {
  none();
}
void argmax(const float*, int64_t) { none(); }
int32_t read_argmax() { none(); }
void gated_act(float*, const float*, int64_t, int) { none(); }
void activate(float*, int64_t, int) { none(); }
void add(float*, const float*, int64_t) { none(); }
void softcap(float*, int64_t, float) { none(); }
void gather(float*, const float*, const int32_t*, int64_t) { none(); }
void quant_matvec(float*, const float*, const DQuant&) { none(); }
void matvec_rows(float*, const float*, const DMat&, const int32_t*, int64_t) { none(); }
void accumulate_cols(float*, const float*, const DMat&, const int32_t*, int64_t) { none(); }
int64_t topk(const float*, int64_t, int64_t, bool, int64_t, int32_t*) { none(); }
void hire_ffn(HireFfnArgs&) { none(); }
void hire_results(int, int32_t*, int64_t, int32_t*, int64_t, double*) { none(); }
void hire_head(HireHeadArgs&) { none(); }
struct Graph {};
void set_step(int32_t, int32_t) { none(); }
void graph_begin() { none(); }
Graph* graph_end() { none(); }
void graph_abort() {}
bool graph_launch(Graph*) { none(); }
void graph_free(Graph*) {}
bool capturing() { return false; }
void mark(int) { none(); }
double mark_ms(int, int) { none(); }
double read_bandwidth(size_t, int) { none(); }

}  // namespace hire::cuda
