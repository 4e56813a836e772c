// Safetensors validation and config parsing: accepted inputs parse exactly, refused ones name
// the problem.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "engine/model_config.h"
#include "engine/safetensors.h"
#include "engine/tensor_store.h"

namespace moeserve {
namespace {

// Builds a safetensors image: 8-byte little-endian header length, header, data.
std::vector<unsigned char> Image(const std::string& header, size_t data_bytes) {
  std::vector<unsigned char> out(8 + header.size() + data_bytes, 0);
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<unsigned char>(n >> (8 * i));
  std::memcpy(out.data() + 8, header.data(), header.size());
  return out;
}

absl::Status Parse(const std::string& header, size_t data_bytes) {
  std::vector<unsigned char> img = Image(header, data_bytes);
  return ParseSafetensors(img.data(), img.size(), "t.safetensors").status();
}

TEST(Safetensors, ParsesTensorsAndIgnoresMetadata) {
  const std::string header =
      R"({"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},)"
      R"("b":{"dtype":"BF16","shape":[4],"data_offsets":[24,32]}})";
  std::vector<unsigned char> img = Image(header, 32);
  auto tensors = ParseSafetensors(img.data(), img.size(), "t.safetensors");
  ASSERT_TRUE(tensors.ok()) << tensors.status();
  ASSERT_EQ(tensors->size(), 2u);
  const TensorView& a = tensors->at("a");
  EXPECT_EQ(a.dtype, DType::kF32);
  EXPECT_EQ(a.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(a.data, img.data() + 8 + header.size());
  EXPECT_EQ(tensors->at("b").data, a.data + 24);
}

TEST(Safetensors, RefusesEveryKindOfLie) {
  struct Case {
    std::string header;
    size_t data;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {"{", 0, "not a JSON object"},
      {R"([1,2])", 0, "not a JSON object"},
      {R"({"a":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}})", 8, "unsupported dtype"},
      {R"({"a":{"shape":[1],"data_offsets":[0,4]}})", 4, "dtype"},
      {R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4, "non-negative"},
      {R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}})", 4, "end 0 < begin 4"},
      {R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,8]}})", 4, "out of range"},
      {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", 4, "needs 8"},
      {R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[2,6]}})",
       6, "overlaps"},
      {R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8, "gap of 4 bytes"},
      {R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 8, "trailing bytes"},
      {R"({"a":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,4]}})", 4, "overflows"},
  };
  for (const Case& c : cases) {
    const absl::Status s = Parse(c.header, c.data);
    EXPECT_FALSE(s.ok()) << c.header;
    EXPECT_NE(s.message().find(c.expected), std::string::npos) << c.header << " -> " << s.message();
  }
  unsigned char tiny[5] = {0};
  EXPECT_NE(ParseSafetensors(tiny, 5, "t").status().message().find("shorter than"), std::string::npos);
  std::vector<unsigned char> lying = Image("{}", 0);
  lying[0] = 200;  // header length past the end
  EXPECT_NE(ParseSafetensors(lying.data(), lying.size(), "t").status().message().find("exceeds"), std::string::npos);
}

TEST(ShardIndex, RefusesPathsAndNonStrings) {
  EXPECT_TRUE(ParseShardIndex(R"({"weight_map":{"a":"model-1.safetensors"}})", "i").ok());
  EXPECT_FALSE(ParseShardIndex(R"({"weight_map":{"a":"../x.safetensors"}})", "i").ok());
  EXPECT_FALSE(ParseShardIndex(R"({"weight_map":{"a":3}})", "i").ok());
  EXPECT_FALSE(ParseShardIndex(R"({"nope":{}})", "i").ok());
}

TEST(ModelConfig, MegatronKeysWinAndStaleHfKeysWarn) {
  auto c = ParseModelConfig(
      R"({"num_layers":27,"num_hidden_layers":32,"hidden_size":1280,"num_attention_heads":10,
          "num_query_groups":10,"num_key_value_heads":2,"ffn_hidden_size":3360,"intermediate_size":10240,
          "num_experts":77,"moe_ffn_hidden_size":64,"use_blockffn":true,"router_type":"topk"})",
      "config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->num_layers.value, 27);
  EXPECT_EQ(c->num_kv_groups.value, 10);
  EXPECT_EQ(c->ffn_hidden_size->value, 3360);
  EXPECT_EQ(c->head_dim, 128);
  EXPECT_EQ(c->router, RouterKind::kDecoRelu);  // router_type ignored with use_blockffn
  EXPECT_EQ(c->warnings.size(), 3u);
  EXPECT_NE(c->num_kv_groups.Describe().find("num_key_value_heads=2"), std::string::npos);
}

TEST(ModelConfig, HfKeysAreFallbacks) {
  auto c = ParseModelConfig(R"({"num_hidden_layers":4,"hidden_size":64,"num_attention_heads":4,
                                "num_key_value_heads":2,"intermediate_size":96})",
                            "config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->num_layers.value, 4);
  EXPECT_EQ(c->num_layers.key, "num_hidden_layers");
  EXPECT_EQ(c->num_kv_groups.value, 2);
  EXPECT_EQ(c->num_experts, 0);
}

TEST(ModelConfig, RefusalsNameTheKey) {
  const std::string base = R"("num_layers":2,"hidden_size":64,"num_attention_heads":4,"num_experts":8,
                              "moe_ffn_hidden_size":16,"use_blockffn":true)";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"("use_mup":true)", "use_mup"},
      {R"("rope_scaling":{"type":"linear"})", "rope_scaling"},
      {R"("router_norm_type":"layer")", "router_norm_type"},
      {R"("router_norm_type":null)", "router_norm_type"},
      {R"("expert_act_func":"gelu")", "expert_act_func"},
      {R"("moe_layer_freq":[1,1,1])", "moe_layer_freq"},
      {R"("num_query_groups":3)", "num_query_groups"},
      {R"("norm_epsilon":"small")", "norm_epsilon"},
      {R"("use_blockffn":false,"router_type":"expert_choice")", "router_type"},
      {R"("use_blockffn":false,"router_type":"topk","moe_router_topk":9)", "moe_router_topk"},
  };
  for (const auto& [extra, key] : cases) {
    auto c = ParseModelConfig("{" + base + "," + extra + "}", "config.json");
    EXPECT_FALSE(c.ok()) << extra;
    EXPECT_NE(c.status().message().find(key), std::string::npos) << extra << " -> " << c.status().message();
  }
  EXPECT_FALSE(ParseModelConfig("not json", "config.json").ok());
}

TEST(ModelConfig, MoeLayerFrequency) {
  auto every_other = ParseModelConfig(R"({"num_layers":4,"hidden_size":64,"num_attention_heads":4,
      "num_experts":8,"moe_ffn_hidden_size":16,"moe_layer_freq":2})", "c");
  ASSERT_TRUE(every_other.ok());
  EXPECT_EQ(every_other->moe_layer, (std::vector<bool>{true, false, true, false}));
  auto listed = ParseModelConfig(R"({"num_layers":3,"hidden_size":64,"num_attention_heads":4,
      "num_experts":8,"moe_ffn_hidden_size":16,"moe_layer_freq":[0,1,1]})", "c");
  ASSERT_TRUE(listed.ok());
  EXPECT_FALSE(listed->IsMoeLayer(0));
  EXPECT_TRUE(listed->IsMoeLayer(2));
}

}  // namespace
}  // namespace moeserve
