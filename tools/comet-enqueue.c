/* comet-enqueue: build, seal, sign and publish jobs exactly as the WHMCS module does. */
#include <getopt.h>
#include <json-c/json.h>
#include <sodium.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bus.h"
#include "config.h"
#include "crypto.h"
#include "job.h"
#include "jobmsg.h"
#include "log.h"

#define LINE_MAX_BYTES (1 << 20)
#define CONFIRM_WINDOW 256      /* unconfirmed publishes in a batch */

/* ---- job table: one entry per published job -------------------------------- */

struct tracked {
    char job_id[UUID_STR_LEN];
    enum job_action action;
    long long service_id;
    long long published_ms;     /* when its confirm arrived (hand-off done) */
    long long sent_ms;          /* when it was handed to the socket */
    uint64_t seq;               /* confirm sequence */
    long long latency_ms;       /* publish -> terminal result; -1 until then */
    enum result_status status;
    bool done;
    bool confirmed;
};

struct table {
    struct tracked *v;
    size_t n, cap;
    size_t *index;              /* open addressing over v, keyed by job_id */
    size_t icap;
};

static unsigned long hash_str(const char *s)
{
    unsigned long h = 5381;
    while (*s)
        h = h * 33 + (unsigned char)*s++;
    return h;
}

static int table_reindex(struct table *t, size_t icap)
{
    size_t *ix = malloc(icap * sizeof(*ix));
    if (!ix)
        return -1;
    for (size_t i = 0; i < icap; i++)
        ix[i] = SIZE_MAX;
    for (size_t i = 0; i < t->n; i++) {
        size_t h = hash_str(t->v[i].job_id) & (icap - 1);
        while (ix[h] != SIZE_MAX)
            h = (h + 1) & (icap - 1);
        ix[h] = i;
    }
    free(t->index);
    t->index = ix;
    t->icap = icap;
    return 0;
}

static struct tracked *table_add(struct table *t)
{
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 256;
        struct tracked *nv = realloc(t->v, cap * sizeof(*nv));
        if (!nv)
            return NULL;
        t->v = nv;
        t->cap = cap;
    }
    struct tracked *x = &t->v[t->n++];
    memset(x, 0, sizeof(*x));
    x->latency_ms = -1;
    return x;
}

/* Call once every job is added. */
static int table_seal(struct table *t)
{
    size_t icap = 16;
    while (icap < t->n * 2)
        icap *= 2;
    return table_reindex(t, icap);
}

static struct tracked *table_find(struct table *t, const char *job_id)
{
    if (!t->index)
        return NULL;
    size_t h = hash_str(job_id) & (t->icap - 1);
    while (t->index[h] != SIZE_MAX) {
        if (strcmp(t->v[t->index[h]].job_id, job_id) == 0)
            return &t->v[t->index[h]];
        h = (h + 1) & (t->icap - 1);
    }
    return NULL;
}

static void table_free(struct table *t)
{
    free(t->v);
    free(t->index);
}

/* ---- building a job ----------------------------------------------------------- */

/* Per-service chain state for a batch: seq and after, as WHMCS keeps them. */
struct chain {
    long long service_id;
    long long seq;
    char last[UUID_STR_LEN];
};

struct chains {
    struct chain *v;
    size_t n, cap;
};

static struct chain *chain_for(struct chains *c, long long service_id)
{
    for (size_t i = 0; i < c->n; i++)
        if (c->v[i].service_id == service_id)
            return &c->v[i];
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 64;
        struct chain *nv = realloc(c->v, cap * sizeof(*nv));
        if (!nv)
            return NULL;
        c->v = nv;
        c->cap = cap;
    }
    struct chain *x = &c->v[c->n++];
    memset(x, 0, sizeof(*x));
    x->service_id = service_id;
    return x;
}

/* Gives a batch job its place in its service's chain (seq, after), as the
 * WHMCS job table does, unless the spec sets seq itself. */
