# Helpers shared by every module's CMakeLists: one call per target, as in
# abseil-cpp's per-module CMake.

set(FARSWAP_WARNINGS -Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor
    -Wno-unused-parameter -Wno-missing-field-initializers)
if(CMAKE_CXX_COMPILER_ID MATCHES "Clang")
  # The clang build checks the ABSL_GUARDED_BY / lock annotations.
  list(APPEND FARSWAP_WARNINGS -Wthread-safety)
endif()
if(FARSWAP_WERROR)
  list(APPEND FARSWAP_WARNINGS -Werror)
endif()

if(FARSWAP_SANITIZE STREQUAL "address")
  add_compile_options(-fsanitize=address,undefined -fno-omit-frame-pointer
                      -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=address,undefined)
elseif(FARSWAP_SANITIZE STREQUAL "thread")
  add_compile_options(-fsanitize=thread -fno-omit-frame-pointer)
  add_link_options(-fsanitize=thread)
elseif(NOT FARSWAP_SANITIZE STREQUAL "")
  message(FATAL_ERROR "FARSWAP_SANITIZE must be '', 'address' or 'thread'")
endif()

# farswap_library(NAME name SRCS ... DEPS ... [PRIVATE_DEPS ...])
# A module library: public headers in include/, private code in src/.
function(farswap_library)
  cmake_parse_arguments(A "" "NAME" "SRCS;DEPS;PRIVATE_DEPS" ${ARGN})
  add_library(${A_NAME} ${A_SRCS})
  # The installed package (cmake/FarswapInstall.cmake) puts every module's
  # public headers under <prefix>/include.
  target_include_directories(${A_NAME}
    PUBLIC $<BUILD_INTERFACE:${CMAKE_CURRENT_SOURCE_DIR}/include>
           $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>
    PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/src)
  target_compile_options(${A_NAME} PRIVATE ${FARSWAP_WARNINGS})
  target_link_libraries(${A_NAME} PUBLIC ${A_DEPS} PRIVATE ${A_PRIVATE_DEPS})
endfunction()

# farswap_test(NAME name SRCS ... DEPS ... [LABELS ...])
# A GoogleTest binary registered with ctest. LABELS: "tsan" marks the
# concurrency tests that the ThreadSanitizer CI build runs.
function(farswap_test)
  cmake_parse_arguments(A "" "NAME" "SRCS;DEPS;LABELS" ${ARGN})
  add_executable(${A_NAME} ${A_SRCS})
  target_compile_options(${A_NAME} PRIVATE ${FARSWAP_WARNINGS})
  target_link_libraries(${A_NAME} PRIVATE ${A_DEPS} GTest::gtest GTest::gmock GTest::gtest_main)
  target_compile_definitions(${A_NAME} PRIVATE
    FARSWAP_CORPUS_DIR="${FARSWAP_CORPUS_DIR}"
    FARSWAP_BINARY_DIR="${CMAKE_BINARY_DIR}")
  add_test(NAME ${A_NAME} COMMAND ${A_NAME})
  set_tests_properties(${A_NAME} PROPERTIES LABELS "${A_LABELS}" TIMEOUT 600)
endfunction()

# farswap_test_over_ucx(name): registers the same test binary twice more with
# its memory nodes on the UCX data-plane backend (FARSWAP_TEST_TRANSPORT=ucx,
# tests/util/test_transport.h), with the same labels: <name>_ucx over UCX's
# TCP transport (UCX_TLS=tcp) and <name>_ucx_sm over its shared memory
# (UCX_TLS=sm,tcp: the connection manager wires up over TCP, frames then
# cross shared memory). FARSWAP_TEST_CARRIER is what each connection's
# carrier must match.
function(farswap_test_over_ucx name)
  get_test_property(${name} LABELS labels)
  add_test(NAME ${name}_ucx COMMAND ${name} ${ARGN})
  set_tests_properties(${name}_ucx PROPERTIES LABELS "${labels}" TIMEOUT 600
                       ENVIRONMENT "FARSWAP_TEST_TRANSPORT=ucx;UCX_TLS=tcp;FARSWAP_TEST_CARRIER=tcp/.+")
  add_test(NAME ${name}_ucx_sm COMMAND ${name} ${ARGN})
  set_tests_properties(${name}_ucx_sm PROPERTIES LABELS "${labels}" TIMEOUT 600
                       ENVIRONMENT
                       "FARSWAP_TEST_TRANSPORT=ucx;UCX_TLS=sm,tcp;FARSWAP_TEST_CARRIER=(sysv|posix|xpmem)/.+")
endfunction()
