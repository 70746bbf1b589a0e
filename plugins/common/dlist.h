/* dlist.h - an intrusive doubly-linked list in insertion order, the one
 * every plugin keeps its requests on (in flight, post order, backlog). */
#ifndef XFER_PLUGINS_DLIST_H
#define XFER_PLUGINS_DLIST_H

#include <stdbool.h>
#include <stddef.h>

/* A request sits on several lists at once (its worker's in-flight list,
 * its peer's post order, a backlog), each guarded by its own lock, and
 * leaves any of them from a completion, a timeout, a dead peer or the
 * core's release, in whatever order those come.  So the link lives in
 * the request (no allocation on the post path, none to fail), appending
 * and removing are O(1), and the link remembers the list it is on:
 * every path that may end a request removes it without first asking
 * whether another path already did.  Removing a link that is not on the
 * list, or was never added, does nothing; appending one already on a
 * list leaves it where it is.
 *
 * A zeroed list is empty and a zeroed link is on none, so both are ready
 * in a calloc'd struct.  No locking: the list's owner says which lock
 * guards it, next to the member.  A loop that may unlink or free the
 * element it is on reads xfer__dlist_next first; that is safe only when
 * nothing else on the list is unlinked or freed meanwhile (a saved next
 * that was freed is freed memory; one that was only unlinked has no next,
 * and the loop stops early).  A loop whose step may end other elements
 * starts again from the head. */

typedef struct xfer__dlist xfer__dlist_t;

typedef struct xfer__dlink {
    struct xfer__dlink *next, *prev;
    xfer__dlist_t *on;         /* the list it is on, NULL: none */
} xfer__dlink_t;

struct xfer__dlist {
    xfer__dlink_t *head, *tail;
};

static inline void xfer__dlist_init(xfer__dlist_t *l)
{
    l->head = l->tail = NULL;
}

static inline bool xfer__dlist_empty(const xfer__dlist_t *l)
{
    return l->head == NULL;
}

/* Whether k is on l (O(1): what the plugins' `ordered` flags were). */
static inline bool xfer__dlist_has(const xfer__dlist_t *l,
                                   const xfer__dlink_t *k)
{
    return k->on == l;
}

static inline void xfer__dlist_append(xfer__dlist_t *l, xfer__dlink_t *k)
{
    if (k->on != NULL)
        return;
    k->next = NULL;
    k->prev = l->tail;
    if (l->tail)
        l->tail->next = k;
    else
        l->head = k;
    l->tail = k;
    k->on = l;
}

/* k's neighbours are joined and k is left on no list, with no next: a
 * loop that had read k's next before k went keeps a valid pointer. */
static inline void xfer__dlist_remove(xfer__dlist_t *l, xfer__dlink_t *k)
{
    if (k->on != l)
        return;
    if (k->prev)
        k->prev->next = k->next;
    else
        l->head = k->next;
    if (k->next)
        k->next->prev = k->prev;
    else
        l->tail = k->prev;
    k->next = k->prev = NULL;
    k->on = NULL;
}

static inline xfer__dlink_t *xfer__dlist_head(const xfer__dlist_t *l)
{
    return l->head;
}

static inline xfer__dlink_t *xfer__dlist_tail(const xfer__dlist_t *l)
{
    return l->tail;
}

/* The link after k on its list; NULL at the tail or when k is on none. */
static inline xfer__dlink_t *xfer__dlist_next(const xfer__dlink_t *k)
{
    return k->next;
}

/* The struct a link is embedded in, or NULL for NULL (so that
 * XFER__DLIST_ENTRY(xfer__dlist_head(l), ...) reads an empty list as
 * NULL); use XFER__DLIST_ENTRY. */
static inline void *xfer__dlist_obj(xfer__dlink_t *k, size_t off)
{
    return k ? (void *)((char *)k - off) : NULL;
}

/* The type containing link k as its member `member`, or NULL when k is
 * NULL.  k is evaluated once; a member that is not an xfer__dlink_t does
 * not compile (no _Generic association matches). */
#define XFER__DLIST_ENTRY(k, type, member)                                  \
    ((type *)xfer__dlist_obj(                                               \
        (k), _Generic(((type *)0)->member,                                  \
                      xfer__dlink_t: offsetof(type, member))))

#endif /* XFER_PLUGINS_DLIST_H */
