// Read-only memory mappings of weight files. A Mapping is shared (shared_ptr) by the JS mapping
// handle and by every weight made from it; the file is unmapped when the last owner goes away or
// early by release(), after which valid() is false and weights must refuse to run.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace hire {

class Mapping {
 public:
  // Throws std::runtime_error("<path>: <reason>").
  static std::shared_ptr<Mapping> open(const std::string& path);
  ~Mapping();
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;

  void release();
  bool valid() const { return valid_; }
  const unsigned char* data() const { return static_cast<const unsigned char*>(base_); }
  size_t size() const { return size_; }

 private:
  Mapping() = default;
  void* base_ = nullptr;
  size_t size_ = 0;
  bool valid_ = false;
};

}  // namespace hire
