"""Python under ebbmalloc: dicts of strings, bytearrays on 8 threads.

Exits 1 when libebbmalloc.so is not mapped into this process or when any
object does not hold what was put into it.
"""
import sys
import threading


def ebbmalloc_mapped():
    with open("/proc/self/maps") as maps:
        return any("libebbmalloc.so" in line for line in maps)


def main():
    if not ebbmalloc_mapped():
        print("libebbmalloc.so is not mapped into python", file=sys.stderr)
        return 1

    dicts = [{i: str(i) * 10 for i in range(50000)} for _ in range(4)]

    results = [None] * 8

    def churn(k):
        arrays = [bytearray(1000) for _ in range(20000)]
        for j, a in enumerate(arrays):
            a[j % 1000] = (j + k) % 256
        ok = all(sum(arrays[j]) == arrays[j][j % 1000] == (j + k) % 256
                 for j in range(0, len(arrays), 97))
        grown = bytearray()
        for j in range(2000):
            grown += bytes([j % 256]) * (j % 300)
        ok = ok and len(grown) == sum(j % 300 for j in range(2000))
        results[k] = ok

    threads = [threading.Thread(target=churn, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    bad = [k for k, ok in enumerate(results) if ok is not True]
    if bad:
        print("threads %s saw wrong bytearray contents" % bad, file=sys.stderr)
        return 1
    for d in dicts:
        if len(d) != 50000 or any(d[i] != str(i) * 10 for i in range(0, 50000, 7)):
            print("a dict lost its contents", file=sys.stderr)
            return 1
    print("python: 4 dicts and 8 threads x 20000 bytearrays checked")
    return 0


if __name__ == "__main__":
    sys.exit(main())
