/* loader.c - finds backend plugins with libltdl and checks each ops table
 * against the ABI before the core calls anything in it. */
#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <ltdl.h>

#include "core/internal.h"

#ifndef XFER_PLUGIN_DIR
#define XFER_PLUGIN_DIR "/usr/local/lib/xfer"
#endif

struct xfer__plugin {
    char *name;
    char *path;
    lt_dlhandle handle;
    const xfer_backend_ops_t *ops;
};

/* libltdl keeps global state and is not thread-safe. */
static pthread_mutex_t ltdl_lock = PTHREAD_MUTEX_INITIALIZER;

/* The search path, in order: XFER_PLUGIN_PATH entries, then the install
 * directory.  Returned as a malloc'd NULL-terminated array. */
static char **search_dirs(void)
{
    const char *env = getenv("XFER_PLUGIN_PATH");
    char *copy = strdup(env ? env : "");
    size_t n = 0, cap = 4;
    char **dirs = calloc(cap, sizeof(*dirs));
    char *save = NULL;

    if (copy == NULL || dirs == NULL)
        goto nomem;
    for (char *tok = strtok_r(copy, ":", &save); tok != NULL;
         tok = strtok_r(NULL, ":", &save)) {
        if (n + 2 >= cap) {
            char **grown = realloc(dirs, cap * 2 * sizeof(*dirs));

            if (grown == NULL)
                goto nomem;
            dirs = grown;
            cap *= 2;
        }
        if ((dirs[n] = strdup(tok)) == NULL)
            goto nomem;
        n++;
    }
    if ((dirs[n] = strdup(XFER_PLUGIN_DIR)) == NULL)
        goto nomem;
    dirs[n + 1] = NULL;
    free(copy);
    return dirs;

nomem:
    if (dirs != NULL)
        for (size_t i = 0; i < n; i++)
            free(dirs[i]);
    free(dirs);
    free(copy);
    return NULL;
}

static void free_dirs(char **dirs)
{
    for (size_t i = 0; dirs && dirs[i]; i++)
        free(dirs[i]);
    free(dirs);
}

/* A plugin name is what may appear in a C identifier. */
static bool valid_name(const char *name)
{
    size_t n = 0;

    for (const char *p = name; *p; p++, n++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
              *p == '_'))
            return false;
    return n > 0 && n <= 64;
}

/* Find xfer_<name>.la, else xfer_<name>.so, in the search path. */
static char *find_file(const char *name)
{
    static const char *const exts[] = {".la", ".so"};
    char **dirs = search_dirs();
    char *found = NULL;

    for (size_t i = 0; dirs && dirs[i] && !found; i++) {
        for (unsigned e = 0; e < 2 && !found; e++) {
            char path[PATH_MAX];
            int n = snprintf(path, sizeof(path), "%s/xfer_%s%s", dirs[i],
                             name, exts[e]);

            if (n > 0 && (size_t)n < sizeof(path) && access(path, R_OK) == 0)
                found = strdup(path);
        }
    }
    free_dirs(dirs);
    return found;
}

typedef struct mandatory_op {
    const char *name;
    size_t offset;
} mandatory_op_t;

#define MANDATORY(field) {#field, offsetof(xfer_backend_ops_t, field)}

static const mandatory_op_t mandatory_ops[] = {
    MANDATORY(init),        MANDATORY(fini),         MANDATORY(conn_info),
    MANDATORY(peer_add),    MANDATORY(peer_remove),  MANDATORY(mem_register),
    MANDATORY(mem_deregister), MANDATORY(rmem_unpack),
    MANDATORY(rmem_release), MANDATORY(req_create),  MANDATORY(req_post),
    MANDATORY(req_check),   MANDATORY(req_release),  MANDATORY(progress),
};

