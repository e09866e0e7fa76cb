// Mapping: open + fstat + mmap(PROT_READ, MAP_PRIVATE) of the file, or an anonymous mmap filled by
// pread; munmap on release or destruction. Empty files give a valid, zero-length mapping (mmap
// rejects length 0).
#include "mapping.h"

#include "buffer.h"
#include "threadpool.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <stdexcept>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace hire {

int read_fully(int fd, unsigned char* dst, size_t n, size_t at) {
  // 64 MiB pieces: enough for every thread, few enough syscalls.
  constexpr size_t kPiece = size_t{64} << 20;
  const int64_t pieces = static_cast<int64_t>((n + kPiece - 1) / kPiece);
  std::atomic<int> first_error{0};
  auto piece = [&](int64_t t, int) {
    const size_t b = static_cast<size_t>(t) * kPiece, e = std::min(n, b + kPiece);
    for (size_t done = b; done < e && first_error.load() == 0;) {
      const ssize_t got = ::pread(fd, dst + done, e - done, static_cast<off_t>(at + done));
      if (got < 0 && errno == EINTR) continue;
      int err = got < 0 ? errno : got == 0 ? EIO : 0;  // 0 bytes: the file shrank while it was read
      if (err != 0) {
        int none = 0;
        first_error.compare_exchange_strong(none, err);
        return;
      }
      done += static_cast<size_t>(got);
    }
  };
  if (pieces <= 1) {
    if (pieces == 1) piece(0, 0);
  } else {
    ThreadPool::instance().parallel_for(pieces, piece);
  }
  return first_error.load();
}

namespace {
int64_t mtime_ns(const struct stat& st) {
  return static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
}
}  // namespace

std::shared_ptr<Mapping> Mapping::open(const std::string& path, bool in_memory, size_t align_at) {
  auto fail = [&](int err) { throw std::runtime_error(path + ": " + std::strerror(err)); };
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(errno);
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    fail(err);
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw std::runtime_error(path + ": not a regular file");
  }
  std::shared_ptr<Mapping> m(new Mapping());
  m->size_ = static_cast<size_t>(st.st_size);
  m->path_ = path;
  m->in_memory_ = in_memory;
  m->mtime_ns_ = mtime_ns(st);
  if (m->size_ > 0) {
    const int err = in_memory ? m->read_in(fd, align_at) : m->map_file(fd);
    if (err != 0) {
      ::close(fd);
      fail(err);
    }
  }
  ::close(fd);
  m->valid_ = true;
  return m;
}

int Mapping::map_file(int fd) {
  void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
  if (p == MAP_FAILED) return errno;
  base_ = region_ = p;
  region_size_ = size_;
  return 0;
}

// Safetensors data starts at 8 + header length, rarely a multiple of 64 (40 mod 64 in this project's
// 1B test model): read at offset 0 of a page, every bf16 row of it straddled cache lines, and on this
// session's AMD EPYC VM the loaded weights streamed at 30-35 GB/s against 55 for the same GEMV on
// 64-byte aligned rows. So the file is read `shift` bytes into the buffer, putting align_at on a line.
int Mapping::read_in(int fd, size_t align_at) {
  const size_t shift = (64 - align_at % 64) % 64;
  void* p = map_huge_pages(size_ + shift);
  if (p == nullptr) return errno;
  region_ = p;  // released by release() whatever happens next
  region_size_ = size_ + shift;
  base_ = static_cast<unsigned char*>(p) + shift;
  // The buffer stays writable (nothing writes to it). Made read-only with mprotect, as it once was,
  // each of its 4 KiB pages was slow the first time it was read afterwards on the Firecracker VMs
  // (the hypervisor re-establishing its mapping of the page, by the look of it): a gather of 256
  // random 4 KiB rows from 512 MiB of it read 1-7 us per row against 0.35-0.4 left writable, until
  // each page had been read once. Dense decode reads every page on its first token, but HiRE's
  // output layer gathers rows from the tied embedding: its 512 candidate rows took 0.8-1.2 ms per
  // token (mean of 60 tokens) against 0.17 left writable, 3.6 -> 2.7 ms for the whole head.
  return read_fully(fd, static_cast<unsigned char*>(base_), size_);
}

