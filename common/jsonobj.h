/* json-c ownership helper shared by every file that builds JSON objects. */
#ifndef COMET_JSONOBJ_H
#define COMET_JSONOBJ_H

#include <json-c/json.h>

/* Sets obj[key] = val and takes val in every case: on failure (val NULL
 * because its allocation failed, or the add failed) val is released and -1
 * returned. JSON null is added with json_object_object_add(obj, key, NULL). */
int jsonobj_put(json_object *obj, const char *key, json_object *val);

#endif
