// Argument checking and handle types shared by the N-API binding files (addon.cc for the CPU
// backend, cuda_addon.cc for the CUDA one): every argument is validated here before any native code
// sees it, and a JS Error names the function and the argument at fault.
#pragma once
#include <napi.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "buffer.h"
#include "dtype.h"
#include "gguf_dequant.h"
#include "kernels.h"
#include "mapping.h"
#include "quant.h"
#include "sparse.h"

namespace hire_napi {

using hire::Mat;

// Type tags so a mapping, a weight and a foreign External can never be confused.
const napi_type_tag kMappingTag = {0x6869726e61746976ULL, 0x6d617070696e6701ULL};
const napi_type_tag kWeightTag = {0x6869726e61746976ULL, 0x7765696768740002ULL};
const napi_type_tag kQuantTag = {0x6869726e61746976ULL, 0x7175616e74000003ULL};

constexpr double kMaxSafe = 9007199254740991.0;  // 2^53 - 1
constexpr int64_t kMaxDim = int64_t{1} << 40;    // bound on any single size argument

struct MappingHandle {
  std::shared_ptr<hire::Mapping> map;
};

struct WeightHandle {
  std::shared_ptr<hire::Mapping> map;  // keeps the file mapped while the weight lives (null when owned)
  size_t offset;
  int dtype;
  int64_t rows, cols;
  bool transposed;
  std::shared_ptr<hire::Buffer> owned;  // native memory of relayout / weightFromArray / quantizeWeight (offset 0)
  int64_t group = 0;                    // kQ8 / kQ4: values per scale
  // An int8 / int4 copy of a file's matrix (quantizeWeight): releaseWeight frees `owned` while other
  // layouts serve the matrix (HiRE's interleaved rows), and its next use quantizes the file's matrix
  // again, which gives the same bits. given_back: the bytes freed that way (0 while resident).
  std::shared_ptr<const WeightHandle> source = nullptr;
  size_t given_back = 0;
  // A copy of a GGUF file's blocks (quantizeGguf) instead: their ggml type (0 for a copy of a float
  // matrix), the bytes of `source` they span, and each row's source row (null: the same order). It is
  // made again from those blocks, which gives the same bits.
  int ggml_type = 0;
  size_t ggml_bytes = 0;
  std::shared_ptr<const std::vector<int32_t>> row_order = nullptr;
  Mat mat(const void* data) const { return Mat{data, dtype, rows, cols, transposed, group}; }
  size_t bytes() const { return static_cast<size_t>(hire::mat_bytes(mat(nullptr))); }
  // The bytes of the file the copy is made from.
  size_t source_bytes() const { return ggml_type ? ggml_bytes : source->bytes(); }
  // The copy, from its source's bytes at `src`.
  std::shared_ptr<hire::Buffer> make_copy(const unsigned char* src) const {
    return ggml_type ? hire::gguf_to_quant(ggml_type, src, rows, cols, hire::quant_bits(dtype),
                                           row_order ? row_order->data() : nullptr)->mem
                     : hire::quantize(source->mat(src), hire::quant_bits(dtype), group)->mem;
  }
};

struct QuantHandle {
  std::shared_ptr<hire::QuantMatrix> q;
};

// ---- argument helpers ----------------------------------------------------------------------------

class Args {
 public:
  Args(const Napi::CallbackInfo& info, const char* fn) : info_(info), fn_(fn) {}
  // The arguments of one item of a batch call (hireFfnBatch): an array standing in for info's.
  Args(const Napi::CallbackInfo& info, const char* fn, Napi::Array items) : info_(info), fn_(fn), items_(items) {}

  [[noreturn]] void fail(const std::string& msg) const {
    throw Napi::Error::New(info_.Env(), std::string(fn_) + ": " + msg);
  }

  Napi::Value at(size_t i) const { return items_.IsEmpty() ? info_[i] : items_.Get(static_cast<uint32_t>(i)); }

  double number(size_t i, const char* name) const {
    Napi::Value v = at(i);
    if (!v.IsNumber()) fail(std::string(name) + " must be a number");
    const double d = v.As<Napi::Number>().DoubleValue();
    if (!std::isfinite(d)) fail(std::string(name) + " must be finite");
    return d;
  }

