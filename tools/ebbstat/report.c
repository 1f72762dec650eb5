/* ebbstat's writers; see report.h. */
#include "report.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static uint64_t sat_add(uint64_t a, uint64_t b) { return a + b < a ? UINT64_MAX : a + b; }
static uint64_t sat_sub(uint64_t a, uint64_t b) { return a > b ? a - b : 0; }
static double mib(uint64_t b) { return (double)b / (1024.0 * 1024.0); }

ebbstat_recon_t ebbstat_reconcile(const ebbstat_view_t *v) {
    const ebb_stats_counters_t *t = &v->page->h->total;
    ebbstat_recon_t r;
    r.rss = v->mem.rss;
    r.live = t->live_bytes;
    r.tcache = t->tcache_bytes;
    r.frag = sat_sub(sat_sub(t->active_bytes, t->live_bytes), t->tcache_bytes);
    r.dirty = t->dirty_bytes;
    r.metadata = t->metadata_bytes;
    r.held = sat_add(sat_add(t->active_bytes, t->dirty_bytes), t->metadata_bytes);
    r.outside = sat_sub(r.rss, r.held);
    return r;
}

/* The value of option name in the page's "name:value,..." text, or "". */
static void option_value(const char *options, const char *name, char *out, size_t cap) {
    size_t n = strlen(name);
    out[0] = '\0';
    for (const char *s = options; *s;) {
        const char *end = strchr(s, ',');
        size_t len = end ? (size_t)(end - s) : strlen(s);
        if (len > n && strncmp(s, name, n) == 0 && s[n] == ':') {
            size_t vl = len - n - 1 < cap - 1 ? len - n - 1 : cap - 1;
            memcpy(out, s + n + 1, vl);
            out[vl] = '\0';
            return;
        }
        s += len + (end != NULL);
    }
}

/* Are ebbmalloc's pages in transparent huge pages? Its thp option says
 * always, or says default on a host set to always. */
static bool thp_on(const ebbstat_view_t *v, char *opt, size_t cap, const char **host) {
    option_value(v->page->h->options, "thp", opt, cap);
    *host = ebbstat_host_thp();
    if (*host == NULL || strcmp(*host, "never") == 0)
        return false;
    return strcmp(opt, "always") == 0 || (strcmp(opt, "default") == 0 && strcmp(*host, "always") == 0);
}

static double age_s(const ebbstat_view_t *v, uint64_t then_ns) {
    if (then_ns == 0 || then_ns > v->now_ns)
        return 0;
    return (double)(v->now_ns - then_ns) / 1e9;
}

/* ---- text ---------------------------------------------------------------- */
static void line(FILE *f, const char *what, uint64_t b, uint64_t of, const char *note) {
    fprintf(f, "  %-32s %10.1f MiB", what, mib(b));
    if (of)
        fprintf(f, " %5.1f%%", 100.0 * (double)b / (double)of);
    else
        fprintf(f, "       ");
    fprintf(f, "  %s\n", note);
}

typedef struct top_s {
    unsigned cls;
    uint64_t bytes;
} top_t;

static int top_cmp(const void *a, const void *b) {
    const top_t *x = a, *y = b;
    return x->bytes < y->bytes ? 1 : x->bytes > y->bytes ? -1 : (int)x->cls - (int)y->cls;
}

static bool arena_empty(const ebb_stats_counters_t *a) {
    static const ebb_stats_counters_t zero;
    return memcmp(a, &zero, sizeof(zero)) == 0;
}

