/*
 * The shared statistics page (layout and sequence lock: stats_shm.h).
 *
 * Nothing here is on an allocation path. The thread caches count
 * allocations per class in their own bins; refill and flush fold them into
 * the arenas' bins. The background thread calls ebb__stats_shm_tick, which
 * gathers those counters into a private snapshot every stats_interval_ms
 * and copies it into the page under the sequence lock.
 *
 * The process writes the page and reads one word of it: the request word,
 * which it swaps with 0 on each tick.
 *
 * The page is due at initialisation and made by the first tick at least
 * stats_interval_ms later, so a process that lives shorter than that (a
 * shell, a forked child that execs or _exits) leaves no page behind: only a
 * destructor removes it, and _exit or a signal runs none. A forked child's
 * page is due when it is born.
 */
#include "conf.h"
#include "internal.h"
#include "stats_shm.h"

#define PATH_LEN (EBB_OPT_STR_LEN + 48)

static struct {
    _Atomic(ebb_stats_header_t *) page; /* NULL: no page */
    _Atomic bool create_pending;        /* a page is due at due_ns */
    uint64_t due_ns;
    bool loud;                          /* stats_shm set explicitly: warn */
    _Atomic bool gone;                  /* removed at exit: publish no more */
    ebb_lock_t lock;                    /* one writer at a time */
    unsigned char *snap;                /* private snapshot, size bytes */
    size_t size;
    uint64_t seq;                       /* the writer's copy of page->seq */
    uint64_t last_publish_ns;
    uint64_t publish_count;
    uint64_t purge_token, purge_bytes, purge_duration_ns, purge_done_ns;
    int pid;                            /* the page's owner */
    char path[PATH_LEN];
} shm = {.lock = EBB_LOCK_INIT};

static unsigned page_narenas(void) { return ebb__narenas ? ebb__narenas : 1; }
#define PAGE_NCLASSES EBB_NSMALL

static size_t layout(uint32_t *arena_off, uint32_t *class_off) {
    size_t a = ebb_align_up(sizeof(ebb_stats_header_t), EBB_CACHELINE);
    size_t c = a + (size_t)page_narenas() * sizeof(ebb_stats_counters_t);
    *arena_off = (uint32_t)a;
    *class_off = (uint32_t)c;
    return ebb_align_up(c + PAGE_NCLASSES * sizeof(ebb_stats_class_t), EBB_PAGE);
}

/* Is the page at path, in our pid's name, kept by a live process of
 * another pid namespace (containers sharing /dev/shm but not their
 * processes, where two of them have the same pid)? Then it is not ours to
 * replace. A page of our own namespace is an earlier image of this process
 * (exec) or a dead one's: it goes, as does a stale page from elsewhere
 * (ebb_stats_page_is_fresh), ebbstat judging pages the same way. */
static bool page_kept_by_another(const char *path) {
    ebb_stats_header_t h;
    if (ebb__os_read_head(path, &h, sizeof(h)) != (long)sizeof(h) || h.magic != EBB_STATS_MAGIC ||
        h.version != EBB_STATS_VERSION)
        return false;
    uint64_t ns = ebb__os_pid_ns();
    if (h.pid_ns == 0 || ns == 0 || h.pid_ns == ns)
        return false;
    return ebb_stats_page_is_fresh(h.publish_ns, h.interval_ms, ebb__os_now_ns());
}

static const char *errno_text(int e) {
    switch (e) {
    case EEXIST: return "something else is at that path (a symlink or a file not ours)";
    case EACCES: case EPERM: return "permission denied";
    case ENOENT: return "no such directory";
    case ENOTDIR: return "not a directory";
    case ENOSPC: return "no space left";
    case EROFS: return "read-only file system";
    case ELOOP: return "a symlink is in the way";
    case ENOMEM: return "out of memory";
    case ENAMETOOLONG: return "path too long";
    default: return "system error";
    }
}