  int64_t integer(size_t i, const char* name, int64_t lo, int64_t hi) const {
    const double d = number(i, name);
    if (std::floor(d) != d || std::fabs(d) > kMaxSafe) fail(std::string(name) + " must be an integer");
    if (d < static_cast<double>(lo) || d > static_cast<double>(hi))
      fail(std::string(name) + " = " + num(d) + " is out of range [" + std::to_string(lo) + ", " +
           std::to_string(hi) + "]");
    return static_cast<int64_t>(d);
  }

  struct F32 {
    float* data;
    size_t len;
  };
  F32 f32(size_t i, const char* name) const {
    Napi::Value v = at(i);
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
      fail(std::string(name) + " must be a Float32Array");
    Napi::Float32Array a = v.As<Napi::Float32Array>();
    return {a.ElementLength() == 0 ? nullptr : a.Data(), a.ElementLength()};
  }

  // A KV cache: a Float32Array (f32) or a Uint16Array (IEEE halves, an f16 cache); len in elements.
  struct KV {
    void* data;
    size_t len;
    bool f16;
    size_t bytes(int64_t count) const { return static_cast<size_t>(count) * (f16 ? 2 : 4); }
  };
  KV kv(size_t i, const char* name) const {
    Napi::Value v = at(i);
    const napi_typedarray_type t =
        v.IsTypedArray() ? v.As<Napi::TypedArray>().TypedArrayType() : napi_int8_array;
    if (t != napi_float32_array && t != napi_uint16_array)
      fail(std::string(name) + " must be a Float32Array (f32 cache) or a Uint16Array (f16 cache)");
    Napi::TypedArray a = v.As<Napi::TypedArray>();
    void* data = a.ElementLength() == 0 ? nullptr
                                        : static_cast<unsigned char*>(a.ArrayBuffer().Data()) + a.ByteOffset();
    return {data, a.ElementLength(), t == napi_uint16_array};
  }
  // A key and a value cache of the same element type.
  std::pair<KV, KV> kv_pair(size_t i, const char* kname, const char* vname) const {
    const KV k = kv(i, kname), v = kv(i + 1, vname);
    if (k.f16 != v.f16) fail(std::string(kname) + " and " + vname + " must be the same type of array");
    return {k, v};
  }
  struct I32 {
    const int32_t* data;
    size_t len;
  };
  I32 i32(size_t i, const char* name) const {
    Napi::Value v = at(i);
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
      fail(std::string(name) + " must be an Int32Array");
    Napi::Int32Array a = v.As<Napi::Int32Array>();
    return {a.ElementLength() == 0 ? nullptr : a.Data(), a.ElementLength()};
  }
  int32_t* i32_mut(size_t i, const char* name, size_t* len) const {
    const I32 a = i32(i, name);
    *len = a.len;
    return const_cast<int32_t*>(a.data);
  }

  bool boolean(size_t i, const char* name) const {
    if (!at(i).IsBoolean()) fail(std::string(name) + " must be a boolean");
    return at(i).As<Napi::Boolean>().Value();
  }

  // Every idx[i], i < count, in [0, limit).
  void indices(const I32& idx, int64_t count, int64_t limit, const char* name, const char* what) const {
    for (int64_t i = 0; i < count; ++i)
      if (idx.data[i] < 0 || idx.data[i] >= limit)
        fail(std::string(name) + "[" + std::to_string(i) + "] = " + std::to_string(idx.data[i]) +
             " is out of range [0, " + std::to_string(limit) + ") (" + what + ")");
  }

  // Byte ranges [a, a + an) and [b, b + bn) must not overlap (arrays of different types).
  void disjoint_bytes(const void* a, size_t an, const char* na, const void* b, size_t bn, const char* nb) const {
    if (a == nullptr || b == nullptr || an == 0 || bn == 0) return;
    const uintptr_t a0 = reinterpret_cast<uintptr_t>(a), b0 = reinterpret_cast<uintptr_t>(b);
    if (a0 < b0 + bn && b0 < a0 + an) fail(std::string(na) + " and " + nb + " must not overlap");
  }

