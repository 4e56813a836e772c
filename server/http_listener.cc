#include "server/http_listener.h"

#include <httplib.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace moeserve {

absl::StatusOr<std::pair<std::string, int>> SplitHostPort(const std::string& key, const std::string& listen) {
  const size_t colon = listen.rfind(':');
  if (colon == std::string::npos || colon == 0) {
    return absl::InvalidArgumentError(absl::StrCat(key, ": expected host:port, got \"", listen, "\""));
  }
  std::string host = listen.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  int port = 0;
  if (!absl::SimpleAtoi(listen.substr(colon + 1), &port) || port < 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(key, ": bad port in \"", listen, "\""));
  }
  return std::make_pair(host, port);
}

absl::StatusOr<std::unique_ptr<HttpListener>> HttpListener::Start(const std::string& key, const std::string& listen,
                                                                  const std::function<void(httplib::Server&)>& routes,
                                                                  int threads, const HttpTlsFiles& tls) {
  ASSIGN_OR_RETURN(const auto host_port, SplitHostPort(key, listen));
  std::unique_ptr<HttpListener> l(new HttpListener());
  if (tls.cert_file.empty()) {
    l->server_ = std::make_unique<httplib::Server>();
  } else {
    l->server_ = std::make_unique<httplib::SSLServer>(
        tls.cert_file.c_str(), tls.key_file.c_str(), tls.client_ca_file.empty() ? nullptr : tls.client_ca_file.c_str());
    if (!l->server_->is_valid()) {
      return absl::InvalidArgumentError(absl::StrCat(key, ": cannot load the TLS certificate, key or client CA (",
                                                     tls.cert_file, ", ", tls.key_file, ")"));
    }
  }
  // cpp-httplib's default pool is max(8, cores - 1) threads; a scrape endpoint needs few.
  l->server_->new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
  routes(*l->server_);
  const auto& [host, port] = host_port;
  l->port_ = port == 0 ? l->server_->bind_to_any_port(host) : (l->server_->bind_to_port(host, port) ? port : -1);
  if (l->port_ <= 0) {
    return absl::UnavailableError(absl::StrCat(key, " ", listen, ": cannot listen (address in use or not local?)"));
  }
  l->thread_ = std::thread([s = l->server_.get()] { s->listen_after_bind(); });
  return l;
}

HttpListener::~HttpListener() {
  if (server_ != nullptr) server_->stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace moeserve
