// N-API bindings of the CUDA backend (the `cuda` object of the addon, typed in core/native/addon.ts):
// device buffers, device copies of weights and quantized predictors, and the ops of cuda_backend.h.
// As in addon.cc, every argument is checked here (types, lengths against what the op will touch,
// handle tags) before a pointer reaches the device; without CUDA in the build (cuda_stub.cc) the
// same functions exist and throw.
#include <napi.h>

#include <cstdint>
#include <string>

#include "cuda/cuda_backend.h"
#include "sparse.h"
#include "napi_args.h"

namespace hire_napi {
namespace {

namespace cu = hire::cuda;

const napi_type_tag kDevBufTag = {0x6869726e63756461ULL, 0x6275660000000001ULL};
const napi_type_tag kDevWeightTag = {0x6869726e63756461ULL, 0x7765696768740002ULL};
const napi_type_tag kDevQuantTag = {0x6869726e63756461ULL, 0x7175616e74000003ULL};

// A device f32 buffer of `length` elements (freed on GC).
struct DevBuf {
  float* ptr;
  int64_t length;
};
// A device copy of a weight (same dtype and layout).
struct DevWeight {
  void* ptr;
  cu::DMat m;
  int64_t bytes;
};
struct DevQuant {
  void* ptr;
  cu::DQuant q;
  int64_t bytes;
};

template <class T>
Napi::Value wrap(Napi::Env env, T* h, const napi_type_tag& tag) {
  auto ext = Napi::External<T>::New(env, h, [](Napi::Env, T* p) {
    cu::release(p->ptr);
    delete p;
  });
  if (napi_type_tag_object(env, ext, &tag) != napi_ok) throw Napi::Error::New(env, "cannot tag a CUDA handle");
  return ext;
}

class CArgs : public Args {
 public:
  using Args::Args;
  DevBuf* buf(size_t i, const char* name) const { return tagged<DevBuf>(i, kDevBufTag, name, "CudaBuffer"); }
  // A buffer that must hold at least `count` floats.
  float* buf(size_t i, const char* name, int64_t count, const char* expr) const {
    DevBuf* b = buf(i, name);
    if (count > b->length)
      fail(std::string(name) + " has " + std::to_string(b->length) + " elements, needs at least " + expr + " = " +
           std::to_string(count));
    return b->ptr;
  }
  const cu::DMat& weight(size_t i, const char* name) const {
    return tagged<DevWeight>(i, kDevWeightTag, name, "CudaWeight")->m;
  }
  const cu::DQuant& quant(size_t i, const char* name) const {
    return tagged<DevQuant>(i, kDevQuantTag, name, "CudaQuant")->q;
  }
  int act(size_t i, const char* name) const { return static_cast<int>(activation(i, name)); }
  // Optional trailing fromStep flag: read the token id / position from the step block (one token).
  bool from_step(size_t i, int64_t n) const {
    if (is_nullish(i)) return false;
    const bool f = boolean(i, "fromStep");
    if (f && n != 1) fail("fromStep needs n = 1");
    return f;
  }
  int slot(size_t i) const { return static_cast<int>(integer(i, "slot", 0, 1023)); }
};

int64_t vec_len(const CArgs& a, const cu::DMat& m, const char* name) {
  if (m.rows != 1 && m.cols != 1)
    a.fail(std::string(name) + " must be a 1 x dim vector weight, got " + std::to_string(m.rows) + " x " +
           std::to_string(m.cols));
  return m.rows * m.cols;
}

// { scoreMs, rowsMs, downMs }: the GPU time of a HiRE step's three parts.
Napi::Object step_times(Napi::Env env, const double ms[3]) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("scoreMs", ms[0]);
  o.Set("rowsMs", ms[1]);
  o.Set("downMs", ms[2]);
  return o;
}

Napi::Value Compiled(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), cu::compiled()); }

Napi::Value Devices(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string why;
  const auto list = cu::devices(&why);
  Napi::Array arr = Napi::Array::New(env, list.size());
  for (size_t i = 0; i < list.size(); ++i) {
    const auto& d = list[i];
    Napi::Object o = Napi::Object::New(env);
    o.Set("index", d.index);
    o.Set("name", d.name);
    o.Set("computeCapability", std::to_string(d.major) + "." + std::to_string(d.minor));
    o.Set("multiprocessors", d.sms);
    o.Set("totalBytes", static_cast<double>(d.total_bytes));
    o.Set("l2Bytes", static_cast<double>(d.l2_bytes));
    o.Set("peakGBps", d.peak_gbps);
    arr.Set(static_cast<uint32_t>(i), o);
  }
  Napi::Object out = Napi::Object::New(env);
  out.Set("devices", arr);
  out.Set("reason", why);
  return out;
}

Napi::Value UseDevice(const Napi::CallbackInfo& info) {
  CArgs a(info, "cuda.useDevice");
  cu::use_device(static_cast<int>(a.integer(0, "index", 0, 1024)));
  return info.Env().Undefined();
}

