#include "engine/tensor_store.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace moeserve {
namespace fs = std::filesystem;

namespace {

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

}  // namespace

absl::StatusOr<std::map<std::string, std::string>> ParseShardIndex(const std::string& text, const std::string& label) {
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(label, ": not a JSON object with a \"weight_map\" object"));
  }
  std::map<std::string, std::string> weight_map;
  for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
    if (!it.value().is_string()) {
      return absl::InvalidArgumentError(absl::StrCat(label, ": weight_map[\"", it.key(), "\"] is not a file name"));
    }
    const std::string shard = it.value().get<std::string>();
    // Shards live beside the index: no paths, so an index cannot point outside the model.
    if (shard.empty() || shard.find('/') != std::string::npos || shard == "." || shard == "..") {
      return absl::InvalidArgumentError(
          absl::StrCat(label, ": weight_map[\"", it.key(), "\"] = \"", shard, "\" is not a plain file name"));
    }
    weight_map[it.key()] = shard;
  }
  return weight_map;
}

absl::StatusOr<std::unique_ptr<TensorStore>> TensorStore::OpenDirectory(const std::string& dir) {
  std::unique_ptr<TensorStore> store(new TensorStore());
  const fs::path single = fs::path(dir) / "model.safetensors";
  const fs::path index = fs::path(dir) / "model.safetensors.index.json";
  std::error_code ec;
  if (fs::exists(single, ec)) {
    ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(single.string()));
    RETURN_IF_ERROR(store->AddFile(std::move(file)));
    store->description_ = single.string();
    return store;
  }
  if (!fs::exists(index, ec)) {
    std::string hint;
    if (fs::exists(fs::path(dir) / "pytorch_model.bin", ec)) {
      hint = " (found pytorch_model.bin: convert it with tools/convert_bin_to_safetensors.py)";
    }
    return absl::NotFoundError(absl::StrCat(dir, ": neither model.safetensors nor "
                                                 "model.safetensors.index.json found",
                                            hint));
  }
  std::ifstream in(index);
  std::stringstream text;
  text << in.rdbuf();
  ASSIGN_OR_RETURN(const auto weight_map, ParseShardIndex(text.str(), index.string()));
  // Open each shard once, then check the map against the shards' contents both ways.
  std::set<std::string> shard_names;
  for (const auto& [name, shard] : weight_map) shard_names.insert(shard);
  for (const std::string& shard : shard_names) {
    const fs::path path = fs::path(dir) / shard;
    if (!fs::exists(path, ec)) {
      return absl::NotFoundError(absl::StrCat(index.string(), " names shard ", shard,
                                              ", which does not exist (", path.string(), ")"));
    }
    ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(path.string()));
    RETURN_IF_ERROR(store->AddFile(std::move(file)));
  }
  for (const auto& [name, shard] : weight_map) {
    auto it = store->tensors_.find(name);
    if (it == store->tensors_.end() || fs::path(it->second.file).filename() != shard) {
      return absl::InvalidArgumentError(absl::StrCat(index.string(), ": tensor \"", name,
                                                     "\" is mapped to ", shard,
                                                     ", which does not contain it"));
    }
  }
  for (const auto& [name, view] : store->tensors_) {
    if (!weight_map.count(name)) {
      return absl::InvalidArgumentError(absl::StrCat(view.file, ": tensor \"", name,
                                                     "\" is not listed in ", index.string()));
    }
  }
  store->description_ = index.string();
  return store;
}

absl::Status TensorStore::AddFile(std::unique_ptr<SafetensorsFile> file) {
  for (const auto& [name, view] : file->tensors()) {
    auto [it, inserted] = tensors_.emplace(name, view);
    if (!inserted) {
      return absl::InvalidArgumentError(absl::StrCat("tensor \"", name, "\" appears in both ",
                                                     it->second.file, " and ", view.file));
    }
  }
  files_.push_back(std::move(file));
  return absl::OkStatus();
}

const TensorView* TensorStore::Find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

absl::StatusOr<const TensorView*> TensorStore::Take(const std::string& name,
                                                    const std::vector<int64_t>& shape) {
  const TensorView* view = Find(name);
  if (view == nullptr) {
    return absl::NotFoundError(absl::StrCat(description_, ": missing tensor \"", name,
                                            "\" (expected shape ", ShapeString(shape), ")"));
  }
  if (view->shape != shape) {
    return absl::InvalidArgumentError(absl::StrCat(view->file, ": tensor \"", name, "\" has shape ",
                                                   view->ShapeString(), ", expected ",
                                                   ShapeString(shape)));
  }
  taken_.insert(name);
  return view;
}

absl::Status TensorStore::CheckAllTaken() const {
  for (const auto& [name, view] : tensors_) {
    if (!taken_.count(name)) {
      return absl::InvalidArgumentError(absl::StrCat(
          view.file, ": unexpected tensor \"", name, "\" ", view.ShapeString(),
          " (not part of the model that config.json describes)"));
    }
  }
  return absl::OkStatus();
}

}  // namespace moeserve
