/* comet-dispatcher: delivers result events from RabbitMQ to the WHMCS callback, signed. */
#include <curl/curl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "crypto.h"
#include "dispatcher.h"
#include "log.h"

static volatile sig_atomic_t stop_requested;

static void on_stop(int sig)
{
    (void)sig;
    stop_requested = 1; /* the loop notices within one wait slice */
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: comet-dispatcher [-c FILE] [--check-config]\n"
            "  -c, --config FILE   libconfig file (every key can be overridden by COMET_* env)\n"
            "      --check-config  validate, print the effective config (secrets masked), exit\n"
            "  -h, --help          this text\n"
            "Needs dispatcher.callback_url and dispatcher.secret_file (or COMET_DISPATCHER_SECRET).\n");
}

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
        fprintf(stderr, "comet-dispatcher: libsodium failed to initialise\n");
        return 1;
    }
    static struct config cfg; /* large (key ring, servers): not on the stack */
    struct err e;
    err_clear(&e);
    if (config_load(&cfg, path, &e) != 0) {
        fprintf(stderr, "comet-dispatcher: %s\n", e.msg);
        return 1;
    }
    const char *missing = missing_setting(&cfg);
    if (check) {
        config_print(&cfg, stdout);
        if (missing)
            fprintf(stderr, "comet-dispatcher: %s\n", missing);
        config_clear(&cfg);
        return missing ? 1 : 0;
    }
    log_init("comet-dispatcher", cfg.log_level, cfg.log_format);
    if (missing) {
        log_error("%s", missing);
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
    /* Retry jitter differs between dispatcher processes. */
    srand((unsigned)time(NULL) ^ (unsigned)getpid());

    /* The URL may carry a path and query but is not a secret; the key is never logged. */
    log_info("starting: callback %s, concurrency %d, timeout %d ms", cfg.callback_url,
             cfg.dispatcher_concurrency, cfg.dispatcher_timeout_ms);
    int rc = dispatcher_run(&cfg, &stop_requested);
    curl_global_cleanup();
    config_clear(&cfg);
    return rc;
}
