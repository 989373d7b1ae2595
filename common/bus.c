/* AMQP session over rabbitmq-c: connect, topology, confirmed publishing, consuming. */
#include "bus.h"
#include "clock.h"

#include <amqp.h>
#include <amqp_ssl_socket.h>
#include <amqp_tcp_socket.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define BUS_CHANNEL 1
#define BUS_FRAME_MAX 131072
#define BUS_CONNECT_TIMEOUT_S 10

struct bus {
    amqp_connection_state_t conn;
    uint64_t next_seq;      /* confirm sequence of the next publish */
    char consumer_tag[64];
    bool consuming;
};

/* ---- message helpers ---------------------------------------------------- */

static void copy_str(char *dst, size_t cap, const char *src)
{
    snprintf(dst, cap, "%s", src ? src : "");
}

static void copy_bytes(char *dst, size_t cap, amqp_bytes_t b)
{
    size_t n = b.len < cap - 1 ? b.len : cap - 1;
    if (n > 0)
        memcpy(dst, b.bytes, n);
    dst[n] = '\0';
}

void bus_msg_init(struct bus_msg *m, const char *exchange, const char *routing_key)
{
    /* Field by field, not memset: the header slots (~5 KiB) are written only
     * as headers are added, so a recycled message's unused slots are never
     * touched (worker RSS with a few hundred outcomes in circulation). */
    m->message_id[0] = '\0';
    m->type[0] = '\0';
    m->body = NULL;
    m->len = 0;
    m->nheaders = 0;
    m->mandatory = false;
    copy_str(m->exchange, sizeof(m->exchange), exchange);
    copy_str(m->routing_key, sizeof(m->routing_key), routing_key);
}

int bus_msg_set_body(struct bus_msg *m, const char *body, size_t len)
{
    char *copy = malloc(len + 1);
    if (!copy)
        return -1;
    memcpy(copy, body, len);
    copy[len] = '\0';
    bus_msg_take_body(m, copy, len);
    return 0;
}

void bus_msg_take_body(struct bus_msg *m, char *body, size_t len)
{
    free(m->body);
    m->body = body;
    m->len = len;
}

static struct bus_header *msg_header_slot(struct bus_msg *m, const char *key)
{
    for (size_t i = 0; i < m->nheaders; i++)
        if (strcmp(m->headers[i].key, key) == 0)
            return &m->headers[i];  /* setting a header twice replaces it */
    if (m->nheaders >= BUS_MAX_HEADERS)
        return NULL;
    struct bus_header *h = &m->headers[m->nheaders++];
    memset(h, 0, sizeof(*h));
    copy_str(h->key, sizeof(h->key), key);
    return h;
}

int bus_msg_add_str(struct bus_msg *m, const char *key, const char *value)
{
    struct bus_header *h = msg_header_slot(m, key);
    if (!h)
        return -1;
    h->kind = BUS_HSTR;
    copy_str(h->str, sizeof(h->str), value);
    return 0;
}

int bus_msg_add_int(struct bus_msg *m, const char *key, long long value)
{
    struct bus_header *h = msg_header_slot(m, key);
    if (!h)
        return -1;
    h->kind = BUS_HINT;
    h->num = value;
    return 0;
}

void bus_msg_clear(struct bus_msg *m)
{
    if (!m)
        return;
    free(m->body);
    m->body = NULL;
    m->len = 0;
    m->nheaders = 0;
}

int bus_msg_copy_headers(struct bus_msg *m, const struct bus_delivery *d, const char *const *skip)
{
    for (size_t i = 0; i < d->nheaders; i++) {
        const struct bus_header *h = &d->headers[i];
        bool skipped = false;
        for (const char *const *s = skip; s && *s; s++)
            if (strcmp(*s, h->key) == 0)
                skipped = true;
        if (skipped)
            continue;
        int rc = h->kind == BUS_HINT ? bus_msg_add_int(m, h->key, h->num)
                                     : bus_msg_add_str(m, h->key, h->str);
        if (rc != 0)
            return -1;
    }
    return 0;
}

const char *bus_delivery_str(const struct bus_delivery *d, const char *key)
{
    for (size_t i = 0; i < d->nheaders; i++)
        if (d->headers[i].kind == BUS_HSTR && strcmp(d->headers[i].key, key) == 0)
            return d->headers[i].str;
    return NULL;
}

