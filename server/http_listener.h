// One HTTP listener (cpp-httplib) on its own thread: the Prometheus endpoint today, and any
// other plain-HTTP surface of the server. Replaces prometheus-cpp's embedded civetweb, whose
// Debian build starts every thread with a fixed 100 KiB stack: glibc carves the process's
// static TLS out of each thread stack, and with libcublasLt (94 KiB of TLS) loaded that no
// longer fits, so pthread_create fails with EINVAL and civetweb serves nothing (docs/CUDA.md).
// cpp-httplib's threads are std::threads with the default stack.
//
// Thread-safety: handlers run on the listener's worker threads; construction and destruction
// on the owner's.
#ifndef MOESERVE_SERVER_HTTP_LISTENER_H_
#define MOESERVE_SERVER_HTTP_LISTENER_H_

#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"

namespace httplib {
class Server;
}

namespace moeserve {

// HTTPS for a listener: PEM files; an empty cert_file means plain HTTP. client_ca_file set =
// client certificates required and verified against it.
struct HttpTlsFiles {
  std::string cert_file;
  std::string key_file;
  std::string client_ca_file;
};

class HttpListener {
 public:
  // Binds `listen` ("host:port", "[v6]:port"; port 0 picks a free one), lets `routes` register
  // its handlers, and starts serving with `threads` workers (HTTPS when `tls` has a
  // certificate). Errors name `key` (the config key).
  static absl::StatusOr<std::unique_ptr<HttpListener>> Start(const std::string& key, const std::string& listen,
                                                             const std::function<void(httplib::Server&)>& routes,
                                                             int threads = 2, const HttpTlsFiles& tls = {});
  ~HttpListener();  // stops serving and joins

  int port() const { return port_; }

 private:
  HttpListener() = default;

  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  int port_ = 0;
};

// Splits "host:port" / "[v6]:port" into its parts; InvalidArgument naming `key` otherwise.
absl::StatusOr<std::pair<std::string, int>> SplitHostPort(const std::string& key, const std::string& listen);

}  // namespace moeserve

#endif  // MOESERVE_SERVER_HTTP_LISTENER_H_
