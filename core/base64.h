/* base64.h - RFC 4648 base64 for the binary fields of metadata blobs.
 * Strict decoding: padding required, no whitespace, no other alphabet. */
#ifndef XFER_CORE_BASE64_H
#define XFER_CORE_BASE64_H

#include <stddef.h>

#include <jansson.h>

/* Bytes xfer__b64_encode writes for n input bytes, NUL included. */
size_t xfer__b64_encoded_size(size_t n);
/* Encode n bytes of in to out (xfer__b64_encoded_size(n) bytes). */
void xfer__b64_encode(const void *in, size_t n, char *out);
/* Decode the NUL-terminated text into out (at most cap bytes); returns
 * the number of bytes, or -1 if the text is not valid base64 or does not
 * fit. */
long xfer__b64_decode(const char *in, void *out, size_t cap);

/* A new JSON string holding the base64 of n bytes; NULL when out of
 * memory (json_object_set_new and json_pack accept NULL as a failure). */
json_t *xfer__b64_json(const void *in, size_t n);

#endif /* XFER_CORE_BASE64_H */
