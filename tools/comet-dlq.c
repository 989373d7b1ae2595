/* comet-dlq: list, show, replay, purge and export the dead-letter queue without losing a message. */
#include <ctype.h>
#include <getopt.h>
#include <json-c/json.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "bus.h"
#include "config.h"
#include "daemon.h"
#include "job.h"
#include "log.h"
#include "store.h"

/* Exit codes: a script tells "nothing to do" from "failed" from "typo". */
enum dlq_exit {
    DLQ_EXIT_OK = 0,
    DLQ_EXIT_FAILED = 1,    /* some operation failed: publish unconfirmed, id not found */
    DLQ_EXIT_USAGE = 2,
    DLQ_EXIT_BROKER = 3,    /* cannot connect to or set up the broker */
};

enum dlq_cmd { CMD_NONE = 0, CMD_LIST, CMD_SHOW, CMD_REPLAY, CMD_PURGE, CMD_EXPORT };

#define MSG_COL_WIDTH 48        /* error message column; longer ones end in "..." */
#define PROGRESS_MIN 100        /* scans this long get a progress display */
#define PROGRESS_TTY_MS 100     /* redraw interval of the bar */
#define PROGRESS_LINE_MS 2000   /* interval of plain lines when stderr is not a tty */
#define PROGRESS_BAR_WIDTH 30
#define UNKNOWN_AGE (-1LL)
/* A quorum queue's message count lags returns and new arrivals, so a scan
 * reads until the queue is empty, bounded by this slack over the count so a
 * storm of new dead letters cannot keep it going forever. */
#define SCAN_SLACK_MIN 1000
#define REQUEUE_WAIT_MS 15000   /* bound on waiting for kept messages to be ready again */
#define REQUEUE_POLL_US 20000
#define BUS_H_REPLAYED_AT "x-comet-replayed-at" /* set on every replayed copy */

/* Set by SIGINT/SIGTERM: the scan stops after the current message; the
 * rest is requeued. */
static volatile sig_atomic_t interrupted;

/* ---- options ---------------------------------------------------------------- */

struct filter {
    const char *action;         /* NULL = any */
    long long service_id;       /* 0 = any */
    const char *code;           /* NULL = any */
    long long older_ms;         /* age >= this; -1 = no bound */
    long long newer_ms;         /* age < this; -1 = no bound */
    char **ids;                 /* job ids named on the command line (argv, not owned) */
    size_t nids;
    bool *seen;                 /* per id: matched at least once (owned) */
};

struct opts {
    const char *config;
    enum dlq_cmd cmd;
    struct filter f;
    bool json;
    bool all;
    bool dry_run;
    bool force;
    bool yes;
};

static void usage(FILE *out)
{
    fprintf(out,
        "usage: comet-dlq [-c FILE] list   [filters] [--json]\n"
        "       comet-dlq [-c FILE] show   JOB_ID\n"
        "       comet-dlq [-c FILE] replay JOB_ID... | --all | [filters]  [--dry-run] [--force]\n"
        "       comet-dlq [-c FILE] purge  JOB_ID... | --all | [filters]  [--yes]\n"
        "       comet-dlq [-c FILE] export [filters]\n"
        "filters: --action A  --service N  --code C  --older-than DUR  --newer-than DUR\n"
        "  (DUR: 30s, 10m, 2h, 1d; age counts from the last failure). Job ids filter too.\n"
        "list: job_id, service, action, attempts, error code, message, age; --json: a JSON array.\n"
        "show: properties, headers and the body as pretty JSON; the sealed secret stays sealed.\n"
        "replay: republishes each message to exchange %s (routing key = action) with its\n"
        "  original body and signature, attempt counter reset, header x-comet-replayed-at;\n"
        "  removed from the DLQ only after the broker confirmed the copy. --force adds\n"
        "  x-comet-force=1 (run even if superseded). --dry-run only lists.\n"
        "purge: removes the matching messages; asks on a terminal unless --yes, refuses\n"
        "  without a terminal and without --yes.\n"
        "export: one JSON line per message: properties, headers, exact body as a string.\n"
        "Broker URL from the config (amqp.url) or COMET_AMQP_URL.\n"
        "Exit codes: 0 ok, 1 an operation failed, 2 usage, 3 broker unreachable.\n",
        BUS_EX_JOBS);
}

/* "30s", "10m", "2h", "1d" (a bare number is seconds) -> milliseconds. */
static int parse_duration_ms(const char *s, long long *out)
{
    char *end = NULL;
    long long v = strtoll(s, &end, 10);
    if (end == s || v < 0)
        return -1;
    long long unit;
    if (*end == '\0' || strcmp(end, "s") == 0)
        unit = 1000;
    else if (strcmp(end, "m") == 0)
        unit = 60 * 1000LL;
    else if (strcmp(end, "h") == 0)
        unit = 3600 * 1000LL;
    else if (strcmp(end, "d") == 0)
        unit = 86400 * 1000LL;
    else
        return -1;
    if (v > (long long)(365 * 100) * 86400 * 1000LL / unit) /* a century is plenty */
        return -1;
    *out = v * unit;
    return 0;
}

