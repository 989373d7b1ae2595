/* The six provisioning actions, with the original WHMCS module's semantics
 * (username choice, policy group, storage vault, quotas, suspend, delete,
 * password), made safe to run again after an ambiguous failure. */
#ifndef COMET_ACTIONS_H
#define COMET_ACTIONS_H

#include "comet.h"
#include "config.h"
#include "errors.h"
#include "job.h"
#include "store.h"

/* What an action needs; owned by the calling thread, reused across jobs. */
struct action_ctx {
    const struct config *cfg;
    const struct config_server *server;  /* the job's server, from config */
    struct comet_client *comet;
    struct store *store;
};

/* Runs job->action. password is the unsealed account password (NULL for
 * actions without one). On success returns 0 and fills res->username,
 * res->storage_vault_id and res->policy_id where the action knows them.
 * On failure returns -1 with err classified (see errors.h). */
int action_run(struct action_ctx *ctx, const struct job *job, const char *password,
               struct result *res, struct err *err);

#endif
