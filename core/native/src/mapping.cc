// Mapping: open + fstat + mmap(PROT_READ, MAP_PRIVATE), munmap on release or destruction.
// Empty files map to a valid, zero-length mapping (mmap rejects length 0).
#include "mapping.h"

#include <cerrno>
#include <cstring>
#include <stdexcept>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace hire {

std::shared_ptr<Mapping> Mapping::open(const std::string& path) {
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
    void* p = ::mmap(nullptr, m->size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      fail(err);
    }
    m->base_ = p;
  }
  ::close(fd);
  m->valid_ = true;
  return m;
}

void Mapping::release() {
  if (base_ != nullptr) ::munmap(base_, size_);
  base_ = nullptr;
  valid_ = false;
}

Mapping::~Mapping() { release(); }

}  // namespace hire
