// One Generate or Complete call: receives the request's events from the serving loop and
// writes them to the gRPC call, from whichever thread the event or the write completion
// arrives on.
//
// Streaming keeps at most one write in flight. Chunks produced while a write is in flight are
// merged into one pending chunk, so a client that reads slowly receives fewer, larger chunks
// and never makes the server buffer more than one chunk for it.
#ifndef MOESERVE_SERVER_GENERATION_CALL_H_
#define MOESERVE_SERVER_GENERATION_CALL_H_

#include <grpcpp/grpcpp.h>

#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "moeserve/v1/inference.grpc.pb.h"
#include "scheduler/scheduler.h"

namespace moeserve {

class GenerationCall : public RequestSink {
 public:
  enum class Mode { kStream, kUnary };

  GenerationCall(Mode mode, Scheduler* scheduler, grpc::CallbackServerContext* context, std::string request_id);

  // The reactor gRPC drives; owned by gRPC, deletes itself in OnDone.
  // The reactor keeps `self` alive until gRPC is done with the call.
  static grpc::ServerWriteReactor<v1::GenerateResponse>* MakeStreamReactor(std::shared_ptr<GenerationCall> self);
  static grpc::ServerUnaryReactor* MakeUnaryReactor(std::shared_ptr<GenerationCall> self,
                                                    v1::GenerateResponse* response);

  // Hands the request to the scheduler; on refusal the call ends with the mapped status.
  void Start(std::shared_ptr<GenerationCall> self, RequestParams params);
  // Ends the call at once with `status` (validation failures).
  void Reject(const grpc::Status& status);

  void OnEvent(TokenEvent event) override;

  // Runs once, just before the final status is handed to gRPC (or when gRPC drops the call
  // without one). Releasing a per-client slot here, not in OnDone, means a client that has seen
  // its status may start its next call at once without racing the server's cleanup.
  void set_on_finish(std::function<void()> on_finish) { on_finish_ = std::move(on_finish); }

 private:
  class StreamReactor;
  class UnaryReactor;
  struct Action;  // what to do with the reactor once the lock is released

  void OnWriteDone(bool ok);
  void OnCancel();
  void OnDone();
  Action NextActionLocked();
  void Perform(const Action& action);
  void RunOnFinish();
  v1::GenerateResponse ToResponse(TokenEvent& event) const;
  static void Merge(v1::GenerateResponse& into, v1::GenerateResponse&& chunk);

  const Mode mode_;
  Scheduler* const scheduler_;
  grpc::CallbackServerContext* const context_;
  const std::string request_id_;

  std::mutex mu_;
  StreamReactor* stream_ = nullptr;
  UnaryReactor* unary_ = nullptr;
  v1::GenerateResponse* unary_response_ = nullptr;
  std::optional<uint64_t> handle_;
  bool cancelled_ = false;   // the client went away (or its deadline passed)
  bool writing_ = false;     // a stream write is in flight
  bool finishing_ = false;   // Finish (or WriteAndFinish) has been issued
  std::optional<v1::GenerateResponse> pending_;  // merged chunks waiting for the write
  std::optional<v1::GenerateResponse> final_;    // the last chunk, once it exists
  grpc::Status final_status_;
  v1::GenerateResponse in_flight_;               // the message being written
  std::function<void()> on_finish_;
};

}  // namespace moeserve

#endif  // MOESERVE_SERVER_GENERATION_CALL_H_
