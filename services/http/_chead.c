/* The HTTP router's per-request work in C: the same functions as their Python references, for speed.
 *
 * - `head_end(buf, start)`: `framing._head_end_py` — where a head ends, or that it holds a bare CR/LF;
 * - `framing(head, request)`: `http1._framing_py` — the header fields of a parsed head split,
 *   classified by `http1._KINDS` (handed over once by `configure`), checked and re-written into
 *   what is passed on (`kept`);
 * - `split_target(target)`: `canonical.split_target` for every target whose decoded path is ASCII;
 *   None for the rest (escapes of bytes >= 0x80), which the Python reference decides (NFKC, UTF-8).
 *
 * Rare paths call the Python code itself (a refused header block is described by `_refuse_block`;
 * a Connection field with tokens other than "keep-alive"/"close" by `_connection`), so reasons and
 * statuses are the reference's. tests/services/http/test_chead.py proves C == Python for every input
 * it generates, the hostile classes of the http edge included, and builds this file with ASan/UBSan.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

typedef const unsigned char *ptr;

/* configured once by http1.py / canonical.py */
static PyObject *HttpError, *refuse_block, *connection_rest, *BadPath;
static Py_ssize_t max_headers = 100;

enum { F_OTHER, F_HOST, F_LENGTH, F_TE, F_CONNECTION, F_UPGRADE, F_SET_COOKIE, F_HOP, F_UNTRUSTED, F_URL,
       F_RETARGET, F_EXPECT, N_KINDS };

#define MAX_KINDS 96
#define MAX_NAME 40
static struct { unsigned char len; char name[MAX_NAME]; unsigned char kind; } kinds[MAX_KINDS];
static int n_kinds;
static unsigned drop_request, drop_response; /* bit sets of kinds */

static unsigned char TOKEN[256], VALUE_OK[256], LOWER[256], PLAIN[256], QUERY_OK[256], RAW_OK[256],
    UNRESERVED[256], HEXV[256];

static PyObject *a_host, *a_host_line, *a_kept, *a_cookies, *a_urls, *a_expect, *a_stripped, *a_chunked,
    *a_content_length, *a_keep_alive, *a_upgrade, *a_block, *a_version;
static PyObject *s_empty;

static void init_tables(void) {
    const char *tok = "!#$%&'*+-.^_`|~";
    for (int c = 0; c < 256; c++) {
        int alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        TOKEN[c] = alnum || (c && strchr(tok, c));
        VALUE_OK[c] = !(c <= 0x08 || (c >= 0x0a && c <= 0x1f) || c == 0x7f);
        LOWER[c] = (c >= 'A' && c <= 'Z') ? c + 32 : c;
        UNRESERVED[c] = alnum || (c && strchr("-._~", c));
        PLAIN[c] = UNRESERVED[c] || (c && strchr("!$&'()*+,=:@/", c));
        RAW_OK[c] = PLAIN[c];
        QUERY_OK[c] = c > 0x20 && c != 0x7f && c != '#';
        HEXV[c] = (c >= '0' && c <= '9') ? c - '0' + 1 : (c >= 'a' && c <= 'f') ? c - 'a' + 11
                  : (c >= 'A' && c <= 'F') ? c - 'A' + 11 : 0;
    }
}

static int buffer_of(PyObject *o, Py_buffer *v) { return PyObject_GetBuffer(o, v, PyBUF_SIMPLE); }

/* -- head_end ----------------------------------------------------------------------------------- */

/* head_end(buf, start) -> r: r > 0 the head ends at r; 0 a bare CR or LF lies in [start, limit);
 * r < 0: no end yet, nothing wrong up to limit = -r - 1 (a CR at the very end still waits for its LF). */
