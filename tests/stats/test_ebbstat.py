#!/usr/bin/env python3
"""ebbstat end to end: a live process read from outside, every output format
checked by a real parser, purge, stale pages after kill -9 and --clean,
error exit codes, hostile pages, the fuzz target, pages of processes in other
pid namespaces, and a JVM under LD_PRELOAD.

Exits 77 (ctest: skipped) only when nothing could run; a part that needs
what the machine lacks (promtool, java, root) says so and is skipped.
"""
import argparse
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time

MIB = 1 << 20
EXIT = dict(ok=0, usage=2, noproc=3, nopage=4, perm=5, stale=6, version=7, corrupt=8, elsewhere=10)
failures = []
PRELOAD = [""]


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def run(args, **kw):
    return subprocess.run(args, capture_output=True, text=True, timeout=60, **kw)


def status_kb(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


class Holder:
    """A process that holds live and dirty memory, until its stdin closes."""

    def __init__(self, argv, env=None):
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  env=env, text=True)
        line = self.p.stdout.readline().split()
        assert line and line[0] == "ready", line
        self.pid = int(line[1])

    def stop(self):
        if self.p.poll() is None:
            self.p.stdin.close()
            self.p.wait(timeout=30)


def wait_file(path, timeout=8.0):
    """True once path exists: the page is made one stats_interval_ms after
    the process starts, on a tick of its background thread."""
    end = time.time() + timeout
    while time.time() < end:
        if os.path.exists(path):
            return True
        time.sleep(0.05)
    return False


def wait_page(ebbstat, pid, dirname, want_snapshots=2, timeout=8.0):
    """The page's JSON once it has been published want_snapshots times."""
    end = time.time() + timeout
    doc = None
    while time.time() < end:
        r = run([ebbstat, "--dir", dirname, "--json", str(pid)])
        if r.returncode == 0:
            doc = json.loads(r.stdout)
            if doc["snapshots"] >= want_snapshots:
                return doc
        time.sleep(0.1)
    return doc


def prometheus_check(text, what):
    promtool = shutil.which("promtool")
    if promtool:
        r = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                           text=True, timeout=60)
        check(r.returncode == 0, f"{what}: promtool check metrics accepts it "
              f"{(r.stdout + r.stderr).strip()[:300]}")
    else:
        print(f"skip {what}: promtool not installed (Debian package prometheus)")
    # And a parser of our own: every sample line is NAME{LABELS} VALUE.
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            names.add(line.split()[2])
        elif line and not line.startswith("#"):
            name = line.split("{")[0].split(" ")[0]
            float(line.rsplit(" ", 1)[1])
            if name not in names:
                check(False, f"{what}: sample {name} has a # TYPE line")
                return
    check("ebbmalloc_live_bytes" in names and "ebbmalloc_purged_bytes_total" in names,
          f"{what}: has ebbmalloc_live_bytes and ebbmalloc_purged_bytes_total")


def test_cli_basics(ebbstat):
    check(run([ebbstat, "--help"]).returncode == 0, "--help exits 0")
    r = run([ebbstat, "--version"])
    check(r.returncode == 0 and "ebbstat" in r.stdout, "--version")
    check(run([ebbstat, "--bogus"]).returncode == EXIT["usage"], "unknown option: exit 2")
    check(run([ebbstat, "12x"]).returncode == EXIT["usage"], "bad PID: exit 2")
    pid = 4194000
    while os.path.exists(f"/proc/{pid}"):
        pid -= 1
    r = run([ebbstat, str(pid)])
    check(r.returncode == EXIT["noproc"] and "no such process" in r.stderr,
          "no such process: exit 3 and says so")
    r = run([ebbstat, str(os.getpid())])
    check(r.returncode == EXIT["nopage"] and "does not use ebbmalloc" in r.stderr,
          "a process without ebbmalloc: exit 4 and says so")


