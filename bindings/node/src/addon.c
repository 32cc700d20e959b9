/* SPDX-License-Identifier: Apache-2.0 */
/* Node-API addon for libsandbox: thin asynchronous wrappers over the C API (the JavaScript in
 * lib/ builds the E2B-style API on top).
 *
 * Threading model (why it looks like this):
 * - Every blocking C call runs on a thread of our own, never on the event loop and never on
 *   libuv's small thread pool (long waits there would starve fs/dns work). Results, streamed
 *   output and events come back through ONE thread-safe function per environment, whose FIFO
 *   order guarantees that a job's output chunks arrive before its completion.
 * - A process or watch handle is owned by one "pump" thread (the C API wants sub-handles used
 *   by one thread at a time): it polls the handle's fd plus an eventfd, forwards output, and
 *   executes queued commands (stdin writes, resize, signals) between reads.
 * - A sandbox ("box") counts the threads inside C calls on it (active). Killing it refuses new
 *   calls, sbx_interrupt()s until active is 0, closes leftover sub-handles, then sbx_destroy()s:
 *   so sbx_destroy never races another call. Environment teardown (process exit, worker end)
 *   does the same for every box synchronously, so a process exits cleanly with sandboxes open.
 * - The thread-safe function is unref'd while no promise is pending, so idle sandboxes do not
 *   keep the process alive.
 */
#define NAPI_VERSION 8
#include <node_api.h>

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <sandbox.h>

#define MAGIC_BOX  0x53425842u /* "SBXB" */
#define MAGIC_FILE 0x53425846u /* "SBXF" */
#define MAGIC_PUMP 0x53425850u /* "SBXP" */

#define READ_CHUNK (64 * 1024)

/* ---------------------------------------------------------------------------------------- */
/* Environment state                                                                        */
/* ---------------------------------------------------------------------------------------- */

struct box;

typedef struct env_state {
    napi_threadsafe_function tsfn;
    napi_ref error_factory; /* (code, message) => Error, installed by lib/errors.js */
    int holds;              /* main thread: pending promises keeping the loop alive */
    pthread_mutex_t mu;     /* guards everything below and every box/sub field marked (mu) */
    pthread_cond_t cv;      /* broadcast on any change of active counts / thread counts */
    int threads;            /* our threads still running (mu) */
    int closing;            /* environment teardown started (mu) */
    struct box *boxes;      /* every box not yet destroyed (mu) */
} env_state;

/* A message from a thread to the main thread, through the thread-safe function. */
typedef struct msg {
    void (*run)(napi_env env, struct msg *m); /* on the main thread */
    void (*drop)(struct msg *m);              /* frees it without JS (teardown) */
} msg;

static void post(env_state *es, msg *m)
{
    if (napi_call_threadsafe_function(es->tsfn, m, napi_tsfn_nonblocking) != napi_ok)
        m->drop(m);
}

static void call_js(napi_env env, napi_value cb, void *context, void *data)
{
    (void)cb;
    (void)context;
    msg *m = data;
    if (!env) {
        m->drop(m);
        return;
    }
    m->run(env, m);
}

static void hold(napi_env env, env_state *es)
{
    if (es->holds++ == 0)
        napi_ref_threadsafe_function(env, es->tsfn);
}

static void unhold(napi_env env, env_state *es)
{
    if (es->holds > 0 && --es->holds == 0)
        napi_unref_threadsafe_function(env, es->tsfn);
}

static env_state *get_es(napi_env env)
{
    void *p = NULL;
    napi_get_instance_data(env, &p);
    return p;
}

/* Threads: detached, counted so that teardown can wait for them. */
typedef void *(*thread_fn)(void *);

static int thread_start(env_state *es, thread_fn fn, void *arg)
{
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    pthread_mutex_lock(&es->mu);
    es->threads++;
    pthread_mutex_unlock(&es->mu);
    pthread_t t;
    int r = pthread_create(&t, &a, fn, arg);
    pthread_attr_destroy(&a);
    if (r) {
        pthread_mutex_lock(&es->mu);
        es->threads--;
        pthread_cond_broadcast(&es->cv);
        pthread_mutex_unlock(&es->mu);
    }
    return r;
}

static void thread_done(env_state *es)
{
    pthread_mutex_lock(&es->mu);
    es->threads--;
    pthread_cond_broadcast(&es->cv);
    pthread_mutex_unlock(&es->mu);
}

static void cv_wait_ms(env_state *es, int ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += (long)ms * 1000000L;
    ts.tv_sec += ts.tv_nsec / 1000000000L;
    ts.tv_nsec %= 1000000000L;
    pthread_cond_timedwait(&es->cv, &es->mu, &ts);
}

/* ---------------------------------------------------------------------------------------- */
/* Errors                                                                                   */
/* ---------------------------------------------------------------------------------------- */

static napi_value make_error(napi_env env, int code, const char *message)
{
    env_state *es = get_es(env);
    napi_value err = NULL, fn, argv[2], global;
    if (!message || !*message)
        message = sbx_strerror(code);
    napi_create_int32(env, code, &argv[0]);
    napi_create_string_utf8(env, message, NAPI_AUTO_LENGTH, &argv[1]);
    if (es && es->error_factory &&
        napi_get_reference_value(env, es->error_factory, &fn) == napi_ok && fn) {
        napi_get_global(env, &global);
        if (napi_call_function(env, global, fn, 2, argv, &err) == napi_ok)
            return err;
        napi_value ignored;
        napi_get_and_clear_last_exception(env, &ignored);
    }
    napi_create_error(env, NULL, argv[1], &err);
    napi_set_named_property(env, err, "code", argv[0]);
    return err;
}

