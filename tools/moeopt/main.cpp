// moeopt: command-line entry point. Subcommands live in cmd_<name>.cpp.
#include <cstdio>
#include <cstdlib>
#include <map>

#include "commands.h"
#include "moeopt/core/logging.h"

namespace moeopt::cli {

std::vector<SetupFn>& CommandRegistry::all() {
  static std::vector<SetupFn> fns;
  return fns;
}

int exit_code_for(const Status& st) {
  switch (st.code()) {
    case ErrorCode::kOk: return 0;
    case ErrorCode::kInvalidArgument:
    case ErrorCode::kNotFound:
    case ErrorCode::kIoError:
    case ErrorCode::kCorruptData:
    case ErrorCode::kUnsupported: return 2;
    case ErrorCode::kResourceExhausted:
    case ErrorCode::kInternal: return 1;
  }
  return 1;
}

int report_error(const std::string& command, const Status& st) {
  std::fprintf(stderr, "moeopt %s: error: %s\n", command.c_str(), st.message().c_str());
  return exit_code_for(st);
}

std::string data_root() {
  if (const char* home = std::getenv("MOEOPT_HOME")) return home;
  return MOEOPT_SOURCE_DIR;
}

}  // namespace moeopt::cli

int main(int argc, char** argv) {
  moeopt::log::init_from_env();
  CLI::App app{"moeopt: inference engine and OpenAI-compatible server for Mixture-of-Experts models"};
  app.set_version_flag("--version", std::string("moeopt ") + MOEOPT_VERSION);
  app.require_subcommand(1);
  std::vector<std::pair<CLI::App*, moeopt::cli::RunFn>> runs;
  for (auto setup : moeopt::cli::CommandRegistry::all()) {
    size_t before = app.get_subcommands({}).size();
    auto run = setup(app);
    auto subs = app.get_subcommands({});
    if (subs.size() > before) runs.emplace_back(subs.back(), std::move(run));
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  }
  for (auto& [sub, run] : runs)
    if (sub->parsed()) return run();
  return 2;
}
