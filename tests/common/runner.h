/* runner.h - the one CUnit runner every test program uses: suites as
 * lists of small named functions, per-test cleanups, a per-test watchdog
 * and automake's exit codes (0 pass, 1 fail, 77 skip). */
#ifndef XT_RUNNER_H
#define XT_RUNNER_H

#include <stddef.h>

#include <CUnit/CUnit.h>

typedef struct xt_test {
    const char *name;
    void (*fn)(void);
} xt_test_t;

/* A suite: tests end with {NULL, NULL}. */
typedef struct xt_suite {
    const char *name;
    const xt_test_t *tests;
} xt_suite_t;

#define XT_TEST(fn) { #fn, fn }
#define XT_END { NULL, NULL }

/* Run the suites in verbose mode; returns the process exit status:
 * 0 when every test passed, 1 otherwise.  XT_ONLY=substring in the
 * environment runs only the tests whose name contains it; XT_SKIP=a,b
 * leaves out the tests named, each reported as "SKIP: name: XT_SKIP_WHY". */
int xt_run(const char *program, const xt_suite_t *suites, size_t nsuites);

/* Print "SKIP: <reason>" and exit 77; only before xt_run. */
void xt_skip(const char *fmt, ...)
    __attribute__((format(printf, 1, 2), noreturn));

/* Cleanups run after the current test, failed or not (a fatal assertion
 * longjmps past the test's own cleanup code).  Early cleanups run first
 * (agents, child processes), then late ones (memory they may touch);
 * each group last-in first-out. */
void xt_defer(void (*fn)(void *), void *arg);
void xt_defer_late(void (*fn)(void *), void *arg);

/* A child process to SIGKILL and reap when the test ends or hangs. */
void xt_child_add(int pid);
/* Forget a child the test reaped itself. */
void xt_child_forget(int pid);
/* End a forked child that has freed what it owns: _exit, never exit (the
 * atexit handlers and stdio buffers are the parent's), after a leak check
 * under LeakSanitizer, which would otherwise check only at exit().
 * Valgrind checks at _exit by itself.  A leak makes the status 99. */
void xt_child_exit(int status) __attribute__((noreturn));

/* Seconds a single test may take before the program aborts it
 * (default 60, XT_TEST_TIMEOUT overrides). */
void xt_set_test_timeout(unsigned seconds);

/* Record a failed assertion with a formatted message.  A fatal one ends
 * the test (CUnit longjmps back to the runner) and never returns; saying
 * so lets the compiler rely on an XT_REQUIRE'd condition after it. */
void xt_fail_at(const char *file, unsigned line, int fatal, const char *fmt,
                ...) __attribute__((format(printf, 4, 5)));
void xt_fail_fatal_at(const char *file, unsigned line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4), noreturn));
void xt_pass_at(const char *file, unsigned line, const char *what);
#define XT_FAIL(...) xt_fail_at(__FILE__, __LINE__, 0, __VA_ARGS__)
#define XT_FAIL_FATAL(...) xt_fail_fatal_at(__FILE__, __LINE__, __VA_ARGS__)
/* CU_ASSERT with a message that says what was seen. */
#define XT_CHECK(cond, ...)                                                 \
    do {                                                                    \
        if (cond)                                                           \
            xt_pass_at(__FILE__, __LINE__, #cond);                          \
        else                                                                \
            xt_fail_at(__FILE__, __LINE__, 0, __VA_ARGS__);                 \
    } while (0)
#define XT_REQUIRE(cond, ...)                                               \
    do {                                                                    \
        if (cond)                                                           \
            xt_pass_at(__FILE__, __LINE__, #cond);                          \
        else                                                                \
            xt_fail_fatal_at(__FILE__, __LINE__, __VA_ARGS__);              \
    } while (0)

#endif /* XT_RUNNER_H */