static void throw_sbx(napi_env env, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void throw_sbx(napi_env env, int code, const char *fmt, ...)
{
    bool pending = false;
    napi_is_exception_pending(env, &pending);
    if (pending)
        return;
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    napi_throw(env, make_error(env, code, buf));
}

/* ---------------------------------------------------------------------------------------- */
/* Argument helpers (all throw InvalidArgumentError and return non-zero on bad input)         */
/* ---------------------------------------------------------------------------------------- */

static int is_nullish(napi_env env, napi_value v)
{
    napi_valuetype t;
    if (!v || napi_typeof(env, v, &t) != napi_ok)
        return 1;
    return t == napi_undefined || t == napi_null;
}

static int arg_string(napi_env env, napi_value v, const char *what, int optional, char **out)
{
    *out = NULL;
    if (optional && is_nullish(env, v))
        return 0;
    napi_valuetype t;
    if (napi_typeof(env, v, &t) != napi_ok || t != napi_string) {
        throw_sbx(env, SBX_EINVAL, "%s must be a string", what);
        return -1;
    }
    size_t len;
    napi_get_value_string_utf8(env, v, NULL, 0, &len);
    char *s = malloc(len + 1);
    if (!s) {
        throw_sbx(env, SBX_ENOMEM, "out of memory");
        return -1;
    }
    napi_get_value_string_utf8(env, v, s, len + 1, &len);
    if (strlen(s) != len) {
        free(s);
        throw_sbx(env, SBX_EINVAL, "%s must not contain NUL characters", what);
        return -1;
    }
    *out = s;
    return 0;
}

/* Non-negative integral number up to max (doubles are exact up to 2^53). */
static int arg_uint(napi_env env, napi_value v, const char *what, int optional, double max,
                    uint64_t dflt, uint64_t *out)
{
    *out = dflt;
    if (optional && is_nullish(env, v))
        return 0;
    napi_valuetype t;
    double d;
    if (napi_typeof(env, v, &t) != napi_ok || t != napi_number) {
        throw_sbx(env, SBX_EINVAL, "%s must be a number", what);
        return -1;
    }
    napi_get_value_double(env, v, &d);
    if (!(d >= 0) || d > max || d != (double)(uint64_t)d) {
        throw_sbx(env, SBX_EINVAL, "%s must be an integer between 0 and %.0f", what, max);
        return -1;
    }
    *out = (uint64_t)d;
    return 0;
}

static int arg_u32(napi_env env, napi_value v, const char *what, int optional, unsigned dflt,
                   unsigned *out)
{
    uint64_t x;
    if (arg_uint(env, v, what, optional, 4294967295.0, dflt, &x))
        return -1;
    *out = (unsigned)x;
    return 0;
}

static int arg_bool(napi_env env, napi_value v, int dflt)
{
    if (is_nullish(env, v))
        return dflt;
    bool b = false;
    napi_value c;
    if (napi_coerce_to_bool(env, v, &c) == napi_ok)
        napi_get_value_bool(env, c, &b);
    return b;
}

static int arg_function(napi_env env, napi_value v, const char *what, int optional, napi_ref *out)
{
    *out = NULL;
    if (optional && is_nullish(env, v))
        return 0;
    napi_valuetype t;
    if (napi_typeof(env, v, &t) != napi_ok || t != napi_function) {
        throw_sbx(env, SBX_EINVAL, "%s must be a function", what);
        return -1;
    }
    napi_create_reference(env, v, 1, out);
    return 0;
}

/* Bytes: a Buffer / TypedArray / DataView / ArrayBuffer or a string (UTF-8); copied. */
static int arg_bytes(napi_env env, napi_value v, const char *what, int optional, void **data,
                     size_t *len)
{
    *data = NULL;
    *len = 0;
    if (optional && is_nullish(env, v))
        return 0;
    napi_valuetype t;
    napi_typeof(env, v, &t);
    if (t == napi_string) {
        /* UTF-8, byte-exact (NULs allowed) */
        size_t n;
        napi_get_value_string_utf8(env, v, NULL, 0, &n);
        char *s = malloc(n + 1);
        if (!s) {
            throw_sbx(env, SBX_ENOMEM, "out of memory");
            return -1;
        }
        napi_get_value_string_utf8(env, v, s, n + 1, &n);
        *data = s;
        *len = n;
        return 0;
    }
    void *p = NULL;
    size_t n = 0;
    bool is;
    if (napi_is_buffer(env, v, &is) == napi_ok && is) {
        napi_get_buffer_info(env, v, &p, &n);
    } else if (napi_is_typedarray(env, v, &is) == napi_ok && is) {
        napi_typedarray_type tt;
        size_t count, off;
        napi_value ab;
        napi_get_typedarray_info(env, v, &tt, &count, &p, &ab, &off);
        size_t el = 1;
        switch (tt) {
        case napi_int16_array:
        case napi_uint16_array:
            el = 2;
            break;
        case napi_int32_array:
        case napi_uint32_array:
        case napi_float32_array:
            el = 4;
            break;
        case napi_float64_array:
        case napi_bigint64_array:
        case napi_biguint64_array:
            el = 8;
            break;
        default:
            el = 1;
        }
        n = count * el;
    } else if (napi_is_dataview(env, v, &is) == napi_ok && is) {
        napi_value ab;
        size_t off;
        napi_get_dataview_info(env, v, &n, &p, &ab, &off);
    } else if (napi_is_arraybuffer(env, v, &is) == napi_ok && is) {
        napi_get_arraybuffer_info(env, v, &p, &n);
    } else {
        throw_sbx(env, SBX_EINVAL, "%s must be a string, Buffer, TypedArray or ArrayBuffer", what);
        return -1;
    }
    *data = malloc(n ? n : 1);
    if (!*data) {
        throw_sbx(env, SBX_ENOMEM, "out of memory");
        return -1;
    }
    if (n)
        memcpy(*data, p, n);
    *len = n;
    return 0;
}

static void strv_free(char **v)
{
    if (!v)
        return;
    for (char **p = v; *p; p++)
        free(*p);
    free(v);
}

/* An array of strings -> NULL-terminated malloc'd vector (NULL when absent). */
static int arg_strv(napi_env env, napi_value v, const char *what, char ***out)
{
    *out = NULL;
    if (is_nullish(env, v))
        return 0;
    bool is;
    if (napi_is_array(env, v, &is) != napi_ok || !is) {
        throw_sbx(env, SBX_EINVAL, "%s must be an array of strings", what);
        return -1;
    }
    uint32_t n;
    napi_get_array_length(env, v, &n);
    char **vec = calloc((size_t)n + 1, sizeof(char *));
    if (!vec) {
        throw_sbx(env, SBX_ENOMEM, "out of memory");
        return -1;
    }
    for (uint32_t i = 0; i < n; i++) {
        napi_value e;
        napi_get_element(env, v, i, &e);
        if (arg_string(env, e, what, 0, &vec[i])) {
            strv_free(vec);
            return -1;
        }
    }
    *out = vec;
    return 0;
}

static napi_value prop(napi_env env, napi_value obj, const char *name)
{
    napi_value v = NULL;
    if (is_nullish(env, obj))
        return NULL;
    bool has = false;
    if (napi_has_named_property(env, obj, name, &has) != napi_ok || !has)
        return NULL;
    napi_get_named_property(env, obj, name, &v);
    return v;
}

/* ---------------------------------------------------------------------------------------- */
/* Value builders                                                                           */
/* ---------------------------------------------------------------------------------------- */

static void set_str(napi_env env, napi_value o, const char *k, const char *s)
{
    napi_value v;
    if (s)
        napi_create_string_utf8(env, s, NAPI_AUTO_LENGTH, &v);
    else
        napi_get_null(env, &v);
    napi_set_named_property(env, o, k, v);
}

static void set_num(napi_env env, napi_value o, const char *k, double d)
{
    napi_value v;
    napi_create_double(env, d, &v);
    napi_set_named_property(env, o, k, v);
}

static void set_bool(napi_env env, napi_value o, const char *k, int b)
{
    napi_value v;
    napi_get_boolean(env, b != 0, &v);
    napi_set_named_property(env, o, k, v);
}

static napi_value buffer_copy(napi_env env, const void *p, size_t n)
{
    napi_value b;
    void *dst;
    if (napi_create_buffer_copy(env, n, n ? p : "", &dst, &b) != napi_ok)
        return NULL;
    return b;
}

static void free_finalizer(napi_env env, void *data, void *hint)
{
    (void)env;
    (void)hint;
    free(data);
}

/* Takes ownership of a malloc'd block (free()d with the Buffer). */
static napi_value buffer_take(napi_env env, void *p, size_t n)
{
    napi_value b;
    if (p && n && napi_create_external_buffer(env, n, p, free_finalizer, NULL, &b) == napi_ok)
        return b;
    b = buffer_copy(env, p, n);
    free(p);
    return b;
}

static napi_value strv_value(napi_env env, char **v)
{
    napi_value a;
    napi_create_array(env, &a);
    uint32_t i = 0;
    for (; v && v[i]; i++) {
        napi_value s;
        napi_create_string_utf8(env, v[i], NAPI_AUTO_LENGTH, &s);
        napi_set_element(env, a, i, s);
    }
    return a;
}

/* ---------------------------------------------------------------------------------------- */
/* Boxes (sandboxes) and sub-handles                                                        */
/* ---------------------------------------------------------------------------------------- */

typedef struct sub {
    int kind; /* MAGIC_FILE or MAGIC_PUMP */
    struct sub *next, *prev;
} sub;

typedef struct box {
    uint32_t magic;
    env_state *es;
    sbx *sb;    /* written by sbx_create() from its thread; read under mu by others */
    int active; /* threads inside C calls on sb or its sub-handles (mu) */
    int closing, destroyed, in_list;
    int refs; /* JS external, jobs, sub-handles (mu) */
    int js;   /* the JS external is alive (mu) */
    sub *subs;
    struct box *next, *prev;
    char id[32];
    char *console_at_death; /* console ring captured just before sbx_destroy */
} box;

typedef struct fileh {
    uint32_t magic;
    sub link;
    box *bx;
    sbx_file *f;
    int busy, closed, writing;
} fileh;

struct pcmd;

typedef struct pump {
    uint32_t magic;
    sub link;
    env_state *es;
    box *bx;
    int evfd;
    int is_watch;
    sbx_proc *proc;
    sbx_watch *watch;
    uint32_t pid;
    napi_ref on_event;             /* strong while the thread runs */
    struct pcmd *cmds, *cmds_tail; /* (mu) */
    int stop_req;                  /* (mu) */
    int accepting;                 /* commands accepted (mu) */
    int ended;                     /* main thread: the end message was processed */
    int js_gone;                   /* main thread: the external was finalized */
    napi_deferred *close_defs;     /* main thread: stop()/disconnect() waiting for the end */
    size_t nclose_defs;
} pump;

static void box_unref_locked(box *bx)
{
    if (--bx->refs == 0 && bx->destroyed) {
        free(bx->console_at_death);
        bx->magic = 0;
        free(bx);
    }
}

static void box_unref(box *bx)
{
    env_state *es = bx->es;
    pthread_mutex_lock(&es->mu);
    box_unref_locked(bx);
    pthread_mutex_unlock(&es->mu);
}

static void list_remove_box(env_state *es, box *bx)
{
    if (!bx->in_list)
        return;
    if (bx->prev)
        bx->prev->next = bx->next;
    else
        es->boxes = bx->next;
    if (bx->next)
        bx->next->prev = bx->prev;
    bx->next = bx->prev = NULL;
    bx->in_list = 0;
}

static void sub_add(box *bx, sub *s)
{
    s->prev = NULL;
    s->next = bx->subs;
    if (bx->subs)
        bx->subs->prev = s;
    bx->subs = s;
}

static void sub_remove(box *bx, sub *s)
{
    if (!s->prev && bx->subs != s)
        return; /* not in the list */
    if (s->prev)
        s->prev->next = s->next;
    else
        bx->subs = s->next;
    if (s->next)
        s->next->prev = s->prev;
    s->next = s->prev = NULL;
}

#define CONTAINER(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

static void kick(int fd)
{
    uint64_t one = 1;
    ssize_t r = write(fd, &one, sizeof(one));
    (void)r;
}

/* Enters a C call on the box. Returns 0, or an SBX error code when the sandbox is gone. */
static int box_enter_locked(box *bx)
{
    if (bx->destroyed || bx->closing || !bx->sb)
        return SBX_ESTATE;
    bx->active++;
    return 0;
}

static int box_enter(box *bx)
{
    pthread_mutex_lock(&bx->es->mu);
    int r = box_enter_locked(bx);
    pthread_mutex_unlock(&bx->es->mu);
    return r;
}

static void box_leave(box *bx)
{
    env_state *es = bx->es;
    pthread_mutex_lock(&es->mu);
    if (--bx->active == 0)
        pthread_cond_broadcast(&es->cv);
    pthread_mutex_unlock(&es->mu);
}

/*
 * Kills a sandbox from any thread but the ones using it: stops new calls, interrupts running
 * ones until none is left, closes the sub-handles JS did not close, destroys. A second caller
 * waits for the first. The caller holds a reference on bx.
 */
static void box_destroy_sync(box *bx)
{
    env_state *es = bx->es;
    pthread_mutex_lock(&es->mu);
    if (bx->destroyed) {
        pthread_mutex_unlock(&es->mu);
        return;
    }
    if (bx->closing) {
        while (!bx->destroyed)
            pthread_cond_wait(&es->cv, &es->mu);
        pthread_mutex_unlock(&es->mu);
        return;
    }
    bx->closing = 1;
    while (bx->active > 0) {
        /* sbx_interrupt only affects calls already running, so repeat until all returned;
           pumps poll fds outside C calls: kick them too. */
        if (bx->sb)
            sbx_interrupt(bx->sb);
        for (sub *s = bx->subs; s; s = s->next)
            if (s->kind == MAGIC_PUMP) {
                pump *p = CONTAINER(s, pump, link);
                p->stop_req = 1;
                kick(p->evfd);
            }
        cv_wait_ms(es, 20);
    }
    while (bx->subs) {
        sub *s = bx->subs;
        sub_remove(bx, s);
        if (s->kind == MAGIC_FILE) {
            fileh *fh = CONTAINER(s, fileh, link);
            if (!fh->closed) {
                fh->closed = 1;
                sbx_file_close(fh->f);
                fh->f = NULL;
            }
        }
    }
    sbx *sb = bx->sb;
    bx->sb = NULL;
    pthread_mutex_unlock(&es->mu);
    if (sb) {
        char *con = malloc(65536);
        if (con) {
            sbx_console(sb, con, 65536);
        }
        sbx_destroy(sb);
        pthread_mutex_lock(&es->mu);
        free(bx->console_at_death);
        bx->console_at_death = con;
        pthread_mutex_unlock(&es->mu);
    }
    pthread_mutex_lock(&es->mu);
    bx->destroyed = 1;
    list_remove_box(es, bx);
    pthread_cond_broadcast(&es->cv);
    pthread_mutex_unlock(&es->mu);
}

static void *gc_destroy_thread(void *arg)
{
    box *bx = arg;
    env_state *es = bx->es;
    box_destroy_sync(bx);
    box_unref(bx);
    thread_done(es);
    return NULL;
}

/* The Sandbox object became unreachable: nothing can use the VM again, so destroy it. */
static void box_finalize(napi_env env, void *data, void *hint)
{
    (void)env;
    (void)hint;
    box *bx = data;
    env_state *es = bx->es;
    pthread_mutex_lock(&es->mu);
    bx->js = 0;
    int need = !bx->destroyed && !bx->closing && !es->closing;
    pthread_mutex_unlock(&es->mu);
    if (need && thread_start(es, gc_destroy_thread, bx) == 0)
        return; /* the thread drops the reference */
    box_unref(bx);
}

/* The handle behind a JS external: every handle struct starts with its uint32_t magic. */
static void *get_handle(napi_env env, napi_value v, uint32_t magic, const char *what)
{
    void *p = NULL;
    napi_valuetype t;
    if (v && napi_typeof(env, v, &t) == napi_ok && t == napi_external)
        napi_get_value_external(env, v, &p);
    if (!p || *(uint32_t *)p != magic) {
        throw_sbx(env, SBX_EINVAL, "%s", what);
        return NULL;
    }
    return p;
}

static box *get_box(napi_env env, napi_value v)
{
    return get_handle(env, v, MAGIC_BOX, "not a sandbox handle");
}

static fileh *get_file(napi_env env, napi_value v)
{
    return get_handle(env, v, MAGIC_FILE, "not a file handle");
}

static pump *get_pump(napi_env env, napi_value v)
{
    return get_handle(env, v, MAGIC_PUMP, "not a process or watch handle");
}

/* ---------------------------------------------------------------------------------------- */
/* Jobs: one blocking operation on its own thread, settling a promise                         */
/* ---------------------------------------------------------------------------------------- */

typedef struct job job;
struct job {
    msg m; /* completion message */
    env_state *es;
    box *bx;     /* entered for the duration of work() when enter is set */
    int entered; /* work() runs inside box_enter/box_leave */
    fileh *fh;   /* marked busy for the duration */
    napi_deferred def;
    napi_ref keep[3]; /* JS values kept alive while the job runs */
    void (*work)(job *j);
    napi_value (*done)(napi_env env, job *j); /* success value (NULL: undefined) */
    void (*fin)(job *j);                      /* frees the op's own fields */
    int rc;
    char *err;
    napi_ref cb_error; /* an exception thrown by a streaming callback */
    atomic_int cancel; /* set when a callback threw or returned false */
};

static void job_set_error(job *j, int rc)
{
    j->rc = rc;
    free(j->err);
    const char *m = j->bx && j->bx->sb ? sbx_errmsg(j->bx->sb) : "";
    if (rc == SBX_EINTR && j->bx && j->bx->closing)
        m = "interrupted: the sandbox was killed";
    j->err = strdup(m && *m ? m : sbx_strerror(rc));
}

static void job_free(napi_env env, job *j)
{
    if (env) {
        for (int i = 0; i < 3; i++)
            if (j->keep[i])
                napi_delete_reference(env, j->keep[i]);
        if (j->cb_error)
            napi_delete_reference(env, j->cb_error);
    }
    if (j->fin)
        j->fin(j);
    if (j->bx)
        box_unref(j->bx);
    free(j->err);
    free(j);
}

static void job_complete(napi_env env, msg *m)
{
    job *j = (job *)m;
    napi_value v = NULL, e;
    if (j->cb_error && napi_get_reference_value(env, j->cb_error, &e) == napi_ok && e) {
        napi_reject_deferred(env, j->def, e);
    } else if (j->rc < 0) {
        napi_reject_deferred(env, j->def, make_error(env, j->rc, j->err));
    } else {
        if (j->done)
            v = j->done(env, j);
        bool pending = false;
        napi_is_exception_pending(env, &pending);
        if (pending) {
            napi_get_and_clear_last_exception(env, &e);
            napi_reject_deferred(env, j->def, e);
        } else {
            if (!v)
                napi_get_undefined(env, &v);
            napi_resolve_deferred(env, j->def, v);
        }
    }
    unhold(env, j->es);
    job_free(env, j);
}

static void job_drop(msg *m)
{
    job_free(NULL, (job *)m);
}

static void *job_thread(void *arg)
{
    job *j = arg;
    env_state *es = j->es;
    j->work(j);
    if (j->fh) {
        pthread_mutex_lock(&es->mu);
        j->fh->busy = 0;
        pthread_mutex_unlock(&es->mu);
    }
    if (j->entered)
        box_leave(j->bx);
    post(es, &j->m);
    thread_done(es);
    return NULL;
}

static job *job_new(size_t size)
{
    job *j = calloc(1, size);
    if (!j)
        return NULL;
    j->m.run = job_complete;
    j->m.drop = job_drop;
    return j;
}

static void keep(napi_env env, job *j, napi_value v)
{
    for (int i = 0; i < 3; i++)
        if (!j->keep[i]) {
            napi_create_reference(env, v, 1, &j->keep[i]);
            return;
        }
}

/*
 * Starts a job and returns its promise. With bx and enter, the sandbox must still be usable
 * (else the promise rejects at once); with fh, the file handle must be idle. Takes ownership
 * of j in every case.
 */
static napi_value job_start(napi_env env, job *j, box *bx, int enter, fileh *fh)
{
    env_state *es = get_es(env);
    napi_value promise;
    j->es = es;
    if (napi_create_promise(env, &j->def, &promise) != napi_ok) {
        if (j->fin)
            j->fin(j);
        free(j);
        return NULL;
    }
    hold(env, es);
    int rc = 0;
    const char *why = NULL;
    pthread_mutex_lock(&es->mu);
    if (bx) {
        j->bx = bx;
        bx->refs++;
    }
    if (fh) {
        if (fh->closed) {
            rc = SBX_EINVAL;
            why = "the file handle is closed";
        } else if (fh->busy) {
            rc = SBX_EBUSY;
            why = "another operation on this file handle is in progress";
        }
    }
    if (!rc && bx && enter) {
        rc = box_enter_locked(bx);
        if (rc)
            why = bx->destroyed || bx->closing ? "the sandbox has been killed"
                                               : "the sandbox is not running";
        else
            j->entered = 1;
    }
    if (!rc && fh) {
        fh->busy = 1;
        j->fh = fh;
    }
    pthread_mutex_unlock(&es->mu);
    if (!rc && thread_start(es, job_thread, j) != 0) {
        rc = SBX_ENOMEM;
        why = "cannot start a thread";
        pthread_mutex_lock(&es->mu);
        if (j->fh)
            j->fh->busy = 0;
        pthread_mutex_unlock(&es->mu);
        if (j->entered)
            box_leave(bx);
    }
    if (rc) {
        j->rc = rc;
        j->err = strdup(why);
        job_complete(env, &j->m);
    }
    return promise;
}

/* ---------------------------------------------------------------------------------------- */
/* Module-level functions                                                                   */
/* ---------------------------------------------------------------------------------------- */

#define ARGS(n)                                                                                    \
    size_t argc = n;                                                                               \
    napi_value argv[n];                                                                            \
    for (size_t i_ = 0; i_ < n; i_++)                                                              \
        argv[i_] = NULL;                                                                           \
    napi_get_cb_info(env, info, &argc, argv, NULL, NULL);                                          \
    for (size_t i_ = argc; i_ < n; i_++)                                                           \
        napi_get_undefined(env, &argv[i_]);

static napi_value f_version(napi_env env, napi_callback_info info)
{
    (void)info;
    napi_value v;
    napi_create_string_utf8(env, sbx_version(), NAPI_AUTO_LENGTH, &v);
    return v;
}

static napi_value f_strerror(napi_env env, napi_callback_info info)
{
    ARGS(1);
    int32_t c = 0;
    napi_get_value_int32(env, argv[0], &c);
    napi_value v;
    napi_create_string_utf8(env, sbx_strerror(c), NAPI_AUTO_LENGTH, &v);
    return v;
}

static napi_value f_set_error_factory(napi_env env, napi_callback_info info)
{
    ARGS(1);
    env_state *es = get_es(env);
    napi_ref r;
    if (arg_function(env, argv[0], "factory", 0, &r))
        return NULL;
    if (es->error_factory)
        napi_delete_reference(env, es->error_factory);
    es->error_factory = r;
    return NULL;
}

static napi_value f_hold(napi_env env, napi_callback_info info)
{
    (void)info;
    hold(env, get_es(env));
    return NULL;
}

static napi_value f_release(napi_env env, napi_callback_info info)
{
    (void)info;
    unhold(env, get_es(env));
    return NULL;
}

/* --- create, resume, fork ---------------------------------------------------------------- */

/* sbx_options and the strings it points to, parsed from the object built by lib/sandbox.js. */
typedef struct {
    sbx_options o;
    char *kernel, *rootfs, *cmdline, *image_dir, *user;
    char *tap_name, *tap_address, *tap_gateway, *tap_dns;
    char *template_name, *template_dir, *cgroup;
    char **envs, **metadata, **allow_out, **deny_out, **hosts;
    sbx_disk *disks;
    unsigned ndisks;
} create_args;

static void create_args_free(create_args *a)
{
    free(a->kernel);
    free(a->rootfs);
    free(a->cmdline);
    free(a->image_dir);
    free(a->user);
    free(a->tap_name);
    free(a->tap_address);
    free(a->tap_gateway);
    free(a->tap_dns);
    free(a->cgroup);
    free(a->template_name);
    free(a->template_dir);
    strv_free(a->envs);
    strv_free(a->metadata);
    strv_free(a->allow_out);
    strv_free(a->deny_out);
    strv_free(a->hosts);
    for (unsigned i = 0; i < a->ndisks; i++) {
        free((char *)a->disks[i].path);
        free((char *)a->disks[i].serial);
    }
    free(a->disks);
    memset(a, 0, sizeof(*a));
}

/* Fills a from the options object o; throws and returns -1 on bad input (a is then freed). */
static int parse_create(napi_env env, napi_value o, create_args *a)
{
    sbx_options def = SBX_OPTIONS_INIT;
    memset(a, 0, sizeof(*a));
    a->o = def;
    uint64_t life = 0;
    unsigned cfd = 0;
    napi_value disks;
    if (arg_string(env, prop(env, o, "kernel"), "kernel", 1, &a->kernel) ||
        arg_string(env, prop(env, o, "rootfs"), "rootfs", 1, &a->rootfs) ||
        arg_string(env, prop(env, o, "templateName"), "template", 1, &a->template_name) ||
        arg_string(env, prop(env, o, "templateDir"), "templateDir", 1, &a->template_dir) ||
        arg_string(env, prop(env, o, "cmdlineExtra"), "cmdlineExtra", 1, &a->cmdline) ||
        arg_string(env, prop(env, o, "imageDir"), "imageDir", 1, &a->image_dir) ||
        arg_string(env, prop(env, o, "defaultUser"), "defaultUser", 1, &a->user) ||
        arg_strv(env, prop(env, o, "envs"), "envs", &a->envs) ||
        arg_strv(env, prop(env, o, "metadata"), "metadata", &a->metadata) ||
        arg_u32(env, prop(env, o, "vcpus"), "cpuCount", 1, 0, &a->o.vcpus) ||
        arg_u32(env, prop(env, o, "memoryMib"), "memoryMB", 1, 0, &a->o.memory_mib) ||
        arg_u32(env, prop(env, o, "bootTimeoutMs"), "bootTimeoutMs", 1, 0, &a->o.boot_timeout_ms) ||
        arg_u32(env, prop(env, o, "consoleFd"), "consoleFd", 1, 0, &cfd) ||
        arg_uint(env, prop(env, o, "lifetimeMs"), "timeoutMs", 1, 9007199254740991.0, 0, &life) ||
        arg_strv(env, prop(env, o, "allowOut"), "network.allowOut", &a->allow_out) ||
        arg_strv(env, prop(env, o, "denyOut"), "network.denyOut", &a->deny_out) ||
        arg_strv(env, prop(env, o, "hosts"), "hosts", &a->hosts) ||
        arg_string(env, prop(env, o, "tapName"), "tap.name", 1, &a->tap_name) ||
        arg_string(env, prop(env, o, "tapAddress"), "tap.address", 1, &a->tap_address) ||
        arg_string(env, prop(env, o, "tapGateway"), "tap.gateway", 1, &a->tap_gateway) ||
        arg_string(env, prop(env, o, "tapDns"), "tap.dns", 1, &a->tap_dns) ||
        arg_string(env, prop(env, o, "cgroup"), "cgroup", 1, &a->cgroup) ||
        arg_u32(env, prop(env, o, "maxProcesses"), "maxProcesses", 1, 0, &a->o.max_processes) ||
        arg_u32(env, prop(env, o, "maxBufferMib"), "maxBufferMB", 1, 0, &a->o.max_buffer_mib))
        goto fail;
    a->o.isolated = arg_bool(env, prop(env, o, "isolated"), 0);
    a->o.cgroup = a->cgroup;
    a->o.network = !arg_bool(env, prop(env, o, "network"), 1) ? SBX_NET_NONE
                   : a->tap_name                              ? SBX_NET_TAP
                                                              : SBX_NET_NAT;
    a->o.tap_name = a->tap_name;
    a->o.tap_address = a->tap_address;
    a->o.tap_gateway = a->tap_gateway;
    a->o.tap_dns = a->tap_dns;
    a->o.net_policy.block_internet = !arg_bool(env, prop(env, o, "allowInternetAccess"), 1);
    a->o.net_policy.allow_out = (const char *const *)a->allow_out;
    a->o.net_policy.deny_out = (const char *const *)a->deny_out;
    a->o.hosts = (const char *const *)a->hosts;
    a->o.host_loopback = arg_bool(env, prop(env, o, "hostLoopback"), 0);
    disks = prop(env, o, "disks");
    if (!is_nullish(env, disks)) {
        bool is;
        uint32_t n;
        if (napi_is_array(env, disks, &is) != napi_ok || !is) {
            throw_sbx(env, SBX_EINVAL, "disks must be an array");
            goto fail;
        }
        napi_get_array_length(env, disks, &n);
        a->disks = calloc(n ? n : 1, sizeof(sbx_disk));
        if (!a->disks) {
            throw_sbx(env, SBX_ENOMEM, "out of memory");
            goto fail;
        }
        for (uint32_t i = 0; i < n; i++) {
            napi_value d;
            char *path = NULL, *serial = NULL;
            napi_get_element(env, disks, i, &d);
            if (arg_string(env, prop(env, d, "path"), "disks[].path", 0, &path) ||
                arg_string(env, prop(env, d, "serial"), "disks[].serial", 1, &serial)) {
                free(path);
                goto fail;
            }
            a->disks[i].path = path;
            a->disks[i].serial = serial;
            a->disks[i].read_only = arg_bool(env, prop(env, d, "readOnly"), 0);
            a->disks[i].ephemeral = arg_bool(env, prop(env, d, "ephemeral"), 0);
            a->ndisks = i + 1;
        }
    }
    a->o.kernel = a->kernel;
    a->o.rootfs = a->rootfs;
    a->o.template_name = a->template_name;
    a->o.template_dir = a->template_dir;
    a->o.cmdline_extra = a->cmdline;
    a->o.image_dir = a->image_dir;
    a->o.default_user = a->user;
    a->o.envs = (const char *const *)a->envs;
    a->o.metadata = (const char *const *)a->metadata;
    a->o.disks = a->disks;
    a->o.ndisks = a->ndisks;
    a->o.console_fd = (int)cfd;
    a->o.lifetime_ms = life;
    return 0;
fail:
    create_args_free(a);
    return -1;
}

/* A box for a sandbox being made, not yet in the environment's list. */
static box *box_new(env_state *es)
{
    box *bx = calloc(1, sizeof(box));
    if (!bx)
        return NULL;
    bx->magic = MAGIC_BOX;
    bx->es = es;
    bx->refs = 1; /* the job's */
    return bx;
}

static void box_link_locked(env_state *es, box *bx)
{
    bx->next = es->boxes;
    if (es->boxes)
        es->boxes->prev = bx;
    es->boxes = bx;
    bx->in_list = 1;
}

/* The JS external of a box made by a job (the box keeps one reference for it). */
static napi_value box_external(napi_env env, box *bx)
{
    napi_value ext;
    pthread_mutex_lock(&bx->es->mu);
    bx->refs++;
    bx->js = 1;
    pthread_mutex_unlock(&bx->es->mu);
    if (napi_create_external(env, bx, box_finalize, NULL, &ext) != napi_ok) {
        box_unref(bx);
        return NULL;
    }
    return ext;
}

typedef struct {
    job j;
    create_args a;
    char *resume_path; /* resume(path, opts) instead of create(opts) */
    box *nb;
} j_create;

static void create_fin(job *jj)
{
    j_create *j = (j_create *)jj;
    create_args_free(&j->a);
    free(j->resume_path);
    if (j->nb)
        box_unref(j->nb);
}

static void create_work(job *jj)
{
    j_create *j = (j_create *)jj;
    box *bx = j->nb;
    env_state *es = bx->es;
    int r = j->resume_path ? sbx_resume(&bx->sb, j->resume_path, &j->a.o)
                           : sbx_create(&bx->sb, &j->a.o);
    if (r == 0) {
        sbx_info inf;
        if (sbx_get_info(bx->sb, &inf) == 0)
            memcpy(bx->id, inf.id, sizeof(bx->id));
    } else {
        pthread_mutex_lock(&es->mu);
        sbx *sb = bx->sb;
        bx->sb = NULL; /* no more sbx_interrupt on it */
        pthread_mutex_unlock(&es->mu);
        const char *m = sb ? sbx_errmsg(sb) : "";
        jj->rc = r;
        jj->err = strdup(m && *m ? m : sbx_strerror(r));
        if (sb) {
            char *con = malloc(65536);
            if (con)
                sbx_console(sb, con, 65536);
            bx->console_at_death = con;
        }
        sbx_destroy(sb);
        pthread_mutex_lock(&es->mu);
        bx->destroyed = 1;
        list_remove_box(es, bx);
        pthread_cond_broadcast(&es->cv);
        pthread_mutex_unlock(&es->mu);
    }
    box_leave(bx);
}

static napi_value create_done(napi_env env, job *jj)
{
    return box_external(env, ((j_create *)jj)->nb);
}

/* create(opts) -> Promise<box>; resume(path, opts) -> Promise<box> */
static napi_value create_start(napi_env env, napi_value pathv, napi_value o)
{
    char *path = NULL;
    if (pathv && arg_string(env, pathv, "path", 0, &path))
        return NULL;
    j_create *j = (j_create *)job_new(sizeof(j_create));
    if (!j) {
        free(path);
        throw_sbx(env, SBX_ENOMEM, "out of memory");
        return NULL;
    }
    j->j.fin = create_fin;
    j->resume_path = path;
    if (parse_create(env, o, &j->a)) {
        create_fin(&j->j);
        free(j);
        return NULL;
    }
    env_state *es = get_es(env);
    box *bx = box_new(es);
    if (!bx) {
        throw_sbx(env, SBX_ENOMEM, "out of memory");
        create_fin(&j->j);
        free(j);
        return NULL;
    }
    bx->active = 1; /* the create thread, until sbx_create returns */
    pthread_mutex_lock(&es->mu);
    box_link_locked(es, bx);
    pthread_mutex_unlock(&es->mu);
    j->nb = bx;
    j->j.work = create_work;
    j->j.done = create_done;
    return job_start(env, &j->j, NULL, 0, NULL);
}

static napi_value f_create(napi_env env, napi_callback_info info)
{
    ARGS(1);
    return create_start(env, NULL, argv[0]);
}

static napi_value f_resume(napi_env env, napi_callback_info info)
{
    ARGS(2);
    return create_start(env, argv[0], argv[1]);
}

/* fork(box, n, opts) -> Promise<box[]>: the copies are made by sbx_fork on the parent. */
typedef struct {
    job j;
    create_args a;
    unsigned n;
    sbx **out;
    box **nbs;
} j_fork;

static void fork_fin(job *jj)
{
    j_fork *j = (j_fork *)jj;
    create_args_free(&j->a);
    for (unsigned i = 0; j->nbs && i < j->n; i++) {
        box *bx = j->nbs[i];
        if (!bx)
            continue;
        env_state *es = bx->es;
        pthread_mutex_lock(&es->mu);
        if (!bx->in_list && !bx->sb)
            bx->destroyed = 1; /* never held a sandbox: freed with its last reference */
        box_unref_locked(bx);
        pthread_mutex_unlock(&es->mu);
    }
    free(j->nbs);
    free(j->out);
}

static void fork_work(job *jj)
{
    j_fork *j = (j_fork *)jj;
    env_state *es = jj->es;
    int r = sbx_fork(jj->bx->sb, j->n, &j->a.o, j->out);
    if (r < 0) {
        job_set_error(jj, r);
        return;
    }
    pthread_mutex_lock(&es->mu);
    int closing = es->closing;
    for (unsigned i = 0; !closing && i < j->n; i++) {
        box *bx = j->nbs[i];
        sbx_info inf;
        bx->sb = j->out[i];
        j->out[i] = NULL;
        if (sbx_get_info(bx->sb, &inf) == 0)
            memcpy(bx->id, inf.id, sizeof(bx->id));
        box_link_locked(es, bx);
    }
    pthread_mutex_unlock(&es->mu);
    if (closing) {
        /* The environment is being torn down and no longer looks for new boxes. */
        for (unsigned i = 0; i < j->n; i++) {
            sbx_destroy(j->out[i]);
            j->out[i] = NULL;
        }
        jj->rc = SBX_ESTATE;
        jj->err = strdup("the environment is shutting down");
    }
}

static napi_value fork_done(napi_env env, job *jj)
{
    j_fork *j = (j_fork *)jj;
    napi_value a;
    napi_create_array_with_length(env, j->n, &a);
    for (unsigned i = 0; i < j->n; i++) {
        napi_value ext = box_external(env, j->nbs[i]);
        if (!ext)
            return NULL;
        napi_set_element(env, a, i, ext);
    }
    return a;
}

static napi_value f_fork(napi_env env, napi_callback_info info)
{
    ARGS(3);
    box *bx = get_box(env, argv[0]);
    unsigned n;
    if (!bx || arg_u32(env, argv[1], "n", 0, 0, &n))
        return NULL;
    if (n < 1 || n > 1024) {
        throw_sbx(env, SBX_EINVAL, "n must be 1..1024");
        return NULL;
    }
    j_fork *j = (j_fork *)job_new(sizeof(j_fork));
    if (!j) {
        throw_sbx(env, SBX_ENOMEM, "out of memory");
        return NULL;
    }
    j->j.fin = fork_fin;
    if (parse_create(env, argv[2], &j->a)) {
        free(j);
        return NULL;
    }
    j->n = n;
    j->out = calloc(n, sizeof(sbx *));
    j->nbs = calloc(n, sizeof(box *));
    for (unsigned i = 0; j->nbs && i < n; i++)
        if (!(j->nbs[i] = box_new(get_es(env))))
            break;
    if (!j->out || !j->nbs || !j->nbs[n - 1]) {
        throw_sbx(env, SBX_ENOMEM, "out of memory");
        fork_fin(&j->j);
        free(j);
        return NULL;
    }
    j->j.work = fork_work;
    j->j.done = fork_done;
    keep(env, &j->j, argv[0]);
    return job_start(env, &j->j, bx, 1, NULL);
}

/* --- list running ------------------------------------------------------------------------ */

typedef struct {
    job j;
    sbx_listing *list;
    size_t n;
} j_listing;

static void listing_work(job *jj)
{
    j_listing *j = (j_listing *)jj;
    int r = sbx_list_running(&j->list, &j->n);
    if (r < 0) {
        jj->rc = r;
        jj->err = strdup(sbx_strerror(r));
    }
}

static napi_value listing_done(napi_env env, job *jj)
{
    j_listing *j = (j_listing *)jj;
    napi_value a;
    napi_create_array(env, &a);
    for (size_t i = 0; i < j->n; i++) {
        sbx_listing *l = &j->list[i];
        napi_value o;
        napi_create_object(env, &o);
        set_str(env, o, "id", l->id);
        set_num(env, o, "pid", l->pid);
        set_num(env, o, "createdMs", (double)l->created_ns / 1e6);
        set_num(env, o, "endsMs", (double)l->ends_ns / 1e6);
        set_num(env, o, "vcpus", l->vcpus);
        set_num(env, o, "memoryMib", l->memory_mib);
        set_str(env, o, "rootfs", l->rootfs);
        napi_set_named_property(env, o, "metadata", strv_value(env, l->metadata));
        napi_set_element(env, a, (uint32_t)i, o);
    }
    return a;
}

static void listing_fin(job *jj)
{
    j_listing *j = (j_listing *)jj;
    if (j->list)
        sbx_listing_free(j->list, j->n);
}

static napi_value f_list_running(napi_env env, napi_callback_info info)
{
    (void)info;
    j_listing *j = (j_listing *)job_new(sizeof(j_listing));
    if (!j)
        return NULL;
    j->j.work = listing_work;
    j->j.done = listing_done;
    j->j.fin = listing_fin;
    return job_start(env, &j->j, NULL, 0, NULL);
}

/* --- sandbox-level ---------------------------------------------------------------------- */

static void kill_work(job *jj)
{
    box_destroy_sync(jj->bx);
}

static napi_value f_kill_box(napi_env env, napi_callback_info info)
{
    ARGS(1);
    box *bx = get_box(env, argv[0]);
    if (!bx)
        return NULL;
    job *j = job_new(sizeof(job));
    j->work = kill_work;
    keep(env, j, argv[0]);
    return job_start(env, j, bx, 0, NULL);
}

static napi_value f_interrupt(napi_env env, napi_callback_info info)
{
    ARGS(1);
    box *bx = get_box(env, argv[0]);
    if (!bx)
        return NULL;
    pthread_mutex_lock(&bx->es->mu);
    if (bx->sb && !bx->destroyed)
        sbx_interrupt(bx->sb);
    pthread_mutex_unlock(&bx->es->mu);
    return NULL;
}

/* Short non-blocking calls made on the main thread, still inside enter/leave so that a kill
   running on another thread cannot destroy the sandbox underneath. */
static napi_value f_state(napi_env env, napi_callback_info info)
{
    ARGS(1);
    box *bx = get_box(env, argv[0]);
    if (!bx)
        return NULL;
    int st = SBX_STATE_STOPPED;
    if (box_enter(bx) == 0) {
        st = sbx_state(bx->sb);
        box_leave(bx);
    }
    napi_value v;
    napi_create_int32(env, st, &v);
    return v;
}

static napi_value f_killed(napi_env env, napi_callback_info info)
{
    ARGS(1);
    box *bx = get_box(env, argv[0]);
    if (!bx)
        return NULL;
    pthread_mutex_lock(&bx->es->mu);
    int k = bx->closing || bx->destroyed;
    pthread_mutex_unlock(&bx->es->mu);
    napi_value v;
    napi_get_boolean(env, k, &v);
    return v;
}

static napi_value f_info(napi_env env, napi_callback_info info)
{
    ARGS(1);
    box *bx = get_box(env, argv[0]);
    if (!bx)
        return NULL;
    sbx_info in;
    int r = box_enter(bx);
    if (r) {
        throw_sbx(env, r, "the sandbox has been killed");
        return NULL;
    }
    r = sbx_get_info(bx->sb, &in);
    box_leave(bx);
    if (r) {
        throw_sbx(env, r, "sbx_get_info failed");
        return NULL;
    }
    napi_value o;
    napi_create_object(env, &o);
    set_str(env, o, "id", in.id);
    set_str(env, o, "kernelRelease", in.kernel_release);
    set_str(env, o, "envdVersion", in.envd_version);
    set_num(env, o, "protocolVersion", in.protocol_version);
    set_num(env, o, "vcpus", in.vcpus);
    set_num(env, o, "memoryMib", in.memory_mib);
    set_num(env, o, "bootMs", (double)in.boot_ns / 1e6);
    set_num(env, o, "guestCpus", in.guest_cpus);
    set_num(env, o, "guestMemKib", (double)in.guest_mem_kib);
    set_str(env, o, "osName", in.os_name);
    set_num(env, o, "state", in.state);
    set_num(env, o, "createdMs", (double)in.created_ns / 1e6);
    set_num(env, o, "endsMs", (double)in.ends_ns / 1e6);
    set_num(env, o, "uptimeMs", (double)in.uptime_ns / 1e6);
    return o;
}

static napi_value f_metadata(napi_env env, napi_callback_info info)
{
    ARGS(1);
    box *bx = get_box(env, argv[0]);
    if (!bx)
        return NULL;
    napi_value a;
    napi_create_array(env, &a);
    if (box_enter(bx))
        return a;
    const char *k, *v;
    for (size_t i = 0; sbx_metadata_at(bx->sb, i, &k, &v) == 0; i++) {
        napi_value pair, ks, vs;
        napi_create_array_with_length(env, 2, &pair);
        napi_create_string_utf8(env, k, NAPI_AUTO_LENGTH, &ks);
        napi_create_string_utf8(env, v, NAPI_AUTO_LENGTH, &vs);
        napi_set_element(env, pair, 0, ks);
        napi_set_element(env, pair, 1, vs);
        napi_set_element(env, a, (uint32_t)i, pair);
    }
    box_leave(bx);
    return a;
}

/* Enters bx for a synchronous call (one that never blocks on the guest); throws and returns
   -1 when the sandbox is gone. */
static int sync_enter(napi_env env, box *bx)
{
    if (box_enter(bx) == 0)
        return 0;
    throw_sbx(env, SBX_ESTATE, "the sandbox was killed");
    return -1;
}

/* Leaves bx after a synchronous call that returned r, throwing its error. Returns r. */
static int sync_leave(napi_env env, box *bx, int r)
{
    if (r < 0)
        throw_sbx(env, r, "%s", sbx_errmsg(bx->sb));
    box_leave(bx);
    return r;
}

/* networkUpdate(box, {allowInternetAccess, allowOut, denyOut}) */
static napi_value f_network_update(napi_env env, napi_callback_info info)
{
    ARGS(2);
    box *bx = get_box(env, argv[0]);
    if (!bx)
        return NULL;
    char **allow = NULL, **deny = NULL;
    if (!arg_strv(env, prop(env, argv[1], "allowOut"), "allowOut", &allow) &&
        !arg_strv(env, prop(env, argv[1], "denyOut"), "denyOut", &deny) && !sync_enter(env, bx)) {
        sbx_net_policy p = {!arg_bool(env, prop(env, argv[1], "allowInternetAccess"), 1),
                            (const char *const *)allow, (const char *const *)deny};
        sync_leave(env, bx, sbx_network_update(bx->sb, &p));
    }
    strv_free(allow);
    strv_free(deny);
    return NULL;
}

/* expose(box, guestPort, hostPort, hostAddr) -> the host port */
static napi_value f_expose(napi_env env, napi_callback_info info)
{
    ARGS(4);
    box *bx = get_box(env, argv[0]);
    unsigned port, host_port, bound = 0;
    char *addr = NULL;
    if (!bx || arg_u32(env, argv[1], "port", 0, 1, &port) ||
        arg_u32(env, argv[2], "hostPort", 1, 0, &host_port) ||
        arg_string(env, argv[3], "hostAddr", 1, &addr))
        return NULL;
    int r = sync_enter(env, bx);
    if (r == 0)
        r = sync_leave(env, bx, sbx_expose(bx->sb, port, addr, host_port, &bound));
    free(addr);
    napi_value v;
    napi_create_uint32(env, bound, &v);
    return r < 0 ? NULL : v;
}

/* getHost(box, port) -> "HOST:PORT" */
static napi_value f_get_host(napi_env env, napi_callback_info info)
{
    ARGS(2);
    box *bx = get_box(env, argv[0]);
    unsigned port;
    char buf[64];
    if (!bx || arg_u32(env, argv[1], "port", 0, 1, &port) || sync_enter(env, bx) ||
        sync_leave(env, bx, sbx_get_host(bx->sb, port, buf, sizeof(buf))) < 0)
        return NULL;
    napi_value v;
    napi_create_string_utf8(env, buf, NAPI_AUTO_LENGTH, &v);
    return v;
}

/* unexpose(box, port) */
static napi_value f_unexpose(napi_env env, napi_callback_info info)
{
    ARGS(2);
    box *bx = get_box(env, argv[0]);
    unsigned port;
    if (bx && !arg_u32(env, argv[1], "port", 0, 1, &port) && !sync_enter(env, bx))
        sync_leave(env, bx, sbx_unexpose(bx->sb, port));
    return NULL;
}

static napi_value f_network_stats(napi_env env, napi_callback_info info)
{
    ARGS(1);
    box *bx = get_box(env, argv[0]);
    sbx_net_stats st;
    if (!bx || sync_enter(env, bx) || sync_leave(env, bx, sbx_network_stats(bx->sb, &st)) < 0)
        return NULL;
    napi_value o;
    napi_create_object(env, &o);
    set_num(env, o, "txFrames", (double)st.tx_frames);
    set_num(env, o, "txBytes", (double)st.tx_bytes);
    set_num(env, o, "rxFrames", (double)st.rx_frames);
    set_num(env, o, "rxBytes", (double)st.rx_bytes);
    set_num(env, o, "blocked", (double)st.blocked);
    set_num(env, o, "dropped", (double)st.dropped);
    return o;
}

static napi_value f_console(napi_env env, napi_callback_info info)
{
    ARGS(1);
    box *bx = get_box(env, argv[0]);
    if (!bx)
        return NULL;
    napi_value v;
    if (box_enter(bx) == 0) {
        char *buf = malloc(65536);
        size_t n = buf ? sbx_console(bx->sb, buf, 65536) : 0;
        box_leave(bx);
        napi_create_string_utf8(env, buf ? buf : "", n, &v);
        free(buf);
        return v;
    }
    pthread_mutex_lock(&bx->es->mu);
    napi_create_string_utf8(env, bx->console_at_death ? bx->console_at_death : "", NAPI_AUTO_LENGTH,
                            &v);
    pthread_mutex_unlock(&bx->es->mu);
    return v;
}

/* ping / shutdown / set_timeout / metrics: one job type with an op switch. */
enum { OP_PING, OP_SHUTDOWN, OP_SET_TIMEOUT, OP_METRICS };

typedef struct {
    job j;
    int op;
    uint64_t arg;
    sbx_metrics m;
} j_simple;

static void simple_work(job *jj)
{
    j_simple *j = (j_simple *)jj;
    sbx *sb = jj->bx->sb;
    int r = 0;
    switch (j->op) {
    case OP_PING:
        r = sbx_ping(sb, (unsigned)j->arg);
        break;
    case OP_SHUTDOWN:
        r = sbx_shutdown(sb, (unsigned)j->arg);
        break;
    case OP_SET_TIMEOUT:
        r = sbx_set_timeout(sb, j->arg);
        break;
    case OP_METRICS:
        r = sbx_get_metrics(sb, &j->m, (unsigned)j->arg);
        break;
    }
    if (r < 0)
        job_set_error(jj, r);
}

static napi_value simple_done(napi_env env, job *jj)
{
    j_simple *j = (j_simple *)jj;
    if (j->op != OP_METRICS)
        return NULL;
    napi_value o;
    napi_create_object(env, &o);
    set_num(env, o, "uptimeMs", (double)j->m.uptime_ms);
    set_num(env, o, "cpus", j->m.cpus);
    set_num(env, o, "cpuBusyMs", (double)j->m.cpu_busy_ms);
    set_num(env, o, "cpuTotalMs", (double)j->m.cpu_total_ms);
    set_num(env, o, "memTotalKib", (double)j->m.mem_total_kib);
    set_num(env, o, "memAvailableKib", (double)j->m.mem_available_kib);
    set_num(env, o, "diskTotalBytes", (double)j->m.disk_total_bytes);
    set_num(env, o, "diskUsedBytes", (double)j->m.disk_used_bytes);
    set_num(env, o, "processes", j->m.processes);
    return o;
}

static napi_value simple_start(napi_env env, napi_callback_info info, int op)
{
    ARGS(2);
    box *bx = get_box(env, argv[0]);
    if (!bx)
        return NULL;
    uint64_t arg;
    double max = op == OP_SET_TIMEOUT ? 9007199254740991.0 : 4294967295.0;
    if (arg_uint(env, argv[1], "timeoutMs", 1, max, 0, &arg))
        return NULL;
    j_simple *j = (j_simple *)job_new(sizeof(j_simple));
    j->op = op;
    j->arg = arg;
    j->j.work = simple_work;
    j->j.done = simple_done;
    keep(env, &j->j, argv[0]);
    return job_start(env, &j->j, bx, 1, NULL);
}

static napi_value f_ping(napi_env env, napi_callback_info info)
{
    return simple_start(env, info, OP_PING);
}
static napi_value f_shutdown(napi_env env, napi_callback_info info)
{
    return simple_start(env, info, OP_SHUTDOWN);
}
static napi_value f_set_timeout(napi_env env, napi_callback_info info)
{
    return simple_start(env, info, OP_SET_TIMEOUT);
}
static napi_value f_metrics(napi_env env, napi_callback_info info)
{
    return simple_start(env, info, OP_METRICS);
}

/* snapshot(box, nameOrPath) / pause(box, path) -> Promise<void> */
enum { SNAP_SNAPSHOT, SNAP_PAUSE };

typedef struct {
    job j;
    int op;
    char *path;
} j_snap;

static void snap_work(job *jj)
{
    j_snap *j = (j_snap *)jj;
    int r =
        j->op == SNAP_PAUSE ? sbx_pause(jj->bx->sb, j->path) : sbx_snapshot(jj->bx->sb, j->path);
    if (r < 0)
        job_set_error(jj, r);
}

static void snap_fin(job *jj)
{
    free(((j_snap *)jj)->path);
}

static napi_value snap_start(napi_env env, napi_callback_info info, int op)
{
    ARGS(2);
    box *bx = get_box(env, argv[0]);
    char *path;
    if (!bx || arg_string(env, argv[1], op == SNAP_PAUSE ? "path" : "nameOrPath", 0, &path))
        return NULL;
    j_snap *j = (j_snap *)job_new(sizeof(j_snap));
    if (!j) {
        free(path);
        throw_sbx(env, SBX_ENOMEM, "out of memory");
        return NULL;
    }
    j->op = op;
    j->path = path;
    j->j.work = snap_work;
    j->j.fin = snap_fin;
    keep(env, &j->j, argv[0]);
    return job_start(env, &j->j, bx, 1, NULL);
}

static napi_value f_snapshot(napi_env env, napi_callback_info info)
{
    return snap_start(env, info, SNAP_SNAPSHOT);
}

static napi_value f_pause(napi_env env, napi_callback_info info)
{
    return snap_start(env, info, SNAP_PAUSE);
}

/* ---------------------------------------------------------------------------------------- */
/* Commands                                                                                 */
/* ---------------------------------------------------------------------------------------- */

typedef struct {
    sbx_exec_options o;
    char **argv, **envs;
    char *cmd, *cwd, *user, *tag;
    void *stdin_data;
    size_t stdin_len;
} exec_args;

static void exec_args_free(exec_args *a)
{
    strv_free(a->argv);
    strv_free(a->envs);
    free(a->cmd);
    free(a->cwd);
    free(a->user);
    free(a->tag);
    free(a->stdin_data);
}

/* {argv | cmd, envs, cwd, user, stdin, keepStdin, timeoutMs, outputCap, tag} */
static int parse_exec(napi_env env, napi_value o, exec_args *a, int need_what)
{
    sbx_exec_options def = SBX_EXEC_OPTIONS_INIT;
    memset(a, 0, sizeof(*a));
    a->o = def;
    uint64_t cap;
    if (arg_strv(env, prop(env, o, "argv"), "argv", &a->argv) ||
        arg_string(env, prop(env, o, "cmd"), "cmd", 1, &a->cmd) ||
        arg_strv(env, prop(env, o, "envs"), "envs", &a->envs) ||
        arg_string(env, prop(env, o, "cwd"), "cwd", 1, &a->cwd) ||
        arg_string(env, prop(env, o, "user"), "user", 1, &a->user) ||
        arg_string(env, prop(env, o, "tag"), "tag", 1, &a->tag) ||
        arg_bytes(env, prop(env, o, "stdin"), "stdin", 1, &a->stdin_data, &a->stdin_len) ||
        arg_u32(env, prop(env, o, "timeoutMs"), "timeoutMs", 1, 0, &a->o.timeout_ms) ||
        arg_uint(env, prop(env, o, "outputCap"), "outputCap", 1, 9007199254740991.0, 0, &cap)) {
        exec_args_free(a);
        return -1;
    }
    if (need_what && !!a->argv == !!a->cmd) {
        exec_args_free(a);
        throw_sbx(env, SBX_EINVAL, "give exactly one of cmd (a string) or argv (an array)");
        return -1;
    }
    if (a->argv && !a->argv[0]) {
        exec_args_free(a);
        throw_sbx(env, SBX_EINVAL, "argv must not be empty");
        return -1;
    }
    a->o.argv = (const char *const *)a->argv;
    a->o.cmd = a->cmd;
    a->o.envs = (const char *const *)a->envs;
    a->o.cwd = a->cwd;
    a->o.user = a->user;
    a->o.tag = a->tag;
    a->o.stdin_data = a->stdin_data;
    a->o.stdin_len = a->stdin_len;
    a->o.keep_stdin = arg_bool(env, prop(env, o, "keepStdin"), 0);
    a->o.output_cap = (size_t)cap;
    return 0;
}

static napi_value result_value(napi_env env, const sbx_exec_result *r, int with_output)
{
    napi_value o;
    napi_create_object(env, &o);
    set_num(env, o, "exitCode", r->exit_code);
    set_num(env, o, "signal", r->signal);
    set_bool(env, o, "timedOut", r->timed_out);
    set_bool(env, o, "truncated", r->truncated);
    set_num(env, o, "pid", r->pid);
    set_num(env, o, "durationMs", (double)r->duration_ms);
    if (with_output) {
        napi_set_named_property(env, o, "stdout",
                                buffer_copy(env, r->out, r->out ? r->out_len : 0));
        napi_set_named_property(env, o, "stderr",
                                buffer_copy(env, r->err, r->err ? r->err_len : 0));
    }
    return o;
}

/* Output chunks travelling to a JS callback. */
typedef struct {
    msg m;
    job *j; /* the exec job (outlives the chunk: its completion is posted after) */
    int stream;
    size_t len;
    char data[];
} chunk_msg;

static void chunk_drop(msg *m)
{
    free(m);
}

/* Calls a job's streaming callback (ref may be NULL: none). An exception it throws is kept,
   the promise rejects with it, and the job is cancelled: its C callbacks return non-zero. */
static void job_callback(napi_env env, job *j, napi_ref ref, size_t argc, const napi_value *argv)
{
    napi_value fn, global, ret;
    if (atomic_load(&j->cancel) || !ref || napi_get_reference_value(env, ref, &fn) != napi_ok ||
        !fn)
        return;
    napi_get_global(env, &global);
    if (napi_call_function(env, global, fn, argc, argv, &ret) != napi_ok) {
        napi_value e;
        if (napi_get_and_clear_last_exception(env, &e) == napi_ok && !j->cb_error)
            napi_create_reference(env, e, 1, &j->cb_error);
        atomic_store(&j->cancel, 1);
    }
}

static void chunk_run(napi_env env, msg *m)
{
    chunk_msg *c = (chunk_msg *)m;
    if (!atomic_load(&c->j->cancel)) {
        napi_value args[2];
        napi_create_int32(env, c->stream, &args[0]);
        args[1] = buffer_copy(env, c->data, c->len);
        job_callback(env, c->j, c->j->keep[1], 2, args);
    }
    free(c);
}

typedef struct {
    job j;
    exec_args a;
    sbx_exec_result res;
} j_exec;

static int exec_on_output(void *ctx, int stream, const void *data, size_t len)
{
    job *j = ctx;
    if (atomic_load(&j->cancel))
        return 1;
    chunk_msg *c = malloc(sizeof(chunk_msg) + len);
    if (!c)
        return 1;
    c->m.run = chunk_run;
    c->m.drop = chunk_drop;
    c->j = j;
    c->stream = stream;
    c->len = len;
    memcpy(c->data, data, len);
    post(j->es, &c->m);
    return 0;
}

static void exec_work(job *jj)
{
    j_exec *j = (j_exec *)jj;
    int r = sbx_exec(jj->bx->sb, &j->a.o, &j->res);
    if (r < 0)
        job_set_error(jj, r);
}

static napi_value exec_done(napi_env env, job *jj)
{
    j_exec *j = (j_exec *)jj;
    return result_value(env, &j->res, 1);
}

static void exec_fin(job *jj)
{
    j_exec *j = (j_exec *)jj;
    exec_args_free(&j->a);
    sbx_exec_result_free(&j->res);
}

/* exec(box, opts, onOutput?) -> Promise<result> */
static napi_value f_exec(napi_env env, napi_callback_info info)
{
    ARGS(3);
    box *bx = get_box(env, argv[0]);
    if (!bx)
        return NULL;
    j_exec *j = (j_exec *)job_new(sizeof(j_exec));
    if (parse_exec(env, argv[1], &j->a, 1)) {
        free(j);
        return NULL;
    }
    napi_valuetype t;
    napi_typeof(env, argv[2], &t);
    if (t != napi_undefined && t != napi_null && t != napi_function) {
        exec_args_free(&j->a);
        free(j);
        throw_sbx(env, SBX_EINVAL, "onOutput must be a function");
        return NULL;
    }
    keep(env, &j->j, argv[0]);
    if (t == napi_function) {
        keep(env, &j->j, argv[2]); /* keep[1] */
        j->a.o.on_output = exec_on_output;
        j->a.o.ctx = &j->j;
    }
    j->j.work = exec_work;
    j->j.done = exec_done;
    j->j.fin = exec_fin;
    return job_start(env, &j->j, bx, 1, NULL);
}

/* kill(box, pid, signal, group) -> Promise<boolean> (false: no such process) */
typedef struct {
    job j;
    uint32_t pid;
    int sig, group, found;
} j_kill;

static void kill_pid_work(job *jj)
{
    j_kill *j = (j_kill *)jj;
    int r = sbx_kill(jj->bx->sb, j->pid, j->sig, j->group);
    if (r == SBX_ENOENT)
        j->found = 0;
    else if (r < 0)
        job_set_error(jj, r);
    else
        j->found = 1;
}

static napi_value kill_pid_done(napi_env env, job *jj)
{
    napi_value v;
    napi_get_boolean(env, ((j_kill *)jj)->found, &v);
    return v;
}

static napi_value f_kill_pid(napi_env env, napi_callback_info info)
{
    ARGS(4);
    box *bx = get_box(env, argv[0]);
    if (!bx)
        return NULL;
    unsigned pid, sig;
    if (arg_u32(env, argv[1], "pid", 0, 0, &pid) || arg_u32(env, argv[2], "signal", 1, 9, &sig))
        return NULL;
    j_kill *j = (j_kill *)job_new(sizeof(j_kill));
    j->pid = pid;
    j->sig = (int)sig;
    j->group = arg_bool(env, argv[3], 0);
    j->j.work = kill_pid_work;
    j->j.done = kill_pid_done;
    keep(env, &j->j, argv[0]);
    return job_start(env, &j->j, bx, 1, NULL);
}

/* procList(box) */
typedef struct {
    job j;
    sbx_proc_info *list;
    size_t n;
} j_plist;

static void plist_work(job *jj)
{
    j_plist *j = (j_plist *)jj;
    int r = sbx_proc_list(jj->bx->sb, &j->list, &j->n);
    if (r < 0)
        job_set_error(jj, r);
}

static napi_value plist_done(napi_env env, job *jj)
{
    j_plist *j = (j_plist *)jj;
    napi_value a;
    napi_create_array(env, &a);
    for (size_t i = 0; i < j->n; i++) {
        sbx_proc_info *p = &j->list[i];
        napi_value o;
        napi_create_object(env, &o);
        set_num(env, o, "pid", p->pid);
        napi_set_named_property(env, o, "argv", strv_value(env, p->argv));
        set_str(env, o, "cwd", p->cwd);
        set_str(env, o, "tag", p->tag);
        set_bool(env, o, "running", p->running);
        set_num(env, o, "exitCode", p->exit_code);
        set_num(env, o, "signal", p->signal);
        set_bool(env, o, "pty", p->pty);
        set_bool(env, o, "attached", p->attached);
        napi_set_element(env, a, (uint32_t)i, o);
    }
    return a;
}

static void plist_fin(job *jj)
{
    j_plist *j = (j_plist *)jj;
    if (j->list)
        sbx_proc_list_free(j->list, j->n);
}

static napi_value f_proc_list(napi_env env, napi_callback_info info)
{
    ARGS(1);
    box *bx = get_box(env, argv[0]);
    if (!bx)
        return NULL;
    j_plist *j = (j_plist *)job_new(sizeof(j_plist));
    j->j.work = plist_work;
    j->j.done = plist_done;
    j->j.fin = plist_fin;
    keep(env, &j->j, argv[0]);
    return job_start(env, &j->j, bx, 1, NULL);
}

/* ---------------------------------------------------------------------------------------- */
/* Pumps: a thread owning a process or watch handle                                          */
/* ---------------------------------------------------------------------------------------- */

enum { PC_WRITE, PC_CLOSE_STDIN, PC_RESIZE, PC_SIGNAL };

typedef struct pcmd {
    msg m; /* completion */
    struct pcmd *next;
    pump *p;
    env_state *es;
    int op;
    void *data;
    size_t len;
    unsigned a, b;
    napi_deferred def;
    int rc;
    char *err;
} pcmd;

static void pcmd_drop(msg *m)
{
    pcmd *c = (pcmd *)m;
    free(c->data);
    free(c->err);
    free(c);
}

static void pcmd_run(napi_env env, msg *m)
{
    pcmd *c = (pcmd *)m;
    if (c->rc < 0) {
        napi_reject_deferred(env, c->def, make_error(env, c->rc, c->err));
    } else {
        napi_value u;
        napi_get_undefined(env, &u);
        napi_resolve_deferred(env, c->def, u);
    }
    unhold(env, c->es);
    pcmd_drop(m);
}

/* Events to JS: onEvent(kind, a, b). */
enum { EV_STDOUT = 1, EV_STDERR = 2, EV_EXIT = 3, EV_ERROR = 4, EV_WATCH = 5, EV_END = 6 };

typedef struct {
    msg m;
    pump *p;
    int kind;
    sbx_exec_result res; /* EV_EXIT */
    int rc;              /* EV_ERROR */
    int op;              /* EV_WATCH */
    size_t len;
    char data[]; /* output bytes, error message or watch name */
} ev_msg;

static void ev_drop(msg *m)
{
    free(m);
}

static void pump_free_if_done(pump *p)
{
    if (p->ended && p->js_gone) {
        box_unref(p->bx);
        close(p->evfd);
        free(p->close_defs);
        p->magic = 0;
        free(p);
    }
}

static void ev_run(napi_env env, msg *m)
{
    ev_msg *e = (ev_msg *)m;
    pump *p = e->p;
    napi_value fn = NULL, args[3], global, ret;
    if (p->on_event)
        napi_get_reference_value(env, p->on_event, &fn);
    napi_create_int32(env, e->kind, &args[0]);
    napi_get_undefined(env, &args[1]);
    napi_get_undefined(env, &args[2]);
    switch (e->kind) {
    case EV_STDOUT:
    case EV_STDERR:
        args[1] = buffer_copy(env, e->data, e->len);
        break;
    case EV_EXIT:
        args[1] = result_value(env, &e->res, 0);
        break;
    case EV_ERROR:
        args[1] = make_error(env, e->rc, e->data);
        break;
    case EV_WATCH:
        napi_create_int32(env, e->op, &args[1]);
        napi_create_string_utf8(env, e->data, e->len, &args[2]);
        break;
    }
    if (fn) {
        napi_get_global(env, &global);
        if (napi_call_function(env, global, fn, 3, args, &ret) != napi_ok) {
            napi_value ex;
            if (napi_get_and_clear_last_exception(env, &ex) == napi_ok)
                napi_fatal_exception(env, ex); /* like any error thrown in an async callback */
        }
    }
    if (e->kind == EV_END) {
        napi_value u;
        napi_get_undefined(env, &u);
        for (size_t i = 0; i < p->nclose_defs; i++) {
            napi_resolve_deferred(env, p->close_defs[i], u);
            unhold(env, p->es);
        }
        p->nclose_defs = 0;
        if (p->on_event) {
            napi_delete_reference(env, p->on_event);
            p->on_event = NULL;
        }
        p->ended = 1;
        free(e);
        pump_free_if_done(p);
        return;
    }
    free(e);
}

static void ev_post(pump *p, int kind, const void *data, size_t len)
{
    ev_msg *e = calloc(1, sizeof(ev_msg) + len + 1);
    if (!e)
        return;
    e->m.run = ev_run;
    e->m.drop = ev_drop;
    e->p = p;
    e->kind = kind;
    e->len = len;
    if (len)
        memcpy(e->data, data, len);
    post(p->es, &e->m);
}

static void ev_post_error(pump *p, int rc)
{
    const char *m = sbx_errmsg(p->bx->sb);
    if (!m || !*m)
        m = sbx_strerror(rc);
    ev_msg *e = calloc(1, sizeof(ev_msg) + strlen(m) + 1);
    if (!e)
        return;
    e->m.run = ev_run;
    e->m.drop = ev_drop;
    e->p = p;
    e->kind = EV_ERROR;
    e->rc = rc;
    e->len = strlen(m);
    memcpy(e->data, m, e->len);
    post(p->es, &e->m);
}

static void pcmd_exec(pump *p, pcmd *c)
{
    int r = 0;
    switch (c->op) {
    case PC_WRITE:
        r = sbx_proc_write(p->proc, c->data, c->len);
        break;
    case PC_CLOSE_STDIN:
        r = sbx_proc_close_stdin(p->proc);
        break;
    case PC_RESIZE:
        r = sbx_proc_resize(p->proc, c->a, c->b);
        break;
    case PC_SIGNAL:
        r = sbx_proc_signal(p->proc, (int)c->a, (int)c->b);
        break;
    }
    if (r < 0) {
        c->rc = r;
        const char *m = sbx_errmsg(p->bx->sb);
        c->err = strdup(m && *m ? m : sbx_strerror(r));
    }
    post(p->es, &c->m);
}

static void *pump_thread(void *arg)
{
    pump *p = arg;
    env_state *es = p->es;
    char *buf = malloc(READ_CHUNK);
    int done = 0;
    struct pollfd fds[2];
    fds[0].fd = p->evfd;
    fds[0].events = POLLIN;
    fds[1].fd = p->is_watch ? sbx_watch_fd(p->watch) : sbx_proc_fd(p->proc);
    fds[1].events = POLLIN;
    while (!done && buf) {
        pthread_mutex_lock(&es->mu);
        pcmd *cmds = p->cmds;
        p->cmds = p->cmds_tail = NULL;
        int stop = p->stop_req || p->bx->closing;
        pthread_mutex_unlock(&es->mu);
        while (cmds) {
            pcmd *n = cmds->next;
            pcmd_exec(p, cmds);
            cmds = n;
        }
        if (stop)
            break;
        if (poll(fds, 2, -1) < 0 && errno != EINTR)
            break;
        if (fds[0].revents) {
            uint64_t v;
            ssize_t rr = read(p->evfd, &v, sizeof(v));
            (void)rr;
        }
        if (!fds[1].revents)
            continue;
        /* A bounded burst, so that queued commands are not starved by a chatty process. */
        for (int i = 0; i < 16 && !done; i++) {
            if (p->is_watch) {
                sbx_watch_event ev;
                int r = sbx_watch_next(p->watch, &ev, 0);
                if (r == SBX_EAGAIN || r == SBX_ETIMEDOUT)
                    break;
                if (r < 0) {
                    ev_post_error(p, r);
                    done = 1;
                    break;
                }
                ev_msg *e = calloc(1, sizeof(ev_msg) + strlen(ev.name) + 1);
                if (e) {
                    e->m.run = ev_run;
                    e->m.drop = ev_drop;
                    e->p = p;
                    e->kind = EV_WATCH;
                    e->op = ev.op;
                    e->len = strlen(ev.name);
                    memcpy(e->data, ev.name, e->len);
                    post(es, &e->m);
                }
                continue;
            }
            int stream = 0;
            int r = sbx_proc_read(p->proc, buf, READ_CHUNK, &stream, 0);
            if (r > 0) {
                ev_post(p, stream == SBX_STDERR ? EV_STDERR : EV_STDOUT, buf, (size_t)r);
            } else if (r == 0) {
                sbx_exec_result res;
                memset(&res, 0, sizeof(res));
                int w = sbx_proc_wait(p->proc, SBX_NO_TIMEOUT, &res);
                if (w < 0) {
                    ev_post_error(p, w);
                } else {
                    ev_msg *e = calloc(1, sizeof(ev_msg));
                    if (e) {
                        e->res = res;
                        e->res.out = e->res.err = NULL; /* output was read already */
                        e->res.out_len = e->res.err_len = 0;
                        e->m.run = ev_run;
                        e->m.drop = ev_drop;
                        e->p = p;
                        e->kind = EV_EXIT;
                        post(es, &e->m);
                    }
                }
                sbx_exec_result_free(&res);
                done = 1;
            } else if (r == SBX_EAGAIN || r == SBX_ETIMEDOUT) {
                break;
            } else {
                ev_post_error(p, r);
                done = 1;
            }
        }
    }
    free(buf);
    /* No more commands: fail what is queued, release the handle, leave the sandbox. */
    pthread_mutex_lock(&es->mu);
    p->accepting = 0;
    pcmd *cmds = p->cmds;
    p->cmds = p->cmds_tail = NULL;
    sub_remove(p->bx, &p->link);
    pthread_mutex_unlock(&es->mu);
    while (cmds) {
        pcmd *n = cmds->next;
        cmds->rc = SBX_ENOENT;
        cmds->err = strdup(p->is_watch ? "the watch has stopped"
                                       : "the process has exited or the handle was closed");
        post(es, &cmds->m);
        cmds = n;
    }
    if (p->is_watch)
        sbx_watch_close(p->watch);
    else
        sbx_proc_close(p->proc);
    p->proc = NULL;
    p->watch = NULL;
    box_leave(p->bx);
    ev_post(p, EV_END, NULL, 0);
    thread_done(es);
    return NULL;
}

static void pump_finalize(napi_env env, void *data, void *hint)
{
    (void)env;
    (void)hint;
    pump *p = data;
    p->js_gone = 1;
    pthread_mutex_lock(&p->es->mu);
    if (p->accepting) {
        p->stop_req = 1;
        kick(p->evfd);
    }
    pthread_mutex_unlock(&p->es->mu);
    pump_free_if_done(p);
}

/* Jobs that open a handle and then become its pump. */
enum { PO_START, PO_PTY, PO_ATTACH, PO_WATCH };

typedef struct {
    job j;
    int op;
    exec_args a;
    int has_args;
    unsigned rows, cols;
    uint32_t pid;
    uint64_t dropped;
    char *path;
    int recursive;
    pump *p;
    int handed_off; /* the pump thread owns p */
} j_open;

static void open_work(job *jj)
{
    j_open *j = (j_open *)jj;
    sbx *sb = jj->bx->sb;
    pump *p = j->p;
    int r = 0;
    switch (j->op) {
    case PO_START:
        r = sbx_proc_start(sb, &j->a.o, &p->proc);
        break;
    case PO_PTY:
        r = sbx_pty_open(sb, j->rows, j->cols, j->has_args ? &j->a.o : NULL, &p->proc);
        break;
    case PO_ATTACH:
        r = sbx_proc_attach(sb, j->pid, &p->proc, &j->dropped);
        break;
    case PO_WATCH:
        r = sbx_watch_open(sb, j->path, j->recursive, &p->watch);
        break;
    }
    if (r < 0) {
        job_set_error(jj, r);
        return;
    }
    if (!p->is_watch)
        p->pid = sbx_proc_pid(p->proc);
}

static napi_value open_done(napi_env env, job *jj)
{
    j_open *j = (j_open *)jj;
    pump *p = j->p;
    napi_value ext, o;
    if (napi_create_external(env, p, pump_finalize, NULL, &ext) != napi_ok)
        return NULL;
    /* The callback reference moves from the job to the pump (events are processed after
       this completion: same FIFO). */
    p->on_event = jj->keep[2];
    jj->keep[2] = NULL;
    napi_create_object(env, &o);
    napi_set_named_property(env, o, "handle", ext);
    set_num(env, o, "pid", p->pid);
    set_num(env, o, "dropped", (double)j->dropped);
    return o;
}

static void open_fin(job *jj)
{
    j_open *j = (j_open *)jj;
    if (j->has_args)
        exec_args_free(&j->a);
    free(j->path);
    if (j->p && !j->handed_off) { /* the pump never ran */
        if (j->p->proc)
            sbx_proc_close(j->p->proc);
        if (j->p->watch)
            sbx_watch_close(j->p->watch);
        close(j->p->evfd);
        free(j->p);
    }
}

/* The open job's thread: open, then (on success) run the pump loop in the same thread, so
   the box stays entered without a gap in which a kill could slip between. */
static void *open_thread(void *arg)
{
    j_open *j = arg;
    job *jj = &j->j;
    env_state *es = jj->es;
    open_work(jj);
    pump *p = j->p;
    if (jj->rc < 0) {
        box_leave(jj->bx);
        post(es, &jj->m);
        thread_done(es);
        return NULL;
    }
    pthread_mutex_lock(&es->mu);
    j->handed_off = 1;
    p->accepting = 1;
    jj->bx->refs++; /* the pump's */
    sub_add(jj->bx, &p->link);
    if (jj->bx->closing) {
        p->stop_req = 1;
    }
    pthread_mutex_unlock(&es->mu);
    post(es, &jj->m); /* resolves with the handle before any event */
    /* The pump thread counts as its own thread: pump_thread calls thread_done. */
    pump_thread(p);
    return NULL;
}

static napi_value open_start(napi_env env, j_open *j, napi_value boxv, box *bx, napi_value on_event)
{
    napi_ref cb = NULL;
    pump *p = NULL;
    if (arg_function(env, on_event, "onEvent", 0, &cb))
        goto fail;
    p = calloc(1, sizeof(pump));
    if (!p) {
        throw_sbx(env, SBX_ENOMEM, "out of memory");
        goto fail;
    }
    p->magic = MAGIC_PUMP;
    p->link.kind = MAGIC_PUMP;
    p->es = get_es(env);
    p->bx = bx;
    p->is_watch = j->op == PO_WATCH;
    p->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    j->p = p;
    j->j.done = open_done;
    j->j.fin = open_fin;
    j->j.keep[0] = NULL;
    keep(env, &j->j, boxv);
    j->j.keep[2] = cb;

    /* Like job_start, with open_thread as the body. */
    env_state *es = get_es(env);
    napi_value promise;
    j->j.es = es;
    napi_create_promise(env, &j->j.def, &promise);
    hold(env, es);
    pthread_mutex_lock(&es->mu);
    j->j.bx = bx;
    bx->refs++;
    int rc = box_enter_locked(bx);
    pthread_mutex_unlock(&es->mu);
    if (!rc) {
        j->j.entered = 1;
        if (thread_start(es, open_thread, j) != 0) {
            box_leave(bx);
            rc = SBX_ENOMEM;
        }
    }
    if (rc) {
        j->j.rc = rc;
        j->j.err =
            strdup(rc == SBX_ENOMEM ? "cannot start a thread" : "the sandbox has been killed");
        job_complete(env, &j->j.m);
    }
    return promise;
fail:
    if (cb)
        napi_delete_reference(env, cb);
    if (j->has_args)
        exec_args_free(&j->a);
    free(j->path);
    free(j);
    return NULL;
}

/* procStart(box, opts, onEvent) -> Promise<{handle, pid}> */
static napi_value f_proc_start(napi_env env, napi_callback_info info)
{
    ARGS(3);
    box *bx = get_box(env, argv[0]);
    if (!bx)
        return NULL;
    j_open *j = (j_open *)job_new(sizeof(j_open));
    j->op = PO_START;
    if (parse_exec(env, argv[1], &j->a, 1)) {
        free(j);
        return NULL;
    }
    j->has_args = 1;
    return open_start(env, j, argv[0], bx, argv[2]);
}

/* ptyOpen(box, rows, cols, opts, onEvent) */
static napi_value f_pty_open(napi_env env, napi_callback_info info)
{
    ARGS(5);
    box *bx = get_box(env, argv[0]);
    if (!bx)
        return NULL;
    unsigned rows, cols;
    if (arg_u32(env, argv[1], "rows", 0, 0, &rows) || arg_u32(env, argv[2], "cols", 0, 0, &cols))
        return NULL;
    if (!rows || !cols || rows > 65535 || cols > 65535) {
        throw_sbx(env, SBX_EINVAL, "rows and cols must be between 1 and 65535");
        return NULL;
    }
    j_open *j = (j_open *)job_new(sizeof(j_open));
    j->op = PO_PTY;
    j->rows = rows;
    j->cols = cols;
    if (!is_nullish(env, argv[3])) {
        if (parse_exec(env, argv[3], &j->a, 0)) {
            free(j);
            return NULL;
        }
        j->has_args = 1;
    }
    return open_start(env, j, argv[0], bx, argv[4]);
}

/* procAttach(box, pid, onEvent) -> Promise<{handle, pid, dropped}> */
static napi_value f_proc_attach(napi_env env, napi_callback_info info)
{
    ARGS(3);
    box *bx = get_box(env, argv[0]);
    if (!bx)
        return NULL;
    unsigned pid;
    if (arg_u32(env, argv[1], "pid", 0, 0, &pid))
        return NULL;
    j_open *j = (j_open *)job_new(sizeof(j_open));
    j->op = PO_ATTACH;
    j->pid = pid;
    return open_start(env, j, argv[0], bx, argv[2]);
}

/* watchOpen(box, path, recursive, onEvent) */
static napi_value f_watch_open(napi_env env, napi_callback_info info)
{
    ARGS(4);
    box *bx = get_box(env, argv[0]);
    if (!bx)
        return NULL;
    char *path;
    if (arg_string(env, argv[1], "path", 0, &path))
        return NULL;
    j_open *j = (j_open *)job_new(sizeof(j_open));
    j->op = PO_WATCH;
    j->path = path;
    j->recursive = arg_bool(env, argv[2], 0);
    return open_start(env, j, argv[0], bx, argv[3]);
}

static napi_value pump_command(napi_env env, pump *p, pcmd *c)
{
    env_state *es = p->es;
    napi_value promise;
    c->m.run = pcmd_run;
    c->m.drop = pcmd_drop;
    c->p = p;
    c->es = es;
    napi_create_promise(env, &c->def, &promise);
    hold(env, es);
    pthread_mutex_lock(&es->mu);
    int ok = p->accepting && !p->stop_req;
    if (ok) {
        if (p->cmds_tail)
            p->cmds_tail->next = c;
        else
            p->cmds = c;
        p->cmds_tail = c;
        kick(p->evfd);
    }
    pthread_mutex_unlock(&es->mu);
    if (!ok) {
        c->rc = SBX_ENOENT;
        c->err = strdup(p->is_watch ? "the watch has stopped"
                                    : "the process has exited or the handle was closed");
        pcmd_run(env, &c->m);
    }
    return promise;
}

static pcmd *pcmd_new(napi_env env, int op)
{
    pcmd *c = calloc(1, sizeof(pcmd));
    if (!c)
        throw_sbx(env, SBX_ENOMEM, "out of memory");
    else
        c->op = op;
    return c;
}

static napi_value f_pump_write(napi_env env, napi_callback_info info)
{
    ARGS(2);
    pump *p = get_pump(env, argv[0]);
    if (!p)
        return NULL;
    void *data;
    size_t len;
    if (arg_bytes(env, argv[1], "data", 0, &data, &len))
        return NULL;
    pcmd *c = pcmd_new(env, PC_WRITE);
    if (!c) {
        free(data);
        return NULL;
    }
    c->data = data;
    c->len = len;
    return pump_command(env, p, c);
}

static napi_value f_pump_close_stdin(napi_env env, napi_callback_info info)
{
    ARGS(1);
    pump *p = get_pump(env, argv[0]);
    if (!p)
        return NULL;
    pcmd *c = pcmd_new(env, PC_CLOSE_STDIN);
    return c ? pump_command(env, p, c) : NULL;
}

static napi_value f_pump_resize(napi_env env, napi_callback_info info)
{
    ARGS(3);
    pump *p = get_pump(env, argv[0]);
    if (!p)
        return NULL;
    unsigned rows, cols;
    if (arg_u32(env, argv[1], "rows", 0, 0, &rows) || arg_u32(env, argv[2], "cols", 0, 0, &cols))
        return NULL;
    pcmd *c = pcmd_new(env, PC_RESIZE);
    if (!c)
        return NULL;
    c->a = rows;
    c->b = cols;
    return pump_command(env, p, c);
}

static napi_value f_pump_signal(napi_env env, napi_callback_info info)
{
    ARGS(3);
    pump *p = get_pump(env, argv[0]);
    if (!p)
        return NULL;
    unsigned sig;
    if (arg_u32(env, argv[1], "signal", 1, 9, &sig))
        return NULL;
    pcmd *c = pcmd_new(env, PC_SIGNAL);
    if (!c)
        return NULL;
    c->a = sig;
    c->b = (unsigned)arg_bool(env, argv[2], 0);
    return pump_command(env, p, c);
}

/* pumpClose(handle) -> Promise resolved once the thread released the handle. */
static napi_value f_pump_close(napi_env env, napi_callback_info info)
{
    ARGS(1);
    pump *p = get_pump(env, argv[0]);
    if (!p)
        return NULL;
    napi_deferred d;
    napi_value promise;
    napi_create_promise(env, &d, &promise);
    if (p->ended) {
        napi_value u;
        napi_get_undefined(env, &u);
        napi_resolve_deferred(env, d, u);
        return promise;
    }
    napi_deferred *nd = realloc(p->close_defs, (p->nclose_defs + 1) * sizeof(*nd));
    if (!nd) {
        napi_reject_deferred(env, d, make_error(env, SBX_ENOMEM, "out of memory"));
        return promise;
    }
    p->close_defs = nd;
    p->close_defs[p->nclose_defs++] = d;
    hold(env, p->es);
    pthread_mutex_lock(&p->es->mu);
    p->stop_req = 1;
    kick(p->evfd);
    pthread_mutex_unlock(&p->es->mu);
    return promise;
}

static napi_value f_pump_pid(napi_env env, napi_callback_info info)
{
    ARGS(1);
    pump *p = get_pump(env, argv[0]);
    if (!p)
        return NULL;
    napi_value v;
    napi_create_uint32(env, p->pid, &v);
    return v;
}

/* ---------------------------------------------------------------------------------------- */
/* Files                                                                                    */
/* ---------------------------------------------------------------------------------------- */

static napi_value entry_value(napi_env env, const sbx_entry *e)
{
    napi_value o;
    napi_create_object(env, &o);
    set_str(env, o, "name", e->name);
    set_str(env, o, "path", e->path);
    set_num(env, o, "type", e->type);
    set_num(env, o, "size", (double)e->size);
    set_num(env, o, "mode", e->mode);
    set_num(env, o, "uid", e->uid);
    set_num(env, o, "gid", e->gid);
    set_str(env, o, "owner", e->owner);
    set_str(env, o, "group", e->group);
    set_num(env, o, "mtimeMs", (double)e->mtime_ns / 1e6);
    set_str(env, o, "symlinkTarget", e->symlink_target);
    return o;
}

enum {
    FO_WRITE,
    FO_READ,
    FO_STAT,
    FO_EXISTS,
    FO_LIST,
    FO_MKDIR,
    FO_REMOVE,
    FO_RENAME,
    FO_COPY_IN,
    FO_COPY_OUT
};

typedef struct {
    job j;
    int op;
    char *path, *path2;
    void *data;
    size_t len;
    uint64_t num;
    unsigned mode;
    int flag;
    int result;
    sbx_entry e;
    sbx_entry *entries;
    size_t n;
} j_fs;

typedef struct {
    msg m;
    job *j;
    uint64_t bytes, files;
} prog_msg;

static void prog_drop(msg *m)
{
    free(m);
}

static void prog_run(napi_env env, msg *m)
{
    prog_msg *pm = (prog_msg *)m;
    job *j = pm->j;
    napi_value fn, args[2], global, ret;
    if (!atomic_load(&j->cancel) && j->keep[1] &&
        napi_get_reference_value(env, j->keep[1], &fn) == napi_ok && fn) {
        napi_create_double(env, (double)pm->bytes, &args[0]);
        napi_create_double(env, (double)pm->files, &args[1]);
        napi_get_global(env, &global);
        if (napi_call_function(env, global, fn, 2, args, &ret) != napi_ok) {
            napi_value e;
            if (napi_get_and_clear_last_exception(env, &e) == napi_ok && !j->cb_error)
                napi_create_reference(env, e, 1, &j->cb_error);
            atomic_store(&j->cancel, 1);
        } else {
            bool b = true;
            napi_valuetype t;
            napi_typeof(env, ret, &t);
            if (t == napi_boolean) {
                napi_get_value_bool(env, ret, &b);
                if (!b)
                    atomic_store(&j->cancel, 1);
            }
        }
    }
    free(pm);
}

static int on_progress(void *ctx, uint64_t bytes, uint64_t files)
{
    job *j = ctx;
    if (atomic_load(&j->cancel))
        return 1;
    if (!j->keep[1])
        return 0;
    prog_msg *pm = calloc(1, sizeof(prog_msg));
    if (pm) {
        pm->m.run = prog_run;
        pm->m.drop = prog_drop;
        pm->j = j;
        pm->bytes = bytes;
        pm->files = files;
        post(j->es, &pm->m);
    }
    return 0;
}

static void fs_work(job *jj)
{
    j_fs *j = (j_fs *)jj;
    sbx *sb = jj->bx->sb;
    int r = 0;
    switch (j->op) {
    case FO_WRITE:
        r = sbx_write_file(sb, j->path, j->data, j->len, j->mode);
        break;
    case FO_READ:
        r = sbx_read_file(sb, j->path, &j->data, &j->len, (size_t)j->num);
        break;
    case FO_STAT:
        r = sbx_stat(sb, j->path, &j->e);
        break;
    case FO_EXISTS:
        r = sbx_exists(sb, j->path);
        break;
    case FO_LIST:
        r = sbx_list(sb, j->path, (unsigned)j->num, &j->entries, &j->n);
        break;
    case FO_MKDIR:
        r = sbx_mkdir(sb, j->path, j->mode);
        break;
    case FO_REMOVE:
        r = sbx_remove(sb, j->path, j->flag);
        break;
    case FO_RENAME:
        r = sbx_rename(sb, j->path, j->path2);
        break;
    case FO_COPY_IN:
        r = sbx_copy_in(sb, j->path, j->path2, on_progress, jj);
        break;
    case FO_COPY_OUT:
        r = sbx_copy_out(sb, j->path, j->path2, on_progress, jj);
        break;
    }
    if (r < 0)
        job_set_error(jj, r);
    else
        j->result = r;
}

static napi_value fs_done(napi_env env, job *jj)
{
    j_fs *j = (j_fs *)jj;
    napi_value v = NULL;
    switch (j->op) {
    case FO_READ:
        v = buffer_take(env, j->data, j->len);
        j->data = NULL;
        break;
    case FO_STAT:
        v = entry_value(env, &j->e);
        break;
    case FO_EXISTS:
    case FO_MKDIR:
        napi_get_boolean(env, j->op == FO_EXISTS ? j->result == 1 : j->result == 0, &v);
        break;
    case FO_LIST:
        napi_create_array(env, &v);
        for (size_t i = 0; i < j->n; i++)
            napi_set_element(env, v, (uint32_t)i, entry_value(env, &j->entries[i]));
        break;
    }
    return v;
}

static void fs_fin(job *jj)
{
    j_fs *j = (j_fs *)jj;
    free(j->path);
    free(j->path2);
    free(j->data);
    if (j->op == FO_STAT)
        sbx_entry_clear(&j->e);
    if (j->entries)
        sbx_entries_free(j->entries, j->n);
}

static napi_value fs_start(napi_env env, napi_value boxv, box *bx, j_fs *j)
{
    j->j.work = fs_work;
    j->j.done = fs_done;
    j->j.fin = fs_fin;
    keep(env, &j->j, boxv);
    return job_start(env, &j->j, bx, 1, NULL);
}

static j_fs *fs_new(napi_env env, napi_value pathv, int op)
{
    char *path;
    if (arg_string(env, pathv, "path", 0, &path))
        return NULL;
    j_fs *j = (j_fs *)job_new(sizeof(j_fs));
    if (!j) {
        free(path);
        throw_sbx(env, SBX_ENOMEM, "out of memory");
        return NULL;
    }
    j->op = op;
    j->path = path;
    return j;
}

/* writeFile(box, path, data, mode) */
static napi_value f_write_file(napi_env env, napi_callback_info info)
{
    ARGS(4);
    box *bx = get_box(env, argv[0]);
    if (!bx)
        return NULL;
    j_fs *j = fs_new(env, argv[1], FO_WRITE);
    if (!j)
        return NULL;
    if (arg_bytes(env, argv[2], "data", 0, &j->data, &j->len) ||
        arg_u32(env, argv[3], "mode", 1, 0, &j->mode)) {
        fs_fin(&j->j);
        free(j);
        return NULL;
    }
    return fs_start(env, argv[0], bx, j);
}

/* readFile(box, path, maxBytes) -> Buffer */
static napi_value f_read_file(napi_env env, napi_callback_info info)
{
    ARGS(3);
    box *bx = get_box(env, argv[0]);
    if (!bx)
        return NULL;
    j_fs *j = fs_new(env, argv[1], FO_READ);
    if (!j)
        return NULL;
    if (arg_uint(env, argv[2], "maxBytes", 1, 9007199254740991.0, 0, &j->num)) {
        fs_fin(&j->j);
        free(j);
        return NULL;
    }
    return fs_start(env, argv[0], bx, j);
}

static napi_value fs_path_op(napi_env env, napi_callback_info info, int op)
{
    ARGS(3);
    box *bx = get_box(env, argv[0]);
    if (!bx)
        return NULL;
    j_fs *j = fs_new(env, argv[1], op);
    if (!j)
        return NULL;
    int bad = 0;
    if (op == FO_LIST)
        bad = arg_uint(env, argv[2], "depth", 1, 4294967295.0, 1, &j->num);
    else if (op == FO_MKDIR)
        bad = arg_u32(env, argv[2], "mode", 1, 0, &j->mode);
    else if (op == FO_REMOVE)
        j->flag = arg_bool(env, argv[2], 0);
    if (bad) {
        fs_fin(&j->j);
        free(j);
        return NULL;
    }
    return fs_start(env, argv[0], bx, j);
}

static napi_value f_stat(napi_env env, napi_callback_info info)
{
    return fs_path_op(env, info, FO_STAT);
}
static napi_value f_exists(napi_env env, napi_callback_info info)
{
    return fs_path_op(env, info, FO_EXISTS);
}
static napi_value f_list(napi_env env, napi_callback_info info)
{
    return fs_path_op(env, info, FO_LIST);
}
static napi_value f_mkdir(napi_env env, napi_callback_info info)
{
    return fs_path_op(env, info, FO_MKDIR);
}
static napi_value f_remove(napi_env env, napi_callback_info info)
{
    return fs_path_op(env, info, FO_REMOVE);
}

/* rename(box, from, to); copyIn(box, hostSrc, guestDst, onProgress);
   copyOut(box, guestSrc, hostDst, onProgress) */
static napi_value fs_two_paths(napi_env env, napi_callback_info info, int op)
{
    ARGS(4);
    box *bx = get_box(env, argv[0]);
    if (!bx)
        return NULL;
    j_fs *j = fs_new(env, argv[1], op);
    if (!j)
        return NULL;
    napi_ref cb = NULL;
    if (arg_string(env, argv[2], op == FO_RENAME ? "newPath" : "destination", 0, &j->path2) ||
        (op != FO_RENAME && arg_function(env, argv[3], "onProgress", 1, &cb))) {
        fs_fin(&j->j);
        free(j);
        return NULL;
    }
    j->j.work = fs_work;
    j->j.done = fs_done;
    j->j.fin = fs_fin;
    keep(env, &j->j, argv[0]);
    if (cb)
        j->j.keep[1] = cb;
    return job_start(env, &j->j, bx, 1, NULL);
}

static napi_value f_rename(napi_env env, napi_callback_info info)
{
    return fs_two_paths(env, info, FO_RENAME);
}
static napi_value f_copy_in(napi_env env, napi_callback_info info)
{
    return fs_two_paths(env, info, FO_COPY_IN);
}
static napi_value f_copy_out(napi_env env, napi_callback_info info)
{
    return fs_two_paths(env, info, FO_COPY_OUT);
}

/* --- streamed files --------------------------------------------------------------------- */

static void file_finalize(napi_env env, void *data, void *hint)
{
    (void)env;
    (void)hint;
    fileh *fh = data;
    box *bx = fh->bx;
    env_state *es = bx->es;
    pthread_mutex_lock(&es->mu);
    int close_it = !fh->closed && box_enter_locked(bx) == 0;
    if (close_it) {
        fh->closed = 1;
        sub_remove(bx, &fh->link);
    }
    pthread_mutex_unlock(&es->mu);
    if (close_it) {
        sbx_file_close(fh->f);
        box_leave(bx);
    }
    box_unref(bx);
    fh->magic = 0;
    free(fh);
}

enum { FH_CREATE, FH_OPEN, FH_WRITE, FH_COMMIT, FH_READ };

typedef struct {
    job j;
    int op;
    char *path, *user;
    sbx_file_options fo;
    uint64_t offset, length, size;
    void *data;
    size_t len;
    sbx_file *f;
    fileh *fh;
} j_file;

static void file_work(job *jj)
{
    j_file *j = (j_file *)jj;
    sbx *sb = jj->bx->sb;
    int r = 0;
    switch (j->op) {
    case FH_CREATE:
        r = sbx_file_create(sb, j->path, &j->fo, &j->f);
        break;
    case FH_OPEN:
        r = sbx_file_open(sb, j->path, j->offset, j->length, &j->f, &j->size);
        break;
    case FH_WRITE:
        r = sbx_file_write(j->fh->f, j->data, j->len);
        break;
    case FH_COMMIT: {
        env_state *es = jj->es;
        r = sbx_file_commit(j->fh->f); /* releases the handle in every case */
        pthread_mutex_lock(&es->mu);
        j->fh->f = NULL;
        j->fh->closed = 1;
        sub_remove(jj->bx, &j->fh->link);
        pthread_mutex_unlock(&es->mu);
        break;
    }
    case FH_READ:
        r = sbx_file_read(j->fh->f, j->data, j->len);
        if (r >= 0)
            j->len = (size_t)r;
        break;
    }
    if (r < 0)
        job_set_error(jj, r);
}

static napi_value file_done(napi_env env, job *jj)
{
    j_file *j = (j_file *)jj;
    if (j->op == FH_READ) {
        napi_value b = buffer_take(env, j->data, j->len);
        j->data = NULL;
        return b;
    }
    if (j->op != FH_CREATE && j->op != FH_OPEN)
        return NULL;
    fileh *fh = calloc(1, sizeof(fileh));
    if (!fh) {
        throw_sbx(env, SBX_ENOMEM, "out of memory");
        return NULL;
    }
    env_state *es = jj->es;
    fh->magic = MAGIC_FILE;
    fh->link.kind = MAGIC_FILE;
    fh->bx = jj->bx;
    fh->writing = j->op == FH_CREATE;
    pthread_mutex_lock(&es->mu);
    fh->bx->refs++;
    if (fh->bx->closing || fh->bx->destroyed) {
        /* killed meanwhile: the destroy did not see this handle; it cannot be used anyway */
        sbx_file_close(j->f);
        fh->closed = 1;
    } else {
        fh->f = j->f;
        sub_add(fh->bx, &fh->link);
    }
    j->f = NULL;
    pthread_mutex_unlock(&es->mu);
    napi_value ext, o;
    napi_create_external(env, fh, file_finalize, NULL, &ext);
    napi_create_object(env, &o);
    napi_set_named_property(env, o, "handle", ext);
    set_num(env, o, "size", (double)j->size);
    return o;
}

static void file_fin(job *jj)
{
    j_file *j = (j_file *)jj;
    free(j->path);
    free(j->user);
    free(j->data);
    if (j->f) /* opened, never handed to JS (teardown) */
        sbx_file_close(j->f);
}

static j_file *file_job(int op)
{
    j_file *j = (j_file *)job_new(sizeof(j_file));
    if (!j)
        return NULL;
    j->op = op;
    j->j.work = file_work;
    j->j.done = file_done;
    j->j.fin = file_fin;
    return j;
}

/* fileCreate(box, path, {mode, user, append}) -> Promise<{handle}> */
static napi_value f_file_create(napi_env env, napi_callback_info info)
{
    ARGS(3);
    box *bx = get_box(env, argv[0]);
    if (!bx)
        return NULL;
    j_file *j = file_job(FH_CREATE);
    sbx_file_options def = SBX_FILE_OPTIONS_INIT;
    j->fo = def;
    if (arg_string(env, argv[1], "path", 0, &j->path) ||
        arg_string(env, prop(env, argv[2], "user"), "user", 1, &j->user) ||
        arg_u32(env, prop(env, argv[2], "mode"), "mode", 1, 0, &j->fo.mode)) {
        file_fin(&j->j);
        free(j);
        return NULL;
    }
    j->fo.user = j->user;
    j->fo.append = arg_bool(env, prop(env, argv[2], "append"), 0);
    keep(env, &j->j, argv[0]);
    return job_start(env, &j->j, bx, 1, NULL);
}

/* fileOpen(box, path, offset, length) -> Promise<{handle, size}> */
static napi_value f_file_open(napi_env env, napi_callback_info info)
{
    ARGS(4);
    box *bx = get_box(env, argv[0]);
    if (!bx)
        return NULL;
    j_file *j = file_job(FH_OPEN);
    if (arg_string(env, argv[1], "path", 0, &j->path) ||
        arg_uint(env, argv[2], "offset", 1, 9007199254740991.0, 0, &j->offset) ||
        arg_uint(env, argv[3], "length", 1, 9007199254740991.0, 0, &j->length)) {
        file_fin(&j->j);
        free(j);
        return NULL;
    }
    keep(env, &j->j, argv[0]);
    return job_start(env, &j->j, bx, 1, NULL);
}

static napi_value file_op(napi_env env, napi_value fv, j_file *j)
{
    fileh *fh = get_file(env, fv);
    if (!fh) {
        file_fin(&j->j);
        free(j);
        return NULL;
    }
    j->fh = fh;
    keep(env, &j->j, fv);
    return job_start(env, &j->j, fh->bx, 1, fh);
}

/* fileWrite(file, data) */
static napi_value f_file_write(napi_env env, napi_callback_info info)
{
    ARGS(2);
    j_file *j = file_job(FH_WRITE);
    if (arg_bytes(env, argv[1], "data", 0, &j->data, &j->len)) {
        free(j);
        return NULL;
    }
    return file_op(env, argv[0], j);
}

/* fileCommit(file) */
static napi_value f_file_commit(napi_env env, napi_callback_info info)
{
    ARGS(1);
    return file_op(env, argv[0], file_job(FH_COMMIT));
}

/* fileRead(file, cap) -> Buffer (empty at the end) */
static napi_value f_file_read(napi_env env, napi_callback_info info)
{
    ARGS(2);
    unsigned cap;
    if (arg_u32(env, argv[1], "size", 1, READ_CHUNK, &cap))
        return NULL;
    if (cap == 0 || cap > (64u << 20)) {
        throw_sbx(env, SBX_EINVAL, "size must be between 1 and 67108864");
        return NULL;
    }
    j_file *j = file_job(FH_READ);
    j->data = malloc(cap);
    j->len = cap;
    if (!j->data) {
        free(j);
        throw_sbx(env, SBX_ENOMEM, "out of memory");
        return NULL;
    }
    return file_op(env, argv[0], j);
}

/* fileClose(file): abandons an unfinished write / ends a read. */
static napi_value f_file_close(napi_env env, napi_callback_info info)
{
    ARGS(1);
    fileh *fh = get_file(env, argv[0]);
    if (!fh)
        return NULL;
    env_state *es = fh->bx->es;
    pthread_mutex_lock(&es->mu);
    if (fh->busy) {
        pthread_mutex_unlock(&es->mu);
        throw_sbx(env, SBX_EBUSY, "an operation on this file handle is in progress");
        return NULL;
    }
    int close_it = !fh->closed && box_enter_locked(fh->bx) == 0;
    if (close_it) {
        fh->closed = 1;
        sub_remove(fh->bx, &fh->link);
    }
    pthread_mutex_unlock(&es->mu);
    if (close_it) {
        sbx_file_close(fh->f);
        fh->f = NULL;
        box_leave(fh->bx);
    }
    return NULL;
}

/* ---------------------------------------------------------------------------------------- */
/* Code interpreter                                                                         */
/* ---------------------------------------------------------------------------------------- */

enum { CODE_RUN, CODE_CREATE, CODE_LIST, CODE_RESTART, CODE_REMOVE, CODE_INTERRUPT };

/* sbx_run_code and the context calls. Callbacks of a run: keep[1] onOutput(stream, Buffer)
   (through exec_on_output / chunk_run), keep[2] onResult({isMainResult, data}). */
typedef struct {
    job j;
    int op;
    sbx_run_code_options o;
    char *code, *context, *language, *cwd;
    char **envs;
    sbx_execution ex;
    sbx_code_context ctx;
    sbx_code_context *list;
    size_t n;
} j_code;

static void code_fin(job *jj)
{
    j_code *j = (j_code *)jj;
    free(j->code);
    free(j->context);
    free(j->language);
    free(j->cwd);
    strv_free(j->envs);
    sbx_execution_free(&j->ex);
    free(j->list);
}

/* {isMainResult, data: {MIME: data}} */
static napi_value code_result_value(napi_env env, const sbx_code_result *r)
{
    napi_value o, data;
    napi_create_object(env, &o);
    napi_create_object(env, &data);
    for (unsigned i = 0; i < r->nformats; i++)
        set_str(env, data, r->mime[i], sbx_code_result_get(r, r->mime[i]));
    set_bool(env, o, "isMainResult", r->is_main_result);
    napi_set_named_property(env, o, "data", data);
    return o;
}

/* A result travelling to onResult: a copy of the C result, its arrays and strings in mem. */
typedef struct {
    msg m;
    job *j;
    sbx_code_result r;
    char *mem[];
} cres_msg;

static void cres_run(napi_env env, msg *m)
{
    cres_msg *c = (cres_msg *)m;
    if (!atomic_load(&c->j->cancel)) {
        napi_value v = code_result_value(env, &c->r);
        job_callback(env, c->j, c->j->keep[2], 1, &v);
    }
    free(c);
}

static int code_on_result(void *ctx, const sbx_code_result *r)
{
    job *j = ctx;
    if (atomic_load(&j->cancel))
        return 1;
    size_t size = 2 * r->nformats * sizeof(char *);
    for (unsigned i = 0; i < r->nformats; i++)
        size += strlen(r->mime[i]) + strlen(r->data[i]) + 2;
    cres_msg *c = malloc(sizeof(cres_msg) + size);
    if (!c)
        return 1;
    c->m.run = cres_run;
    c->m.drop = chunk_drop;
    c->j = j;
    c->r.is_main_result = r->is_main_result;
    c->r.nformats = r->nformats;
    c->r.mime = c->mem;
    c->r.data = c->mem + r->nformats;
    char *p = (char *)(c->mem + 2 * r->nformats);
    for (unsigned i = 0; i < r->nformats; i++) {
        c->r.mime[i] = p;
        p = stpcpy(p, r->mime[i]) + 1;
        c->r.data[i] = p;
        p = stpcpy(p, r->data[i]) + 1;
    }
    post(j->es, &c->m);
    return 0;
}

static void code_work(job *jj)
{
    j_code *j = (j_code *)jj;
    sbx *sb = jj->bx->sb;
    int r = 0;
    switch (j->op) {
    case CODE_RUN:
        r = sbx_run_code(sb, &j->o, &j->ex);
        break;
    case CODE_CREATE:
        r = sbx_code_context_create(sb, j->language, j->cwd, &j->ctx);
        break;
    case CODE_LIST:
        r = sbx_code_context_list(sb, &j->list, &j->n);
        break;
    case CODE_RESTART:
        r = sbx_code_context_restart(sb, j->context);
        break;
    case CODE_REMOVE:
        r = sbx_code_context_remove(sb, j->context);
        break;
    case CODE_INTERRUPT:
        r = sbx_code_interrupt(sb, j->context);
        break;
    }
    if (r < 0)
        job_set_error(jj, r);
}

static napi_value context_value(napi_env env, const sbx_code_context *c)
{
    napi_value o;
    napi_create_object(env, &o);
    set_str(env, o, "id", c->id);
    set_str(env, o, "language", c->language);
    set_str(env, o, "cwd", c->cwd);
    return o;
}

static napi_value text_value(napi_env env, const char *s, size_t len)
{
    napi_value v;
    napi_create_string_utf8(env, s ? s : "", s ? len : 0, &v);
    return v;
}

/* {results, stdout, stderr, error: {name, value, traceback} | null, executionCount,
   interrupted, timedOut, restarted, exitCode, context} */
static napi_value execution_value(napi_env env, const sbx_execution *ex)
{
    napi_value o, results, error;
    napi_create_object(env, &o);
    napi_create_array_with_length(env, ex->nresults, &results);
    for (size_t i = 0; i < ex->nresults; i++)
        napi_set_element(env, results, (uint32_t)i, code_result_value(env, &ex->results[i]));
    napi_set_named_property(env, o, "results", results);
    napi_set_named_property(env, o, "stdout", text_value(env, ex->out, ex->out_len));
    napi_set_named_property(env, o, "stderr", text_value(env, ex->err, ex->err_len));
    if (ex->error) {
        napi_create_object(env, &error);
        set_str(env, error, "name", ex->error->name);
        set_str(env, error, "value", ex->error->value);
        set_str(env, error, "traceback", ex->error->traceback);
    } else {
        napi_get_null(env, &error);
    }
    napi_set_named_property(env, o, "error", error);
    set_num(env, o, "executionCount", ex->execution_count);
    set_bool(env, o, "interrupted", ex->interrupted);
    set_bool(env, o, "timedOut", ex->timed_out);
    set_bool(env, o, "restarted", ex->restarted);
    set_num(env, o, "exitCode", ex->exit_code);
    set_str(env, o, "context", ex->context);
    return o;
}

static napi_value code_done(napi_env env, job *jj)
{
    j_code *j = (j_code *)jj;
    napi_value v = NULL;
    if (j->op == CODE_RUN) {
        v = execution_value(env, &j->ex);
    } else if (j->op == CODE_CREATE) {
        v = context_value(env, &j->ctx);
    } else if (j->op == CODE_LIST) {
        napi_create_array_with_length(env, j->n, &v);
        for (size_t i = 0; i < j->n; i++)
            napi_set_element(env, v, (uint32_t)i, context_value(env, &j->list[i]));
    }
    return v;
}

/* A new code job on the box boxv (*bx), or NULL after throwing. */
static j_code *code_new(napi_env env, napi_value boxv, int op, box **bx)
{
    if (!(*bx = get_box(env, boxv)))
        return NULL;
    j_code *j = (j_code *)job_new(sizeof(j_code));
    if (!j) {
        throw_sbx(env, SBX_ENOMEM, "out of memory");
        return NULL;
    }
    sbx_run_code_options def = SBX_RUN_CODE_OPTIONS_INIT;
    j->o = def;
    j->op = op;
    j->j.work = code_work;
    j->j.done = code_done;
    j->j.fin = code_fin;
    keep(env, &j->j, boxv); /* keep[0] */
    return j;
}

static void code_abandon(napi_env env, j_code *j)
{
    for (int i = 0; i < 3; i++)
        if (j->j.keep[i])
            napi_delete_reference(env, j->j.keep[i]);
    code_fin(&j->j);
    free(j);
}

/* runCode(box, {code, context, language, envs, timeoutMs}, onOutput?, onResult?)
   -> Promise<execution> */
static napi_value f_run_code(napi_env env, napi_callback_info info)
{
    ARGS(4);
    box *bx;
    j_code *j = code_new(env, argv[0], CODE_RUN, &bx);
    if (!j)
        return NULL;
    napi_value o = argv[1];
    if (arg_string(env, prop(env, o, "code"), "code", 0, &j->code) ||
        arg_string(env, prop(env, o, "context"), "context", 1, &j->context) ||
        arg_string(env, prop(env, o, "language"), "language", 1, &j->language) ||
        arg_strv(env, prop(env, o, "envs"), "envs", &j->envs) ||
        arg_u32(env, prop(env, o, "timeoutMs"), "timeoutMs", 1, 0, &j->o.timeout_ms) ||
        arg_function(env, argv[2], "onOutput", 1, &j->j.keep[1]) ||
        arg_function(env, argv[3], "onResult", 1, &j->j.keep[2])) {
        code_abandon(env, j);
        return NULL;
    }
    j->o.code = j->code;
    j->o.context = j->context;
    j->o.language = j->language;
    j->o.envs = (const char *const *)j->envs;
    j->o.ctx = &j->j;
    if (j->j.keep[1])
        j->o.on_output = exec_on_output;
    if (j->j.keep[2])
        j->o.on_result = code_on_result;
    return job_start(env, &j->j, bx, 1, NULL);
}

/* codeContextCreate(box, language?, cwd?) -> Promise<context>; codeContextList(box) ->
   Promise<context[]>; codeContextRestart / codeContextRemove / codeInterrupt(box, id) */
static napi_value code_start(napi_env env, napi_callback_info info, int op)
{
    ARGS(3);
    box *bx;
    j_code *j = code_new(env, argv[0], op, &bx);
    if (!j)
        return NULL;
    int bad = 0;
    if (op == CODE_CREATE)
        bad = arg_string(env, argv[1], "language", 1, &j->language) ||
              arg_string(env, argv[2], "cwd", 1, &j->cwd);
    else if (op != CODE_LIST)
        bad = arg_string(env, argv[1], "context", 0, &j->context);
    if (bad) {
        code_abandon(env, j);
        return NULL;
    }
    return job_start(env, &j->j, bx, 1, NULL);
}

static napi_value f_code_context_create(napi_env env, napi_callback_info info)
{
    return code_start(env, info, CODE_CREATE);
}
static napi_value f_code_context_list(napi_env env, napi_callback_info info)
{
    return code_start(env, info, CODE_LIST);
}
static napi_value f_code_context_restart(napi_env env, napi_callback_info info)
{
    return code_start(env, info, CODE_RESTART);
}
static napi_value f_code_context_remove(napi_env env, napi_callback_info info)
{
    return code_start(env, info, CODE_REMOVE);
}
static napi_value f_code_interrupt(napi_env env, napi_callback_info info)
{
    return code_start(env, info, CODE_INTERRUPT);
}

/* ---------------------------------------------------------------------------------------- */
/* Templates                                                                                */
/* ---------------------------------------------------------------------------------------- */

enum { TPL_BUILD, TPL_LIST, TPL_REMOVE };

/* Build, list and remove: no sandbox; messages come back in err. Callbacks of a build:
   keep[1] onOutput (through exec_on_output / chunk_run), keep[2] onProgress. */
typedef struct {
    job j;
    int op;
    sbx_template_build_options o;
    char *name, *dockerfile, *dockerfile_text, *context, *start_cmd, *ready;
    char *template_dir, *kernel, *image_dir;
    char **build_args, **tags;
    sbx_template_info info;
    sbx_template_info *list;
    size_t n;
    char err[4096];
} j_tpl;

static void tpl_fin(job *jj)
{
    j_tpl *j = (j_tpl *)jj;
    free(j->name);
    free(j->dockerfile);
    free(j->dockerfile_text);
    free(j->context);
    free(j->start_cmd);
    free(j->ready);
    free(j->template_dir);
    free(j->kernel);
    free(j->image_dir);
    strv_free(j->build_args);
    strv_free(j->tags);
    if (j->list)
        sbx_template_list_free(j->list, j->n);
}

typedef struct {
    msg m;
    job *j;
    sbx_template_progress p; /* text points into the message */
    char text[];
} tprog_msg;

static void tprog_drop(msg *m)
{
    free(m);
}

static void tprog_run(napi_env env, msg *m)
{
    tprog_msg *pm = (tprog_msg *)m;
    if (!atomic_load(&pm->j->cancel)) {
        napi_value arg;
        napi_create_object(env, &arg);
        set_num(env, arg, "step", pm->p.step);
        set_num(env, arg, "steps", pm->p.nsteps);
        set_str(env, arg, "text", pm->text);
        set_bool(env, arg, "cached", pm->p.cached);
        set_bool(env, arg, "done", pm->p.done);
        set_num(env, arg, "elapsedMs", (double)pm->p.elapsed_ms);
        /* A callback that throws stops the build at its next output. */
        job_callback(env, pm->j, pm->j->keep[2], 1, &arg);
    }
    free(pm);
}

static void tpl_on_progress(void *ctx, const sbx_template_progress *p)
{
    job *j = ctx;
    if (atomic_load(&j->cancel) || !j->keep[2])
        return;
    const char *text = p->text ? p->text : "";
    size_t len = strnlen(text, 4096);
    tprog_msg *pm = malloc(sizeof(tprog_msg) + len + 1);
    if (!pm)
        return;
    pm->m.run = tprog_run;
    pm->m.drop = tprog_drop;
    pm->j = j;
    pm->p = *p;
    memcpy(pm->text, text, len);
    pm->text[len] = 0;
    post(j->es, &pm->m);
}

static void tpl_work(job *jj)
{
    j_tpl *j = (j_tpl *)jj;
    int r = 0;
    switch (j->op) {
    case TPL_BUILD:
        r = sbx_template_build(&j->o, &j->info, j->err, sizeof(j->err));
        break;
    case TPL_LIST:
        r = sbx_template_list(j->template_dir, &j->list, &j->n, j->err, sizeof(j->err));
        break;
    case TPL_REMOVE:
        r = sbx_template_remove(j->template_dir, j->name, j->err, sizeof(j->err));
        break;
    }
    if (r < 0) {
        jj->rc = r;
        jj->err = strdup(j->err[0] ? j->err : sbx_strerror(r));
    }
}

static napi_value tpl_info_value(napi_env env, const sbx_template_info *i)
{
    napi_value o;
    napi_create_object(env, &o);
    set_str(env, o, "name", i->name);
    set_bool(env, o, "isSnapshot", i->is_snapshot);
    set_str(env, o, "parent", i->parent);
    set_num(env, o, "vcpus", i->vcpus);
    set_num(env, o, "memoryMib", i->memory_mib);
    set_num(env, o, "diskMib", (double)i->disk_mib);
    set_num(env, o, "nsteps", i->nsteps);
    set_num(env, o, "ncached", i->ncached);
    set_num(env, o, "createdMs", (double)i->created_ns / 1e6);
    set_num(env, o, "memoryBytes", (double)i->memory_bytes);
    set_num(env, o, "diskBytes", (double)i->disk_bytes);
    set_num(env, o, "buildMs", (double)i->build_ms);
    set_str(env, o, "tags", i->tags);
    set_str(env, o, "error", i->error);
    return o;
}

static napi_value tpl_done(napi_env env, job *jj)
{
    j_tpl *j = (j_tpl *)jj;
    napi_value v = NULL;
    if (j->op == TPL_BUILD) {
        v = tpl_info_value(env, &j->info);
    } else if (j->op == TPL_LIST) {
        napi_create_array_with_length(env, j->n, &v);
        for (size_t i = 0; i < j->n; i++)
            napi_set_element(env, v, (uint32_t)i, tpl_info_value(env, &j->list[i]));
    }
    return v;
}

static j_tpl *tpl_new(napi_env env, int op)
{
    j_tpl *j = (j_tpl *)job_new(sizeof(j_tpl));
    if (!j) {
        throw_sbx(env, SBX_ENOMEM, "out of memory");
        return NULL;
    }
    j->op = op;
    j->j.work = tpl_work;
    j->j.done = tpl_done;
    j->j.fin = tpl_fin;
    return j;
}

static void tpl_abandon(j_tpl *j)
{
    tpl_fin(&j->j);
    free(j);
}

/* templateBuild({name, dockerfile | dockerfileText, context, buildArgs, tags, vcpus, memoryMib,
   diskMib, startCmd, ready, readyTimeoutMs, stepTimeoutMs, noCache, templateDir, kernel,
   imageDir, hostLoopback}, onOutput?, onProgress?) -> Promise<info> */
static napi_value f_template_build(napi_env env, napi_callback_info info)
{
    ARGS(3);
    napi_value o = argv[0];
    napi_ref out_ref = NULL, prog_ref = NULL;
    j_tpl *j = tpl_new(env, TPL_BUILD);
    if (!j)
        return NULL;
    sbx_template_build_options def = SBX_TEMPLATE_BUILD_OPTIONS_INIT;
    j->o = def;
    uint64_t disk = 0;
    if (arg_string(env, prop(env, o, "name"), "name", 0, &j->name) ||
        arg_string(env, prop(env, o, "dockerfile"), "dockerfile", 1, &j->dockerfile) ||
        arg_string(env, prop(env, o, "dockerfileText"), "dockerfileText", 1, &j->dockerfile_text) ||
        arg_string(env, prop(env, o, "context"), "context", 1, &j->context) ||
        arg_strv(env, prop(env, o, "buildArgs"), "buildArgs", &j->build_args) ||
        arg_strv(env, prop(env, o, "tags"), "tags", &j->tags) ||
        arg_u32(env, prop(env, o, "vcpus"), "cpuCount", 1, 0, &j->o.vcpus) ||
        arg_u32(env, prop(env, o, "memoryMib"), "memoryMB", 1, 0, &j->o.memory_mib) ||
        arg_uint(env, prop(env, o, "diskMib"), "diskMB", 1, 9007199254740991.0, 0, &disk) ||
        arg_string(env, prop(env, o, "startCmd"), "startCmd", 1, &j->start_cmd) ||
        arg_string(env, prop(env, o, "ready"), "ready", 1, &j->ready) ||
        arg_u32(env, prop(env, o, "readyTimeoutMs"), "readyTimeoutMs", 1, 0,
                &j->o.ready_timeout_ms) ||
        arg_u32(env, prop(env, o, "stepTimeoutMs"), "stepTimeoutMs", 1, 0, &j->o.step_timeout_ms) ||
        arg_string(env, prop(env, o, "templateDir"), "templateDir", 1, &j->template_dir) ||
        arg_string(env, prop(env, o, "kernel"), "kernel", 1, &j->kernel) ||
        arg_string(env, prop(env, o, "imageDir"), "imageDir", 1, &j->image_dir) ||
        arg_function(env, argv[1], "onOutput", 1, &out_ref) ||
        arg_function(env, argv[2], "onProgress", 1, &prog_ref)) {
        if (out_ref)
            napi_delete_reference(env, out_ref);
        tpl_abandon(j);
        return NULL;
    }
    j->o.name = j->name;
    j->o.dockerfile = j->dockerfile;
    j->o.dockerfile_text = j->dockerfile_text;
    j->o.context = j->context;
    j->o.build_args = (const char *const *)j->build_args;
    j->o.tags = (const char *const *)j->tags;
    j->o.disk_mib = disk;
    j->o.start_cmd = j->start_cmd;
    j->o.ready = j->ready;
    j->o.no_cache = arg_bool(env, prop(env, o, "noCache"), 0);
    j->o.template_dir = j->template_dir;
    j->o.kernel = j->kernel;
    j->o.image_dir = j->image_dir;
    j->o.host_loopback = arg_bool(env, prop(env, o, "hostLoopback"), 0);
    j->o.ctx = &j->j;
    /* Always installed: a callback that threw stops the build at its next output. */
    j->o.on_output = exec_on_output;
    j->j.keep[1] = out_ref;
    if (prog_ref) {
        j->j.keep[2] = prog_ref;
        j->o.on_progress = tpl_on_progress;
    }
    return job_start(env, &j->j, NULL, 0, NULL);
}

/* templateList(templateDir?) -> Promise<info[]> */
static napi_value f_template_list(napi_env env, napi_callback_info info)
{
    ARGS(1);
    j_tpl *j = tpl_new(env, TPL_LIST);
    if (!j)
        return NULL;
    if (arg_string(env, argv[0], "templateDir", 1, &j->template_dir)) {
        tpl_abandon(j);
        return NULL;
    }
    return job_start(env, &j->j, NULL, 0, NULL);
}

/* templateRemove(name, templateDir?) -> Promise<void> */
static napi_value f_template_remove(napi_env env, napi_callback_info info)
{
    ARGS(2);
    j_tpl *j = tpl_new(env, TPL_REMOVE);
    if (!j)
        return NULL;
    if (arg_string(env, argv[0], "name", 0, &j->name) ||
        arg_string(env, argv[1], "templateDir", 1, &j->template_dir)) {
        tpl_abandon(j);
        return NULL;
    }
    return job_start(env, &j->j, NULL, 0, NULL);
}

/* ---------------------------------------------------------------------------------------- */
/* Environment teardown and module init                                                      */
/* ---------------------------------------------------------------------------------------- */

static void env_cleanup(void *arg)
{
    env_state *es = arg;
    pthread_mutex_lock(&es->mu);
    es->closing = 1;
    while (es->boxes) {
        box *bx = es->boxes;
        bx->refs++;
        pthread_mutex_unlock(&es->mu);
        box_destroy_sync(bx);
        pthread_mutex_lock(&es->mu);
        list_remove_box(es, bx); /* in case it was destroyed by a failed create */
        box_unref_locked(bx);
    }
    /* Every thread left is returning from an interrupted call or posting its last message. */
    while (es->threads > 0)
        cv_wait_ms(es, 50);
    pthread_mutex_unlock(&es->mu);
    /* es is deliberately not freed: finalizers of handles may still run after this. */
}

#define FN(name, f)                                                                                \
    {                                                                                              \
        name, NULL, f, NULL, NULL, NULL, napi_enumerable, NULL                                     \
    }

NAPI_MODULE_INIT()
{
    env_state *es = calloc(1, sizeof(env_state));
    if (!es)
        return NULL;
    pthread_mutex_init(&es->mu, NULL);
    pthread_cond_init(&es->cv, NULL);
    napi_value name;
    napi_create_string_utf8(env, "libsandbox", NAPI_AUTO_LENGTH, &name);
    if (napi_create_threadsafe_function(env, NULL, NULL, name, 0, 1, NULL, NULL, NULL, call_js,
                                        &es->tsfn) != napi_ok)
        return NULL;
    napi_unref_threadsafe_function(env, es->tsfn);
    napi_set_instance_data(env, es, NULL, NULL);
    /* Registered after the thread-safe function, so it runs before that is torn down. */
    napi_add_env_cleanup_hook(env, env_cleanup, es);

    napi_property_descriptor props[] = {
        FN("version", f_version),
        FN("strerror", f_strerror),
        FN("setErrorFactory", f_set_error_factory),
        FN("hold", f_hold),
        FN("release", f_release),
        FN("create", f_create),
        FN("resume", f_resume),
        FN("fork", f_fork),
        FN("snapshot", f_snapshot),
        FN("pause", f_pause),
        FN("templateBuild", f_template_build),
        FN("templateList", f_template_list),
        FN("templateRemove", f_template_remove),
        FN("listRunning", f_list_running),
        FN("kill", f_kill_box),
        FN("interrupt", f_interrupt),
        FN("state", f_state),
        FN("killed", f_killed),
        FN("info", f_info),
        FN("metadata", f_metadata),
        FN("networkUpdate", f_network_update),
        FN("networkStats", f_network_stats),
        FN("expose", f_expose),
        FN("getHost", f_get_host),
        FN("unexpose", f_unexpose),
        FN("console", f_console),
        FN("ping", f_ping),
        FN("shutdown", f_shutdown),
        FN("setTimeout", f_set_timeout),
        FN("metrics", f_metrics),
        FN("exec", f_exec),
        FN("killPid", f_kill_pid),
        FN("procList", f_proc_list),
        FN("procStart", f_proc_start),
        FN("ptyOpen", f_pty_open),
        FN("procAttach", f_proc_attach),
        FN("watchOpen", f_watch_open),
        FN("pumpWrite", f_pump_write),
        FN("pumpCloseStdin", f_pump_close_stdin),
        FN("pumpResize", f_pump_resize),
        FN("pumpSignal", f_pump_signal),
        FN("pumpClose", f_pump_close),
        FN("pumpPid", f_pump_pid),
        FN("writeFile", f_write_file),
        FN("readFile", f_read_file),
        FN("stat", f_stat),
        FN("exists", f_exists),
        FN("list", f_list),
        FN("mkdir", f_mkdir),
        FN("remove", f_remove),
        FN("rename", f_rename),
        FN("copyIn", f_copy_in),
        FN("copyOut", f_copy_out),
        FN("fileCreate", f_file_create),
        FN("fileOpen", f_file_open),
        FN("fileWrite", f_file_write),
        FN("fileCommit", f_file_commit),
        FN("fileRead", f_file_read),
        FN("fileClose", f_file_close),
        FN("runCode", f_run_code),
        FN("codeContextCreate", f_code_context_create),
        FN("codeContextList", f_code_context_list),
        FN("codeContextRestart", f_code_context_restart),
        FN("codeContextRemove", f_code_context_remove),
        FN("codeInterrupt", f_code_interrupt),
    };
    napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props);

    /* The error codes, from the header itself, so JS and C cannot disagree. */
    static const struct {
        const char *n;
        int v;
    } codes[] = {
        {"SBX_EINVAL", SBX_EINVAL},
        {"SBX_ENOMEM", SBX_ENOMEM},
        {"SBX_ENOKVM", SBX_ENOKVM},
        {"SBX_EKVM", SBX_EKVM},
        {"SBX_EIMAGE", SBX_EIMAGE},
        {"SBX_ETIMEDOUT", SBX_ETIMEDOUT},
        {"SBX_EGUEST", SBX_EGUEST},
        {"SBX_EPROTO", SBX_EPROTO},
        {"SBX_EINTR", SBX_EINTR},
        {"SBX_ESTATE", SBX_ESTATE},
        {"SBX_EIO", SBX_EIO},
        {"SBX_ENOTSUP", SBX_ENOTSUP},
        {"SBX_ENOENT", SBX_ENOENT},
        {"SBX_EACCES", SBX_EACCES},
        {"SBX_ENOTDIR", SBX_ENOTDIR},
        {"SBX_EISDIR", SBX_EISDIR},
        {"SBX_ENOSPC", SBX_ENOSPC},
        {"SBX_EEXIST", SBX_EEXIST},
        {"SBX_ENOTEMPTY", SBX_ENOTEMPTY},
        {"SBX_EBUSY", SBX_EBUSY},
        {"SBX_EDEAD", SBX_EDEAD},
        {"SBX_EAGAIN", SBX_EAGAIN},
    };
    napi_value co;
    napi_create_object(env, &co);
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
        set_num(env, co, codes[i].n, codes[i].v);
    napi_set_named_property(env, exports, "codes", co);
    napi_value nt;
    napi_create_uint32(env, SBX_NO_TIMEOUT, &nt);
    napi_set_named_property(env, exports, "NO_TIMEOUT", nt);
    return exports;
}
