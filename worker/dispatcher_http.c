/* Callback POSTs over libcurl multi, its sockets watched through one epoll set. */
#include "dispatcher_http.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "crypto.h"

#define DETAIL_BODY_MAX 200     /* answer bytes kept for the log and the dead-letter reason */
#define EPOLL_BATCH 64          /* sockets handled per epoll_wait */
#define CONNECT_TIMEOUT_MAX_MS 5000 /* a dead host should not eat the whole request timeout */

/* One POST in flight; owned by the multi handle's list until done or aborted. */
struct dxfer {
    CURL *easy;
    struct curl_slist *headers;
    void *ctx;
    long long start_ms;
    char body_head[DETAIL_BODY_MAX + 1]; /* start of the answer */
    size_t body_len;
    char errbuf[CURL_ERROR_SIZE];
    struct dxfer *next;
};

struct dhttp {
    CURLM *multi;
    int epfd;
    long long timer_due_ms;     /* curl's next timeout; -1 = none */
    char url[512];
    unsigned char secret[256];
    size_t secret_len;
    long timeout_ms;
    struct dxfer *xfers;        /* every transfer in flight */
    size_t busy;
};

/* ---- curl callbacks ---------------------------------------------------------- */

/* curl says which events a socket needs: mirror them into the epoll set. */
static int on_socket(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
    (void)easy;
    struct dhttp *h = userp;
    if (what == CURL_POLL_REMOVE) {
        /* The socket may already be closed (EBADF): then epoll dropped it itself. */
        epoll_ctl(h->epfd, EPOLL_CTL_DEL, s, NULL);
        curl_multi_assign(h->multi, s, NULL);
        return 0;
    }
    struct epoll_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.data.fd = s;
    if (what == CURL_POLL_IN || what == CURL_POLL_INOUT)
        ev.events |= EPOLLIN;
    if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT)
        ev.events |= EPOLLOUT;
    int op = socketp ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
    if (epoll_ctl(h->epfd, op, s, &ev) != 0) {
        /* Our marker and epoll disagree (a reused fd number): try the other op. */
        op = op == EPOLL_CTL_ADD ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
        if (epoll_ctl(h->epfd, op, s, &ev) != 0)
            return -1;
    }
    if (!socketp)
        curl_multi_assign(h->multi, s, h); /* any non-NULL marker: "in the set" */
    return 0;
}

static int on_timer(CURLM *multi, long timeout_ms, void *userp)
{
    (void)multi;
    struct dhttp *h = userp;
    h->timer_due_ms = timeout_ms < 0 ? -1 : mono_ms() + timeout_ms;
    return 0;
}

/* Keeps the start of the answer (for the reason), discards the rest. */
static size_t on_body(char *data, size_t size, size_t nmemb, void *userp)
{
    struct dxfer *x = userp;
    size_t n = size * nmemb;
    size_t room = DETAIL_BODY_MAX - x->body_len;
    size_t take = n < room ? n : room;
    memcpy(x->body_head + x->body_len, data, take);
    x->body_len += take;
    x->body_head[x->body_len] = '\0';
    return n;
}

/* ---- lifecycle ---------------------------------------------------------------- */

struct dhttp *dhttp_new(const char *url, const unsigned char *secret, size_t secret_len,
                        int timeout_ms, int max_conns, struct err *err)
{
    if (secret_len == 0 || secret_len > sizeof(((struct dhttp *)0)->secret)) {
        err_set(err, ERR_INTERNAL, "dispatcher: the callback secret is missing or too long");
        return NULL;
    }
    struct dhttp *h = calloc(1, sizeof(*h));
    if (!h) {
        err_set(err, ERR_INTERNAL, "dispatcher: out of memory");
        return NULL;
    }
    h->epfd = -1;
    h->timer_due_ms = -1;
    snprintf(h->url, sizeof(h->url), "%s", url);
    memcpy(h->secret, secret, secret_len);
    h->secret_len = secret_len;
    h->timeout_ms = timeout_ms;
    h->epfd = epoll_create1(EPOLL_CLOEXEC);
    h->multi = curl_multi_init();
    if (h->epfd < 0 || !h->multi) {
        err_set(err, ERR_INTERNAL, "dispatcher: cannot set up libcurl multi or epoll");
        dhttp_free(h);
        return NULL;
    }
    if (curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, on_socket) != CURLM_OK ||
        curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h) != CURLM_OK ||
        curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, on_timer) != CURLM_OK ||
        curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h) != CURLM_OK ||
        curl_multi_setopt(h->multi, CURLMOPT_MAXCONNECTS, (long)max_conns) != CURLM_OK) {
        err_set(err, ERR_INTERNAL, "dispatcher: libcurl multi refused an option");
        dhttp_free(h);
        return NULL;
    }
    return h;
}

