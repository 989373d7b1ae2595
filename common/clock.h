/* Time in milliseconds: the wall clock for timestamps that leave the
 * process, the monotonic clock for deadlines, backoffs and durations
 * (it does not jump when NTP sets the wall clock). */
#ifndef COMET_CLOCK_H
#define COMET_CLOCK_H

/* Unix time in ms (CLOCK_REALTIME); 0 if the clock cannot be read. */
long long now_ms(void);
/* CLOCK_MONOTONIC in ms, for differences only; 0 if it cannot be read. */
long long mono_ms(void);

#endif