Napi::Value Alloc(const Napi::CallbackInfo& info) {
  CArgs a(info, "cuda.alloc");
  const int64_t n = a.integer(0, "length", 0, kMaxDim);
  auto* h = new DevBuf{static_cast<float*>(cu::alloc(static_cast<size_t>(n) * 4)), n};
  return wrap(info.Env(), h, kDevBufTag);
}

Napi::Value Write(const Napi::CallbackInfo& info) {
  CArgs a(info, "cuda.write");
  DevBuf* b = a.buf(0, "buf");
  const int64_t off = a.integer(1, "offset", 0, kMaxDim);
  auto src = a.f32(2, "data");
  if (off + static_cast<int64_t>(src.len) > b->length)
    a.fail("offset + data.length = " + std::to_string(off + static_cast<int64_t>(src.len)) + " exceeds the buffer (" +
           std::to_string(b->length) + ")");
  cu::upload(b->ptr + off, src.data, src.len * 4);
  return info.Env().Undefined();
}

Napi::Value Read(const Napi::CallbackInfo& info) {
  CArgs a(info, "cuda.read");
  DevBuf* b = a.buf(0, "buf");
  const int64_t off = a.integer(1, "offset", 0, kMaxDim);
  auto dst = a.f32(2, "out");
  if (off + static_cast<int64_t>(dst.len) > b->length)
    a.fail("offset + out.length = " + std::to_string(off + static_cast<int64_t>(dst.len)) + " exceeds the buffer (" +
           std::to_string(b->length) + ")");
  cu::download(dst.data, b->ptr + off, dst.len * 4);
  return info.Env().Undefined();
}

Napi::Value Synchronize(const Napi::CallbackInfo& info) {
  cu::synchronize();
  return info.Env().Undefined();
}

// A device copy of a host weight (NativeWeight).
Napi::Value UploadWeight(const Napi::CallbackInfo& info) {
  CArgs a(info, "cuda.uploadWeight");
  const hire::Mat w = a.Args::weight(0, "w");
  if (hire::is_quant(w.dtype))
    a.fail("int8 and int4 weights run on the CPU backend only; load the model with its file's weights");
  const int64_t bytes = mul(a, w.rows, w.cols, static_cast<int64_t>(hire::dtype_size(w.dtype)));
  void* p = cu::alloc(static_cast<size_t>(bytes));
  cu::upload(p, w.data, static_cast<size_t>(bytes));
  auto* h = new DevWeight{p, cu::DMat{p, w.dtype, w.rows, w.cols, w.transposed}, bytes};
  return wrap(info.Env(), h, kDevWeightTag);
}

Napi::Value UploadQuant(const Napi::CallbackInfo& info) {
  CArgs a(info, "cuda.uploadQuant");
  const hire::QuantMatrix& q = a.Args::quant(0, "q");
  const int64_t bytes = q.bytes();
  // The kernels may read the last row's codes as 16-byte vectors: keep the host buffer's slack.
  void* p = cu::alloc(static_cast<size_t>(bytes + hire::QuantMatrix::kQuantSlack));
  cu::upload(p, q.mem->data(), static_cast<size_t>(bytes));
  auto* h = new DevQuant{p,
                         cu::DQuant{static_cast<const unsigned char*>(p), q.rows, q.cols, q.bits, q.group, q.groups, q.padded,
                                    q.row_bytes, q.row_stride},
                         bytes};
  return wrap(info.Env(), h, kDevQuantTag);
}

Napi::Value Copy2d(const Napi::CallbackInfo& info) {
  CArgs a(info, "cuda.copy2d");
  DevBuf* dst = a.buf(0, "dst");
  const int64_t doff = a.integer(1, "dstOff", 0, kMaxDim), dstride = a.integer(2, "dstStride", 0, kMaxDim);
  DevBuf* src = a.buf(3, "src");
  const int64_t soff = a.integer(4, "srcOff", 0, kMaxDim), sstride = a.integer(5, "srcStride", 0, kMaxDim);
  const int64_t rows = a.integer(6, "rows", 0, kMaxDim), width = a.integer(7, "width", 0, kMaxDim);
  if (rows == 0 || width == 0) return info.Env().Undefined();
  if (width > dstride || width > sstride) a.fail("width exceeds a stride");
  if (doff + (rows - 1) * dstride + width > dst->length) a.fail("the copy overruns dst");
  if (soff + (rows - 1) * sstride + width > src->length) a.fail("the copy overruns src");
  cu::copy2d(dst->ptr + doff, dstride, src->ptr + soff, sstride, rows, width);
  return info.Env().Undefined();
}

