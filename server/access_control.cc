#include "server/access_control.h"

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace moeserve {

bool ConstantTimeEquals(const std::string& a, const std::string& b) {
  // Walk the longer input fully so the time depends only on the lengths.
  const size_t n = std::max(a.size(), b.size());
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < n; ++i) {
    const unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    const unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    diff |= x ^ y;
  }
  return diff == 0;
}

absl::StatusOr<std::unique_ptr<AccessControl>> AccessControl::Create(const AuthSection& auth, int max_per_client) {
  auto ac = std::make_unique<AccessControl>();
  ac->max_per_client_ = max_per_client;
  if (!auth.token_file.empty()) {
    std::ifstream in(auth.token_file);
    if (!in) return absl::NotFoundError(absl::StrCat("server.auth.token_file: cannot read ", auth.token_file));
    std::stringstream ss;
    ss << in.rdbuf();
    ac->token_ = std::string(absl::StripAsciiWhitespace(ss.str()));
    if (ac->token_.empty()) return absl::InvalidArgumentError("server.auth.token_file: the file is empty");
  } else if (!auth.token_env.empty()) {
    const char* value = std::getenv(auth.token_env.c_str());
    if (value == nullptr || *value == '\0') {
      return absl::InvalidArgumentError(
          absl::StrCat("server.auth.token_env: environment variable ", auth.token_env, " is unset or empty"));
    }
    ac->token_ = std::string(absl::StripAsciiWhitespace(value));
  }
  return ac;
}

grpc::Status AccessControl::Authenticate(const grpc::CallbackServerContext& context) const {
  if (token_.empty()) return grpc::Status::OK;
  const auto& metadata = context.client_metadata();
  auto it = metadata.find("authorization");
  if (it == metadata.end()) return AuthenticateHeader(nullptr);
  const std::string value(it->second.data(), it->second.size());
  return AuthenticateHeader(&value);
}

grpc::Status AccessControl::AuthenticateHeader(const std::string* authorization) const {
  if (token_.empty()) return grpc::Status::OK;
  if (authorization == nullptr) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "missing authorization metadata (Bearer token)");
  }
  const std::string& value = *authorization;
  constexpr char kPrefix[] = "Bearer ";
  const bool has_prefix = value.rfind(kPrefix, 0) == 0;
  const std::string presented = has_prefix ? value.substr(sizeof(kPrefix) - 1) : "";
  if (!ConstantTimeEquals(presented, token_) || !has_prefix) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "invalid bearer token");
  }
  return grpc::Status::OK;
}

std::string AccessControl::ClientKey(const grpc::CallbackServerContext& context) {
  // peer() is "ipv4:1.2.3.4:5678" or "ipv6:[::1]:5678": drop the port.
  const std::string peer = context.peer();
  const size_t colon = peer.rfind(':');
  return colon == std::string::npos ? peer : peer.substr(0, colon);
}

grpc::Status AccessControl::Acquire(const std::string& client) {
  if (max_per_client_ <= 0) return grpc::Status::OK;
  std::lock_guard<std::mutex> lock(mu_);
  int& n = in_flight_[client];
  if (n >= max_per_client_) {
    return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                        absl::StrCat("per-client concurrency limit reached (", max_per_client_, " in flight)"));
  }
  ++n;
  return grpc::Status::OK;
}

void AccessControl::Release(const std::string& client) {
  if (max_per_client_ <= 0) return;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = in_flight_.find(client);
  if (it != in_flight_.end() && --it->second <= 0) in_flight_.erase(it);
}

}  // namespace moeserve
