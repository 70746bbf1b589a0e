/* runner.c - the shared CUnit runner: registers suites, runs them in
 * verbose mode, runs per-test cleanups and kills a test that hangs. */
#include "tests/common/runner.h"

#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CUnit/Basic.h>

#if defined(__SANITIZE_ADDRESS__)
#define XT_LSAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define XT_LSAN 1
#endif
#endif
#ifdef XT_LSAN
#include <sanitizer/lsan_interface.h>
#endif

#define XT_MAX_DEFER 256
#define XT_MAX_CHILD 64

typedef struct xt_cleanup {
    void (*fn)(void *);
    void *arg;
} xt_cleanup_t;

static xt_cleanup_t early[XT_MAX_DEFER], late[XT_MAX_DEFER];
static size_t nearly, nlate;
static volatile sig_atomic_t children[XT_MAX_CHILD];
static unsigned test_timeout = 60;
static const char *only;

void xt_skip(const char *fmt, ...)
{
    va_list ap;

    printf("SKIP: ");
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    fflush(stdout);
    exit(77);
}

static void defer_into(xt_cleanup_t *list, size_t *n, void (*fn)(void *),
                       void *arg)
{
    if (*n == XT_MAX_DEFER) {
        fprintf(stderr, "runner: too many cleanups in one test\n");
        abort();
    }
    list[*n].fn = fn;
    list[*n].arg = arg;
    (*n)++;
}

void xt_defer(void (*fn)(void *), void *arg)
{
    defer_into(early, &nearly, fn, arg);
}

void xt_defer_late(void (*fn)(void *), void *arg)
{
    defer_into(late, &nlate, fn, arg);
}

void xt_child_add(int pid)
{
    for (size_t i = 0; i < XT_MAX_CHILD; i++) {
        if (children[i] == 0) {
            children[i] = pid;
            return;
        }
    }
    fprintf(stderr, "runner: too many children\n");
    kill(pid, SIGKILL);
    abort();
}

void xt_child_forget(int pid)
{
    for (size_t i = 0; i < XT_MAX_CHILD; i++)
        if (children[i] == pid)
            children[i] = 0;
}

void xt_child_exit(int status)
{
#ifdef XT_LSAN
    /* 99, as make check sets for every sanitizer and valgrind finding. */
    if (__lsan_do_recoverable_leak_check() != 0)
        status = 99;
#endif
    _exit(status);
}

static void children_kill(void)
{
    for (size_t i = 0; i < XT_MAX_CHILD; i++) {
        pid_t pid = children[i];

        if (pid > 0) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            children[i] = 0;
        }
    }
}

void xt_set_test_timeout(unsigned seconds)
{
    test_timeout = seconds;
}

void xt_fail_at(const char *file, unsigned line, int fatal, const char *fmt,
                ...)
{
    char msg[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    CU_assertImplementation(CU_FALSE, line, msg, file, "",
                            fatal ? CU_TRUE : CU_FALSE);
}

void xt_fail_fatal_at(const char *file, unsigned line, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    CU_assertImplementation(CU_FALSE, line, msg, file, "", CU_TRUE);
    /* CUnit returns only when no test is running: nothing to unwind to. */
    fprintf(stderr, "%s:%u: fatal assertion outside a test: %s\n", file,
            line, msg);
    abort();
}

void xt_pass_at(const char *file, unsigned line, const char *what)
{
    CU_assertImplementation(CU_TRUE, line, what, file, "", CU_FALSE);
}

static void on_alarm(int sig)
{
    static const char head[] = "\nFATAL: test timed out: ";
    CU_pTest test = CU_get_current_test();
    const char *name = test && test->pName ? test->pName : "?";

    (void)sig;
    (void)!write(STDOUT_FILENO, head, sizeof(head) - 1);
    (void)!write(STDOUT_FILENO, name, strlen(name));
    (void)!write(STDOUT_FILENO, "\n", 1);
    for (size_t i = 0; i < XT_MAX_CHILD; i++)
        if (children[i] > 0)
            kill(children[i], SIGKILL);
    _exit(1);
}

static void test_setup(void)
{
    nearly = nlate = 0;
    alarm(test_timeout);
}

static void test_teardown(void)
{
    while (nearly > 0) {
        nearly--;
        early[nearly].fn(early[nearly].arg);
    }
    children_kill();
    while (nlate > 0) {
        nlate--;
        late[nlate].fn(late[nlate].arg);
    }
    alarm(0);
}

/* XT_SKIP: test names, comma-separated, that cannot run with this
 * configuration; XT_SKIP_WHY says why.  Each is reported as a SKIP line
 * with the reason, never counted as passed. */
static int skipped(const char *name)
{
    const char *list = getenv("XT_SKIP"), *why = getenv("XT_SKIP_WHY");
    size_t n = strlen(name);

    while (list && *list) {
        size_t len = strcspn(list, ",");

        if (len == n && strncmp(list, name, n) == 0) {
            printf("SKIP: %s: %s\n", name, why ? why : "skipped (XT_SKIP)");
            return 1;
        }
        list += len + (list[len] == ',');
    }
    return 0;
}

static int selected(const char *name)
{
    if (skipped(name))
        return 0;
    return only == NULL || *only == '\0' || strstr(name, only) != NULL;
}

int xt_run(const char *program, const xt_suite_t *suites, size_t nsuites)
{
    const char *t = getenv("XT_TEST_TIMEOUT");
    unsigned nadded = 0, failed;
    struct sigaction sa;

    setvbuf(stdout, NULL, _IOLBF, 0);
    setvbuf(stderr, NULL, _IONBF, 0);
    if (t != NULL && atoi(t) > 0)
        test_timeout = (unsigned)atoi(t);
    only = getenv("XT_ONLY");

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_alarm;
    sigaction(SIGALRM, &sa, NULL);
    /* A peer dying under a send must be an error return, not a signal. */
    signal(SIGPIPE, SIG_IGN);

    if (CU_initialize_registry() != CUE_SUCCESS) {
        fprintf(stderr, "%s: CU_initialize_registry: %s\n", program,
                CU_get_error_msg());
        return 1;
    }
    for (size_t s = 0; s < nsuites; s++) {
        CU_pSuite suite = CU_add_suite_with_setup_and_teardown(
            suites[s].name, NULL, NULL, test_setup, test_teardown);

        if (suite == NULL) {
            fprintf(stderr, "%s: CU_add_suite: %s\n", program,
                    CU_get_error_msg());
            CU_cleanup_registry();
            return 1;
        }
        for (const xt_test_t *tc = suites[s].tests; tc->name; tc++) {
            if (!selected(tc->name))
                continue;
            if (CU_add_test(suite, tc->name, tc->fn) == NULL) {
                fprintf(stderr, "%s: CU_add_test %s: %s\n", program,
                        tc->name, CU_get_error_msg());
                CU_cleanup_registry();
                return 1;
            }
            nadded++;
        }
    }
    if (nadded == 0) {
        fprintf(stderr, "%s: no test selected\n", program);
        CU_cleanup_registry();
        return 1;
    }

    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    printf("\n");
    CU_basic_show_failures(CU_get_failure_list());
    printf("\n");
    failed = CU_get_number_of_tests_failed() + CU_get_number_of_suites_failed();
    if (CU_get_number_of_failures() > 0 && failed == 0)
        failed = 1;
    printf("%s: %u tests, %u failed\n", program, nadded, failed);
    CU_cleanup_registry();
    return failed == 0 ? 0 : 1;
}