  template <class T>
  T* tagged(size_t i, const napi_type_tag& tag, const char* name, const char* what) const {
    Napi::Value v = at(i);
    bool ok = false;
    if (v.IsExternal() && napi_check_object_type_tag(info_.Env(), v, &tag, &ok) != napi_ok) ok = false;
    if (!ok) fail(std::string(name) + " must be a " + what + " handle");
    return v.As<Napi::External<T>>().Data();
  }

  MappingHandle* mapping(size_t i) const { return tagged<MappingHandle>(i, kMappingTag, "mapping", "NativeMapping"); }

  // A weight as a kernel view; throws if its mapping was unmapped.
  Mat weight(size_t i, const char* name) const {
    WeightHandle* w = tagged<WeightHandle>(i, kWeightTag, name, "NativeWeight");
    if (!w->owned && w->source) requantize(*w, name);
    if (w->owned) return w->mat(w->owned->data());
    if (!w->map->valid()) fail(std::string(name) + " belongs to a mapping that was unmapped");
    try {
      w->map->ensure_resident(w->offset, w->bytes());
    } catch (const std::runtime_error& e) {
      fail(std::string(name) + ": " + e.what());
    }
    return w->mat(w->map->data() + w->offset);
  }

  // Makes a given-back int8 / int4 copy again from its file's matrix or GGUF blocks (see WeightHandle::source).
  void requantize(WeightHandle& w, const char* name) const {
    const WeightHandle& src = *w.source;
    if (!src.map->valid()) fail(std::string(name) + " was given back and its file has been unmapped");
    try {
      src.map->check_unchanged("its given-back int8 / int4 weights cannot be made again");
      src.map->ensure_resident(src.offset, w.source_bytes());
    } catch (const std::runtime_error& e) {
      fail(std::string(name) + ": " + e.what());
    }
    w.owned = w.make_copy(src.map->data() + src.offset);
    src.map->release_pages(src.offset, w.source_bytes());  // as after the first quantization
    src.map->note_copies_given_back(-static_cast<int64_t>(w.given_back));
    w.given_back = 0;
    Napi::MemoryManagement::AdjustExternalMemory(info_.Env(), static_cast<int64_t>(w.owned->size()));
  }

  const hire::QuantMatrix& quant(size_t i, const char* name) const {
    return *tagged<QuantHandle>(i, kQuantTag, name, "NativeQuant")->q;
  }

  hire::Activation activation(size_t i, const char* name) const {
    if (!at(i).IsString()) fail(std::string(name) + " must be a string");
    const std::string kind = at(i).As<Napi::String>().Utf8Value();
    if (kind == "relu") return hire::Activation::kRelu;
    if (kind == "gelu") return hire::Activation::kGelu;
    if (kind == "gelu_tanh") return hire::Activation::kGeluTanh;
    if (kind == "silu") return hire::Activation::kSilu;
    fail("unknown " + std::string(name) + " \"" + kind + "\" (relu, gelu, gelu_tanh, silu)");
  }

  bool is_nullish(size_t i) const { return at(i).IsNull() || at(i).IsUndefined(); }
  // rope's optional cos/sin factor (longrope's attention factor): 1 when absent, else finite and > 0.
  float rope_factor(size_t i) const {
    if (i >= info_.Length() || is_nullish(i)) return 1.0f;
    return static_cast<float>(positive_number(i, "factor"));
  }

  // A KV cache of `capacity` slots keeps position p in slot p % capacity (a ring, for sliding-window
  // layers). Writing n positions at once needs n distinct slots; attention for queries pos0 ..
  // pos0 + n - 1 needs every key it sees (all earlier ones, or the last `window`) still in place.
  void check_cache_write(int64_t n, int64_t capacity) const {
    if (n > capacity) fail("n = " + std::to_string(n) + " exceeds capacity = " + std::to_string(capacity));
  }
  void check_attention_span(int64_t pos0, int64_t n, int64_t window, int64_t capacity) const {
    if (window == 0 && pos0 + n > capacity)
      fail("pos0 + n = " + std::to_string(pos0 + n) + " exceeds capacity = " + std::to_string(capacity));
    const int64_t needed = std::min(pos0 + n, window + n - 1);  // the earliest query's window to the last key
    if (window > 0 && needed > capacity)
      fail("window = " + std::to_string(window) + " with n = " + std::to_string(n) + " at pos0 = " +
           std::to_string(pos0) + " needs " + std::to_string(needed) + " cache slots, capacity = " +
           std::to_string(capacity));
  }

