// N-API bindings of hire_native (the surface declared in core/native/addon.ts): argument validation
// and handle management only; the math lives in ops.cc and the kernels_*.cc files. Every argument is
// re-checked here and a JS Error is thrown rather than touching memory out of bounds. To add an op:
// write a binding below (validate, then call hire::<op>) and register it in Init.
#include <napi.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>

#include "buffer.h"
#include "gguf_dequant.h"
#include "kernels.h"
#include "mapping.h"
#include "napi_args.h"
#include "sparse.h"
#include "threadpool.h"

namespace {

using namespace hire_napi;  // NOLINT: Args, handles and tags are this file's vocabulary

// ---- bindings ------------------------------------------------------------------------------------

Napi::Value MapFile(const Napi::CallbackInfo& info) {
  Args a(info, "mapFile");
  if (!info[0].IsString()) a.fail("path must be a string");
  const std::string path = info[0].As<Napi::String>().Utf8Value();
  if (!info[1].IsBoolean()) a.fail("inMemory must be a boolean");
  const bool in_memory = info[1].As<Napi::Boolean>().Value();
  const int64_t align_at = a.is_nullish(2) ? 0 : a.integer(2, "alignAt", 0, static_cast<int64_t>(kMaxSafe));
  std::shared_ptr<hire::Mapping> m;
  try {
    m = hire::Mapping::open(path, in_memory, static_cast<size_t>(align_at));
  } catch (const std::runtime_error& e) {
    throw Napi::Error::New(info.Env(), e.what());
  }
  Napi::Env env = info.Env();
  auto* h = new MappingHandle{m};
  auto ext = Napi::External<MappingHandle>::New(env, h, [](Napi::Env, MappingHandle* p) { delete p; });
  if (napi_type_tag_object(env, ext, &kMappingTag) != napi_ok) a.fail("cannot tag the mapping handle");
  Napi::Object out = Napi::Object::New(env);
  out.Set("mapping", ext);
  out.Set("byteLength", Napi::Number::New(env, static_cast<double>(m->size())));
  return out;
}

Napi::Value Unmap(const Napi::CallbackInfo& info) {
  Args a(info, "unmap");
  a.mapping(0)->map->release();
  return info.Env().Undefined();
}

// Gives back the memory of a weight read from a file (see Mapping::release_pages), or of an int8 /
// int4 copy of one (WeightHandle::source): bytes given back, 0 for other weights owning their memory. Its
// next use reads the pages back from the file, or quantizes the file's matrix again.
Napi::Value ReleaseWeight(const Napi::CallbackInfo& info) {
  Args a(info, "releaseWeight");
  WeightHandle* w = a.tagged<WeightHandle>(0, kWeightTag, "w", "NativeWeight");
  if (w->source) {
    if (!w->owned) return Napi::Number::New(info.Env(), 0);
    const size_t bytes = w->owned->size();
    w->owned.reset();
    w->given_back = bytes;
    w->source->map->note_copies_given_back(static_cast<int64_t>(bytes));
    Napi::MemoryManagement::AdjustExternalMemory(info.Env(), -static_cast<int64_t>(bytes));
    return Napi::Number::New(info.Env(), static_cast<double>(bytes));
  }
  if (w->owned || !w->map->valid()) return Napi::Number::New(info.Env(), 0);
  return Napi::Number::New(info.Env(), static_cast<double>(w->map->release_pages(w->offset, w->bytes())));
}

Napi::Value ReleasedBytes(const Napi::CallbackInfo& info) {
  Args a(info, "releasedBytes");
  return Napi::Number::New(info.Env(), static_cast<double>(a.mapping(0)->map->released_bytes()));
}

// [offset, offset + bytes) must lie inside the mapping.
void check_in_mapping(const Args& a, const hire::Mapping& m, int64_t offset, int64_t bytes) {
  const uint64_t size = m.size();
  if (static_cast<uint64_t>(offset) > size || static_cast<uint64_t>(bytes) > size - static_cast<uint64_t>(offset))
    a.fail("byte range [" + std::to_string(offset) + ", " + std::to_string(offset + bytes) +
           ") is outside the mapping (" + std::to_string(size) + " bytes)");
}

Napi::Value Weight(const Napi::CallbackInfo& info) {
  Args a(info, "weight");
  MappingHandle* mh = a.mapping(0);
  if (!mh->map->valid()) a.fail("the mapping was unmapped");
  const int64_t offset = a.integer(1, "byteOffset", 0, static_cast<int64_t>(kMaxSafe));
  const int64_t dtype = a.integer(2, "dtype", 0, 2);
  const int64_t rows = a.integer(3, "rows", 1, kMaxDim);
  const int64_t cols = a.integer(4, "cols", 1, kMaxDim);
  if (!info[5].IsBoolean()) a.fail("transposed must be a boolean");
  const bool transposed = info[5].As<Napi::Boolean>().Value();
  const int64_t bytes = mul(a, rows, cols, static_cast<int64_t>(hire::dtype_size(static_cast<int>(dtype))));
  check_in_mapping(a, *mh->map, offset, bytes);
  Napi::Env env = info.Env();
  auto* h = new WeightHandle{mh->map, static_cast<size_t>(offset), static_cast<int>(dtype), rows, cols, transposed, nullptr};
  auto ext = Napi::External<WeightHandle>::New(env, h, [](Napi::Env, WeightHandle* p) { delete p; });
  if (napi_type_tag_object(env, ext, &kWeightTag) != napi_ok) a.fail("cannot tag the weight handle");
  return ext;
}

Napi::Value Matmul(const Napi::CallbackInfo& info) {
  Args a(info, "matmul");
  auto y = a.f32(0, "y");
  auto x = a.f32(1, "x");
  const Mat w = a.weight(2, "w");
  const int64_t n = a.integer(3, "n", 0, kMaxDim);
  Mat bias{};
  const bool has_bias = !a.is_nullish(4);
  if (has_bias) {
    bias = a.weight(4, "bias");
    if (a.vector_len(bias, "bias") != w.rows)
      a.fail("bias has " + std::to_string(bias.rows * bias.cols) + " elements, needs rows = " + std::to_string(w.rows));
  }
  const int64_t ny = mul(a, n, w.rows), nx = mul(a, n, w.cols);
  a.need(y, "y", ny, "n*rows");
  a.need(x, "x", nx, "n*cols");
  a.disjoint(y, ny, "y", x, nx, "x");
  hire::matmul(y.data, x.data, w, n, has_bias ? &bias : nullptr);
  return info.Env().Undefined();
}

// matmulMany(x, y0, w0, bias0, y1, w1, bias1, ...): one token through up to kMaxParts matrices.
Napi::Value MatmulMany(const Napi::CallbackInfo& info) {
  Args a(info, "matmulMany");
  constexpr size_t kMaxParts = 8;
  const size_t argc = info.Length();
  if (argc < 4 || (argc - 1) % 3 != 0 || (argc - 1) / 3 > kMaxParts)
    a.fail("expects x then 1 to " + std::to_string(kMaxParts) + " (y, w, bias) triples");
  auto x = a.f32(0, "x");
  const size_t count = (argc - 1) / 3;
  hire::MatvecPart parts[kMaxParts];
  Mat biases[kMaxParts];
  Args::F32 ys[kMaxParts];
  for (size_t p = 0; p < count; ++p) {
    const std::string tag = "[" + std::to_string(p) + "]";
    const std::string yn = "y" + tag, wn = "w" + tag, bn = "bias" + tag;
    ys[p] = a.f32(1 + 3 * p, yn.c_str());
    const Mat w = a.weight(2 + 3 * p, wn.c_str());
    if (w.transposed) a.fail(wn + " must not be transposed");
    if (p > 0 && w.cols != parts[0].w.cols)
      a.fail(wn + " has " + std::to_string(w.cols) + " columns, w[0] has " + std::to_string(parts[0].w.cols));
    const bool has_bias = !a.is_nullish(3 + 3 * p);
    if (has_bias) {
      biases[p] = a.weight(3 + 3 * p, bn.c_str());
      if (a.vector_len(biases[p], bn.c_str()) != w.rows)
        a.fail(bn + " has " + std::to_string(biases[p].rows * biases[p].cols) + " elements, needs rows = " +
               std::to_string(w.rows));
    }
    a.need(ys[p], yn.c_str(), w.rows, "rows");
    a.need(x, "x", w.cols, "cols");
    a.disjoint(ys[p], w.rows, yn.c_str(), x, w.cols, "x");
    for (size_t q = 0; q < p; ++q) {
      const std::string qn = "y[" + std::to_string(q) + "]";
      a.disjoint(ys[p], w.rows, yn.c_str(), ys[q], parts[q].w.rows, qn.c_str());
    }
    parts[p] = hire::MatvecPart{ys[p].data, w, has_bias ? &biases[p] : nullptr};
  }
  hire::matvec_many(x.data, parts, static_cast<int64_t>(count));
  return info.Env().Undefined();
}

Napi::Value Embed(const Napi::CallbackInfo& info) {
  Args a(info, "embed");
  auto y = a.f32(0, "y");
  const Mat w = a.weight(1, "w");
  auto ids = a.i32(2, "ids");
  if (w.transposed) a.fail("w must not be transposed");
  const int64_t n = static_cast<int64_t>(ids.len);
  a.need(y, "y", mul(a, n, w.cols), "ids.length*cols");
  for (int64_t i = 0; i < n; ++i)
    if (ids.data[i] < 0 || ids.data[i] >= w.rows)
      a.fail("ids[" + std::to_string(i) + "] = " + std::to_string(ids.data[i]) + " is out of range [0, " +
             std::to_string(w.rows) + ")");
  const float scale = static_cast<float>(a.optional_number(3, "scale", 1.0, -HUGE_VAL));
  hire::embed(y.data, w, ids.data, n, scale);
  return info.Env().Undefined();
}

Napi::Value RmsNorm(const Napi::CallbackInfo& info) {
  Args a(info, "rmsNorm");
  auto y = a.f32(0, "y");
  auto x = a.f32(1, "x");
  const Mat g = a.weight(2, "g");
  const int64_t n = a.integer(3, "n", 0, kMaxDim);
  const double eps = a.number(4, "eps");
  if (eps < 0) a.fail("eps must be >= 0");
  const int64_t dim = a.vector_len(g, "g");
  const int64_t count = mul(a, n, dim);
  a.need(y, "y", count, "n*dim");
  a.need(x, "x", count, "n*dim");
  a.disjoint(y, count, "y", x, count, "x", true);
  hire::rms_norm(y.data, x.data, g, n, dim, static_cast<float>(eps));
  return info.Env().Undefined();
}

Napi::Value LayerNorm(const Napi::CallbackInfo& info) {
  Args a(info, "layerNorm");
  auto y = a.f32(0, "y");
  auto x = a.f32(1, "x");
  const Mat g = a.weight(2, "g");
  const Mat b = a.weight(3, "b");
  const int64_t n = a.integer(4, "n", 0, kMaxDim);
  const double eps = a.number(5, "eps");
  if (eps < 0) a.fail("eps must be >= 0");
  const int64_t dim = a.vector_len(g, "g");
  if (a.vector_len(b, "b") != dim) a.fail("b and g must have the same length");
  const int64_t count = mul(a, n, dim);
  a.need(y, "y", count, "n*dim");
  a.need(x, "x", count, "n*dim");
  a.disjoint(y, count, "y", x, count, "x", true);
  hire::layer_norm(y.data, x.data, g, b, n, dim, static_cast<float>(eps));
  return info.Env().Undefined();
}

Napi::Value Rope(const Napi::CallbackInfo& info) {
  Args a(info, "rope");
  auto x = a.f32(0, "x");
  const int64_t n = a.integer(1, "n", 0, kMaxDim);
  const int64_t n_heads = a.integer(2, "nHeads", 1, kMaxDim);
  const int64_t head_dim = a.integer(3, "headDim", 1, kMaxDim);
  auto pos = a.i32(4, "positions");
  auto inv = a.f32(5, "invFreq");
  const int64_t half = static_cast<int64_t>(inv.len);
  if (2 * half > head_dim)
    a.fail("invFreq has " + std::to_string(half) + " entries, so rotDim = " + std::to_string(2 * half) +
           " exceeds headDim = " + std::to_string(head_dim));
  a.need(x, "x", mul(a, n, n_heads, head_dim), "n*nHeads*headDim");
  if (static_cast<uint64_t>(n) > pos.len)
    a.fail("positions has " + std::to_string(pos.len) + " entries, needs n = " + std::to_string(n));
  for (int64_t i = 0; i < n; ++i)
    if (pos.data[i] < 0) a.fail("positions[" + std::to_string(i) + "] = " + std::to_string(pos.data[i]) + " is negative");
  a.disjoint(x, n * n_heads * head_dim, "x", inv, half, "invFreq");
  hire::rope(x.data, n, n_heads, head_dim, pos.data, inv.data, half, a.rope_factor(6));
  return info.Env().Undefined();
}

Napi::Value Attention(const Napi::CallbackInfo& info) {
  Args a(info, "attention");
  auto out = a.f32(0, "out");
  auto q = a.f32(1, "q");
  const auto [kc, vc] = a.kv_pair(2, "kCache", "vCache");
  const int64_t n = a.integer(4, "n", 0, kMaxDim);
  const int64_t n_heads = a.integer(5, "nHeads", 1, kMaxDim);
  const int64_t n_kv = a.integer(6, "nKvHeads", 1, kMaxDim);
  const int64_t head_dim = a.integer(7, "headDim", 1, kMaxDim);
  const int64_t pos0 = a.integer(8, "pos0", 0, kMaxDim);
  const int64_t capacity = a.integer(9, "capacity", 1, kMaxDim);
  const double scale = a.number(10, "scale");
  const int64_t window = a.is_nullish(11) ? 0 : a.integer(11, "window", 0, kMaxDim);
  const double softcap = a.optional_number(12, "softcap", 0.0, 0.0);
  if (n_heads % n_kv != 0)
    a.fail("nHeads = " + std::to_string(n_heads) + " is not a multiple of nKvHeads = " + std::to_string(n_kv));
  a.check_attention_span(pos0, n, window, capacity);
  const int64_t nq = mul(a, n, n_heads, head_dim);
  const int64_t ncache = mul(a, n_kv, capacity, head_dim);
  a.need(out, "out", nq, "n*nHeads*headDim");
  a.need(q, "q", nq, "n*nHeads*headDim");
  a.need(kc, "kCache", ncache, "nKvHeads*capacity*headDim");
  a.need(vc, "vCache", ncache, "nKvHeads*capacity*headDim");
  a.disjoint(out, nq, "out", q, nq, "q", true);
  const size_t cache_bytes = kc.bytes(ncache);
  a.disjoint_bytes(out.data, static_cast<size_t>(nq) * 4, "out", kc.data, cache_bytes, "kCache");
  a.disjoint_bytes(out.data, static_cast<size_t>(nq) * 4, "out", vc.data, cache_bytes, "vCache");
  hire::attention(out.data, q.data, kc.data, vc.data, n, n_heads, n_kv, head_dim, pos0, capacity,
                  static_cast<float>(scale), window, static_cast<float>(softcap), kc.f16);
  return info.Env().Undefined();
}

Napi::Value CacheWrite(const Napi::CallbackInfo& info) {
  Args a(info, "cacheWrite");
  const auto [kc, vc] = a.kv_pair(0, "kCache", "vCache");
  auto k = a.f32(2, "k");
  auto v = a.f32(3, "v");
  const int64_t n = a.integer(4, "n", 0, kMaxDim);
  const int64_t n_kv = a.integer(5, "nKvHeads", 1, kMaxDim);
  const int64_t head_dim = a.integer(6, "headDim", 1, kMaxDim);
  const int64_t pos0 = a.integer(7, "pos0", 0, kMaxDim);
  const int64_t capacity = a.integer(8, "capacity", 1, kMaxDim);
  a.check_cache_write(n, capacity);
  const int64_t nin = mul(a, n, n_kv, head_dim);
  const int64_t ncache = mul(a, n_kv, capacity, head_dim);
  a.need(kc, "kCache", ncache, "nKvHeads*capacity*headDim");
  a.need(vc, "vCache", ncache, "nKvHeads*capacity*headDim");
  a.need(k, "k", nin, "n*nKvHeads*headDim");
  a.need(v, "v", nin, "n*nKvHeads*headDim");
  const size_t cache_bytes = kc.bytes(ncache), in_bytes = static_cast<size_t>(nin) * 4;
  a.disjoint_bytes(kc.data, cache_bytes, "kCache", vc.data, cache_bytes, "vCache");
  a.disjoint_bytes(kc.data, cache_bytes, "kCache", k.data, in_bytes, "k");
  a.disjoint_bytes(kc.data, cache_bytes, "kCache", v.data, in_bytes, "v");
  a.disjoint_bytes(vc.data, cache_bytes, "vCache", k.data, in_bytes, "k");
  a.disjoint_bytes(vc.data, cache_bytes, "vCache", v.data, in_bytes, "v");
  hire::cache_write(kc.data, vc.data, k.data, v.data, n, n_kv, head_dim, pos0, capacity, kc.f16);
  return info.Env().Undefined();
}

Napi::Value SiluMul(const Napi::CallbackInfo& info) {
  Args a(info, "siluMul");
  auto g = a.f32(0, "gate");
  auto u = a.f32(1, "up");
  const int64_t count = a.integer(2, "count", 0, kMaxDim);
  a.need(g, "gate", count, "count");
  a.need(u, "up", count, "count");
  a.disjoint(g, count, "gate", u, count, "up", true);
  hire::silu_mul(g.data, u.data, count);
  return info.Env().Undefined();
}

Napi::Value Activate(const Napi::CallbackInfo& info) {
  Args a(info, "activate");
  auto x = a.f32(0, "x");
  const int64_t count = a.integer(1, "count", 0, kMaxDim);
  const hire::Activation k = a.activation(2, "kind");
  a.need(x, "x", count, "count");
  hire::activate(x.data, count, k);
  return info.Env().Undefined();
}

Napi::Value Add(const Napi::CallbackInfo& info) {
  Args a(info, "add");
  auto y = a.f32(0, "y");
  auto x = a.f32(1, "x");
  const int64_t count = a.integer(2, "count", 0, kMaxDim);
  a.need(y, "y", count, "count");
  a.need(x, "x", count, "count");
  a.disjoint(y, count, "y", x, count, "x", true);
  hire::add(y.data, x.data, count);
  return info.Env().Undefined();
}

Napi::Value Softcap(const Napi::CallbackInfo& info) {
  Args a(info, "softcap");
  auto x = a.f32(0, "x");
  const int64_t count = a.integer(1, "count", 0, kMaxDim);
  const double cap = a.positive_number(2, "cap");
  a.need(x, "x", count, "count");
  hire::softcap(x.data, count, static_cast<float>(cap));
  return info.Env().Undefined();
}

Napi::Value Argmax(const Napi::CallbackInfo& info) {
  Args a(info, "argmax");
  auto x = a.f32(0, "x");
  const int64_t n = a.integer(1, "n", 1, kMaxDim);
  a.need(x, "x", n, "n");
  return Napi::Number::New(info.Env(), static_cast<double>(hire::argmax(x.data, n)));
}

Napi::Value Softmax(const Napi::CallbackInfo& info) {
  Args a(info, "softmax");
  auto x = a.f32(0, "x");
  const int64_t n = a.integer(1, "n", 0, kMaxDim);
  const int64_t dim = a.integer(2, "dim", 0, kMaxDim);
  a.need(x, "x", mul(a, n, dim), "n*dim");
  if (dim > 0) hire::softmax(x.data, n, dim);
  return info.Env().Undefined();
}

// ---- HiRE sparse ops -----------------------------------------------------------------------------

// A weight handle over native memory it owns; V8 is told about the memory so GC pressure is right.
Napi::Value OwnedWeight(const Args& a, Napi::Env env, std::shared_ptr<hire::Buffer> buf, int dtype, int64_t rows,
                        int64_t cols, bool transposed, int64_t group = 0) {
  const int64_t bytes = static_cast<int64_t>(buf->size());
  auto* h = new WeightHandle{nullptr, 0, dtype, rows, cols, transposed, std::move(buf), group};
  auto ext = Napi::External<WeightHandle>::New(env, h, [](Napi::Env e, WeightHandle* p) {
    if (p->owned) Napi::MemoryManagement::AdjustExternalMemory(e, -static_cast<int64_t>(p->owned->size()));
    if (p->given_back > 0) p->source->map->note_copies_given_back(-static_cast<int64_t>(p->given_back));
    delete p;
  });
  Napi::MemoryManagement::AdjustExternalMemory(env, bytes);
  if (napi_type_tag_object(env, ext, &kWeightTag) != napi_ok) a.fail("cannot tag the weight handle");
  return ext;
}

Napi::Value Relayout(const Napi::CallbackInfo& info) {
  Args a(info, "relayout");
  const Mat w = a.weight(0, "w");
  const bool transposed = a.boolean(1, "transposed");
  const int out_dtype = hire::relayout_dtype(w.dtype);
  const int64_t bytes = mul(a, w.rows, w.cols, static_cast<int64_t>(hire::dtype_size(out_dtype)));
  auto buf = hire::Buffer::alloc(static_cast<size_t>(bytes));
  hire::relayout(w, transposed, buf->data());
  return OwnedWeight(a, info.Env(), std::move(buf), out_dtype, w.rows, w.cols, transposed);
}

// An int8 or int4 copy of w (kQ8 / kQ4: groups of `groupSize` values, one f16 scale each; quant.h),
// rows in memory order: what a model loaded with int8 or int4 weights multiplies instead of w.
Napi::Value QuantizeWeight(const Napi::CallbackInfo& info) {
  Args a(info, "quantizeWeight");
  const Mat w = a.weight(0, "w");
  const int64_t group = a.integer(1, "groupSize", 32, 4096);
  if (group % 32 != 0) a.fail("groupSize must be a multiple of 32, got " + std::to_string(group));
  const int64_t bits = a.is_nullish(2) ? 8 : a.integer(2, "bits", 4, 8);
  if (bits != 4 && bits != 8) a.fail("bits must be 4 or 8, got " + std::to_string(bits));
  if (hire::is_quant(w.dtype)) a.fail("w is already quantized");
  std::shared_ptr<hire::QuantMatrix> q = hire::quantize(w, static_cast<int>(bits), group);
  const int dtype = bits == 4 ? hire::kQ4 : hire::kQ8;
  Napi::Value out = OwnedWeight(a, info.Env(), q->mem, dtype, w.rows, w.cols, false, group);
  // A copy of a file's matrix can be given back and made again from the file (WeightHandle::source).
  const WeightHandle* from = a.tagged<WeightHandle>(0, kWeightTag, "w", "NativeWeight");
  if (!from->owned) out.As<Napi::External<WeightHandle>>().Data()->source = std::make_shared<WeightHandle>(*from);
  return out;
}

// quantizeGguf(mapping, byteOffset, ggmlType, rows, cols, bits, rowOrder?): rows x cols of a GGUF
// file's blocks (a mapped tensor's data) as an int8 / int4 weight (kQ8 / kQ4 / kQ4M, groups of 32)
// holding their codes and scales, for the types that fit (gguf_quant_dtype: Q8_0, Q4_0, Q5_0 as
// int8, Q4_0 as int4, Q4_1 and Q4_K as int4 with mins). rowOrder (an Int32Array of rows source rows, or null) puts source row
// rowOrder[r] at row r: llama.cpp's interleaved rotary rows of q and k back in rotate-half order.
// Like quantizeWeight's copies it can be given back and is made again from the same blocks.
Napi::Value QuantizeGguf(const Napi::CallbackInfo& info) {
  Args a(info, "quantizeGguf");
  MappingHandle* mh = a.mapping(0);
  if (!mh->map->valid()) a.fail("the mapping was unmapped");
  const int64_t offset = a.integer(1, "byteOffset", 0, static_cast<int64_t>(kMaxSafe));
  const int64_t type = a.integer(2, "ggmlType", 0, 255);
  const int64_t rows = a.integer(3, "rows", 1, kMaxDim);
  const int64_t cols = a.integer(4, "cols", 1, kMaxDim);
  const int64_t bits = a.integer(5, "bits", 4, 8);
  if (bits != 4 && bits != 8) a.fail("bits must be 4 or 8, got " + std::to_string(bits));
  const int dtype = hire::gguf_quant_dtype(static_cast<int>(type), static_cast<int>(bits));
  if (dtype < 0)
    a.fail("ggml type " + std::to_string(type) + " does not fit int" + std::to_string(bits) + " groups of 32");
  int values = 0, block_bytes = 0;
  hire::gguf_block_shape(static_cast<int>(type), values, block_bytes);
  if (cols % values != 0)
    a.fail("cols must be whole blocks of " + std::to_string(values) + ", got " + std::to_string(cols));
  const int64_t bytes = mul(a, rows, cols / values, block_bytes);
  check_in_mapping(a, *mh->map, offset, bytes);
  std::shared_ptr<std::vector<int32_t>> order;
  if (!a.is_nullish(6)) {
    if (!info[6].IsTypedArray() || info[6].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
      a.fail("rowOrder must be an Int32Array or null");
    Napi::Int32Array o = info[6].As<Napi::Int32Array>();
    if (static_cast<int64_t>(o.ElementLength()) != rows)
      a.fail("rowOrder has " + std::to_string(o.ElementLength()) + " entries, needs rows = " + std::to_string(rows));
    order = std::make_shared<std::vector<int32_t>>(o.Data(), o.Data() + rows);
    for (const int32_t r : *order)
      if (r < 0 || r >= rows) a.fail("rowOrder names row " + std::to_string(r) + ", outside [0, " + std::to_string(rows) + ")");
  }
  try {
    mh->map->check_unchanged("its blocks cannot be read");
    mh->map->ensure_resident(static_cast<size_t>(offset), static_cast<size_t>(bytes));
  } catch (const std::runtime_error& e) {
    a.fail(e.what());
  }
  auto copy = hire::gguf_to_quant(static_cast<int>(type), mh->map->data() + offset, rows, cols, static_cast<int>(bits),
                                  order ? order->data() : nullptr);
  Napi::Value out = OwnedWeight(a, info.Env(), copy->mem, dtype, rows, cols, false, 32);
  // What WeightHandle::make_copy needs to make it again once given back.
  WeightHandle* h = out.As<Napi::External<WeightHandle>>().Data();
  h->source = std::make_shared<WeightHandle>(WeightHandle{mh->map, static_cast<size_t>(offset), dtype, rows, cols, false, nullptr});
  h->ggml_type = static_cast<int>(type);
  h->ggml_bytes = static_cast<size_t>(bytes);
  h->row_order = order;
  // The copy serves the blocks now: their pages go back (a load held both: 1.78 GB of RSS for the 1B
  // shape's 0.77 GB of Q4_K copies); making the copy again reads them back (make_copy).
  mh->map->release_pages(static_cast<size_t>(offset), static_cast<size_t>(bytes));
  return out;
}

// Rows of a and b interleaved (a0, b0, a1, b1, ...): HiRE reads a neuron's W_gate and W_up rows
// as one contiguous 2-row read instead of two scattered ones.
Napi::Value InterleaveRows(const Napi::CallbackInfo& info) {
  Args a(info, "interleaveRows");
  const Mat x = a.weight(0, "a");
  const Mat y = a.weight(1, "b");
  if (x.transposed || y.transposed) a.fail("a and b must not be transposed; relayout(w, false) first");
  if (x.dtype != y.dtype || x.rows != y.rows || x.cols != y.cols || x.group != y.group)
    a.fail("a and b must have the same dtype and shape");
  const int64_t row = hire::mat_row_bytes(x);
  // Quantized rows keep the quantized kernels' spare bytes after the last row.
  const int64_t slack = hire::is_quant(x.dtype) ? hire::QuantMatrix::kQuantSlack : 0;
  auto buf = hire::Buffer::alloc(static_cast<size_t>(mul(a, 2 * x.rows, row) + slack));
  hire::interleave_rows(x, y, static_cast<unsigned char*>(buf->data()));
  return OwnedWeight(a, info.Env(), std::move(buf), x.dtype, 2 * x.rows, x.cols, false, x.group);
}

Napi::Value WeightFromArray(const Napi::CallbackInfo& info) {
  Args a(info, "weightFromArray");
  const int64_t dtype = a.integer(1, "dtype", 0, 2);
  const int64_t rows = a.integer(2, "rows", 1, kMaxDim);
  const int64_t cols = a.integer(3, "cols", 1, kMaxDim);
  const bool transposed = a.boolean(4, "transposed");
  const int64_t count = mul(a, rows, cols);
  Napi::Value v = info[0];
  const napi_typedarray_type want = dtype == hire::kF32 ? napi_float32_array : napi_uint16_array;
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != want)
    a.fail(std::string("data must be a ") + (dtype == hire::kF32 ? "Float32Array for F32" : "Uint16Array (raw bits) for F16 / BF16"));
  Napi::TypedArray arr = v.As<Napi::TypedArray>();
  if (arr.ElementLength() < static_cast<size_t>(count))
    a.fail("data has " + std::to_string(arr.ElementLength()) + " elements, needs at least rows*cols = " +
           std::to_string(count));
  const size_t bytes = static_cast<size_t>(count) * hire::dtype_size(static_cast<int>(dtype));
  auto buf = hire::Buffer::alloc(bytes);
  const unsigned char* src = static_cast<const unsigned char*>(arr.ArrayBuffer().Data()) + arr.ByteOffset();
  std::memcpy(buf->data(), src, bytes);
  return OwnedWeight(a, info.Env(), std::move(buf), static_cast<int>(dtype), rows, cols, transposed);
}

Napi::Value WeightInfo(const Napi::CallbackInfo& info) {
  Args a(info, "weightInfo");
  WeightHandle* w = a.tagged<WeightHandle>(0, kWeightTag, "w", "NativeWeight");
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("rows", Napi::Number::New(env, static_cast<double>(w->rows)));
  o.Set("cols", Napi::Number::New(env, static_cast<double>(w->cols)));
  o.Set("dtype", Napi::Number::New(env, w->dtype));
  o.Set("transposed", Napi::Boolean::New(env, w->transposed));
  o.Set("bytes", Napi::Number::New(env, static_cast<double>(w->bytes())));
  if (hire::is_quant(w->dtype)) o.Set("groupSize", Napi::Number::New(env, static_cast<double>(w->group)));
  return o;
}

// The largest power of two (up to 4096) dividing a weight's data address: 64 and up means every row
// of a 64-byte multiple starts a cache line (see Mapping::read_in).
Napi::Value WeightAlignment(const Napi::CallbackInfo& info) {
  Args a(info, "weightAlignment");
  const uintptr_t addr = reinterpret_cast<uintptr_t>(a.weight(0, "w").data);
  const uintptr_t low = addr == 0 ? 4096 : std::min<uintptr_t>(addr & (~addr + 1), 4096);
  return Napi::Number::New(info.Env(), static_cast<double>(low));
}

Napi::Value TransposeView(const Napi::CallbackInfo& info) {
  Args a(info, "transposeView");
  WeightHandle* w = a.tagged<WeightHandle>(0, kWeightTag, "w", "NativeWeight");
  if (hire::is_quant(w->dtype))
    a.fail("a quantized weight has no transposed view; relayout(w, true) gives a bf16 copy");
  if (!w->owned && !w->map->valid()) a.fail("w belongs to a mapping that was unmapped");
  // Same bytes, logical shape swapped, layout flag flipped; shares the mapping or the owned buffer.
  auto* h = new WeightHandle{w->map, w->offset, w->dtype, w->cols, w->rows, !w->transposed, w->owned};
  Napi::Env env = info.Env();
  auto ext = Napi::External<WeightHandle>::New(env, h, [](Napi::Env, WeightHandle* p) { delete p; });
  if (napi_type_tag_object(env, ext, &kWeightTag) != napi_ok) a.fail("cannot tag the weight handle");
  return ext;
}

Napi::Value MatvecRows(const Napi::CallbackInfo& info) {
  Args a(info, "matvecRows");
  auto y = a.f32(0, "y");
  auto x = a.f32(1, "x");
  const Mat w = a.weight(2, "w");
  auto idx = a.i32(3, "idx");
  const int64_t count = a.integer(4, "count", 0, kMaxDim);
  if (w.transposed) a.fail("w must not be transposed (stored [rows][cols]); relayout(w, false) first");
  if (static_cast<uint64_t>(count) > idx.len)
    a.fail("idx has " + std::to_string(idx.len) + " elements, needs count = " + std::to_string(count));
  a.need(y, "y", count, "count");
  a.need(x, "x", w.cols, "cols");
  a.indices(idx, count, w.rows, "idx", "rows of w");
  a.disjoint(y, count, "y", x, w.cols, "x");
  a.disjoint_bytes(y.data, static_cast<size_t>(count) * 4, "y", idx.data, static_cast<size_t>(count) * 4, "idx");
  hire::matvec_rows(y.data, x.data, w, idx.data, count);
  return info.Env().Undefined();
}

Napi::Value AccumulateCols(const Napi::CallbackInfo& info) {
  Args a(info, "accumulateCols");
  auto y = a.f32(0, "y");
  auto av = a.f32(1, "a");
  const Mat w = a.weight(2, "w");
  auto idx = a.i32(3, "idx");
  const int64_t count = a.integer(4, "count", 0, kMaxDim);
  if (!w.transposed) a.fail("w must be transposed (stored [cols][rows]); relayout(w, true) first");
  if (static_cast<uint64_t>(count) > idx.len)
    a.fail("idx has " + std::to_string(idx.len) + " elements, needs count = " + std::to_string(count));
  a.need(y, "y", w.rows, "rows");
  a.need(av, "a", count, "count");
  a.indices(idx, count, w.cols, "idx", "columns of w");
  a.disjoint(y, w.rows, "y", av, count, "a");
  a.disjoint_bytes(y.data, static_cast<size_t>(w.rows) * 4, "y", idx.data, static_cast<size_t>(count) * 4, "idx");
  hire::accumulate_cols(y.data, av.data, w, idx.data, count);
  return info.Env().Undefined();
}

Napi::Value WrapQuant(const Args& a, Napi::Env env, std::shared_ptr<hire::QuantMatrix> q);

Napi::Value Quantize(const Napi::CallbackInfo& info) {
  Args a(info, "quantize");
  const Mat w = a.weight(0, "w");
  const int64_t bits = a.integer(1, "bits", 0, 64);
  if (bits != 4 && bits != 8) a.fail("bits must be 4 or 8, got " + std::to_string(bits));
  const int64_t group = a.integer(2, "groupSize", 32, 4096);
  if (group % 32 != 0) a.fail("groupSize must be a multiple of 32, got " + std::to_string(group));
  mul(a, w.rows, w.cols);  // size sanity
  return WrapQuant(a, info.Env(), hire::quantize(w, static_cast<int>(bits), group));
}

Napi::Value WrapQuant(const Args& a, Napi::Env env, std::shared_ptr<hire::QuantMatrix> q) {
  const int64_t bytes = q->bytes();
  auto* h = new QuantHandle{std::move(q)};
  auto ext = Napi::External<QuantHandle>::New(env, h, [](Napi::Env e, QuantHandle* p) {
    Napi::MemoryManagement::AdjustExternalMemory(e, -p->q->bytes());
    delete p;
  });
  Napi::MemoryManagement::AdjustExternalMemory(env, bytes);
  if (napi_type_tag_object(env, ext, &kQuantTag) != napi_ok) a.fail("cannot tag the quant handle");
  return ext;
}

// A quantized weight's stored bytes (codes + scales, exactly what quantMatvec reads) to a file, and
// back: the disk cache of int4/int8 predictors. The shape is the caller's to check (it keys the file).
Napi::Value QuantWrite(const Napi::CallbackInfo& info) {
  Args a(info, "quantWrite");
  const hire::QuantMatrix& q = a.quant(0, "q");
  if (!info[1].IsString()) a.fail("path must be a string");
  const std::string path = info[1].As<Napi::String>().Utf8Value();
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) a.fail("cannot open " + path + " for writing");
  const size_t n = static_cast<size_t>(q.bytes());
  const bool ok = std::fwrite(q.mem->data(), 1, n, f) == n;
  if (std::fclose(f) != 0 || !ok) a.fail("cannot write " + path);
  return info.Env().Undefined();
}

