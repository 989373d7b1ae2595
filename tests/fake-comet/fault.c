/* Fault injection settings: parsing, JSON form and the per-call random draws. */
#include "fault.h"
#include "jsonobj.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "handlers.h"
#include "state.h"

static const char *const fault_kind_names[] = {
    [FAULT_HTTP500] = "http500",
    [FAULT_STATUS500] = "status500",
    [FAULT_RESET] = "reset",
    [FAULT_HANG] = "hang",
    [FAULT_FAIL_AFTER_COMMIT] = "fail_after_commit",
    [FAULT_EMPTY] = "empty",
    [FAULT_NOTJSON] = "notjson",
    [FAULT_MIXED] = "mixed",
};
#define FAULT_KIND_COUNT (sizeof(fault_kind_names) / sizeof(fault_kind_names[0]))

/* What "mixed" draws from: the faults a client must survive by retrying. */
static const enum fault_kind fault_mixed_pool[] = {
    FAULT_HTTP500, FAULT_STATUS500, FAULT_RESET, FAULT_HANG, FAULT_FAIL_AFTER_COMMIT,
};

void fault_config_init(struct fault_config *cfg)
{
    cfg->latency_ms = 0;
    cfg->jitter_ms = 0;
    cfg->hang_ms = FAULT_DEFAULT_HANG_MS;
    cfg->error_rate = 0.0;
    cfg->kind = FAULT_HTTP500;
    cfg->endpoint_mask = 0;
}

int fault_kind_parse(const char *s, enum fault_kind *out)
{
    for (size_t i = 0; i < FAULT_KIND_COUNT; i++) {
        if (strcmp(s, fault_kind_names[i]) == 0) {
            *out = (enum fault_kind)i;
            return 0;
        }
    }
    return -1;
}

const char *fault_kind_name(enum fault_kind kind)
{
    if ((size_t)kind >= FAULT_KIND_COUNT)
        return "unknown";
    return fault_kind_names[kind];
}

static int fault_endpoint_add(const char *name, size_t len, uint32_t *mask,
                              char *err, size_t errlen)
{
    char buf[128];
    if (len == 0)
        return 0;
    if (len >= sizeof(buf)) {
        snprintf(err, errlen, "endpoint name too long");
        return -1;
    }
    memcpy(buf, name, len);
    buf[len] = '\0';
    int idx = handlers_find(buf);
    if (idx < 0) {
        snprintf(err, errlen, "unknown endpoint '%s'", buf);
        return -1;
    }
    *mask |= UINT32_C(1) << idx;
    return 0;
}

int fault_endpoints_parse(const char *csv, uint32_t *mask, char *err, size_t errlen)
{
    uint32_t m = 0;
    const char *p = csv;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (fault_endpoint_add(p, len, &m, err, errlen) != 0)
            return -1;
        if (comma == NULL)
            break;
        p = comma + 1;
    }
    *mask = m;
    return 0;
}

/* Reads an integer delay in 0..FAULT_MAX_DELAY_MS from key, when present. */
static int fault_json_delay(json_object *obj, const char *key, long *out,
                            char *err, size_t errlen)
{
    json_object *v;
    if (!json_object_object_get_ex(obj, key, &v))
        return 0;
    if (!json_object_is_type(v, json_type_int)) {
        snprintf(err, errlen, "%s must be an integer", key);
        return -1;
    }
    errno = 0;
    int64_t n = json_object_get_int64(v);
    if (errno != 0 || n < 0 || n > FAULT_MAX_DELAY_MS) {
        snprintf(err, errlen, "%s out of range 0..%ld", key, FAULT_MAX_DELAY_MS);
        return -1;
    }
    *out = (long)n;
    return 0;
}

