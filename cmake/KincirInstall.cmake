# Install and export rules: headers, targets, kincirConfig.cmake and its version file. Also exports
# the build tree so a FetchContent/add_subdirectory user can export targets that depend on ours.

include_guard(GLOBAL)
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(KINCIR_CMAKE_DIR "${CMAKE_INSTALL_LIBDIR}/cmake/kincir"
    CACHE STRING "Where kincirConfig.cmake is installed, relative to the prefix")

set(install_targets kincir)
if(TARGET kincir_rabbitmq)
  list(APPEND install_targets kincir_rabbitmq)
endif()
if(TARGET kincir_rabbitmq_tls)
  list(APPEND install_targets kincir_rabbitmq_tls)
endif()

install(TARGETS ${install_targets} EXPORT kincirTargets)
install(DIRECTORY "${PROJECT_SOURCE_DIR}/include/kincir" DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}")
install(EXPORT kincirTargets NAMESPACE kincir:: DESTINATION "${KINCIR_CMAKE_DIR}")
export(EXPORT kincirTargets NAMESPACE kincir:: FILE "${PROJECT_BINARY_DIR}/kincirTargets.cmake")

configure_package_config_file(
  "${PROJECT_SOURCE_DIR}/cmake/kincirConfig.cmake.in" "${PROJECT_BINARY_DIR}/kincirConfig.cmake"
  INSTALL_DESTINATION "${KINCIR_CMAKE_DIR}")
# Header-only: the same package serves any architecture.
write_basic_package_version_file(
  "${PROJECT_BINARY_DIR}/kincirConfigVersion.cmake"
  COMPATIBILITY SameMinorVersion ARCH_INDEPENDENT)
install(FILES "${PROJECT_BINARY_DIR}/kincirConfig.cmake"
              "${PROJECT_BINARY_DIR}/kincirConfigVersion.cmake"
              "${PROJECT_SOURCE_DIR}/cmake/FindAsio.cmake"
        DESTINATION "${KINCIR_CMAKE_DIR}")
