/* Building signed job messages the way the WHMCS module does: used by
 * comet-enqueue, the tests and the benchmarks, so all of them publish
 * exactly what production publishes. */
#ifndef COMET_JOBMSG_H
#define COMET_JOBMSG_H

#include <json-c/json.h>
#include "bus.h"
#include "crypto.h"
#include "errors.h"
#include "job.h"

/* Adds what a job spec may leave out: v, job_id (new UUID), issued_at (now),
 * seq 0 and after null. Returns -1 on allocation failure. */
int jobmsg_defaults(json_object *spec);

/* Seals a plaintext "password" member into "secret" with key, validates the
 * result with the worker's own decoder (job_decode), signs the exact bytes
 * and fills m (exchange comet.jobs, routing key = action, message_id,
 * type, x-comet-kid, x-comet-sig, mandatory). spec is modified, not
 * consumed. Returns 0, or -1 with err (m left empty). */
int jobmsg_build(json_object *spec, const struct key *key, struct job *job, struct bus_msg *m,
                 struct err *err);

#endif
