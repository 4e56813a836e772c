// The one place where internal statuses become gRPC statuses.
#ifndef MOESERVE_SERVER_STATUS_MAPPING_H_
#define MOESERVE_SERVER_STATUS_MAPPING_H_

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace moeserve {

// absl and gRPC share the canonical code numbering; the message is kept verbatim.
grpc::Status ToGrpcStatus(const absl::Status& status);

}  // namespace moeserve

#endif  // MOESERVE_SERVER_STATUS_MAPPING_H_
