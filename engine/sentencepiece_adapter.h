// A wall around libsentencepiece. Debian's libsentencepiece exports its own bundled copy of
// protobuf 3.14, which clashes with the system libprotobuf (3.21) that gRPC loads: whichever
// is found first breaks the other. So SentencePiece lives in a separate module
// (libmoeserve_sentencepiece.so) that is dlopen'ed with RTLD_LOCAL | RTLD_DEEPBIND: the
// module and libsentencepiece bind to their own protobuf, the rest of the process to the
// system one. This header uses nothing but the standard library.
#ifndef MOESERVE_ENGINE_SENTENCEPIECE_ADAPTER_H_
#define MOESERVE_ENGINE_SENTENCEPIECE_ADAPTER_H_

#include <memory>
#include <string>
#include <vector>

namespace moeserve {

// Implemented inside the module. Methods return "" on success, else the library's message.
class SentencePieceBackend {
 public:
  virtual ~SentencePieceBackend() = default;
  virtual std::string Load(const std::string& path) = 0;
  virtual std::string Encode(const std::string& text, std::vector<int>* ids) const = 0;
  virtual std::string Decode(const std::vector<int>& ids, std::string* text) const = 0;
  virtual int PieceCount() const = 0;
  virtual int BosId() const = 0;
  virtual std::string IdToPiece(int id) const = 0;
};

// Loads the module (once per process) and creates a backend; nullptr with *error set when
// the module cannot be found or loaded. Search order: $MOESERVE_SENTENCEPIECE_MODULE, next to
// the executable, ../lib/moeserve/ beside it, then the build tree.
std::unique_ptr<SentencePieceBackend> CreateSentencePieceBackend(std::string* error);

}  // namespace moeserve

extern "C" moeserve::SentencePieceBackend* moeserve_create_sentencepiece_backend();

#endif  // MOESERVE_ENGINE_SENTENCEPIECE_ADAPTER_H_