static int chain_job(json_object *spec, struct chains *chains, struct err *e)
{
    json_object *sid, *jid;
    if (jobmsg_defaults(spec) != 0)
        return err_set(e, ERR_INTERNAL, "out of memory");
    if (!chains || !json_object_object_get_ex(spec, "service_id", &sid) ||
        !json_object_is_type(sid, json_type_int))
        return 0;
    json_object *seq;
    if (json_object_object_get_ex(spec, "seq", &seq) && json_object_get_int64(seq) != 0)
        return 0;
    struct chain *c = chain_for(chains, json_object_get_int64(sid));
    if (!c)
        return err_set(e, ERR_INTERNAL, "out of memory");
    c->seq++;
    json_object_object_add(spec, "seq", json_object_new_int64(c->seq));
    json_object_object_add(spec, "after", c->last[0] ? json_object_new_string(c->last) : NULL);
    json_object_object_get_ex(spec, "job_id", &jid);
    snprintf(c->last, sizeof(c->last), "%.36s", json_object_get_string(jid));
    return 0;
}

/* ---- options -------------------------------------------------------------------- */

struct opts {
    const char *config;
    const char *batch;          /* file of JSON lines, "-" = stdin */
    bool stdin_job;
    bool wait;
    int timeout_s;
    bool quiet;
    const char *summary_json;
    const char *latencies_out;
    json_object *spec;          /* built from flags */
    const char *password_file;
};

static void usage(FILE *out)
{
    fprintf(out,
        "usage: comet-enqueue [-c FILE] --action A --service-id N --server-url URL [job flags] [--wait]\n"
        "       comet-enqueue [-c FILE] --stdin [--wait]          one JSON job on stdin\n"
        "       comet-enqueue [-c FILE] --batch FILE|- [--wait]   JSON lines, one job each\n"
        "job flags: --username U --custom-username --email E --firstname F --policy-group ID\n"
        "  --storage-provider ID --require-password-change --devices N --protected-gb N\n"
        "  --protected-tb N --vault-gb N --vault-tb N --seq N --after JOB_ID --job-id UUID\n"
        "  --password-file FILE (or env COMET_ENQUEUE_PASSWORD; never on the command line)\n"
        "  A JSON job is the v1 job without job_id/secret; a plaintext \"password\" member is sealed.\n"
        "--wait: wait for each job's terminal result; print it (single) or a summary (batch);\n"
        "  exit 1 unless every job succeeded. --timeout S (default 120), --quiet,\n"
        "  --summary-json FILE, --latencies FILE (job_id action status latency_ms per line)\n"
        "Prints each job_id on stdout. Exit codes: 0 ok, 1 job failed or timed out, 2 usage or\n"
        "invalid job, 3 broker unreachable or publish unconfirmed.\n");
}

static json_object *obj_child(json_object *o, const char *key)
{
    json_object *c;
    if (json_object_object_get_ex(o, key, &c) && json_object_is_type(c, json_type_object))
        return c;
    c = json_object_new_object();
    json_object_object_add(o, key, c);
    return c;
}

static int set_int_flag(json_object *o, const char *key, const char *val)
{
    char *end = NULL;
    long long v = strtoll(val, &end, 10);
    if (!end || *end || end == val || v < 0) {
        fprintf(stderr, "comet-enqueue: --%s needs a non-negative integer, got '%s'\n", key, val);
        return -1;
    }
    json_object_object_add(o, key, json_object_new_int64(v));
    return 0;
}

