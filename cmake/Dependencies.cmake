# Third-party dependencies: Debian -dev packages (scripts/setup.sh installs them).
# Nothing here is vendored; see docs/architecture.md "Dependencies".
find_package(Threads REQUIRED)
find_package(nlohmann_json 3.10 REQUIRED)
find_package(CLI11 REQUIRED)
find_package(fmt REQUIRED)
find_package(spdlog REQUIRED)
find_package(yaml-cpp REQUIRED)
find_package(PkgConfig REQUIRED)
pkg_check_modules(PCRE2 REQUIRED IMPORTED_TARGET libpcre2-8)
pkg_check_modules(UTF8PROC REQUIRED IMPORTED_TARGET libutf8proc)
# Debian builds cpp-httplib as a shared library with a pkg-config file.
pkg_check_modules(HTTPLIB REQUIRED IMPORTED_TARGET cpp-httplib)
if(MOEOPT_TESTS)
  find_package(GTest REQUIRED)
endif()
if(MOEOPT_BENCH)
  find_package(benchmark REQUIRED)
endif()
# zlib: vendored data files (tokenizers, goldens) are stored gzip-compressed.
find_package(ZLIB REQUIRED)