static enum dlq_cmd parse_cmd(const char *s)
{
    static const struct { const char *name; enum dlq_cmd cmd; } cmds[] = {
        { "list", CMD_LIST }, { "show", CMD_SHOW }, { "replay", CMD_REPLAY },
        { "purge", CMD_PURGE }, { "export", CMD_EXPORT },
    };
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
        if (strcmp(s, cmds[i].name) == 0)
            return cmds[i].cmd;
    return CMD_NONE;
}

static int usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "comet-dlq: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, " (comet-dlq --help)\n");
    return -1;
}

/* Fills o from argv; -1 after printing a usage error. Options may come
 * before or after the command (getopt permutes). */
static int parse_opts(int argc, char **argv, struct opts *o)
{
    enum { O_ACTION = 256, O_SERVICE, O_CODE, O_OLDER, O_NEWER, O_JSON, O_ALL, O_DRY, O_FORCE,
           O_YES };
    static const struct option lo[] = {
        { "config", required_argument, NULL, 'c' }, { "help", no_argument, NULL, 'h' },
        { "action", required_argument, NULL, O_ACTION },
        { "service", required_argument, NULL, O_SERVICE },
        { "code", required_argument, NULL, O_CODE },
        { "older-than", required_argument, NULL, O_OLDER },
        { "newer-than", required_argument, NULL, O_NEWER },
        { "json", no_argument, NULL, O_JSON }, { "all", no_argument, NULL, O_ALL },
        { "dry-run", no_argument, NULL, O_DRY }, { "force", no_argument, NULL, O_FORCE },
        { "yes", no_argument, NULL, O_YES },
        { NULL, 0, NULL, 0 },
    };
    o->f.older_ms = -1;
    o->f.newer_ms = -1;
    opterr = 0; /* our own one-line messages */
    int ch;
    while ((ch = getopt_long(argc, argv, "c:hy", lo, NULL)) != -1) {
        char *end = NULL;
        switch (ch) {
        case 'c': o->config = optarg; break;
        case 'h': usage(stdout); exit(DLQ_EXIT_OK);
        case O_ACTION: o->f.action = optarg; break;
        case O_SERVICE:
            o->f.service_id = strtoll(optarg, &end, 10);
            if (end == optarg || *end || o->f.service_id <= 0)
                return usage_error("--service needs a positive integer, got '%s'", optarg);
            break;
        case O_CODE: o->f.code = optarg; break;
        case O_OLDER:
            if (parse_duration_ms(optarg, &o->f.older_ms) != 0)
                return usage_error("--older-than needs a duration like 30s, 10m, 2h, 1d, got '%s'",
                                   optarg);
            break;
        case O_NEWER:
            if (parse_duration_ms(optarg, &o->f.newer_ms) != 0)
                return usage_error("--newer-than needs a duration like 30s, 10m, 2h, 1d, got '%s'",
                                   optarg);
            break;
        case O_JSON: o->json = true; break;
        case O_ALL: o->all = true; break;
        case O_DRY: o->dry_run = true; break;
        case O_FORCE: o->force = true; break;
        case 'y':
        case O_YES: o->yes = true; break;
        default:
            return usage_error("unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (optind >= argc)
        return usage_error("%s", "no command given (list, show, replay, purge, export)");
    o->cmd = parse_cmd(argv[optind]);
    if (o->cmd == CMD_NONE)
        return usage_error("unknown command '%s'", argv[optind]);
    o->f.ids = &argv[optind + 1];
    o->f.nids = (size_t)(argc - optind - 1);
    const struct filter *f = &o->f;
    bool by_field = f->action || f->service_id || f->code || f->older_ms >= 0 || f->newer_ms >= 0;
    bool filtered = by_field || f->nids > 0;
    if (o->cmd == CMD_SHOW && (f->nids != 1 || by_field))
        return usage_error("%s", "show takes exactly one JOB_ID and no filter");
    /* Removing everything must be asked for by name, never by omission. */
    if ((o->cmd == CMD_REPLAY || o->cmd == CMD_PURGE) && !filtered && !o->all)
        return usage_error("%s needs job ids, filters or --all",
                           o->cmd == CMD_REPLAY ? "replay" : "purge");
    if ((o->cmd == CMD_REPLAY || o->cmd == CMD_PURGE) && filtered && o->all)
        return usage_error("%s", "--all cannot be combined with job ids or filters");
    if (o->all && o->cmd != CMD_REPLAY && o->cmd != CMD_PURGE)
        return usage_error("%s", "--all is for replay and purge");
    if (o->json && o->cmd != CMD_LIST && !(o->cmd == CMD_REPLAY && o->dry_run))
        return usage_error("%s", "--json is for list (and replay --dry-run)");
    if ((o->dry_run || o->force) && o->cmd != CMD_REPLAY)
        return usage_error("%s", "--dry-run and --force are for replay");
    if (o->yes && o->cmd != CMD_PURGE)
        return usage_error("%s", "--yes is for purge");
    if (f->nids > 0) {
        o->f.seen = calloc(f->nids, sizeof(*o->f.seen));
        if (!o->f.seen) {
            fprintf(stderr, "comet-dlq: out of memory\n");
            return -1;
        }
    }
    return 0;
}

/* ---- reading a dead message ---------------------------------------------------- */

/* What the tool shows and filters on, read from one dead message. Strings
 * point into the delivery or into this struct. */
struct dead {
    char job_id[UUID_STR_LEN + 27];  /* the body's, else message_id (64) */
    char action[32];            /* body action, else type, else routing key */
    bool action_known;          /* action names one of the six: it can be replayed */
    long long service_id;       /* 0 = unknown */
    long long attempts;
    const char *code;           /* our error code, else the broker's reason, else "" */
    const char *message;        /* "" when none */
    long long failed_ms;        /* unix ms of the dead-lettering; 0 = unknown */
    long long age_ms;           /* UNKNOWN_AGE when failed_ms is */
    long long replayed_ms;      /* x-comet-replayed-at, 0 = never replayed */
};

/* RFC 3339 UTC as the worker writes it ("2026-12-04T10:00:00.123Z") -> unix ms. */
static int parse_time_ms(const char *s, long long *out)
{
    int y, mo, d, h, mi, sec, n = 0;
    if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &sec, &n) != 6 || n != 19)
        return -1;
    const char *p = s + n;
    long long ms = 0;
    if (*p == '.') {
        int digits = 0;
        for (p++; isdigit((unsigned char)*p); p++, digits++)
            if (digits < 3)
                ms = ms * 10 + (*p - '0');
        for (; digits < 3; digits++)
            ms *= 10;
    }
    if (strcmp(p, "Z") != 0 && strcmp(p, "+00:00") != 0)
        return -1;
    struct tm tm = { .tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d,
                     .tm_hour = h, .tm_min = mi, .tm_sec = sec };
    time_t t = timegm(&tm);
    if (t == (time_t)-1)
        return -1;
    *out = (long long)t * 1000 + ms;
    return 0;
}

static void dead_read(const struct bus_delivery *d, long long now, struct dead *x)
{
    memset(x, 0, sizeof(*x));
    struct job job;
    struct err e;
    /* A failed decode still names the job when it can: invalid messages are
     * exactly what the DLQ holds. */
    (void)job_decode(d->body, d->len, &job, &e);
    snprintf(x->job_id, sizeof(x->job_id), "%s", job.job_id[0] ? job.job_id : d->message_id);
    enum job_action act;
    if (job.action < ACTION__COUNT) {
        snprintf(x->action, sizeof(x->action), "%s", job_action_name(job.action));
        x->action_known = true;
    } else if (job_action_parse(d->type, &act) == 0) {
        snprintf(x->action, sizeof(x->action), "%.31s", d->type);
        x->action_known = true;
    } else {
        snprintf(x->action, sizeof(x->action), "%.31s", d->type[0] ? d->type : d->routing_key);
    }
    x->service_id = job.service_id;
    /* Our own failure headers, or the broker's x-death for a message it
     * dead-lettered itself (delivery limit). */
    x->attempts = bus_delivery_int(d, BUS_H_ATTEMPT, d->death_count);
    const char *code = bus_delivery_str(d, BUS_H_ERR_CODE);
    x->code = code ? code : d->death_reason;
    const char *msg = bus_delivery_str(d, BUS_H_ERR_MSG);
    x->message = msg ? msg : "";
    const char *last = bus_delivery_str(d, BUS_H_LAST_FAIL);
    if (!last || parse_time_ms(last, &x->failed_ms) != 0)
        x->failed_ms = d->timestamp > 0 ? d->timestamp * 1000 : 0;
    x->age_ms = x->failed_ms > 0 ? (now > x->failed_ms ? now - x->failed_ms : 0) : UNKNOWN_AGE;
    const char *replayed = bus_delivery_str(d, BUS_H_REPLAYED_AT);
    if (!replayed || parse_time_ms(replayed, &x->replayed_ms) != 0)
        x->replayed_ms = 0;
}

/* Matches every filter; records which named ids were seen. */
static bool filter_match(struct filter *f, const struct dead *x)
{
    if (f->action && strcmp(f->action, x->action) != 0)
        return false;
    if (f->service_id && f->service_id != x->service_id)
        return false;
    if (f->code && strcmp(f->code, x->code) != 0)
        return false;
    /* An unknown age matches no age filter: purging "older than 1d" must not
     * take a message whose age nobody knows. */
    if (f->older_ms >= 0 && (x->age_ms == UNKNOWN_AGE || x->age_ms < f->older_ms))
        return false;
    if (f->newer_ms >= 0 && (x->age_ms == UNKNOWN_AGE || x->age_ms >= f->newer_ms))
        return false;
    if (f->nids == 0)
        return true;
    bool hit = false;
    for (size_t i = 0; i < f->nids; i++) {
        if (strcasecmp(f->ids[i], x->job_id) == 0) {
            f->seen[i] = true;
            hit = true;
        }
    }
    return hit;
}

/* ---- output ---------------------------------------------------------------------- */

static void format_age(long long age_ms, char out[24])
{
    long long s = age_ms / 1000;
    if (age_ms == UNKNOWN_AGE)
        snprintf(out, 24, "-");
    else if (s < 60)
        snprintf(out, 24, "%llds", s);
    else if (s < 3600)
        snprintf(out, 24, "%lldm", s / 60);
    else if (s < 86400)
        snprintf(out, 24, "%lldh", s / 3600);
    else
        snprintf(out, 24, "%lldd", s / 86400);
}

/* One table cell: control characters become spaces (a message must not
 * break the table), cut at width bytes on a UTF-8 boundary with "...". */
static void format_cell(const char *s, size_t width, char *out, size_t cap)
{
    size_t len = strlen(s), n = len;
    bool cut = len > width;
    if (cut) {
        n = width - 3;
        while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
            n--; /* not inside a multi-byte character */
    }
    if (n >= cap - 4)
        n = cap - 4;
    for (size_t i = 0; i < n; i++)
        out[i] = ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) ? ' ' : s[i];
    out[n] = '\0';
    if (cut)
        strcat(out, "...");
}

