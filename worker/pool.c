/* Worker threads that run jobs off the consumer thread. */
#include "pool.h"

#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "log.h"
#include "metrics.h"

struct pool_item {
    struct bus_delivery d;
    unsigned generation;
    struct pool_item *next;
};

struct done_item {
    struct outcome out;         /* first member: an outcome pointer is its item */
    struct done_item *next;
    struct pool *pool;          /* where pool_outcome_free returns it */
};

/* Two locks, so threads handing back outcomes never contend with threads
 * waiting for work (with 128 threads one lock made most futex calls). */
struct pool {
    const struct config *cfg;
    pthread_mutex_t mu;         /* the work queue and stopping */
    pthread_cond_t cv;          /* signalled when work arrives or on stop */
    struct pool_item *head, *tail;  /* FIFO of deliveries not yet started */
    bool stopping;
    pthread_mutex_t done_mu;    /* the done list, busy and store_down */
    struct done_item *done_head, *done_tail;
    size_t busy;                /* queued + running */
    bool store_down;
    struct done_item *taken;    /* consumer-side: outcomes taken in one go, not yet handed out */
    /* Recycled items (under done_mu): an outcome is ~18 KiB, a queued
     * delivery ~3 KiB; allocating and zeroing them per job cost CPU and
     * fragmented the malloc arenas (RSS). Kept up to spare_max each. */
    struct done_item *spare_done;
    struct pool_item *spare_items;
    size_t nspare_done, nspare_items, spare_max;
    int efd;                    /* eventfd: outcomes are waiting */
    pthread_t *threads;
    int nthreads;
};

/* A done item from the spares, or a new one; NULL when out of memory. */
static struct done_item *done_get(struct pool *p)
{
    pthread_mutex_lock(&p->done_mu);
    struct done_item *d = p->spare_done;
    if (d) {
        p->spare_done = d->next;
        p->nspare_done--;
    }
    pthread_mutex_unlock(&p->done_mu);
    if (!d)
        d = malloc(sizeof(*d));
    if (d) {
        d->next = NULL;
        d->pool = p;
    }
    return d; /* process_delivery initialises the outcome */
}

/* Returns a finished pool item to the spares (or frees it). Its delivery
 * was cleared already. */
static void item_put(struct pool *p, struct pool_item *it)
{
    pthread_mutex_lock(&p->done_mu);
    if (p->nspare_items < p->spare_max) {
        it->next = p->spare_items;
        p->spare_items = it;
        p->nspare_items++;
        it = NULL;
    }
    pthread_mutex_unlock(&p->done_mu);
    free(it);
}

static void *pool_thread(void *arg)
{
    struct pool *p = arg;
    struct process_ctx ctx;
    if (process_ctx_init(&ctx, p->cfg) != 0) {
        log_error("pool: cannot create a Comet client; thread exits");
        return NULL;
    }
    for (;;) {
        pthread_mutex_lock(&p->mu);
        while (!p->head && !p->stopping)
            pthread_cond_wait(&p->cv, &p->mu);
        if (p->stopping) {
            pthread_mutex_unlock(&p->mu);
            break;
        }
        struct pool_item *it = p->head;
        p->head = it->next;
        if (!p->head)
            p->tail = NULL;
        pthread_mutex_unlock(&p->mu);

        struct done_item *done = done_get(p);
        if (done) {
            process_delivery(&ctx, &it->d, &done->out);
        }
        uint64_t one = 1;
        bool wake = false;
        if (done)
            done->out.generation = it->generation;
        else
            /* Out of memory: the delivery stays unacked and is redelivered
             * when the connection goes; count it as finished here. */
            log_error("pool: out of memory for an outcome");
        pthread_mutex_lock(&p->done_mu);
        if (done) {
            p->store_down = done->out.store_down;
            /* Only the first outcome of a batch wakes the consumer: it
             * takes the whole list at once. */
            wake = p->done_head == NULL;
            if (p->done_tail)
                p->done_tail->next = done;
            else
                p->done_head = done;
            p->done_tail = done;
        }
        p->busy--;
        pthread_mutex_unlock(&p->done_mu);
        metrics_inflight_add(-1);
        bus_delivery_clear(&it->d);
        item_put(p, it);
        if (wake && write(p->efd, &one, sizeof(one)) != sizeof(one))
            log_warn("pool: eventfd write failed");
    }
    process_ctx_clear(&ctx);
    return NULL;
}

struct pool *pool_new(const struct config *cfg, int nthreads, struct err *err)
{
    struct pool *p = calloc(1, sizeof(*p));
    if (!p) {
        err_set(err, ERR_INTERNAL, "pool: out of memory");
        return NULL;
    }
    p->cfg = cfg;
    p->spare_max = (size_t)nthreads * 2;
    p->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    p->threads = calloc((size_t)nthreads, sizeof(*p->threads));
    if (p->efd < 0 || !p->threads) {
        err_set(err, ERR_INTERNAL, "pool: cannot create eventfd or thread table");
        if (p->efd >= 0)
            close(p->efd);
        free(p->threads);
        free(p);
        return NULL;
    }
    /* glibc gives up to 8 malloc arenas per core to a process with many
     * threads, each keeping freed memory and 128 KiB of top slack; our
     * threads spend their time waiting on sockets, so a few arenas do
     * (measured: about 1.3 MiB less RSS at 128 threads, same CPU). */
    if (nthreads > 8)
        mallopt(M_ARENA_MAX, 4);
    pthread_mutex_init(&p->mu, NULL);
    pthread_mutex_init(&p->done_mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    /* Jobs are I/O bound and shallow: a small stack keeps 128 threads cheap. */
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 512 * 1024);
    for (int i = 0; i < nthreads; i++) {
        if (pthread_create(&p->threads[i], &attr, pool_thread, p) != 0) {
            err_set(err, ERR_INTERNAL, "pool: cannot start thread %d of %d", i + 1, nthreads);
            pthread_attr_destroy(&attr);
            p->nthreads = i;
            pool_free(p);
            return NULL;
        }
        p->nthreads = i + 1;
    }
    pthread_attr_destroy(&attr);
    return p;
}

