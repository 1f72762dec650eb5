"""What bench/run, bench/instr and tools/demo share: building, finding the
allocators to preload, and running a child while measuring its peak RSS.

Python 3 standard library only.
"""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BUILD = ROOT / "build"

# The allocators compared, in table order. Each names the shared objects to
# try, best first; glibc is the absence of a preload.
ALLOCATORS = {
    "glibc": [],
    "jemalloc": ["libjemalloc.so.2"],
    "tcmalloc": ["libtcmalloc_minimal.so.4", "libtcmalloc.so.4"],
    "mimalloc": ["libmimalloc.so.2"],
    "ebbmalloc": None,  # the build's own libebbmalloc.so
}
REFERENCE = "jemalloc"


def note(msg):
    print(msg, file=sys.stderr, flush=True)


def _run_logged(cmd, log):
    with open(log, "a") as f:
        f.write("$ " + " ".join(str(c) for c in cmd) + "\n")
        f.flush()
        return subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT).returncode == 0


def _tail(log, lines=15):
    try:
        return "\n".join(Path(log).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def build(build_dir, targets, log, everything=False):
    """Configure the project in build_dir and build the given bench targets
    and the allocator (everything=True: the whole project first).

    Returns (bench_dir, libebbmalloc path or None). When the project does
    not configure or the allocator does not build, falls back to the bench
    folder alone (build_dir/bench-only) so the other allocators can still
    be compared; the allocator is then None.
    """
    build_dir = Path(build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    Path(log).write_text("")
    configure = ["cmake", "-S", str(ROOT), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release",
                 "-DEBB_BUILD_BENCH=ON"]
    if _run_logged(configure, log):
        if everything and not _run_logged(["cmake", "--build", str(build_dir), "-j2"], log):
            note("the full build failed; building only what is needed (log: %s)" % log)
        if not _run_logged(["cmake", "--build", str(build_dir), "-j2", "--target", *targets], log):
            raise SystemExit("bench build failed:\n" + _tail(log))
        lib = None
        if _run_logged(["cmake", "--build", str(build_dir), "-j2", "--target", "ebbmalloc"], log):
            found = sorted(build_dir.rglob("libebbmalloc.so"))
            lib = found[0] if found else None
        if lib is None:
            note("ebbmalloc: the allocator does not build; skipped (log: %s)\n%s" % (log, _tail(log, 8)))
        return build_dir / "bench", lib
    note("the project does not configure (allocator not ready?); building bench/ alone (log: %s)" % log)
    alone = build_dir / "bench-only"
    ok = _run_logged(["cmake", "-S", str(ROOT / "bench"), "-B", str(alone),
                      "-DCMAKE_BUILD_TYPE=Release"], log)
    if not ok or not _run_logged(["cmake", "--build", str(alone), "-j2", "--target", *targets], log):
        raise SystemExit("bench build failed:\n" + _tail(log))
    note("ebbmalloc: not built; skipped")
    return alone, None


def _preloadable(path):
    """True when the dynamic loader accepts path as a preload here (right
    architecture, loads without error)."""
    if not os.path.isfile(path):
        return False
    r = subprocess.run(["true"], env=dict(os.environ, LD_PRELOAD=str(path)),
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return r.returncode == 0 and b"ld.so" not in r.stderr


def _ldconfig_paths(soname):
    try:
        out = subprocess.run(["ldconfig", "-p"], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True).stdout
    except OSError:
        out = ""
    paths = []
    for line in out.splitlines():
        name, _, rest = line.strip().partition(" ")
        if name == soname and "=>" in rest:
            paths.append(rest.split("=>", 1)[1].strip())
    return paths


def find_library(sonames):
    """The first preloadable path of any of the sonames (ldconfig's cache,
    then the usual library folders), or None."""
    for soname in sonames:
        candidates = _ldconfig_paths(soname)
        for d in ("/usr/local/lib", "/usr/lib", "/lib"):
            candidates += [str(p) for p in sorted(Path(d).glob("*/" + soname))]
            candidates.append(os.path.join(d, soname))
        for c in candidates:
            if _preloadable(c):
                return c
    return None


def add_ebbmalloc_option(ap):
    ap.add_argument("--ebbmalloc", metavar="PATH", default=None,
                    help="preload this libebbmalloc.so instead of the build's")


def find_allocators(names, ebbmalloc_lib):
    """{name: preload path ('' for glibc)} for the names that are present,
    in the order asked; says which are skipped and why."""
    found = {}
    for name in names:
        if name not in ALLOCATORS:
            raise SystemExit("unknown allocator %r (known: %s)" % (name, ",".join(ALLOCATORS)))
        if name == "glibc":
            found[name] = ""
        elif name == "ebbmalloc":
            if ebbmalloc_lib and _preloadable(ebbmalloc_lib):
                found[name] = str(ebbmalloc_lib)
            elif ebbmalloc_lib:
                note("ebbmalloc: %s does not preload; skipped" % ebbmalloc_lib)
        else:
            path = find_library(ALLOCATORS[name])
            if path:
                found[name] = path
            else:
                note("%s: none of %s found; skipped (tools/deps bench installs it)"
                     % (name, ", ".join(ALLOCATORS[name])))
    return found


# Environment variables that tune an allocator. In a comparison (clean=True)
# a child gets none from this process's environment, only those its column
# names, so that a MALLOC_CONF left in a shell never skews one column.
TUNING_PREFIXES = ("MALLOC_", "EBBMALLOC_", "JE_MALLOC_", "MIMALLOC_", "TCMALLOC_")


def child_env(preload, extra=None, clean=False):
    env = {k: v for k, v in os.environ.items() if not (clean and k.startswith(TUNING_PREFIXES))}
    env.pop("LD_PRELOAD", None)
    if preload:
        env["LD_PRELOAD"] = preload
    env.update(extra or {})
    return env


def add_variant_option(ap):
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=CONF",
                    help="also run ebbmalloc with EBBMALLOC_CONF=CONF, named NAME (repeatable)")


def parse_variants(ap, values, taken):
    """[(name, conf)] from the --variant values; a name must be new (not in
    taken, not repeated) and made of letters, digits, - and _."""
    variants = []
    for v in values:
        name, sep, conf = v.partition("=")
        if not sep or not name or name in taken or name in (n for n, _ in variants) or \
                not name.replace("-", "").replace("_", "").isalnum():
            ap.error("--variant %r: want NAME=CONF, NAME new, letters, digits, - and _" % v)
        variants.append((name, conf))
    return variants


def run_measured(cmd, preload, stdout, stderr, timeout=None, extra_env=None):
    """Run cmd under the preload and extra_env alone of the allocator
    settings (child_env's clean); return (exit code, ru_maxrss in KiB, wall
    seconds). ru_maxrss is this child's own (wait4), not the maximum over all
    children, but Linux starts it at this (parent) process's RSS at fork, so
    it is a floor of ~this interpreter's size: prefer the child's own VmHWM
    where it reports it. A negative exit code is the signal that ended it."""
    start = time.monotonic()
    p = subprocess.Popen(cmd, env=child_env(preload, extra_env, clean=True), stdout=stdout, stderr=stderr)
    deadline = None if timeout is None else start + timeout
    while True:
        pid, status, usage = os.wait4(p.pid, os.WNOHANG if deadline else 0)
        if pid == p.pid:
            break
        if time.monotonic() > deadline:
            p.kill()
            deadline = None
        time.sleep(0.02)
    p.returncode = os.waitstatus_to_exitcode(status)
    return p.returncode, usage.ru_maxrss, time.monotonic() - start


def shell_line(cmd, preload, extra_env=None):
    """The command as one line a person can paste to reproduce a run."""
    pre = "".join("%s=%s " % (k, _quote(v)) for k, v in (extra_env or {}).items())
    pre += "LD_PRELOAD=%s " % preload if preload else ""
    return pre + " ".join(_quote(str(c)) for c in cmd)


def _quote(s):
    return s if s and all(c.isalnum() or c in "/._-=:^$,+" for c in s) else "'%s'" % s.replace("'", "'\\''")


def have(tool):
    return shutil.which(tool) is not None