static int parse_opts(int argc, char **argv, struct opts *o)
{
    enum { O_ACTION = 256, O_SID, O_URL, O_USER, O_CUSTOM, O_EMAIL, O_FIRST, O_POLICY, O_PROVIDER,
           O_RPC, O_DEV, O_PGB, O_PTB, O_VGB, O_VTB, O_SEQ, O_AFTER, O_JOBID, O_PWFILE, O_STDIN,
           O_BATCH, O_WAIT, O_TIMEOUT, O_QUIET, O_SUMMARY, O_LAT };
    static const struct option lo[] = {
        { "config", required_argument, NULL, 'c' }, { "help", no_argument, NULL, 'h' },
        { "action", required_argument, NULL, O_ACTION }, { "service-id", required_argument, NULL, O_SID },
        { "server-url", required_argument, NULL, O_URL }, { "username", required_argument, NULL, O_USER },
        { "custom-username", no_argument, NULL, O_CUSTOM }, { "email", required_argument, NULL, O_EMAIL },
        { "firstname", required_argument, NULL, O_FIRST }, { "policy-group", required_argument, NULL, O_POLICY },
        { "storage-provider", required_argument, NULL, O_PROVIDER },
        { "require-password-change", no_argument, NULL, O_RPC }, { "devices", required_argument, NULL, O_DEV },
        { "protected-gb", required_argument, NULL, O_PGB }, { "protected-tb", required_argument, NULL, O_PTB },
        { "vault-gb", required_argument, NULL, O_VGB }, { "vault-tb", required_argument, NULL, O_VTB },
        { "seq", required_argument, NULL, O_SEQ }, { "after", required_argument, NULL, O_AFTER },
        { "job-id", required_argument, NULL, O_JOBID }, { "password-file", required_argument, NULL, O_PWFILE },
        { "stdin", no_argument, NULL, O_STDIN }, { "batch", required_argument, NULL, O_BATCH },
        { "wait", no_argument, NULL, O_WAIT }, { "timeout", required_argument, NULL, O_TIMEOUT },
        { "quiet", no_argument, NULL, O_QUIET }, { "summary-json", required_argument, NULL, O_SUMMARY },
        { "latencies", required_argument, NULL, O_LAT },
        { NULL, 0, NULL, 0 },
    };
    o->timeout_s = 120;
    o->spec = json_object_new_object();
    json_object *s = o->spec;
    int ch, rc = 0;
    while (rc == 0 && (ch = getopt_long(argc, argv, "c:h", lo, NULL)) != -1) {
        switch (ch) {
        case 'c': o->config = optarg; break;
        case 'h': usage(stdout); exit(0);
        case O_ACTION: json_object_object_add(s, "action", json_object_new_string(optarg)); break;
        case O_SID: rc = set_int_flag(s, "service_id", optarg); break;
        case O_URL: json_object_object_add(obj_child(s, "server"), "url", json_object_new_string(optarg)); break;
        case O_USER: json_object_object_add(obj_child(s, "account"), "username", json_object_new_string(optarg)); break;
        case O_CUSTOM: json_object_object_add(obj_child(s, "account"), "custom_username", json_object_new_boolean(1)); break;
        case O_EMAIL: json_object_object_add(obj_child(s, "client"), "email", json_object_new_string(optarg)); break;
        case O_FIRST: json_object_object_add(obj_child(s, "client"), "firstname", json_object_new_string(optarg)); break;
        case O_POLICY: json_object_object_add(obj_child(s, "product"), "policy_group", json_object_new_string(optarg)); break;
        case O_PROVIDER: json_object_object_add(obj_child(s, "product"), "storage_provider", json_object_new_string(optarg)); break;
        case O_RPC: json_object_object_add(obj_child(s, "product"), "require_password_change", json_object_new_boolean(1)); break;
        case O_DEV: rc = set_int_flag(obj_child(s, "quotas"), "number_of_devices", optarg); break;
        case O_PGB: rc = set_int_flag(obj_child(s, "quotas"), "protected_item_quota_gb", optarg); break;
        case O_PTB: rc = set_int_flag(obj_child(s, "quotas"), "protected_item_quota_tb", optarg); break;
        case O_VGB: rc = set_int_flag(obj_child(s, "quotas"), "storage_vault_quota_gb", optarg); break;
        case O_VTB: rc = set_int_flag(obj_child(s, "quotas"), "storage_vault_quota_tb", optarg); break;
        case O_SEQ: rc = set_int_flag(s, "seq", optarg); break;
        case O_AFTER: json_object_object_add(s, "after", json_object_new_string(optarg)); break;
        case O_JOBID: json_object_object_add(s, "job_id", json_object_new_string(optarg)); break;
        case O_PWFILE: o->password_file = optarg; break;
        case O_STDIN: o->stdin_job = true; break;
        case O_BATCH: o->batch = optarg; break;
        case O_WAIT: o->wait = true; break;
        case O_TIMEOUT: {
            char *end = NULL;
            long v = strtol(optarg, &end, 10);
            if (!end || *end || end == optarg || v <= 0 || v > 86400) {
                fprintf(stderr, "comet-enqueue: --timeout needs seconds between 1 and 86400, got '%s'\n",
                        optarg);
                rc = -1;
            } else {
                o->timeout_s = (int)v;
            }
            break;
        }
        case O_QUIET: o->quiet = true; break;
        case O_SUMMARY: o->summary_json = optarg; break;
        case O_LAT: o->latencies_out = optarg; break;
        default: usage(stderr); rc = -1;
        }
    }
    return rc;
}