void ebbstat_write_text(FILE *f, const ebbstat_view_t *v) {
    const ebb_stats_header_t *h = v->page->h;
    ebbstat_recon_t r = ebbstat_reconcile(v);
    fprintf(f, "ebbmalloc in pid %d (%s), snapshot %.1f s old, every %" PRIu64 " ms\n", v->pid,
            v->comm, age_s(v, h->publish_ns), h->interval_ms);
    if (v->mem.ok) {
        fprintf(f, "\nResident memory (RSS, /proc/%d/smaps_rollup) %.1f MiB: anonymous %.1f",
                v->pid, mib(r.rss), mib(v->mem.anon));
        if (v->mem.anon_huge)
            fprintf(f, " (%.1f in huge pages)", mib(v->mem.anon_huge));
        fprintf(f, ", file %.1f, shmem %.1f MiB\n", mib(v->mem.file), mib(v->mem.shmem));
        if (v->mem.locked)
            fprintf(f, "  locked in memory (mlock, mlockall) %.1f MiB: what is freed there cannot "
                       "be purged\n",
                    mib(v->mem.locked));
    } else {
        fprintf(f, "\nResident memory: /proc/%d/smaps_rollup unreadable\n", v->pid);
    }
    line(f, "held by ebbmalloc", r.held, r.rss, "active + dirty + metadata");
    line(f, "  live (allocated, not freed)", r.live, r.rss, "");
    line(f, "  thread and CPU caches", r.tcache, r.rss, "freed, kept for reuse by a thread or CPU");
    line(f, "  fragmentation", r.frag, r.rss, "free space in active pages");
    line(f, "  dirty, awaiting decay", r.dirty, r.rss, "ebbstat purge PID returns it now");
    line(f, "  metadata", r.metadata, r.rss, "");
    if (v->mem.ok)
        line(f, "outside the allocator", r.outside, r.rss,
             "Java heap, thread stacks, code, file mappings");
    if (r.held > r.rss && v->mem.ok)
        fprintf(f, "  (ebbmalloc's figure exceeds RSS by %.1f MiB: mapped pages never touched "
                   "or swapped out)\n",
                mib(r.held - r.rss));
    const ebb_stats_counters_t *t = &h->total;
    fprintf(f, "\nmapped %.1f MiB, retained (purged or untouched) %.1f MiB, huge objects "
               "%.1f MiB, purged so far %.1f MiB in %" PRIu64 " madvise calls\n",
            mib(t->mapped_bytes), mib(t->retained_bytes), mib(t->huge_bytes),
            mib(t->purged_bytes), t->purge_calls);
    fprintf(f, "threads %" PRIu64 ", decay %" PRIu64 " ms, ", t->threads, h->decay_ms);
    if (h->last_purge_ns)
        fprintf(f, "last purge %.1f s ago\n", age_s(v, h->last_purge_ns));
    else
        fprintf(f, "no purge yet\n");
    if (t->cgroup_limit_bytes)
        fprintf(f, "cgroup working set %.1f MiB of a %.1f MiB limit (%.0f%%), %" PRIu64
                   " purges forced by memory pressure\n",
                mib(t->cgroup_working_set_bytes), mib(t->cgroup_limit_bytes),
                100.0 * (double)t->cgroup_working_set_bytes / (double)t->cgroup_limit_bytes,
                t->pressure_purges);
    else
        fprintf(f, "no cgroup memory limit seen, %" PRIu64 " purges forced by memory pressure\n",
                t->pressure_purges);
    if (t->purge_refused)
        fprintf(f, "%" PRIu64 " of the madvise calls refused (pages locked by mlock or mlockall):\n"
                   "  what was freed there stays resident, and is tried again after the decay\n",
                t->purge_refused);
    long kernel_page = sysconf(_SC_PAGESIZE);
    if (kernel_page > 0 && (uint64_t)kernel_page > h->page_size)
        fprintf(f, "the kernel's pages are %ld KiB, ebbmalloc's %" PRIu32 " KiB: free spans are not\n"
                   "  returned to the OS, only whole segments and objects over 2 MiB\n",
                kernel_page >> 10, h->page_size >> 10);
    char thp[16];
    const char *host;
    if (thp_on(v, thp, sizeof(thp), &host))
        fprintf(f, "transparent huge pages on (thp:%s, host %s): pages purged out of a huge page\n"
                   "  leave the RSS but stay charged to the cgroup until the kernel splits it;\n"
                   "  thp:never keeps ebbmalloc's memory out of huge pages\n",
                thp, host);

    fprintf(f, "\n%-6s %8s %10s %10s %10s %10s %12s\n", "arena", "threads", "live MiB",
            "active MiB", "dirty MiB", "mapped MiB", "purged MiB");
    unsigned listed = 0;
    for (uint32_t i = 0; i < h->narenas; i++) {
        const ebb_stats_counters_t *a = &v->page->arenas[i];
        if (arena_empty(a))
            continue;
        listed++;
        fprintf(f, "%-6u %8" PRIu64 " %10.1f %10.1f %10.1f %10.1f %12.1f\n", i, a->threads,
                mib(a->live_bytes), mib(a->active_bytes), mib(a->dirty_bytes),
                mib(a->mapped_bytes), mib(a->purged_bytes));
    }
    if (listed > 1)
        fprintf(f, "(arenas share page heaps in groups: active, dirty and mapped pages, and large\n"
                   " objects, are the group's, on its first arena)\n");

    top_t *top = calloc(h->nclasses, sizeof(*top));
    if (top != NULL) {
        for (uint32_t c = 0; c < h->nclasses; c++) {
            const ebb_stats_class_t *k = &v->page->classes[c];
            top[c].cls = c + 1;
            top[c].bytes = k->size && k->live_objects > UINT64_MAX / k->size
                               ? UINT64_MAX
                               : k->live_objects * k->size;
        }
        qsort(top, h->nclasses, sizeof(*top), top_cmp);
        fprintf(f, "\ntop size classes by live bytes\n");
        fprintf(f, "%-6s %8s %12s %14s %14s %14s\n", "class", "size", "live MiB", "live objs",
                "allocations", "frees");
        for (uint32_t i = 0; i < h->nclasses && i < 10 && top[i].bytes; i++) {
            const ebb_stats_class_t *k = &v->page->classes[top[i].cls - 1];
            fprintf(f, "%-6u %8" PRIu64 " %12.1f %14" PRIu64 " %14" PRIu64 " %14" PRIu64 "\n",
                    top[i].cls, k->size, mib(top[i].bytes), k->live_objects, k->nmalloc, k->nfree);
        }
        free(top);
    }
    fprintf(f, "\noptions: %s\n", h->options);
}

