/* Command line, config, logging and signals for the daemons. */
#include "daemon.h"

#include <curl/curl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "crypto.h"
#include "log.h"

static volatile sig_atomic_t *stop_flag;

static void on_stop(int sig)
{
    (void)sig;
    if (stop_flag)
        *stop_flag = 1; /* the loop notices within one wait slice */
}

int daemon_catch_stop(volatile sig_atomic_t *stop)
{
    struct sigaction sa;

    stop_flag = stop;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_stop;
    if (sigemptyset(&sa.sa_mask) != 0 || sigaction(SIGTERM, &sa, NULL) != 0 ||
        sigaction(SIGINT, &sa, NULL) != 0)
        return -1;
    return 0;
}

static void usage(const struct daemon_spec *spec, FILE *out)
{
    fprintf(out,
            "usage: %s [-c FILE] [--check-config]\n"
            "  -c, --config FILE   libconfig file (every key can be overridden by COMET_* env)\n"
            "      --check-config  validate, print the effective config (secrets masked), exit\n"
            "  -h, --help          this text\n"
            "%s",
            spec->program, spec->help_extra ? spec->help_extra : "");
}

int daemon_start(const struct daemon_spec *spec, int argc, char **argv, struct config *cfg,
                 volatile sig_atomic_t *stop)
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
        case 'h': usage(spec, stdout); return 0;
        default: usage(spec, stderr); return 2;
        }
    }
    if (crypto_init() != 0) {
        fprintf(stderr, "%s: libsodium failed to initialise\n", spec->program);
        return 1;
    }
    struct err e;
    err_clear(&e);
    if (config_load(cfg, path, &e) != 0) {
        fprintf(stderr, "%s: %s\n", spec->program, e.msg);
        return 1;
    }
    const char *missing = spec->missing ? spec->missing(cfg) : NULL;
    if (check) {
        config_print(cfg, stdout);
        if (missing)
            fprintf(stderr, "%s: %s\n", spec->program, missing);
        config_clear(cfg);
        return missing ? 1 : 0;
    }
    log_init(spec->program, cfg->log_level, cfg->log_format);
    if (missing) {
        log_error("%s", missing);
        config_clear(cfg);
        return 1;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        log_error("libcurl failed to initialise");
        config_clear(cfg);
        return 1;
    }
    if (daemon_catch_stop(stop) != 0 || signal(SIGPIPE, SIG_IGN) == SIG_ERR) {
        log_error("cannot install signal handlers");
        curl_global_cleanup();
        config_clear(cfg);
        return 1;
    }
    /* Backoff jitter must differ between processes started together. */
    srand((unsigned)time(NULL) ^ (unsigned)getpid());
    return DAEMON_RUN;
}

void daemon_finish(struct config *cfg)
{
    curl_global_cleanup();
    config_clear(cfg);
}
