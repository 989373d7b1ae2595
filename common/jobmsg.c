/* Signed job messages from job specs, as the WHMCS module builds them. */
#include "jobmsg.h"
#include "jsonobj.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int jobmsg_defaults(json_object *spec)
{
    json_object *v;
    int rc = 0;
    if (!json_object_object_get_ex(spec, "v", NULL))
        rc |= jsonobj_put(spec, "v", json_object_new_int(JOB_VERSION));
    if (!json_object_object_get_ex(spec, "job_id", &v) || !json_object_is_type(v, json_type_string)) {
        char id[UUID_STR_LEN];
        uuid4(id);
        rc |= jsonobj_put(spec, "job_id", json_object_new_string(id));
    }
    if (!json_object_object_get_ex(spec, "issued_at", NULL)) {
        char ts[32];
        format_time_ms(now_ms(), ts);
        rc |= jsonobj_put(spec, "issued_at", json_object_new_string(ts));
    }
    if (!json_object_object_get_ex(spec, "seq", NULL))
        rc |= jsonobj_put(spec, "seq", json_object_new_int(0));
    if (!json_object_object_get_ex(spec, "after", NULL))
        rc |= json_object_object_add(spec, "after", NULL); /* JSON null */
    return rc ? -1 : 0;
}

static int seal_into(json_object *spec, const struct key *key, struct err *e)
{
    json_object *pw;
    if (!json_object_object_get_ex(spec, "password", &pw))
        return 0;
    char *nonce = NULL, *box = NULL;
    if (seal_password(key, json_object_get_string(pw), &nonce, &box, e) != 0)
        return -1;
    json_object *sec = json_object_new_object();
    int rc = !sec || jsonobj_put(sec, "kid", json_object_new_string(key->id)) ||
             jsonobj_put(sec, "nonce", json_object_new_string(nonce)) ||
             jsonobj_put(sec, "box", json_object_new_string(box));
    free(nonce);
    free(box);
    if (rc) {
        json_object_put(sec);
        return err_set(e, ERR_INTERNAL, "out of memory");
    }
    json_object_object_del(spec, "password"); /* the plaintext never leaves this process */
    return jsonobj_put(spec, "secret", sec) ? err_set(e, ERR_INTERNAL, "out of memory") : 0;
}

int jobmsg_build(json_object *spec, const struct key *key, struct job *job, struct bus_msg *m,
                 struct err *e)
{
    bus_msg_init(m, BUS_EX_JOBS, "");
    if (jobmsg_defaults(spec) != 0)
        return err_set(e, ERR_INTERNAL, "out of memory");
    if (seal_into(spec, key, e) != 0)
        return -1;
    const char *text = json_object_to_json_string_ext(spec, JSON_C_TO_STRING_PLAIN);
    if (!text)
        return err_set(e, ERR_INTERNAL, "out of memory");
    size_t len = strlen(text);
    /* The worker's checks, here: a bad job fails at the publisher, not in the queue. */
    if (job_decode(text, len, job, e) != 0)
        return -1;
    char *sig = sign_body_b64(key, text, len);
    if (!sig || bus_msg_set_body(m, text, len) != 0) {
        free(sig);
        bus_msg_clear(m);
        return err_set(e, ERR_INTERNAL, "out of memory");
    }
    snprintf(m->routing_key, sizeof(m->routing_key), "%s", job_action_name(job->action));
    snprintf(m->message_id, sizeof(m->message_id), "%s", job->job_id);
    snprintf(m->type, sizeof(m->type), "%s", job_action_name(job->action));
    m->mandatory = true;
    int rc = bus_msg_add_str(m, BUS_H_KID, key->id) || bus_msg_add_str(m, BUS_H_SIG, sig);
    free(sig);
    if (rc) {
        bus_msg_clear(m);
        return err_set(e, ERR_INTERNAL, "too many headers");
    }
    return 0;
}
