/* Decoding of application/x-www-form-urlencoded bodies into key/value pairs. */
#include "form.h"

#include <stdlib.h>
#include <string.h>

static int form_hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decodes src[0..len) into a new NUL-terminated string ('+' is a space).
 * Returns NULL on a malformed escape or out of memory. */
static char *form_decode(const char *src, size_t len)
{
    char *out = malloc(len + 1);
    if (out == NULL)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        char c = src[i];
        if (c == '+') {
            out[o++] = ' ';
        } else if (c == '%') {
            if (len - i < 3) { /* '%' needs two hex digits after it */
                free(out);
                return NULL;
            }
            int hi = form_hex_value(src[i + 1]);
            int lo = form_hex_value(src[i + 2]);
            if (hi < 0 || lo < 0) {
                free(out);
                return NULL;
            }
            out[o++] = (char)(hi * 16 + lo);
            i += 2;
        } else {
            out[o++] = c;
        }
    }
    out[o] = '\0';
    return out;
}

static int form_append(struct form *form, char *key, char *val)
{
    if (form->n == form->cap) {
        size_t cap = form->cap ? form->cap * 2 : 16;
        struct form_field *f = realloc(form->fields, cap * sizeof(*f));
        if (f == NULL)
            return -1;
        form->fields = f;
        form->cap = cap;
    }
    form->fields[form->n].key = key;
    form->fields[form->n].val = val;
    form->n++;
    return 0;
}

int form_parse(struct form *form, const char *body, size_t len)
{
    size_t pos = 0;
    while (pos < len) {
        const char *amp = memchr(body + pos, '&', len - pos);
        size_t end = amp ? (size_t)(amp - body) : len;
        if (end > pos) {
            const char *eq = memchr(body + pos, '=', end - pos);
            size_t klen = eq ? (size_t)(eq - (body + pos)) : end - pos;
            const char *vstart = eq ? eq + 1 : body + end;
            size_t vlen = (size_t)(body + end - vstart);
            char *key = form_decode(body + pos, klen);
            char *val = form_decode(vstart, vlen);
            if (key == NULL || val == NULL || form_append(form, key, val) != 0) {
                free(key);
                free(val);
                return -1;
            }
        }
        pos = end + 1;
    }
    return 0;
}

const char *form_find(const struct form *form, const char *key)
{
    for (size_t i = 0; i < form->n; i++)
        if (strcmp(form->fields[i].key, key) == 0)
            return form->fields[i].val;
    return NULL;
}

void form_clear(struct form *form)
{
    if (form == NULL)
        return;
    for (size_t i = 0; i < form->n; i++) {
        free(form->fields[i].key);
        free(form->fields[i].val);
    }
    free(form->fields);
    form->fields = NULL;
    form->n = 0;
    form->cap = 0;
}