static PyObject *head_end(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    Py_buffer v;
    if (nargs != 2 || buffer_of(args[0], &v) < 0)
        return nargs != 2 ? (PyErr_SetString(PyExc_TypeError, "head_end(buf, start)"), NULL) : NULL;
    Py_ssize_t start = PyLong_AsSsize_t(args[1]);
    if (start == -1 && PyErr_Occurred()) {
        PyBuffer_Release(&v);
        return NULL;
    }
    ptr b = v.buf;
    Py_ssize_t n = v.len, e = -1, limit;
    if (start < 0)
        start = 0;
    for (Py_ssize_t i = start > 3 ? start - 3 : 0; i + 3 < n; i++) {
        const unsigned char *p = memchr(b + i, '\r', n - 3 - i);
        if (p == NULL)
            break;
        i = p - b;
        if (p[1] == '\n' && p[2] == '\r' && p[3] == '\n') {
            e = i;
            break;
        }
    }
    limit = e >= 0 ? e + 4 : n - (n > 0 && b[n - 1] == '\r');
    long r = e >= 0 ? (long)(e + 4) : -(long)limit - 1;
    for (Py_ssize_t i = start; i < limit; i++) {
        unsigned char c = b[i];
        if (c == '\r') {
            if (i + 1 >= limit || b[i + 1] != '\n') {
                r = 0;
                break;
            }
        } else if (c == '\n' && (i == 0 || b[i - 1] != '\r')) {
            r = 0;
            break;
        }
    }
    PyBuffer_Release(&v);
    return PyLong_FromLong(r);
}

/* -- framing ------------------------------------------------------------------------------------ */

static int kind_of(ptr name, Py_ssize_t len) {
    if (len > MAX_NAME)
        return F_OTHER;
    for (int k = 0; k < n_kinds; k++) {
        if (kinds[k].len != len)
            continue;
        Py_ssize_t j = 0;
        while (j < len && LOWER[name[j]] == (unsigned char)kinds[k].name[j])
            j++;
        if (j == len)
            return kinds[k].kind;
    }
    return F_OTHER;
}

static PyObject *raise_http(int status, const char *reason) {
    PyObject *exc = PyObject_CallFunction(HttpError, "is", status, reason);
    if (exc != NULL) {
        PyErr_SetObject(HttpError, exc);
        Py_DECREF(exc);
    }
    return NULL;
}

static PyObject *refuse(PyObject *block) {
    PyObject *r = PyObject_CallOneArg(refuse_block, block);
    if (r != NULL) { /* the reference always raises: a reader that returns broke its contract */
        Py_DECREF(r);
        PyErr_SetString(PyExc_RuntimeError, "_refuse_block returned");
    }
    return NULL;
}

static PyObject *lowered(ptr p, ptr e) {
    PyObject *o = PyBytes_FromStringAndSize(NULL, e - p);
    if (o == NULL)
        return NULL;
    unsigned char *d = (unsigned char *)PyBytes_AS_STRING(o);
    for (; p < e; p++)
        *d++ = LOWER[*p];
    return o;
}

static int set(PyObject *h, PyObject *name, PyObject *value) {
    if (value == NULL)
        return -1;
    int r = PyObject_SetAttr(h, name, value);
    Py_DECREF(value);
    return r;
}

typedef struct { ptr p, e; } span;

/* the span, lower-cased, is `lit` */
static int eq(span s, const char *lit) {
    size_t n = strlen(lit);
    if (s.p == NULL || (size_t)(s.e - s.p) != n)
        return 0;
    for (size_t j = 0; j < n; j++)
        if (LOWER[s.p[j]] != (unsigned char)lit[j])
            return 0;
    return 1;
}

