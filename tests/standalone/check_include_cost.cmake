# cmake -DCXX=<compiler> -DINCLUDE=<include dir> -P check_include_cost.cmake
# The in-memory umbrella header must stay cheap to include: kincir.hpp may pull in the standard
# library only, and none of the headers that cost a third of a second each to parse without
# being needed (<random>, <immintrin.h>, <iostream>), nor Asio or {fmt} (opt-in headers). Fails
# naming the header and who included it; prints the preprocessed size.
file(WRITE "${CMAKE_CURRENT_BINARY_DIR}/include_cost.cpp" "#include <kincir/kincir.hpp>\n")
execute_process(COMMAND "${CXX}" -std=c++20 -H -fsyntax-only "-I${INCLUDE}" "${CMAKE_CURRENT_BINARY_DIR}/include_cost.cpp"
                RESULT_VARIABLE rc ERROR_VARIABLE tree OUTPUT_QUIET)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "kincir/kincir.hpp does not compile on its own:\n${tree}")
endif()
string(REPLACE "\n" ";" lines "${tree}")
set(offenders "")
foreach(line IN LISTS lines)
  if(line MATCHES "^(\\.+) (.+)$")
    set(header "${CMAKE_MATCH_2}")
    string(LENGTH "${CMAKE_MATCH_1}" depth)
    set(at_${depth} "${header}")  # the chain of includers, by depth
    if(header MATCHES "/(random|iostream|immintrin\\.h|x86intrin\\.h)$" OR header MATCHES "/(asio|fmt)/")
      set(includer "kincir.hpp")  # the nearest kincir header above it
      math(EXPR k "${depth} - 1")
      while(k GREATER 0)
        if(at_${k} MATCHES "/kincir/")
          set(includer "${at_${k}}")
          break()
        endif()
        math(EXPR k "${k} - 1")
      endwhile()
      list(APPEND offenders "${header} (through ${includer})")
    endif()
  endif()
endforeach()
if(offenders)
  list(REMOVE_DUPLICATES offenders)
  list(JOIN offenders "\n  " text)
  message(FATAL_ERROR "kincir/kincir.hpp includes headers it must not:\n  ${text}")
endif()
execute_process(COMMAND "${CXX}" -std=c++20 -E -P "-I${INCLUDE}" "${CMAKE_CURRENT_BINARY_DIR}/include_cost.cpp"
                OUTPUT_VARIABLE preprocessed)
string(REGEX MATCHALL "\n" newlines "${preprocessed}")
list(LENGTH newlines count)
message(STATUS "kincir/kincir.hpp: ${count} preprocessed lines, standard library only")
