/* The six provisioning actions, with the original WHMCS module's semantics
 * (username choice, policy group, storage vault, quotas, suspend, delete,
 * password), made safe to run again after an ambiguous failure. */
#ifndef COMET_ACTIONS_H
#define COMET_ACTIONS_H

#include "account.h"
#include "comet.h"
#include "config.h"
#include "errors.h"
#include "job.h"
#include "store.h"

/* A Comet DestinationID (a GUID) fits with room to spare. */
#define ACTION_VAULT_ID_MAX 128

/* What earlier attempts of a create recorded (fields of job:<id>): the
 * gate reads them in its round trip once it holds the service lock, so
 * the action need not ask Redis again. Bound to its own buffers by
 * action_steps_init; not to be copied. */
struct action_steps {
    char username[ACCOUNT_USERNAME_MAX];
    char vault_id[ACTION_VAULT_ID_MAX];
    char vault[16];
    char *outs[3];
    size_t lens[3];
    struct store_fields fields;
};
void action_steps_init(struct action_steps *st);

/* What an action needs; owned by the calling thread, reused across jobs. */
struct action_ctx {
    const struct config *cfg;
    const struct config_server *server;  /* the job's server, from config */
    struct comet_client *comet;
    struct store *store;
    const struct action_steps *steps;    /* read by the gate, or NULL: read them here */
};

/* Runs job->action. password is the unsealed account password (NULL for
 * actions without one). On success returns 0 and fills res->username,
 * res->storage_vault_id and res->policy_id where the action knows them.
 * On failure returns -1 with err classified (see errors.h). */
int action_run(struct action_ctx *ctx, const struct job *job, const char *password,
               struct result *res, struct err *err);

#endif