static void table_header(void)
{
    printf("%-36s %10s %-15s %8s %-22s %-*s %5s\n", "JOB_ID", "SERVICE", "ACTION", "ATTEMPTS",
           "CODE", MSG_COL_WIDTH, "MESSAGE", "AGE");
}

static void table_row(const struct dead *x)
{
    char msg[MSG_COL_WIDTH + 8], age[24], action[32], code[64], id[80];
    format_cell(x->message[0] ? x->message : "-", MSG_COL_WIDTH, msg, sizeof(msg));
    format_cell(x->action[0] ? x->action : "-", 15, action, sizeof(action));
    format_cell(x->code[0] ? x->code : "-", 22, code, sizeof(code));
    format_cell(x->job_id[0] ? x->job_id : "-", 64, id, sizeof(id));
    format_age(x->age_ms, age);
    printf("%-36s %10lld %-15s %8lld %-22s %-*s %5s\n", id, x->service_id, action, x->attempts,
           code, MSG_COL_WIDTH, msg, age);
}

/* json-c add helpers: a NULL value (failed allocation) is dropped. */
static void jadd(json_object *o, const char *k, json_object *v)
{
    if (v && json_object_object_add(o, k, v) != 0)
        json_object_put(v);
}

static void jadd_str(json_object *o, const char *k, const char *v)
{
    jadd(o, k, json_object_new_string(v));
}

