# Every dependency comes from a Debian 12 package (scripts/install-deps).
find_package(PkgConfig REQUIRED)
find_package(Threads REQUIRED)
find_package(absl CONFIG REQUIRED)
find_package(GTest CONFIG REQUIRED)
find_package(benchmark CONFIG REQUIRED)
find_package(spdlog CONFIG REQUIRED)
find_package(CLI11 CONFIG REQUIRED)          # command lines (header-only)
find_package(nlohmann_json CONFIG REQUIRED)  # JSON written and read (header-only)
pkg_check_modules(LZ4 REQUIRED IMPORTED_TARGET liblz4)
pkg_check_modules(ZSTD REQUIRED IMPORTED_TARGET libzstd)
pkg_check_modules(XXHASH REQUIRED IMPORTED_TARGET libxxhash)
pkg_check_modules(URING REQUIRED IMPORTED_TARGET liburing)
pkg_check_modules(IBVERBS REQUIRED IMPORTED_TARGET libibverbs)
pkg_check_modules(RDMACM REQUIRED IMPORTED_TARGET librdmacm)
pkg_check_modules(UCX REQUIRED IMPORTED_TARGET ucx)
# libssl-dev: TLS on the data plane (transport/src/tls_context.cc), in every
# build (the TSan build too); farswap-server also checks its control-plane
# TLS files with it (server/src/control_plane_tls.cc), and gRPC links the
# same OpenSSL.
find_package(OpenSSL REQUIRED)
if(NOT FARSWAP_TSAN_ONLY)
  # Debian's gRPC is not TSan-instrumented: the TSan build leaves it out.
  find_package(Protobuf REQUIRED)
  find_package(gRPC CONFIG REQUIRED)
  # Prometheus /metrics (prometheus-cpp-dev): core for the metric types,
  # pull for the node's HTTP exposer. Only the gRPC-linked binaries use it.
  find_package(prometheus-cpp CONFIG REQUIRED)
endif()

# The tests' page corpora ship in the repository (tests/corpus, made by
# scripts/capture-corpus from real programs' anonymous memory). Benchmarks
# take larger corpora by --corpus.
set(FARSWAP_CORPUS_DIR "${CMAKE_CURRENT_SOURCE_DIR}/tests/corpus"
    CACHE PATH "Folder of *.pages.zst page corpora used by tests")
