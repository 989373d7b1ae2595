/* Delayed answers without blocking a server thread: a connection is
 * suspended and a timer thread resumes it when its delay is over. */
#ifndef FAKE_DELAY_H
#define FAKE_DELAY_H

#include <microhttpd.h>

/* Starts the timer thread. Returns 0, or -1 when it cannot start. */
int delay_start(void);

/* Suspends conn (call from the access handler) and resumes it after ms;
 * MHD then calls the access handler again. Returns 0, or -1 when stopped
 * or out of memory: conn is then not suspended. */
int delay_add(struct MHD_Connection *conn, long ms);

/* Resumes every waiting connection now, refuses new ones and joins the
 * thread; call before MHD_stop_daemon (MHD aborts on suspended
 * connections at stop). Safe to call when delay_start failed or ran not. */
void delay_stop(void);

#endif
