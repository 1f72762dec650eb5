#!/usr/bin/env python3
"""The JVM asks ebbmalloc to give memory back, as an operator makes it do.

    jvm_trim.py LIB JAVA CLASSES jcmd|interval

Runs NativeTrim.java with LIB preloaded and with nothing of ebbmalloc's own
giving memory back: no background thread, a 10-minute decay and no dirty
cap to speak of. The program frees ~250 MiB of direct buffers and keeps one
in 64 among them; then

  jcmd      RSS stays up for a second on its own (else the test could not
            tell what the trim did), `jcmd PID System.trim_native_heap`
            succeeds and reports, and the RSS falls by at least half of
            what was freed;
  interval  with -XX:TrimNativeHeapInterval=500 the RSS falls by as much,
            from its high-water mark, within 10 s.

In both the kept buffers are checked afterwards (every byte as written),
the JVM exits 0 and prints nothing on stderr. Exits 77 (skipped) when jcmd,
the jcmd command or the JVM flag is missing.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time

CONF = "background_thread:false,decay_ms:600000,dirty_max_kb:4194304,dirty_max_pct:10000"
MIB = 1 << 20


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def skip(msg):
    print("SKIP: " + msg)
    sys.exit(77)


def status_kib(pid, field):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    fail("no %s in /proc/%d/status" % (field, pid))


def clean_env():
    """The environment without allocator settings the shell may carry."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("MALLOC_", "EBBMALLOC_", "LD_PRELOAD", "GLIBC_TUNABLES"))}


def main():
    if len(sys.argv) != 5 or sys.argv[4] not in ("jcmd", "interval"):
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    lib, java, classes, mode = sys.argv[1:]
    jcmd = shutil.which("jcmd", path=os.path.dirname(os.path.realpath(java))) or shutil.which("jcmd")
    if mode == "jcmd" and jcmd is None:
        skip("jcmd is not installed")
    flags = ["-Xmx64m", "-XX:MaxDirectMemorySize=1g"]
    if mode == "interval":
        flags.append("-XX:TrimNativeHeapInterval=500")
        probe = subprocess.run([java] + flags + ["-version"], capture_output=True, text=True)
        if probe.returncode != 0:
            skip("this JVM has no -XX:TrimNativeHeapInterval: " + probe.stderr.strip())

    env = clean_env()
    env.update(LD_PRELOAD=lib, EBBMALLOC_CONF=CONF)
    with tempfile.TemporaryFile("w+") as errf:
        p = subprocess.Popen([java] + flags + ["-cp", classes, "NativeTrim", "8", "256", "64"],
                             env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=errf, text=True)
        try:
            run(p, lib, mode, jcmd)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
            errf.seek(0)
            stderr = errf.read()
            if stderr:  # shown even when run() failed first
                print("FAIL: the JVM printed on stderr:\n" + stderr, file=sys.stderr)
        if stderr:
            sys.exit(1)
    print("ok")


def run(p, lib, mode, jcmd):
    line = p.stdout.readline()
    if not line.startswith("ready "):
        fail("expected 'ready ...' from NativeTrim, got %r (exit %s)" % (line, p.poll()))
    fields = dict(kv.split("=") for kv in line.split()[1:])
    freed = int(fields["freed_bytes"])
    print("NativeTrim: " + line.strip())
    with open("/proc/%d/maps" % p.pid) as f:
        if os.path.basename(lib) not in f.read():
            fail("the JVM runs without %s" % lib)

    if mode == "jcmd":
        before = status_kib(p.pid, "VmRSS")
        time.sleep(1.0)
        idle = status_kib(p.pid, "VmRSS")
        print("RSS at ready %d MiB, 1 s later %d MiB" % (before >> 10, idle >> 10))
        if (before - idle) * 1024 > freed // 4:
            fail("the RSS fell by %d MiB with no trim asked for: the test cannot tell what "
                 "jcmd does (%s)" % ((before - idle) >> 10, CONF))
        r = subprocess.run([jcmd, str(p.pid), "System.trim_native_heap"], env=clean_env(),
                           capture_output=True, text=True, timeout=90)
        out = (r.stdout + r.stderr).strip()
        print("jcmd: " + out.replace("\n", " | "))
        if "Unknown diagnostic command" in out or "not available" in out:
            skip("this JVM's jcmd has no System.trim_native_heap")
        if r.returncode != 0 or "Trim native heap" not in out:
            fail("jcmd System.trim_native_heap exited %d" % r.returncode)
        after = status_kib(p.pid, "VmRSS")
        drop = (idle - after) * 1024
        print("RSS after the trim %d MiB: %d MiB given back of %d MiB freed"
              % (after >> 10, drop // MIB, freed // MIB))
        if drop < freed // 2:
            fail("jcmd's trim gave back %d MiB of the %d MiB freed (want half or more)"
                 % (drop // MIB, freed // MIB))
    else:
        deadline = time.monotonic() + 10
        while True:
            hwm, rss = status_kib(p.pid, "VmHWM"), status_kib(p.pid, "VmRSS")
            drop = (hwm - rss) * 1024
            if drop >= freed // 2:
                break
            if time.monotonic() > deadline:
                fail("10 s after the frees, the RSS is %d MiB, %d MiB below its peak; %d MiB "
                     "were freed (want half of it back)" % (rss >> 10, drop // MIB, freed // MIB))
            time.sleep(0.1)
        print("RSS %d MiB, %d MiB below its peak of %d MiB (freed %d MiB)"
              % (rss >> 10, drop // MIB, hwm >> 10, freed // MIB))

    p.stdin.write("check\n")
    p.stdin.flush()
    answer = p.stdout.readline().strip()
    if not answer.startswith("ok "):
        fail("the kept buffers after the trim: %s" % (answer or "no answer"))
    print("kept buffers intact: " + answer)
    p.stdin.close()
    try:
        rc = p.wait(timeout=60)
    except subprocess.TimeoutExpired:
        fail("the JVM did not exit after its input closed")
    if rc != 0:
        fail("the JVM exited %d" % rc)


if __name__ == "__main__":
    main()