Napi::Value Matmul(const Napi::CallbackInfo& info) {
  CArgs a(info, "cuda.matmul");
  const cu::DMat& w = a.weight(2, "w");
  const int64_t n = a.integer(3, "n", 0, kMaxDim);
  float* y = a.buf(0, "y", mul(a, n, w.rows), "n*rows");
  float* x = a.buf(1, "x", mul(a, n, w.cols), "n*cols");
  if (y == x) a.fail("y and x must be different buffers");
  const cu::DMat* bias = nullptr;
  if (!a.is_nullish(4)) {
    bias = &a.weight(4, "bias");
    if (vec_len(a, *bias, "bias") != w.rows) a.fail("bias must have rows elements");
  }
  const bool accumulate = !a.is_nullish(5) && a.boolean(5, "accumulate");
  cu::matmul(y, x, w, n, bias, accumulate);
  return info.Env().Undefined();
}

// matmulMany(x, n, ys[], ws[], biases[]): ys[i] = W_i . x (+ bias_i), one launch where it can.
Napi::Value MatmulMany(const Napi::CallbackInfo& info) {
  CArgs a(info, "cuda.matmulMany");
  const int64_t n = a.integer(1, "n", 0, kMaxDim);
  if (!info[2].IsArray() || !info[3].IsArray() || !info[4].IsArray()) a.fail("ys, ws and biases must be arrays");
  Napi::Array ya = info[2].As<Napi::Array>(), wa = info[3].As<Napi::Array>(), ba = info[4].As<Napi::Array>();
  const uint32_t count = ya.Length();
  if (count < 1 || count > 4 || wa.Length() != count || ba.Length() != count) a.fail("1 to 4 products, as many ys, ws and biases");
  float* ys[4];
  const cu::DMat* ws[4];
  const cu::DMat* bs[4];
  for (uint32_t i = 0; i < count; ++i) {
    Napi::Value yv = ya[i], wv = wa[i], bv = ba[i];
    bool ok = false;
    if (!wv.IsExternal() || napi_check_object_type_tag(info.Env(), wv, &kDevWeightTag, &ok) != napi_ok || !ok)
      a.fail("ws[" + std::to_string(i) + "] must be a CudaWeight handle");
    ws[i] = &wv.As<Napi::External<DevWeight>>().Data()->m;
    ok = false;
    if (!yv.IsExternal() || napi_check_object_type_tag(info.Env(), yv, &kDevBufTag, &ok) != napi_ok || !ok)
      a.fail("ys[" + std::to_string(i) + "] must be a CudaBuffer handle");
    DevBuf* yb = yv.As<Napi::External<DevBuf>>().Data();
    if (mul(a, n, ws[i]->rows) > yb->length) a.fail("ys[" + std::to_string(i) + "] is shorter than n * rows");
    ys[i] = yb->ptr;
    bs[i] = nullptr;
    if (!bv.IsNull() && !bv.IsUndefined()) {
      ok = false;
      if (!bv.IsExternal() || napi_check_object_type_tag(info.Env(), bv, &kDevWeightTag, &ok) != napi_ok || !ok)
        a.fail("biases[" + std::to_string(i) + "] must be a CudaWeight handle or null");
      bs[i] = &bv.As<Napi::External<DevWeight>>().Data()->m;
      if (vec_len(a, *bs[i], "bias") != ws[i]->rows) a.fail("a bias must have rows elements");
    }
    if (i > 0 && ws[i]->cols != ws[0]->cols) a.fail("every weight must have the same number of columns");
  }
  const float* x = a.buf(0, "x", mul(a, n, ws[0]->cols), "n*cols");
  for (uint32_t i = 0; i < count; ++i)
    if (ys[i] == x) a.fail("a y and x must be different buffers");
  cu::matmul_many(static_cast<int>(count), ys, x, ws, bs, n);
  return info.Env().Undefined();
}

// gatedMatmul(y, x, gate, up, gateBias, upBias, n, activation, scratchUp): y = act(gate.x) * (up.x).
Napi::Value GatedMatmul(const Napi::CallbackInfo& info) {
  CArgs a(info, "cuda.gatedMatmul");
  const cu::DMat& g = a.weight(2, "gate");
  const cu::DMat& u = a.weight(3, "up");
  if (g.rows != u.rows || g.cols != u.cols) a.fail("gate and up must have the same shape");
  const cu::DMat* gb = a.is_nullish(4) ? nullptr : &a.weight(4, "gateBias");
  const cu::DMat* ub = a.is_nullish(5) ? nullptr : &a.weight(5, "upBias");
  if (gb && vec_len(a, *gb, "gateBias") != g.rows) a.fail("gateBias must have rows elements");
  if (ub && vec_len(a, *ub, "upBias") != g.rows) a.fail("upBias must have rows elements");
  const int64_t n = a.integer(6, "n", 0, kMaxDim);
  const int act = a.act(7, "activation");
  float* y = a.buf(0, "y", mul(a, n, g.rows), "n*rows");
  float* x = a.buf(1, "x", mul(a, n, g.cols), "n*cols");
  float* scratch = a.buf(8, "scratchUp", mul(a, n, g.rows), "n*rows");
  if (y == x || y == scratch || x == scratch) a.fail("y, x and scratchUp must be different buffers");
  cu::gated_matmul(y, x, g, u, gb, ub, n, act, scratch);
  return info.Env().Undefined();
}