def test_live_process(ebbstat, holder_bin, dirname):
    env = dict(os.environ, EBBMALLOC_CONF=f"stats_dir:{dirname},decay_ms:600000")
    live_mib, dirty_mib = 64, 48
    h = Holder([holder_bin, str(live_mib), str(dirty_mib), "tick"], env=env)
    try:
        path = os.path.join(dirname, f"ebbmalloc.{h.pid}")
        check(wait_file(path), "the page appears")
        st = os.lstat(path)
        check(oct(st.st_mode & 0o7777) == "0o600", f"page {path} has mode 0600")
        doc = wait_page(ebbstat, h.pid, dirname)
        check(doc is not None, "ebbstat --json PID reads the live process")
        if doc is None:
            return
        t = doc["total"]
        want = live_mib * (MIB - 4096) + 65536 * 64
        check(want <= t["live_bytes"] <= want + 2 * MIB,
              f"live bytes {t['live_bytes']} agree with what the process holds ({want}) within 2 MiB")
        rss = status_kb(h.pid, "VmRSS")
        rc = doc["reconcile"]
        check(abs(rc["rss_bytes"] - rss) <= 0.05 * rss,
              f"RSS {rc['rss_bytes']} agrees with /proc VmRSS {rss} within 5%")
        check(rc["held_bytes"] <= rc["rss_bytes"] * 1.02 + MIB,
              f"held by ebbmalloc {rc['held_bytes']} <= RSS {rc['rss_bytes']} (+2%)")
        check(rc["live_bytes"] + rc["dirty_bytes"] + rc["metadata_bytes"] <= rc["held_bytes"],
              "live + dirty + metadata <= held")
        check(doc["pid"] == h.pid and doc["command"] and "stats_shm:true" in doc["options"],
              "JSON names the pid, command and options")
        check(len(doc["arenas"]) >= 1 and len(doc["classes"]) >= 40, "JSON has arenas and classes")

        r = run([ebbstat, "--dir", dirname, str(h.pid)])
        check(r.returncode == 0 and "held by ebbmalloc" in r.stdout
              and "outside the allocator" in r.stdout, "text report reconciles RSS")
        r = run([ebbstat, "--dir", dirname])
        check(r.returncode == 0 and any(l.split()[0] == str(h.pid) and l.rstrip().endswith("live")
                                        for l in r.stdout.splitlines()[1:]),
              "the list shows the process as live")
        r = run([ebbstat, "--dir", dirname, "--prometheus", str(h.pid)])
        check(r.returncode == 0, "--prometheus exits 0")
        prometheus_check(r.stdout, "--prometheus")

        w = subprocess.Popen([ebbstat, "--dir", dirname, "-w", "0.3", str(h.pid)],
                             stdout=subprocess.PIPE, text=True)
        time.sleep(1.5)
        w.send_signal(signal.SIGINT)
        out = w.communicate(timeout=10)[0]
        lines = out.splitlines()
        check(len(lines) >= 4 and "allocs/s" in lines[0], f"watch mode prints rates ({len(lines)} lines)")

        if doc["total"]["dirty_bytes"] < 4 * MIB:
            check(False, f"the holder has dirty memory to purge ({doc['total']['dirty_bytes']})")
        r = run([ebbstat, "--dir", dirname, "--json", "purge", str(h.pid)])
        check(r.returncode == 0, f"purge exits 0 {r.stderr.strip()}")
        if r.returncode == 0:
            p = json.loads(r.stdout)
            check(p["purged_bytes"] >= doc["total"]["dirty_bytes"] // 2,
                  f"purge gave back {p['purged_bytes']} of {doc['total']['dirty_bytes']} dirty bytes")
            check(p["rss_after_bytes"] <= p["rss_before_bytes"] - p["purged_bytes"] // 2,
                  f"purge lowered RSS {p['rss_before_bytes']} -> {p['rss_after_bytes']}")
        r = run([ebbstat, "--dir", dirname, "purge", str(h.pid)])
        check(r.returncode == 0 and "RSS" in r.stdout, "purge text output")

        if os.geteuid() == 0:
            r = subprocess.run([ebbstat, "--dir", dirname, str(h.pid)], capture_output=True,
                               text=True, preexec_fn=lambda: (os.setgid(65534), os.setuid(65534)))
            check(r.returncode == EXIT["perm"] and "permission denied" in r.stderr,
                  "another user: exit 5, permission denied")
        else:
            print("skip permission test: needs root to run ebbstat as another user")

        # kill -9: no destructor runs, the page stays, ebbstat calls it stale.
        os.kill(h.pid, signal.SIGKILL)
        h.p.wait(timeout=10)
        check(os.path.exists(path), "after kill -9 the page is left behind")
        r = run([ebbstat, "--dir", dirname, str(h.pid)])
        check(r.returncode == EXIT["stale"] and "stale" in r.stderr, "a dead process's page: exit 6 stale")
        r = run([ebbstat, "--dir", dirname])
        check(any(l.split()[0] == str(h.pid) and "stale" in l for l in r.stdout.splitlines()[1:]),
              "the list marks it stale")
        r = run([ebbstat, "--dir", dirname, "--clean"])
        check(r.returncode == 0 and not os.path.exists(path), "--clean removes it")
    finally:
        h.stop()


