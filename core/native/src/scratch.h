// Scratch: a grow-only, 64-byte-aligned buffer, kept thread_local by the ops and kernels that need
// per-call working memory (reused every call, freed with the thread). get<T>(n) gives room for n Ts
// plus 64 spare bytes, so vector loops may over-read past the end. Throws std::bad_alloc.
#pragma once
#include <cstddef>
#include <cstdlib>
#include <new>

namespace hire {

struct Scratch {
  void* p = nullptr;
  size_t cap = 0;
  Scratch() = default;
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  ~Scratch() { std::free(p); }
  template <class T>
  T* get(size_t n) {
    const size_t bytes = ((n * sizeof(T) + 63) & ~size_t{63}) + 64;
    if (bytes > cap) {
      std::free(p);
      p = std::aligned_alloc(64, bytes);
      cap = p == nullptr ? 0 : bytes;
      if (p == nullptr) throw std::bad_alloc();
    }
    return static_cast<T*>(p);
  }
};

}  // namespace hire