Napi::Value Embed(const Napi::CallbackInfo& info) {
  CArgs a(info, "cuda.embed");
  const cu::DMat& w = a.weight(1, "w");
  auto ids = a.i32(2, "ids");
  if (w.transposed) a.fail("w must not be transposed");
  const int64_t n = static_cast<int64_t>(ids.len);
  float* y = a.buf(0, "y", mul(a, n, w.cols), "ids.length*cols");
  a.indices(ids, n, w.rows, "ids", "rows of w");
  const double scale = a.optional_number(4, "scale", 1.0, -HUGE_VAL);
  cu::embed(y, w, ids.data, n, a.from_step(3, n), static_cast<float>(scale));
  return info.Env().Undefined();
}

Napi::Value RmsNorm(const Napi::CallbackInfo& info) {
  CArgs a(info, "cuda.rmsNorm");
  const cu::DMat& g = a.weight(2, "g");
  const int64_t n = a.integer(3, "n", 0, kMaxDim);
  const double eps = a.number(4, "eps");
  if (eps < 0) a.fail("eps must be >= 0");
  const int64_t dim = vec_len(a, g, "g");
  const int64_t count = mul(a, n, dim);
  cu::rms_norm(a.buf(0, "y", count, "n*dim"), a.buf(1, "x", count, "n*dim"), g, n, dim, static_cast<float>(eps));
  return info.Env().Undefined();
}

Napi::Value LayerNorm(const Napi::CallbackInfo& info) {
  CArgs a(info, "cuda.layerNorm");
  const cu::DMat& g = a.weight(2, "g");
  const cu::DMat& b = a.weight(3, "b");
  const int64_t n = a.integer(4, "n", 0, kMaxDim);
  const double eps = a.number(5, "eps");
  if (eps < 0) a.fail("eps must be >= 0");
  const int64_t dim = vec_len(a, g, "g");
  if (vec_len(a, b, "b") != dim) a.fail("b and g must have the same length");
  const int64_t count = mul(a, n, dim);
  cu::layer_norm(a.buf(0, "y", count, "n*dim"), a.buf(1, "x", count, "n*dim"), g, b, n, dim, static_cast<float>(eps));
  return info.Env().Undefined();
}

Napi::Value Rope(const Napi::CallbackInfo& info) {
  CArgs a(info, "cuda.rope");
  const int64_t n = a.integer(1, "n", 0, kMaxDim);
  const int64_t heads = a.integer(2, "nHeads", 1, kMaxDim);
  const int64_t head_dim = a.integer(3, "headDim", 1, kMaxDim);
  auto pos = a.i32(4, "positions");
  auto inv = a.f32(5, "invFreq");
  const int64_t half = static_cast<int64_t>(inv.len);
  if (2 * half > head_dim) a.fail("invFreq has more than headDim / 2 entries");
  if (static_cast<int64_t>(pos.len) < n) a.fail("positions has fewer than n entries");
  float* x = a.buf(0, "x", mul(a, n, heads, head_dim), "n*nHeads*headDim");
  cu::rope(x, n, heads, head_dim, pos.data, inv.data, half, a.rope_factor(7), a.from_step(6, n));
  return info.Env().Undefined();
}

Napi::Value CacheWrite(const Napi::CallbackInfo& info) {
  CArgs a(info, "cuda.cacheWrite");
  const int64_t n = a.integer(4, "n", 0, kMaxDim);
  const int64_t kv = a.integer(5, "nKvHeads", 1, kMaxDim);
  const int64_t hd = a.integer(6, "headDim", 1, kMaxDim);
  const int64_t pos0 = a.integer(7, "pos0", 0, kMaxDim);
  const int64_t cap = a.integer(8, "capacity", 1, kMaxDim);
  a.check_cache_write(n, cap);
  const int64_t cache = mul(a, kv, cap, hd), step = mul(a, n, kv, hd);
  cu::cache_write(a.buf(0, "kCache", cache, "nKvHeads*capacity*headDim"), a.buf(1, "vCache", cache, "nKvHeads*capacity*headDim"),
                  a.buf(2, "k", step, "n*nKvHeads*headDim"), a.buf(3, "v", step, "n*nKvHeads*headDim"), n, kv, hd, pos0,
                  cap, a.from_step(9, n));
  return info.Env().Undefined();
}