Napi::Value QuantRead(const Napi::CallbackInfo& info) {
  Args a(info, "quantRead");
  if (!info[0].IsString()) a.fail("path must be a string");
  const std::string path = info[0].As<Napi::String>().Utf8Value();
  const int64_t rows = a.integer(1, "rows", 1, kMaxDim);
  const int64_t cols = a.integer(2, "cols", 1, kMaxDim);
  const int64_t bits = a.integer(3, "bits", 0, 64);
  if (bits != 4 && bits != 8) a.fail("bits must be 4 or 8, got " + std::to_string(bits));
  const int64_t group = a.integer(4, "groupSize", 32, 4096);
  if (group % 32 != 0) a.fail("groupSize must be a multiple of 32, got " + std::to_string(group));
  mul(a, rows, cols);
  auto q = std::make_shared<hire::QuantMatrix>(hire::QuantMatrix::shape(rows, cols, static_cast<int>(bits), group));
  const size_t n = static_cast<size_t>(q->bytes());
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) a.fail("cannot open " + path);
  struct stat st;
  const long long size = ::fstat(fd, &st) == 0 ? static_cast<long long>(st.st_size) : -1;
  if (size < 0 || static_cast<size_t>(size) != n) {
    ::close(fd);
    a.fail(path + " holds " + std::to_string(size) + " bytes, the shape needs " + std::to_string(n));
  }
  q->mem = hire::Buffer::alloc(n + hire::QuantMatrix::kQuantSlack);
  const int err = hire::read_fully(fd, q->mem->data(), n);
  ::close(fd);
  if (err != 0) a.fail("cannot read " + path + ": " + std::strerror(err));
  std::memset(q->mem->data() + n, 0, hire::QuantMatrix::kQuantSlack);
  return WrapQuant(a, info.Env(), std::move(q));
}

