/* Parsing of application/x-www-form-urlencoded request bodies. */
#ifndef FAKE_FORM_H
#define FAKE_FORM_H

#include <stddef.h>

/* One decoded key=value pair; both strings owned by the form. */
struct form_field {
    char *key;
    char *val;
};

/* All pairs of one body, in body order. Zero-initialise, then form_parse. */
struct form {
    struct form_field *fields; /* array of n entries, owned */
    size_t n;                  /* pairs in use */
    size_t cap;                /* allocated entries */
};

/* Decodes body (len bytes, need not be NUL-terminated) into form.
 * Returns 0, or -1 on a bad percent escape or out of memory; on failure
 * the form may hold some pairs, which form_clear frees. */
int form_parse(struct form *form, const char *body, size_t len);

/* The value of the first pair named key, or NULL; the form keeps it. */
const char *form_find(const struct form *form, const char *key);

/* Frees every pair; the form can be reused afterwards. Accepts NULL. */
void form_clear(struct form *form);

#endif
