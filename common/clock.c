/* The two clocks every binary reads (see clock.h). */
#include "clock.h"

#include <time.h>

static long long clock_ms(clockid_t id)
{
    struct timespec ts;

    if (clock_gettime(id, &ts) != 0)
        return 0;
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

long long now_ms(void)
{
    return clock_ms(CLOCK_REALTIME);
}

long long mono_ms(void)
{
    return clock_ms(CLOCK_MONOTONIC);
}