size_t Mapping::release_pages(size_t offset, size_t bytes) {
  if (!valid_ || offset >= size_) return 0;
  bytes = std::min(bytes, size_ - offset);
  std::lock_guard<std::mutex> lock(released_mu_);
  if (!in_memory_) {
    // A mapped file's 4 KiB page-cache pages fault back in by themselves. Whole pages only: a
    // weight's first and last pages may hold its neighbours' bytes.
    const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
    const uintptr_t a = reinterpret_cast<uintptr_t>(data() + offset), e = a + bytes;
    const uintptr_t pa = (a + page - 1) & ~(page - 1), pe = e & ~(page - 1);
    if (pe <= pa || ::madvise(reinterpret_cast<void*>(pa), pe - pa, MADV_DONTNEED) != 0) return 0;
    return pe - pa;
  }
  const size_t begin = offset, end = offset + bytes;
  for (const Range& r : released_)
    if (r.begin < end && begin < r.end) return 0;  // already given back (a weight is released whole)
  // Read-in memory lies on 2 MiB pages. Giving back 4 KiB pages inside one splits it, and the weights
  // still living in it (o_proj's last rows and the next q_proj's first, on either side of a layer's
  // FFN matrices) are then read through 4 KiB pages: HiRE decode on the 1B model took 23.6-26.3 ms a
  // token against 21.3-24.0 with nothing given back, o_proj's GEMV 3.6-5.4 against 2.2-2.6 ms a
  // token. So the exact range is recorded (restore reads it back) and only the 2 MiB pages that the
  // released ranges now cover whole go back: a tensor's ragged ends go when its neighbours go too.
  const size_t freed_before = huge_pages_released();
  released_.push_back({begin, end});
  has_released_.store(true, std::memory_order_release);
  size_t freed = 0;
  for (const Range& r : released_huge_pages()) {
    freed += r.end - r.begin;
    if (r.begin < end && begin < r.end)  // the run this range joined (earlier runs are gone already)
      ::madvise(const_cast<unsigned char*>(data()) + r.begin, r.end - r.begin, MADV_DONTNEED);
  }
  return freed - freed_before;
}

std::vector<Mapping::Range> Mapping::released_huge_pages() const {
  std::vector<Range> runs = released_;
  std::sort(runs.begin(), runs.end(), [](const Range& x, const Range& y) { return x.begin < y.begin; });
  std::vector<Range> out;
  const uintptr_t base = reinterpret_cast<uintptr_t>(data());
  for (size_t i = 0; i < runs.size();) {
    size_t b = runs[i].begin, e = runs[i].end;
    for (++i; i < runs.size() && runs[i].begin <= e; ++i) e = std::max(e, runs[i].end);  // touching runs join
    const uintptr_t hb = (base + b + kHugePage - 1) & ~(kHugePage - 1), he = (base + e) & ~(kHugePage - 1);
    if (he > hb) out.push_back({hb - base, he - base});
  }
  return out;
}

size_t Mapping::huge_pages_released() const {
  size_t n = 0;
  for (const Range& r : released_huge_pages()) n += r.end - r.begin;
  return n;
}

size_t Mapping::released_bytes() {
  std::lock_guard<std::mutex> lock(released_mu_);
  return huge_pages_released() + static_cast<size_t>(copies_given_back_.load(std::memory_order_relaxed));
}

void Mapping::check_unchanged(const std::string& what) const {
  struct stat st;
  if (::stat(path_.c_str(), &st) != 0)
    throw std::runtime_error(path_ + ": cannot read it, so " + what + ": " + std::strerror(errno));
  if (static_cast<size_t>(st.st_size) != size_ || mtime_ns(st) != mtime_ns_)
    throw std::runtime_error(path_ + ": changed since the model was loaded, so " + what + "; load the model again");
}

void Mapping::restore(size_t offset, size_t bytes) {
  std::lock_guard<std::mutex> lock(released_mu_);
  const size_t end = offset + bytes;
  auto overlaps = [&](const Range& r) { return r.begin < end && offset < r.end; };
  if (std::none_of(released_.begin(), released_.end(), overlaps)) return;
  auto fail = [&](const std::string& why) { throw std::runtime_error(path_ + ": " + why); };
  const int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(std::string("cannot read released weights back: ") + std::strerror(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0 || static_cast<size_t>(st.st_size) != size_ || mtime_ns(st) != mtime_ns_) {
    ::close(fd);
    fail("changed since the model was loaded, so its released weights cannot be read back; load the model again");
  }
  // A range stays recorded until it is read back whole, so a failed read never leaves zeros in use.
  for (auto it = released_.begin(); it != released_.end();) {
    if (!overlaps(*it)) {
      ++it;
      continue;
    }
    const int err = read_fully(fd, static_cast<unsigned char*>(base_) + it->begin, it->end - it->begin, it->begin);
    if (err != 0) {
      ::close(fd);
      fail(std::string("cannot read released weights back: ") + std::strerror(err));
    }
    it = released_.erase(it);
  }
  ::close(fd);
  has_released_.store(!released_.empty(), std::memory_order_release);
}

void Mapping::release() {
  if (region_ != nullptr) ::munmap(region_, region_size_);
  region_ = base_ = nullptr;
  valid_ = false;
}

Mapping::~Mapping() { release(); }

}  // namespace hire