/* ---- JSON ---------------------------------------------------------------- */
static void json_str(FILE *f, const char *s) {
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(f, "\\%c", *p);
        else if (*p < 0x20 || *p >= 0x7f)
            fprintf(f, "\\u%04x", *p);
        else
            fputc(*p, f);
    }
    fputc('"', f);
}

static void json_counters(FILE *f, const ebb_stats_counters_t *c) {
    const char *sep = "";
#define EBB_STAT(name, type, unit, doc)                                                      \
    fprintf(f, "%s\"" #name "\": %" PRIu64, sep, c->name);                                   \
    sep = ", ";
#include "stats.def"
}

void ebbstat_write_json(FILE *f, const ebbstat_view_t *v) {
    const ebb_stats_header_t *h = v->page->h;
    ebbstat_recon_t r = ebbstat_reconcile(v);
    fprintf(f, "{\"layout_version\": %u, \"pid\": %d, \"command\": ", h->version, v->pid);
    json_str(f, v->comm);
    fprintf(f, ", \"start_time_ticks\": %" PRIu64 ", \"snapshot_age_s\": %.3f", h->start_time,
            age_s(v, h->publish_ns));
    fprintf(f, ", \"snapshots\": %" PRIu64 ", \"interval_ms\": %" PRIu64 ", \"decay_ms\": %" PRIu64,
            h->publish_count, h->interval_ms, h->decay_ms);
    fprintf(f, ", \"last_purge_age_s\": ");
    if (h->last_purge_ns)
        fprintf(f, "%.3f", age_s(v, h->last_purge_ns));
    else
        fprintf(f, "null");
    fprintf(f, ", \"options\": ");
    json_str(f, h->options);
    const char *host_thp = ebbstat_host_thp();
    fprintf(f, ", \"host_thp\": ");
    if (host_thp)
        json_str(f, host_thp);
    else
        fprintf(f, "null");
    fprintf(f, ",\n \"process\": ");
    if (v->mem.ok)
        fprintf(f,
                "{\"rss_bytes\": %" PRIu64 ", \"pss_bytes\": %" PRIu64
                ", \"anon_bytes\": %" PRIu64 ", \"file_bytes\": %" PRIu64
                ", \"shmem_bytes\": %" PRIu64 ", \"swap_bytes\": %" PRIu64
                ", \"anon_huge_bytes\": %" PRIu64 ", \"locked_bytes\": %" PRIu64 "}",
                v->mem.rss, v->mem.pss, v->mem.anon, v->mem.file, v->mem.shmem, v->mem.swap,
                v->mem.anon_huge, v->mem.locked);
    else
        fprintf(f, "null");
    fprintf(f,
            ",\n \"reconcile\": {\"rss_bytes\": %" PRIu64 ", \"held_bytes\": %" PRIu64
            ", \"live_bytes\": %" PRIu64 ", \"tcache_bytes\": %" PRIu64
            ", \"fragmentation_bytes\": %" PRIu64 ", \"dirty_bytes\": %" PRIu64
            ", \"metadata_bytes\": %" PRIu64 ", \"outside_bytes\": %" PRIu64 "}",
            r.rss, r.held, r.live, r.tcache, r.frag, r.dirty, r.metadata, r.outside);
    fprintf(f, ",\n \"purge\": {\"token\": %" PRIu64 ", \"bytes\": %" PRIu64
               ", \"duration_ns\": %" PRIu64 "}",
            h->purge_token, h->purge_bytes, h->purge_duration_ns);
    fprintf(f, ",\n \"total\": {");
    json_counters(f, &h->total);
    fprintf(f, "},\n \"arenas\": [");
    for (uint32_t i = 0; i < h->narenas; i++) {
        fprintf(f, "%s\n  {\"index\": %u, ", i ? "," : "", i);
        json_counters(f, &v->page->arenas[i]);
        fputc('}', f);
    }
    fprintf(f, "],\n \"classes\": [");
    for (uint32_t c = 0; c < h->nclasses; c++) {
        const ebb_stats_class_t *k = &v->page->classes[c];
        fprintf(f, "%s\n  {\"class\": %u, \"size\": %" PRIu64, c ? "," : "", c + 1, k->size);
#define EBB_CLASS_STAT(name, type, unit, doc) fprintf(f, ", \"" #name "\": %" PRIu64, k->name);
#include "stats.def"
        fputc('}', f);
    }
    fprintf(f, "]}\n");
}

/* ---- Prometheus text exposition format ---------------------------------- */
#define SUFFIX_GAUGE ""
#define SUFFIX_COUNTER "_total"
#define PTYPE_GAUGE "gauge"
#define PTYPE_COUNTER "counter"

static void prom_head(FILE *f, const char *name, const char *type, const char *help) {
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A label value: backslash, double quote and newline escaped. */
static void prom_label(FILE *f, const char *s) {
    for (; *s; s++) {
        if (*s == '\\' || *s == '"')
            fprintf(f, "\\%c", *s);
        else if (*s == '\n')
            fputs("\\n", f);
        else
            fputc(*s, f);
    }
}

void ebbstat_write_prometheus(FILE *f, const ebbstat_view_t *v) {
    const ebb_stats_header_t *h = v->page->h;
    ebbstat_recon_t r = ebbstat_reconcile(v);
    int pid = v->pid;
    prom_head(f, "ebbmalloc_info", "gauge", "ebbmalloc in this process: layout and options");
    fprintf(f, "ebbmalloc_info{pid=\"%d\",command=\"", pid);
    prom_label(f, v->comm);
    fprintf(f, "\",layout=\"%u\",options=\"", h->version);
    prom_label(f, h->options);
    fprintf(f, "\"} 1\n");
    prom_head(f, "ebbmalloc_snapshot_age_seconds", "gauge", "age of the allocator's snapshot");
    fprintf(f, "ebbmalloc_snapshot_age_seconds{pid=\"%d\"} %.3f\n", pid, age_s(v, h->publish_ns));
    if (v->mem.ok) {
        prom_head(f, "ebbmalloc_process_rss_bytes", "gauge",
                  "resident memory of the process (smaps_rollup)");
        fprintf(f, "ebbmalloc_process_rss_bytes{pid=\"%d\"} %" PRIu64 "\n", pid, r.rss);
        prom_head(f, "ebbmalloc_process_anon_huge_bytes", "gauge",
                  "of the process's anonymous memory, in transparent huge pages");
        fprintf(f, "ebbmalloc_process_anon_huge_bytes{pid=\"%d\"} %" PRIu64 "\n", pid,
                v->mem.anon_huge);
        prom_head(f, "ebbmalloc_process_locked_bytes", "gauge",
                  "of the process's memory, locked (mlock, mlockall): not purgeable");
        fprintf(f, "ebbmalloc_process_locked_bytes{pid=\"%d\"} %" PRIu64 "\n", pid,
                v->mem.locked);
        prom_head(f, "ebbmalloc_outside_bytes", "gauge",
                  "resident memory not held by ebbmalloc (heap of a VM, stacks, code)");
        fprintf(f, "ebbmalloc_outside_bytes{pid=\"%d\"} %" PRIu64 "\n", pid, r.outside);
    }
#define EBB_STAT(name, type, unit, doc)                                                      \
    prom_head(f, "ebbmalloc_" #name SUFFIX_##type, PTYPE_##type, doc);                       \
    fprintf(f, "ebbmalloc_" #name SUFFIX_##type "{pid=\"%d\"} %" PRIu64 "\n", pid,            \
            h->total.name);
#include "stats.def"
#define EBB_STAT(name, type, unit, doc)                                                      \
    prom_head(f, "ebbmalloc_arena_" #name SUFFIX_##type, PTYPE_##type, doc);                 \
    for (uint32_t i = 0; i < h->narenas; i++)                                                \
        if (!arena_empty(&v->page->arenas[i]))                                               \
            fprintf(f, "ebbmalloc_arena_" #name SUFFIX_##type "{pid=\"%d\",arena=\"%u\"} %" PRIu64 "\n", \
                    pid, i, v->page->arenas[i].name);
#include "stats.def"
#define EBB_CLASS_STAT(name, type, unit, doc)                                                \
    prom_head(f, "ebbmalloc_class_" #name SUFFIX_##type, PTYPE_##type, doc);                 \
    for (uint32_t c = 0; c < h->nclasses; c++)                                               \
        fprintf(f, "ebbmalloc_class_" #name SUFFIX_##type "{pid=\"%d\",class=\"%u\",size=\"%" PRIu64 "\"} %" PRIu64 "\n", \
                pid, c + 1, v->page->classes[c].size, v->page->classes[c].name);
#include "stats.def"
}

/* ---- the process list ---------------------------------------------------- */
void ebbstat_write_list_line(FILE *f, const ebbstat_view_t *v, const char *state) {
    if (v == NULL) {
        fprintf(f, "%8s  %-16s %10s %10s %10s %10s  %s\n", "PID", "COMMAND", "RSS MiB",
                "LIVE MiB", "DIRTY MiB", "META MiB", "STATE");
        return;
    }
    if (v->page == NULL) {
        fprintf(f, "%8d  %-16s %10s %10s %10s %10s  %s\n", v->pid, v->comm, "-", "-", "-", "-",
                state);
        return;
    }
    const ebb_stats_counters_t *t = &v->page->h->total;
    char rss[32] = "-";
    if (v->mem.ok)
        snprintf(rss, sizeof(rss), "%.1f", mib(v->mem.rss));
    fprintf(f, "%8d  %-16s %10s %10.1f %10.1f %10.1f  %s\n", v->pid, v->comm, rss,
            mib(t->live_bytes), mib(t->dirty_bytes), mib(t->metadata_bytes), state);
}
