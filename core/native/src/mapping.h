// Weight files in memory, never written after loading. A Mapping is shared (shared_ptr) by the JS
// mapping handle and by every weight made from it; the memory is unmapped when the last owner goes
// away or early by release(), after which valid() is false and weights must refuse to run.
// Two ways in: mmap of the file itself (pages shared with the page cache), or the file read into
// anonymous memory advised for transparent huge pages. The second is the default of the loader: on
// the Firecracker VMs these sessions run on, page-cache pages the guest had reclaimed and read back
// streamed at 17.8 GB/s against 31.5 for the same weights copied (bf16 GEMV, 2 cores), and dense
// decode reads every weight every token.
#pragma once
#include <cstddef>
#include <cstdint>
#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace hire {

// Reads bytes [at, at + n) of fd into dst with pread, the pieces split over the thread pool: copying
// into fresh memory is mostly page faults, which the threads take in parallel. 0 or an errno (EIO
// when the file ends first).
int read_fully(int fd, unsigned char* dst, size_t n, size_t at = 0);

class Mapping {
 public:
  // in_memory: read the file into anonymous memory instead of mapping it, placed so that file offset
  // align_at lands on a 64-byte boundary (a safetensors file's data section: its tensors then start
  // cache-line aligned, and no 64-byte vector load of a row straddles two lines).
  // Throws std::runtime_error("<path>: <reason>").
  static std::shared_ptr<Mapping> open(const std::string& path, bool in_memory, size_t align_at = 0);
  ~Mapping();
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;

  void release();
  bool valid() const { return valid_; }
  const unsigned char* data() const { return static_cast<const unsigned char*>(base_); }
  size_t size() const { return size_; }

  // Gives the memory of [offset, offset + bytes) back to the system, for weights that another layout
  // now serves (HiRE's interleaved and transposed FFN copies). Read-in memory is recorded as released
  // (and read back from the file by ensure_resident), and goes back in whole 2 MiB pages once the
  // released ranges cover them; a mapped file gives back its whole 4 KiB pages, which fault back in
  // by themselves. Returns the bytes this call gave back.
  size_t release_pages(size_t offset, size_t bytes);
  // Reads back any released pages overlapping [offset, offset + bytes), so a weight is never
  // computed with the zero pages left behind. Throws std::runtime_error("<path>: <reason>") when
  // the file cannot be read or is no longer the file that was loaded (size or modification time).
  void ensure_resident(size_t offset, size_t bytes) {
    if (has_released_.load(std::memory_order_acquire)) restore(offset, bytes);
  }
  // Throws std::runtime_error("<path>: changed since the model was loaded, so <what>; ...") when the
  // file's size or modification time is no longer the loaded one's (a mapped file's pages would then
  // fault in the new bytes, or past its end).
  void check_unchanged(const std::string& what) const;
  // Bytes currently given back: the whole 2 MiB pages of read-in memory the released ranges cover,
  // plus the int8 / int4 copies of this file's matrices given back (note_copies_given_back).
  size_t released_bytes();
  // An int8 / int4 copy made from this file's bytes freed (+) or made again (-) (WeightHandle::source).
  void note_copies_given_back(int64_t delta) { copies_given_back_.fetch_add(delta, std::memory_order_relaxed); }

 private:
  Mapping() = default;
  int map_file(int fd);                   // 0 or an errno
  int read_in(int fd, size_t align_at);   // 0 or an errno
  void restore(size_t offset, size_t bytes);
  void* base_ = nullptr;                  // file offset 0
  size_t size_ = 0;
  void* region_ = nullptr;                // what to unmap: base_, or the read-in buffer base_ lies in
  size_t region_size_ = 0;
  bool valid_ = false;
  bool in_memory_ = false;
  std::string path_;
  int64_t mtime_ns_ = 0;                  // the loaded file's, checked before reading pages back
  struct Range {
    size_t begin, end;                    // byte offsets from base_
  };
  std::mutex released_mu_;
  std::vector<Range> released_;           // read-in weights released (their exact bytes), disjoint
  // The 2 MiB pages (as offsets from base_) that the released ranges cover whole; callers hold released_mu_.
  std::vector<Range> released_huge_pages() const;
  size_t huge_pages_released() const;
  std::atomic<bool> has_released_{false};
  std::atomic<int64_t> copies_given_back_{0};
};

}  // namespace hire
