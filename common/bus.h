/* AMQP session (rabbitmq-c): one connection, one channel in confirm mode,
 * the project's topology, publishing with confirms and consuming with
 * manual acks. Named "bus" because rabbitmq-c already owns <amqp.h>.
 * A bus is used by one thread at a time. */
#ifndef COMET_BUS_H
#define COMET_BUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "errors.h"

/* Topology names (the contract with the WHMCS module and the tools). */
#define BUS_EX_JOBS      "comet.jobs"          /* direct, routing key = action */
#define BUS_Q_JOBS       "comet.jobs"          /* quorum work queue */
#define BUS_EX_RESULTS   "comet.results"       /* topic, key <action>.<status> */
#define BUS_Q_RESULTS    "comet.results.whmcs" /* the dispatcher's queue */
#define BUS_EX_DEAD      "comet.dead"          /* fanout into the DLQ */
#define BUS_Q_DEAD       "comet.jobs.dead"
#define BUS_Q_RESULTS_DEAD "comet.results.dead" /* events the callback refused */
#define BUS_RK_RETRY     "retry"               /* key retry tiers dead-letter with */
/* A message that crashed workers this many times is dead-lettered by the
 * broker (quorum queue x-delivery-limit) instead of looping forever. */
#define BUS_DELIVERY_LIMIT 20
/* The queues that hold what must never be dropped (the DLQ, the results
 * for WHMCS and the refused results) are read and requeued by operators'
 * tools and by restarts; RabbitMQ 4 gives every quorum queue a delivery
 * limit of 20 and drops a message past it when there is no dead-letter
 * target. Declared explicitly, so far out of reach that it never applies. */
#define BUS_KEEP_DELIVERY_LIMIT 1000000000

/* Headers carried on job messages (never in the signed body). */
#define BUS_H_KID        "x-comet-kid"
#define BUS_H_SIG        "x-comet-sig"
#define BUS_H_ATTEMPT    "x-comet-attempt"     /* attempts already made */
#define BUS_H_WAITS      "x-comet-waits"       /* ordering waits (not attempts) */
#define BUS_H_FIRST_FAIL "x-comet-first-failure"
#define BUS_H_LAST_FAIL  "x-comet-last-failure"
#define BUS_H_ERR_CLASS  "x-comet-error-class"
#define BUS_H_ERR_CODE   "x-comet-error-code"
#define BUS_H_ERR_MSG    "x-comet-error-message"
#define BUS_H_WORKER     "x-comet-worker"
#define BUS_H_FORCE      "x-comet-force"       /* replay even if superseded */

#define BUS_MAX_HEADERS 16

enum bus_hkind { BUS_HSTR = 0, BUS_HINT };

struct bus_header {
    char key[64];
    enum bus_hkind kind;
    char str[300];      /* error messages are at most 256 */
    long long num;
};

/* A message to publish; owns body (malloc'd) once filled by the helpers. */
struct bus_msg {
    char exchange[64];
    char routing_key[128];
    char message_id[64];
    char type[32];
    char *body;
    size_t len;
    struct bus_header headers[BUS_MAX_HEADERS];
    size_t nheaders;
    bool mandatory;         /* unroutable -> error (tools); the worker's routes always exist */
};

/* A received message; owns body. */
struct bus_delivery {
    uint64_t tag;
    bool redelivered;
    char exchange[64];
    char routing_key[128];
    char message_id[64];
    char type[32];
    long long timestamp;    /* AMQP timestamp property, 0 = absent */
    char *body;
    size_t len;
    struct bus_header headers[BUS_MAX_HEADERS];
    size_t nheaders;
    long long death_count;  /* broker x-death count (delivery limit etc.) */
    char death_reason[64];  /* x-death reason, "" = none */
};

