// Mapping: open + fstat + mmap(PROT_READ, MAP_PRIVATE) of the file, or an anonymous mmap filled by
// pread and then made read-only; munmap on release or destruction. Empty files give a valid,
// zero-length mapping (mmap rejects length 0).
#include "mapping.h"

#include "buffer.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace hire {

std::shared_ptr<Mapping> Mapping::open(const std::string& path, bool in_memory) {
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
  if (m->size_ > 0) {
    const int err = in_memory ? m->read_in(fd) : m->map_file(fd);
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
  base_ = p;
  return 0;
}

int Mapping::read_in(int fd) {
  void* p = map_huge_pages(size_);
  if (p == nullptr) return errno;
  base_ = p;  // released by release() whatever happens next
  unsigned char* dst = static_cast<unsigned char*>(p);
  constexpr size_t kStep = size_t{64} << 20;
  for (size_t done = 0; done < size_;) {
    const ssize_t n = ::pread(fd, dst + done, std::min(kStep, size_ - done), static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno;
    if (n == 0) return EIO;  // the file shrank while it was read
    done += static_cast<size_t>(n);
  }
  return ::mprotect(p, size_, PROT_READ) == 0 ? 0 : errno;
}

void Mapping::release() {
  if (base_ != nullptr) ::munmap(base_, size_);
  base_ = nullptr;
  valid_ = false;
}

Mapping::~Mapping() { release(); }

}  // namespace hire
