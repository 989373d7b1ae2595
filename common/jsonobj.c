/* Adding members to json-c objects without leaking on failure. */
#include "jsonobj.h"

int jsonobj_put(json_object *obj, const char *key, json_object *val)
{
    if (val == NULL)
        return -1;
    if (json_object_object_add(obj, key, val) != 0) {
        json_object_put(val);
        return -1;
    }
    return 0;
}
