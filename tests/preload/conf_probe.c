/*
 * A tiny program for the EBBMALLOC_CONF tests, run with ebbmalloc
 * preloaded (it is not linked against it). It allocates enough to make
 * sure the allocator initialised, checks that libebbmalloc.so is mapped,
 * and prints "probe ok" and, when ebbmalloc exports ebb_option, the values
 * of the options named on the command line as name=value.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef const char *(*option_fn)(const char *, char *, size_t);

static int ebbmalloc_mapped(void)
{
    FILE *maps = fopen("/proc/self/maps", "r");
    char line[4096];
    int found = 0;
    while (maps != NULL && !found && fgets(line, sizeof line, maps) != NULL)
        found = strstr(line, "libebbmalloc.so") != NULL;
    if (maps != NULL)
        fclose(maps);
    return found;
}

int main(int argc, char **argv)
{
    for (int i = 0; i < 1000; i++) {
        char *p = malloc((size_t)i * 37 + 1);
        if (p == NULL)
            return 1;
        memset(p, i, (size_t)i * 37 + 1);
        free(p);
    }
    if (!ebbmalloc_mapped()) {
        fprintf(stderr, "conf_probe: libebbmalloc.so is not mapped\n");
        return 1;
    }
    option_fn option = (option_fn)dlsym(RTLD_DEFAULT, "ebb_option");
    for (int i = 1; i < argc; i++) {
        char buf[64];
        const char *v = option ? option(argv[i], buf, sizeof buf) : NULL;
        printf("%s=%s\n", argv[i], v ? v : "?");
    }
    printf("probe ok\n");
    return 0;
}
