/* Thread pool: N threads, each with its own Comet client and Redis
 * connection, run deliveries handed over by the consumer thread and hand
 * back outcomes. The consumer is woken through an eventfd. */
#ifndef COMET_POOL_H
#define COMET_POOL_H

#include <stdbool.h>
#include <stddef.h>
#include "bus.h"
#include "config.h"
#include "process.h"

struct pool;

/* Starts nthreads threads. NULL with err on failure. */
struct pool *pool_new(const struct config *cfg, int nthreads, struct err *err);
/* Stops and joins the threads, freeing whatever is still queued. */
void pool_free(struct pool *p);

/* Queues a delivery; takes ownership of d's body (d is emptied).
 * Returns -1 only on allocation failure (d untouched then). */
int pool_submit(struct pool *p, struct bus_delivery *d, unsigned generation);
/* Readable while completed outcomes wait; the consumer polls it. */
int pool_wake_fd(const struct pool *p);
/* Pops one completed outcome, or NULL. The caller owns it and releases it
 * with pool_outcome_free(). Also drains the eventfd. */
struct outcome *pool_take_done(struct pool *p);
void pool_outcome_free(struct outcome *o);
/* Removes deliveries not yet started, for a graceful stop; fills tags and
 * generations, returns how many (at most max). */
size_t pool_take_pending(struct pool *p, uint64_t *tags, unsigned *gens, size_t max);
/* Jobs queued or running. */
size_t pool_busy(struct pool *p);
/* True once any thread saw Redis fail and no later job found it back. */
bool pool_store_down(struct pool *p);
/* Forgets the last outcome's Redis failure, once Redis answers again: the
 * flag is otherwise only refreshed by the next job to finish, and the
 * consumer would pause again on the stale value right after resuming. */
void pool_store_reset(struct pool *p);

#endif