static json_object *summary_json(const struct dead *x, const struct bus_delivery *d)
{
    json_object *o = json_object_new_object();
    if (!o)
        return NULL;
    jadd_str(o, "job_id", x->job_id);
    jadd(o, "service_id", json_object_new_int64(x->service_id));
    jadd_str(o, "action", x->action);
    jadd(o, "attempts", json_object_new_int64(x->attempts));
    const char *cls = bus_delivery_str(d, BUS_H_ERR_CLASS);
    jadd_str(o, "error_class", cls ? cls : "");
    jadd_str(o, "error_code", x->code);
    jadd_str(o, "error_message", x->message);
    const char *first = bus_delivery_str(d, BUS_H_FIRST_FAIL);
    const char *last = bus_delivery_str(d, BUS_H_LAST_FAIL);
    jadd_str(o, "first_failure", first ? first : "");
    jadd_str(o, "last_failure", last ? last : "");
    const char *worker = bus_delivery_str(d, BUS_H_WORKER);
    jadd_str(o, "worker", worker ? worker : "");
    if (x->age_ms == UNKNOWN_AGE)
        json_object_object_add(o, "age_seconds", NULL); /* JSON null: nobody knows */
    else
        jadd(o, "age_seconds", json_object_new_int64(x->age_ms / 1000));
    if (d->death_reason[0])
        jadd_str(o, "death_reason", d->death_reason);
    return o;
}

/* A plaintext password never leaves the tool, even from a malformed
 * message a buggy publisher sent: any "password" member is masked. */
static void redact_passwords(json_object *o)
{
    if (json_object_is_type(o, json_type_array)) {
        for (size_t i = 0; i < json_object_array_length(o); i++)
            redact_passwords(json_object_array_get_idx(o, i));
        return;
    }
    if (!json_object_is_type(o, json_type_object))
        return;
    json_object_object_foreach(o, k, v) {
        if (strcasecmp(k, "password") == 0 && v && !json_object_is_type(v, json_type_null))
            jadd_str(o, k, "[redacted]");
        else
            redact_passwords(v);
    }
}

/* Properties and headers of a delivery, for show and export. */
static json_object *message_json(const struct dead *x, const struct bus_delivery *d)
{
    json_object *o = json_object_new_object();
    json_object *h = json_object_new_object();
    if (!o || !h) {
        json_object_put(o);
        json_object_put(h);
        return NULL;
    }
    jadd_str(o, "job_id", x->job_id);
    jadd_str(o, "routing_key", d->routing_key);
    jadd_str(o, "message_id", d->message_id);
    jadd_str(o, "type", d->type);
    if (d->timestamp > 0) {
        char ts[32];
        format_time_ms(d->timestamp * 1000, ts);
        jadd_str(o, "timestamp", ts);
    }
    for (size_t i = 0; i < d->nheaders; i++) {
        const struct bus_header *bh = &d->headers[i];
        jadd(h, bh->key, bh->kind == BUS_HINT ? json_object_new_int64(bh->num)
                                              : json_object_new_string(bh->str));
    }
    jadd(o, "headers", h);
    if (d->death_reason[0]) {
        json_object *death = json_object_new_object();
        if (death) {
            jadd_str(death, "reason", d->death_reason);
            jadd(death, "count", json_object_new_int64(d->death_count));
            jadd(o, "death", death);
        }
    }
    return o;
}