static xfer_status_t check_params(const char *name, const char *path,
                                  const xfer_backend_ops_t *ops)
{
    if (ops->nparams > 0 && ops->params == NULL)
        return xfer__err(XFER_ERR_LOAD, "plugin '%s' (%s) declares %zu "
                         "parameters but no table", name, path, ops->nparams);
    for (size_t i = 0; i < ops->nparams; i++) {
        const xfer_param_t *p = &ops->params[i];
        size_t width;

        if (p->name == NULL || !valid_name(p->name))
            return xfer__err(XFER_ERR_LOAD, "plugin '%s' (%s): parameter %zu "
                             "has an invalid name", name, path, i);
        switch (p->type) {
        case XFER_PARAM_BOOL: width = sizeof(int); break;
        case XFER_PARAM_INT: width = sizeof(int64_t); break;
        case XFER_PARAM_UINT: width = sizeof(uint64_t); break;
        case XFER_PARAM_SIZE: width = sizeof(size_t); break;
        case XFER_PARAM_STRING: width = sizeof(const char *); break;
        default:
            return xfer__err(XFER_ERR_LOAD, "plugin '%s' (%s): parameter '%s' "
                             "has unknown type %d", name, path, p->name,
                             (int)p->type);
        }
        if (p->offset + width > ops->config_size)
            return xfer__err(XFER_ERR_LOAD, "plugin '%s' (%s): parameter '%s' "
                             "lies outside its %zu-byte config struct", name,
                             path, p->name, ops->config_size);
    }
    return XFER_OK;
}

/* Everything the core relies on before it calls a single op. */
static xfer_status_t check_ops(const char *name, const char *path,
                               const xfer_backend_ops_t *ops)
{
    const xfer_backend_hdr_t *h = &ops->hdr;

    if (h->abi_major != XFER_BACKEND_ABI_MAJOR)
        return xfer__err(XFER_ERR_LOAD, "plugin '%s' (%s) was built for "
                         "backend ABI %u, this library speaks %u", name, path,
                         (unsigned)h->abi_major, XFER_BACKEND_ABI_MAJOR);
    if (h->struct_size < offsetof(xfer_backend_ops_t, init))
        return xfer__err(XFER_ERR_LOAD, "plugin '%s' (%s) has an ops table of "
                         "%u bytes, too short for the header", name, path,
                         (unsigned)h->struct_size);
    if (h->name == NULL || strcmp(h->name, name) != 0)
        return xfer__err(XFER_ERR_LOAD, "plugin file %s names itself '%s', "
                         "expected '%s' (file, symbol and name must agree)",
                         path, h->name ? h->name : "(null)", name);
    for (size_t i = 0; i < sizeof(mandatory_ops) / sizeof(mandatory_ops[0]);
         i++) {
        const mandatory_op_t *m = &mandatory_ops[i];
        void *fn;

        if (h->struct_size < m->offset + sizeof(void (*)(void)))
            return xfer__err(XFER_ERR_LOAD, "plugin '%s' (%s): ops table of %u "
                             "bytes ends before mandatory op '%s'", name, path,
                             (unsigned)h->struct_size, m->name);
        memcpy(&fn, (const char *)ops + m->offset, sizeof(fn));
        if (fn == NULL)
            return xfer__err(XFER_ERR_LOAD, "plugin '%s' (%s) lacks mandatory "
                             "op '%s'", name, path, m->name);
    }
    if ((h->caps & XFER_CAP_NOTIF) && !XFER__HAS_OP(ops, notif_send))
        return xfer__err(XFER_ERR_LOAD, "plugin '%s' (%s) claims notifications "
                         "but lacks op 'notif_send'", name, path);
    if (!(h->caps & (XFER_CAP_READ | XFER_CAP_WRITE)))
        return xfer__err(XFER_ERR_LOAD, "plugin '%s' (%s) supports neither READ "
                         "nor WRITE", name, path);
    return check_params(name, path, ops);
}