  // A number that must be finite and > 0.
  double positive_number(size_t i, const char* name) const {
    const double v = number(i, name);
    if (!(v > 0) || !std::isfinite(v)) fail(std::string(name) + " must be a finite number > 0");
    return v;
  }

  // An optional number: `fallback` when absent (or null/undefined), else finite and >= min.
  double optional_number(size_t i, const char* name, double fallback, double min) const {
    if (i >= info_.Length() || is_nullish(i)) return fallback;
    const double v = number(i, name);
    if (!(v >= min) || !std::isfinite(v)) fail(std::string(name) + " must be a finite number >= " + std::to_string(min));
    return v;
  }

  // Element count of a vector weight (1 x dim or dim x 1).
  int64_t vector_len(const Mat& m, const char* name) const {
    if (m.rows != 1 && m.cols != 1)
      fail(std::string(name) + " must be a 1 x dim vector weight, got " + std::to_string(m.rows) + " x " +
           std::to_string(m.cols));
    return m.rows * m.cols;
  }

  // a (F32 or KV) holds at least count elements.
  template <class A>
  void need(const A& a, const char* name, int64_t count, const char* expr) const {
    if (static_cast<uint64_t>(count) > a.len)
      fail(std::string(name) + " has " + std::to_string(a.len) + " elements, needs at least " + expr + " = " +
           std::to_string(count));
  }

  // a and b (first ca / cb floats) must not overlap, unless allow_same and they start together.
  void disjoint(const F32& a, int64_t ca, const char* na, const F32& b, int64_t cb, const char* nb,
                bool allow_same = false) const {
    if (a.data == nullptr || b.data == nullptr || ca == 0 || cb == 0) return;
    const uintptr_t a0 = reinterpret_cast<uintptr_t>(a.data), a1 = a0 + static_cast<uintptr_t>(ca) * 4;
    const uintptr_t b0 = reinterpret_cast<uintptr_t>(b.data), b1 = b0 + static_cast<uintptr_t>(cb) * 4;
    if (allow_same && a0 == b0) return;
    if (a0 < b1 && b0 < a1)
      fail(std::string(na) + " and " + nb + (allow_same ? " must be the same array or not overlap" : " must not overlap"));
  }

  static std::string num(double d) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.17g", d);
    return buf;
  }

 private:
  const Napi::CallbackInfo& info_;
  const char* fn_;
  Napi::Array items_;  // empty: the call's own arguments
};

// a * b, throwing on overflow past kMaxSafe.
inline int64_t mul(const Args& a, int64_t x, int64_t y) {
  int64_t r;
  if (__builtin_mul_overflow(x, y, &r) || r > static_cast<int64_t>(kMaxSafe)) a.fail("size overflow");
  return r;
}
inline int64_t mul(const Args& a, int64_t x, int64_t y, int64_t z) { return mul(a, mul(a, x, y), z); }

// Turns any C++ exception escaping a binding into a JS Error.
template <Napi::Value (*F)(const Napi::CallbackInfo&)>
inline Napi::Value Guard(const Napi::CallbackInfo& info) {
  try {
    return F(info);
  } catch (const Napi::Error&) {
    throw;
  } catch (const std::bad_alloc&) {
    throw Napi::Error::New(info.Env(), "hire_native: out of memory");
  } catch (const std::exception& e) {
    throw Napi::Error::New(info.Env(), std::string("hire_native: ") + e.what());
  }
}

template <Napi::Value (*F)(const Napi::CallbackInfo&)>
inline void Export(Napi::Env env, Napi::Object exports, const char* name) {
  exports.Set(name, Napi::Function::New(env, Guard<F>, name));
}

// The CUDA backend's bindings (cuda_addon.cc), as the addon's `cuda` object.
Napi::Object cuda_exports(Napi::Env env);

}  // namespace hire_napi