static int print_show(const struct dead *x, const struct bus_delivery *d)
{
    json_object *o = message_json(x, d);
    if (!o)
        return -1;
    json_tokener *tok = json_tokener_new();
    json_object *body = tok ? json_tokener_parse_ex(tok, d->body, (int)d->len) : NULL;
    if (tok && json_tokener_get_error(tok) != json_tokener_success) {
        json_object_put(body);
        body = NULL;
    }
    json_tokener_free(tok);
    if (body) {
        redact_passwords(body); /* the sealed "secret" is untouched: it stays sealed */
        jadd(o, "body", body);
    } else {
        jadd_str(o, "body_text", d->body); /* not JSON: shown as text */
    }
    printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY |
                                                     JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(o);
    return 0;
}

static int print_export(const struct dead *x, const struct bus_delivery *d)
{
    json_object *o = message_json(x, d);
    if (!o)
        return -1;
    /* The exact bytes as a string: the signature covers them, so a
     * re-serialised object could no longer be verified. */
    json_object *body = json_object_new_string_len(d->body, (int)d->len);
    if (!body) {
        json_object_put(o);
        return -1;
    }
    jadd(o, "body", body);
    printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN |
                                                     JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(o);
    return 0;
}

/* ---- replay ------------------------------------------------------------------------- */

/* Headers that describe past failures or the broker's bookkeeping: a replay
 * starts afresh. x-comet-force is dropped unless asked for again. */
static bool replay_drops(const char *key)
{
    static const char *const exact[] = {
        BUS_H_ATTEMPT, BUS_H_WAITS, BUS_H_FIRST_FAIL, BUS_H_LAST_FAIL, BUS_H_ERR_CLASS,
        BUS_H_ERR_CODE, BUS_H_ERR_MSG, BUS_H_WORKER, BUS_H_FORCE, BUS_H_REPLAYED_AT,
        "x-delivery-count", NULL
    };
    for (const char *const *k = exact; *k; k++)
        if (strcmp(*k, key) == 0)
            return true;
    return strncmp(key, "x-first-death-", 14) == 0 || strncmp(key, "x-last-death-", 13) == 0;
}

/* Redis, when reachable: every job a replay matches is marked "queued" (a
 * first pass, before anything is published), so a successor replayed with
 * its predecessor waits for it instead of failing again behind a
 * predecessor still recorded as failed. */
static struct store *replay_store;
static int replay_retention_s;

static void mark_queued(const struct dead *x)
{
    struct err e;
    if (!replay_store || !x->job_id[0])
        return;
    if (store_job_set(replay_store, x->job_id, "state", "queued", replay_retention_s, &e) != 0)
        fprintf(stderr, "comet-dlq: warning: job %s not marked queued in Redis: %s\n", x->job_id, e.msg);
}

/* Republishes a dead message to comet.jobs and waits for the confirm.
 * 0 = confirmed (the caller may now remove it), -1 with e. */
static int replay_one(struct bus *b, const struct bus_delivery *d, const struct dead *x, bool force,
                      int timeout_ms, struct err *e)
{
    if (!x->action_known)
        return err_set(e, ERR_BAD_ACTION, "has no known action ('%s'): nothing to route it to",
                       x->action);
    struct bus_msg m;
    bus_msg_init(&m, BUS_EX_JOBS, x->action);
    m.mandatory = true; /* an unroutable copy is a failure, not a silent drop */
    snprintf(m.message_id, sizeof(m.message_id), "%s", d->message_id);
    snprintf(m.type, sizeof(m.type), "%s", d->type[0] ? d->type : x->action);
    char now[32];
    format_time_ms(now_ms(), now);
    int rc = bus_msg_set_body(&m, d->body, d->len);
    for (size_t i = 0; rc == 0 && i < d->nheaders; i++) {
        const struct bus_header *h = &d->headers[i];
        if (replay_drops(h->key))
            continue;
        rc = h->kind == BUS_HINT ? bus_msg_add_int(&m, h->key, h->num)
                                 : bus_msg_add_str(&m, h->key, h->str);
    }
    if (rc == 0)
        rc = bus_msg_add_int(&m, BUS_H_ATTEMPT, 0);
    if (rc == 0)
        rc = bus_msg_add_str(&m, BUS_H_REPLAYED_AT, now);
    if (rc == 0 && force)
        rc = bus_msg_add_int(&m, BUS_H_FORCE, 1);
    if (rc != 0) {
        bus_msg_clear(&m);
        return err_set(e, ERR_INTERNAL, "cannot build the copy (out of memory or too many headers)");
    }
    rc = bus_publish_wait(b, &m, timeout_ms, e);
    bus_msg_clear(&m);
    return rc;
}

/* ---- the scan --------------------------------------------------------------------- */

/* What happens to a fetched message. */
enum verdict {
    VERDICT_KEEP = 0,       /* requeued at the end */
    VERDICT_REMOVE,         /* acked now (its copy, if any, is confirmed) */
    VERDICT_HOLD,           /* decided after the scan (purge asks first) */
};

struct tags {
    uint64_t *v;
    size_t n, cap;
};