// ropeCacheWrite(q, k, v, kCache, vCache, n, nHeads, nKvHeads, headDim, positions, invFreq | null, pos0,
// capacity, fromStep?, factor?): rope on q and k (cos and sin times factor), then k and v into the
// caches, in one launch.
Napi::Value RopeCacheWrite(const Napi::CallbackInfo& info) {
  CArgs a(info, "cuda.ropeCacheWrite");
  const int64_t n = a.integer(5, "n", 0, kMaxDim);
  const int64_t heads = a.integer(6, "nHeads", 1, kMaxDim);
  const int64_t kv = a.integer(7, "nKvHeads", 1, kMaxDim);
  const int64_t hd = a.integer(8, "headDim", 1, kMaxDim);
  auto pos = a.i32(9, "positions");
  const bool rope = !a.is_nullish(10);
  const float* inv = nullptr;
  int64_t half = 0;
  if (rope) {
    auto f = a.f32(10, "invFreq");
    inv = f.data;
    half = static_cast<int64_t>(f.len);
    if (2 * half > hd) a.fail("invFreq has more than headDim / 2 entries");
  }
  const int64_t pos0 = a.integer(11, "pos0", 0, kMaxDim);
  const int64_t cap = a.integer(12, "capacity", 1, kMaxDim);
  if (static_cast<int64_t>(pos.len) < n) a.fail("positions has fewer than n entries");
  a.check_cache_write(n, cap);
  const int64_t cache = mul(a, kv, cap, hd), kstep = mul(a, n, kv, hd);
  float* q = a.buf(0, "q", mul(a, n, heads, hd), "n*nHeads*headDim");
  float* k = a.buf(1, "k", kstep, "n*nKvHeads*headDim");
  float* v = a.buf(2, "v", kstep, "n*nKvHeads*headDim");
  float* kc = a.buf(3, "kCache", cache, "nKvHeads*capacity*headDim");
  float* vc = a.buf(4, "vCache", cache, "nKvHeads*capacity*headDim");
  if (q == k || k == v || kc == vc) a.fail("q, k, v and the two caches must be different buffers");
  cu::rope_cache_write(q, k, v, kc, vc, n, heads, kv, hd, pos.data, inv, half, a.rope_factor(14), pos0, cap,
                       a.from_step(13, n));
  return info.Env().Undefined();
}

// argmax(x, n): enqueue the device argmax (greedy sampling); readArgmax() waits and returns it.
Napi::Value Argmax(const Napi::CallbackInfo& info) {
  CArgs a(info, "cuda.argmax");
  const int64_t n = a.integer(1, "n", 1, kMaxDim);
  cu::argmax(a.buf(0, "x", n, "n"), n);
  return info.Env().Undefined();
}

Napi::Value ReadArgmax(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), cu::read_argmax()); }

Napi::Value Attention(const Napi::CallbackInfo& info) {
  CArgs a(info, "cuda.attention");
  const int64_t n = a.integer(4, "n", 0, kMaxDim);
  const int64_t heads = a.integer(5, "nHeads", 1, kMaxDim);
  const int64_t kv = a.integer(6, "nKvHeads", 1, kMaxDim);
  const int64_t hd = a.integer(7, "headDim", 1, 256);
  const int64_t pos0 = a.integer(8, "pos0", 0, kMaxDim);
  const int64_t cap = a.integer(9, "capacity", 1, kMaxDim);
  const double scale = a.number(10, "scale");
  const int64_t window = a.is_nullish(12) ? 0 : a.integer(12, "window", 0, kMaxDim);
  if (heads % kv != 0) a.fail("nHeads must be a multiple of nKvHeads");
  a.check_attention_span(pos0, n, window, cap);
  const int64_t qn = mul(a, n, heads, hd), cache = mul(a, kv, cap, hd);
  float* out = a.buf(0, "out", qn, "n*nHeads*headDim");
  float* q = a.buf(1, "q", qn, "n*nHeads*headDim");
  if (out == q) a.fail("out and q must be different buffers");
  cu::attention(out, q, a.buf(2, "kCache", cache, "nKvHeads*capacity*headDim"),
                a.buf(3, "vCache", cache, "nKvHeads*capacity*headDim"), n, heads, kv, hd, pos0, cap,
                static_cast<float>(scale), a.from_step(11, n), window,
                static_cast<float>(a.optional_number(13, "softcap", 0.0, 0.0)));
  return info.Env().Undefined();
}

Napi::Value GatedAct(const Napi::CallbackInfo& info) {
  CArgs a(info, "cuda.gatedAct");
  const int64_t count = a.integer(2, "count", 0, kMaxDim);
  cu::gated_act(a.buf(0, "gate", count, "count"), a.buf(1, "up", count, "count"), count, a.act(3, "activation"));
  return info.Env().Undefined();
}

Napi::Value Activate(const Napi::CallbackInfo& info) {
  CArgs a(info, "cuda.activate");
  const int64_t count = a.integer(1, "count", 0, kMaxDim);
  cu::activate(a.buf(0, "x", count, "count"), count, a.act(2, "activation"));
  return info.Env().Undefined();
}

Napi::Value Add(const Napi::CallbackInfo& info) {
  CArgs a(info, "cuda.add");
  const int64_t count = a.integer(2, "count", 0, kMaxDim);
  cu::add(a.buf(0, "y", count, "count"), a.buf(1, "x", count, "count"), count);
  return info.Env().Undefined();
}

