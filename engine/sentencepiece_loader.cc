#include <dlfcn.h>
#include <unistd.h>

#include <filesystem>
#include <mutex>

#include "engine/sentencepiece_adapter.h"

namespace moeserve {
namespace {

constexpr char kModuleName[] = "libmoeserve_sentencepiece.so";

using Factory = SentencePieceBackend* (*)();

std::vector<std::string> Candidates() {
  std::vector<std::string> paths;
  if (const char* env = std::getenv("MOESERVE_SENTENCEPIECE_MODULE"); env != nullptr && *env) paths.push_back(env);
  std::error_code ec;
  const std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    paths.push_back((exe.parent_path() / kModuleName).string());
    paths.push_back((exe.parent_path() / ".." / "lib" / "moeserve" / kModuleName).string());
  }
#ifdef MOESERVE_SENTENCEPIECE_MODULE_PATH
  paths.push_back(MOESERVE_SENTENCEPIECE_MODULE_PATH);
#endif
  return paths;
}

// gcc announces sanitizers with macros, clang through __has_feature.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define MOESERVE_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define MOESERVE_SANITIZED 1
#endif
#endif

int OpenFlags() {
#if defined(MOESERVE_SANITIZED)
  // Sanitizer runtimes refuse RTLD_DEEPBIND; sanitizer builds must not load gRPC's protobuf
  // and SentencePiece in one process (the engine tests don't).
  return RTLD_NOW | RTLD_LOCAL;
#else
  return RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND;
#endif
}

}  // namespace

std::unique_ptr<SentencePieceBackend> CreateSentencePieceBackend(std::string* error) {
  static std::once_flag once;
  static Factory factory = nullptr;
  static std::string load_error;
  std::call_once(once, [] {
    std::string tried;
    for (const std::string& path : Candidates()) {
      std::error_code ec;
      if (!std::filesystem::exists(path, ec)) {
        tried += " " + path;
        continue;
      }
      void* handle = dlopen(path.c_str(), OpenFlags());  // never closed: lives as long as the process
      if (handle == nullptr) {
        load_error = std::string("cannot load ") + path + ": " + dlerror();
        return;
      }
      factory = reinterpret_cast<Factory>(dlsym(handle, "moeserve_create_sentencepiece_backend"));
      if (factory == nullptr) load_error = path + ": missing moeserve_create_sentencepiece_backend";
      return;
    }
    load_error = std::string("SentencePiece module ") + kModuleName + " not found; tried" + tried;
  });
  if (factory == nullptr) {
    *error = load_error;
    return nullptr;
  }
  return std::unique_ptr<SentencePieceBackend>(factory());
}

}  // namespace moeserve
