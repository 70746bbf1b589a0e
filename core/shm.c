/* shm.c - shareable memory: buffers the agent allocates for the user, each from
 * a memfd of its own, so that backends on the same host can hand the fd to a peer. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/internal.h"

#ifndef MFD_HUGETLB
#define MFD_HUGETLB 0x0004U
#endif
#ifndef MFD_ALLOW_SEALING
#define MFD_ALLOW_SEALING 0x0002U
#endif
#ifndef F_ADD_SEALS
#define F_ADD_SEALS 1033
#define F_SEAL_SEAL 0x0001
#define F_SEAL_SHRINK 0x0002
#define F_SEAL_GROW 0x0004
#endif

/* One allocation.  The table is process-wide, not per agent: memory
 * allocated by one agent may be registered with another agent of the
 * same process and still be shareable. */
typedef struct shm_block {
    uintptr_t base;
    size_t size;            /* mapped: len rounded up to a (huge) page */
    size_t len;             /* what the user asked for */
    int fd;
    uint64_t id;            /* random, names the fd to peers */
    xfer_agent_t *owner;
    struct shm_block *next;
} shm_block_t;

static pthread_mutex_t shm_lock = PTHREAD_MUTEX_INITIALIZER;
static shm_block_t *shm_blocks;

XFER_API xfer_status_t xfer_mem_alloc(xfer_agent_t *agent, size_t size,
                                      unsigned flags, void **ptr)
{
    unsigned mfd = MFD_CLOEXEC;
    size_t page = (size_t)sysconf(_SC_PAGESIZE), align, len;
    shm_block_t *b;
    void *p;
    int fd, e;

    xfer__err_clear();
    if (agent == NULL || ptr == NULL || size == 0)
        return xfer__err(XFER_ERR_INVALID, "xfer_mem_alloc: agent, ptr and "
                         "a non-zero size are required");
    if (flags & ~(unsigned)XFER_ALLOC_HUGE)
        return xfer__err(XFER_ERR_INVALID, "xfer_mem_alloc: unknown flags "
                         "0x%x", flags & ~(unsigned)XFER_ALLOC_HUGE);
    *ptr = NULL;
    align = page;
    if (flags & XFER_ALLOC_HUGE) {
        mfd |= MFD_HUGETLB;
        align = 2u << 20; /* the default huge page size on x86-64 and arm64 */
    }
    if (size > SIZE_MAX - align)
        return xfer__err(XFER_ERR_INVALID, "xfer_mem_alloc: %zu bytes is "
                         "too large", size);
    if (!(b = calloc(1, sizeof(*b))))
        return xfer__err(XFER_ERR_NOMEM, "out of memory");
    if (xfer__random(&b->id, sizeof(b->id)) != XFER_OK) {
        free(b);
        return XFER_ERR_BACKEND;
    }
#ifdef HAVE_MEMFD_CREATE
    /* Sealable, so that a peer handed the fd cannot shrink it under us
     * (our next access would be a SIGBUS); kernels before 4.16 seal no
     * huge-page memfd, and such a block is simply not shared. */
    fd = memfd_create("xfer", mfd | MFD_ALLOW_SEALING);
    if (fd < 0 && errno == EINVAL)
        fd = memfd_create("xfer", mfd);
#else
    fd = -1;
    errno = ENOSYS;
#endif
    if (fd < 0) {
        e = errno;
        free(b);
        return xfer__err(e == ENOMEM ? XFER_ERR_NOMEM : XFER_ERR_NOT_SUPPORTED,
                         "xfer_mem_alloc: memfd_create%s: %s",
                         (flags & XFER_ALLOC_HUGE) ? " with MFD_HUGETLB" : "",
                         strerror(e));
    }
    len = size;
    size = (size + align - 1) / align * align;
    if (ftruncate(fd, (off_t)size) != 0 ||
        (p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED |
                  ((flags & XFER_ALLOC_HUGE) ? MAP_POPULATE : 0), fd, 0)) ==
            MAP_FAILED) {
        e = errno;
        close(fd);
        free(b);
        if (flags & XFER_ALLOC_HUGE)
            return xfer__err(XFER_ERR_NOMEM, "xfer_mem_alloc: %zu bytes of "
                             "huge pages are not available (%s); reserve "
                             "them in /proc/sys/vm/nr_hugepages or allocate "
                             "without XFER_ALLOC_HUGE", size, strerror(e));
        return xfer__err(XFER_ERR_NOMEM, "xfer_mem_alloc: %zu bytes: %s",
                         size, strerror(e));
    }
    /* Its size is final: neither side may change it from now on. */
    (void)fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
    b->base = (uintptr_t)p;
    b->size = size;
    b->len = len;
    b->fd = fd;
    b->owner = agent;
    pthread_mutex_lock(&shm_lock);
    b->next = shm_blocks;
    shm_blocks = b;
    pthread_mutex_unlock(&shm_lock);
    *ptr = p;
    return XFER_OK;
}

