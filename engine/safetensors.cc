#include "engine/safetensors.h"

#include <algorithm>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace moeserve {
namespace {

// A header larger than this is certainly not a model's tensor table.
constexpr uint64_t kMaxHeaderBytes = uint64_t{256} << 20;

absl::Status Invalid(const std::string& file, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(file, ": ", what));
}

// Reads a non-negative JSON integer that fits in int64.
bool ReadNonNegative(const nlohmann::json& j, uint64_t* out) {
  if (j.is_number_unsigned()) {
    *out = j.get<uint64_t>();
    return *out <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
  }
  if (j.is_number_integer() && j.get<int64_t>() >= 0) {
    *out = static_cast<uint64_t>(j.get<int64_t>());
    return true;
  }
  return false;
}

}  // namespace

int64_t TensorView::NumElements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string TensorView::ShapeString() const {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

absl::StatusOr<std::map<std::string, TensorView>> ParseSafetensors(const unsigned char* bytes,
                                                                  uint64_t size,
                                                                  const std::string& file) {
  if (size < 8) {
    return Invalid(file, absl::StrCat("truncated: ", size, " bytes, shorter than the 8-byte header length"));
  }
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | bytes[i];
  if (header_len > size - 8) {
    return Invalid(file, absl::StrCat("header length ", header_len, " exceeds the ", size - 8,
                                      " bytes after the length field (truncated file or lying header)"));
  }
  if (header_len > kMaxHeaderBytes) {
    return Invalid(file, absl::StrCat("header length ", header_len, " is implausibly large"));
  }
  const char* header_begin = reinterpret_cast<const char*>(bytes + 8);
  nlohmann::json header = nlohmann::json::parse(header_begin, header_begin + header_len,
                                                /*cb=*/nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded() || !header.is_object()) {
    return Invalid(file, "header is not a JSON object");
  }
  const uint64_t data_size = size - 8 - header_len;
  const unsigned char* data = bytes + 8 + header_len;

  std::map<std::string, TensorView> tensors;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;  // [begin, end) per tensor
  std::vector<std::string> range_names;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    if (name == "__metadata__") continue;
    const nlohmann::json& entry = it.value();
    const std::string where = absl::StrCat("tensor \"", name, "\"");
    if (!entry.is_object()) return Invalid(file, absl::StrCat(where, ": header entry is not an object"));
    auto dtype_it = entry.find("dtype");
    auto shape_it = entry.find("shape");
    auto offsets_it = entry.find("data_offsets");
    if (dtype_it == entry.end() || !dtype_it->is_string()) {
      return Invalid(file, absl::StrCat(where, ": missing or non-string \"dtype\""));
    }
    if (shape_it == entry.end() || !shape_it->is_array()) {
      return Invalid(file, absl::StrCat(where, ": missing or non-array \"shape\""));
    }
    if (offsets_it == entry.end() || !offsets_it->is_array() || offsets_it->size() != 2) {
      return Invalid(file, absl::StrCat(where, ": \"data_offsets\" must be [begin, end]"));
    }
    TensorView view;
    view.name = name;
    view.file = file;
    auto dtype = ParseSafetensorsDType(dtype_it->get<std::string>());
    if (!dtype.ok()) return Invalid(file, absl::StrCat(where, ": ", dtype.status().message()));
    view.dtype = *dtype;
    // Element count with overflow checks: a lying shape must not wrap around.
    uint64_t elements = 1;
    for (const auto& dim : *shape_it) {
      uint64_t d;
      if (!ReadNonNegative(dim, &d)) {
        return Invalid(file, absl::StrCat(where, ": shape entries must be non-negative integers"));
      }
      if (d != 0 && elements > (uint64_t{1} << 62) / d) {
        return Invalid(file, absl::StrCat(where, ": shape overflows"));
      }
      elements *= d;
      view.shape.push_back(static_cast<int64_t>(d));
    }
    uint64_t begin, end;
    if (!ReadNonNegative((*offsets_it)[0], &begin) || !ReadNonNegative((*offsets_it)[1], &end)) {
      return Invalid(file, absl::StrCat(where, ": data_offsets must be non-negative integers"));
    }
    if (end < begin) {
      return Invalid(file, absl::StrCat(where, ": data_offsets end ", end, " < begin ", begin));
    }
    if (end > data_size) {
      return Invalid(file, absl::StrCat(where, ": data_offsets [", begin, ", ", end,
                                        ") out of range: data section has ", data_size,
                                        " bytes (truncated file?)"));
    }
    const uint64_t expected = elements * static_cast<uint64_t>(DTypeSize(view.dtype));
    if (end - begin != expected) {
      return Invalid(file, absl::StrCat(where, ": data_offsets span ", end - begin, " bytes but ",
                                        DTypeName(view.dtype), " ", view.ShapeString(), " needs ",
                                        expected));
    }
    view.data = data + begin;
    view.num_bytes = end - begin;
    ranges.emplace_back(begin, end);
    range_names.push_back(name);
    tensors.emplace(name, std::move(view));
  }

  // The tensors must tile the data section: sort by begin and walk.
  std::vector<size_t> order(ranges.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return ranges[a].first != ranges[b].first ? ranges[a].first < ranges[b].first
                                              : ranges[a].second < ranges[b].second;
  });
  uint64_t cursor = 0;
  std::string previous = "the start of the data section";
  for (size_t i : order) {
    const auto [begin, end] = ranges[i];
    if (begin < cursor) {
      return Invalid(file, absl::StrCat("tensor \"", range_names[i], "\" overlaps ", previous,
                                        " (begin ", begin, " < ", cursor, ")"));
    }
    if (begin > cursor) {
      return Invalid(file, absl::StrCat("gap of ", begin - cursor, " bytes before tensor \"",
                                        range_names[i], "\" (after ", previous, ")"));
    }
    cursor = end;
    previous = absl::StrCat("tensor \"", range_names[i], "\"");
  }
  if (cursor != data_size) {
    return Invalid(file, absl::StrCat(data_size - cursor, " trailing bytes after ", previous));
  }
  return tensors;
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  ASSIGN_OR_RETURN(auto mapped, MappedFile::Open(path));
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile(std::move(mapped)));
  RETURN_IF_ERROR(file->Parse());
  return file;
}

absl::Status SafetensorsFile::Parse() {
  ASSIGN_OR_RETURN(tensors_, ParseSafetensors(file_->data(), file_->size(), file_->path()));
  return absl::OkStatus();
}

}  // namespace moeserve