int fault_config_update(struct fault_config *cfg, json_object *obj, char *err, size_t errlen)
{
    /* Work on a copy and swap at the end so a bad key changes nothing. */
    struct fault_config next = *cfg;
    json_object *v;

    if (!json_object_is_type(obj, json_type_object)) {
        snprintf(err, errlen, "config must be a JSON object");
        return -1;
    }
    if (fault_json_delay(obj, "latency_ms", &next.latency_ms, err, errlen) != 0 ||
        fault_json_delay(obj, "jitter_ms", &next.jitter_ms, err, errlen) != 0 ||
        fault_json_delay(obj, "hang_ms", &next.hang_ms, err, errlen) != 0)
        return -1;
    if (json_object_object_get_ex(obj, "error_rate", &v)) {
        if (!json_object_is_type(v, json_type_double) && !json_object_is_type(v, json_type_int)) {
            snprintf(err, errlen, "error_rate must be a number");
            return -1;
        }
        double r = json_object_get_double(v);
        if (!(r >= 0.0 && r <= 1.0)) {
            snprintf(err, errlen, "error_rate out of range 0..1");
            return -1;
        }
        next.error_rate = r;
    }
    if (json_object_object_get_ex(obj, "error_kind", &v)) {
        if (!json_object_is_type(v, json_type_string) ||
            fault_kind_parse(json_object_get_string(v), &next.kind) != 0) {
            snprintf(err, errlen, "error_kind must be one of http500, status500, reset, "
                                  "hang, fail_after_commit, empty, notjson, mixed");
            return -1;
        }
    }
    if (json_object_object_get_ex(obj, "error_endpoints", &v)) {
        uint32_t mask = 0;
        if (json_object_is_type(v, json_type_null)) {
            v = NULL; /* null clears the restriction, like [] */
        } else if (!json_object_is_type(v, json_type_array)) {
            snprintf(err, errlen, "error_endpoints must be an array of endpoint names");
            return -1;
        }
        size_t n = v ? json_object_array_length(v) : 0;
        for (size_t i = 0; i < n; i++) {
            json_object *name = json_object_array_get_idx(v, i);
            if (!json_object_is_type(name, json_type_string)) {
                snprintf(err, errlen, "error_endpoints must be an array of endpoint names");
                return -1;
            }
            const char *s = json_object_get_string(name);
            if (fault_endpoint_add(s, strlen(s), &mask, err, errlen) != 0)
                return -1;
        }
        next.endpoint_mask = mask;
    }
    *cfg = next;
    return 0;
}

json_object *fault_config_to_json(const struct fault_config *cfg)
{
    json_object *obj = json_object_new_object();
    json_object *eps = json_object_new_array();
    if (obj == NULL || eps == NULL)
        goto fail;
    for (size_t i = 0; i < handlers_count(); i++) {
        if (!(cfg->endpoint_mask & (UINT32_C(1) << i)))
            continue;
        json_object *s = json_object_new_string(handlers_name((int)i));
        if (s == NULL || json_object_array_add(eps, s) != 0) {
            json_object_put(s);
            goto fail;
        }
    }
    if (jsonobj_put(obj, "latency_ms", json_object_new_int64(cfg->latency_ms)) != 0 ||
        jsonobj_put(obj, "jitter_ms", json_object_new_int64(cfg->jitter_ms)) != 0 ||
        jsonobj_put(obj, "error_rate", json_object_new_double(cfg->error_rate)) != 0 ||
        jsonobj_put(obj, "error_kind", json_object_new_string(fault_kind_name(cfg->kind))) != 0 ||
        jsonobj_put(obj, "hang_ms", json_object_new_int64(cfg->hang_ms)) != 0)
        goto fail;
    json_object *tmp = eps;
    eps = NULL; /* fault_json_put owns it from here, even on failure */
    if (jsonobj_put(obj, "error_endpoints", tmp) != 0)
        goto fail;
    return obj;
fail:
    json_object_put(eps);
    json_object_put(obj);
    return NULL;
}

long fault_delay_ms(const struct fault_config *cfg)
{
    long delay = cfg->latency_ms;
    if (cfg->jitter_ms > 0)
        delay += (long)(state_random_unit() * (double)(cfg->jitter_ms + 1));
    return delay;
}

bool fault_fires(const struct fault_config *cfg, int idx)
{
    if (cfg->error_rate <= 0.0)
        return false;
    if (cfg->endpoint_mask != 0 && !(cfg->endpoint_mask & (UINT32_C(1) << idx)))
        return false;
    return state_random_unit() < cfg->error_rate;
}

enum fault_kind fault_resolve(enum fault_kind kind)
{
    if (kind != FAULT_MIXED)
        return kind;
    size_t n = sizeof(fault_mixed_pool) / sizeof(fault_mixed_pool[0]);
    size_t i = (size_t)(state_random_unit() * (double)n);
    if (i >= n)
        i = n - 1;
    return fault_mixed_pool[i];
}