long long bus_delivery_int(const struct bus_delivery *d, const char *key, long long dflt)
{
    for (size_t i = 0; i < d->nheaders; i++) {
        if (strcmp(d->headers[i].key, key) != 0)
            continue;
        if (d->headers[i].kind == BUS_HINT)
            return d->headers[i].num;
        char *end = NULL;
        long long v = strtoll(d->headers[i].str, &end, 10);
        return (end && *end == '\0' && end != d->headers[i].str) ? v : dflt;
    }
    return dflt;
}

void bus_delivery_clear(struct bus_delivery *d)
{
    if (!d)
        return;
    free(d->body);
    /* Field by field: the header slots (~5 KiB) are only read up to
     * nheaders, and a recycled delivery's unused ones stay untouched. */
    d->tag = 0;
    d->redelivered = false;
    d->exchange[0] = d->routing_key[0] = d->message_id[0] = d->type[0] = '\0';
    d->timestamp = 0;
    d->body = NULL;
    d->len = 0;
    d->nheaders = 0;
    d->death_count = 0;
    d->death_reason[0] = '\0';
}

void bus_delivery_move(struct bus_delivery *dst, struct bus_delivery *src)
{
    dst->tag = src->tag;
    dst->redelivered = src->redelivered;
    memcpy(dst->exchange, src->exchange, sizeof(dst->exchange));
    memcpy(dst->routing_key, src->routing_key, sizeof(dst->routing_key));
    memcpy(dst->message_id, src->message_id, sizeof(dst->message_id));
    memcpy(dst->type, src->type, sizeof(dst->type));
    dst->timestamp = src->timestamp;
    dst->body = src->body;
    dst->len = src->len;
    memcpy(dst->headers, src->headers, src->nheaders * sizeof(src->headers[0]));
    dst->nheaders = src->nheaders;
    dst->death_count = src->death_count;
    memcpy(dst->death_reason, src->death_reason, sizeof(dst->death_reason));
    src->body = NULL;
    bus_delivery_clear(src);
}

/* ---- errors -------------------------------------------------------------- */

static int reply_err(amqp_rpc_reply_t r, const char *what, struct err *err)
{
    switch (r.reply_type) {
    case AMQP_RESPONSE_NORMAL:
        return 0;
    case AMQP_RESPONSE_NONE:
        return err_set(err, ERR_BROKER_UNAVAILABLE, "amqp: %s: missing RPC reply", what);
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
        return err_set(err, ERR_BROKER_UNAVAILABLE, "amqp: %s: %s", what,
                       amqp_error_string2(r.library_error));
    case AMQP_RESPONSE_SERVER_EXCEPTION:
        if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
            amqp_connection_close_t *c = r.reply.decoded;
            return err_set(err, ERR_BROKER_UNAVAILABLE, "amqp: %s: connection closed %u %.*s", what,
                           c->reply_code, (int)c->reply_text.len, (char *)c->reply_text.bytes);
        }
        if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
            amqp_channel_close_t *c = r.reply.decoded;
            return err_set(err, ERR_BROKER_UNAVAILABLE, "amqp: %s: channel closed %u %.*s", what,
                           c->reply_code, (int)c->reply_text.len, (char *)c->reply_text.bytes);
        }
        return err_set(err, ERR_BROKER_UNAVAILABLE, "amqp: %s: server exception 0x%08x", what,
                       r.reply.id);
    }
    return err_set(err, ERR_BROKER_UNAVAILABLE, "amqp: %s: unknown reply", what);
}

static int status_err(int status, const char *what, struct err *err)
{
    if (status == AMQP_STATUS_OK)
        return 0;
    return err_set(err, ERR_BROKER_UNAVAILABLE, "amqp: %s: %s", what, amqp_error_string2(status));
}


/* ---- connection ---------------------------------------------------------- */

