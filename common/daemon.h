/* Start-up shared by the daemons (comet-worker, comet-dispatcher): the
 * command line (-c FILE, --check-config, --help), libsodium, the config and
 * the settings the program cannot run without, logging, libcurl, and a
 * SIGTERM/SIGINT flag the program's loop watches. */
#ifndef COMET_DAEMON_H
#define COMET_DAEMON_H

#include <signal.h>
#include "config.h"

struct daemon_spec {
    const char *program;                        /* "comet-worker" */
    const char *help_extra;                     /* more --help lines, or NULL */
    /* What cfg lacks for this program, or NULL when it is complete. */
    const char *(*missing)(const struct config *cfg);
};

#define DAEMON_RUN (-1)

/* Returns DAEMON_RUN with cfg loaded, logging set, libcurl initialised and
 * *stop wired to SIGTERM/SIGINT; or an exit code (0 after --help or a good
 * --check-config, 1 on a bad config, 2 on bad usage) with nothing to clean. */
int daemon_start(const struct daemon_spec *spec, int argc, char **argv, struct config *cfg,
                 volatile sig_atomic_t *stop);
/* Sets *stop when SIGTERM or SIGINT arrives (for the daemons and the tools'
 * loops); 0, or -1 when a handler cannot be installed. */
int daemon_catch_stop(volatile sig_atomic_t *stop);
/* Undoes daemon_start after a run: libcurl, and the config's secrets. */
void daemon_finish(struct config *cfg);

#endif