/* framing(h, request): http1._framing_py(h, request), filling `h` (a Head) in place. */
static PyObject *framing(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "framing(head, request)");
        return NULL;
    }
    PyObject *h = args[0];
    int request = PyObject_IsTrue(args[1]);
    PyObject *block = PyObject_GetAttr(h, a_block), *version = NULL, *kept = NULL, *stripped = NULL;
    PyObject *result = NULL, *lower_conn = NULL;
    if (block == NULL || request < 0)
        goto done;
    if (!PyBytes_Check(block)) {
        PyErr_SetString(PyExc_TypeError, "Head.block must be bytes");
        goto done;
    }
    version = PyObject_GetAttr(h, a_version);
    if (version == NULL)
        goto done;
    int v10 = PyBytes_Check(version) && PyBytes_GET_SIZE(version) == 8 &&
              memcmp(PyBytes_AS_STRING(version), "HTTP/1.0", 8) == 0;
    ptr b = (ptr)PyBytes_AS_STRING(block);
    Py_ssize_t n = PyBytes_GET_SIZE(block);
    unsigned drop = request ? drop_request : drop_response;

    /* lines: block[:-2].split(b"\r\n") */
    Py_ssize_t nlines = 0;
    if (n) {
        ptr q = b, end = b + (n >= 2 ? n - 2 : 0);
        nlines = 1;
        while (q < end) {
            ptr r = memchr(q, '\r', end - q);
            if (r == NULL || r + 1 >= end)
                break;
            if (r[1] == '\n')
                nlines++, q = r + 2;
            else
                q = r + 1;
        }
        if (nlines > max_headers) {
            refuse(block);
            goto done;
        }
    }
    /* kept is at most the block itself */
    kept = PyBytes_FromStringAndSize(NULL, n);
    if (kept == NULL)
        goto done;
    unsigned char *k = (unsigned char *)PyBytes_AS_STRING(kept), *k0 = k;
    span te = {0}, cl = {0}, conn = {0}, upgrade = {0}, host_v = {0}, host_line = {0};
    int te_many = 0, conn_many = 0, hosts = 0, cookies = 0, urls = 0, expect = 0;
    ptr end = b + (n >= 2 ? n - 2 : 0);
    ptr q = b;
    for (Py_ssize_t li = 0; li < nlines; li++) {
        /* the next line: up to the next CRLF, or to end */
        ptr le = q, s;
        for (;;) {
            ptr r = memchr(le, '\r', end - le);
            if (r == NULL || r + 1 >= end) {
                le = end;
                break;
            }
            if (r[1] == '\n') {
                le = r;
                break;
            }
            le = r + 1;
        }
        ptr line = q;
        q = le + 2;
        /* _LINE_OK: token ':' value-without-controls */
        for (s = line; s < le && TOKEN[*s]; s++)
            ;
        if (s == line || s == le || *s != ':') {
            refuse(block);
            goto done;
        }
        ptr colon = s;
        for (s = colon + 1; s < le && VALUE_OK[*s]; s++)
            ;
        if (s != le) {
            refuse(block);
            goto done;
        }
        int kind = kind_of(line, colon - line);
        if (kind == F_OTHER || !(drop & (1u << kind))) {
            memcpy(k, line, le - line);
            k += le - line;
            *k++ = '\r';
            *k++ = '\n';
        }
        if (kind == F_OTHER)
            continue;
        span val = {colon + 1, le};
        while (val.p < val.e && (*val.p == ' ' || *val.p == '\t'))
            val.p++;
        while (val.e > val.p && (val.e[-1] == ' ' || val.e[-1] == '\t'))
            val.e--;
        switch (kind) {
        case F_HOST:
            hosts++;
            host_v = val;
            host_line = (span){line, le};
            break;
        case F_LENGTH:
            if (cl.p != NULL) {
                raise_http(request ? 400 : 502, "malformed or repeated Content-Length");
                goto done;
            }
            cl = val;
            break;
        case F_CONNECTION:
            if (conn.p != NULL)
                conn_many = 1;
            conn = val;
            break;
        case F_TE:
            if (te.p != NULL)
                te_many = 1;
            te = val;
            break;
        case F_SET_COOKIE:
            cookies = 1;
            break;
        case F_URL:
            urls = 1;
            break;
        case F_UPGRADE:
            if (upgrade.p == NULL)
                upgrade = val;
            break;
        case F_EXPECT:
            if (request) {
                Py_ssize_t j = 0, m = val.e - val.p;
                const char *want = "100-continue";
                while (j < m && j < 12 && LOWER[val.p[j]] == (unsigned char)want[j])
                    j++;
                if (!(m == 12 && j == 12)) {
                    raise_http(417, "unknown expectation");
                    goto done;
                }
                expect = 1;
            }
            break;
        case F_RETARGET:
            if (request) {
                if (stripped == NULL && (stripped = PyList_New(0)) == NULL)
                    goto done;
                PyObject *name = PyBytes_FromStringAndSize((const char *)line, colon - line);
                if (name == NULL || PyList_Append(stripped, name) < 0) {
                    Py_XDECREF(name);
                    goto done;
                }
                Py_DECREF(name);
            }
            break;
        }
    }
    if (conn_many) { /* several Connection fields: joined as the reference joins them */
        PyObject *parts = PyList_New(0);
        if (parts == NULL)
            goto done;
        q = b;
        for (Py_ssize_t li = 0; li < nlines; li++) {
            ptr le = memchr(q, '\r', end - q), line = q, colon;
            while (le != NULL && le + 1 < end && le[1] != '\n')
                le = memchr(le + 1, '\r', end - le - 1);
            if (le == NULL || le + 1 >= end)
                le = end;
            q = le + 2;
            colon = memchr(line, ':', le - line);
            if (kind_of(line, colon - line) != F_CONNECTION)
                continue;
            span val = {colon + 1, le};
            while (val.p < val.e && (*val.p == ' ' || *val.p == '\t'))
                val.p++;
            while (val.e > val.p && (val.e[-1] == ' ' || val.e[-1] == '\t'))
                val.e--;
            PyObject *o = lowered(val.p, val.e);
            if (o == NULL || PyList_Append(parts, o) < 0) {
                Py_XDECREF(o);
                Py_DECREF(parts);
                goto done;
            }
            Py_DECREF(o);
        }
        PyObject *comma = PyBytes_FromStringAndSize(",", 1);
        lower_conn = comma ? _PyBytes_Join(comma, parts) : NULL;
        Py_XDECREF(comma);
        Py_DECREF(parts);
        if (lower_conn == NULL)
            goto done;
    }
    if (k != k0) {
        if (_PyBytes_Resize(&kept, k - k0) < 0)
            goto done;
        if (PyObject_SetAttr(h, a_kept, kept) < 0)
            goto done;
    }
    if (hosts && (set(h, a_host, lowered(host_v.p, host_v.e)) < 0 ||
                  set(h, a_host_line, PyBytes_FromStringAndSize((const char *)host_line.p,
                                                                host_line.e - host_line.p)) < 0))
        goto done;
    if ((cookies && PyObject_SetAttr(h, a_cookies, Py_True) < 0) || (urls && PyObject_SetAttr(h, a_urls, Py_True) < 0)
        || (expect && PyObject_SetAttr(h, a_expect, Py_True) < 0) || (stripped && PyObject_SetAttr(h, a_stripped, stripped) < 0))
        goto done;
    if (request && (hosts > 1 || (!hosts && !v10 && PyBytes_Check(version) && PyBytes_GET_SIZE(version) == 8 &&
                                  memcmp(PyBytes_AS_STRING(version), "HTTP/1.1", 8) == 0))) {
        raise_http(400, "exactly one Host header is required");
        goto done;
    }
    if (te.p != NULL) {
        if (request && v10) {
            raise_http(400, "Transfer-Encoding in an HTTP/1.0 request");
            goto done;
        }
        if (cl.p != NULL) {
            raise_http(400, "both Content-Length and Transfer-Encoding");
            goto done;
        }
        int chunked = !te_many && te.e - te.p == 7;
        for (int j = 0; chunked && j < 7; j++)
            chunked = LOWER[te.p[j]] == (unsigned char)"chunked"[j];
        if (!chunked) {
            raise_http(request ? 501 : 502, "unsupported Transfer-Encoding");
            goto done;
        }
        if (PyObject_SetAttr(h, a_chunked, Py_True) < 0)
            goto done;
    } else if (cl.p != NULL) {
        Py_ssize_t m = cl.e - cl.p;
        long long len = 0;
        int ok = m >= 1 && m <= 15;
        for (Py_ssize_t j = 0; ok && j < m; j++) {
            ok = cl.p[j] >= '0' && cl.p[j] <= '9';
            len = len * 10 + (cl.p[j] - '0');
        }
        if (!ok) {
            raise_http(request ? 400 : 502, "malformed or repeated Content-Length");
            goto done;
        }
        if (set(h, a_content_length, PyLong_FromLongLong(len)) < 0)
            goto done;
    }
    if (conn.p == NULL) {
        if (PyObject_SetAttr(h, a_keep_alive, v10 ? Py_False : Py_True) < 0)
            goto done;
    } else if (!conn_many && (eq(conn, "close") || eq(conn, "keep-alive"))) {
        int ka = eq(conn, "keep-alive");
        if (PyObject_SetAttr(h, a_keep_alive, ka ? Py_True : Py_False) < 0) /* one token: it says it */
            goto done;
    } else { /* tokens, "upgrade", fields named by Connection: the reference's own code */
        if (lower_conn == NULL && (lower_conn = lowered(conn.p, conn.e)) == NULL)
            goto done;
        PyObject *up = upgrade.p ? PyBytes_FromStringAndSize((const char *)upgrade.p, upgrade.e - upgrade.p)
                                 : Py_NewRef(Py_None);
        if (up == NULL)
            goto done;
        PyObject *r = PyObject_CallFunctionObjArgs(connection_rest, h, lower_conn, up, NULL);
        Py_DECREF(up);
        if (r == NULL)
            goto done;
        Py_DECREF(r);
    }
    result = Py_NewRef(Py_None);