static void fill_header(ebb_stats_header_t *h, uint32_t arena_off, uint32_t class_off) {
    h->version = EBB_STATS_VERSION;
    h->header_size = sizeof(ebb_stats_header_t);
    h->total_size = shm.size;
    h->pid = shm.pid;
    h->start_time = ebb__os_start_time();
    h->pid_ns = ebb__os_pid_ns();
    h->narenas = page_narenas();
    h->nclasses = PAGE_NCLASSES;
    h->arena_off = arena_off;
    h->arena_stride = sizeof(ebb_stats_counters_t);
    h->class_off = class_off;
    h->class_stride = sizeof(ebb_stats_class_t);
    h->counters_size = sizeof(ebb_stats_counters_t);
    h->page_size = EBB_PAGE;
    ebb__conf_describe(&ebb__opts, h->options, sizeof(h->options));
}

static void build_snapshot(uint64_t now_ns) {
    ebb_stats_header_t *h = (ebb_stats_header_t *)shm.snap;
    ebb__stats_collect(&h->total, (ebb_stats_counters_t *)(shm.snap + h->arena_off), h->narenas,
                       (ebb_stats_class_t *)(shm.snap + h->class_off), h->nclasses);
    h->publish_ns = now_ns;
    h->publish_count = ++shm.publish_count;
    h->interval_ms = ebb__opts.stats_interval_ms;
    h->decay_ms = ebb__opts.decay_ms;
    h->last_purge_ns = atomic_load_explicit(&ebb__last_purge_ns, memory_order_relaxed);
    h->purge_token = shm.purge_token;
    h->purge_bytes = shm.purge_bytes;
    h->purge_duration_ns = shm.purge_duration_ns;
    h->purge_done_ns = shm.purge_done_ns;
}

/* pre: shm.lock held. */
static void publish_locked(ebb_stats_header_t *page, uint64_t now_ns) {
    build_snapshot(now_ns);
    ebb_stats_seq_publish(page, &shm.seq, shm.snap, shm.size);
    shm.last_publish_ns = now_ns;
}

/* ---- pages dead processes left ---------------------------------------- */
/* A process that ends without running its destructors leaves its page:
 * killed (SIGKILL, the OOM killer), or a forked child that ends by _exit
 * after its page was made -- as the workers of Python's multiprocessing
 * and of many pre-forking servers do, one page for each worker ever
 * started. On a container's /dev/shm (64 MiB by default) they would add up
 * for as long as the container lives. So each process, once it has made
 * its own page, removes those of processes that are gone: pages of its
 * own pid namespace, of this layout, whose pid no process has (kill(pid,
 * 0): ESRCH), and plain 0600 files of this user with one link, as
 * ebb__os_unlink_stale asks. The file removed is the one read (same
 * inode), so a page a new process of a reused pid has just made stays --
 * but for the few instructions between that check and the unlink. Pages
 * of other pid namespaces are left to `ebbstat --clean`: whether their
 * writer lives shows only in its snapshots, and one that does not publish
 * while idle (background_thread:false) would pass for dead. A live pid
 * whose page names another start time (reused) is left too: the new
 * process replaces it when it makes its own page, or it goes once the
 * pid is free. At most SWEEP_LOOK pages are read a sweep, so a directory
 * of many live processes costs each new one little (~5 us a page); what
 * is left, the next process takes. */
#define SWEEP_LOOK 256

typedef struct {
    const char *dir;  /* "" for the root directory */
    uint64_t pid_ns;
    int self;
    unsigned looked, removed;
} sweep_t;

/* The pid in a page's file name, or 0 when name is not one. */
static int page_name_pid(const char *name) {
    size_t pl = sizeof(EBB_STATS_FILE_PREFIX) - 1;
    if (strncmp(name, EBB_STATS_FILE_PREFIX, pl) != 0 || name[pl] < '1' || name[pl] > '9')
        return 0;
    long pid = 0;
    for (const char *c = name + pl; *c; c++) {
        if (*c < '0' || *c > '9' || pid > INT32_MAX / 10)
            return 0;
        pid = pid * 10 + (*c - '0');
    }
    return pid <= INT32_MAX ? (int)pid : 0;
}