Napi::Value QuantMatvec(const Napi::CallbackInfo& info) {
  Args a(info, "quantMatvec");
  auto y = a.f32(0, "y");
  auto x = a.f32(1, "x");
  const hire::QuantMatrix& q = a.quant(2, "q");
  a.need(y, "y", q.rows, "rows");
  a.need(x, "x", q.cols, "cols");
  a.disjoint(y, q.rows, "y", x, q.cols, "x");
  hire::quant_matvec(y.data, x.data, q);
  return info.Env().Undefined();
}

Napi::Value QuantInfo(const Napi::CallbackInfo& info) {
  Args a(info, "quantInfo");
  const hire::QuantMatrix& q = a.quant(0, "q");
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("rows", Napi::Number::New(env, static_cast<double>(q.rows)));
  o.Set("cols", Napi::Number::New(env, static_cast<double>(q.cols)));
  o.Set("bits", Napi::Number::New(env, q.bits));
  o.Set("groupSize", Napi::Number::New(env, static_cast<double>(q.group)));
  o.Set("bytes", Napi::Number::New(env, static_cast<double>(q.bytes())));
  return o;
}

Napi::Value QuantRow(const Napi::CallbackInfo& info) {
  Args a(info, "quantRow");
  const hire::QuantMatrix& q = a.quant(0, "q");
  const int64_t r = a.integer(1, "r", 0, kMaxDim);
  if (r >= q.rows) a.fail("r = " + std::to_string(r) + " is out of range [0, " + std::to_string(q.rows) + ")");
  auto out = a.f32(2, "out");
  a.need(out, "out", q.cols, "cols");
  hire::quant_row(q, r, out.data);
  return info.Env().Undefined();
}

