// Non-streamed and streamed delivery (contract in delivery.hpp).
#include "delivery.hpp"

#include "api_error.hpp"
#include "openai_response.hpp"

namespace dsv4::server {
namespace {

using Clock = std::chrono::steady_clock;
// How long the writer waits for a token before it checks the deadline and whether the peer is
// still there: short enough that a vanished client is noticed within a step or two.
constexpr std::chrono::milliseconds kPoll{100};

bool expired(const Deadline& d) { return d && Clock::now() >= *d; }

}  // namespace

Deadline deadline_after(int seconds) {
  if (seconds <= 0) return std::nullopt;
  return Clock::now() + std::chrono::seconds(seconds);
}

void collect(Generation& gen, EventSink& sink, Deadline deadline) {
  std::vector<TokenEvent> events;
  std::string unused;
  while (!sink.done()) {
    events.clear();
    if (gen.next(events, kPoll)) sink.on_events(events, unused);
    if (!sink.done() && expired(deadline)) {
      gen.cancel();
      throw ApiError(504, "The request did not finish within the server's --request-timeout", {}, "timeout");
    }
  }
}

void stream_sse(httplib::Response& res, std::shared_ptr<Generation> gen, std::shared_ptr<EventSink> sink,
                Deadline deadline, const Logger& log) {
  res.status = 200;
  res.set_header("Cache-Control", "no-cache");
  res.set_header("X-Accel-Buffering", "no");  // proxies: do not buffer the stream
  auto provider = [gen, sink, deadline, &log](size_t, httplib::DataSink& out) -> bool {
    auto write = [&](const std::string& s) { return s.empty() || out.write(s.data(), s.size()); };
    try {
      std::string text;
      sink->begin(text);
      if (!write(text)) {
        gen->cancel();
        return false;
      }
      std::vector<TokenEvent> events;
      while (!sink->done()) {
        events.clear();
        text.clear();
        if (!gen->next(events, kPoll)) {
          if (!out.is_writable()) {  // the client went away while nothing was being written
            gen->cancel();
            return false;
          }
          if (expired(deadline)) {
            gen->cancel();
            const ApiError e(504, "The request did not finish within the server's --request-timeout", {}, "timeout");
            write(sse(error_body(e)) + std::string(kSseDone));
            out.done();
            return true;
          }
          continue;
        }
        sink->on_events(events, text);
        if (!write(text)) {  // a write failed: the client is gone (or stalled past --timeout)
          gen->cancel();
          return false;
        }
      }
      text.clear();
      sink->end(text);
      text += kSseDone;
      if (!write(text)) return false;
      out.done();
      return true;
    } catch (const std::exception& e) {
      // The status line is long gone: tell the client in-band, then end the stream.
      gen->cancel();
      log.error("serve: stream failed: {}", e.what());
      const ApiError err(500, std::string("internal error while streaming: ") + e.what(), {}, "internal_error");
      write(sse(error_body(err)) + std::string(kSseDone));
      out.done();
      return true;
    }
  };
  res.set_chunked_content_provider("text/event-stream", std::move(provider));
}

}  // namespace dsv4::server
