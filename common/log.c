/* Logging: one line per event to stderr, JSON or text, never interleaved. */
#include "log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Long enough for any program name we ship; longer names are cut. */
#define LOG_PROGRAM_MAX 64
/* Most messages fit here; longer ones are formatted on the heap. */
#define LOG_MSG_STACK 1024

static char log_program[LOG_PROGRAM_MAX] = "comet";
static enum log_level log_threshold = LOGL_INFO;
static enum log_format log_fmt = LOG_FORMAT_TEXT;
/* Serialises the write of each line so threads never interleave. */
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *const log_level_names[] = { "debug", "info", "warn", "error" };
static const char *const log_level_upper[] = { "DEBUG", "INFO ", "WARN ", "ERROR" };

void log_init(const char *program, enum log_level level, enum log_format format)
{
    pthread_mutex_lock(&log_lock);
    if (program != NULL)
        snprintf(log_program, sizeof(log_program), "%s", program);
    if ((unsigned)level <= LOGL_ERROR)
        log_threshold = level;
    if (format == LOG_FORMAT_JSON || format == LOG_FORMAT_TEXT)
        log_fmt = format;
    pthread_mutex_unlock(&log_lock);
}

int log_level_parse(const char *s, enum log_level *out)
{
    if (s == NULL)
        return -1;
    for (int i = LOGL_DEBUG; i <= LOGL_ERROR; i++) {
        if (strcmp(s, log_level_names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    return -1;
}

int log_format_parse(const char *s, enum log_format *out)
{
    if (s == NULL)
        return -1;
    if (strcmp(s, "json") == 0) {
        *out = LOG_FORMAT_JSON;
        return 0;
    }
    if (strcmp(s, "text") == 0) {
        *out = LOG_FORMAT_TEXT;
        return 0;
    }
    return -1;
}

bool log_enabled(enum log_level level)
{
    return level >= log_threshold;
}

/* A growable line buffer; on allocation failure it stops growing and
 * remembers, and the caller writes a short fallback line instead. */
struct logbuf {
    char *p;
    size_t len;
    size_t cap;
    bool oom;
};

static void lb_put(struct logbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (b->len + n + 1 > cap)
            cap *= 2;
        char *np = realloc(b->p, cap);
        if (np == NULL) {
            b->oom = true;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void lb_puts(struct logbuf *b, const char *s)
{
    lb_put(b, s, strlen(s));
}

static void lb_printf(struct logbuf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void lb_printf(struct logbuf *b, const char *fmt, ...)
{
    char tmp[64]; /* only used for numbers and timestamps */
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    lb_put(b, tmp, (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
}

/* Length of the valid UTF-8 sequence at s (1..4), or 0 when invalid. */
static size_t utf8_seq_len(const unsigned char *s, size_t avail)
{
    unsigned char c = s[0];
    size_t n;
    unsigned min;
    unsigned cp;
    if (c < 0x80)
        return 1;
    if ((c & 0xE0) == 0xC0) {
        n = 2; cp = c & 0x1F; min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
        n = 3; cp = c & 0x0F; min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
        n = 4; cp = c & 0x07; min = 0x10000;
    } else {
        return 0;
    }
    if (n > avail)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    /* Overlong forms, surrogates and out-of-range code points are invalid. */
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return n;
}

/* Appends s as a JSON string body (no quotes). Invalid UTF-8 becomes U+FFFD
 * so a shipper never rejects the line. */
static void lb_json_escape(struct logbuf *b, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t avail = strlen(s);
    while (avail > 0) {
        unsigned char c = *p;
        if (c == '"' || c == '\\') {
            char esc[2] = { '\\', (char)c };
            lb_put(b, esc, 2);
        } else if (c == '\n') {
            lb_puts(b, "\\n");
        } else if (c == '\r') {
            lb_puts(b, "\\r");
        } else if (c == '\t') {
            lb_puts(b, "\\t");
        } else if (c < 0x20 || c == 0x7F) {
            lb_printf(b, "\\u%04x", c);
        } else {
            size_t n = utf8_seq_len(p, avail);
            if (n == 0) {
                lb_puts(b, "\\ufffd");
                n = 1;
            } else {
                lb_put(b, (const char *)p, n);
            }
            p += n;
            avail -= n;
            continue;
        }
        p++;
        avail--;
    }
}

/* Text form: control characters are escaped so one event stays one line. */
static void lb_text_escape(struct logbuf *b, const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '\n')
            lb_puts(b, "\\n");
        else if (*p == '\r')
            lb_puts(b, "\\r");
        else if (*p < 0x20 || *p == 0x7F)
            lb_printf(b, "\\x%02x", *p);
        else
            lb_put(b, (const char *)p, 1);
    }
}

/* ISO 8601 UTC with milliseconds: "2026-12-04T10:00:00.123Z". */
#define LOG_TS_LEN 32
static void log_timestamp(char out[LOG_TS_LEN])
{
    struct timespec ts;
    struct tm tm;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0 || gmtime_r(&ts.tv_sec, &tm) == NULL) {
        snprintf(out, LOG_TS_LEN, "1970-01-01T00:00:00.000Z");
        return;
    }
    size_t n = strftime(out, LOG_TS_LEN, "%Y-%m-%dT%H:%M:%S", &tm);
    unsigned ms = (unsigned)(ts.tv_nsec / 1000000L) % 1000u;
    snprintf(out + n, LOG_TS_LEN - n, ".%03uZ", ms);
}

static void lb_json_field_str(struct logbuf *b, const char *key, const char *val)
{
    lb_puts(b, ",\"");
    lb_puts(b, key);
    lb_puts(b, "\":\"");
    lb_json_escape(b, val);
    lb_puts(b, "\"");
}

static void log_build_json(struct logbuf *b, const char *ts, enum log_level level,
                           const char *program, const struct log_fields *f, const char *msg)
{
    lb_puts(b, "{\"ts\":\"");
    lb_puts(b, ts);
    lb_puts(b, "\",\"level\":\"");
    lb_puts(b, log_level_names[level]);
    lb_puts(b, "\"");
    lb_json_field_str(b, "program", program);
    lb_json_field_str(b, "msg", msg);
    if (f != NULL) {
        if (f->job_id != NULL)
            lb_json_field_str(b, "job_id", f->job_id);
        if (f->service_id != 0)
            lb_printf(b, ",\"service_id\":%lld", f->service_id);
        if (f->action != NULL)
            lb_json_field_str(b, "action", f->action);
        if (f->attempt != 0)
            lb_printf(b, ",\"attempt\":%d", f->attempt);
        if (f->duration_ms >= 0)
            lb_printf(b, ",\"duration_ms\":%ld", f->duration_ms);
        if (f->error != NULL)
            lb_json_field_str(b, "error", f->error);
    }
    lb_puts(b, "}\n");
}

static void lb_text_field_str(struct logbuf *b, const char *key, const char *val)
{
    lb_puts(b, " ");
    lb_puts(b, key);
    lb_puts(b, "=");
    lb_text_escape(b, val);
}

static void log_build_text(struct logbuf *b, const char *ts, enum log_level level,
                           const char *program, const struct log_fields *f, const char *msg)
{
    lb_puts(b, ts);
    lb_puts(b, " ");
    lb_puts(b, log_level_upper[level]);
    lb_puts(b, " ");
    lb_text_escape(b, program);
    lb_puts(b, ": ");
    lb_text_escape(b, msg);
    if (f != NULL) {
        if (f->job_id != NULL)
            lb_text_field_str(b, "job_id", f->job_id);
        if (f->service_id != 0)
            lb_printf(b, " service_id=%lld", f->service_id);
        if (f->action != NULL)
            lb_text_field_str(b, "action", f->action);
        if (f->attempt != 0)
            lb_printf(b, " attempt=%d", f->attempt);
        if (f->duration_ms >= 0)
            lb_printf(b, " duration_ms=%ld", f->duration_ms);
        if (f->error != NULL)
            lb_text_field_str(b, "error", f->error);
    }
    lb_puts(b, "\n");
}

void log_msgf(enum log_level level, const struct log_fields *f, const char *fmt, ...)
{
    if ((unsigned)level > LOGL_ERROR)
        level = LOGL_ERROR;
    if (!log_enabled(level))
        return;

    char stackmsg[LOG_MSG_STACK];
    char *msg = stackmsg;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(stackmsg, sizeof(stackmsg), fmt, ap);
    va_end(ap);
    if (n < 0) {
        snprintf(stackmsg, sizeof(stackmsg), "(unformattable log message)");
    } else if ((size_t)n >= sizeof(stackmsg)) {
        char *heap = malloc((size_t)n + 1);
        if (heap != NULL) {
            va_start(ap, fmt);
            int m = vsnprintf(heap, (size_t)n + 1, fmt, ap);
            va_end(ap);
            if (m >= 0)
                msg = heap;
            else
                free(heap);
        }
        /* else: keep the truncated stack copy */
    }

    char ts[LOG_TS_LEN];
    log_timestamp(ts);

    struct logbuf b = { 0 };
    pthread_mutex_lock(&log_lock);
    if (log_fmt == LOG_FORMAT_JSON)
        log_build_json(&b, ts, level, log_program, f, msg);
    else
        log_build_text(&b, ts, level, log_program, f, msg);
    if (b.oom || b.p == NULL)
        fputs("log: out of memory formatting a log line\n", stderr);
    else
        fwrite(b.p, 1, b.len, stderr);
    fflush(stderr);
    pthread_mutex_unlock(&log_lock);

    free(b.p);
    if (msg != stackmsg)
        free(msg);
}