def test_huge_pages(ebbstat, holder_bin, dirname):
    """Under thp:always the holder's live blocks sit in huge pages: ebbstat
    shows how much, in all three outputs, and warns that purged pages stay
    charged; under the default thp:never, none of ebbmalloc's, no warning."""
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            host = f.read().split("[")[1].split("]")[0]
    except (OSError, IndexError):
        host = None
    if host in (None, "never"):
        print(f"skip huge pages: the host has transparent huge pages {host or 'not at all'}")
        return
    for thp in ("always", "never"):
        env = dict(os.environ, EBBMALLOC_CONF=f"stats_dir:{dirname},decay_ms:600000,thp:{thp}")
        h = Holder([holder_bin, "64", "0", "tick"], env=env)
        try:
            doc = wait_page(ebbstat, h.pid, dirname)
            check(doc is not None, f"thp:{thp}: ebbstat --json reads the holder")
            if doc is None:
                continue
            huge = doc["process"]["anon_huge_bytes"]
            check(doc["host_thp"] == host, f"thp:{thp}: host_thp {doc['host_thp']} is {host}")
            text = run([ebbstat, "--dir", dirname, str(h.pid)]).stdout
            prom = run([ebbstat, "--dir", dirname, "--prometheus", str(h.pid)]).stdout
            check(f'ebbmalloc_process_anon_huge_bytes{{pid="{h.pid}"}} ' in prom,
                  f"thp:{thp}: --prometheus has ebbmalloc_process_anon_huge_bytes")
            warned = "transparent huge pages on (thp:always" in text
            if thp == "always":
                # 64 live 1 MiB blocks, written: in huge pages where the kernel
                # finds them (64 MiB here); two at least.
                check(huge >= 4 * MIB, f"thp:always: {huge} bytes in huge pages (>= 4 MiB)")
                check("in huge pages)" in text and warned,
                      "thp:always: the report shows the huge pages and the warning")
            else:
                check(huge < 8 * MIB, f"thp:never: {huge} bytes in huge pages (< 8 MiB)")
                check("transparent huge pages on" not in text, "thp:never: no warning")
        finally:
            h.stop()


def test_refused_purges(ebbstat, holder_bin, dirname):
    """A holder under mlockall: the kernel refuses every purge. ebbstat
    counts the refusals in all three outputs and explains them in the text;
    the same holder unlocked has none and no such line."""
    for lock in (True, False):
        what = "locked" if lock else "unlocked"
        env = dict(os.environ, EBBMALLOC_CONF=f"stats_dir:{dirname},decay_ms:100,"
                   "stats_interval_ms:100")
        argv = [holder_bin, "16", "16"] + (["lock"] if lock else [])
        p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
                             text=True)
        line = p.stdout.readline().split()
        if not line:
            p.wait(timeout=30)
            check(p.returncode == 77, f"{what}: the holder starts or skips ({p.returncode})")
            print("skip refused purges: mlockall is not permitted here")
            return
        pid = int(line[1])
        try:
            time.sleep(0.6)  # a purge due and tried at 100 ms, published at 200
            doc = wait_page(ebbstat, pid, dirname, want_snapshots=4)
            check(doc is not None, f"{what}: ebbstat --json reads the holder")
            if doc is None:
                continue
            refused = doc["total"]["purge_refused"]
            text = run([ebbstat, "--dir", dirname, str(pid)]).stdout
            prom = run([ebbstat, "--dir", dirname, "--prometheus", str(pid)]).stdout
            warned = "of the madvise calls refused" in text
            locked = doc["process"]["locked_bytes"]
            if lock:
                check(locked >= 16 * MIB and "locked in memory (mlock, mlockall)" in text,
                      f"locked: {locked} bytes locked (>= 16 MiB), and the text says so")
                check(f'ebbmalloc_process_locked_bytes{{pid="{pid}"}} {locked}' in prom,
                      "locked: --prometheus has ebbmalloc_process_locked_bytes")
                check(refused > 0 and warned, f"locked: {refused} refusals, and the text says so")
                check(f'ebbmalloc_purge_refused_total{{pid="{pid}"}} {refused}' in prom,
                      "locked: --prometheus has ebbmalloc_purge_refused_total")
                check(doc["total"]["dirty_bytes"] >= 15 * MIB,
                      f"locked: the freed 16 MiB stay dirty ({doc['total']['dirty_bytes']})")
            else:
                check(refused == 0 and not warned, f"unlocked: {refused} refusals, no such line")
                check(locked == 0 and "locked in memory" not in text, f"unlocked: {locked} bytes locked")
        finally:
            p.stdin.close()
            p.wait(timeout=30)


