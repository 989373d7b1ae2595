/* comet-worker: consumes provisioning jobs from RabbitMQ and runs them against Comet. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "daemon.h"
#include "log.h"
#include "metrics.h"
#include "runner.h"

static volatile sig_atomic_t stop_requested;

/* /readyz: connected to the broker and consuming (which implies Redis and
 * a Comet server are reachable: the runner pauses consuming while not). */
static bool worker_ready(void *ctx, char *why, size_t n)
{
    const struct runner_status *st = ctx;
    if (!st->connected)
        snprintf(why, n, "not connected to the broker");
    else if (!st->store_ok)
        snprintf(why, n, "Redis unreachable: not taking jobs");
    else if (!st->comet_ok)
        snprintf(why, n, "no Comet server reachable: not taking jobs");
    else if (!st->consuming)
        snprintf(why, n, "not consuming");
    else
        return true;
    return false;
}

static const char *worker_missing(const struct config *cfg)
{
    if (cfg->keys.count == 0)
        return "no signing keys configured (keys, or COMET_KEYS)";
    if (cfg->server_count == 0)
        return "no Comet servers configured (servers, or COMET_SERVER_URL)";
    return NULL;
}

int main(int argc, char **argv)
{
    static const struct daemon_spec spec = { "comet-worker", NULL, worker_missing };
    static struct config cfg; /* large (key ring, servers): not on the stack */
    int rc = daemon_start(&spec, argc, argv, &cfg, &stop_requested);
    if (rc != DAEMON_RUN)
        return rc;
    static struct runner_status status;
    struct err e;
    metrics_set_role(METRICS_ROLE_WORKER);
    if (cfg.metrics_port > 0 && metrics_listen(cfg.metrics_port, worker_ready, &status, &e) != 0) {
        log_error("metrics listener: %s", e.msg);
        daemon_finish(&cfg);
        return 1;
    }
    log_info("starting: %d servers, %zu keys, concurrency %d", cfg.server_count, cfg.keys.count,
             cfg.worker_concurrency);
    rc = runner_run(&cfg, &stop_requested, &status);
    metrics_stop();
    daemon_finish(&cfg);
    return rc;
}