struct bus *bus_connect(const char *url, int heartbeat, struct err *err)
{
    struct bus *b = calloc(1, sizeof(*b));
    char *urlbuf = strdup(url ? url : "");
    if (!b || !urlbuf) {
        free(b);
        free(urlbuf);
        err_set(err, ERR_INTERNAL, "amqp: out of memory");
        return NULL;
    }
    struct amqp_connection_info ci;
    if (amqp_parse_url(urlbuf, &ci) != AMQP_STATUS_OK) {
        err_set(err, ERR_UNKNOWN_SERVER, "amqp: cannot parse the broker URL");
        goto fail;
    }
    b->conn = amqp_new_connection();
    if (!b->conn) {
        err_set(err, ERR_INTERNAL, "amqp: out of memory");
        goto fail;
    }
    amqp_socket_t *sock = NULL;
    if (ci.ssl) {
        sock = amqp_ssl_socket_new(b->conn);
        if (sock) {
            /* Verification stays on (peer and hostname); the system CA
             * store is used unless COMET_AMQP_CACERT names a bundle. */
            const char *ca = getenv("COMET_AMQP_CACERT");
            if (ca && *ca && amqp_ssl_socket_set_cacert(sock, ca) != AMQP_STATUS_OK) {
                err_set(err, ERR_UNKNOWN_SERVER, "amqp: cannot load CA file %s", ca);
                goto fail;
            }
            amqp_ssl_socket_set_verify_peer(sock, 1);
            amqp_ssl_socket_set_verify_hostname(sock, 1);
        }
    } else {
        sock = amqp_tcp_socket_new(b->conn);
    }
    if (!sock) {
        err_set(err, ERR_INTERNAL, "amqp: cannot create socket");
        goto fail;
    }
    struct timeval tv = { .tv_sec = BUS_CONNECT_TIMEOUT_S, .tv_usec = 0 };
    int st = amqp_socket_open_noblock(sock, ci.host, ci.port, &tv);
    if (st != AMQP_STATUS_OK) {
        err_set(err, ERR_BROKER_UNAVAILABLE, "amqp: cannot connect to %s:%d: %s", ci.host, ci.port,
                amqp_error_string2(st));
        goto fail;
    }
    /* "amqp://host/" parses to vhost "": RabbitMQ's default vhost is "/". */
    const char *vhost = (ci.vhost && ci.vhost[0]) ? ci.vhost : "/";
    amqp_rpc_reply_t r = amqp_login(b->conn, vhost, 0, BUS_FRAME_MAX, heartbeat,
                                    AMQP_SASL_METHOD_PLAIN, ci.user, ci.password);
    if (reply_err(r, "login", err) != 0)
        goto fail;
    if (!amqp_channel_open(b->conn, BUS_CHANNEL) ||
        reply_err(amqp_get_rpc_reply(b->conn), "channel.open", err) != 0)
        goto fail;
    if (!amqp_confirm_select(b->conn, BUS_CHANNEL) ||
        reply_err(amqp_get_rpc_reply(b->conn), "confirm.select", err) != 0)
        goto fail;
    b->next_seq = 1;
    free(urlbuf);  /* ci points into urlbuf: free only after the last use */
    return b;
fail:
    free(urlbuf);
    bus_free(b);
    return NULL;
}

void bus_free(struct bus *b)
{
    if (!b)
        return;
    if (b->conn) {
        /* Best effort: the peer may already be gone. */
        amqp_channel_close(b->conn, BUS_CHANNEL, AMQP_REPLY_SUCCESS);
        amqp_connection_close(b->conn, AMQP_REPLY_SUCCESS);
        amqp_destroy_connection(b->conn);
    }
    free(b);
}

/* ---- topology ------------------------------------------------------------ */

static amqp_table_entry_t entry_str(const char *k, const char *v)
{
    amqp_table_entry_t e;
    e.key = amqp_cstring_bytes(k);
    e.value.kind = AMQP_FIELD_KIND_UTF8;
    e.value.value.bytes = amqp_cstring_bytes(v);
    return e;
}

static amqp_table_entry_t entry_int(const char *k, long long v)
{
    amqp_table_entry_t e;
    e.key = amqp_cstring_bytes(k);
    e.value.kind = AMQP_FIELD_KIND_I64;
    e.value.value.i64 = v;
    return e;
}

static int declare_exchange(struct bus *b, const char *name, const char *type, struct err *err)
{
    amqp_exchange_declare(b->conn, BUS_CHANNEL, amqp_cstring_bytes(name), amqp_cstring_bytes(type),
                          0, 1, 0, 0, amqp_empty_table);
    return reply_err(amqp_get_rpc_reply(b->conn), name, err);
}

static int declare_queue(struct bus *b, const char *name, amqp_table_entry_t *args, int nargs,
                         struct err *err)
{
    amqp_table_t t = { .num_entries = nargs, .entries = args };
    amqp_queue_declare(b->conn, BUS_CHANNEL, amqp_cstring_bytes(name), 0, 1, 0, 0, t);
    return reply_err(amqp_get_rpc_reply(b->conn), name, err);
}