static void xfer_free(struct dhttp *h, struct dxfer *x)
{
    if (x->easy) {
        curl_multi_remove_handle(h->multi, x->easy);
        curl_easy_cleanup(x->easy);
    }
    curl_slist_free_all(x->headers);
    free(x);
}

void dhttp_abort_all(struct dhttp *h)
{
    if (!h)
        return;
    struct dxfer *x = h->xfers;
    while (x) {
        struct dxfer *next = x->next;
        xfer_free(h, x);
        x = next;
    }
    h->xfers = NULL;
    h->busy = 0;
}

void dhttp_free(struct dhttp *h)
{
    if (!h)
        return;
    dhttp_abort_all(h);
    if (h->multi)
        curl_multi_cleanup(h->multi);
    if (h->epfd >= 0)
        close(h->epfd);
    explicit_bzero(h->secret, sizeof(h->secret));
    free(h);
}

/* ---- posting -------------------------------------------------------------------- */

/* Builds the three headers; the signature covers "<ts>.<body>". */
static struct curl_slist *signed_headers(const struct dhttp *h, const char *body, size_t len)
{
    long long ts = (long long)time(NULL);
    char sig[65], line[128];
    sign_callback_hex(h->secret, h->secret_len, ts, body, len, sig);
    struct curl_slist *list = NULL, *tmp;
    const char *fixed[] = {
        "Content-Type: application/json",
        "Expect:", /* no 100-continue round trip before the body */
    };
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) {
        tmp = curl_slist_append(list, fixed[i]);
        if (!tmp)
            goto fail;
        list = tmp;
    }
    snprintf(line, sizeof(line), "X-Comet-Timestamp: %lld", ts);
    tmp = curl_slist_append(list, line);
    if (!tmp)
        goto fail;
    list = tmp;
    snprintf(line, sizeof(line), "X-Comet-Signature: v1=%s", sig);
    tmp = curl_slist_append(list, line);
    explicit_bzero(line, sizeof(line));
    if (!tmp)
        goto fail;
    return tmp;
fail:
    curl_slist_free_all(list);
    return NULL;
}

int dhttp_post(struct dhttp *h, const char *body, size_t len, void *ctx, struct err *err)
{
    struct dxfer *x = calloc(1, sizeof(*x));
    if (!x)
        return err_set(err, ERR_INTERNAL, "dispatcher: out of memory");
    x->ctx = ctx;
    x->start_ms = mono_ms();
    x->easy = curl_easy_init();
    x->headers = x->easy ? signed_headers(h, body, len) : NULL;
    if (!x->easy || !x->headers) {
        xfer_free(h, x);
        return err_set(err, ERR_INTERNAL, "dispatcher: cannot prepare a request");
    }
    long connect_ms = h->timeout_ms < CONNECT_TIMEOUT_MAX_MS ? h->timeout_ms : CONNECT_TIMEOUT_MAX_MS;
    CURL *e = x->easy;
    /* TLS verification stays on (libcurl's default, set explicitly so it is visible). */
    if (curl_easy_setopt(e, CURLOPT_URL, h->url) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_HTTPHEADER, x->headers) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_POST, 1L) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, body) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, h->timeout_ms) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, connect_ms) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_USERAGENT, "comet-dispatcher/1") != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_WRITEDATA, x) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_PRIVATE, x) != CURLE_OK) {
        xfer_free(h, x);
        return err_set(err, ERR_INTERNAL, "dispatcher: libcurl refused a request option");
    }
    if (curl_multi_add_handle(h->multi, e) != CURLM_OK) {
        curl_easy_cleanup(x->easy);
        x->easy = NULL;
        xfer_free(h, x);
        return err_set(err, ERR_INTERNAL, "dispatcher: libcurl multi refused a transfer");
    }
    x->next = h->xfers;
    h->xfers = x;
    h->busy++;
    return 0;
}

