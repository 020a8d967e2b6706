// Placeholder until its issue lands: reports that the subcommand is not built yet.
#include "commands.hpp"
#include "dsv4/error.hpp"
namespace dsv4::cli {
int cmd_inspect(const Args&) { fail(Status::unsupported, "this subcommand is not implemented yet"); }
}
