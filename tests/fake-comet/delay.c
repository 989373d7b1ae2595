/* Timer thread that resumes suspended connections when their delay ends, so
 * latency and hang faults do not hold one of the few server threads. */
#include "delay.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

/* One suspended connection waiting for its time. */
struct delay_entry {
    struct MHD_Connection *conn; /* suspended; MHD owns it */
    struct timespec due;         /* CLOCK_MONOTONIC */
    struct delay_entry *next;    /* list sorted by due, earliest first */
};

static struct {
    pthread_mutex_t lock;
    pthread_cond_t wake;       /* a new earliest entry, or stop */
    struct delay_entry *head;  /* owned entries, sorted by due */
    bool running;              /* thread started and not yet joined */
    bool stopped;              /* no new entries; resume the rest */
    pthread_t thread;
} delay = { .lock = PTHREAD_MUTEX_INITIALIZER };

static bool delay_before(const struct timespec *a, const struct timespec *b)
{
    return a->tv_sec < b->tv_sec || (a->tv_sec == b->tv_sec && a->tv_nsec < b->tv_nsec);
}

/* Resumes and frees every entry due by now (all of them once stopped).
 * Called with the lock held. */
static void delay_resume_due(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    while (delay.head != NULL && (delay.stopped || !delay_before(&now, &delay.head->due))) {
        struct delay_entry *e = delay.head;
        delay.head = e->next;
        MHD_resume_connection(e->conn);
        free(e);
    }
}

static void *delay_thread(void *arg)
{
    (void)arg;
    if (pthread_mutex_lock(&delay.lock) != 0)
        abort(); /* only on a misused mutex: a bug */
    for (;;) {
        delay_resume_due();
        if (delay.stopped)
            break;
        if (delay.head == NULL)
            pthread_cond_wait(&delay.wake, &delay.lock);
        else
            pthread_cond_timedwait(&delay.wake, &delay.lock, &delay.head->due);
        /* Any return (timeout, signal, spurious) just rescans the list. */
    }
    pthread_mutex_unlock(&delay.lock);
    return NULL;
}

int delay_start(void)
{
    pthread_condattr_t attr;
    if (pthread_condattr_init(&attr) != 0)
        return -1;
    /* Deadlines are monotonic: wall-clock jumps must not stretch a delay. */
    if (pthread_condattr_setclock(&attr, CLOCK_MONOTONIC) != 0 ||
        pthread_cond_init(&delay.wake, &attr) != 0) {
        pthread_condattr_destroy(&attr);
        return -1;
    }
    pthread_condattr_destroy(&attr);
    if (pthread_create(&delay.thread, NULL, delay_thread, NULL) != 0) {
        pthread_cond_destroy(&delay.wake);
        return -1;
    }
    delay.running = true;
    return 0;
}

int delay_add(struct MHD_Connection *conn, long ms)
{
    struct delay_entry *e = malloc(sizeof(*e));
    if (e == NULL)
        return -1;
    clock_gettime(CLOCK_MONOTONIC, &e->due);
    e->due.tv_sec += ms / 1000;
    e->due.tv_nsec += (ms % 1000) * 1000000L;
    if (e->due.tv_nsec >= 1000000000L) {
        e->due.tv_sec++;
        e->due.tv_nsec -= 1000000000L;
    }
    e->conn = conn;
    if (pthread_mutex_lock(&delay.lock) != 0)
        abort();
    if (!delay.running || delay.stopped) {
        pthread_mutex_unlock(&delay.lock);
        free(e);
        return -1;
    }
    /* Suspend under the lock so delay_stop cannot miss this connection. */
    MHD_suspend_connection(conn);
    struct delay_entry **p = &delay.head;
    while (*p != NULL && !delay_before(&e->due, &(*p)->due))
        p = &(*p)->next;
    e->next = *p;
    *p = e;
    if (delay.head == e)
        pthread_cond_signal(&delay.wake);
    pthread_mutex_unlock(&delay.lock);
    return 0;
}

void delay_stop(void)
{
    if (pthread_mutex_lock(&delay.lock) != 0)
        abort();
    bool running = delay.running;
    delay.stopped = true;
    if (running)
        pthread_cond_signal(&delay.wake);
    pthread_mutex_unlock(&delay.lock);
    if (!running)
        return;
    pthread_join(delay.thread, NULL);
    delay.running = false;
    pthread_cond_destroy(&delay.wake);
}
