/* Fault injection settings of the fake Comet Server: latency, error rate,
 * kind of failure, and which endpoints it hits. */
#ifndef FAKE_FAULT_H
#define FAKE_FAULT_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* How an injected fault answers (or does not answer) an admin API call. */
enum fault_kind {
    FAULT_HTTP500 = 0,        /* HTTP 500 with an HTML body */
    FAULT_STATUS500,          /* HTTP 200, body {"Status":500,...} */
    FAULT_RESET,              /* drop the connection without an answer */
    FAULT_HANG,               /* sleep hang_ms, then drop the connection */
    FAULT_FAIL_AFTER_COMMIT,  /* apply the call to state, then drop */
    FAULT_EMPTY,              /* HTTP 200 with an empty body */
    FAULT_NOTJSON,            /* HTTP 200 with an HTML fragment */
    FAULT_MIXED,              /* one of the first five, chosen per fault */
};

/* The live fault settings; a plain value so requests can copy a snapshot. */
struct fault_config {
    long latency_ms;          /* fixed delay before every admin call */
    long jitter_ms;           /* plus a uniform extra delay in 0..jitter_ms */
    long hang_ms;             /* how long FAULT_HANG holds the connection */
    double error_rate;        /* probability 0..1 that a call faults */
    enum fault_kind kind;     /* what a fault does */
    uint32_t endpoint_mask;   /* bit i = handler table row i; 0 = every endpoint */
};

/* Default hang: long enough to trip any sane client timeout (ours: 30 s). */
#define FAULT_DEFAULT_HANG_MS 30000L
/* Upper bound for delays, so a typo cannot park a thread for hours. */
#define FAULT_MAX_DELAY_MS 3600000L

void fault_config_init(struct fault_config *cfg);

/* "http500" etc. -> kind; returns -1 when unknown. */
int fault_kind_parse(const char *s, enum fault_kind *out);
const char *fault_kind_name(enum fault_kind kind);

/* Comma-separated endpoint names -> mask; "" -> 0 (all). Returns -1 and
 * writes the reason to err when a name is unknown. */
int fault_endpoints_parse(const char *csv, uint32_t *mask, char *err, size_t errlen);

/* Applies the keys present in obj (latency_ms, jitter_ms, error_rate,
 * error_kind, error_endpoints, hang_ms) to cfg. All or nothing: on error
 * cfg is untouched, the reason is in err, and -1 is returned. */
int fault_config_update(struct fault_config *cfg, json_object *obj, char *err, size_t errlen);

/* The config as a new JSON object (caller puts it); NULL on out of memory. */
json_object *fault_config_to_json(const struct fault_config *cfg);

/* Delay to apply before a call: latency plus random jitter, in ms. */
long fault_delay_ms(const struct fault_config *cfg);

/* Whether this call to endpoint row idx faults (random draw). */
bool fault_fires(const struct fault_config *cfg, int idx);

/* The concrete kind for one fault: resolves FAULT_MIXED at random. */
enum fault_kind fault_resolve(enum fault_kind kind);

#endif