// dequantizeGguf(type, src: Uint8Array, n, out: Float32Array | Uint16Array, outDtype): n values of a
// GGUF tensor (ggml type) into out as f32 (Float32Array) or f16 / bf16 bits (Uint16Array).
Napi::Value DequantizeGguf(const Napi::CallbackInfo& info) {
  Args a(info, "dequantizeGguf");
  const int64_t type = a.integer(0, "type", 0, 255);
  int values = 0, block_bytes = 0;
  if (!hire::gguf_block_shape(static_cast<int>(type), values, block_bytes))
    a.fail("ggml type " + std::to_string(type) + " is not one this addon dequantizes");
  if (!info[1].IsTypedArray() || info[1].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array)
    a.fail("src must be a Uint8Array");
  Napi::Uint8Array src = info[1].As<Napi::Uint8Array>();
  const int64_t n = a.integer(2, "n", 0, int64_t{1} << 40);
  const int64_t dtype = a.integer(4, "outDtype", 0, 2);
  if (n % values != 0) a.fail("n is not a whole number of blocks");
  if (static_cast<int64_t>(src.ByteLength()) != mul(a, n / values, block_bytes))
    a.fail("src has " + std::to_string(src.ByteLength()) + " bytes; n values need " +
           std::to_string((n / values) * block_bytes));
  const napi_typedarray_type want = dtype == hire::kF32 ? napi_float32_array : napi_uint16_array;
  if (!info[3].IsTypedArray() || info[3].As<Napi::TypedArray>().TypedArrayType() != want)
    a.fail(dtype == hire::kF32 ? "out must be a Float32Array for f32" : "out must be a Uint16Array for f16 / bf16");
  Napi::TypedArray out = info[3].As<Napi::TypedArray>();
  if (static_cast<int64_t>(out.ElementLength()) < n) a.fail("out has fewer than n elements");
  void* dst = static_cast<unsigned char*>(out.ArrayBuffer().Data()) + out.ByteOffset();
  hire::gguf_dequantize(static_cast<int>(type), src.Data(), n, static_cast<int>(dtype), dst);
  return info.Env().Undefined();
}

