# ebb_fuzz_target(<name> <out-var> SOURCES <file>... [FLAGS <flag>...] [DEPENDS <file>...])
#
# A libFuzzer target (with ASan and UBSan), clang only: a target of this
# build when it uses clang, else compiled by the clang on the PATH, so the
# gcc build fuzzes too. Either way the binary is <name> in the current build
# directory; <out-var> gets its path (a generator expression when it is a
# target), or is empty when there is no clang. Sources are absolute paths;
# alloc/ and include/ are on the include path and their headers (with
# DEPENDS) rebuild the target.
find_program(EBB_CLANG clang)

function(ebb_fuzz_target name out_var)
  cmake_parse_arguments(F "" "" "SOURCES;FLAGS;DEPENDS" ${ARGN})
  set(flags -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -D_GNU_SOURCE
      -I${PROJECT_SOURCE_DIR}/alloc -I${PROJECT_SOURCE_DIR}/include ${F_FLAGS})
  if(CMAKE_C_COMPILER_ID STREQUAL "Clang")
    add_executable(${name} ${F_SOURCES})
    target_compile_options(${name} PRIVATE ${flags})
    target_link_options(${name} PRIVATE -fsanitize=fuzzer,address,undefined -pthread)
    set(${out_var} $<TARGET_FILE:${name}> PARENT_SCOPE)
  elseif(EBB_CLANG)
    set(bin ${CMAKE_CURRENT_BINARY_DIR}/${name})
    file(GLOB headers ${PROJECT_SOURCE_DIR}/alloc/*.h ${PROJECT_SOURCE_DIR}/alloc/*.def
         ${PROJECT_SOURCE_DIR}/include/*.h)
    add_custom_command(OUTPUT ${bin}
      COMMAND ${EBB_CLANG} ${flags} -pthread -o ${bin} ${F_SOURCES}
      DEPENDS ${F_SOURCES} ${F_DEPENDS} ${headers}
      COMMENT "Building the fuzz target ${name} with clang")
    add_custom_target(${name}_clang ALL DEPENDS ${bin})
    set(${out_var} ${bin} PARENT_SCOPE)
  else()
    message(STATUS "no clang: the fuzz target ${name} is not built")
    set(${out_var} "" PARENT_SCOPE)
  endif()
endfunction()
