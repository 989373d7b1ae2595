/* Comet Server admin API client: one endpoint table, one comet_call().
 * A client is one libcurl easy handle kept per thread so connections to
 * Comet are reused (keep-alive). Not thread-safe: one per thread. */
#ifndef COMET_COMET_H
#define COMET_COMET_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stddef.h>
#include "config.h"
#include "errors.h"

enum comet_endpoint {
    COMET_META_VERSION = 0,
    COMET_POLICIES_LIST,
    COMET_POLICIES_GET,
    COMET_POLICIES_SET,
    COMET_POLICIES_NEW,
    COMET_STORAGE_PROVIDERS,     /* request-storage-vault-providers */
    COMET_ADD_USER,
    COMET_GET_USER_PROFILE,
    COMET_GET_PROFILE_AND_HASH,  /* get-user-profile-and-hash */
    COMET_SET_PROFILE_HASH,      /* set-user-profile-hash */
    COMET_RESET_PASSWORD,        /* reset-user-password */
    COMET_DELETE_USER,
    COMET_REQUEST_STORAGE_VAULT,
    COMET_LIST_USERS,
    COMET__COUNT
};

struct comet_param {
    const char *name;
    const char *value;
};

struct comet_client;

/* NULL on allocation failure. */
struct comet_client *comet_client_new(int connect_timeout_ms, int timeout_ms);
void comet_client_free(struct comet_client *c);

/* "meta/version", ... */
const char *comet_endpoint_path(enum comet_endpoint ep);

/* POSTs the endpoint with the admin auth of `server` plus params
 * (form-urlencoded). On success returns 0 and *out holds the parsed JSON
 * (caller json_object_put()s it). On failure returns -1, *out is NULL, err
 * is classified:
 *   curl connect/reset/DNS -> ERR_COMET_UNAVAILABLE; timeout -> ERR_COMET_TIMEOUT
 *   HTTP 5xx -> ERR_COMET_HTTP_5XX; 429 -> ERR_COMET_RATE_LIMITED
 *   HTTP 401/403 -> ERR_COMET_AUTH; other non-2xx -> ERR_COMET_HTTP_4XX
 *   body not JSON, or not the shape the endpoint answers -> ERR_COMET_BAD_RESPONSE
 *   2xx JSON object with integer Status >= 400: body 403 -> ERR_COMET_AUTH,
 *   else ERR_COMET_REJECTED; *body_status gets that Status (else 0).
 * The message never contains a password. body_status may be NULL. */
int comet_call(struct comet_client *c, const struct config_server *server,
               enum comet_endpoint ep, const struct comet_param *params, size_t nparams,
               json_object **out, int *body_status, struct err *err);

/* Reachability of each Comet server as this process sees it. A call that
 * could not connect at all (refused, host not found) counts against its
 * server; any HTTP answer, even an error, clears the count. A server is
 * down after COMET_DOWN_CALLS such calls in a row with no answer for
 * COMET_DOWN_MS: the worker then stops taking jobs (they wait in the queue
 * without spending attempts) until a probe gets an answer. Connect
 * timeouts are not counted: they cannot be told apart from a stalled
 * reused connection. */
#define COMET_DOWN_CALLS 8
#define COMET_DOWN_MS 1000
bool comet_server_down(const char *url);

/* The classification comet_call() applies to one finished transfer, as a
 * pure function (unit-tested): curl_code is the CURLcode of the transfer
 * (0 = completed), curl_text its error text (may be NULL), http_status the
 * HTTP status, body/len the raw answer (any bytes; len explicit).
 * Same contract as comet_call() for the return value, out, body_status
 * and err. */
int comet_classify(enum comet_endpoint ep, int curl_code, const char *curl_text,
                   long http_status, const char *body, size_t len,
                   json_object **out, int *body_status, struct err *err);

#endif