// quantizeBlocks(ggmlType, x: Float32Array, out: Uint8Array): x (whole blocks) as blocks of ggml's
// Q8_0 (8), Q4_0 (2), Q4_K (12) or Q6_K (14) in out (gguf_quantize; GGUF export).
Napi::Value QuantizeBlocks(const Napi::CallbackInfo& info) {
  Args a(info, "quantizeBlocks");
  const int64_t type = a.integer(0, "ggmlType", 0, 255);
  int values = 0, block_bytes = 0;
  if (!hire::gguf_quantizes(static_cast<int>(type)) || !hire::gguf_block_shape(static_cast<int>(type), values, block_bytes))
    a.fail("ggml type " + std::to_string(type) + " is not one this addon quantizes to (Q8_0, Q4_0, Q5_0, Q4_K, Q6_K)");
  auto x = a.f32(1, "x");
  if (x.len % values != 0)
    a.fail("x has " + std::to_string(x.len) + " values, not whole blocks of " + std::to_string(values));
  if (!info[2].IsTypedArray() || info[2].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array)
    a.fail("out must be a Uint8Array");
  Napi::Uint8Array out = info[2].As<Napi::Uint8Array>();
  const size_t need = (x.len / values) * static_cast<size_t>(block_bytes);
  if (out.ByteLength() != need)
    a.fail("out has " + std::to_string(out.ByteLength()) + " bytes; x needs " + std::to_string(need));
  hire::gguf_quantize(static_cast<int>(type), x.data, static_cast<int64_t>(x.len), out.Data());
  return info.Env().Undefined();
}

