/* Comet Server admin API client: one endpoint table, one comet_call() that
 * POSTs a form over a reused libcurl handle and classifies the answer. */
#include "comet.h"
#include "clock.h"
#include "metrics.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"

/* A profile with many devices and sources is large, but nothing we call
 * legitimately answers more than a few MiB: cap memory per call. */
#define COMET_MAX_RESPONSE (16u * 1024u * 1024u)
/* The module follows redirects; a loop should fail fast. */
#define COMET_MAX_REDIRS 5L
/* Profiles nest (Sources -> Statistics -> ...): more than json-c's 32. */
#define COMET_JSON_DEPTH 64
/* How much of a body Message goes into an error text. */
#define COMET_MSG_MAX 160

/* What an endpoint answers on success, checked after the error forms. */
enum comet_shape {
    SHAPE_OBJECT, /* a non-empty object; `field` (if set) must be present */
    SHAPE_STATUS, /* {Status, Message}: integer Status in 200..299 */
    SHAPE_ARRAY,  /* a JSON array (may be empty) */
    SHAPE_MAP,    /* a JSON object (may be empty: a map with no entries) */
};

struct comet_endpoint_row {
    const char *path;        /* after /api/v1/admin/ */
    enum comet_shape shape;
    const char *field;       /* SHAPE_OBJECT: a member every success has */
    const char *field2;      /* and a second one, or NULL */
    bool once;               /* not idempotent: never sent twice by libcurl (see body_seek) */
};

static const struct comet_endpoint_row endpoint_table[] = {
    [COMET_META_VERSION]          = { "meta/version", SHAPE_OBJECT, "Version", NULL, false },
    [COMET_POLICIES_LIST]         = { "policies/list", SHAPE_MAP, NULL, NULL, false },
    /* PolicyHash may be empty in a success (the module tests for that). */
    [COMET_POLICIES_GET]          = { "policies/get", SHAPE_OBJECT, NULL, NULL, false },
    [COMET_POLICIES_SET]          = { "policies/set", SHAPE_STATUS, NULL, NULL, false },
    [COMET_POLICIES_NEW]          = { "policies/new", SHAPE_STATUS, NULL, NULL, true },
    [COMET_STORAGE_PROVIDERS]     = { "request-storage-vault-providers", SHAPE_MAP, NULL, NULL, false },
    [COMET_ADD_USER]              = { "add-user", SHAPE_STATUS, NULL, NULL, false },
    [COMET_GET_USER_PROFILE]      = { "get-user-profile", SHAPE_OBJECT, "Username", NULL, false },
    [COMET_GET_PROFILE_AND_HASH]  = { "get-user-profile-and-hash", SHAPE_OBJECT, "Profile", "ProfileHash", false },
    [COMET_SET_PROFILE_HASH]      = { "set-user-profile-hash", SHAPE_STATUS, NULL, NULL, false },
    [COMET_RESET_PASSWORD]        = { "reset-user-password", SHAPE_STATUS, NULL, NULL, false },
    [COMET_DELETE_USER]           = { "delete-user", SHAPE_STATUS, NULL, NULL, false },
    [COMET_REQUEST_STORAGE_VAULT] = { "request-storage-vault", SHAPE_STATUS, NULL, NULL, true },
    [COMET_LIST_USERS]            = { "list-users", SHAPE_ARRAY, NULL, NULL, false },
};

_Static_assert(sizeof(endpoint_table) / sizeof(endpoint_table[0]) == COMET__COUNT,
               "endpoint_table needs one row per enum comet_endpoint");

/* A growing byte buffer: the response body, or the form being built. */
struct buf {
    char *data;
    size_t len;
    size_t cap;
    bool overflow;  /* response over COMET_MAX_RESPONSE: the transfer was aborted */
};