done:
    Py_XDECREF(block);
    Py_XDECREF(version);
    Py_XDECREF(kept);
    Py_XDECREF(stripped);
    Py_XDECREF(lower_conn);
    return result;
}

/* -- split_target ------------------------------------------------------------------------------- */

static PyObject *bad_path(const char *reason) {
    PyErr_SetString(BadPath, reason);
    return NULL;
}

/* the path [p, e) canonical, into out (at most 3x its length, since escapes only shrink or stay);
 * -> its length, -1 with BadPath set, -2 when the Python reference must decide (non-ASCII) */
static Py_ssize_t canonical(ptr p, ptr e, unsigned char *out) {
    unsigned char *o = out;
    char msg[64];
    *o++ = '/';
    p++;
    for (;;) { /* one segment per turn */
        ptr seg_end = memchr(p, '/', e - p);
        int last = seg_end == NULL;
        if (last)
            seg_end = e;
        unsigned char lastc = 0;
        Py_ssize_t dlen = 0;
        int dots = 1, high = 0;
        for (ptr s = p; s < seg_end;) {
            unsigned char c = *s, d;
            if (c == '%') {
                if (s + 2 >= seg_end || !HEXV[s[1]] || !HEXV[s[2]]) {
                    bad_path("malformed percent-escape (or a %u escape)");
                    return -1;
                }
                d = (unsigned char)((HEXV[s[1]] - 1) * 16 + HEXV[s[2]] - 1);
                if (d == 0x2F)
                    return bad_path("an escaped '/'"), -1;
                if (d == 0x5C)
                    return bad_path("an escaped '\\'"), -1;
                if (d == 0x25)
                    return bad_path("an escaped '%' (double encoding)"), -1;
                if (d == 0x3B)
                    return bad_path("an escaped ';' (path parameter)"), -1;
                if (d < 0x20 || d == 0x7F)
                    return bad_path("an escaped NUL or control character"), -1;
                if (UNRESERVED[d])
                    *o++ = d;
                else {
                    static const char hex[] = "0123456789ABCDEF";
                    *o++ = '%', *o++ = hex[d >> 4], *o++ = hex[d & 15];
                }
                s += 3;
            } else {
                if (!RAW_OK[c]) {
                    snprintf(msg, sizeof msg, "byte 0x%02x not allowed in a path", c);
                    return bad_path(msg), -1;
                }
                d = c;
                *o++ = c;
                s++;
            }
            lastc = d;
            dots = dots && d == '.';
            high |= d >= 0x80;
            dlen++;
        }
        if (dots && (dlen == 1 || dlen == 2))
            return bad_path("dot segment"), -1;
        if (!dlen) {
            if (!last)
                return bad_path("empty path segment"), -1;
        } else if (lastc == '.' || lastc == ' ')
            return bad_path("segment ends in '.' or space (Windows drops them)"), -1;
        else if (high)
            return -2; /* UTF-8 and Unicode folding: the reference reads it, whole */
        if (last)
            break;
        *o++ = '/';
        p = seg_end + 1;
    }
    return o - out;
}

