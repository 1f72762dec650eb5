# Run by ctest (bench_smoke): cmake -DBENCH=ebb_bench -DPRELOAD=lib.so -P smoke.cmake
# One short benchmark under LD_PRELOAD=PRELOAD; fails unless it exits 0 and
# prints JSON with a benchmark that reports items_per_second and no error.
cmake_minimum_required(VERSION 3.19)
set(ENV{LD_PRELOAD} "${PRELOAD}")
execute_process(
  COMMAND ${BENCH} --benchmark_filter=^st_pairs/1k$ --benchmark_min_time=0.01
          --benchmark_format=json
  OUTPUT_VARIABLE out ERROR_VARIABLE err RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "ebb_bench under ${PRELOAD} exited with ${rc}\n${err}")
endif()
string(JSON n ERROR_VARIABLE jerr LENGTH "${out}" benchmarks)
if(jerr OR n LESS 1)
  message(FATAL_ERROR "ebb_bench printed no valid benchmark JSON: ${jerr}\n${out}")
endif()
string(JSON name GET "${out}" benchmarks 0 name)
string(JSON ips ERROR_VARIABLE jerr GET "${out}" benchmarks 0 items_per_second)
string(JSON failed ERROR_VARIABLE noerr GET "${out}" benchmarks 0 error_occurred)
if(jerr OR NOT noerr)
  message(FATAL_ERROR "benchmark ${name} failed or reported no items_per_second\n${out}")
endif()
message(STATUS "bench_smoke: ${name} ${ips} items/s under ${PRELOAD}")