struct comet_client {
    CURL *curl;                       /* reused so connections stay alive */
    struct curl_slist *headers;       /* owned */
    int connect_timeout_ms;
    int timeout_ms;
    struct buf resp;                  /* reused response buffer */
    /* Reused per call (wiped after each: it holds passwords), and the JSON
     * parser reset per answer: both are over glibc's per-thread cache size,
     * and allocating them per call made 128 threads queue on malloc's
     * arena locks (measured: the largest source of futex calls). */
    struct buf form;
    json_tokener *tok;
    char errbuf[CURL_ERROR_SIZE];     /* curl's detail for the last failure */
    /* The body of a call that must not be sent twice, read by body_read. */
    const char *body;
    size_t body_len;
    size_t body_off;
    /* The options that stay the same from call to call are set once, for
     * the TLS settings of one server; a call to a server with other TLS
     * settings resets the handle and sets them again. */
    bool opts_set;
    bool opts_insecure;
    char opts_ca_file[CONFIG_STR];
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc = CURLE_FAILED_INIT;

static void curl_init_once(void)
{
    curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

const char *comet_endpoint_path(enum comet_endpoint ep)
{
    if ((unsigned)ep >= COMET__COUNT)
        return "unknown";
    return endpoint_table[ep].path;
}

/* ---- buffers ----------------------------------------------------------- */

static int buf_reserve(struct buf *b, size_t extra)
{
    size_t need, cap;
    char *p;

    if (extra > SIZE_MAX - b->len - 1)
        return -1;
    need = b->len + extra + 1;
    if (need <= b->cap)
        return 0;
    cap = b->cap ? b->cap : 1024;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    /* Not realloc: the old block may hold a password and must be wiped. */
    p = malloc(cap);
    if (p == NULL)
        return -1;
    if (b->data != NULL) {
        memcpy(p, b->data, b->len);
        sodium_memzero(b->data, b->cap);
        free(b->data);
    }
    b->data = p;
    b->cap = cap;
    return 0;
}

static int buf_append(struct buf *b, const char *s, size_t n)
{
    if (buf_reserve(b, n) != 0)
        return -1;
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

/* Wipes (the form holds passwords) and frees. */
static void buf_clear(struct buf *b)
{
    if (b->data != NULL) {
        sodium_memzero(b->data, b->cap);
        free(b->data);
    }
    memset(b, 0, sizeof(*b));
}

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    struct buf *b = userdata;
    size_t n = size * nmemb;

    if (n > COMET_MAX_RESPONSE - b->len) {
        b->overflow = true;
        return 0; /* aborts the transfer with CURLE_WRITE_ERROR */
    }
    if (buf_append(b, ptr, n) != 0)
        return 0;
    return n;
}

/* ---- client ------------------------------------------------------------ */

struct comet_client *comet_client_new(int connect_timeout_ms, int timeout_ms)
{
    struct comet_client *c;
    struct curl_slist *h;

    if (pthread_once(&curl_once, curl_init_once) != 0 || curl_init_rc != CURLE_OK)
        return NULL;
    c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->connect_timeout_ms = connect_timeout_ms;
    c->timeout_ms = timeout_ms;
    c->curl = curl_easy_init();
    c->tok = json_tokener_new_ex(COMET_JSON_DEPTH);
    if (c->curl == NULL || c->tok == NULL)
        goto fail;
    /* "Expect:" off: libcurl would wait for a 100-continue on big profiles. */
    c->headers = curl_slist_append(NULL, "Expect:");
    if (c->headers == NULL)
        goto fail;
    h = curl_slist_append(c->headers, "Accept: application/json");
    if (h == NULL)
        goto fail;
    c->headers = h;
    return c;
fail:
    comet_client_free(c);
    return NULL;
}

void comet_client_free(struct comet_client *c)
{
    if (c == NULL)
        return;
    if (c->curl != NULL)
        curl_easy_cleanup(c->curl);
    curl_slist_free_all(c->headers);
    buf_clear(&c->resp);
    buf_clear(&c->form);
    if (c->tok != NULL)
        json_tokener_free(c->tok);
    free(c);
}

/* ---- reachability ------------------------------------------------------ */

/* Every call notes its outcome here, from up to hundreds of threads: the
 * common case (an answer while nothing failed) is one atomic load. An
 * entry's URL is written once, before `used` is set (release); readers
 * look at it only after seeing `used` (acquire). */
struct reach {
    _Atomic bool used;
    char url[CONFIG_STR];
    _Atomic int failures;       /* calls in a row that found nobody there */
    _Atomic long long fail_ms;  /* first of those (CLOCK_MONOTONIC ms) */
};
static struct reach reach_table[CONFIG_MAX_SERVERS];
static pthread_mutex_t reach_mu = PTHREAD_MUTEX_INITIALIZER; /* taking a free entry */

/* The server's entry, taken on first use; NULL when the table is full. */
static struct reach *reach_find(const char *url)
{
    for (size_t i = 0; i < CONFIG_MAX_SERVERS; i++) {
        struct reach *r = &reach_table[i];
        if (!atomic_load_explicit(&r->used, memory_order_acquire))
            break;
        if (strcmp(r->url, url) == 0)
            return r;
    }
    struct reach *found = NULL;
    if (pthread_mutex_lock(&reach_mu) != 0)
        return NULL;
    for (size_t i = 0; i < CONFIG_MAX_SERVERS && found == NULL; i++) {
        struct reach *r = &reach_table[i];
        if (!atomic_load_explicit(&r->used, memory_order_acquire)) {
            snprintf(r->url, sizeof(r->url), "%s", url);
            atomic_store_explicit(&r->used, true, memory_order_release);
            found = r;
        } else if (strcmp(r->url, url) == 0) {
            found = r;
        }
    }
    pthread_mutex_unlock(&reach_mu);
    return found;
}

static void reach_note(const char *url, CURLcode rc)
{
    bool answered = rc == CURLE_OK;
    bool nobody = rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST ||
                  rc == CURLE_COULDNT_RESOLVE_PROXY;
    if (!answered && !nobody)
        return;
    struct reach *r = reach_find(url);
    if (r == NULL)
        return;
    if (answered) {
        if (atomic_load_explicit(&r->failures, memory_order_relaxed) != 0)
            atomic_store_explicit(&r->failures, 0, memory_order_relaxed);
        return;
    }
    /* The first failure of a streak dates it. */
    if (atomic_fetch_add_explicit(&r->failures, 1, memory_order_relaxed) == 0)
        atomic_store_explicit(&r->fail_ms, mono_ms(), memory_order_relaxed);
}

bool comet_server_down(const char *url)
{
    struct reach *r = reach_find(url);
    if (r == NULL || atomic_load_explicit(&r->failures, memory_order_relaxed) < COMET_DOWN_CALLS)
        return false;
    return mono_ms() - atomic_load_explicit(&r->fail_ms, memory_order_relaxed) >= COMET_DOWN_MS;
}

/* ---- classification ---------------------------------------------------- */

/* The body's Message member for error texts, or "" (lent from obj). */
static const char *body_message(json_object *obj)
{
    json_object *m;

    if (json_object_is_type(obj, json_type_object) &&
        json_object_object_get_ex(obj, "Message", &m) && json_object_is_type(m, json_type_string))
        return json_object_get_string(m);
    return "";
}

/* Parses exactly len bytes as one JSON document; NULL when it is not. */
static json_object *parse_exact(json_tokener *tok, const char *body, size_t len)
{
    json_object *obj;
    size_t used;

    if (body == NULL || len == 0 || len > (size_t)INT32_MAX)
        return NULL;
    json_tokener_reset(tok);
    obj = json_tokener_parse_ex(tok, body, (int)len);
    if (obj == NULL || json_tokener_get_error(tok) != json_tokener_success) {
        /* A document cut short leaves json_tokener_continue: not JSON either. */
        json_object_put(obj);
        return NULL;
    }
    used = json_tokener_get_parse_end(tok);
    for (; used < len; used++) {
        char ch = body[used];
        if (ch != ' ' && ch != '\t' && ch != '\r' && ch != '\n') {
            json_object_put(obj); /* trailing garbage */
            return NULL;
        }
    }
    return obj;
}

static int classify_curl(const char *path, int curl_code, const char *curl_text, struct err *err)
{
    const char *text = (curl_text != NULL && curl_text[0] != '\0')
                       ? curl_text : curl_easy_strerror((CURLcode)curl_code);
    enum err_code code;

    switch ((CURLcode)curl_code) {
    case CURLE_OPERATION_TIMEDOUT:
        code = ERR_COMET_TIMEOUT;
        break;
    case CURLE_WRITE_ERROR:             /* our size cap aborted it */
    case CURLE_BAD_CONTENT_ENCODING:
        code = ERR_COMET_BAD_RESPONSE;
        break;
    case CURLE_OUT_OF_MEMORY:
        code = ERR_INTERNAL;
        break;
    case CURLE_SEND_FAIL_REWIND:
        /* body_seek refused a silent resend: the answer was lost. */
        return err_set(err, ERR_COMET_UNAVAILABLE,
                       "%s: connection lost after the request was sent (not resent: it may have been applied)",
                       path);
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL:
        /* The configured URL can never work: a config problem, not a retry. */
        code = ERR_UNKNOWN_SERVER;
        break;
    default:
        /* Refused, reset, DNS, TLS, nothing received: the server may come back. */
        code = ERR_COMET_UNAVAILABLE;
        break;
    }
    return err_set(err, code, "%s: %s", path, text);
}

static int classify_http(const char *path, long http_status, json_object *obj, struct err *err)
{
    enum err_code code;

    if (http_status >= 500)
        code = ERR_COMET_HTTP_5XX;
    else if (http_status == 429)
        code = ERR_COMET_RATE_LIMITED;
    else if (http_status == 401 || http_status == 403)
        code = ERR_COMET_AUTH;
    else
        code = ERR_COMET_HTTP_4XX;
    return err_set(err, code, "%s: HTTP %ld %.*s", path, http_status, COMET_MSG_MAX,
                   body_message(obj));
}

/* Checks the success shape of ep; 0 when it matches. */
static int check_shape(const struct comet_endpoint_row *row, json_object *obj, struct err *err)
{
    json_object *st;

    switch (row->shape) {
    case SHAPE_ARRAY:
        if (json_object_is_type(obj, json_type_array))
            return 0;
        return err_set(err, ERR_COMET_BAD_RESPONSE, "%s: answer is not an array", row->path);
    case SHAPE_MAP:
        if (json_object_is_type(obj, json_type_object))
            return 0;
        return err_set(err, ERR_COMET_BAD_RESPONSE, "%s: answer is not an object", row->path);
    case SHAPE_STATUS:
        if (!json_object_is_type(obj, json_type_object) ||
            !json_object_object_get_ex(obj, "Status", &st) || !json_object_is_type(st, json_type_int))
            return err_set(err, ERR_COMET_BAD_RESPONSE, "%s: answer has no Status", row->path);
        if (json_object_get_int64(st) < 200 || json_object_get_int64(st) > 299)
            return err_set(err, ERR_COMET_BAD_RESPONSE, "%s: unexpected Status %lld", row->path,
                           (long long)json_object_get_int64(st));
        return 0;
    case SHAPE_OBJECT:
        if (!json_object_is_type(obj, json_type_object) || json_object_object_length(obj) == 0)
            return err_set(err, ERR_COMET_BAD_RESPONSE, "%s: answer is empty or not an object",
                           row->path);
        if ((row->field != NULL && !json_object_object_get_ex(obj, row->field, NULL)) ||
            (row->field2 != NULL && !json_object_object_get_ex(obj, row->field2, NULL)))
            return err_set(err, ERR_COMET_BAD_RESPONSE, "%s: answer lacks %s", row->path,
                           row->field2 != NULL ? "its fields" : row->field);
        return 0;
    }
    return err_set(err, ERR_INTERNAL, "%s: no shape", row->path);
}

static int classify(json_tokener *tok, enum comet_endpoint ep, int curl_code, const char *curl_text,
                    long http_status, const char *body, size_t len,
                    json_object **out, int *body_status, struct err *err)
{
    const struct comet_endpoint_row *row;
    json_object *obj, *st;

    *out = NULL;
    if (body_status != NULL)
        *body_status = 0;
    if ((unsigned)ep >= COMET__COUNT)
        return err_set(err, ERR_INTERNAL, "unknown endpoint %d", (int)ep);
    row = &endpoint_table[ep];
    if (curl_code != CURLE_OK)
        return classify_curl(row->path, curl_code, curl_text, err);

    obj = parse_exact(tok, body, len);
    if (http_status < 200 || http_status > 299) {
        classify_http(row->path, http_status, obj, err);
        json_object_put(obj);
        return -1;
    }
    if (obj == NULL)
        return err_set(err, ERR_COMET_BAD_RESPONSE, "%s: answer is %s", row->path,
                       len == 0 ? "empty" : "not JSON");

    /* Comet sends application errors as HTTP 200 with an error body. */
    if (json_object_is_type(obj, json_type_object) &&
        json_object_object_get_ex(obj, "Status", &st) && json_object_is_type(st, json_type_int) &&
        json_object_get_int64(st) >= 400) {
        int64_t status = json_object_get_int64(st);

        if (body_status != NULL)
            *body_status = status > INT32_MAX ? INT32_MAX : (int)status;
        err_set(err, status == 403 ? ERR_COMET_AUTH : ERR_COMET_REJECTED, "%s: Status %lld %.*s",
                row->path, (long long)status, COMET_MSG_MAX, body_message(obj));
        json_object_put(obj);
        return -1;
    }
    if (check_shape(row, obj, err) != 0) {
        json_object_put(obj);
        return -1;
    }
    *out = obj;
    return 0;
}

int comet_classify(enum comet_endpoint ep, int curl_code, const char *curl_text,
                   long http_status, const char *body, size_t len,
                   json_object **out, int *body_status, struct err *err)
{
    json_tokener *tok = json_tokener_new_ex(COMET_JSON_DEPTH);
    int rc;

    if (tok == NULL) {
        *out = NULL;
        if (body_status != NULL)
            *body_status = 0;
        return err_set(err, ERR_INTERNAL, "out of memory");
    }
    rc = classify(tok, ep, curl_code, curl_text, http_status, body, len, out, body_status, err);
    json_tokener_free(tok);
    return rc;
}

/* ---- the call ---------------------------------------------------------- */

/* Appends "&name=escaped(value)" (no '&' when first). */
static int form_add(CURL *curl, struct buf *form, const char *name, const char *value)
{
    char *esc;
    int rc;

    esc = curl_easy_escape(curl, value, 0);
    if (esc == NULL)
        return -1;
    rc = (form->len > 0 && buf_append(form, "&", 1) != 0) ||
         buf_append(form, name, strlen(name)) != 0 ||
         buf_append(form, "=", 1) != 0 ||
         buf_append(form, esc, strlen(esc)) != 0 ? -1 : 0;
    sodium_memzero(esc, strlen(esc)); /* may be a password */
    curl_free(esc);
    return rc;
}

static int form_build(CURL *curl, const struct config_server *server,
                      const struct comet_param *params, size_t nparams, struct buf *form)
{
    if (form_add(curl, form, "Username", server->username) != 0 ||
        form_add(curl, form, "AuthType", "Password") != 0 ||
        form_add(curl, form, "Password", server->password) != 0)
        return -1;
    for (size_t i = 0; i < nparams; i++) {
        if (form_add(curl, form, params[i].name, params[i].value) != 0)
            return -1;
    }
    return 0;
}

/* The body of a `once` call, handed to libcurl piece by piece. */
static size_t body_read(char *dst, size_t size, size_t nitems, void *userdata)
{
    struct comet_client *c = userdata;
    size_t n = size * nitems;

    if (n > c->body_len - c->body_off)
        n = c->body_len - c->body_off;
    memcpy(dst, c->body + c->body_off, n);
    c->body_off += n;
    return n;
}

/* libcurl rewinds the body before sending it again. On a reused
 * connection that dies before any answer, it resends the request on a new
 * one without telling us, but Comet may have applied the first (each
 * request-storage-vault adds a vault). Refusing the rewind turns that
 * resend into CURLE_SEND_FAIL_REWIND, which we report as a lost answer,
 * and the action's read-back settles it. A redirect (3xx answered) is a
 * legitimate second send: that rewind is allowed. This keeps such calls on
 * the kept-alive connections instead of a new TCP connection per call. */
static int body_seek(void *userdata, curl_off_t offset, int origin)
{
    struct comet_client *c = userdata;
    long status = 0;

    if (offset != 0 || origin != SEEK_SET)
        return CURL_SEEKFUNC_FAIL;
    if (curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &status) != CURLE_OK ||
        status < 300 || status > 399)
        return CURL_SEEKFUNC_FAIL;
    c->body_off = 0;
    return CURL_SEEKFUNC_OK;
}

/* Sets the options every call shares (and the server's TLS settings) on a
 * freshly reset handle; the first failing setopt stops and is returned. */
static CURLcode call_prepare_constant(struct comet_client *c, const struct config_server *server)
{
    CURLcode rc = CURLE_OK;

#define SETOPT(opt, val) do { if (rc == CURLE_OK) rc = curl_easy_setopt(c->curl, opt, val); } while (0)
    SETOPT(CURLOPT_PROTOCOLS_STR, "http,https");
    SETOPT(CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    SETOPT(CURLOPT_NOSIGNAL, 1L);            /* threads: no SIGALRM for DNS timeouts */
    SETOPT(CURLOPT_POST, 1L);
    SETOPT(CURLOPT_HTTPHEADER, c->headers);
    SETOPT(CURLOPT_USERAGENT, "comet-worker/1");
    SETOPT(CURLOPT_ACCEPT_ENCODING, "");     /* whatever libcurl decodes (gzip) */
    SETOPT(CURLOPT_FOLLOWLOCATION, 1L);      /* as the module does */
    SETOPT(CURLOPT_MAXREDIRS, COMET_MAX_REDIRS);
    SETOPT(CURLOPT_CONNECTTIMEOUT_MS, (long)c->connect_timeout_ms);
    SETOPT(CURLOPT_TIMEOUT_MS, (long)c->timeout_ms);
    SETOPT(CURLOPT_TCP_KEEPALIVE, 1L);
    SETOPT(CURLOPT_SSL_VERIFYPEER, server->insecure ? 0L : 1L);
    SETOPT(CURLOPT_SSL_VERIFYHOST, server->insecure ? 0L : 2L);
    if (server->ca_file[0] != '\0')
        SETOPT(CURLOPT_CAINFO, server->ca_file);
    SETOPT(CURLOPT_WRITEFUNCTION, on_body);
    SETOPT(CURLOPT_WRITEDATA, &c->resp);
    SETOPT(CURLOPT_READFUNCTION, body_read);
    SETOPT(CURLOPT_READDATA, c);
    SETOPT(CURLOPT_SEEKFUNCTION, body_seek);
    SETOPT(CURLOPT_SEEKDATA, c);
    SETOPT(CURLOPT_ERRORBUFFER, c->errbuf);
    /* Answers are a few KiB: an 8 KiB receive buffer instead of 16 saves
     * 1 MiB of RSS per 128 threads. */
    SETOPT(CURLOPT_BUFFERSIZE, 8192L);
    /* The read-callback bodies (see body_read) are a few hundred bytes:
     * the smallest upload buffer libcurl takes instead of its 64 KiB. */
    SETOPT(CURLOPT_UPLOAD_BUFFERSIZE, 16384L);
#undef SETOPT
    return rc;
}

/* Sets the options of one call: the shared ones when the handle does not
 * hold them for this server's TLS settings yet, then URL and body. */
static CURLcode call_prepare(struct comet_client *c, const struct config_server *server,
                             const struct comet_endpoint_row *row, const char *url,
                             const struct buf *form)
{
    CURLcode rc = CURLE_OK;

    if (!c->opts_set || c->opts_insecure != server->insecure ||
        strcmp(c->opts_ca_file, server->ca_file) != 0) {
        /* Reset drops the old options but keeps live connections. */
        curl_easy_reset(c->curl);
        c->opts_set = false;
        rc = call_prepare_constant(c, server);
        if (rc != CURLE_OK)
            return rc;
        c->opts_set = true;
        c->opts_insecure = server->insecure;
        snprintf(c->opts_ca_file, sizeof(c->opts_ca_file), "%s", server->ca_file);
    }
    c->body = form->data;
    c->body_len = form->len;
    c->body_off = 0;
#define SETOPT(opt, val) do { if (rc == CURLE_OK) rc = curl_easy_setopt(c->curl, opt, val); } while (0)
    SETOPT(CURLOPT_URL, url);
    /* An idempotent call goes as POSTFIELDS (one send with the headers; a
     * silent resend is harmless); a `once` call through the read callback
     * so that its resend can be refused (body_seek). POSTFIELDS NULL makes
     * libcurl use the callback; the size keeps a Content-Length. */
    SETOPT(CURLOPT_POSTFIELDS, row->once ? NULL : form->data);
    SETOPT(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)form->len);
#undef SETOPT
    if (rc != CURLE_OK)
        c->opts_set = false; /* start from a reset handle next time */
    return rc;
}

/* Replaces the message when it quotes a secret (a server echoing input). */
static void scrub_secret(struct err *err, const char *secret)
{
    if (err != NULL && secret != NULL && secret[0] != '\0' && strstr(err->msg, secret) != NULL)
        snprintf(err->msg, sizeof(err->msg), "%s (message withheld: it quoted a secret)",
                 err_code_name(err->code));
}

static bool is_secret_param(const char *name)
{
    return strstr(name, "Password") != NULL;
}

/* Wipes the form (passwords) but keeps its memory for the next call,
 * unless a rare large one grew it. */
static void form_wipe(struct comet_client *c)
{
    if (c->form.cap > 64u * 1024u) {
        buf_clear(&c->form);
        return;
    }
    if (c->form.data != NULL)
        sodium_memzero(c->form.data, c->form.len);
    c->form.len = 0;
}

int comet_call(struct comet_client *c, const struct config_server *server,
               enum comet_endpoint ep, const struct comet_param *params, size_t nparams,
               json_object **out, int *body_status, struct err *err)
{
    char url[CONFIG_STR + 64];
    size_t base_len = strlen(server->url);
    long http_status = 0;
    long long started;
    CURLcode rc;
    int ret;

    *out = NULL;
    if (body_status != NULL)
        *body_status = 0;
    if ((unsigned)ep >= COMET__COUNT)
        return err_set(err, ERR_INTERNAL, "unknown endpoint %d", (int)ep);
    while (base_len > 0 && server->url[base_len - 1] == '/')
        base_len--;
    if (snprintf(url, sizeof(url), "%.*s/api/v1/admin/%s", (int)base_len, server->url,
                 endpoint_table[ep].path) >= (int)sizeof(url))
        return err_set(err, ERR_UNKNOWN_SERVER, "server URL too long");

    c->resp.len = 0;
    c->resp.overflow = false;
    c->errbuf[0] = '\0';
    c->form.len = 0;
    if (form_build(c->curl, server, params, nparams, &c->form) != 0) {
        form_wipe(c);
        return err_set(err, ERR_INTERNAL, "%s: out of memory building the request",
                       endpoint_table[ep].path);
    }
    rc = call_prepare(c, server, &endpoint_table[ep], url, &c->form);
    if (rc != CURLE_OK) {
        form_wipe(c);
        return err_set(err, ERR_INTERNAL, "%s: curl option: %s", endpoint_table[ep].path,
                       curl_easy_strerror(rc));
    }
    started = mono_ms();
    rc = curl_easy_perform(c->curl);
    reach_note(server->url, rc);
    form_wipe(c);
    c->body = NULL;
    c->body_len = c->body_off = 0;
    /* The handle must not keep a pointer into the form buffer, which a
     * later call may move (growing it) or free. */
    if (curl_easy_setopt(c->curl, CURLOPT_POSTFIELDS, NULL) != CURLE_OK)
        log_warn("comet: could not clear POSTFIELDS");
    if (rc == CURLE_OK &&
        curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &http_status) != CURLE_OK)
        http_status = 0;
    if (rc == CURLE_WRITE_ERROR && c->resp.overflow)
        snprintf(c->errbuf, sizeof(c->errbuf), "answer over %u bytes", COMET_MAX_RESPONSE);

    ret = classify(c->tok, ep, (int)rc, c->errbuf, http_status, c->resp.data, c->resp.len,
                   out, body_status, err);
    if (ret != 0) {
        scrub_secret(err, server->password);
        for (size_t i = 0; i < nparams; i++) {
            if (is_secret_param(params[i].name))
                scrub_secret(err, params[i].value);
        }
    }
    {
        long long ms = mono_ms() - started;

        metrics_comet_request(ep, ms / 1000.0);
        if (ret != 0)
            metrics_comet_error(err_class_of(err != NULL ? err->code : ERR_INTERNAL));
        if (log_enabled(LOGL_DEBUG))
            log_debug("comet %s: http %ld, %s, %lld ms", endpoint_table[ep].path, http_status,
                  ret == 0 ? "ok" : err_code_name(err != NULL ? err->code : ERR_INTERNAL), ms);
    }
    /* A rare large answer should not pin its memory for the thread's life. */
    if (c->resp.cap > 1024u * 1024u)
        buf_clear(&c->resp);
    return ret;
}