static int bind_queue(struct bus *b, const char *queue, const char *exchange, const char *key,
                      struct err *err)
{
    amqp_queue_bind(b->conn, BUS_CHANNEL, amqp_cstring_bytes(queue), amqp_cstring_bytes(exchange),
                    amqp_cstring_bytes(key), amqp_empty_table);
    return reply_err(amqp_get_rpc_reply(b->conn), queue, err);
}

void bus_retry_queue_name(int delay_ms, char out[64])
{
    snprintf(out, 64, "comet.retry.%dms", delay_ms);
}

/* Every key a job can arrive with: the six actions and the retry key. */
static const char *const job_keys[] = {
    "create", "suspend", "unsuspend", "terminate", "change_package", "change_password",
    BUS_RK_RETRY, NULL
};

int bus_declare_topology(struct bus *b, const int *tiers_ms, int ntiers, struct err *err)
{
    if (declare_exchange(b, BUS_EX_JOBS, "direct", err) ||
        declare_exchange(b, BUS_EX_RESULTS, "topic", err) ||
        declare_exchange(b, BUS_EX_DEAD, "fanout", err))
        return -1;

    /* RabbitMQ dead-letters at most once by default: a message whose target
     * is unavailable at that moment (a node restarting) is dropped. Quorum
     * queues can dead-letter at least once (which needs reject-publish
     * overflow); every queue that dead-letters a job uses it. */
    amqp_table_entry_t jobs_args[] = {
        entry_str("x-queue-type", "quorum"),
        entry_int("x-delivery-limit", BUS_DELIVERY_LIMIT),
        entry_str("x-dead-letter-exchange", BUS_EX_DEAD),
        entry_str("x-dead-letter-strategy", "at-least-once"),
        entry_str("x-overflow", "reject-publish"),
    };
    if (declare_queue(b, BUS_Q_JOBS, jobs_args, 5, err))
        return -1;
    for (const char *const *k = job_keys; *k; k++)
        if (bind_queue(b, BUS_Q_JOBS, BUS_EX_JOBS, *k, err))
            return -1;

    /* The DLQ and the two result queues: never dropped (see
     * BUS_KEEP_DELIVERY_LIMIT). */
    amqp_table_entry_t keep_args[] = {
        entry_str("x-queue-type", "quorum"),
        entry_int("x-delivery-limit", BUS_KEEP_DELIVERY_LIMIT),
    };
    if (declare_queue(b, BUS_Q_DEAD, keep_args, 2, err) ||
        bind_queue(b, BUS_Q_DEAD, BUS_EX_DEAD, "", err))
        return -1;
    if (declare_queue(b, BUS_Q_RESULTS, keep_args, 2, err) ||
        bind_queue(b, BUS_Q_RESULTS, BUS_EX_RESULTS, "#", err) ||
        declare_queue(b, BUS_Q_RESULTS_DEAD, keep_args, 2, err))
        return -1;

    /* Retry tiers: quorum queues with a per-queue TTL that nobody consumes;
     * an expired message dead-letters back into comet.jobs with key "retry",
     * at least once (a classic queue would drop it while comet.jobs is
     * unavailable, e.g. during a broker restart). */
    for (int i = 0; i < ntiers; i++) {
        char name[64];
        bus_retry_queue_name(tiers_ms[i], name);
        amqp_table_entry_t targs[] = {
            entry_str("x-queue-type", "quorum"),
            entry_int("x-message-ttl", tiers_ms[i]),
            entry_str("x-dead-letter-exchange", BUS_EX_JOBS),
            entry_str("x-dead-letter-routing-key", BUS_RK_RETRY),
            entry_str("x-dead-letter-strategy", "at-least-once"),
            entry_str("x-overflow", "reject-publish"),
        };
        if (declare_queue(b, name, targs, 6, err))
            return -1;
    }
    return 0;
}

int bus_qos(struct bus *b, int prefetch, struct err *err)
{
    if (!amqp_basic_qos(b->conn, BUS_CHANNEL, 0, (uint16_t)prefetch, 0))
        return reply_err(amqp_get_rpc_reply(b->conn), "basic.qos", err) ? -1
               : err_set(err, ERR_BROKER_UNAVAILABLE, "amqp: basic.qos failed");
    return 0;
}

