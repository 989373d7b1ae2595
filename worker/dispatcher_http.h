/* Signed callback POSTs for the result dispatcher: libcurl's multi
 * interface driven from the consumer thread. curl's sockets sit in one
 * epoll set whose fd the loop waits on beside the AMQP socket, so one
 * thread runs N transfers. */
#ifndef COMET_DISPATCHER_HTTP_H
#define COMET_DISPATCHER_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include "errors.h"

/* What the loop does with an event after one POST. */
enum dhttp_outcome {
    DHTTP_DELIVERED = 0,    /* 2xx: WHMCS committed it; ack */
    DHTTP_RETRY,            /* 5xx, 429, 408, timeout, refused, TLS, ...: keep it, back off */
    DHTTP_REFUSED,          /* other 4xx: WHMCS will never take it; dead-letter */
};

/* One finished transfer, handed to the done callback (valid during the call). */
struct dhttp_done {
    void *ctx;              /* the pointer given to dhttp_post */
    enum dhttp_outcome outcome;
    long status;            /* HTTP status; 0 = no answer */
    long duration_ms;
    char detail[256];       /* curl's error, or the start of the answer body; never a secret */
};

typedef void (*dhttp_done_fn)(const struct dhttp_done *done, void *arg);

struct dhttp;

/* url: the callback endpoint; secret: the HMAC key (copied, wiped on free);
 * timeout_ms: whole request; max_conns: keep-alive connections kept.
 * NULL with err on failure. */
struct dhttp *dhttp_new(const char *url, const unsigned char *secret, size_t secret_len,
                        int timeout_ms, int max_conns, struct err *err);
/* Abandons every transfer (no callbacks) and frees; accepts NULL. */
void dhttp_free(struct dhttp *h);

/* Starts one POST of body, signed with the current time. body is not
 * copied: it must stay valid until the done callback for ctx has run (or
 * dhttp_abort_all). Returns 0, or -1 with err (nothing started). */
int dhttp_post(struct dhttp *h, const char *body, size_t len, void *ctx, struct err *err);

/* The epoll fd: readable when a transfer's socket is ready. */
int dhttp_fd(const struct dhttp *h);
/* Milliseconds until curl's next timer is due (0 = now), or -1 for none. */
long dhttp_timeout_ms(const struct dhttp *h);
/* Drives ready sockets and due timers without blocking; calls done for
 * every transfer that finished. Returns 0, or -1 with err (curl broke). */
int dhttp_run(struct dhttp *h, dhttp_done_fn done, void *arg, struct err *err);
/* Transfers in flight. */
size_t dhttp_busy(const struct dhttp *h);
/* Cancels every transfer without callbacks (their events are gone). */
void dhttp_abort_all(struct dhttp *h);

/* The decision table: curl's result and the HTTP status to an outcome. */
enum dhttp_outcome dhttp_classify(int curl_code, long status);

#endif
