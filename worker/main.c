/* comet-worker: consumes provisioning jobs from RabbitMQ and runs them against Comet. */
#include <curl/curl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "crypto.h"
#include "log.h"
#include "metrics.h"
#include "runner.h"

static volatile sig_atomic_t stop_requested;

static void on_stop(int sig)
{
    (void)sig;
    stop_requested = 1; /* the runner notices within one wait slice */
}

/* /readyz: connected to the broker and consuming (which implies Redis is
 * reachable: the runner pauses consuming while it is not). */
static bool worker_ready(void *ctx, char *why, size_t n)
{
    const struct runner_status *st = ctx;
    if (!st->connected)
        snprintf(why, n, "not connected to the broker");
    else if (!st->store_ok)
        snprintf(why, n, "Redis unreachable: not taking jobs");
    else if (!st->consuming)
        snprintf(why, n, "not consuming");
    else
        return true;
    return false;
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: comet-worker [-c FILE] [--check-config]\n"
            "  -c, --config FILE   libconfig file (every key can be overridden by COMET_* env)\n"
            "      --check-config  validate, print the effective config (secrets masked), exit\n"
            "  -h, --help          this text\n");
}

int main(int argc, char **argv)
{
    const char *path = NULL;
    int check = 0;
    static const struct option opts[] = {
        { "config", required_argument, NULL, 'c' },
        { "check-config", no_argument, NULL, 'C' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    int ch;
    while ((ch = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        switch (ch) {
        case 'c': path = optarg; break;
        case 'C': check = 1; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (crypto_init() != 0) {
        fprintf(stderr, "comet-worker: libsodium failed to initialise\n");
        return 1;
    }
    static struct config cfg; /* large (key ring, servers): not on the stack */
    struct err e;
    err_clear(&e);
    if (config_load(&cfg, path, &e) != 0) {
        fprintf(stderr, "comet-worker: %s\n", e.msg);
        return 1;
    }
    if (check) {
        config_print(&cfg, stdout);
        int ok = cfg.keys.count > 0 && cfg.server_count > 0;
        if (!ok)
            fprintf(stderr, "comet-worker: config has %zu keys and %d servers; a worker needs both\n",
                    cfg.keys.count, cfg.server_count);
        config_clear(&cfg);
        return ok ? 0 : 1;
    }
    log_init("comet-worker", cfg.log_level, cfg.log_format);
    if (cfg.keys.count == 0 || cfg.server_count == 0) {
        log_error("no signing keys or no Comet servers configured (see --check-config)");
        config_clear(&cfg);
        return 1;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        log_error("libcurl failed to initialise");
        config_clear(&cfg);
        return 1;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_stop;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    static struct runner_status status;
    metrics_set_role(METRICS_ROLE_WORKER);
    if (cfg.metrics_port > 0 && metrics_listen(cfg.metrics_port, worker_ready, &status, &e) != 0) {
        log_error("metrics listener: %s", e.msg);
        curl_global_cleanup();
        config_clear(&cfg);
        return 1;
    }
    log_info("starting: %d servers, %zu keys, concurrency %d", cfg.server_count, cfg.keys.count,
             cfg.worker_concurrency);
    int rc = runner_run(&cfg, &stop_requested, &status);
    metrics_stop();
    curl_global_cleanup();
    config_clear(&cfg);
    return rc;
}