int bus_consume(struct bus *b, const char *queue, struct err *err)
{
    amqp_basic_consume_ok_t *ok = amqp_basic_consume(b->conn, BUS_CHANNEL, amqp_cstring_bytes(queue),
                                                     amqp_empty_bytes, 0, 0, 0, amqp_empty_table);
    if (!ok)
        return reply_err(amqp_get_rpc_reply(b->conn), "basic.consume", err) ? -1
               : err_set(err, ERR_BROKER_UNAVAILABLE, "amqp: basic.consume failed");
    copy_bytes(b->consumer_tag, sizeof(b->consumer_tag), ok->consumer_tag);
    b->consuming = true;
    return 0;
}

int bus_cancel(struct bus *b, struct err *err)
{
    if (!b->consuming)
        return 0;
    b->consuming = false;
    if (!amqp_basic_cancel(b->conn, BUS_CHANNEL, amqp_cstring_bytes(b->consumer_tag)))
        return reply_err(amqp_get_rpc_reply(b->conn), "basic.cancel", err) ? -1
               : err_set(err, ERR_BROKER_UNAVAILABLE, "amqp: basic.cancel failed");
    return 0;
}

/* ---- publishing ---------------------------------------------------------- */

int bus_publish(struct bus *b, const struct bus_msg *m, uint64_t *seq, struct err *err)
{
    amqp_table_entry_t entries[BUS_MAX_HEADERS];
    for (size_t i = 0; i < m->nheaders; i++) {
        const struct bus_header *h = &m->headers[i];
        entries[i] = h->kind == BUS_HINT ? entry_int(h->key, h->num) : entry_str(h->key, h->str);
    }
    amqp_basic_properties_t props;
    memset(&props, 0, sizeof(props));
    props._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG |
                   AMQP_BASIC_HEADERS_FLAG | AMQP_BASIC_TIMESTAMP_FLAG;
    props.content_type = amqp_cstring_bytes("application/json");
    props.delivery_mode = 2; /* persistent */
    props.timestamp = (uint64_t)time(NULL);
    props.headers.num_entries = (int)m->nheaders;
    props.headers.entries = entries;
    if (m->message_id[0]) {
        props._flags |= AMQP_BASIC_MESSAGE_ID_FLAG;
        props.message_id = amqp_cstring_bytes(m->message_id);
    }
    if (m->type[0]) {
        props._flags |= AMQP_BASIC_TYPE_FLAG;
        props.type = amqp_cstring_bytes(m->type);
    }
    amqp_bytes_t body = { .len = m->len, .bytes = m->body };
    int st = amqp_basic_publish(b->conn, BUS_CHANNEL, amqp_cstring_bytes(m->exchange),
                                amqp_cstring_bytes(m->routing_key), m->mandatory, 0, &props, body);
    if (status_err(st, "basic.publish", err))
        return -1;
    if (seq)
        *seq = b->next_seq;
    b->next_seq++;
    return 0;
}

int bus_publish_wait(struct bus *b, const struct bus_msg *m, int timeout_ms, struct err *err)
{
    uint64_t seq;
    if (bus_publish(b, m, &seq, err))
        return -1;
    bool returned = false;
    long long start = mono_ms();
    for (;;) {
        long long elapsed = mono_ms() - start;
        if (elapsed >= timeout_ms)
            return err_set(err, ERR_BROKER_UNAVAILABLE,
                           "amqp: the broker did not confirm the publish within %d ms", timeout_ms);
        struct bus_event ev;
        if (bus_wait(b, (int)(timeout_ms - elapsed), -1, &ev, err))
            return -1;
        switch (ev.kind) {
        case BUS_EV_RETURN:
            returned = true;
            break;
        case BUS_EV_ACK:
            if (ev.seq == seq || (ev.multiple && ev.seq >= seq)) {
                if (returned)
                    return err_set(err, ERR_BAD_FIELD,
                                   "amqp: message to %s/%s was unroutable (no queue bound)",
                                   m->exchange, m->routing_key);
                return 0;
            }
            break;
        case BUS_EV_NACK:
            if (ev.seq == seq || (ev.multiple && ev.seq >= seq))
                return err_set(err, ERR_BROKER_UNAVAILABLE, "amqp: the broker refused the message");
            break;
        case BUS_EV_DELIVERY:
            bus_delivery_clear(&ev.delivery); /* not expected on a publishing bus */
            break;
        default:
            break;
        }
    }
}

void bus_cork(struct bus *b, bool on)
{
    int fd = amqp_get_sockfd(b->conn);
    int v = on ? 1 : 0;

    if (fd >= 0)
        (void)setsockopt(fd, IPPROTO_TCP, TCP_CORK, &v, sizeof(v));
}

