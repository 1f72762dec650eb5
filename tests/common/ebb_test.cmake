# ebb_cmocka_test(<name> SOURCES <file>... [LABELS <label>...] [TIMEOUT <s>])
#
# One cmocka executable linked against the ebbmalloc shared library, so that
# the standard malloc names resolve to ebbmalloc, registered as test <name>.
# ebbmalloc comes first on the link line so that it precedes libc (and
# cmocka) in the dynamic symbol search order.
if(NOT TARGET PkgConfig::CMOCKA)
  pkg_check_modules(CMOCKA REQUIRED IMPORTED_TARGET cmocka)
endif()
find_package(Threads REQUIRED)

function(ebb_cmocka_test name)
  cmake_parse_arguments(ARG "" "TIMEOUT" "SOURCES;LABELS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_include_directories(${name} PRIVATE ${CMAKE_CURRENT_FUNCTION_LIST_DIR})
  # -fno-builtin: the compiler must not fold or elide malloc/free calls
  # (malloc(SIZE_MAX) == NULL, free(malloc(n))): each call has to reach ebbmalloc.
  # The tests pass absurd sizes and reuse pointers after a failed realloc on
  # purpose.
  target_compile_options(${name} PRIVATE -Wall -Wextra -Wno-unused-parameter -fno-builtin
                         $<$<C_COMPILER_ID:GNU>:-Wno-alloc-size-larger-than -Wno-use-after-free>)
  target_compile_definitions(${name} PRIVATE _GNU_SOURCE)
  target_link_libraries(${name} PRIVATE ebbmalloc PkgConfig::CMOCKA Threads::Threads)
  add_test(NAME ${name} COMMAND ${name})
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 60)
  endif()
  set_tests_properties(${name} PROPERTIES TIMEOUT ${ARG_TIMEOUT} LABELS "${ARG_LABELS}")
endfunction()