/* split_target(target) -> (path, query) | None (the Python reference decides); raises BadPath */
static PyObject *split_target(PyObject *self, PyObject *arg) {
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "split_target wants bytes");
        return NULL;
    }
    ptr b = (ptr)PyBytes_AS_STRING(arg), e = b + PyBytes_GET_SIZE(arg), s;
    if (b == e || *b != '/')
        return bad_path("not an origin-form target");
    ptr qm = memchr(b, '?', e - b), pe = qm ? qm : e;
    if (qm != NULL) {
        for (s = qm + 1; s < e && QUERY_OK[*s]; s++)
            ;
        if (s != e)
            goto slow; /* the query's error comes first, as in the reference */
    }
    int plain = 1;
    for (s = b; s < pe; s++) {
        unsigned char c = *s;
        if (!PLAIN[c] || (c == '/' && s + 1 < pe && (s[1] == '/' || s[1] == '.')) ||
            (c == '.' && (s + 1 == pe || s[1] == '/'))) {
            plain = 0;
            break;
        }
    }
    if (plain)
        return Py_BuildValue("(NN)", PyUnicode_DecodeASCII((const char *)b, pe - b, NULL),
                             qm ? PyUnicode_DecodeLatin1((const char *)qm, e - qm, NULL) : Py_NewRef(s_empty));