static int tags_push(struct tags *t, uint64_t tag)
{
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 256;
        uint64_t *nv = realloc(t->v, cap * sizeof(*nv));
        if (!nv)
            return -1;
        t->v = nv;
        t->cap = cap;
    }
    t->v[t->n++] = tag;
    return 0;
}

struct scan {
    struct opts *o;
    bool mark_pass;             /* replay's first pass: only mark the matched jobs queued */
    struct bus *bus;
    int confirm_timeout_ms;
    long depth;                 /* ready messages when the scan began (approximate) */
    long long start_ms;
    long fetched;
    size_t matched, removed, failed;
    struct tags kept;           /* requeued at the end */
    struct tags held;           /* VERDICT_HOLD: the caller acks or requeues them */
    bool progress;              /* show progress (replay and purge of large queues) */
    bool tty;
    long long last_progress_ms;
    bool json_first;            /* list --json: no comma before the first element */
};

static void progress_show(struct scan *s, bool final)
{
    if (!s->progress)
        return;
    long long now = now_ms();
    if (!final && now - s->last_progress_ms < (s->tty ? PROGRESS_TTY_MS : PROGRESS_LINE_MS))
        return;
    s->last_progress_ms = now;
    const char *verb = s->o->cmd == CMD_REPLAY && !s->o->dry_run ? "replayed" : "matched";
    size_t done = s->o->cmd == CMD_REPLAY && !s->o->dry_run ? s->removed : s->matched;
    if (s->tty) {
        long total = s->fetched > s->depth ? s->fetched : s->depth; /* the count lags */
        int filled = total > 0 ? (int)(s->fetched * PROGRESS_BAR_WIDTH / total) : 0;
        char bar[PROGRESS_BAR_WIDTH + 1];
        for (int i = 0; i < PROGRESS_BAR_WIDTH; i++)
            bar[i] = i < filled ? '#' : '-';
        bar[PROGRESS_BAR_WIDTH] = '\0';
        fprintf(stderr, "\r[%s] %3ld%%  %ld/%ld scanned, %zu %s, %zu failed%s", bar,
                total > 0 ? s->fetched * 100 / total : 100L, s->fetched, total, done,
                verb, s->failed, final ? "\n" : "");
    } else {
        fprintf(stderr, "comet-dlq: %ld/%ld scanned, %zu %s, %zu failed\n", s->fetched,
                s->fetched > s->depth ? s->fetched : s->depth, done, verb, s->failed);
    }
    fflush(stderr);
}

/* One list row: a table line, or one element of the JSON array. */
static int print_row(struct scan *s, const struct dead *x, const struct bus_delivery *d)
{
    if (!s->o->json) {
        table_row(x);
        return 0;
    }
    json_object *j = summary_json(x, d);
    if (!j)
        return -1;
    printf("%s\n  %s", s->json_first ? "" : ",",
           json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN |
                                             JSON_C_TO_STRING_NOSLASHESCAPE));
    s->json_first = false;
    json_object_put(j);
    return 0;
}

/* Decides one matching message. Returns the verdict, or -1 when the scan
 * must stop (output failed). */
static int visit(struct scan *s, const struct bus_delivery *d, const struct dead *x)
{
    struct opts *o = s->o;
    struct err e;
    switch (o->cmd) {
    case CMD_LIST:
        return print_row(s, x, d) == 0 ? VERDICT_KEEP : -1;
    case CMD_SHOW:
        return print_show(x, d) == 0 ? VERDICT_KEEP : -1;
    case CMD_EXPORT:
        return print_export(x, d) == 0 ? VERDICT_KEEP : -1;
    case CMD_PURGE:
        return VERDICT_HOLD;
    case CMD_REPLAY:
        if (o->dry_run)
            return print_row(s, x, d) == 0 ? VERDICT_KEEP : -1;
        if (s->mark_pass) {
            mark_queued(x);
            return VERDICT_KEEP;
        }
        if (replay_one(s->bus, d, x, o->force, s->confirm_timeout_ms, &e) != 0) {
            /* Kept in the DLQ: nothing was lost, the operator sees why. */
            if (s->tty && s->progress)
                fputc('\n', stderr);
            fprintf(stderr, "comet-dlq: replay of %s failed, kept in the DLQ: %s\n",
                    x->job_id[0] ? x->job_id : "(no id)", e.msg);
            s->failed++;
            return VERDICT_KEEP;
        }
        printf("%s\n", x->job_id);
        return VERDICT_REMOVE;
    case CMD_NONE:
        break;
    }
    return VERDICT_KEEP;
}

/* Fetches every message of the queue, decides each, acks the removed ones
 * and requeues the rest at the end. Every fetched message stays unacked
 * until then, so the scan never meets one twice, and a crash anywhere
 * returns them all to the queue. Returns 0, or -1 with e when the broker
 * failed (what was not removed is requeued by it). */
