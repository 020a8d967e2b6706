// Delivering a Generation to the client, the two ways OpenAI responses go out:
//   collect():    non-streamed — the handler thread drains events until every choice finished
//                 (or the request deadline passed: 504), then builds one JSON body;
//   stream_sse(): streamed — a chunked content provider (text/event-stream) on the HTTP worker
//                 thread drains events and writes SSE; a failed write or a peer that closed the
//                 connection (checked while no token arrives) cancels the generation at the next
//                 step; the deadline ends the stream with an error event. Always ends with
//                 "data: [DONE]\n\n" when the connection still stands.
// Both drive an EventSink that turns events into state (and, streaming, into SSE text).
#pragma once
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <httplib.h>

#include "generation.hpp"

namespace dsv4::server {

class EventSink {
 public:
  virtual ~EventSink() = default;
  // Streaming only: SSE text to send before any token (e.g. the assistant role deltas).
  virtual void begin(std::string& sse) { (void)sse; }
  // A batch of events in arrival order; streaming sinks append SSE text to `sse`.
  virtual void on_events(std::vector<TokenEvent>& events, std::string& sse) = 0;
  virtual bool done() const = 0;  // every choice finished
  // Streaming only: SSE text after the last choice finished (the usage chunk), before [DONE].
  virtual void end(std::string& sse) { (void)sse; }
};

using Deadline = std::optional<std::chrono::steady_clock::time_point>;
Deadline deadline_after(int seconds);  // nullopt for 0

// Throws ApiError(504) when the deadline passes first (the generation is cancelled).
void collect(Generation& gen, EventSink& sink, Deadline deadline);

void stream_sse(httplib::Response& res, std::shared_ptr<Generation> gen, std::shared_ptr<EventSink> sink,
                Deadline deadline, const Logger& log);

}  // namespace dsv4::server