Napi::Value Softcap(const Napi::CallbackInfo& info) {
  CArgs a(info, "cuda.softcap");
  const int64_t count = a.integer(1, "count", 0, kMaxDim);
  const double cap = a.positive_number(2, "cap");
  cu::softcap(a.buf(0, "x", count, "count"), count, static_cast<float>(cap));
  return info.Env().Undefined();
}

Napi::Value Gather(const Napi::CallbackInfo& info) {
  CArgs a(info, "cuda.gather");
  DevBuf* x = a.buf(1, "x");
  auto idx = a.i32(2, "idx");
  const int64_t count = a.integer(3, "count", 0, kMaxDim);
  if (count > static_cast<int64_t>(idx.len)) a.fail("count exceeds idx.length");
  a.indices(idx, count, x->length, "idx", "elements of x");
  float* y = a.buf(0, "y", count, "count");
  if (y == x->ptr) a.fail("y and x must be different buffers");
  cu::gather(y, x->ptr, idx.data, count);
  return info.Env().Undefined();
}

Napi::Value QuantMatvec(const Napi::CallbackInfo& info) {
  CArgs a(info, "cuda.quantMatvec");
  const cu::DQuant& q = a.quant(2, "q");
  cu::quant_matvec(a.buf(0, "y", q.rows, "rows"), a.buf(1, "x", q.cols, "cols"), q);
  return info.Env().Undefined();
}

Napi::Value MatvecRows(const Napi::CallbackInfo& info) {
  CArgs a(info, "cuda.matvecRows");
  const cu::DMat& w = a.weight(2, "w");
  if (w.transposed) a.fail("w must not be transposed");
  auto idx = a.i32(3, "idx");
  const int64_t count = a.integer(4, "count", 0, kMaxDim);
  if (count > static_cast<int64_t>(idx.len)) a.fail("count exceeds idx.length");
  a.indices(idx, count, w.rows, "idx", "rows of w");
  cu::matvec_rows(a.buf(0, "y", count, "count"), a.buf(1, "x", w.cols, "cols"), w, idx.data, count);
  return info.Env().Undefined();
}

Napi::Value AccumulateCols(const Napi::CallbackInfo& info) {
  CArgs a(info, "cuda.accumulateCols");
  const cu::DMat& w = a.weight(2, "w");
  if (!w.transposed) a.fail("w must be transposed (each column contiguous)");
  auto idx = a.i32(3, "idx");
  const int64_t count = a.integer(4, "count", 0, kMaxDim);
  if (count > static_cast<int64_t>(idx.len)) a.fail("count exceeds idx.length");
  a.indices(idx, count, w.cols, "idx", "columns of w");
  cu::accumulate_cols(a.buf(0, "y", w.rows, "rows"), a.buf(1, "a", count, "count"), w, idx.data, count);
  return info.Env().Undefined();
}

Napi::Value Topk(const Napi::CallbackInfo& info) {
  CArgs a(info, "cuda.topk");
  const int64_t n = a.integer(1, "n", 0, kMaxDim);
  const int64_t k = a.integer(2, "k", 0, kMaxDim);
  const bool by_abs = a.boolean(3, "byAbs");
  const int64_t shards = a.integer(4, "shards", 1, 1024);
  size_t out_len = 0;
  int32_t* out = a.i32_mut(5, "out", &out_len);
  const int64_t need = hire::topk_count(n, k, shards);
  if (need > static_cast<int64_t>(out_len))
    a.fail("out has " + std::to_string(out_len) + " elements, needs " + std::to_string(need));
  const float* v = a.buf(0, "values", n, "n");
  return Napi::Number::New(info.Env(), static_cast<double>(cu::topk(v, n, k, by_abs, shards, out)));
}

