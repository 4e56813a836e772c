// Who may call the Inference service: optional bearer-token authentication (token from a file
// or an environment variable, compared in constant time) and an optional limit on concurrent
// generations per client. Health and reflection stay open so that probes work.
#ifndef MOESERVE_SERVER_ACCESS_CONTROL_H_
#define MOESERVE_SERVER_ACCESS_CONTROL_H_

#include <grpcpp/grpcpp.h>

#include <map>
#include <mutex>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "server/server_config.h"

namespace moeserve {

class AccessControl {
 public:
  // Reads the token (auth.token_file or auth.token_env) when auth is on.
  static absl::StatusOr<std::unique_ptr<AccessControl>> Create(const AuthSection& auth, int max_per_client);

  // OK, or UNAUTHENTICATED when a token is required and the call lacks the right one.
  grpc::Status Authenticate(const grpc::CallbackServerContext& context) const;
  // The same check on an Authorization header's value (HTTP API); null = header absent.
  grpc::Status AuthenticateHeader(const std::string* authorization) const;

  // The key a call is counted under: the bearer token's holder is not known, so the peer
  // address (without port) identifies a client.
  static std::string ClientKey(const grpc::CallbackServerContext& context);

  // Reserves a generation slot for `client`; RESOURCE_EXHAUSTED when the client is at its limit.
  grpc::Status Acquire(const std::string& client);
  void Release(const std::string& client);

 private:
  std::string token_;  // empty = no authentication
  int max_per_client_ = 0;
  std::mutex mu_;
  std::map<std::string, int> in_flight_ ABSL_GUARDED_BY(mu_);
};

// Equal-length-independent comparison whose time does not depend on where the inputs differ.
bool ConstantTimeEquals(const std::string& a, const std::string& b);

}  // namespace moeserve

#endif  // MOESERVE_SERVER_ACCESS_CONTROL_H_