/* Open a file we found and check it.  ltdl_lock held. */
static xfer_status_t open_path(const char *name, const char *path,
                               xfer__plugin_t **out)
{
    char sym[128];
    lt_dladvise advise;
    lt_dlhandle h = NULL;
    const xfer_backend_ops_t *ops;
    xfer__plugin_t *pl;
    xfer_status_t st;

    if (lt_dlinit() != 0)
        return xfer__err(XFER_ERR_LOAD, "libltdl failed to initialise: %s",
                         lt_dlerror());
    /* Local scope: two plugins may define the same internal names. */
    if (lt_dladvise_init(&advise) == 0) {
        lt_dladvise_local(&advise);
        h = lt_dlopenadvise(path, advise);
        lt_dladvise_destroy(&advise);
    }
    if (h == NULL) {
        st = xfer__err(XFER_ERR_LOAD, "plugin '%s': cannot open %s: %s", name,
                       path, lt_dlerror());
        lt_dlexit();
        return st;
    }
    snprintf(sym, sizeof(sym), "xfer_backend_%s_v%d", name,
             XFER_BACKEND_ABI_MAJOR);
    ops = lt_dlsym(h, sym);
    if (ops == NULL) {
        /* Say which ABI it was built for when we can tell. */
        for (int major = 0; major < 10 && ops == NULL; major++) {
            char other[128];

            if (major == XFER_BACKEND_ABI_MAJOR)
                continue;
            snprintf(other, sizeof(other), "xfer_backend_%s_v%d", name, major);
            if (lt_dlsym(h, other) != NULL) {
                st = xfer__err(XFER_ERR_LOAD, "plugin '%s' (%s) exports %s: "
                               "built for backend ABI %d, this library "
                               "speaks %d", name, path, other, major,
                               XFER_BACKEND_ABI_MAJOR);
                goto fail;
            }
        }
        st = xfer__err(XFER_ERR_LOAD, "plugin '%s' (%s) does not export %s",
                       name, path, sym);
        goto fail;
    }
    st = check_ops(name, path, ops);
    if (st != XFER_OK)
        goto fail;
    pl = calloc(1, sizeof(*pl));
    if (pl == NULL || (pl->name = strdup(name)) == NULL ||
        (pl->path = strdup(path)) == NULL) {
        if (pl != NULL)
            free(pl->name);
        free(pl);
        st = xfer__err(XFER_ERR_NOMEM, "out of memory");
        goto fail;
    }
    pl->handle = h;
    pl->ops = ops;
    *out = pl;
    return XFER_OK;

fail:
    lt_dlclose(h);
    lt_dlexit();
    return st;
}

xfer_status_t xfer__plugin_open(const char *name, xfer__plugin_t **plugin)
{
    xfer_status_t st;
    char *path;

    *plugin = NULL;
    if (!valid_name(name))
        return xfer__err(XFER_ERR_INVALID, "'%s' is not a valid plugin name",
                         name);
    path = find_file(name);
    if (path == NULL) {
        const char *env = getenv("XFER_PLUGIN_PATH");

        return xfer__err(XFER_ERR_NOT_FOUND, "no plugin '%s': xfer_%s.la not "
                         "found in %s%s%s", name, name, env ? env : "",
                         env ? ":" : "", XFER_PLUGIN_DIR);
    }
    pthread_mutex_lock(&ltdl_lock);
    st = open_path(name, path, plugin);
    pthread_mutex_unlock(&ltdl_lock);
    free(path);
    return st;
}

/* XFER_PLUGIN_DLCLOSE=0 leaves a closed plugin open in libltdl, mapped
 * and reachable from its handle list (Open MPI's
 * mca_base_component_disable_dlclose): a leak checker that reports at
 * exit, like LeakSanitizer, can then name the plugin code that allocated
 * rather than an unknown module.  Opening it again reuses that handle. */
static bool unload_plugins(void)
{
    const char *env = getenv("XFER_PLUGIN_DLCLOSE");

    return env == NULL || strcmp(env, "0") != 0;
}

void xfer__plugin_close(xfer__plugin_t *plugin)
{
    if (plugin == NULL)
        return;
    pthread_mutex_lock(&ltdl_lock);
    if (unload_plugins()) {
        lt_dlclose(plugin->handle);
        lt_dlexit();
    }
    pthread_mutex_unlock(&ltdl_lock);
    free(plugin->name);
    free(plugin->path);
    free(plugin);
}