int bus_ack(struct bus *b, uint64_t tag, struct err *err)
{
    return status_err(amqp_basic_ack(b->conn, BUS_CHANNEL, tag, 0), "basic.ack", err);
}

int bus_nack(struct bus *b, uint64_t tag, bool requeue, struct err *err)
{
    return status_err(amqp_basic_nack(b->conn, BUS_CHANNEL, tag, 0, requeue), "basic.nack", err);
}

/* ---- receiving ----------------------------------------------------------- */

static void read_xdeath(struct bus_delivery *d, const amqp_field_value_t *v)
{
    /* x-death is an array of tables; the first entry is the latest death. */
    if (v->kind != AMQP_FIELD_KIND_ARRAY || v->value.array.num_entries < 1)
        return;
    const amqp_field_value_t *first = &v->value.array.entries[0];
    if (first->kind != AMQP_FIELD_KIND_TABLE)
        return;
    const amqp_table_t *t = &first->value.table;
    for (int i = 0; i < t->num_entries; i++) {
        const amqp_table_entry_t *e = &t->entries[i];
        if (e->key.len == 6 && memcmp(e->key.bytes, "reason", 6) == 0 &&
            (e->value.kind == AMQP_FIELD_KIND_UTF8 || e->value.kind == AMQP_FIELD_KIND_BYTES))
            copy_bytes(d->death_reason, sizeof(d->death_reason), e->value.value.bytes);
        if (e->key.len == 5 && memcmp(e->key.bytes, "count", 5) == 0 &&
            e->value.kind == AMQP_FIELD_KIND_I64)
            d->death_count = e->value.value.i64;
    }
}

static void read_headers(struct bus_delivery *d, const amqp_table_t *t)
{
    for (int i = 0; i < t->num_entries; i++) {
        const amqp_table_entry_t *e = &t->entries[i];
        if (e->key.len == 7 && memcmp(e->key.bytes, "x-death", 7) == 0) {
            read_xdeath(d, &e->value);
            continue;
        }
        if (d->nheaders >= BUS_MAX_HEADERS)
            continue;
        struct bus_header *h = &d->headers[d->nheaders];
        memset(h, 0, sizeof(*h));
        copy_bytes(h->key, sizeof(h->key), e->key);
        switch (e->value.kind) {
        case AMQP_FIELD_KIND_UTF8:
        case AMQP_FIELD_KIND_BYTES:
            h->kind = BUS_HSTR;
            copy_bytes(h->str, sizeof(h->str), e->value.value.bytes);
            break;
        case AMQP_FIELD_KIND_I8: h->kind = BUS_HINT; h->num = e->value.value.i8; break;
        case AMQP_FIELD_KIND_U8: h->kind = BUS_HINT; h->num = e->value.value.u8; break;
        case AMQP_FIELD_KIND_I16: h->kind = BUS_HINT; h->num = e->value.value.i16; break;
        case AMQP_FIELD_KIND_U16: h->kind = BUS_HINT; h->num = e->value.value.u16; break;
        case AMQP_FIELD_KIND_I32: h->kind = BUS_HINT; h->num = e->value.value.i32; break;
        case AMQP_FIELD_KIND_U32: h->kind = BUS_HINT; h->num = e->value.value.u32; break;
        case AMQP_FIELD_KIND_I64: h->kind = BUS_HINT; h->num = e->value.value.i64; break;
        case AMQP_FIELD_KIND_U64: h->kind = BUS_HINT; h->num = (long long)e->value.value.u64; break;
        case AMQP_FIELD_KIND_TIMESTAMP: h->kind = BUS_HINT; h->num = (long long)e->value.value.u64; break;
        default:
            continue; /* tables, arrays, floats: not ours */
        }
        d->nheaders++;
    }
}