/* Flag jobs get the product/account/client objects the decoder requires. */
static int finish_flag_spec(struct opts *o, struct err *e)
{
    json_object *s = o->spec;
    obj_child(s, "account");
    obj_child(s, "client");
    json_object *acc = obj_child(s, "account");
    if (!json_object_object_get_ex(acc, "username", NULL))
        json_object_object_add(acc, "username", json_object_new_string(""));
    if (!json_object_object_get_ex(acc, "custom_username", NULL))
        json_object_object_add(acc, "custom_username", json_object_new_boolean(0));
    json_object *prod = obj_child(s, "product");
    if (!json_object_object_get_ex(prod, "policy_group", NULL))
        json_object_object_add(prod, "policy_group", json_object_new_string(""));
    if (!json_object_object_get_ex(prod, "storage_provider", NULL))
        json_object_object_add(prod, "storage_provider", json_object_new_string(""));
    if (!json_object_object_get_ex(prod, "require_password_change", NULL))
        json_object_object_add(prod, "require_password_change", json_object_new_boolean(0));
    obj_child(s, "quotas");
    const char *pw = getenv("COMET_ENQUEUE_PASSWORD");
    char *filepw = NULL;
    if (o->password_file) {
        filepw = secret_file_read(o->password_file, e);
        if (!filepw)
            return -1;
        pw = filepw;
    }
    if (pw)
        json_object_object_add(s, "password", json_object_new_string(pw));
    if (filepw) {
        sodium_memzero(filepw, strlen(filepw));
        free(filepw);
    }
    return 0;
}

/* ---- results --------------------------------------------------------------------- */

struct run {
    struct opts *o;
    struct bus *bus;
    struct table t;
    size_t published, confirmed, done, succeeded, failed;
    long long start_ms;
    long long last_progress_ms;
    bool tty;
};

static void on_result(struct run *r, const struct bus_delivery *d)
{
    struct result res;
    struct err e;
    if (result_decode(d->body, d->len, &res, &e) != 0)
        return;
    struct tracked *x = table_find(&r->t, res.job_id);
    if (!x || x->done || res.status == RESULT_RETRYING)
        return;
    x->done = true;
    x->status = res.status;
    x->latency_ms = now_ms() - x->sent_ms;
    r->done++;
    if (res.status == RESULT_SUCCEEDED)
        r->succeeded++;
    else
        r->failed++;
    if (r->t.n == 1 && !r->o->quiet)
        printf("%.*s\n", (int)d->len, d->body);
}

static void progress(struct run *r, bool final)
{
    if (r->o->quiet || r->t.n <= 1)
        return;
    long long now = now_ms();
    if (!final && now - r->last_progress_ms < (r->tty ? 200 : 2000))
        return;
    r->last_progress_ms = now;
    double secs = (now - r->start_ms) / 1000.0;
    fprintf(stderr, "%s  published %zu/%zu  done %zu (%zu ok, %zu failed)  %.0f jobs/s%s",
            r->tty ? "\r" : "", r->confirmed, r->t.n, r->done, r->succeeded, r->failed,
            secs > 0 ? r->done / secs : 0.0, r->tty && !final ? "   " : "\n");
    fflush(stderr);
}

static int cmp_ll(const void *a, const void *b)
{
    long long x = *(const long long *)a, y = *(const long long *)b;
    return (x > y) - (x < y);
}

static long long pct(const long long *v, size_t n, double p)
{
    if (n == 0)
        return 0;
    size_t i = (size_t)ceil(p * n) - 1;
    return v[i < n ? i : n - 1];
}

