/* test-errors.c - status strings and the thread-local error sentence:
 * every code has its own text, and one thread's error never shows up
 * in another. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "tests/common/xt.h"

static const xfer_status_t all_codes[] = {
    XFER_OK, XFER_IN_PROG, XFER_ERR_INVALID, XFER_ERR_NOT_FOUND,
    XFER_ERR_NOMEM, XFER_ERR_NOT_SUPPORTED, XFER_ERR_BACKEND,
    XFER_ERR_REMOTE_DISCONNECT, XFER_ERR_TIMEOUT, XFER_ERR_CANCELED,
    XFER_ERR_ACCESS, XFER_ERR_BUSY, XFER_ERR_EXISTS, XFER_ERR_LOAD,
    XFER_ERR_CONFIG, XFER_ERR_AUTH,
};
#define NCODES (sizeof(all_codes) / sizeof(all_codes[0]))

static void test_strerror_distinct(void)
{
    for (size_t i = 0; i < NCODES; i++) {
        const char *s = xfer_strerror(all_codes[i]);

        XT_CHECK(s != NULL && s[0] != '\0', "xfer_strerror(%d) is empty",
                 (int)all_codes[i]);
        for (size_t j = 0; s && j < i; j++)
            XT_CHECK(strcmp(s, xfer_strerror(all_codes[j])) != 0,
                     "codes %d and %d share the sentence \"%s\"",
                     (int)all_codes[i], (int)all_codes[j], s);
    }
}

static void test_strerror_unknown(void)
{
    static const int unknown[] = {-15, -999, 2, 12345, -2147483647 - 1};

    for (size_t i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++) {
        const char *s = xfer_strerror((xfer_status_t)unknown[i]);

        XT_CHECK(s != NULL && s[0] != '\0', "xfer_strerror(%d) is empty",
                 unknown[i]);
        /* Not mistaken for any real code. */
        for (size_t j = 0; s && j < NCODES; j++)
            XT_CHECK(strcmp(s, xfer_strerror(all_codes[j])) != 0,
                     "unknown code %d reads as code %d", unknown[i],
                     (int)all_codes[j]);
    }
}

static void test_errors_negative(void)
{
    for (size_t i = 2; i < NCODES; i++)
        XT_CHECK(all_codes[i] < 0, "error code %d is not negative",
                 (int)all_codes[i]);
}

static void test_version(void)
{
    char want[32];

    snprintf(want, sizeof(want), "%d.%d.%d", XFER_VERSION_MAJOR,
             XFER_VERSION_MINOR, XFER_VERSION_PATCH);
    XT_CHECK(strcmp(xfer_version(), want) == 0, "xfer_version() \"%s\", "
             "headers say \"%s\"", xfer_version(), want);
}

static void test_last_error_set_and_cleared(void)
{
    xfer_agent_opts_t o;
    xfer_agent_t *a = NULL;

    xfer_agent_opts_init(&o);
    o.name = "";
    XT_STATUS(xfer_agent_create(&o, &a), XFER_ERR_INVALID);
    XT_ERR_HAS("name");
    CU_ASSERT_PTR_NULL(a);
    /* A call that succeeds leaves no stale sentence behind. */
    o.name = xt_name("err");
    XT_STATUS_FATAL(xfer_agent_create(&o, &a), XFER_OK);
    XT_CHECK(strcmp(xfer_last_error(), "") == 0, "last error after success: "
             "\"%s\"", xfer_last_error());
    xfer_agent_destroy(a);
}

static void test_last_error_long(void)
{
    char big[4096];

    memset(big, 'e', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    CU_ASSERT_EQUAL(xfer__err(XFER_ERR_BACKEND, "%s%s", big, big),
                    XFER_ERR_BACKEND);
    XT_CHECK(strlen(xfer_last_error()) > 100 &&
                 strncmp(xfer_last_error(), "eeee", 4) == 0,
             "long sentence truncated to \"%.20s...\"", xfer_last_error());
    CU_ASSERT(xfer__err_isset());
    xfer__err_clear();
    CU_ASSERT(!xfer__err_isset());
    CU_ASSERT_STRING_EQUAL(xfer_last_error(), "");
}

/* The other thread: sees none of ours, makes its own, reports it. */
typedef struct thread_view {
    char before[512];
    char after[512];
    xfer_status_t status;
} thread_view_t;

static void *other_thread(void *arg)
{
    thread_view_t *v = arg;
    xfer_agent_opts_t o;
    xfer_agent_t *a = NULL;

    snprintf(v->before, sizeof(v->before), "%s", xfer_last_error());
    xfer_agent_opts_init(&o);
    o.name = NULL;
    v->status = xfer_agent_create(&o, &a);
    snprintf(v->after, sizeof(v->after), "%s", xfer_last_error());
    return NULL;
}

static void test_last_error_thread_local(void)
{
    xfer_agent_t *a = xt_agent(xt_name("err"), NULL, 0);
    thread_view_t v;
    pthread_t t;
    char mine[512];

    memset(&v, 0, sizeof(v));
    XT_STATUS(xfer_backend_add(a, "nosuch_thread_test", NULL),
              XFER_ERR_NOT_FOUND);
    snprintf(mine, sizeof(mine), "%s", xfer_last_error());
    XT_CHECK(strstr(mine, "nosuch_thread_test") != NULL, "own error \"%s\"",
             mine);
    XT_REQUIRE(pthread_create(&t, NULL, other_thread, &v) == 0,
               "pthread_create failed");
    pthread_join(t, NULL);
    XT_CHECK(v.before[0] == '\0', "a new thread sees \"%s\"", v.before);
    CU_ASSERT_EQUAL(v.status, XFER_ERR_INVALID);
    XT_CHECK(v.after[0] != '\0' && strstr(v.after, "nosuch") == NULL,
             "other thread's error \"%s\"", v.after);
    /* Ours is untouched by what the other thread did. */
    XT_CHECK(strcmp(xfer_last_error(), mine) == 0, "after the other thread: "
             "\"%s\", was \"%s\"", xfer_last_error(), mine);
}

static const xt_test_t tests[] = {
    XT_TEST(test_strerror_distinct),
    XT_TEST(test_strerror_unknown),
    XT_TEST(test_errors_negative),
    XT_TEST(test_version),
    XT_TEST(test_last_error_set_and_cleared),
    XT_TEST(test_last_error_long),
    XT_TEST(test_last_error_thread_local),
    XT_END
};

int main(void)
{
    const xt_suite_t suites[] = { { "errors", tests } };

    return xt_run("test-errors", suites, 1);
}
