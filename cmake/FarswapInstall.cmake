# What `cmake --install BUILD --prefix P` puts under P:
#   bin/        farswap-server, farswapctl, farswap-bench, farswap-demo
#   lib/        the client library as static archives: libfarswap_client.a
#               and the internal libraries it links (below)
#   include/    farswap/client/*.h and the other modules' headers they include
#   lib/cmake/farswap/   find_package(farswap CONFIG): farswap::client,
#                        farswap::region (targets in farswapTargets.cmake)
#   lib/pkgconfig/farswap-client.pc
#
# The client library is installed as it is built: static archives, one per
# module. Every internal library in its link interface is installed and
# exported too (farswap::client_core, ::codec, ::transport, ::proto,
# ::common), so consumers link exactly what the build links; nothing is
# merged or rebuilt. A consumer links farswap::client (and farswap::region
# for the far-memory Region); the rest comes with them. farswap::client_metrics
# (client_metrics.h, a prometheus::Collectable) is exported too; it is not in
# farswap-client.pc, so pkg-config users do not need prometheus-cpp.
#
# A new link dependency of the client library: add its find_dependency() to
# cmake/farswapConfig.cmake.in and its pkg-config module to
# FARSWAP_CLIENT_PC_REQUIRES below (scripts/check-install proves both).
include(CMakePackageConfigHelpers)

# Libraries: the build target and its name in the package (farswap::NAME).
set(FARSWAP_EXPORTED_LIBRARIES
  farswap_client:client
  farswap_region:region
  farswap_client_core:client_core
  farswap_codec:codec
  farswap_transport:transport
  farswap_proto:proto
  farswap_common:common
  farswap_client_metrics:client_metrics
  farswap_metrics:metrics)

# Public headers, as included by farswap/client/*.h (transitively).
set(FARSWAP_INSTALLED_HEADER_DIRS client/include/farswap/client)
set(FARSWAP_INSTALLED_HEADERS
  common/include/farswap/common/latency_histogram.h
  common/include/farswap/common/mutex.h
  common/include/farswap/common/status_macros.h)

# pkg-config modules the client library's link interface needs (Requires of
# farswap-client.pc; the static archives need them at link time).
set(FARSWAP_CLIENT_PC_REQUIRES
  grpc++ protobuf spdlog liblz4 libzstd libxxhash libibverbs librdmacm ucx libssl libcrypto
  absl_status absl_statusor absl_strings absl_str_format absl_synchronization absl_time
  absl_flat_hash_map absl_hash)

set(farswap_targets)
set(farswap_pc_libs)
foreach(entry IN LISTS FARSWAP_EXPORTED_LIBRARIES)
  string(REPLACE ":" ";" parts "${entry}")
  list(GET parts 0 target)
  list(GET parts 1 export_name)
  set_target_properties(${target} PROPERTIES EXPORT_NAME ${export_name})
  add_library(farswap::${export_name} ALIAS ${target})
  list(APPEND farswap_targets ${target})
  if(NOT export_name MATCHES "metrics")
    string(APPEND farswap_pc_libs " -l${target}")
  endif()
endforeach()

install(TARGETS farswap-server farswapctl farswap-bench farswap-demo
        RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(TARGETS ${farswap_targets} EXPORT farswapTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
foreach(dir IN LISTS FARSWAP_INSTALLED_HEADER_DIRS)
  # client/include/farswap/client -> include/farswap/client
  string(REGEX REPLACE "^[^/]+/include/" "" subdir "${dir}")
  install(DIRECTORY ${PROJECT_SOURCE_DIR}/${dir}/
          DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/${subdir} FILES_MATCHING PATTERN "*.h")
endforeach()
foreach(header IN LISTS FARSWAP_INSTALLED_HEADERS)
  # common/include/farswap/common/mutex.h -> include/farswap/common/
  string(REGEX REPLACE "^[^/]+/include/(.*)/[^/]+$" "\\1" subdir "${header}")
  install(FILES ${PROJECT_SOURCE_DIR}/${header}
          DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/${subdir})
endforeach()

set(FARSWAP_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/farswap)
install(EXPORT farswapTargets NAMESPACE farswap:: DESTINATION ${FARSWAP_CMAKE_DIR})
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/farswapConfig.cmake.in
  ${PROJECT_BINARY_DIR}/farswapConfig.cmake INSTALL_DESTINATION ${FARSWAP_CMAKE_DIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/farswapConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/farswapConfig.cmake
              ${PROJECT_BINARY_DIR}/farswapConfigVersion.cmake
        DESTINATION ${FARSWAP_CMAKE_DIR})

# farswap-client.pc finds its prefix relative to itself (${pcfiledir}), so
# it is right for whatever --prefix the install is given.
set(pc_dir ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
file(RELATIVE_PATH FARSWAP_PC_PREFIX_FROM_PCFILEDIR /prefix/${pc_dir} /prefix)
string(REGEX REPLACE "/$" "" FARSWAP_PC_PREFIX_FROM_PCFILEDIR "${FARSWAP_PC_PREFIX_FROM_PCFILEDIR}")
list(JOIN FARSWAP_CLIENT_PC_REQUIRES " " FARSWAP_PC_REQUIRES)
set(FARSWAP_PC_LIBS "${farswap_pc_libs}")
configure_file(${PROJECT_SOURCE_DIR}/cmake/farswap-client.pc.in
               ${PROJECT_BINARY_DIR}/farswap-client.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/farswap-client.pc DESTINATION ${pc_dir})
