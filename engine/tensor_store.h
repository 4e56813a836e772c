// All tensors of a checkpoint directory: one model.safetensors, or shards listed by
// model.safetensors.index.json. Tracks which tensors the model consumed so that a checkpoint
// with unexpected tensors is refused rather than silently half-used.
#ifndef MOESERVE_ENGINE_TENSOR_STORE_H_
#define MOESERVE_ENGINE_TENSOR_STORE_H_

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/safetensors.h"

namespace moeserve {

// Parses model.safetensors.index.json: tensor name → shard file name (a plain name beside
// the index). `label` (the path) prefixes errors.
absl::StatusOr<std::map<std::string, std::string>> ParseShardIndex(const std::string& text, const std::string& label);

class TensorStore {
 public:
  // Opens `dir`/model.safetensors, or the shards named by `dir`/model.safetensors.index.json.
  static absl::StatusOr<std::unique_ptr<TensorStore>> OpenDirectory(const std::string& dir);

  // nullptr when absent. Does not mark the tensor as used.
  const TensorView* Find(const std::string& name) const;

  // Returns the tensor and marks it used; errors name the tensor and the expected shape.
  absl::StatusOr<const TensorView*> Take(const std::string& name, const std::vector<int64_t>& shape);

  // Error naming the first tensor no one took (an unexpected tensor), or OK.
  absl::Status CheckAllTaken() const;

  const std::map<std::string, TensorView>& tensors() const { return tensors_; }
  const std::string& description() const { return description_; }

 private:
  TensorStore() = default;
  absl::Status AddFile(std::unique_ptr<SafetensorsFile> file);

  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, TensorView> tensors_;
  std::set<std::string> taken_;
  std::string description_;  // where the tensors came from, for messages
};

}  // namespace moeserve

#endif  // MOESERVE_ENGINE_TENSOR_STORE_H_
