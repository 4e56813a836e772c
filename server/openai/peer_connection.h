// Notices that an HTTP client went away while its request runs, without writing to it: the
// handler's socket is found once (the TLS session's descriptor, or by matching the request's
// local and remote endpoints among this process's sockets), then polled for POLLRDHUP/HUP/ERR.
// httplib keeps the socket open until the handler and its content provider return, so the
// descriptor cannot be reused meanwhile. Linux only; elsewhere (or when no socket matches)
// Closed() is always false and a disconnect is seen only when a write fails.
//
// Thread-safety: use from the request's worker thread.
#ifndef MOESERVE_SERVER_OPENAI_PEER_CONNECTION_H_
#define MOESERVE_SERVER_OPENAI_PEER_CONNECTION_H_

namespace httplib {
struct Request;
}

namespace moeserve {

class PeerConnection {
 public:
  explicit PeerConnection(const httplib::Request& request);

  // True once the client has closed (or reset) the connection.
  bool Closed() const;
  bool found() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

}  // namespace moeserve

#endif  // MOESERVE_SERVER_OPENAI_PEER_CONNECTION_H_