def ns_holder(holder_bin, dirname, decay_ms):
    """A holder as pid 1 of a pid namespace of its own, its page in dirname."""
    env = dict(os.environ, LD_PRELOAD="", EBBMALLOC_CONF=f"stats_dir:{dirname},decay_ms:{decay_ms}")
    return Holder(["unshare", "--pid", "--fork", "--mount-proc", holder_bin, "1", "0", "tick"], env=env)


def host_pid_of_child(pid):
    """The one child of pid (unshare's: the holder, as the host sees it)."""
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        kids = f.read().split()
    return int(kids[0]) if kids else 0


def test_pid_namespaces(ebbstat, holder_bin, dirname):
    """Containers that share /dev/shm but not their processes: two processes
    of the same pid in two pid namespaces. The second does not take the
    first's live page; ebbstat in a third namespace says whose it is (exit
    10) and --clean leaves it, until its writer is killed and its snapshots
    stop; then it is stale and goes."""
    if not shutil.which("unshare") or run(["unshare", "--pid", "--fork", "--mount-proc", "true"]).returncode != 0:
        print("skip pid namespaces: unshare --pid is not permitted here (needs root)")
        return
    a = ns_holder(holder_bin, dirname, 1111)
    b = None
    try:
        check(a.pid == 1, f"the holder is pid 1 of its namespace ({a.pid})")
        path = os.path.join(dirname, "ebbmalloc.1")
        check(wait_file(path), "its page is made")
        time.sleep(1.2)  # a second snapshot
        r = run([ebbstat, "--dir", dirname, "1"])
        check(r.returncode == EXIT["elsewhere"] and "another pid namespace" in r.stderr,
              f"ebbstat here: exit 10, another pid namespace ({r.returncode}: {r.stderr.strip()[:120]})")
        r = run([ebbstat, "--dir", dirname])
        check(any(l.split()[0] == "1" and "another pid namespace" in l for l in r.stdout.splitlines()[1:]),
              "the list says whose the page is")
        r = run([ebbstat, "--dir", dirname, "--clean"])
        check(r.returncode == 0 and os.path.exists(path), "--clean leaves a live page of another namespace")

        b = ns_holder(holder_bin, dirname, 2222)
        time.sleep(2.5)  # past the second one's page time
        with open(path, "rb") as f:
            page = f.read()
        check(b"decay_ms:1111" in page and b"decay_ms:2222" not in page,
              "a process of the same pid elsewhere leaves the live page alone")
        b.stop()
        check(os.path.exists(path), "and its exit does not remove it")

        holder = host_pid_of_child(a.p.pid)
        check(holder > 1, f"the holder's pid here ({holder})")
        if holder <= 1:  # never kill(0) or init
            return
        os.kill(holder, signal.SIGKILL)
        a.p.wait(timeout=10)
        time.sleep(3.5)  # no snapshot for three intervals: gone
        r = run([ebbstat, "--dir", dirname, "1"])
        check(r.returncode == EXIT["stale"] and "another pid namespace" in r.stderr,
              f"killed: its page is stale ({r.returncode})")
        r = run([ebbstat, "--dir", dirname, "--clean"])
        check(r.returncode == 0 and not os.path.exists(path), "--clean removes it then")
    finally:
        for h in (a, b):
            if h is not None:
                if h.p.poll() is None:
                    h.p.kill()
                h.p.wait(timeout=10)


