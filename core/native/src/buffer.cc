// Buffer: aligned_alloc below kMmapBytes, anonymous mmap + MADV_HUGEPAGE above (see buffer.h).
#include "buffer.h"

#include <cstdlib>
#include <cstring>
#include <new>

#include <sys/mman.h>

namespace hire {
namespace {
constexpr size_t kMmapBytes = size_t{1} << 20;
}

void* map_huge_pages(size_t bytes) {
  // Start on a 2 MiB boundary: mmap gives 4 KiB alignment, and the part of a buffer before its first
  // 2 MiB boundary cannot be a huge page (up to a quarter of an int4 predictor's 8.6 MB was such
  // 4 KiB pages). Over-map by 2 MiB and give back the ends.
  const size_t len = (bytes + 4095) & ~size_t{4095};
  void* raw = ::mmap(nullptr, len + kHugePage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) return nullptr;
  const uintptr_t r = reinterpret_cast<uintptr_t>(raw), a = (r + kHugePage - 1) & ~uintptr_t{kHugePage - 1};
  if (a > r) ::munmap(raw, a - r);
  if (r + kHugePage > a) ::munmap(reinterpret_cast<void*>(a + len), r + kHugePage - a);
  void* p = reinterpret_cast<void*>(a);
#ifdef MADV_HUGEPAGE
  ::madvise(p, len, MADV_HUGEPAGE);
#endif
  return p;
}

size_t advise_huge_pages(void* p, size_t bytes) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p), end = a + bytes;
  const uintptr_t first = (a + kHugePage - 1) & ~uintptr_t{kHugePage - 1}, last = end & ~uintptr_t{kHugePage - 1};
  if (first >= last) return bytes;
#ifdef MADV_HUGEPAGE
  ::madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);
#endif
#if defined(__linux__)
  constexpr int kMadvCollapse = 25;  // MADV_COLLAPSE (Linux 6.1); older headers lack the name
  ::madvise(reinterpret_cast<void*>(first), last - first, kMadvCollapse);
#endif
  return first - a;
}

std::shared_ptr<Buffer> Buffer::alloc(size_t bytes) {
  std::shared_ptr<Buffer> b(new Buffer());
  b->size_ = bytes;
  if (bytes >= kMmapBytes) {
    void* p = map_huge_pages(bytes);
    if (p == nullptr) throw std::bad_alloc();
    b->base_ = p;
    b->mapped_ = true;
  } else {
    const size_t rounded = (bytes + 63) & ~size_t{63};
    void* p = std::aligned_alloc(64, rounded == 0 ? 64 : rounded);
    if (p == nullptr) throw std::bad_alloc();
    std::memset(p, 0, rounded == 0 ? 64 : rounded);
    b->base_ = p;
  }
  return b;
}

Buffer::~Buffer() {
  if (base_ == nullptr) return;
  if (mapped_) {
    ::munmap(base_, size_);
  } else {
    std::free(base_);
  }
}

}  // namespace hire
