// Read-only memory mapping of a whole file (RAII).
#ifndef MOESERVE_ENGINE_MAPPED_FILE_H_
#define MOESERVE_ENGINE_MAPPED_FILE_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace moeserve {

class MappedFile {
 public:
  // Maps `path` read-only. Errors name the path and the OS reason.
  static absl::StatusOr<std::unique_ptr<MappedFile>> Open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const unsigned char* data() const { return data_; }
  uint64_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  MappedFile(std::string path, const unsigned char* data, uint64_t size)
      : path_(std::move(path)), data_(data), size_(size) {}
  std::string path_;
  const unsigned char* data_;
  uint64_t size_;
};

}  // namespace moeserve

#endif  // MOESERVE_ENGINE_MAPPED_FILE_H_