/* ---- driving ----------------------------------------------------------------------- */

int dhttp_fd(const struct dhttp *h)
{
    return h->epfd;
}

long dhttp_timeout_ms(const struct dhttp *h)
{
    if (h->timer_due_ms < 0)
        return -1;
    long long left = h->timer_due_ms - mono_ms();
    return left > 0 ? (long)left : 0;
}

size_t dhttp_busy(const struct dhttp *h)
{
    return h->busy;
}

enum dhttp_outcome dhttp_classify(int curl_code, long status)
{
    if (curl_code != CURLE_OK || status == 0)
        return DHTTP_RETRY;         /* no answer: WHMCS down, slow, or unreachable */
    if (status >= 200 && status < 300)
        return DHTTP_DELIVERED;
    if (status == 408 || status == 429)
        return DHTTP_RETRY;         /* "later", not "never" */
    if (status >= 400 && status < 500)
        return DHTTP_REFUSED;
    /* 5xx, and 1xx/3xx (a proxy or a misconfigured URL): keep the event until fixed. */
    return DHTTP_RETRY;
}

static void unlink_xfer(struct dhttp *h, struct dxfer *x)
{
    for (struct dxfer **p = &h->xfers; *p; p = &(*p)->next)
        if (*p == x) {
            *p = x->next;
            h->busy--;
            return;
        }
}

/* Control characters out of the answer excerpt: it goes into logs and headers. */
static void sanitize(char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || (unsigned char)*s == 0x7f)
            *s = ' ';
}

static void finish(struct dhttp *h, CURL *easy, CURLcode rc, dhttp_done_fn done, void *arg)
{
    char *priv = NULL;
    if (curl_easy_getinfo(easy, CURLINFO_PRIVATE, &priv) != CURLE_OK || !priv)
        return;
    struct dxfer *x = (struct dxfer *)priv;
    long status = 0;
    if (rc == CURLE_OK && curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status) != CURLE_OK)
        status = 0;
    struct dhttp_done d;
    memset(&d, 0, sizeof(d));
    d.ctx = x->ctx;
    d.status = status;
    d.outcome = dhttp_classify((int)rc, status);
    d.duration_ms = (long)(mono_ms() - x->start_ms);
    if (rc != CURLE_OK)
        snprintf(d.detail, sizeof(d.detail), "%s", x->errbuf[0] ? x->errbuf : curl_easy_strerror(rc));
    else
        snprintf(d.detail, sizeof(d.detail), "%s", x->body_head);
    sanitize(d.detail);
    unlink_xfer(h, x);
    xfer_free(h, x);
    done(&d, arg);
}

int dhttp_run(struct dhttp *h, dhttp_done_fn done, void *arg, struct err *err)
{
    int running = 0;
    struct epoll_event evs[EPOLL_BATCH];
    int n = epoll_wait(h->epfd, evs, EPOLL_BATCH, 0);
    if (n < 0 && errno != EINTR)
        return err_set(err, ERR_INTERNAL, "dispatcher: epoll_wait: %s", strerror(errno));
    for (int i = 0; i < n; i++) {
        int mask = 0;
        if (evs[i].events & (EPOLLIN | EPOLLHUP))
            mask |= CURL_CSELECT_IN;
        if (evs[i].events & EPOLLOUT)
            mask |= CURL_CSELECT_OUT;
        if (evs[i].events & EPOLLERR)
            mask |= CURL_CSELECT_ERR;
        if (curl_multi_socket_action(h->multi, evs[i].data.fd, mask, &running) != CURLM_OK)
            return err_set(err, ERR_INTERNAL, "dispatcher: curl_multi_socket_action failed");
    }
    if (h->timer_due_ms >= 0 && mono_ms() >= h->timer_due_ms) {
        h->timer_due_ms = -1; /* curl sets a new one from inside the call if it needs it */
        if (curl_multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &running) != CURLM_OK)
            return err_set(err, ERR_INTERNAL, "dispatcher: curl_multi_socket_action failed");
    }
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(h->multi, &left)) != NULL)
        if (msg->msg == CURLMSG_DONE)
            finish(h, msg->easy_handle, msg->data.result, done, arg);
    return 0;
}