static void summary(struct run *r)
{
    long long *lat = malloc((r->t.n + 1) * sizeof(*lat));
    if (!lat)
        return;
    json_object *js = json_object_new_object();
    json_object *acts = json_object_new_object();
    if (!r->o->quiet)
        printf("%-16s %7s %9s %7s %9s %9s\n", "action", "count", "succeeded", "failed", "p50 ms", "p99 ms");
    for (int a = 0; a <= ACTION__COUNT; a++) {
        size_t count = 0, ok = 0, bad = 0, n = 0;
        for (size_t i = 0; i < r->t.n; i++) {
            struct tracked *x = &r->t.v[i];
            if (a < ACTION__COUNT && x->action != (enum job_action)a)
                continue;
            count++;
            if (x->done && x->status == RESULT_SUCCEEDED)
                ok++;
            else if (x->done)
                bad++;
            if (x->done)
                lat[n++] = x->latency_ms;
        }
        if (count == 0)
            continue;
        qsort(lat, n, sizeof(*lat), cmp_ll);
        const char *name = a < ACTION__COUNT ? job_action_name((enum job_action)a) : "all";
        if (!r->o->quiet)
            printf("%-16s %7zu %9zu %7zu %9lld %9lld\n", name, count, ok, bad, pct(lat, n, 0.5),
                   pct(lat, n, 0.99));
        json_object *row = json_object_new_object();
        json_object_object_add(row, "count", json_object_new_int64((long long)count));
        json_object_object_add(row, "succeeded", json_object_new_int64((long long)ok));
        json_object_object_add(row, "failed", json_object_new_int64((long long)bad));
        json_object_object_add(row, "p50_ms", json_object_new_int64(pct(lat, n, 0.5)));
        json_object_object_add(row, "p95_ms", json_object_new_int64(pct(lat, n, 0.95)));
        json_object_object_add(row, "p99_ms", json_object_new_int64(pct(lat, n, 0.99)));
        json_object_object_add(acts, name, row);
    }
    double secs = (now_ms() - r->start_ms) / 1000.0;
    json_object_object_add(js, "actions", acts);
    json_object_object_add(js, "seconds", json_object_new_double(secs));
    json_object_object_add(js, "jobs_per_second", json_object_new_double(secs > 0 ? r->done / secs : 0));
    if (!r->o->quiet)
        printf("%zu jobs in %.1f s: %.1f jobs/s\n", r->done, secs, secs > 0 ? r->done / secs : 0.0);
    if (r->o->summary_json) {
        FILE *f = fopen(r->o->summary_json, "w");
        if (!f)
            fprintf(stderr, "comet-enqueue: cannot write %s\n", r->o->summary_json);
        if (f) {
            fprintf(f, "%s\n", json_object_to_json_string_ext(js, JSON_C_TO_STRING_PRETTY));
            fclose(f);
        }
    }
    if (r->o->latencies_out) {
        FILE *f = fopen(r->o->latencies_out, "w");
        if (!f)
            fprintf(stderr, "comet-enqueue: cannot write %s\n", r->o->latencies_out);
        if (f) {
            for (size_t i = 0; i < r->t.n; i++) {
                struct tracked *x = &r->t.v[i];
                fprintf(f, "%s %s %s %lld %lld\n", x->job_id, job_action_name(x->action),
                        x->done ? result_status_name(x->status) : "timeout", x->latency_ms,
                        x->published_ms - x->sent_ms);
            }
            fclose(f);
        }
    }
    json_object_put(js);
    free(lat);
}

/* ---- main flow ---------------------------------------------------------------------- */