static int fill_delivery(struct bus_delivery *d, const amqp_message_t *msg, uint64_t tag,
                         bool redelivered, amqp_bytes_t exchange, amqp_bytes_t rk, struct err *err)
{
    memset(d, 0, sizeof(*d));
    d->tag = tag;
    d->redelivered = redelivered;
    copy_bytes(d->exchange, sizeof(d->exchange), exchange);
    copy_bytes(d->routing_key, sizeof(d->routing_key), rk);
    const amqp_basic_properties_t *p = &msg->properties;
    if (p->_flags & AMQP_BASIC_MESSAGE_ID_FLAG)
        copy_bytes(d->message_id, sizeof(d->message_id), p->message_id);
    if (p->_flags & AMQP_BASIC_TYPE_FLAG)
        copy_bytes(d->type, sizeof(d->type), p->type);
    if (p->_flags & AMQP_BASIC_TIMESTAMP_FLAG)
        d->timestamp = (long long)p->timestamp;
    if (p->_flags & AMQP_BASIC_HEADERS_FLAG)
        read_headers(d, &p->headers);
    d->body = malloc(msg->body.len + 1);
    if (!d->body)
        return err_set(err, ERR_INTERNAL, "amqp: out of memory for a %zu byte body", msg->body.len);
    if (msg->body.len)
        memcpy(d->body, msg->body.bytes, msg->body.len);
    d->body[msg->body.len] = '\0';
    d->len = msg->body.len;
    return 0;
}

/* A frame that is not a delivery: confirms, returns, closes. */
static int handle_frame(struct bus *b, struct bus_event *ev, struct err *err)
{
    amqp_frame_t frame;
    struct timeval zero = { 0, 0 };
    int st = amqp_simple_wait_frame_noblock(b->conn, &frame, &zero);
    if (st == AMQP_STATUS_TIMEOUT) {
        ev->kind = BUS_EV_TIMEOUT;
        return 0;
    }
    if (st != AMQP_STATUS_OK)
        return status_err(st, "wait frame", err);
    if (frame.frame_type != AMQP_FRAME_METHOD) {
        ev->kind = BUS_EV_TIMEOUT; /* heartbeats and stray content: nothing to report */
        return 0;
    }
    switch (frame.payload.method.id) {
    case AMQP_BASIC_ACK_METHOD: {
        amqp_basic_ack_t *a = frame.payload.method.decoded;
        ev->kind = BUS_EV_ACK;
        ev->seq = a->delivery_tag;
        ev->multiple = a->multiple;
        return 0;
    }
    case AMQP_BASIC_NACK_METHOD: {
        amqp_basic_nack_t *n = frame.payload.method.decoded;
        ev->kind = BUS_EV_NACK;
        ev->seq = n->delivery_tag;
        ev->multiple = n->multiple;
        return 0;
    }
    case AMQP_BASIC_RETURN_METHOD: {
        amqp_message_t msg;
        amqp_rpc_reply_t r = amqp_read_message(b->conn, frame.channel, &msg, 0);
        if (reply_err(r, "basic.return", err))
            return -1;
        amqp_destroy_message(&msg);
        ev->kind = BUS_EV_RETURN;
        return 0;
    }
    case AMQP_BASIC_CANCEL_METHOD:
        /* The broker cancelled our consumer (queue deleted, node down). */
        return err_set(err, ERR_BROKER_UNAVAILABLE, "amqp: the broker cancelled the consumer");
    case AMQP_CHANNEL_CLOSE_METHOD: {
        amqp_channel_close_t *c = frame.payload.method.decoded;
        err_set(err, ERR_BROKER_UNAVAILABLE, "amqp: channel closed by broker: %u %.*s",
                c->reply_code, (int)c->reply_text.len, (char *)c->reply_text.bytes);
        return -1;
    }
    case AMQP_CONNECTION_CLOSE_METHOD: {
        amqp_connection_close_t *c = frame.payload.method.decoded;
        err_set(err, ERR_BROKER_UNAVAILABLE, "amqp: connection closed by broker: %u %.*s",
                c->reply_code, (int)c->reply_text.len, (char *)c->reply_text.bytes);
        return -1;
    }
    default:
        ev->kind = BUS_EV_TIMEOUT;
        return 0;
    }
}

/* Reads whatever is ready without blocking. */
static int read_ready(struct bus *b, struct bus_event *ev, struct err *err)
{
    amqp_envelope_t env;
    struct timeval zero = { 0, 0 };
    amqp_maybe_release_buffers(b->conn);
    amqp_rpc_reply_t r = amqp_consume_message(b->conn, &env, &zero, 0);
    if (r.reply_type == AMQP_RESPONSE_NORMAL) {
        ev->kind = BUS_EV_DELIVERY;
        int rc = fill_delivery(&ev->delivery, &env.message, env.delivery_tag, env.redelivered,
                               env.exchange, env.routing_key, err);
        amqp_destroy_envelope(&env);
        return rc;
    }
    if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION) {
        if (r.library_error == AMQP_STATUS_TIMEOUT) {
            ev->kind = BUS_EV_TIMEOUT;
            return 0;
        }
        if (r.library_error == AMQP_STATUS_UNEXPECTED_STATE)
            return handle_frame(b, ev, err);
    }
    return reply_err(r, "consume", err) ? -1
           : err_set(err, ERR_BROKER_UNAVAILABLE, "amqp: consume failed");
}

