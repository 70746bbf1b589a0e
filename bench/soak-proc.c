/* soak-proc.c - what the soak target holds, read from /proc: its RSS and
 * its open fds, and which of them were not open at a baseline. */
#include <dirent.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench/soak.h"

long soak_rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kib = -1;

    if (f == NULL)
        return -1;
    while (fgets(line, sizeof line, f) != NULL)
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
            break;
    fclose(f);
    return kib;
}

long soak_heap_kib(void)
{
#if defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 33)
    /* What malloc has handed out and not taken back: tells a growing
     * heap from RSS that grows elsewhere (a library's own mappings). */
    struct mallinfo2 mi = mallinfo2();

    return (long)((mi.uordblks + mi.hblkhd) >> 10); /* mmapped ones too */
#else
    return -1;
#endif
}

long soak_fd_count(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    long n = 0;

    if (d == NULL)
        return -1;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1; /* the directory's own fd */
}

long soak_fd_new(const uint64_t *base, size_t nbits, int print)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    char path[64], what[256];
    ssize_t n;
    long fd, held = 0;

    if (d == NULL)
        return 0;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        fd = strtol(e->d_name, NULL, 10);
        if (fd == dirfd(d) ||
            (fd < (long)nbits && base[fd / 64] >> (fd % 64) & 1))
            continue;
        snprintf(path, sizeof path, "/proc/self/fd/%ld", fd);
        n = readlink(path, what, sizeof what - 1);
        what[n > 0 ? n : 0] = '\0';
        if (strncmp(what, "anon_inode:", 11) != 0)
            held++;
        if (print)
            printf("soak:   fd %ld -> %s (%s)\n", fd, what,
                   strncmp(what, "anon_inode:", 11) == 0
                       ? "kept by the backend" : "left open");
    }
    closedir(d);
    return held;
}

void soak_fd_mark(uint64_t *base, size_t nbits)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    long fd;

    if (d == NULL)
        return;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        fd = strtol(e->d_name, NULL, 10);
        if (fd != dirfd(d) && fd < (long)nbits)
            base[fd / 64] |= 1ull << (fd % 64);
    }
    closedir(d);
}
