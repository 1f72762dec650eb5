/*
 * Initialisation, the lock slow path, and fork handling.
 *
 * Initialisation runs on the first allocation call of the process, which may
 * come from the dynamic loader or libc before any constructor. It allocates
 * nothing through malloc, so it cannot recurse: it parses EBBMALLOC_CONF,
 * computes the size classes and arena cap, maps the segment map and arena 0,
 * creates the thread-exit key, and only then -- once a recursive call would
 * find everything ready -- registers the fork handlers.
 */
#include <pthread.h>

#include "conf.h"
#include "internal.h"
#include "stats_shm.h"

_Atomic bool ebb__initialized;
static ebb_lock_t init_lock = EBB_LOCK_INIT;
pthread_key_t ebb__tkey;
bool ebb__tkey_ok;

void ebb__lock_slow(ebb_lock_t *l) {
    for (int i = 0; i < 64; i++) {
        EBB_CPU_RELAX();
        uint32_t expect = 0;
        if (atomic_load_explicit(&l->state, memory_order_relaxed) == 0 &&
            atomic_compare_exchange_weak_explicit(&l->state, &expect, 1, memory_order_acquire,
                                                  memory_order_relaxed))
            return;
    }
    while (atomic_exchange_explicit(&l->state, 2, memory_order_acquire) != 0)
        ebb__os_futex_wait((volatile uint32_t *)&l->state, 2);
}

static void prefork(void) {
    if (!atomic_load_explicit(&ebb__initialized, memory_order_acquire))
        return;
    ebb_lock(&init_lock);
    ebb__tcache_fork_gate(); /* before any lock a batch may take */
    ebb__decay_prefork();
    ebb__tcache_prefork();
    ebb__arenas_prefork();
    ebb__heap_prefork();
    ebb__huge_prefork();
    ebb__base_prefork();
}

static void postfork_parent(void) {
    if (!atomic_load_explicit(&ebb__initialized, memory_order_acquire))
        return;
    ebb__base_postfork_parent();
    ebb__huge_postfork_parent();
    ebb__heap_postfork_parent();
    ebb__arenas_postfork_parent();
    ebb__tcache_postfork_parent();
    ebb__decay_postfork_parent();
    ebb_unlock(&init_lock);
}

static void postfork_child(void) {
    if (!atomic_load_explicit(&ebb__initialized, memory_order_acquire))
        return;
    ebb__base_postfork_child();
    ebb__huge_postfork_child();
    ebb__heap_postfork_child();
    ebb__arenas_postfork_child();
    ebb__tcache_postfork_child();
    ebb__decay_postfork_child();
    ebb__background_postfork_child();
    ebb__stats_shm_postfork_child();
    ebb_lock_reinit(&init_lock);
}

bool ebb__init_slow(void) {
    ebb_lock(&init_lock);
    if (atomic_load_explicit(&ebb__initialized, memory_order_acquire)) {
        ebb_unlock(&init_lock);
        return true;
    }
    ebb__size_classes_init();
    ebb__conf_defaults(&ebb__opts);
    const char *conf = ebb__os_getenv("EBBMALLOC_CONF");
    if (conf != NULL && ebb__os_secure()) {
        ebb__warn("EBBMALLOC_CONF ignored in a privileged (setuid/setgid) process");
        conf = NULL;
    }
    ebb__conf_parse(&ebb__opts, conf);
    unsigned n = (unsigned)ebb__opts.narenas;
    if (n == 0)
        n = ebb__os_ncpus();
    ebb__narenas = n < EBB_MAX_ARENAS ? n : EBB_MAX_ARENAS;
    ebb__heap_retain = ebb__opts.retain;
    ebb__os_set_thp((unsigned)ebb__opts.thp);
    bool purge_works = ebb__os_purge_probe();
    if (!ebb__segmap_init() || ebb__arena_get(0) == NULL) {
        ebb_unlock(&init_lock);
        return false;
    }
    ebb__cpucache_init();
    ebb__free_mark_init(); /* before any cache holds an object */
    ebb__tkey_ok = pthread_key_create(&ebb__tkey, ebb__tcache_thread_exit) == 0;
    atomic_store_explicit(&ebb__initialized, true, memory_order_release);
    pthread_atfork(prefork, postfork_parent, postfork_child);
    ebb_unlock(&init_lock);
    ebb__stats_shm_init(); /* made on a later tick, removed at exit (stats_shm.c) */
    /* Said whatever verbose is: the operator deployed ebbmalloc for what it
     * gives back, and on such a kernel most of it is not. */
    if (ebb__os_page_size() > EBB_PAGE)
        ebb__warn("the kernel's pages are %zu bytes, ebbmalloc's %zu: free spans are not "
                  "returned to the OS, only whole segments and objects over 2 MiB",
                  ebb__os_page_size(), EBB_PAGE);
    if (ebb__opts.verbose) {
        char buf[400];
        ebb__conf_describe(&ebb__opts, buf, sizeof(buf));
        ebb__warn("version %s, %u arenas, options %s", EBB_VERSION_STRING, ebb__narenas, buf);
        if (!purge_works && ebb__os_page_size() <= EBB_PAGE)
            ebb__warn("MADV_DONTNEED leaves pages as they were here (an emulator?): nothing is purged");
    }
    return true;
}
