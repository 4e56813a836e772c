#include "server/openai/peer_connection.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <httplib.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <cstdlib>
#include <cstring>
#include <string>

namespace moeserve {
namespace {

// Address and port of a socket address, in the forms httplib reports them.
bool Endpoint(const sockaddr_storage& a, std::string* host, int* port) {
  char buf[INET6_ADDRSTRLEN] = {};
  if (a.ss_family == AF_INET) {
    const auto* v4 = reinterpret_cast<const sockaddr_in*>(&a);
    inet_ntop(AF_INET, &v4->sin_addr, buf, sizeof(buf));
    *port = ntohs(v4->sin_port);
  } else if (a.ss_family == AF_INET6) {
    const auto* v6 = reinterpret_cast<const sockaddr_in6*>(&a);
    inet_ntop(AF_INET6, &v6->sin6_addr, buf, sizeof(buf));
    *port = ntohs(v6->sin6_port);
  } else {
    return false;
  }
  *host = buf;
  return true;
}

bool Matches(int fd, const httplib::Request& r) {
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode)) return false;
  sockaddr_storage local{}, remote{};
  socklen_t ll = sizeof(local), rl = sizeof(remote);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &ll) != 0) return false;
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&remote), &rl) != 0) return false;
  std::string lh, rh;
  int lp = 0, rp = 0;
  if (!Endpoint(local, &lh, &lp) || !Endpoint(remote, &rh, &rp)) return false;
  return lp == r.local_port && rp == r.remote_port && rh == r.remote_addr;
}

}  // namespace

PeerConnection::PeerConnection(const httplib::Request& request) {
#ifdef CPPHTTPLIB_OPENSSL_SUPPORT
  if (request.ssl != nullptr) {
    fd_ = SSL_get_fd(request.ssl);
    return;
  }
#endif
#ifdef __linux__
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return;
  while (dirent* e = readdir(dir)) {
    char* end = nullptr;
    const long fd = std::strtol(e->d_name, &end, 10);
    if (end == e->d_name || *end != '\0' || fd == dirfd(dir)) continue;
    if (Matches(static_cast<int>(fd), request)) {
      fd_ = static_cast<int>(fd);
      break;
    }
  }
  closedir(dir);
#endif
}

bool PeerConnection::Closed() const {
  if (fd_ < 0) return false;
#ifdef __linux__
  pollfd p{fd_, POLLRDHUP, 0};
  if (poll(&p, 1, 0) <= 0) return false;
  return (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
#else
  return false;
#endif
}

}  // namespace moeserve