static int load_jobs(struct opts *o, const struct key *key, struct bus_msg **msgs, struct table *t,
                     struct err *e)
{
    struct chains chains = { 0 };
    FILE *in = NULL;
    char *line = NULL;
    size_t cap = 0, n = 0, mcap = 0;
    int rc = -1;
    long lineno = 0;
    *msgs = NULL;
    if (o->batch || o->stdin_job) {
        in = (!o->batch || strcmp(o->batch, "-") == 0) ? stdin : fopen(o->batch, "r");
        if (!in) {
            err_set(e, ERR_BAD_FIELD, "cannot open %s", o->batch);
            goto out;
        }
    }
    for (;;) {
        json_object *spec = NULL;
        if (in) {
            ssize_t len = getline(&line, &cap, in);
            if (len < 0)
                break;
            lineno++;
            if (len > LINE_MAX_BYTES) {
                err_set(e, ERR_TOO_LARGE, "line %ld: over %d bytes", lineno, LINE_MAX_BYTES);
                goto out;
            }
            while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
                line[--len] = '\0';
            if (len == 0)
                continue;
            spec = json_tokener_parse(line);
            if (!spec || !json_object_is_type(spec, json_type_object)) {
                json_object_put(spec);
                err_set(e, ERR_BAD_JSON, "line %ld: not a JSON object", lineno);
                goto out;
            }
        } else {
            if (n > 0)
                break;
            spec = json_object_get(o->spec);
            if (finish_flag_spec(o, e) != 0) {
                json_object_put(spec);
                goto out;
            }
        }
        struct job job;
        if (n == mcap) {
            size_t nc = mcap ? mcap * 2 : 64;
            struct bus_msg *nm = realloc(*msgs, nc * sizeof(*nm));
            if (!nm) {
                json_object_put(spec);
                err_set(e, ERR_INTERNAL, "out of memory");
                goto out;
            }
            *msgs = nm;
            mcap = nc;
        }
        int brc = chain_job(spec, o->batch ? &chains : NULL, e);
        if (brc == 0)
            brc = jobmsg_build(spec, key, &job, &(*msgs)[n], e);
        json_object_put(spec);
        if (brc != 0) {
            if (in) {
                char why[sizeof(e->msg)];
                snprintf(why, sizeof(why), "%s", e->msg);
                err_set(e, e->code, "line %ld: %s", lineno, why);
            }
            goto out;
        }
        n++;
        struct tracked *x = table_add(t);
        if (!x) {
            err_set(e, ERR_INTERNAL, "out of memory");
            goto out;
        }
        snprintf(x->job_id, sizeof(x->job_id), "%s", job.job_id);
        x->action = job.action;
        x->service_id = job.service_id;
        if (!in)
            break;
    }
    if (n == 0) {
        err_set(e, ERR_BAD_FIELD, "no job given");
        goto out;
    }
    rc = table_seal(t) == 0 ? 0 : err_set(e, ERR_INTERNAL, "out of memory");
out:
    if (in && in != stdin)
        fclose(in);
    free(line);
    free(chains.v);
    if (rc != 0) {
        for (size_t i = 0; i < n; i++)
            bus_msg_clear(&(*msgs)[i]);
        free(*msgs);
        *msgs = NULL;
        return -1;
    }
    return (int)n;
}

static struct tracked *by_seq(struct table *t, uint64_t seq)
{
    /* Publishes are numbered in order: job i has seq i + 1 on a fresh channel. */
    if (seq == 0 || seq > t->n)
        return NULL;
    return &t->v[seq - 1];
}

static void on_confirm(struct run *r, uint64_t seq, bool multiple)
{
    uint64_t lo = multiple ? 1 : seq;
    for (uint64_t s = lo; s <= seq; s++) {
        struct tracked *x = by_seq(&r->t, s);
        if (x && !x->confirmed) {
            x->confirmed = true;
            x->published_ms = now_ms();
            r->confirmed++;
        }
    }
}

