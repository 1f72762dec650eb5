/* Capture what a function writes on standard error (fd 2) into a buffer. */
#ifndef EBB_TEST_CAPTURE_H
#define EBB_TEST_CAPTURE_H
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static inline size_t capture_stderr(void (*fn)(void *), void *arg, char *buf, size_t cap) {
    char path[] = "/tmp/ebb-unit-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0)
        return 0;
    unlink(path);
    int saved = dup(2);
    dup2(fd, 2);
    fn(arg);
    dup2(saved, 2);
    close(saved);
    ssize_t n = pread(fd, buf, cap - 1, 0);
    close(fd);
    buf[n > 0 ? n : 0] = '\0';
    return n > 0 ? (size_t)n : 0;
}
#endif
