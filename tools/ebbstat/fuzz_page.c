/*
 * libFuzzer target for the page parser: any bytes, as a page, must give
 * either a clean parse whose every table lies inside the buffer, or an
 * error -- never a crash. Built only with clang (tools/ebbstat/CMakeLists.txt):
 *   build-fuzz/tools/ebbstat/fuzz_page -max_total_time=60 corpus/
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "page.h"
#include "report.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    void *buf = NULL;
    if (posix_memalign(&buf, 64, size ? size : 1) != 0)
        return 0;
    memcpy(buf, data, size);
    ebbstat_page_t page;
    char err[256];
    if (ebbstat_page_parse(buf, size, &page, err, sizeof(err)) == EBBSTAT_OK) {
        /* Use everything the writers use: ASan catches any read outside. */
        ebbstat_view_t v = {.pid = 1, .page = &page, .now_ns = 1};
        snprintf(v.comm, sizeof(v.comm), "fuzz");
        FILE *f = fopen("/dev/null", "w");
        if (f) {
            ebbstat_write_text(f, &v);
            ebbstat_write_json(f, &v);
            ebbstat_write_prometheus(f, &v);
            fclose(f);
        }
    }
    free(buf);
    return 0;
}