Napi::Value Topk(const Napi::CallbackInfo& info) {
  Args a(info, "topk");
  auto values = a.f32(0, "values");
  const int64_t n = a.integer(1, "n", 0, 2147483647);
  const int64_t k = a.integer(2, "k", 0, kMaxDim);
  const bool by_abs = a.boolean(3, "byAbs");
  const int64_t shards = a.integer(4, "shards", 1, int64_t{1} << 20);
  size_t out_len = 0;
  int32_t* out = a.i32_mut(5, "out", &out_len);
  a.need(values, "values", n, "n");
  const int64_t count = hire::topk_count(n, k, shards);
  if (static_cast<uint64_t>(count) > out_len)
    a.fail("out has " + std::to_string(out_len) + " elements, needs " + std::to_string(count));
  a.disjoint_bytes(values.data, static_cast<size_t>(n) * 4, "values", out, static_cast<size_t>(count) * 4, "out");
  return Napi::Number::New(info.Env(), static_cast<double>(hire::topk(values.data, n, k, by_abs, shards, out)));
}

// {candidates, selected}: what a HiRE step (hireFfn, hireHead) computed exactly and kept.
Napi::Object step_counts(Napi::Env env, int64_t n_cand, int64_t n_sel) {
  Napi::Object r = Napi::Object::New(env);
  r.Set("candidates", Napi::Number::New(env, static_cast<double>(n_cand)));
  r.Set("selected", Napi::Number::New(env, static_cast<double>(n_sel)));
  return r;
}