Napi::Value HireFfn(const Napi::CallbackInfo& info) {
  CArgs a(info, "cuda.hireFfn");
  cu::HireFfnArgs s;
  s.pred = a.quant(2, "predictor");
  const int64_t F = s.pred.rows;
  s.rows = a.weight(4, "rows");
  s.gated = a.boolean(5, "gated");
  s.act = a.act(6, "activation");
  s.down = a.weight(7, "down");
  s.k = a.integer(8, "k", 0, F);
  s.kp = a.integer(9, "kp", 0, kMaxDim);
  s.shards = a.integer(10, "shards", 1, 1024);
  if (s.rows.transposed || s.rows.rows != (s.gated ? 2 * F : F) || s.rows.cols != s.pred.cols)
    a.fail("rows must be a " + std::to_string(s.gated ? 2 * F : F) + " x " + std::to_string(s.pred.cols) +
           " weight, not transposed");
  if (!s.down.transposed || s.down.cols != F) a.fail("down must be transposed with F = " + std::to_string(F) + " columns");
  if (s.kp < F && s.kp % s.shards != 0) a.fail("kp must be a multiple of shards or >= F");
  s.x = a.buf(1, "x", s.pred.cols, "cols");
  s.bias_in = a.is_nullish(3) ? nullptr : a.buf(3, "biasIn", F, "F");
  s.y = a.buf(0, "y", s.down.rows, "down rows");
  s.scores = a.buf(11, "scores", F, "F");
  size_t cand_len = 0, sel_len = 0;
  int32_t* cand = a.i32_mut(12, "cand", &cand_len);
  int32_t* sel = a.i32_mut(13, "sel", &sel_len);
  const int64_t nc = s.kp >= F ? F : hire::topk_count(F, s.kp, s.shards);
  const int64_t ns = hire::topk_count(nc, std::min(s.k, nc), s.shards);
  if (static_cast<int64_t>(cand_len) < nc) a.fail("cand needs " + std::to_string(nc) + " elements");
  if (static_cast<int64_t>(sel_len) < ns) a.fail("sel needs " + std::to_string(ns) + " elements");
  s.a_sel = a.buf(14, "aSel", ns, "k");
  s.slot = a.slot(15);
  if (s.y == s.x || s.y == s.scores || s.y == s.a_sel || s.x == s.scores || s.x == s.a_sel || s.scores == s.a_sel)
    a.fail("y, x, scores and aSel must be different buffers");
  cu::hire_ffn(s);
  // Recording a graph: the lists and times come from hireResults after each replay.
  double ms[3] = {0, 0, 0};
  if (!cu::capturing()) {
    cu::synchronize();
    cu::hire_results(s.slot, cand, s.n_cand, sel, s.n_sel, ms);
  }
  Napi::Object out = step_times(info.Env(), ms);
  out.Set("candidates", static_cast<double>(s.n_cand));
  out.Set("selected", static_cast<double>(s.n_sel));
  return out;
}

// hireResults(slot, cand, nCand, sel, nSel) -> { scoreMs, rowsMs, downMs }, after the stream is done.
Napi::Value HireResults(const Napi::CallbackInfo& info) {
  CArgs a(info, "cuda.hireResults");
  const int slot = a.slot(0);
  size_t cl = 0, sl = 0;
  int32_t* cand = a.i32_mut(1, "cand", &cl);
  const int64_t nc = a.integer(2, "nCand", 0, kMaxDim);
  int32_t* sel = a.i32_mut(3, "sel", &sl);
  const int64_t ns = a.integer(4, "nSel", 0, kMaxDim);
  if (nc > static_cast<int64_t>(cl) || ns > static_cast<int64_t>(sl)) a.fail("cand or sel is shorter than its count");
  double ms[3];
  cu::hire_results(slot, cand, nc, sel, ns, ms);
  return step_times(info.Env(), ms);
}

// hireHead(logits, x, predictor, head, k, kp, shards, scores, slot) -> { candidates, selected }.
Napi::Value HireHead(const Napi::CallbackInfo& info) {
  CArgs a(info, "cuda.hireHead");
  cu::HireHeadArgs s;
  s.pred = a.quant(2, "predictor");
  const int64_t V = s.pred.rows;
  s.head = a.weight(3, "head");
  if (s.head.transposed || s.head.rows != V || s.head.cols != s.pred.cols)
    a.fail("head must be a " + std::to_string(V) + " x " + std::to_string(s.pred.cols) + " weight, not transposed");
  s.k = a.integer(4, "k", 0, V);
  s.kp = a.integer(5, "kp", 0, kMaxDim);
  s.shards = a.integer(6, "shards", 1, 1024);
  if (s.kp < V && s.kp % s.shards != 0) a.fail("kp must be a multiple of shards or >= V");
  s.logits = a.buf(0, "logits", V, "V");
  s.x = a.buf(1, "x", s.pred.cols, "cols");
  s.scores = a.buf(7, "scores", V, "V");
  s.slot = a.slot(8);
  if (s.logits == s.x || s.logits == s.scores || s.x == s.scores) a.fail("logits, x and scores must be different buffers");
  cu::hire_head(s);
  Napi::Object out = Napi::Object::New(info.Env());
  out.Set("candidates", static_cast<double>(s.n_cand));
  out.Set("selected", static_cast<double>(s.n_sel));
  return out;
}

const napi_type_tag kGraphTag = {0x6869726e63756461ULL, 0x6772617068000004ULL};

Napi::Value SetStep(const Napi::CallbackInfo& info) {
  CArgs a(info, "cuda.setStep");
  cu::set_step(static_cast<int32_t>(a.integer(0, "id", 0, 0x7fffffff)), static_cast<int32_t>(a.integer(1, "pos", 0, 0x7fffffff)));
  return info.Env().Undefined();
}

Napi::Value GraphBegin(const Napi::CallbackInfo& info) {
  cu::graph_begin();
  return info.Env().Undefined();
}

Napi::Value GraphEnd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  cu::Graph* gr = cu::graph_end();
  auto ext = Napi::External<cu::Graph>::New(env, gr, [](Napi::Env, cu::Graph* p) { cu::graph_free(p); });
  if (napi_type_tag_object(env, ext, &kGraphTag) != napi_ok) throw Napi::Error::New(env, "cannot tag a graph handle");
  return ext;
}