def test_normal_exit_removes(holder_bin, dirname):
    env = dict(os.environ, EBBMALLOC_CONF=f"stats_dir:{dirname}")
    h = Holder([holder_bin, "1", "0"], env=env)
    path = os.path.join(dirname, f"ebbmalloc.{h.pid}")
    existed = wait_file(path)
    h.stop()
    check(existed and not os.path.exists(path), "the page exists while the process runs, "
          "and is removed at normal exit")


def test_pages_of_gone_processes_swept(holder_bin, dirname):
    """A process killed with SIGKILL leaves its page (no destructor runs);
    the next process that makes its page in the directory removes it."""
    env = dict(os.environ, EBBMALLOC_CONF=f"stats_dir:{dirname}")
    a = Holder([holder_bin, "1", "0"], env=env)
    path_a = os.path.join(dirname, f"ebbmalloc.{a.pid}")
    made_a = wait_file(path_a)
    os.kill(a.pid, signal.SIGKILL)
    a.p.wait(timeout=10)
    left = os.path.exists(path_a)
    b = Holder([holder_bin, "1", "0"], env=env)
    made_b = wait_file(os.path.join(dirname, f"ebbmalloc.{b.pid}"))
    end = time.time() + 5  # b sweeps once its own page is made
    while os.path.exists(path_a) and time.time() < end:
        time.sleep(0.05)
    swept = not os.path.exists(path_a)
    b.stop()
    if os.path.exists(path_a):
        os.unlink(path_a)
    check(made_a and left and made_b and swept,
          f"a killed process's page is left ({left}), and removed by the next process that "
          f"makes its page ({swept})")


