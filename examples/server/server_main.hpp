// serve(): the whole server process — bind the HTTP listener first (so /health answers 503
// "loading" while Model::load runs on its own thread), load, serve until SIGINT / SIGTERM, then
// stop gracefully: new requests get 503, every live request is cancelled (open streams end with
// finish_reason "abort" and [DONE]), the workers finish, the engine stops. A second signal, or
// one during loading, exits at once. Returns the process exit code (0 after a signal-driven stop,
// 1 when binding or loading failed).
#pragma once
#include "server_options.hpp"

namespace dsv4::server {

int serve(const ServerOptions& opt);

}  // namespace dsv4::server