void pool_free(struct pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->stopping = true;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->nthreads; i++)
        pthread_join(p->threads[i], NULL);
    while (p->head) {
        struct pool_item *it = p->head;
        p->head = it->next;
        bus_delivery_clear(&it->d);
        free(it);
    }
    struct done_item *lists[2] = { p->taken, p->done_head };
    for (int l = 0; l < 2; l++)
        while (lists[l]) {
            struct done_item *d = lists[l];
            lists[l] = d->next;
            outcome_clear(&d->out);
            free(d);
        }
    while (p->spare_done) {
        struct done_item *d = p->spare_done;
        p->spare_done = d->next;
        free(d);
    }
    while (p->spare_items) {
        struct pool_item *it = p->spare_items;
        p->spare_items = it->next;
        free(it);
    }
    pthread_mutex_destroy(&p->mu);
    pthread_mutex_destroy(&p->done_mu);
    pthread_cond_destroy(&p->cv);
    close(p->efd);
    free(p->threads);
    free(p);
}

int pool_submit(struct pool *p, struct bus_delivery *d, unsigned generation)
{
    pthread_mutex_lock(&p->done_mu);
    struct pool_item *it = p->spare_items;
    if (it) {
        p->spare_items = it->next;
        p->nspare_items--;
    }
    pthread_mutex_unlock(&p->done_mu);
    if (!it)
        it = malloc(sizeof(*it));
    if (!it)
        return -1;
    bus_delivery_move(&it->d, d); /* the queue owns the body now */
    it->generation = generation;
    it->next = NULL;
    pthread_mutex_lock(&p->done_mu);
    p->busy++;
    pthread_mutex_unlock(&p->done_mu);
    pthread_mutex_lock(&p->mu);
    if (p->tail)
        p->tail->next = it;
    else
        p->head = it;
    p->tail = it;
    pthread_mutex_unlock(&p->mu);
    /* Signalled after the unlock: the woken thread does not block on it. */
    pthread_cond_signal(&p->cv);
    metrics_inflight_add(1);
    return 0;
}

int pool_wake_fd(const struct pool *p)
{
    return p->efd;
}

struct outcome *pool_take_done(struct pool *p)
{
    if (!p->taken) {
        uint64_t n;
        /* Drain the counter first: an outcome added after this read finds
         * the list empty again and re-arms it. */
        if (read(p->efd, &n, sizeof(n)) < 0) {
            /* EAGAIN: nothing signalled; the list may still hold items. */
        }
        /* The whole list in one lock; only the consumer thread takes. */
        pthread_mutex_lock(&p->done_mu);
        p->taken = p->done_head;
        p->done_head = p->done_tail = NULL;
        pthread_mutex_unlock(&p->done_mu);
    }
    struct done_item *d = p->taken;
    if (d) {
        p->taken = d->next;
        d->next = NULL;
    }
    /* struct outcome is the first member: the item is the outcome. */
    return d ? &d->out : NULL;
}

void pool_outcome_free(struct outcome *o)
{
    if (!o)
        return;
    outcome_clear(o);
    /* o is the first member of its done_item: back to its pool's spares. */
    struct done_item *d = (struct done_item *)o;
    struct pool *p = d->pool;
    pthread_mutex_lock(&p->done_mu);
    if (p->nspare_done < p->spare_max) {
        d->next = p->spare_done;
        p->spare_done = d;
        p->nspare_done++;
        d = NULL;
    }
    pthread_mutex_unlock(&p->done_mu);
    free(d);
}

size_t pool_take_pending(struct pool *p, uint64_t *tags, unsigned *gens, size_t max)
{
    size_t n = 0;
    pthread_mutex_lock(&p->mu);
    while (p->head && n < max) {
        struct pool_item *it = p->head;
        p->head = it->next;
        if (!p->head)
            p->tail = NULL;
        tags[n] = it->d.tag;
        gens[n] = it->generation;
        n++;
        pthread_mutex_lock(&p->done_mu);
        p->busy--;
        pthread_mutex_unlock(&p->done_mu);
        metrics_inflight_add(-1);
        bus_delivery_clear(&it->d);
        free(it);
    }
    pthread_mutex_unlock(&p->mu);
    return n;
}

size_t pool_busy(struct pool *p)
{
    pthread_mutex_lock(&p->done_mu);
    size_t n = p->busy;
    pthread_mutex_unlock(&p->done_mu);
    return n;
}

void pool_store_reset(struct pool *p)
{
    pthread_mutex_lock(&p->done_mu);
    p->store_down = false;
    pthread_mutex_unlock(&p->done_mu);
}

bool pool_store_down(struct pool *p)
{
    pthread_mutex_lock(&p->done_mu);
    bool down = p->store_down;
    pthread_mutex_unlock(&p->done_mu);
    return down;
}