static void block_free(shm_block_t *b)
{
    munmap((void *)b->base, b->size);
    close(b->fd);
    free(b);
}

XFER_API xfer_status_t xfer_mem_free(xfer_agent_t *agent, void *ptr)
{
    shm_block_t **pp, *b;
    xfer__region_t *r = NULL;

    xfer__err_clear();
    if (ptr == NULL)
        return XFER_OK;
    if (agent == NULL)
        return xfer__err(XFER_ERR_INVALID, "xfer_mem_free: NULL agent");
    /* The agent's lock first, as when backends look blocks up. */
    xfer__lock(agent);
    pthread_mutex_lock(&shm_lock);
    for (pp = &shm_blocks; (b = *pp) != NULL; pp = &b->next)
        if (b->base == (uintptr_t)ptr && b->owner == agent)
            break;
    /* Unmapping registered memory would turn a peer's next WRITE into
     * a SIGSEGV here: the registration must go first. */
    if (b != NULL)
        r = (xfer__region_t *)xfer__reg_overlap(&agent->regions, b->base,
                                                b->size);
    if (b != NULL && r == NULL)
        *pp = b->next;
    pthread_mutex_unlock(&shm_lock);
    if (r != NULL) {
        xfer_status_t st = xfer__err(XFER_ERR_BUSY, "xfer_mem_free: %p is "
                                     "still registered with agent '%s' "
                                     "(region [0x%" PRIx64 ", +%" PRIu64 ")); "
                                     "deregister it first", ptr, agent->name,
                                     r->range.addr, r->range.len);

        xfer__unlock(agent);
        return st;
    }
    xfer__unlock(agent);
    if (b == NULL)
        return xfer__err(XFER_ERR_NOT_FOUND, "xfer_mem_free: %p was not "
                         "allocated by xfer_mem_alloc of agent '%s'", ptr,
                         agent->name);
    block_free(b);
    return XFER_OK;
}

void xfer__shm_free_all(xfer_agent_t *a)
{
    shm_block_t **pp, *b, *gone = NULL;

    pthread_mutex_lock(&shm_lock);
    for (pp = &shm_blocks; (b = *pp) != NULL;) {
        if (b->owner == a) {
            *pp = b->next;
            b->next = gone;
            gone = b;
        } else {
            pp = &b->next;
        }
    }
    pthread_mutex_unlock(&shm_lock);
    while ((b = gone) != NULL) {
        gone = b->next;
        block_free(b);
    }
}

xfer_status_t xfer__shm_lookup(uintptr_t addr, size_t len,
                               xfer_shm_info_t *info)
{
    xfer_status_t st = XFER_ERR_NOT_FOUND;

    pthread_mutex_lock(&shm_lock);
    for (shm_block_t *b = shm_blocks; b != NULL; b = b->next) {
        if (addr >= b->base && len <= b->size &&
            addr - b->base <= b->size - len) {
            info->fd = b->fd;
            info->id = b->id;
            info->size = b->len;
            info->offset = addr - b->base;
            st = XFER_OK;
            break;
        }
    }
    pthread_mutex_unlock(&shm_lock);
    return st;
}
