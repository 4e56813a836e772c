// Validating reader for the safetensors format over an mmapped file.
//
// Layout: u64 little-endian header length N, N bytes of JSON header, then the data section.
// Every tensor's [begin, end) must lie inside the data section, match dtype x shape, and the
// tensors must tile the data section with no gaps or overlaps (as the reference library
// requires). Anything else is refused with a message naming the file and the tensor.
#ifndef MOESERVE_ENGINE_SAFETENSORS_H_
#define MOESERVE_ENGINE_SAFETENSORS_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/dtype.h"
#include "engine/mapped_file.h"

namespace moeserve {

// A tensor inside a mapped file. `data` may have any alignment.
struct TensorView {
  std::string name;
  std::string file;  // path of the file holding it, for error messages
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const unsigned char* data = nullptr;
  uint64_t num_bytes = 0;

  int64_t NumElements() const;
  std::string ShapeString() const;  // "[3, 4]"
};

class SafetensorsFile {
 public:
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);

  const std::map<std::string, TensorView>& tensors() const { return tensors_; }
  const std::string& path() const { return file_->path(); }

 private:
  explicit SafetensorsFile(std::unique_ptr<MappedFile> file) : file_(std::move(file)) {}
  absl::Status Parse();

  std::unique_ptr<MappedFile> file_;
  std::map<std::string, TensorView> tensors_;
};

// Parses a safetensors image already in memory (used by Open and by the fuzz/unit tests).
// The returned views point into `bytes`.
absl::StatusOr<std::map<std::string, TensorView>> ParseSafetensors(const unsigned char* bytes,
                                                                  uint64_t size,
                                                                  const std::string& file_label);

}  // namespace moeserve

#endif  // MOESERVE_ENGINE_SAFETENSORS_H_