static int scan_run(struct scan *s, struct err *e)
{
    struct bus_delivery d;
    s->depth = bus_queue_depth(s->bus, BUS_Q_DEAD, e);
    if (s->depth < 0)
        return -1;
    long bound = s->depth + s->depth / 2 + SCAN_SLACK_MIN;
    s->progress = s->progress && s->depth >= PROGRESS_MIN;
    s->start_ms = now_ms();
    s->last_progress_ms = s->start_ms; /* the first line after one interval, not at once */
    while (s->fetched < bound && !interrupted) {
        int got = bus_get(s->bus, BUS_Q_DEAD, &d, e);
        if (got < 0)
            return -1;
        if (got == 0)
            break; /* all fetched (we hold them) */
        s->fetched++;
        struct dead x;
        dead_read(&d, s->start_ms, &x);
        /* A copy this very replay sent that failed again is left for the
         * next one: replaying it now could loop as fast as workers fail. */
        bool ours = s->o->cmd == CMD_REPLAY && x.replayed_ms >= s->start_ms;
        int verdict = VERDICT_KEEP;
        if (!ours && filter_match(&s->o->f, &x)) {
            s->matched++;
            verdict = visit(s, &d, &x);
        }
        int rc = 0;
        if (verdict == VERDICT_REMOVE) {
            rc = bus_ack(s->bus, d.tag, e);
            if (rc == 0)
                s->removed++;
        } else if (verdict == VERDICT_HOLD) {
            rc = tags_push(&s->held, d.tag) ? err_set(e, ERR_INTERNAL, "out of memory") : 0;
        } else {
            rc = tags_push(&s->kept, d.tag) ? err_set(e, ERR_INTERNAL, "out of memory") : 0;
        }
        bus_delivery_clear(&d);
        if (verdict < 0)
            return err_set(e, ERR_INTERNAL, "cannot write the output (out of memory)");
        if (rc != 0)
            return -1;
        progress_show(s, false);
    }
    return 0;
}

/* A basic.get on the DLQ: the queue answers it only after applying every
 * settlement this channel sent before it. A message it returns is new and
 * is kept (requeued at the end). */
static int scan_sync(struct scan *s, struct err *e)
{
    struct bus_delivery d;
    int got = bus_get(s->bus, BUS_Q_DEAD, &d, e);
    if (got < 0)
        return -1;
    if (got == 0)
        return 0;
    uint64_t tag = d.tag;
    bus_delivery_clear(&d);
    return tags_push(&s->kept, tag) ? err_set(e, ERR_INTERNAL, "out of memory") : 0;
}

/* Acks every tag of t. A quorum queue channel with more than 32
 * settlements in flight stashes further ones until earlier ones are
 * applied, and closing the channel drops that stash: those messages would
 * silently return to the DLQ (seen on RabbitMQ 3.10). So the acks go in
 * small batches, each followed by a synchronous basic.get, and the scan
 * itself interleaves its acks with gets. */
#define ACK_BATCH 8
static int tags_ack(struct scan *s, const struct tags *t, struct err *e)
{
    for (size_t i = 0; i < t->n; i++) {
        if (bus_ack(s->bus, t->v[i], e) != 0)
            return -1;
        if ((i + 1) % ACK_BATCH == 0 && scan_sync(s, e) != 0)
            return -1;
    }
    return 0;
}

/* Requeues the kept messages, after every ack is applied (a lost nack is
 * harmless: closing the channel requeues too). Then waits until the queue
 * shows them ready again: the queue applies returns in the background, and
 * a scan started meanwhile (the next command of a script) would miss them.
 * The wait is a courtesy: past its bound the tool ends anyway. */
static int scan_finish(struct scan *s, struct err *e)
{
    if (scan_sync(s, e) != 0)
        return -1;
    for (size_t i = 0; i < s->kept.n; i++)
        if (bus_nack(s->bus, s->kept.v[i], true, e) != 0)
            return -1;
    long long end = now_ms() + REQUEUE_WAIT_MS;
    for (;;) {
        long depth = bus_queue_depth(s->bus, BUS_Q_DEAD, e); /* also: the channel is still open */
        if (depth < 0)
            return -1;
        if (depth >= (long)s->kept.n || now_ms() > end)
            return 0;
        usleep(REQUEUE_POLL_US);
    }
}

/* Purge: what the operator agreed to. Reads the answer from the terminal. */
static bool confirm_purge(size_t n)
{
    fprintf(stderr, "Remove %zu message%s from %s for good? [y/N] ", n, n == 1 ? "" : "s",
            BUS_Q_DEAD);
    fflush(stderr);
    char line[16];
    if (!fgets(line, sizeof(line), stdin))
        return false;
    return line[0] == 'y' || line[0] == 'Y';
}

/* ---- main ------------------------------------------------------------------------ */