static bool sweep_one(const char *name, void *arg) {
    sweep_t *sw = arg;
    int pid = page_name_pid(name);
    if (pid == 0 || pid == sw->self)
        return true;
    if (sw->looked++ >= SWEEP_LOOK)
        return false;
    char path[PATH_LEN];
    ebb__fmt(path, sizeof(path), "%s/" EBB_STATS_FILE_PREFIX "%d", sw->dir, pid);
    ebb_stats_header_t h;
    uint64_t id[2];
    if (ebb__os_read_own_file(path, &h, sizeof(h), id) != (long)sizeof(h) ||
        h.magic != EBB_STATS_MAGIC || h.version != EBB_STATS_VERSION || h.pid != pid ||
        h.pid_ns != sw->pid_ns || !ebb__os_pid_gone(pid))
        return true;
    if (ebb__os_unlink_same(path, id) == 0)
        sw->removed++;
    return true;
}

static unsigned swept_total;

/* Remove the pages of gone processes of our pid namespace from dir. */
static void sweep(const char *dir) {
    sweep_t sw = {.dir = dir, .pid_ns = ebb__os_pid_ns(), .self = shm.pid};
    if (sw.pid_ns == 0)
        return; /* no way to tell our namespace's pages */
    ebb__os_dir_each(dir[0] ? dir : "/", sweep_one, &sw);
    swept_total += sw.removed;
}

unsigned ebb__stats_shm_swept(void) { return swept_total; }

/* pre: shm.lock held (ebb__stats_shm_exit waits for a page being made). */
static void create(bool loud) {
    uint32_t arena_off, class_off;
    size_t size = layout(&arena_off, &class_off);
    shm.pid = ebb__os_getpid();
    const char *dir = ebb__opts.stats_dir;
    size_t dl = strlen(dir);
    while (dl > 1 && dir[dl - 1] == '/')
        dl--;
    char d[EBB_OPT_STR_LEN];
    memcpy(d, dir, dl);
    d[dl] = '\0';
    ebb__fmt(shm.path, sizeof(shm.path), "%s/" EBB_STATS_FILE_PREFIX "%d", dl == 1 ? "" : d,
             shm.pid);
    if (dir[0] != '/') {
        if (loud)
            ebb__warn("stats_dir '%s' is not an absolute path; no statistics page", dir);
        shm.path[0] = '\0';
        return;
    }
    if (shm.snap == NULL || shm.size != size) {
        shm.snap = ebb__base_alloc(size);
        shm.size = size;
    }
    void *p = NULL;
    int r = shm.snap ? ebb__os_shm_create(shm.path, size, &p) : ENOMEM;
    /* Our pid's name already taken: a page of an earlier image of this
     * process (exec), of a dead process, or of a live one in another pid
     * namespace that shares this directory (containers sharing /dev/shm).
     * Only our own plain file goes, and not while another process keeps
     * it up to date. */
    bool foreign = r == EEXIST && page_kept_by_another(shm.path);
    if (r == EEXIST && !foreign && ebb__os_unlink_stale(shm.path) == 0)
        r = ebb__os_shm_create(shm.path, size, &p);
    if (foreign) {
        if (loud)
            ebb__warn("statistics page %s is kept by a live process of another pid namespace "
                      "(containers sharing the directory); going on without one",
                      shm.path);
        shm.path[0] = '\0';
        return;
    }
    if (r != 0) {
        if (loud)
            ebb__warn("statistics page %s not created: %s (errno %d); going on without it",
                      shm.path, errno_text(r), r);
        shm.path[0] = '\0';
        return;
    }
    memset(shm.snap, 0, size);
    fill_header((ebb_stats_header_t *)shm.snap, arena_off, class_off);
    ebb_stats_header_t *page = p;
    fill_header(page, arena_off, class_off);
    shm.seq = 0;
    shm.publish_count = 0;
    publish_locked(page, ebb__os_now_ns());
    /* The magic last: a reader that sees it sees a whole header. */
    __atomic_store_n(&page->magic, EBB_STATS_MAGIC, __ATOMIC_RELEASE);
    atomic_store_explicit(&shm.page, page, memory_order_release);
    sweep(dl == 1 ? "" : d);
}

static void make_due(void) {
    shm.due_ns = ebb__os_now_ns() + ebb__opts.stats_interval_ms * 1000000u;
    atomic_store(&shm.create_pending, true);
}

void ebb__stats_shm_init(void) {
    shm.loud = ebb__conf_explicit(&ebb__opts, "stats_shm");
    if (ebb__opts.stats_shm)
        make_due();
}

