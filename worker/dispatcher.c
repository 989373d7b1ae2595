/* comet-dispatcher: delivers result events from RabbitMQ to the WHMCS callback, signed. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "daemon.h"
#include "dispatcher.h"
#include "log.h"
#include "metrics.h"

static volatile sig_atomic_t stop_requested;

/* What the dispatcher cannot run without; NULL when complete. */
static const char *missing_setting(const struct config *cfg)
{
    if (cfg->callback_url[0] == '\0')
        return "dispatcher.callback_url is not set (COMET_DISPATCHER_CALLBACK_URL)";
    if (cfg->callback_secret_len == 0)
        return "no callback secret: set dispatcher.secret_file (COMET_DISPATCHER_SECRET_FILE)";
    return NULL;
}

int main(int argc, char **argv)
{
    static const struct daemon_spec spec = {
        "comet-dispatcher",
        "Needs dispatcher.callback_url and dispatcher.secret_file (or COMET_DISPATCHER_SECRET).\n",
        missing_setting,
    };
    static struct config cfg; /* large (key ring, servers): not on the stack */
    int rc = daemon_start(&spec, argc, argv, &cfg, &stop_requested);
    if (rc != DAEMON_RUN)
        return rc;
    struct err e;
    metrics_set_role(METRICS_ROLE_DISPATCHER);
    if (cfg.metrics_port > 0 && metrics_listen(cfg.metrics_port, NULL, NULL, &e) != 0) {
        log_error("metrics listener: %s", e.msg);
        daemon_finish(&cfg);
        return 1;
    }
    /* The URL may carry a path and query but is not a secret; the key is never logged. */
    log_info("starting: callback %s, concurrency %d, timeout %d ms", cfg.callback_url,
             cfg.dispatcher_concurrency, cfg.dispatcher_timeout_ms);
    rc = dispatcher_run(&cfg, &stop_requested);
    metrics_stop();
    daemon_finish(&cfg);
    return rc;
}