const xfer_backend_ops_t *xfer__plugin_ops(const xfer__plugin_t *plugin)
{
    return plugin->ops;
}

const char *xfer__plugin_path(const xfer__plugin_t *plugin)
{
    return plugin->path;
}

/* ---- listing ----------------------------------------------------------- */

/* One xfer_plugin_info_t owns its strings through this wrapper so that
 * xfer_plugin_list_free can release them. */
typedef struct info_store {
    char *name, *path, *version, *error, *state;
    xfer_param_info_t *params;
    char **texts; /* param type/default/doc copies */
    size_t ntexts;
} info_store_t;

static char *dup_or_empty(const char *s)
{
    return strdup(s ? s : "");
}

static int fill_info(xfer_plugin_info_t *info, info_store_t *store,
                     const char *name, const char *path,
                     const xfer_backend_ops_t *ops, const char *error,
                     const char *state)
{
    memset(store, 0, sizeof(*store));
    store->name = strdup(name);
    store->path = strdup(path);
    if (store->name == NULL || store->path == NULL)
        return -1;
    info->name = store->name;
    info->path = store->path;
    if (error != NULL) {
        if ((store->error = strdup(error)) == NULL)
            return -1;
        info->error = store->error;
        info->version = "";
        return 0;
    }
    if ((store->version = dup_or_empty(ops->hdr.version)) == NULL)
        return -1;
    info->version = store->version;
    if (state != NULL) {
        if ((store->state = strdup(state)) == NULL)
            return -1;
        info->state = store->state;
    }
    info->abi_major = ops->hdr.abi_major;
    info->abi_minor = ops->hdr.abi_minor;
    info->caps = ops->hdr.caps;
    info->mem_types = ops->hdr.mem_types;
    info->nparams = ops->nparams;
    if (ops->nparams == 0)
        return 0;
    store->params = calloc(ops->nparams, sizeof(*store->params));
    store->texts = calloc(ops->nparams * 3, sizeof(char *));
    if (store->params == NULL || store->texts == NULL)
        return -1;
    for (size_t i = 0; i < ops->nparams; i++) {
        const xfer_param_t *p = &ops->params[i];
        xfer_param_info_t *pi = &store->params[i];
        char *n = dup_or_empty(p->name), *d = dup_or_empty(p->defval),
             *doc = dup_or_empty(p->doc);

        store->texts[store->ntexts++] = n;
        store->texts[store->ntexts++] = d;
        store->texts[store->ntexts++] = doc;
        if (n == NULL || d == NULL || doc == NULL)
            return -1;
        pi->name = n;
        pi->defval = d;
        pi->doc = doc;
        pi->type = xfer__param_type_name(p->type);
        pi->min = p->min;
        pi->max = p->max;
    }
    info->params = store->params;
    return 0;
}

static void free_store(info_store_t *store)
{
    free(store->name);
    free(store->path);
    free(store->version);
    free(store->error);
    free(store->state);
    free(store->params);
    for (size_t i = 0; i < store->ntexts; i++)
        free(store->texts[i]);
    free(store->texts);
}

/* What xfer_plugin_list hands out is the infos[] of this block, so the
 * free function can find the stores that own the strings. */
typedef struct list_block {
    info_store_t *stores;
    xfer_plugin_info_t infos[];
} list_block_t;

/* The plugin's sentence on this host (ABI minor 2), into buf; NULL when
 * its table predates probe, has none, or the probe declined. */
static const char *probe_state(const xfer_backend_ops_t *ops, char *buf,
                               size_t len)
{
    if (ops == NULL || !XFER__HAS_OP(ops, probe))
        return NULL;
    buf[0] = '\0';
    if (ops->probe(buf, len) != XFER_OK)
        return NULL;
    buf[len - 1] = '\0';
    return buf[0] != '\0' ? buf : NULL;
}

static bool seen(char **names, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(names[i], name) == 0)
            return true;
    return false;
}

