/* life.c - a uds target's liveness word: one thread of ours holds it, and the
 * kernel writes its death into the stamp page that every initiator maps. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <endian.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <xfer/backend.h>

#include "plugins/uds/uds.h"

/* Why a thread.  An initiator copies into our memfds with memcpy: no
 * system call of its own can fail when we are gone, so our death must
 * show in memory it can read with one load.  The kernel writes into user
 * memory at a death in one case only: robust futexes.  When a thread
 * ends (killed, exited, or replaced by exec), the kernel walks that
 * thread's robust list and sets FUTEX_OWNER_DIED in each word on it that
 * holds the thread's id, in the thread's own exit, before it releases its
 * memory and so before the process closes its sockets or can be reaped.
 * The list is per thread, and a thread of the program may end while the
 * process lives: so the word is held by a thread of ours that ends only
 * with the process or with this backend.  It blocks every signal and
 * sleeps on a condition variable; 64 KiB of stack.
 *
 * The list (head and its one entry) lives in the stamp page too: memory
 * the OOM reaper does not take from a dying process, which private heap
 * can lose before the walk.  Peers see our addresses there, as they see
 * those of our registrations in the metadata; the page is sealed against
 * their writes. */

#define LIFE_STACK (64u << 10)

static uint32_t *life_word(uds_t *u)
{
    return (uint32_t *)((uint8_t *)u->gen + UDS_LIFE_OFF);
}

static void *life_main(void *arg)
{
    uds_t *u = arg;
    struct robust_list_head *head =
        (void *)((uint8_t *)u->gen + UDS_LIFE_HEAD_OFF);
    struct robust_list *entry =
        (void *)((uint8_t *)u->gen + UDS_LIFE_ENTRY_OFF);
    uint32_t *w = life_word(u);
    int err = 0;

    head->list.next = entry;
    entry->next = &head->list;
    head->futex_offset = (long)((uint8_t *)w - (uint8_t *)entry);
    head->list_op_pending = NULL;
    /* glibc set this thread's list to its own, for robust mutexes: we
     * lock none, so nothing of glibc's is lost. */
    if (syscall(SYS_set_robust_list, head, sizeof *head) != 0)
        err = errno ? errno : ENOSYS;
    else
        __atomic_store_n(w, (uint32_t)syscall(SYS_gettid) & FUTEX_TID_MASK,
                         __ATOMIC_SEQ_CST);
    pthread_mutex_lock(&u->life_mu);
    u->life_state = err ? -err : 1;
    pthread_cond_broadcast(&u->life_cv);
    while (!err && !u->life_stop)
        pthread_cond_wait(&u->life_cv, &u->life_mu);
    pthread_mutex_unlock(&u->life_mu);
    /* Closed: 0, which no thread id is, so the kernel leaves the word
     * alone when this thread ends. */
    if (!err)
        __atomic_store_n(w, 0, __ATOMIC_SEQ_CST);
    return NULL;
}

xfer_status_t xfer__uds_life_start(uds_t *u, char *msg, size_t msg_size)
{
    pthread_attr_t attr;
    sigset_t all, old;
    int rc;

    pthread_mutex_init(&u->life_mu, NULL);
    pthread_cond_init(&u->life_cv, NULL);
    u->life_init = 1;
    u->life_pid = getpid();
    if ((rc = pthread_attr_init(&attr)) != 0) {
        snprintf(msg, msg_size, "pthread_attr_init: %s", strerror(rc));
        return XFER_ERR_BACKEND;
    }
    /* Below the minimum the default stays: only the size is advisory. */
    (void)pthread_attr_setstacksize(&attr, LIFE_STACK);
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = pthread_create(&u->life_thr, &attr, life_main, u);
    /* glibc carves static TLS out of the stack: in a process with much
     * of it, 64 KiB is too small (EINVAL).  The default size then. */
    if (rc == EINVAL)
        rc = pthread_create(&u->life_thr, NULL, life_main, u);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        snprintf(msg, msg_size, "cannot start its thread: %s", strerror(rc));
        return XFER_ERR_BACKEND;
    }
    u->life_on = 1;
    (void)pthread_setname_np(u->life_thr, "xfer-uds-life");
    pthread_mutex_lock(&u->life_mu);
    while (!u->life_state)
        pthread_cond_wait(&u->life_cv, &u->life_mu);
    rc = u->life_state;
    pthread_mutex_unlock(&u->life_mu);
    if (rc < 0) {
        xfer__uds_life_stop(u);
        snprintf(msg, msg_size, "set_robust_list: %s", strerror(-rc));
        return XFER_ERR_BACKEND;
    }
    /* Peers believe the word only under the magic (older targets have
     * neither); written before the page is ever shared. */
    __atomic_store_n((uint32_t *)((uint8_t *)u->gen + UDS_LIFE_MAGIC_OFF),
                     htole32(UDS_LIFE_MAGIC), __ATOMIC_RELEASE);
    return XFER_OK;
}

/* Before the sockets close: a peer that sees them closed sees the word at
 * 0 too.  A forked child's copy of the backend has no such thread, and the
 * word it would write is its parent's: it leaves both alone. */
void xfer__uds_life_stop(uds_t *u)
{
    if (!u->life_init)
        return;
    if (u->life_on && getpid() == u->life_pid) {
        pthread_mutex_lock(&u->life_mu);
        u->life_stop = 1;
        pthread_cond_broadcast(&u->life_cv);
        pthread_mutex_unlock(&u->life_mu);
        pthread_join(u->life_thr, NULL);
    }
    u->life_on = 0;
    if (getpid() == u->life_pid) {
        pthread_cond_destroy(&u->life_cv);
        pthread_mutex_destroy(&u->life_mu);
    }
    u->life_init = 0;
}
