# Helpers shared by kincir's own CMake files.

include_guard(GLOBAL)
include(GNUInstallDirs)  # CMAKE_INSTALL_INCLUDEDIR for the install interface

# kincir_setup_interface_target(<target> [EXPORT_NAME <name>])
# Sets up one exported header-only target: the kincir:: alias, include directories for the build
# and install trees, and the C++20 requirement.
function(kincir_setup_interface_target target)
  cmake_parse_arguments(arg "" "EXPORT_NAME" "" ${ARGN})
  if(NOT arg_EXPORT_NAME)
    set(arg_EXPORT_NAME ${target})
  endif()
  set_target_properties(${target} PROPERTIES EXPORT_NAME ${arg_EXPORT_NAME})
  add_library(kincir::${arg_EXPORT_NAME} ALIAS ${target})
  target_include_directories(
    ${target} INTERFACE $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/include>
                        $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
  target_compile_features(${target} INTERFACE cxx_std_20)
endfunction()

# kincir_add_options_target()
# Creates kincir_options: warnings-as-errors and sanitizer flags for kincir's own tests,
# benchmarks and examples. Consumers never see it.
function(kincir_add_options_target)
  add_library(kincir_options INTERFACE)
  if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
    target_compile_options(kincir_options INTERFACE -Wall -Wextra -Wpedantic -Werror)
  endif()
  if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 13)
    # GCC 12 reports false -Wrestrict positives inside libstdc++'s std::string at -O2
    # (GCC bug 105329); the warning stays on with other compilers.
    target_compile_options(kincir_options INTERFACE -Wno-restrict)
  endif()
  set(KINCIR_SANITIZE "" CACHE STRING "Sanitizers for kincir's own targets: address;undefined or thread")
  if(KINCIR_SANITIZE)
    list(JOIN KINCIR_SANITIZE "," sanitizers)
    target_compile_options(kincir_options INTERFACE -fsanitize=${sanitizers} -fno-omit-frame-pointer
                                                    -fno-sanitize-recover=all)
    target_link_options(kincir_options INTERFACE -fsanitize=${sanitizers})
    if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
      # Sanitizer instrumentation defeats GCC's flow analysis: -Wmaybe-uninitialized then fires
      # inside libstdc++ (std::function, std::regex). The plain builds keep the warning.
      target_compile_options(kincir_options INTERFACE -Wno-maybe-uninitialized)
    endif()
    if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND "thread" IN_LIST KINCIR_SANITIZE)
      # GCC warns that ThreadSanitizer does not model std::atomic_thread_fence. kincir's fences
      # only order a store before a load (so a sleeping reader is never missed); every
      # happens-before edge TSan needs comes from release/acquire pairs, which it does model.
      target_compile_options(kincir_options INTERFACE -Wno-tsan)
    endif()
  endif()
endfunction()
