// Google Benchmark registration of the C workloads in workloads.c.
//
// The binary links no allocator: run it as it is for glibc, or with
// LD_PRELOAD=lib<allocator>.so for any other. Each benchmark calls its
// workload once per benchmark iteration with fixed parameters (the same
// requests every time, for every allocator) and reports items_per_second,
// one item being one operation as workloads.h defines it. Workloads that
// start threads are timed by the wall clock (UseRealTime).
//
// bench/run runs each benchmark in its own process; see README.md.
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "workloads.h"

namespace {

typedef uint64_t (*workload_fn)(const wl_params_t *);

// The process's peak RSS so far (VmHWM), KiB; 0 where /proc is missing.
// Each benchmark runs in its own process under bench/run, so this is the
// peak of that workload. (A parent's getrusage(RUSAGE_CHILDREN) is not: a
// child's ru_maxrss starts from its parent's RSS at fork.)
double peak_rss_kib()
{
    double kib = 0;
    if (FILE *f = std::fopen("/proc/self/status", "r")) {
        char line[256];
        while (std::fgets(line, sizeof line, f))
            if (std::strncmp(line, "VmHWM:", 6) == 0)
                kib = std::strtod(line + 6, nullptr);
        std::fclose(f);
    }
    return kib;
}

void run(benchmark::State &state, workload_fn fn, wl_params_t p)
{
    uint64_t ops = 0;
    for (auto _ : state)
        ops += fn(&p);
    state.SetItemsProcessed(static_cast<int64_t>(ops));
    state.counters["peak_rss_kib"] = peak_rss_kib();
}

constexpr size_t KiB = 1024, MiB = 1024 * KiB;
constexpr uint64_t kSeed = 0x5eed0ebbu;

// One row per benchmark: name, workload, parameters, threaded.
struct spec {
    const char *name;
    workload_fn fn;
    wl_params_t p; // threads, iters, min_size, max_size, live, work, seed
    bool threaded;
};

const spec kSpecs[] = {
    {"st_pairs/1k", wl_st_pairs, {1, 200000, 16, 1 * KiB, 0, 0, kSeed}, false},
    {"st_pairs/32k", wl_st_pairs, {1, 200000, 16, 32 * KiB, 0, 0, kSeed}, false},
    {"st_workset", wl_st_workset, {1, 200000, 16, 32 * KiB, 10000, 0, kSeed}, false},
    {"calloc_realloc", wl_calloc_realloc, {1, 4000, 16, 4 * KiB, 256, 0, kSeed}, false},
    {"aligned", wl_aligned, {1, 100000, 16, 8 * KiB, 1000, 0, kSeed}, false},
    // T:1 is the base of the scaling figure (T:2 over T:1 on 2 cores). Their
    // rounds are 500 000 operations a thread (~3 ms): with 50 000, starting
    // and joining the threads capped the figure at ~1.7 here whatever the
    // allocator (bench/README.md, "Scaling"). T:8 keeps the short rounds.
    {"larson/T:1", wl_larson, {1, 2000000, 16, 1 * KiB, 1000, 0, kSeed}, true},
    {"larson/T:2", wl_larson, {2, 2000000, 16, 1 * KiB, 1000, 0, kSeed}, true},
    {"larson/T:8", wl_larson, {8, 50000, 16, 1 * KiB, 1000, 0, kSeed}, true},
    {"prodcons/T:2", wl_prodcons, {2, 200000, 16, 1 * KiB, 0, 256, kSeed}, true},
    {"prodcons/T:4", wl_prodcons, {4, 100000, 16, 1 * KiB, 0, 256, kSeed}, true},
    {"cache_scratch/T:2", wl_cache_scratch, {2, 2000, 8, 8, 0, 1000, kSeed}, true},
    {"cache_thrash/T:2", wl_cache_thrash, {2, 2000, 8, 8, 0, 1000, kSeed}, true},
    {"many_threads/T:64", wl_many_threads, {64, 10, 16, 4 * KiB, 0, 256, kSeed}, true},
    {"large", wl_large, {1, 200, 64 * KiB, 8 * MiB, 8, 0, kSeed}, false},
    {"buffers", wl_buffers, {1, 200, 2 * MiB, 16 * MiB, 8, 0, kSeed}, false},
};

} // namespace

int main(int argc, char **argv)
{
    for (const spec &s : kSpecs) {
        auto *b = benchmark::RegisterBenchmark(s.name, run, s.fn, s.p);
        b->Unit(benchmark::kMillisecond);
        if (s.threaded)
            b->UseRealTime();
    }
    const char *preload = std::getenv("LD_PRELOAD");
    benchmark::AddCustomContext("ld_preload", preload ? preload : "");
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv))
        return 1;
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
