/* Logging: JSON lines (one object per line, for log shippers) or a
 * human-readable form for terminals, to stderr. Thread-safe. */
#ifndef COMET_LOG_H
#define COMET_LOG_H

#include <stdbool.h>

enum log_level { LOGL_DEBUG = 0, LOGL_INFO, LOGL_WARN, LOGL_ERROR };
enum log_format { LOG_FORMAT_JSON = 0, LOG_FORMAT_TEXT };

/* Optional structured fields; zero/NULL members are omitted. */
struct log_fields {
    const char *job_id;
    long long service_id;   /* 0 = absent */
    const char *action;
    int attempt;            /* 0 = absent */
    long duration_ms;       /* < 0 = absent; use LOG_FIELDS_INIT */
    const char *error;      /* wire error code */
};
#define LOG_FIELDS_INIT { NULL, 0, NULL, 0, -1, NULL }

void log_init(const char *program, enum log_level level, enum log_format format);
/* Parses "debug|info|warn|error" and "json|text"; return -1 when unknown. */
int log_level_parse(const char *s, enum log_level *out);
int log_format_parse(const char *s, enum log_format *out);
bool log_enabled(enum log_level level);

void log_msgf(enum log_level level, const struct log_fields *f, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define log_debug(...) log_msgf(LOGL_DEBUG, NULL, __VA_ARGS__)
#define log_info(...)  log_msgf(LOGL_INFO, NULL, __VA_ARGS__)
#define log_warn(...)  log_msgf(LOGL_WARN, NULL, __VA_ARGS__)
#define log_error(...) log_msgf(LOGL_ERROR, NULL, __VA_ARGS__)

#endif
