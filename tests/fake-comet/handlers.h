/* The admin API endpoints of the fake Comet Server: one table mapping each
 * endpoint name to its handler. */
#ifndef FAKE_HANDLERS_H
#define FAKE_HANDLERS_H

#include <stddef.h>

#include "form.h"

/* Upper bound on table rows; fault masks are 32-bit. */
#define HANDLERS_MAX 32

/* One answer to an admin API call. */
struct api_reply {
    unsigned int http_status; /* 200 unless a switch asks otherwise */
    char *body;               /* owned JSON text (free) */
};

/* Row index of endpoint (e.g. "add-user"), or -1 when unknown. */
int handlers_find(const char *endpoint);
const char *handlers_name(int idx);
size_t handlers_count(void);

/* Checks auth, runs row idx against state under the state lock and
 * serialises the reply into out. Returns 0, or -1 on out of memory. */
int handlers_call(int idx, const struct form *form, struct api_reply *out);

#endif