// One HiRE FFN step's arguments (hireFfn's, in order), checked: the step, and its output arrays.
struct ParsedHireFfn {
  hire::HireFfnStep st;
  // Every output apart from every other array (the inputs x and biasIn may share memory).
  struct Range {
    const void* p;
    int64_t n;
    const char* name;
  };
  Range outputs[5];
};

ParsedHireFfn parse_hire_ffn(const Args& a) {
  auto y = a.f32(0, "y");
  auto x = a.f32(1, "x");
  hire::HireFfnStep st{};
  st.pred = &a.quant(2, "predictor");
  const int64_t F = st.pred->rows, H = st.pred->cols;
  Args::F32 bias{nullptr, 0};
  if (!a.is_nullish(3)) {
    bias = a.f32(3, "biasIn");
    a.need(bias, "biasIn", F, "predictor rows");
  }
  st.rows = a.weight(4, "rows");
  st.gated = a.boolean(5, "gated");
  st.act = a.activation(6, "activation");
  st.down = a.weight(7, "down");
  st.k = a.integer(8, "k", 0, F);
  st.kp = a.integer(9, "kp", 1, F);
  st.shards = a.integer(10, "shards", 1, F);
  auto scores = a.f32(11, "scores");
  size_t cand_len = 0, sel_len = 0;
  st.cand = a.i32_mut(12, "cand", &cand_len);
  st.sel = a.i32_mut(13, "sel", &sel_len);
  auto a_sel = a.f32(14, "aSel");
  if (st.rows.transposed) a.fail("rows must not be transposed (stored [rows][cols])");
  if (st.rows.cols != H || st.rows.rows != (st.gated ? 2 * F : F))
    a.fail("rows is " + std::to_string(st.rows.rows) + " x " + std::to_string(st.rows.cols) + ", the predictor needs " +
           std::to_string(st.gated ? 2 * F : F) + " x " + std::to_string(H) +
           (st.gated ? " (gate and up rows interleaved)" : ""));
  if (!st.down.transposed || st.down.cols != F)
    a.fail("down must be transposed (stored [cols][rows]) with " + std::to_string(F) + " columns");
  if (st.kp < F && st.kp % st.shards != 0)
    a.fail("kp = " + std::to_string(st.kp) + " must be a multiple of shards = " + std::to_string(st.shards) +
           " or cover all " + std::to_string(F) + " neurons");
  const int64_t nc = hire::topk_count(F, st.kp, st.shards);
  const int64_t ns = hire::topk_count(nc, st.k, st.shards);
  const int64_t out = st.down.rows;
  a.need(y, "y", out, "down rows");
  a.need(x, "x", H, "predictor cols");
  a.need(scores, "scores", F, "predictor rows");
  a.need(a_sel, "aSel", ns, "selected count");
  if (static_cast<uint64_t>(nc) > cand_len)
    a.fail("cand has " + std::to_string(cand_len) + " elements, needs " + std::to_string(nc));
  if (static_cast<uint64_t>(ns) > sel_len)
    a.fail("sel has " + std::to_string(sel_len) + " elements, needs " + std::to_string(ns));
  const ParsedHireFfn::Range arrays[] = {{y.data, out, "y"},  {scores.data, F, "scores"}, {st.cand, nc, "cand"},
                                         {st.sel, ns, "sel"}, {a_sel.data, ns, "aSel"},   {x.data, H, "x"},
                                         {bias.data, bias.data ? F : 0, "biasIn"}};
  for (size_t i = 0; i < 5; ++i)
    for (size_t j = i + 1; j < sizeof arrays / sizeof arrays[0]; ++j)
      a.disjoint_bytes(arrays[i].p, static_cast<size_t>(arrays[i].n) * 4, arrays[i].name, arrays[j].p,
                       static_cast<size_t>(arrays[j].n) * 4, arrays[j].name);
  st.x = x.data;
  st.bias_in = bias.data;
  st.y = y.data;
  st.scores = scores.data;
  st.a_sel = a_sel.data;
  ParsedHireFfn p{st, {arrays[0], arrays[1], arrays[2], arrays[3], arrays[4]}};
  return p;
}

Napi::Object hire_ffn_result(Napi::Env env, const hire::HireFfnStep& st) {
  Napi::Object r = step_counts(env, st.n_cand, st.n_sel);
  r.Set("scoreMs", Napi::Number::New(env, st.ms[0]));
  r.Set("rowsMs", Napi::Number::New(env, st.ms[1]));
  r.Set("downMs", Napi::Number::New(env, st.ms[2]));
  return r;
}

Napi::Value HireFfn(const Napi::CallbackInfo& info) {
  ParsedHireFfn p = parse_hire_ffn(Args(info, "hireFfn"));
  hire::hire_ffn(p.st);
  return hire_ffn_result(info.Env(), p.st);
}

// Several independent steps (a mixture layer's routed experts), each an array of hireFfn's
// arguments, with global selections (shards 1): see hire::hire_ffn_batch. No step's outputs may
// overlap another step's arrays.
Napi::Value HireFfnBatch(const Napi::CallbackInfo& info) {
  Args a(info, "hireFfnBatch");
  if (!a.at(0).IsArray()) a.fail("steps must be an array of hireFfn argument arrays");
  Napi::Array items = a.at(0).As<Napi::Array>();
  std::vector<ParsedHireFfn> parsed;
  for (uint32_t i = 0; i < items.Length(); ++i) {
    if (!items.Get(i).IsArray()) a.fail("steps[" + std::to_string(i) + "] must be an array of hireFfn's arguments");
    const std::string name = "hireFfnBatch: steps[" + std::to_string(i) + "]";
    parsed.push_back(parse_hire_ffn(Args(info, name.c_str(), items.Get(i).As<Napi::Array>())));
    if (parsed.back().st.shards != 1) a.fail("steps[" + std::to_string(i) + "]: shards must be 1");
  }
  for (size_t i = 0; i < parsed.size(); ++i)
    for (size_t j = i + 1; j < parsed.size(); ++j)
      for (const auto& u : parsed[i].outputs)
        for (const auto& v : parsed[j].outputs)
          a.disjoint_bytes(u.p, static_cast<size_t>(u.n) * 4, ("steps[" + std::to_string(i) + "]." + u.name).c_str(), v.p,
                           static_cast<size_t>(v.n) * 4, ("steps[" + std::to_string(j) + "]." + v.name).c_str());
  std::vector<hire::HireFfnStep*> steps;
  for (auto& p : parsed) steps.push_back(&p.st);
  hire::hire_ffn_batch(steps.data(), static_cast<int64_t>(steps.size()));
  Napi::Env env = info.Env();
  Napi::Array out = Napi::Array::New(env, parsed.size());
  for (size_t i = 0; i < parsed.size(); ++i) out.Set(static_cast<uint32_t>(i), hire_ffn_result(env, parsed[i].st));
  return out;
}

