// Native memory owned by a weight or a quantized copy (relayout, weightFromArray, quantize): 64-byte
// aligned, zero-filled; large buffers are anonymous mmaps advised for transparent huge pages, so that
// streaming kernels see the same few TLB misses as the bandwidth probe. Shared (shared_ptr) between
// the JS handle and anything that still reads it; freed with the last owner.
#pragma once
#include <cstddef>
#include <memory>

namespace hire {

// Anonymous read-write pages (zero-filled) advised for transparent huge pages: nullptr, with errno
// set, when they cannot be had. Release with munmap(p, bytes). Large Buffers and weight files read
// into memory (mapping.cc) both come from here.
void* map_huge_pages(size_t bytes);

// Memory someone else allocated (a JS ArrayBuffer): the whole 2 MiB pages within [p, p + bytes)
// advised for transparent huge pages and, where the kernel can (Linux 6.1+), collapsed into them
// now, pages already touched included. Returns the bytes from p to the first such page (bytes when
// there is none); the kernel may still refuse, which only costs speed.
size_t advise_huge_pages(void* p, size_t bytes);
constexpr size_t kHugePage = size_t{2} << 20;

class Buffer {
 public:
  // Throws std::bad_alloc when the memory cannot be had. bytes == 0 gives a valid, empty buffer.
  static std::shared_ptr<Buffer> alloc(size_t bytes);
  ~Buffer();
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  unsigned char* data() const { return static_cast<unsigned char*>(base_); }
  size_t size() const { return size_; }

 private:
  Buffer() = default;
  void* base_ = nullptr;
  size_t size_ = 0;
  bool mapped_ = false;  // munmap (true) or free (false)
};

}  // namespace hire
