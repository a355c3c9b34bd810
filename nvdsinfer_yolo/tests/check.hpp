// A tiny check macro for the parser's tests: a failed CHECK prints where and counts; main()
// returns check_failures() so every failure of a run is reported at once.
#pragma once
#include <cstdio>

inline int& check_failures() {
    static int failures = 0;
    return failures;
}

#define CHECK(cond)                                                                   \
    do {                                                                              \
        if (!(cond)) {                                                                \
            std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
            ++check_failures();                                                       \
        }                                                                             \
    } while (0)