void ebb__stats_shm_postfork_child(void) {
    ebb_lock_reinit(&shm.lock);
    ebb_stats_header_t *page = atomic_exchange(&shm.page, NULL);
    if (page == NULL && !atomic_load(&shm.create_pending))
        return;
    /* The parent's page stays the parent's; ours comes later, on a tick. */
    if (page != NULL)
        ebb__os_unmap(page, shm.size);
    shm.path[0] = '\0';
    shm.purge_token = shm.purge_bytes = shm.purge_duration_ns = shm.purge_done_ns = 0;
    make_due();
}

bool ebb__stats_shm_wants_tick(void) {
    return (atomic_load_explicit(&shm.page, memory_order_acquire) != NULL ||
            atomic_load_explicit(&shm.create_pending, memory_order_relaxed)) &&
           !atomic_load_explicit(&shm.gone, memory_order_relaxed);
}

void ebb__stats_shm_tick(uint64_t now_ns) {
    if (atomic_load_explicit(&shm.gone, memory_order_relaxed))
        return;
    if (atomic_load_explicit(&shm.create_pending, memory_order_relaxed) && now_ns >= shm.due_ns &&
        atomic_exchange(&shm.create_pending, false)) {
        ebb_lock(&shm.lock);
        if (!atomic_load(&shm.gone))
            create(shm.loud);
        ebb_unlock(&shm.lock);
    }
    ebb_stats_header_t *page = atomic_load_explicit(&shm.page, memory_order_acquire);
    if (page == NULL || shm.lock.state != 0)
        return;
    ebb_lock(&shm.lock);
    uint64_t req = atomic_exchange_explicit(&page->request, 0, memory_order_acq_rel);
    bool now = false;
    if (EBB_STATS_REQ_VERB(req) == EBB_STATS_REQ_PURGE) {
        uint64_t t0 = ebb__os_now_ns();
        shm.purge_bytes = ebb_purge();
        shm.purge_done_ns = ebb__os_now_ns();
        shm.purge_duration_ns = shm.purge_done_ns - t0;
        shm.purge_token = EBB_STATS_REQ_TOKEN(req);
        atomic_store_explicit(&ebb__last_purge_ns, shm.purge_done_ns, memory_order_relaxed);
        now = true;
    }
    if (now || shm.publish_count == 0 ||
        now_ns - shm.last_publish_ns >= ebb__opts.stats_interval_ms * 1000000u)
        publish_locked(page, ebb__os_now_ns());
    ebb_unlock(&shm.lock);
}

void ebb__stats_shm_publish(uint64_t now_ns) {
    ebb_stats_header_t *page = atomic_load_explicit(&shm.page, memory_order_acquire);
    if (page == NULL)
        return;
    ebb_lock(&shm.lock);
    publish_locked(page, now_ns);
    ebb_unlock(&shm.lock);
}

const char *ebb__stats_shm_path(void) {
    return atomic_load(&shm.page) != NULL ? shm.path : "";
}

#define EXIT_WAIT_NS ((uint64_t)500000000)

/* At normal exit (exit(), return from main; also dlclose): remove the page
 * if this process made it, and make none from then on. The background
 * thread runs until _exit, and a page falling due after this point (a
 * process that lives about stats_interval_ms) used to be made then and
 * left behind, as was one this ran into the making of; the lock orders the
 * two: a page is either made before, and removed here, or never. The
 * mapping stays, so a tick racing with exit writes into memory that is
 * still there. */
void ebb__stats_shm_exit(void) {
    if (atomic_exchange(&shm.gone, true))
        return;
    /* The lock is the background thread's for a tick, an ebbstat purge at
     * most; exit never waits longer than EXIT_WAIT_NS for it, whatever
     * holds it (a process ending however it can must not hang here). */
    bool locked = ebb_trylock(&shm.lock);
    for (uint64_t end = ebb__os_now_ns() + EXIT_WAIT_NS; !locked && ebb__os_now_ns() < end;) {
        ebb__os_yield();
        locked = ebb_trylock(&shm.lock);
    }
    if (atomic_load(&shm.page) != NULL && shm.pid == ebb__os_getpid() && shm.path[0])
        ebb__os_unlink(shm.path);
    if (locked)
        ebb_unlock(&shm.lock);
}

__attribute__((destructor)) static void stats_shm_fini(void) { ebb__stats_shm_exit(); }