int main(int argc, char **argv)
{
    struct opts o;
    memset(&o, 0, sizeof(o));
    if (parse_opts(argc, argv, &o) != 0) {
        json_object_put(o.spec);
        return 2;
    }
    log_init("comet-enqueue", LOGL_WARN, LOG_FORMAT_TEXT);
    static struct config cfg;
    struct err e;
    err_clear(&e);
    struct bus_msg *msgs = NULL;
    struct run r;
    memset(&r, 0, sizeof(r));
    r.o = &o;
    r.tty = isatty(STDERR_FILENO);
    int rc = 2, n = 0;
    if (crypto_init() != 0 || config_load(&cfg, o.config, &e) != 0) {
        fprintf(stderr, "comet-enqueue: %s\n", e.msg[0] ? e.msg : "libsodium failed");
        goto out;
    }
    const struct key *key = keyring_active(&cfg.keys);
    if (!key) {
        fprintf(stderr, "comet-enqueue: no signing key configured (keys in the config, or COMET_KEYS)\n");
        goto out;
    }
    n = load_jobs(&o, key, &msgs, &r.t, &e);
    if (n < 0) {
        fprintf(stderr, "comet-enqueue: invalid job: %s\n", e.msg);
        goto out;
    }
    rc = 3;
    r.bus = bus_connect(cfg.amqp_url, 0, &e);
    if (!r.bus) {
        fprintf(stderr, "comet-enqueue: %s\n", e.msg);
        goto out;
    }
    char resq[128] = "";
    /* Bind the result listener before publishing so no result is missed. */
    if (bus_declare_topology(r.bus, NULL, 0, &e) != 0 ||
        (o.wait && (bus_bind_temp_queue(r.bus, BUS_EX_RESULTS, "#", resq, &e) != 0 ||
                    bus_consume(r.bus, resq, &e) != 0))) {
        fprintf(stderr, "comet-enqueue: %s\n", e.msg);
        goto out;
    }
    r.start_ms = now_ms();
    long long deadline = r.start_ms + (long long)o.timeout_s * 1000;
    size_t next = 0;
    bool returned = false;
    while (r.confirmed < (size_t)n || (o.wait && r.done < (size_t)n)) {
        while (next < (size_t)n && next - r.confirmed < CONFIRM_WINDOW) {
            uint64_t seq;
            r.t.v[next].sent_ms = now_ms();
            if (bus_publish(r.bus, &msgs[next], &seq, &e) != 0) {
                fprintf(stderr, "comet-enqueue: %s\n", e.msg);
                goto out;
            }
            r.t.v[next].seq = seq;
            if (!o.quiet)
                printf("%s\n", r.t.v[next].job_id);
            next++;
            r.published = next;
        }
        fflush(stdout);
        if (now_ms() > deadline) {
            if (r.confirmed < (size_t)n) {
                fprintf(stderr, "comet-enqueue: %zu of %d publishes not confirmed within %d s\n",
                        (size_t)n - r.confirmed, n, o.timeout_s);
                goto out;
            }
            fprintf(stderr, "\ncomet-enqueue: %zu of %d jobs without a result after %d s\n",
                    (size_t)n - r.done, n, o.timeout_s);
            rc = 1;
            break;
        }
        struct bus_event ev;
        if (bus_wait(r.bus, 200, -1, &ev, &e) != 0) {
            fprintf(stderr, "comet-enqueue: %s\n", e.msg);
            goto out;
        }
        switch (ev.kind) {
        case BUS_EV_ACK: on_confirm(&r, ev.seq, ev.multiple); break;
        case BUS_EV_NACK:
            fprintf(stderr, "comet-enqueue: the broker refused a publish\n");
            goto out;
        case BUS_EV_RETURN: returned = true; break;
        case BUS_EV_DELIVERY:
            on_result(&r, &ev.delivery);
            if (bus_ack(r.bus, ev.delivery.tag, &e) != 0) {
                bus_delivery_clear(&ev.delivery);
                fprintf(stderr, "comet-enqueue: %s\n", e.msg);
                goto out;
            }
            bus_delivery_clear(&ev.delivery);
            break;
        default: break;
        }
        if (returned) {
            fprintf(stderr, "comet-enqueue: a job was unroutable: no queue is bound to %s\n", BUS_EX_JOBS);
            goto out;
        }
        progress(&r, false);
    }
    progress(&r, true);
    if (rc != 1)
        rc = (!o.wait || r.failed == 0) ? 0 : 1;
    if (o.wait && r.t.n > 1)
        summary(&r);
out:
    for (int i = 0; i < n; i++)
        bus_msg_clear(&msgs[i]);
    free(msgs);
    bus_free(r.bus);
    table_free(&r.t);
    json_object_put(o.spec);
    config_clear(&cfg);
    return rc;
}