def test_no_page_warns_once_if_asked(holder_bin):
    """A page that cannot be made: the process works on, and says so once
    on stderr only when stats_shm was set explicitly."""
    missing = "/nonexistent-ebbstat-dir"
    for conf, want in ((f"stats_shm:true,stats_dir:{missing}", 1), (f"stats_dir:{missing}", 0)):
        p = subprocess.Popen([holder_bin, "2", "0", "tick"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=dict(os.environ, EBBMALLOC_CONF=conf + ",stats_interval_ms:100"))
        time.sleep(0.6)  # past the time the page is due
        out, err = p.communicate(input="", timeout=60)
        n = err.count("statistics page")
        check(p.returncode == 0 and out.startswith("ready") and n == want,
              f"{conf}: runs on, {n} warning(s) (want {want})")


def test_short_process_leaves_no_page(holder_bin, dirname):
    """A process that ends before its page is due, by _exit, leaves none."""
    env = dict(os.environ, EBBMALLOC_CONF=f"stats_dir:{dirname}")
    before = set(os.listdir(dirname))
    r = subprocess.run(["sh", "-c", f"{holder_bin} 1 0 </dev/null; exec {holder_bin} 1 0 </dev/null"],
                       capture_output=True, text=True, timeout=60, env=dict(env, LD_PRELOAD=""))
    r2 = subprocess.run([sys.executable, "-c", "import os; os._exit(0)"], timeout=60,
                        env=dict(env, LD_PRELOAD=PRELOAD[0]))
    check(r.returncode == 0 and r2.returncode == 0 and set(os.listdir(dirname)) == before,
          "short-lived processes (one ending by _exit) leave no page")


def test_hostile_pages(ebbstat, holder_bin, dirname, fuzz):
    """Pages made by hand: each a clear error and exit code, never a crash."""
    env = dict(os.environ, EBBMALLOC_CONF=f"stats_dir:{dirname}")
    h = Holder([holder_bin, "1", "0", "tick"], env=env)
    wait_page(ebbstat, h.pid, dirname)
    with open(os.path.join(dirname, f"ebbmalloc.{h.pid}"), "rb") as f:
        good = f.read()
    h.stop()
    bad = tempfile.mkdtemp(prefix="ebbstat-bad-")
    me = os.getpid()
    path = os.path.join(bad, f"ebbmalloc.{me}")

    def with_page(data, code, what):
        with open(path, "wb") as f:
            f.write(data)
        os.chmod(path, 0o600)
        r = run([ebbstat, "--dir", bad, str(me)])
        check(r.returncode == code and r.stderr.strip() != "" and r.returncode < 128,
              f"{what}: exit {r.returncode} (want {code}): {r.stderr.strip()[:120]}")
        r = run([ebbstat, "--dir", bad, "--json", str(me)])
        check(r.returncode == code, f"{what}: --json too")

    def patched(off, fmt, value):
        b = bytearray(good)
        struct.pack_into(fmt, b, off, value)
        return bytes(b)

    with_page(b"", EXIT["corrupt"], "empty page")
    with_page(good[:100], EXIT["corrupt"], "truncated page")
    with_page(good[:len(good) // 2], EXIT["corrupt"], "half a page")
    with_page(os.urandom(len(good)), EXIT["corrupt"], "random bytes")
    with_page(patched(8, "<I", 99), EXIT["version"], "layout version 99")
    with_page(patched(8, "<I", 99)[:64], EXIT["version"], "short page of layout version 99")
    # Another layout's page (an older ebbmalloc) of a process that is gone:
    # the list calls it stale, and --clean removes it.
    dead = os.path.join(bad, f"ebbmalloc.{h.pid}")
    with open(dead, "wb") as f:
        f.write(patched(8, "<I", 99))  # good names h.pid, now dead
    os.chmod(dead, 0o600)
    r = run([ebbstat, "--dir", bad])
    check(any(l.split()[0] == str(h.pid) and "stale" in l for l in r.stdout.splitlines()[1:]),
          "another layout's page of a dead process: the list marks it stale")
    r = run([ebbstat, "--dir", bad, "--clean"])
    check(not os.path.exists(dead), "--clean removes it")
    # Header: magic 0, version 8, header_size 12, total_size 16, pid 24,
    # start_time 32, narenas 40, nclasses 44, arena_off 48, arena_stride 52,
    # class_off 56, class_stride 60.
    with_page(patched(16, "<Q", 1 << 40), EXIT["corrupt"], "total size beyond the file")
    with_page(patched(40, "<I", 0xFFFFFFFF), EXIT["corrupt"], "4 billion arenas")
    with_page(patched(44, "<I", 60000), EXIT["corrupt"], "classes beyond the file")
    with_page(patched(48, "<I", 0xFFFFFFF0), EXIT["corrupt"], "arena table offset beyond the file")
    with_page(patched(56, "<I", struct.unpack_from("<I", good, 48)[0]), EXIT["corrupt"],
              "class table over the arena table")
    with_page(patched(24, "<q", 1), EXIT["corrupt"], "a page naming another pid")
    opts = bytearray(good)
    opts[72:72 + 1024] = b"A" * 1024
    with_page(bytes(opts), EXIT["corrupt"], "options text not terminated")
    os.unlink(path)
    os.symlink("/etc/passwd", path)
    r = run([ebbstat, "--dir", bad, str(me)])
    check(r.returncode == EXIT["corrupt"] and "symlink" in r.stderr,
          "a symlink where a page should be is refused")
    r = run([ebbstat, "--dir", bad, "--clean"])
    check(os.path.islink(path), "--clean leaves a symlink alone")
    os.unlink(path)
    if fuzz:
        corpus = tempfile.mkdtemp(prefix="ebbstat-corpus-")
        for i, data in enumerate([good, good[:200], patched(8, "<I", 99)]):
            with open(os.path.join(corpus, f"seed{i}"), "wb") as f:
                f.write(data)
        r = subprocess.run([fuzz, "-max_total_time=15", "-max_len=%d" % (len(good) + 64),
                            corpus], capture_output=True, text=True, timeout=120)
        tail = (r.stderr.strip().splitlines() or [""])[-1]
        check(r.returncode == 0, f"fuzz_page ran 15 s without a crash ({tail})")
        shutil.rmtree(corpus)
    else:
        print("skip fuzzing: no clang, so no fuzz target (tools/ebbstat/fuzz_page.c)")
    shutil.rmtree(bad)


JAVA_SRC = r"""
import java.nio.ByteBuffer;
import java.util.ArrayList;
public class Hold {
    public static void main(String[] a) throws Exception {
        int mib = Integer.parseInt(a[0]);
        ArrayList<ByteBuffer> keep = new ArrayList<>();
        for (int i = 0; i < mib; i++) {
            ByteBuffer b = ByteBuffer.allocateDirect(1 << 20);
            for (int j = 0; j < (1 << 20); j += 4096) b.put(j, (byte) 1);
            keep.add(b);
        }
        System.out.println("ready " + ProcessHandle.current().pid());
        System.out.flush();
        while (System.in.read() >= 0) { }
        System.out.println(keep.size());
    }
}
"""


def test_jvm(ebbstat, preload, dirname):
    java = shutil.which("java")
    javac = shutil.which("javac")
    if not java or not javac:
        print("skip JVM test: java/javac not installed (openjdk-17-jdk-headless)")
        return
    work = tempfile.mkdtemp(prefix="ebbstat-jvm-")
    with open(os.path.join(work, "Hold.java"), "w") as f:
        f.write(JAVA_SRC)
    r = run([javac, "-d", work, os.path.join(work, "Hold.java")])
    if r.returncode != 0:
        print("skip JVM test: javac failed: " + r.stderr[:200])
        return
    mib = 128
    env = dict(os.environ, LD_PRELOAD=preload, EBBMALLOC_CONF=f"stats_dir:{dirname},decay_ms:600000")
    h = Holder([java, "-Xmx64m", "-XX:MaxDirectMemorySize=1g", "-cp", work, "Hold", str(mib)], env=env)
    try:
        doc = wait_page(ebbstat, h.pid, dirname, want_snapshots=2, timeout=6)
        if doc is None or doc["snapshots"] < 2:
            print("skip JVM live checks: the page is not refreshed (no background thread "
                  "ticking the publisher in this build)")
            return
        t, rc = doc["total"], doc["reconcile"]
        rss = status_kb(h.pid, "VmRSS")
        check(t["live_bytes"] >= mib * MIB, f"JVM: live {t['live_bytes']} >= the {mib} MiB of direct buffers")
        check(t["live_bytes"] <= mib * MIB + 96 * MIB,
              f"JVM: live {t['live_bytes']} <= direct buffers + 96 MiB of JVM malloc")
        check(abs(rc["rss_bytes"] - rss) <= 0.05 * rss, f"JVM: RSS {rc['rss_bytes']} agrees with VmRSS {rss} within 5%")
        check(rc["held_bytes"] <= rc["rss_bytes"] * 1.02 + MIB, "JVM: held by ebbmalloc <= RSS")
        check(rc["outside_bytes"] > 0, "JVM: something is outside the allocator (heap, code, stacks)")
        check(t["threads"] >= 2, f"JVM: {t['threads']} threads with caches")
        r = run([ebbstat, "--dir", dirname, str(h.pid)])
        check(r.returncode == 0, "JVM: text report")
        print(r.stdout)
    finally:
        h.stop()
        shutil.rmtree(work)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ebbstat", required=True)
    ap.add_argument("--holder", required=True)
    ap.add_argument("--preload", required=True)
    ap.add_argument("--fuzz", default="")
    a = ap.parse_args()
    dirname = tempfile.mkdtemp(prefix="ebbstat-pages-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    try:
        test_cli_basics(a.ebbstat)
        test_normal_exit_removes(a.holder, dirname)
        test_pages_of_gone_processes_swept(a.holder, dirname)
        test_no_page_warns_once_if_asked(a.holder)
        PRELOAD[0] = a.preload
        test_short_process_leaves_no_page(a.holder, dirname)
        test_live_process(a.ebbstat, a.holder, dirname)
        test_huge_pages(a.ebbstat, a.holder, dirname)
        test_refused_purges(a.ebbstat, a.holder, dirname)
        test_hostile_pages(a.ebbstat, a.holder, dirname, a.fuzz)
        test_pid_namespaces(a.ebbstat, a.holder, dirname)
        test_jvm(a.ebbstat, a.preload, dirname)
    finally:
        shutil.rmtree(dirname, ignore_errors=True)
    print(f"{len(failures)} failed" if failures else "all passed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