Napi::Value GraphAbort(const Napi::CallbackInfo& info) {
  cu::graph_abort();
  return info.Env().Undefined();
}

Napi::Value GraphLaunch(const Napi::CallbackInfo& info) {
  CArgs a(info, "cuda.graphLaunch");
  return Napi::Boolean::New(info.Env(), cu::graph_launch(a.tagged<cu::Graph>(0, kGraphTag, "graph", "CudaGraph")));
}

Napi::Value Capturing(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), cu::capturing()); }

Napi::Value Mark(const Napi::CallbackInfo& info) {
  CArgs a(info, "cuda.mark");
  cu::mark(static_cast<int>(a.integer(0, "index", 0, 1023)));
  return info.Env().Undefined();
}

// markTimes(count): GPU ms from mark i to mark i + 1 for i < count - 1, in one call (a Float64Array).
Napi::Value MarkTimes(const Napi::CallbackInfo& info) {
  CArgs a(info, "cuda.markTimes");
  const int64_t count = a.integer(0, "count", 2, 1024);
  Napi::Float64Array out = Napi::Float64Array::New(info.Env(), static_cast<size_t>(count - 1));
  for (int64_t i = 0; i + 1 < count; ++i)
    out[static_cast<size_t>(i)] = cu::mark_ms(static_cast<int>(i), static_cast<int>(i + 1));
  return out;
}

Napi::Value MarkMs(const Napi::CallbackInfo& info) {
  CArgs a(info, "cuda.markMs");
  return Napi::Number::New(info.Env(), cu::mark_ms(static_cast<int>(a.integer(0, "from", 0, 1023)),
                                                   static_cast<int>(a.integer(1, "to", 0, 1023))));
}

Napi::Value ReadBandwidth(const Napi::CallbackInfo& info) {
  CArgs a(info, "cuda.readBandwidth");
  const int64_t bytes = a.integer(0, "bytes", 1 << 20, int64_t{1} << 40);
  const int64_t reps = a.integer(1, "reps", 1, 1000);
  return Napi::Number::New(info.Env(), cu::read_bandwidth(static_cast<size_t>(bytes), static_cast<int>(reps)));
}

}  // namespace

Napi::Object cuda_exports(Napi::Env env) {
  Napi::Object o = Napi::Object::New(env);
  Export<Compiled>(env, o, "compiled");
  Export<Devices>(env, o, "devices");
  Export<UseDevice>(env, o, "useDevice");
  Export<Alloc>(env, o, "alloc");
  Export<Write>(env, o, "write");
  Export<Read>(env, o, "read");
  Export<Synchronize>(env, o, "synchronize");
  Export<UploadWeight>(env, o, "uploadWeight");
  Export<UploadQuant>(env, o, "uploadQuant");
  Export<Copy2d>(env, o, "copy2d");
  Export<Matmul>(env, o, "matmul");
  Export<MatmulMany>(env, o, "matmulMany");
  Export<GatedMatmul>(env, o, "gatedMatmul");
  Export<Embed>(env, o, "embed");
  Export<RmsNorm>(env, o, "rmsNorm");
  Export<LayerNorm>(env, o, "layerNorm");
  Export<Rope>(env, o, "rope");
  Export<CacheWrite>(env, o, "cacheWrite");
  Export<RopeCacheWrite>(env, o, "ropeCacheWrite");
  Export<Attention>(env, o, "attention");
  Export<Softcap>(env, o, "softcap");
  Export<Argmax>(env, o, "argmax");
  Export<ReadArgmax>(env, o, "readArgmax");
  Export<GatedAct>(env, o, "gatedAct");
  Export<Activate>(env, o, "activate");
  Export<Add>(env, o, "add");
  Export<Gather>(env, o, "gather");
  Export<QuantMatvec>(env, o, "quantMatvec");
  Export<MatvecRows>(env, o, "matvecRows");
  Export<AccumulateCols>(env, o, "accumulateCols");
  Export<Topk>(env, o, "topk");
  Export<HireFfn>(env, o, "hireFfn");
  Export<HireResults>(env, o, "hireResults");
  Export<HireHead>(env, o, "hireHead");
  Export<SetStep>(env, o, "setStep");
  Export<GraphBegin>(env, o, "graphBegin");
  Export<GraphEnd>(env, o, "graphEnd");
  Export<GraphAbort>(env, o, "graphAbort");
  Export<GraphLaunch>(env, o, "graphLaunch");
  Export<Capturing>(env, o, "capturing");
  Export<Mark>(env, o, "mark");
  Export<MarkMs>(env, o, "markMs");
  Export<MarkTimes>(env, o, "markTimes");
  Export<ReadBandwidth>(env, o, "readBandwidth");
  return o;
}

}  // namespace hire_napi