XFER_API xfer_status_t xfer_plugin_list(xfer_plugin_info_t **infos,
                                        size_t *count)
{
    char **dirs, **names = NULL;
    size_t n = 0, cap = 0;
    list_block_t *block = NULL;
    xfer_plugin_info_t *out;
    info_store_t *stores = NULL;
    xfer_status_t st = XFER_OK;

    xfer__err_clear();
    if (infos == NULL || count == NULL)
        return xfer__err(XFER_ERR_INVALID, "xfer_plugin_list: NULL argument");
    *infos = NULL;
    *count = 0;
    dirs = search_dirs();
    if (dirs == NULL)
        return xfer__err(XFER_ERR_NOMEM, "out of memory");

    /* Collect plugin names in search-path order, first one wins. */
    for (size_t d = 0; dirs[d]; d++) {
        DIR *dir = opendir(dirs[d]);
        struct dirent *de;

        if (dir == NULL)
            continue;
        while ((de = readdir(dir)) != NULL) {
            const char *fn = de->d_name;
            size_t len = strlen(fn);
            char stem[128];

            if (strncmp(fn, "xfer_", 5) != 0 || len < 9 ||
                (strcmp(fn + len - 3, ".la") != 0 &&
                 strcmp(fn + len - 3, ".so") != 0))
                continue;
            if (len - 8 >= sizeof(stem))
                continue;
            memcpy(stem, fn + 5, len - 8);
            stem[len - 8] = '\0';
            if (seen(names, n, stem))
                continue;
            if (n == cap) {
                size_t ncap = cap ? cap * 2 : 8;
                char **grown = realloc(names, ncap * sizeof(*grown));

                if (grown == NULL) {
                    closedir(dir);
                    st = xfer__err(XFER_ERR_NOMEM, "out of memory");
                    goto out;
                }
                names = grown;
                cap = ncap;
            }
            if ((names[n] = strdup(stem)) == NULL) {
                closedir(dir);
                st = xfer__err(XFER_ERR_NOMEM, "out of memory");
                goto out;
            }
            n++;
        }
        closedir(dir);
    }

    block = calloc(1, sizeof(*block) + n * sizeof(block->infos[0]));
    stores = calloc(n + 1, sizeof(*stores));
    if (block == NULL || stores == NULL) {
        st = xfer__err(XFER_ERR_NOMEM, "out of memory");
        goto out;
    }
    out = block->infos;
    for (size_t i = 0; i < n; i++) {
        char *path = find_file(names[i]);
        xfer__plugin_t *pl = NULL;
        xfer_status_t ost;
        char state[XFER_STATE_MAX];
        const char *sp;
        int rc;

        if (!valid_name(names[i]))
            ost = xfer__err(XFER_ERR_LOAD, "'%s' is not a valid plugin name",
                            names[i]);
        else if (path == NULL)
            ost = xfer__err(XFER_ERR_LOAD, "plugin file vanished");
        else {
            pthread_mutex_lock(&ltdl_lock);
            ost = open_path(names[i], path, &pl);
            pthread_mutex_unlock(&ltdl_lock);
        }
        sp = probe_state(pl ? pl->ops : NULL, state, sizeof(state));
        rc = fill_info(&out[i], &stores[i], names[i], path ? path : "",
                       pl ? pl->ops : NULL,
                       ost == XFER_OK ? NULL : xfer_last_error(), sp);
        xfer__plugin_close(pl);
        free(path);
        if (rc != 0) {
            for (size_t j = 0; j <= i; j++)
                free_store(&stores[j]);
            st = xfer__err(XFER_ERR_NOMEM, "out of memory");
            goto out;
        }
    }
    block->stores = stores;
    *infos = block->infos;
    *count = n;
    block = NULL;
    stores = NULL;
    xfer__err_clear();

out:
    free(block);
    free(stores);
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    free_dirs(dirs);
    return st;
}

XFER_API void xfer_plugin_list_free(xfer_plugin_info_t *infos, size_t count)
{
    list_block_t *block;

    if (infos == NULL)
        return;
    block = (list_block_t *)(void *)((char *)infos -
                                     offsetof(list_block_t, infos));
    for (size_t i = 0; i < count; i++)
        free_store(&block->stores[i]);
    free(block->stores);
    free(block);
}