/* Builders: return -1 (and leave msg valid for bus_msg_clear) on overflow. */
void bus_msg_init(struct bus_msg *m, const char *exchange, const char *routing_key);
int bus_msg_set_body(struct bus_msg *m, const char *body, size_t len); /* copies */
void bus_msg_take_body(struct bus_msg *m, char *body, size_t len);     /* takes ownership */
int bus_msg_add_str(struct bus_msg *m, const char *key, const char *value);
int bus_msg_add_int(struct bus_msg *m, const char *key, long long value);
void bus_msg_clear(struct bus_msg *m);
/* Copies every header of a delivery except those named in skip (NULL-ended). */
int bus_msg_copy_headers(struct bus_msg *m, const struct bus_delivery *d, const char *const *skip);

const char *bus_delivery_str(const struct bus_delivery *d, const char *key); /* NULL if absent */
long long bus_delivery_int(const struct bus_delivery *d, const char *key, long long dflt);
void bus_delivery_clear(struct bus_delivery *d);
/* Moves src into dst (body ownership included) copying only the used
 * header slots; src is left cleared. */
void bus_delivery_move(struct bus_delivery *dst, struct bus_delivery *src);

struct bus;

/* Connects and logs in (amqp:// or amqps:// URL parsed by amqp_parse_url),
 * opens channel 1 in confirm mode. NULL with err (password never in it). */
struct bus *bus_connect(const char *url, int heartbeat, struct err *err);
void bus_free(struct bus *b);

/* Declares every exchange and queue idempotently. tiers_ms lists the retry
 * delay tiers (queue comet.retry.<ms>ms each). */
int bus_declare_topology(struct bus *b, const int *tiers_ms, int ntiers, struct err *err);
/* Name of the retry queue for a tier. */
void bus_retry_queue_name(int delay_ms, char out[64]);

int bus_qos(struct bus *b, int prefetch, struct err *err);
int bus_consume(struct bus *b, const char *queue, struct err *err);
int bus_cancel(struct bus *b, struct err *err);

/* Publishes without waiting; *seq gets the confirm sequence number. */
int bus_publish(struct bus *b, const struct bus_msg *m, uint64_t *seq, struct err *err);
/* Publishes and waits for its confirm (and no basic.return) up to timeout_ms.
 * Only for a bus that is not consuming (tools): other deliveries are not expected. */
int bus_publish_wait(struct bus *b, const struct bus_msg *m, int timeout_ms, struct err *err);

/* Holds (on) or sends (off) what the following calls write, so a round of
 * publishes and acks leaves in a few TCP segments instead of one each: the
 * broker reads them in one go. A hint: failing to set it changes nothing
 * but speed. Off must follow on before waiting for anything. */
void bus_cork(struct bus *b, bool on);

int bus_ack(struct bus *b, uint64_t tag, struct err *err);
/* requeue=false sends it to the queue's dead-letter exchange. */
int bus_nack(struct bus *b, uint64_t tag, bool requeue, struct err *err);

/* basic.get one message from a queue (no consumer): 1 = got one, 0 = empty. */
int bus_get(struct bus *b, const char *queue, struct bus_delivery *d, struct err *err);
/* Message count of a queue (passive declare); -1 on error. */
long bus_queue_depth(struct bus *b, const char *queue, struct err *err);
/* Declares a private auto-delete queue bound to exchange with key (tools, tests). */
int bus_bind_temp_queue(struct bus *b, const char *exchange, const char *key,
                        char out_name[128], struct err *err);

enum bus_event_kind {
    BUS_EV_TIMEOUT = 0,
    BUS_EV_WAKE,        /* wake_fd became readable */
    BUS_EV_DELIVERY,    /* ev->delivery filled; caller owns it */
    BUS_EV_ACK,         /* ev->seq confirmed (ev->multiple: every seq <= it) */
    BUS_EV_NACK,        /* the broker refused ev->seq */
    BUS_EV_RETURN,      /* a mandatory message came back unroutable */
};

struct bus_event {
    enum bus_event_kind kind;
    uint64_t seq;
    bool multiple;
    struct bus_delivery delivery;
};

/* Waits up to timeout_ms for one event from the broker, or for wake_fd
 * (-1 = none). Returns 0 with ev filled, or -1 when the connection or
 * channel failed (reconnect). */
int bus_wait(struct bus *b, int timeout_ms, int wake_fd, struct bus_event *ev, struct err *err);

#endif