int bus_wait(struct bus *b, int timeout_ms, int wake_fd, struct bus_event *ev, struct err *err)
{
    memset(ev, 0, sizeof(*ev));
    if (amqp_frames_enqueued(b->conn) || amqp_data_in_buffer(b->conn))
        return read_ready(b, ev, err);
    struct pollfd pfd[2] = {
        { .fd = amqp_get_sockfd(b->conn), .events = POLLIN },
        { .fd = wake_fd, .events = POLLIN },
    };
    int n = poll(pfd, wake_fd >= 0 ? 2 : 1, timeout_ms);
    if (n < 0) {
        if (errno == EINTR) {
            ev->kind = BUS_EV_TIMEOUT;
            return 0;
        }
        return err_set(err, ERR_BROKER_UNAVAILABLE, "amqp: poll: %s", strerror(errno));
    }
    if (wake_fd >= 0 && (pfd[1].revents & POLLIN)) {
        ev->kind = BUS_EV_WAKE;
        return 0;
    }
    if (n == 0 && timeout_ms == 0) {
        ev->kind = BUS_EV_TIMEOUT; /* a non-blocking look: nothing there */
        return 0;
    }
    /* Also on timeout: lets rabbitmq-c send its heartbeat. */
    return read_ready(b, ev, err);
}

/* ---- tools --------------------------------------------------------------- */

int bus_get(struct bus *b, const char *queue, struct bus_delivery *d, struct err *err)
{
    /* The previous get was copied out; without this its frames stay in the
     * pool and a scan of a long queue grows by about 1 KiB per message. */
    amqp_maybe_release_buffers(b->conn);
    amqp_rpc_reply_t r = amqp_basic_get(b->conn, BUS_CHANNEL, amqp_cstring_bytes(queue), 0);
    if (reply_err(r, "basic.get", err))
        return -1;
    if (r.reply.id == AMQP_BASIC_GET_EMPTY_METHOD)
        return 0;
    if (r.reply.id != AMQP_BASIC_GET_OK_METHOD)
        return err_set(err, ERR_BROKER_UNAVAILABLE, "amqp: unexpected basic.get reply");
    amqp_basic_get_ok_t *ok = r.reply.decoded;
    uint64_t tag = ok->delivery_tag;
    bool redelivered = ok->redelivered;
    /* Copy exchange and key now: reading the message reuses the pool. */
    char exch[64], rk[128];
    copy_bytes(exch, sizeof(exch), ok->exchange);
    copy_bytes(rk, sizeof(rk), ok->routing_key);
    amqp_message_t msg;
    r = amqp_read_message(b->conn, BUS_CHANNEL, &msg, 0);
    if (reply_err(r, "basic.get body", err))
        return -1;
    int rc = fill_delivery(d, &msg, tag, redelivered, amqp_cstring_bytes(exch),
                           amqp_cstring_bytes(rk), err);
    amqp_destroy_message(&msg);
    return rc == 0 ? 1 : -1;
}

long bus_queue_depth(struct bus *b, const char *queue, struct err *err)
{
    amqp_queue_declare_ok_t *ok = amqp_queue_declare(b->conn, BUS_CHANNEL, amqp_cstring_bytes(queue),
                                                     1, 0, 0, 0, amqp_empty_table);
    if (!ok) {
        reply_err(amqp_get_rpc_reply(b->conn), "queue depth", err);
        return -1;
    }
    return (long)ok->message_count;
}

int bus_bind_temp_queue(struct bus *b, const char *exchange, const char *key, char out_name[128],
                        struct err *err)
{
    amqp_queue_declare_ok_t *ok = amqp_queue_declare(b->conn, BUS_CHANNEL, amqp_empty_bytes, 0, 0,
                                                     1, 1, amqp_empty_table);
    if (!ok)
        return reply_err(amqp_get_rpc_reply(b->conn), "temp queue", err) ? -1
               : err_set(err, ERR_BROKER_UNAVAILABLE, "amqp: temp queue failed");
    copy_bytes(out_name, 128, ok->queue);
    return bind_queue(b, out_name, exchange, key, err);
}
