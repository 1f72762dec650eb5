#!/usr/bin/env python3
"""The core benchmarks (bench/ebb_bench) under LD_PRELOAD with stats_shm:true
(page refreshed every 10 ms) and stats_shm:false, interleaved; the median real
time of each benchmark and the geometric mean of the ratios.
  tests/stats/overhead_bench.py BUILD_DIR [REPS]"""
import csv, io, math, os, statistics, subprocess, sys

build = sys.argv[1] if len(sys.argv) > 1 else "build"
reps = int(sys.argv[2]) if len(sys.argv) > 2 else 3
times = {}
for rep in range(reps):
    for on in ("true", "false"):
        env = dict(os.environ, LD_PRELOAD=os.path.join(build, "alloc/libebbmalloc.so"),
                   EBBMALLOC_CONF=f"stats_shm:{on},stats_interval_ms:10")
        out = subprocess.run([os.path.join(build, "bench/ebb_bench"), "--benchmark_min_time=0.2",
                              "--benchmark_format=csv"], env=env, capture_output=True,
                             text=True, check=True).stdout
        for row in csv.DictReader(io.StringIO(out)):
            times.setdefault(row["name"], {}).setdefault(on, []).append(float(row["real_time"]))
ratios = []
print(f"{'benchmark':30} {'true':>10} {'false':>10} {'ratio':>7}")
for name, t in times.items():
    a, b = statistics.median(t["true"]), statistics.median(t["false"])
    ratios.append(a / b)
    print(f"{name:30} {a:10.1f} {b:10.1f} {a / b:7.3f}")
print(f"geometric mean of the ratios true/false over {reps} reps: "
      f"{math.exp(sum(map(math.log, ratios)) / len(ratios)):.4f}")