slow:;
    if (qm != NULL) {
        for (s = qm + 1; s < e && QUERY_OK[*s]; s++)
            ;
        if (s != e)
            return bad_path("control, space or '#' in query");
    }
    Py_ssize_t cap = pe - b + 1;
    unsigned char small[512], *out = cap <= (Py_ssize_t)sizeof small ? small : PyMem_Malloc(cap);
    if (out == NULL)
        return PyErr_NoMemory();
    Py_ssize_t len = canonical(b, pe, out);
    PyObject *r = NULL;
    if (len == -2)
        r = Py_NewRef(Py_None);
    else if (len >= 0)
        r = Py_BuildValue("(NN)", PyUnicode_DecodeASCII((const char *)out, len, NULL),
                          qm ? PyUnicode_DecodeLatin1((const char *)qm, e - qm, NULL) : Py_NewRef(s_empty));
    if (out != small)
        PyMem_Free(out);
    return r;
}

/* -- configuration ------------------------------------------------------------------------------ */

/* configure(HttpError, refuse_block, connection_rest, kinds, drop_request, drop_response, max_headers) */
static PyObject *configure(PyObject *self, PyObject *args) {
    PyObject *err, *refuse_fn, *conn_fn, *table, *dreq, *dresp, *key, *value;
    Py_ssize_t maxh, pos = 0;
    if (!PyArg_ParseTuple(args, "OOOO!OOn", &err, &refuse_fn, &conn_fn, &PyDict_Type, &table, &dreq, &dresp, &maxh))
        return NULL;
    if (PyDict_Size(table) > MAX_KINDS) {
        PyErr_SetString(PyExc_ValueError, "too many field kinds");
        return NULL;
    }
    int nk = 0;
    unsigned sets[2] = {0, 0};
    PyObject *drops[2] = {dreq, dresp};
    for (int j = 0; j < 2; j++) {
        PyObject *it = PyObject_GetIter(drops[j]), *x;
        if (it == NULL)
            return NULL;
        while ((x = PyIter_Next(it)) != NULL) {
            long kv = PyLong_AsLong(x);
            Py_DECREF(x);
            if (kv < 0 || kv >= N_KINDS) {
                Py_DECREF(it);
                return PyErr_Occurred() ? NULL : (PyErr_SetString(PyExc_ValueError, "unknown kind"), NULL);
            }
            sets[j] |= 1u << kv;
        }
        Py_DECREF(it);
        if (PyErr_Occurred())
            return NULL;
    }
    while (PyDict_Next(table, &pos, &key, &value)) {
        long kv = PyLong_AsLong(value);
        if (!PyBytes_Check(key) || PyBytes_GET_SIZE(key) > MAX_NAME || kv < 0 || kv >= N_KINDS) {
            PyErr_SetString(PyExc_ValueError, "kinds: bytes names up to 40 long, known kinds");
            return NULL;
        }
        kinds[nk].len = (unsigned char)PyBytes_GET_SIZE(key);
        memcpy(kinds[nk].name, PyBytes_AS_STRING(key), kinds[nk].len);
        kinds[nk].kind = (unsigned char)kv;
        nk++;
    }
    n_kinds = nk;
    drop_request = sets[0];
    drop_response = sets[1];
    max_headers = maxh;
    Py_XSETREF(HttpError, Py_NewRef(err));
    Py_XSETREF(refuse_block, Py_NewRef(refuse_fn));
    Py_XSETREF(connection_rest, Py_NewRef(conn_fn));
    Py_RETURN_NONE;
}