int main(int argc, char **argv)
{
    static struct opts o;
    if (parse_opts(argc, argv, &o) != 0) {
        free(o.f.seen);
        return DLQ_EXIT_USAGE;
    }
    if (o.cmd == CMD_PURGE && !o.yes && !isatty(STDIN_FILENO)) {
        fprintf(stderr, "comet-dlq: purge without a terminal needs --yes\n");
        free(o.f.seen);
        return DLQ_EXIT_USAGE;
    }
    log_init("comet-dlq", LOGL_WARN, LOG_FORMAT_TEXT);
    static struct config cfg;
    struct err e;
    err_clear(&e);
    struct scan s;
    memset(&s, 0, sizeof(s));
    s.o = &o;
    s.tty = isatty(STDERR_FILENO);
    s.progress = o.cmd == CMD_REPLAY || o.cmd == CMD_PURGE;
    s.json_first = true;
    int rc = DLQ_EXIT_USAGE;
    bool json_open = false;

    if (daemon_catch_stop(&interrupted) != 0) {
        fprintf(stderr, "comet-dlq: cannot install signal handlers\n");
        goto out;
    }

    if (config_load(&cfg, o.config, &e) != 0) {
        fprintf(stderr, "comet-dlq: %s\n", e.msg);
        goto out;
    }
    s.confirm_timeout_ms = cfg.amqp_confirm_timeout_ms;
    rc = DLQ_EXIT_BROKER;
    /* No heartbeat: purge may wait at its prompt, and a heartbeat the tool
     * cannot send then would close the connection under it. */
    s.bus = bus_connect(cfg.amqp_url, 0, &e);
    if (!s.bus || bus_declare_topology(s.bus, NULL, 0, &e) != 0) {
        fprintf(stderr, "comet-dlq: broker unreachable: %s\n", e.msg);
        goto out;
    }
    if (o.cmd == CMD_REPLAY && !o.dry_run) {
        replay_retention_s = cfg.job_retention_seconds;
        replay_store = store_connect(&cfg, &e);
        if (!replay_store)
            fprintf(stderr, "comet-dlq: warning: Redis unreachable (%s): jobs of one service "
                            "replayed together may run out of order\n", e.msg);
    }
    rc = DLQ_EXIT_FAILED;
    bool list_json = o.json && (o.cmd == CMD_LIST || o.cmd == CMD_REPLAY);
    if (o.cmd == CMD_LIST && !o.json)
        table_header();
    if (o.cmd == CMD_REPLAY && o.dry_run && !o.json)
        table_header();
    if (list_json) {
        printf("[");
        json_open = true;
    }
    /* Replay in two passes: first every matched job is marked queued, then
     * they are republished. The DLQ's order is not the chains' order (a
     * successor can be dead-lettered before its predecessor's copy lands),
     * so a successor must find its predecessor queued, whatever comes first. */
    if (replay_store) {
        bool progress = s.progress;
        s.mark_pass = true;
        s.progress = false;
        if (scan_run(&s, &e) != 0 || scan_finish(&s, &e) != 0) {
            fprintf(stderr, "comet-dlq: %s (nothing was replayed)\n", e.msg);
            goto out;
        }
        s.mark_pass = false;
        s.progress = progress;
        s.fetched = 0;
        s.matched = s.removed = s.failed = 0;
        s.kept.n = s.held.n = 0;
    }
    int scanned = scan_run(&s, &e);
    if (json_open)
        printf("%s]\n", s.json_first ? "" : "\n");
    fflush(stdout);
    progress_show(&s, true);
    if (scanned != 0) {
        fprintf(stderr, "comet-dlq: %s (unfinished messages stay in the DLQ)\n", e.msg);
        goto out;
    }
    bool remove_held = false;
    if (o.cmd == CMD_PURGE && s.held.n > 0 && !interrupted)
        remove_held = o.yes || confirm_purge(s.held.n);
    /* Held messages the operator did not agree to remove are kept. */
    for (size_t i = 0; !remove_held && i < s.held.n; i++) {
        if (tags_push(&s.kept, s.held.v[i]) != 0) {
            fprintf(stderr, "comet-dlq: out of memory (nothing was removed)\n");
            goto out;
        }
    }
    if ((remove_held && tags_ack(&s, &s.held, &e) != 0) || scan_finish(&s, &e) != 0) {
        fprintf(stderr, "comet-dlq: %s (unfinished messages stay in the DLQ)\n", e.msg);
        goto out;
    }
    rc = DLQ_EXIT_OK;
    if (interrupted) {
        fprintf(stderr, "comet-dlq: interrupted after %ld messages; the rest stay in the DLQ\n",
                s.fetched);
        rc = DLQ_EXIT_FAILED;
    }
    for (size_t i = 0; i < o.f.nids; i++) {
        if (!o.f.seen[i]) {
            fprintf(stderr, "comet-dlq: %s is not in the DLQ\n", o.f.ids[i]);
            rc = DLQ_EXIT_FAILED;
        }
    }
    if (o.cmd == CMD_REPLAY && o.dry_run)
        fprintf(stderr, "comet-dlq: would replay %zu message%s (dry run)\n", s.matched,
                s.matched == 1 ? "" : "s");
    else if (o.cmd == CMD_REPLAY)
        fprintf(stderr, "comet-dlq: replayed %zu of %zu message%s%s\n", s.removed, s.matched,
                s.matched == 1 ? "" : "s", s.failed ? " (see the errors above)" : "");
    else if (o.cmd == CMD_PURGE)
        fprintf(stderr, "comet-dlq: %s %zu message%s\n", remove_held ? "purged" : "kept",
                s.held.n, s.held.n == 1 ? "" : "s");
    if (s.failed > 0)
        rc = DLQ_EXIT_FAILED;
out:
    store_free(replay_store);
    bus_free(s.bus); /* closing the channel requeues anything still unacked */
    free(s.kept.v);
    free(s.held.v);
    free(o.f.seen);
    config_clear(&cfg);
    return rc;
}