Napi::Value HireHead(const Napi::CallbackInfo& info) {
  Args a(info, "hireHead");
  auto logits = a.f32(0, "logits");
  auto x = a.f32(1, "x");
  hire::HireHeadStep st{};
  st.pred = &a.quant(2, "predictor");
  const int64_t V = st.pred->rows, H = st.pred->cols;
  st.head = a.weight(3, "head");
  st.k = a.integer(4, "k", 0, V);
  st.kp = a.integer(5, "kp", 1, V);
  st.shards = a.integer(6, "shards", 1, V);
  auto scores = a.f32(7, "scores");
  if (st.head.transposed || st.head.rows != V || st.head.cols != H)
    a.fail("head must be " + std::to_string(V) + " x " + std::to_string(H) + " (the predictor's shape), stored [rows][cols]");
  if (st.kp < V && st.kp % st.shards != 0)
    a.fail("kp = " + std::to_string(st.kp) + " must be a multiple of shards = " + std::to_string(st.shards) +
           " or cover all " + std::to_string(V) + " rows");
  a.need(logits, "logits", V, "predictor rows");
  a.need(scores, "scores", V, "predictor rows");
  a.need(x, "x", H, "predictor cols");
  a.disjoint_bytes(logits.data, static_cast<size_t>(V) * 4, "logits", scores.data, static_cast<size_t>(V) * 4, "scores");
  a.disjoint_bytes(logits.data, static_cast<size_t>(V) * 4, "logits", x.data, static_cast<size_t>(H) * 4, "x");
  a.disjoint_bytes(scores.data, static_cast<size_t>(V) * 4, "scores", x.data, static_cast<size_t>(H) * 4, "x");
  st.x = x.data;
  st.logits = logits.data;
  st.scores = scores.data;
  hire::hire_head(st);
  return step_counts(info.Env(), st.n_cand, st.n_sel);
}

Napi::Value GetThreads(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), hire::ThreadPool::instance().threads());
}

Napi::Value SetThreads(const Napi::CallbackInfo& info) {
  Args a(info, "setThreads");
  const int64_t n = a.integer(0, "n", 1, 256);
  hire::ThreadPool::instance().resize(static_cast<int>(n));
  return info.Env().Undefined();
}

// How many floats into x the first 64-byte boundary lies (0 .. 15): JavaScript allocates typed
// arrays 16-byte aligned, and a 64-byte load that straddles two cache lines costs two.
Napi::Value CacheLineOffset(const Napi::CallbackInfo& info) {
  Args a(info, "cacheLineOffset");
  const Args::F32 x = a.f32(0, "x");
  const uintptr_t p = reinterpret_cast<uintptr_t>(x.data);
  return Napi::Number::New(info.Env(), static_cast<double>(((64 - p % 64) % 64) / sizeof(float)));
}

Napi::Value HugePageOffset(const Napi::CallbackInfo& info) {
  Args a(info, "hugePageOffset");
  const Args::F32 x = a.f32(0, "x");
  const size_t bytes = x.len * sizeof(float);
  return Napi::Number::New(info.Env(), static_cast<double>(hire::advise_huge_pages(x.data, bytes) / sizeof(float)));
}

Napi::Value CpuInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const hire::CpuFeatures f = hire::cpu_features();
  Napi::Object o = Napi::Object::New(env);
  o.Set("avx2", Napi::Boolean::New(env, f.avx2));
  o.Set("fma", Napi::Boolean::New(env, f.fma));
  o.Set("f16c", Napi::Boolean::New(env, f.f16c));
  o.Set("avx512vnni", Napi::Boolean::New(env, f.avx512vnni));
  const std::vector<std::string> names = hire::kernel_paths();
  Napi::Array paths = Napi::Array::New(env, names.size());
  for (size_t i = 0; i < names.size(); ++i) paths.Set(static_cast<uint32_t>(i), Napi::String::New(env, names[i]));
  o.Set("paths", paths);
  o.Set("path", Napi::String::New(env, hire::kernel_path_name()));
  return o;
}

Napi::Value SetKernelPath(const Napi::CallbackInfo& info) {
  Args a(info, "setKernelPath");
  std::string usable = "\"auto\"";
  for (const std::string& n : hire::kernel_paths()) usable += ", \"" + n + "\"";
  if (!info[0].IsString()) a.fail("path must be one of " + usable);
  const std::string p = info[0].As<Napi::String>().Utf8Value();
  if (!hire::set_kernel_path(p)) a.fail("path must be one of " + usable + " on this CPU, got \"" + p + "\"");
  return info.Env().Undefined();
}

Napi::Value ReadBandwidth(const Napi::CallbackInfo& info) {
  Args a(info, "readBandwidth");
  const int64_t bytes = a.integer(0, "bytes", 4096, int64_t{1} << 36);
  const int64_t reps = a.integer(1, "reps", 1, 1000);
  const int64_t chunk = info.Length() > 2 ? a.integer(2, "chunk", 0, int64_t{1} << 30) : 0;
  return Napi::Number::New(info.Env(), hire::read_bandwidth(static_cast<size_t>(bytes), static_cast<int>(reps),
                                                           static_cast<size_t>(chunk)));
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  Export<MapFile>(env, exports, "mapFile");
  Export<Unmap>(env, exports, "unmap");
  Export<Weight>(env, exports, "weight");
  Export<ReleaseWeight>(env, exports, "releaseWeight");
  Export<ReleasedBytes>(env, exports, "releasedBytes");
  Export<Matmul>(env, exports, "matmul");
  Export<MatmulMany>(env, exports, "matmulMany");
  Export<Embed>(env, exports, "embed");
  Export<RmsNorm>(env, exports, "rmsNorm");
  Export<LayerNorm>(env, exports, "layerNorm");
  Export<Rope>(env, exports, "rope");
  Export<Attention>(env, exports, "attention");
  Export<Softcap>(env, exports, "softcap");
  Export<CacheWrite>(env, exports, "cacheWrite");
  Export<SiluMul>(env, exports, "siluMul");
  Export<Activate>(env, exports, "activate");
  Export<Add>(env, exports, "add");
  Export<Argmax>(env, exports, "argmax");
  Export<Softmax>(env, exports, "softmax");
  Export<GetThreads>(env, exports, "getThreads");
  Export<CacheLineOffset>(env, exports, "cacheLineOffset");
  Export<HugePageOffset>(env, exports, "hugePageOffset");
  Export<SetThreads>(env, exports, "setThreads");
  Export<CpuInfo>(env, exports, "cpuInfo");
  Export<SetKernelPath>(env, exports, "setKernelPath");
  Export<ReadBandwidth>(env, exports, "readBandwidth");
  Export<Relayout>(env, exports, "relayout");
  Export<QuantizeWeight>(env, exports, "quantizeWeight");
  Export<QuantizeGguf>(env, exports, "quantizeGguf");
  Export<InterleaveRows>(env, exports, "interleaveRows");
  Export<WeightFromArray>(env, exports, "weightFromArray");
  Export<WeightInfo>(env, exports, "weightInfo");
  Export<WeightAlignment>(env, exports, "weightAlignment");
  Export<TransposeView>(env, exports, "transposeView");
  Export<MatvecRows>(env, exports, "matvecRows");
  Export<AccumulateCols>(env, exports, "accumulateCols");
  Export<Quantize>(env, exports, "quantize");
  Export<QuantMatvec>(env, exports, "quantMatvec");
  Export<QuantInfo>(env, exports, "quantInfo");
  Export<QuantWrite>(env, exports, "quantWrite");
  Export<QuantRead>(env, exports, "quantRead");
  Export<QuantRow>(env, exports, "quantRow");
  Export<DequantizeGguf>(env, exports, "dequantizeGguf");
  Export<QuantizeBlocks>(env, exports, "quantizeBlocks");
  Export<Topk>(env, exports, "topk");
  Export<HireFfn>(env, exports, "hireFfn");
  Export<HireFfnBatch>(env, exports, "hireFfnBatch");
  Export<HireHead>(env, exports, "hireHead");
  exports.Set("cuda", hire_napi::cuda_exports(env));
  return exports;
}

}  // namespace

NODE_API_MODULE(hire_native, Init)