static PyObject *configure_paths(PyObject *self, PyObject *cls) {
    Py_XSETREF(BadPath, Py_NewRef(cls));
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"head_end", (PyCFunction)(void (*)(void))head_end, METH_FASTCALL, "framing._head_end_py in C"},
    {"framing", (PyCFunction)(void (*)(void))framing, METH_FASTCALL, "http1._framing_py in C"},
    {"split_target", split_target, METH_O, "canonical.split_target in C (None: ask the reference)"},
    {"configure", configure, METH_VARARGS,
     "configure(HttpError, refuse_block, connection_rest, kinds, drop_request, drop_response, max_headers)"},
    {"configure_paths", configure_paths, METH_O, "configure_paths(BadPath)"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_chead", NULL, -1, methods};

PyMODINIT_FUNC PyInit__chead(void) {
    init_tables();
#define INTERN(v, s) if ((v = PyUnicode_InternFromString(s)) == NULL) return NULL
    INTERN(a_host, "host");
    INTERN(a_host_line, "host_line");
    INTERN(a_kept, "kept");
    INTERN(a_cookies, "cookies");
    INTERN(a_urls, "urls");
    INTERN(a_expect, "expect");
    INTERN(a_stripped, "stripped");
    INTERN(a_chunked, "chunked");
    INTERN(a_content_length, "content_length");
    INTERN(a_keep_alive, "keep_alive");
    INTERN(a_upgrade, "upgrade");
    INTERN(a_block, "block");
    INTERN(a_version, "version");
    INTERN(s_empty, "");
    HttpError = Py_NewRef(PyExc_ValueError);
    BadPath = Py_NewRef(PyExc_ValueError);
    refuse_block = connection_rest = NULL;
    return PyModule_Create(&module);
}
