/* The SIP relay's scanner in C: the same function as `services.sip.scan.scan_py`, for speed.
 *
 * It reads the common shapes of the header lines routing needs (Via, To/From, Contact, CSeq,
 * Max-Forwards, Content-Length) with byte loops, and hands every line it cannot read at once to
 * the Python reader (`scan._line_cached`), which decides it exactly as the Python scanner does.
 * So the result equals the Python scanner's for every input; tests/services/sip/test_cscan.py
 * checks that on the parser's samples, the torture messages and fuzzed mutations of both.
 *
 * Sans-IO like the rest of the SIP core: bytes in, a `Sip` object (or None) out.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>
#include <structmember.h>

/* header slots, as in scan.py */
enum { T, F, CALL_ID, CSEQ, MF, CL, CTYPE, UA, N_SINGLE };
enum { VIA = N_SINGLE, ROUTE, RR, PATH, CONTACT, PR, PASS };

/* configured once by scan.py (`configure`) */
static PyObject *Sip, *Via, *line_reader, *uri_ok;
static Py_ssize_t max_message = 65535;

static PyObject *a_start, *a_method, *a_uri, *a_status, *a_lines, *a_vias, *a_via_idx, *a_route_idx,
    *a_contact_idx, *a_rr_idx, *a_path_idx, *a_mf, *a_mf_idx, *a_cl_idx, *a_call_id, *a_cseq,
    *a_cseq_method, *a_to, *a_from_, *a_ctype, *a_ua, *a_proxy_require, *a__body;

static unsigned char TOK[256];   /* RFC 3261 token */
static unsigned char HOST[256];  /* [A-Za-z0-9.-] */
static unsigned char USER[256];  /* the fast name-addr's userinfo: [A-Za-z0-9-_.!~*'()%&=+$,/:] */
static unsigned char VPV[256];   /* a Via param value read here: printable ASCII but ; , " */
static unsigned char SPACE[256]; /* what str.strip() removes, in latin-1 */

static void init_tables(void) {
    const char *tok = "-.!%*_+`'~";
    const char *user = "-_.!~*'()%&=+$,/:";
    for (int c = 0; c < 256; c++) {
        int alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        TOK[c] = alnum || (c && strchr(tok, c));
        HOST[c] = alnum || c == '.' || c == '-';
        USER[c] = alnum || (c && strchr(user, c));
        VPV[c] = c > 0x20 && c < 0x7f && c != ';' && c != ',' && c != '"';
        SPACE[c] = (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0;
    }
}

typedef const unsigned char *ptr;

static PyObject *latin1(ptr p, ptr e) { return PyUnicode_DecodeLatin1((const char *)p, e - p, NULL); }

static PyObject *lower_ascii(ptr p, ptr e, int upper) {
    PyObject *s = PyUnicode_New(e - p, 127);
    if (s == NULL)
        return NULL;
    Py_UCS1 *d = PyUnicode_1BYTE_DATA(s);
    for (; p < e; p++, d++) {
        unsigned char c = *p;
        if (upper)
            *d = (c >= 'a' && c <= 'z') ? c - 32 : c;
        else
            *d = (c >= 'A' && c <= 'Z') ? c + 32 : c;
    }
    return s;
}

/* the slot of a header name (already right-stripped, all token chars), case-insensitive */
static int slot_of(ptr p, Py_ssize_t n) {
    char b[16];
    if (n > 15)
        return PASS;
    for (Py_ssize_t i = 0; i < n; i++)
        b[i] = (p[i] >= 'A' && p[i] <= 'Z') ? p[i] + 32 : p[i];
    b[n] = 0;
    switch (n) {
    case 1:
        switch (b[0]) {
        case 'v': return VIA;
        case 'i': return CALL_ID;
        case 'l': return CL;
        case 't': return T;
        case 'f': return F;
        case 'm': return CONTACT;
        case 'c': return CTYPE;
        }
        return PASS;
    case 2: return strcmp(b, "to") ? PASS : T;
    case 3: return strcmp(b, "via") ? PASS : VIA;
    case 4:
        if (!strcmp(b, "path")) return PATH;
        if (!strcmp(b, "cseq")) return CSEQ;
        if (!strcmp(b, "from")) return F;
        return PASS;
    case 5: return strcmp(b, "route") ? PASS : ROUTE;
    case 7:
        if (!strcmp(b, "call-id")) return CALL_ID;
        if (!strcmp(b, "contact")) return CONTACT;
        return PASS;
    case 10: return strcmp(b, "user-agent") ? PASS : UA;
    case 12:
        if (!strcmp(b, "record-route")) return RR;
        if (!strcmp(b, "max-forwards")) return MF;
        if (!strcmp(b, "content-type")) return CTYPE;
        return PASS;
    case 13: return strcmp(b, "proxy-require") ? PASS : PR;
    case 14: return strcmp(b, "content-length") ? PASS : CL;
    }
    return PASS;
}

/* ;token[=token] repeated, from p; returns where it stopped */
static ptr uri_params(ptr q, ptr e) {
    while (q < e && *q == ';') {
        ptr t = ++q;
        while (q < e && TOK[*q])
            q++;
        if (q == t)
            return NULL;
        if (q < e && *q == '=') {
            t = ++q;
            while (q < e && TOK[*q])
                q++;
            if (q == t)
                return NULL;
        }
    }
    return q;
}

/* the digits from q (at most 6 read: more than 5 is never a port), their value in *port;
 * returns where they end */
static ptr port_digits(ptr q, ptr e, long *port) {
    ptr d = q;
    *port = 0;
    while (q < e && *q >= '0' && *q <= '9' && q - d < 6)
        *port = *port * 10 + (*q++ - '0');
    return q;
}

/* the fast To/From/Contact shape: `["x" |tok tok ]<sip[s]:[user@]host[:port][;p=v]>[;p=v]` */
static int name_addr_ok(ptr q, ptr e) {
    if (q < e && *q == '"') {
        for (q++; q < e && *q != '"'; q++)
            if (*q == '\\' || *q == '\r' || *q == '\n')
                return 0;
        if (q >= e)
            return 0;
        q++;
        if (q < e && *q == ' ')
            q++;
    } else {
        while (q < e && *q != '<') {
            ptr t = q;
            while (q < e && TOK[*q])
                q++;
            if (q == t || q >= e || *q != ' ')
                return 0;
            q++;
        }
    }
    if (e - q < 5 || *q != '<')
        return 0;
    q++;
    if (!memcmp(q, "sip:", 4))
        q += 4;
    else if (e - q >= 5 && !memcmp(q, "sips:", 5))
        q += 5;
    else
        return 0;
    ptr u = q;
    while (q < e && USER[*q])
        q++;
    if (q < e && *q == '@' && q > u)
        q++;
    else
        q = u;
    ptr h = q;
    while (q < e && HOST[*q])
        q++;
    if (q == h)
        return 0;
    if (q < e && *q == ':') {
        ptr d = ++q;
        long port;
        q = port_digits(d, e, &port);
        if (q == d || q - d > 5 || *d == '0' || port > 65535)  /* the regex's 1..65535, no leading 0 */
            return 0;
    }
    q = uri_params(q, e);
    if (q == NULL || q >= e || *q != '>')
        return 0;
    q = uri_params(q + 1, e);
    return q == e;
}

/* where a slot of `Via` (a __slots__ class) lives in its objects: written directly, as the
 * member descriptor would, to skip the Python __init__ per Via */
#define VIA_SLOTS 7
static Py_ssize_t via_off[VIA_SLOTS];  /* transport, host, port, params, raw, sent_by, _pd */

/* the fast Via shape (value stripped); a new Via, Py_None if not this shape, NULL on error */
static PyObject *fast_via(ptr p, ptr e) {
    if (e - p < 10 || memcmp(p, "SIP/2.0/", 8))
        Py_RETURN_NONE;
    ptr q = p + 8, t = q;
    int normal = 1;  /* the text up to the params reads as Via.sent_by: upper transport, lower host */
    for (; q < e && ((*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z')); q++)
        normal &= *q <= 'Z';
    if (q == t || q >= e || *q != ' ')
        Py_RETURN_NONE;
    ptr te = q++, h = q;
    for (; q < e && HOST[*q]; q++)
        normal &= !(*q >= 'A' && *q <= 'Z');
    if (q == h)
        Py_RETURN_NONE;
    ptr he = q;
    long port = -1;
    if (q < e && *q == ':') {
        ptr d = ++q;
        q = port_digits(d, e, &port);
        if (q == d || q - d > 5 || port < 1 || port > 65535)  /* [0-9]{1,5}, then 0 < port < 65536 */
            Py_RETURN_NONE;
        normal &= *d != '0';
    }
    ptr ps = q;
    while (q < e) {
        if (*q != ';')
            Py_RETURN_NONE;
        ptr k = ++q;
        while (q < e && TOK[*q])
            q++;
        if (q == k)
            Py_RETURN_NONE;
        if (q < e && *q == '=') {
            ptr v = ++q;
            while (q < e && VPV[*q])
                q++;
            if (q == v)
                Py_RETURN_NONE;
        }
    }
    PyObject *field[VIA_SLOTS] = {lower_ascii(t, te, 1), lower_ascii(h, he, 0),
                                  port < 0 ? Py_NewRef(Py_None) : PyLong_FromLong(port), latin1(ps, e),
                                  latin1(p, e), NULL, Py_NewRef(Py_None)};
    if (field[0] && field[1] && field[2])
        field[5] = normal ? latin1(p, ps)
                 : port < 0 ? PyUnicode_FromFormat("SIP/2.0/%U %U", field[0], field[1])
                 : PyUnicode_FromFormat("SIP/2.0/%U %U:%ld", field[0], field[1], port);
    PyObject *via = NULL;
    if (field[0] && field[1] && field[2] && field[3] && field[4] && field[5])
        via = ((PyTypeObject *)Via)->tp_alloc((PyTypeObject *)Via, 0);
    if (via == NULL) {
        for (int i = 0; i < VIA_SLOTS; i++)
            Py_XDECREF(field[i]);
        return NULL;
    }
    for (int i = 0; i < VIA_SLOTS; i++)
        *(PyObject **)((char *)via + via_off[i]) = field[i];
    return via;
}

/* a Via line's values: one, or several joined by commas (sipp and some PBXs write them so)
 * when nothing quoted or bracketed could hide a comma; a new tuple, Py_None, or NULL */
static PyObject *fast_vias(ptr v, ptr ve) {
    if (memchr(v, '"', ve - v) != NULL || memchr(v, '<', ve - v) != NULL)
        Py_RETURN_NONE;
    PyObject *found[16];
    Py_ssize_t n = 0;
    PyObject *result = NULL;
    for (ptr p = v; p <= ve;) {
        ptr c = memchr(p, ',', ve - p);
        ptr pe = c != NULL ? c : ve;
        ptr a = p, b = pe;
        while (a < b && SPACE[*a])
            a++;
        while (b > a && SPACE[b[-1]])
            b--;
        if (n == 16) {
            result = Py_NewRef(Py_None);
            goto done;
        }
        PyObject *via = fast_via(a, b);
        if (via == NULL || via == Py_None) {
            result = via;  /* NULL on error, None when the Python reader must decide */
            goto done;
        }
        found[n++] = via;
        p = pe + 1;
    }
    result = PyTuple_New(n);
    if (result != NULL) {
        for (Py_ssize_t i = 0; i < n; i++)
            PyTuple_SET_ITEM(result, i, found[i]);
        return result;
    }
done:
    for (Py_ssize_t i = 0; i < n; i++)
        Py_DECREF(found[i]);
    return result;
}

static int digits_ok(ptr p, ptr e, Py_ssize_t max_len) {
    if (p == e || e - p > max_len)
        return 0;
    for (; p < e; p++)
        if (*p < '0' || *p > '9')
            return 0;
    return 1;
}

static long long to_int(ptr p, ptr e) {
    long long n = 0;
    for (; p < e; p++)
        n = n * 10 + (*p - '0');
    return n;
}

#define FALLBACK (-1)
#define ERROR (-2)

/* the slot of a header line read here, its value in *value (a new reference; NULL for lines
 * passed through unread); FALLBACK when the Python reader must decide, ERROR with an exception */
static int fast_line(ptr p, ptr e, PyObject **value) {
    *value = NULL;
    if (p == e || *p == ' ' || *p == '\t' || memchr(p, '\n', e - p) != NULL)
        return FALLBACK;
    ptr colon = memchr(p, ':', e - p);
    if (colon == NULL)
        return FALLBACK;
    ptr ne = colon;
    while (ne > p && (ne[-1] == ' ' || ne[-1] == '\t'))
        ne--;
    if (ne == p)
        return FALLBACK;
    for (ptr c = p; c < ne; c++)
        if (!TOK[*c])
            return FALLBACK;
    int k = slot_of(p, ne - p);
    if (k == PASS)
        return PASS;
    ptr v = colon + 1, ve = e;
    if (k == VIA) {
        if (memchr(v, ',', ve - v) == NULL) {
            while (v < ve && SPACE[*v])
                v++;
            while (ve > v && SPACE[ve[-1]])
                ve--;
        }
        *value = fast_vias(v, ve);
    } else {
        while (v < ve && (*v == ' ' || *v == '\t'))
            v++;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
            ve--;
        switch (k) {
        case T:
        case F:
            if (!name_addr_ok(v, ve))
                return FALLBACK;
            *value = latin1(v, ve);
            break;
        case CONTACT:
            if (memchr(v, ',', ve - v) != NULL || (!(ve - v == 1 && *v == '*') && !name_addr_ok(v, ve)))
                return FALLBACK;
            *value = latin1(v, ve);
            break;
        case MF:
            if (!digits_ok(v, ve, 3) || to_int(v, ve) > 255)
                return FALLBACK;
            *value = PyLong_FromLongLong(to_int(v, ve));
            break;
        case CL:
            if (!digits_ok(v, ve, 10))
                return FALLBACK;
            *value = PyLong_FromLongLong(to_int(v, ve));
            break;
        case CSEQ: {
            ptr sp = memchr(v, ' ', ve - v);
            if (sp == NULL || !digits_ok(v, sp, 10) || to_int(v, sp) > 4294967295LL || sp + 1 >= ve)
                return FALLBACK;
            for (ptr c = sp + 1; c < ve; c++)
                if (!TOK[*c])
                    return FALLBACK;
            PyObject *whole = latin1(v, ve), *meth = whole ? latin1(sp + 1, ve) : NULL;
            *value = meth ? PyTuple_Pack(2, whole, meth) : NULL;
            Py_XDECREF(whole);
            Py_XDECREF(meth);
            break;
        }
        default:
            *value = latin1(v, ve);
        }
    }
    if (*value == NULL)
        return ERROR;
    if (*value == Py_None) {
        Py_CLEAR(*value);
        return FALLBACK;
    }
    return k;
}

/* the same through the Python reader (`scan._line_cached`), for a line fast_line leaves */
static int slow_line(PyObject *line, PyObject **value) {
    *value = NULL;
    PyObject *known = PyObject_CallOneArg(line_reader, line);
    if (known == NULL)
        return ERROR;
    if (known == Py_None) {
        Py_DECREF(known);
        return FALLBACK;  /* here: refused */
    }
    long k = -1;
    if (PyTuple_Check(known) && PyTuple_GET_SIZE(known) == 2 && PyLong_Check(PyTuple_GET_ITEM(known, 0)))
        k = PyLong_AsLong(PyTuple_GET_ITEM(known, 0));
    if (k < 0 || k > PASS || (k == VIA && !PyTuple_Check(PyTuple_GET_ITEM(known, 1))) ||
        (k == CSEQ && !(PyTuple_Check(PyTuple_GET_ITEM(known, 1)) && PyTuple_GET_SIZE(PyTuple_GET_ITEM(known, 1)) == 2)) ||
        (k == CL && !PyLong_Check(PyTuple_GET_ITEM(known, 1)))) {
        Py_DECREF(known);
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "the line reader must return (slot, value) as scan._line does");
        return ERROR;
    }
    PyObject *v = PyTuple_GET_ITEM(known, 1);
    *value = v == Py_None ? NULL : Py_NewRef(v);
    Py_DECREF(known);
    return (int)k;
}

static PyObject *methods_known[16];
static const char *const method_names[] = {"INVITE", "ACK", "BYE", "CANCEL", "REGISTER", "OPTIONS", "INFO",
                                           "UPDATE", "PRACK", "SUBSCRIBE", "NOTIFY", "REFER", "MESSAGE",
                                           "PUBLISH", NULL};

/* a start line: 1 and its parts for a request or response, 0 if odd, -1 on error */
static int start_line(ptr p, ptr e, PyObject **method, PyObject **uri, int *status) {
    *method = *uri = NULL;
    *status = 0;
    if (memchr(p, '\n', e - p) != NULL)
        return 0;
    if (e - p >= 4 && !memcmp(p, "SIP/", 4)) {
        if (e - p < 11 || memcmp(p, "SIP/2.0 ", 8) || p[8] < '1' || p[8] > '6' || p[9] < '0' || p[9] > '9' ||
            p[10] < '0' || p[10] > '9' || (e - p > 11 && p[11] != ' '))
            return 0;
        *status = (p[8] - '0') * 100 + (p[9] - '0') * 10 + (p[10] - '0');
        return 1;
    }
    ptr s1 = memchr(p, ' ', e - p);
    if (s1 == NULL || s1 == p)
        return 0;
    ptr s2 = memchr(s1 + 1, ' ', e - s1 - 1);
    if (s2 == NULL || s2 == s1 + 1 || e - s2 - 1 != 7 || memcmp(s2 + 1, "SIP/2.0", 7))
        return 0;
    for (ptr c = p; c < s1; c++)
        if (!TOK[*c])
            return 0;
    *uri = latin1(s1 + 1, s2);
    if (*uri == NULL)
        return -1;
    PyObject *ok = PyObject_CallOneArg(uri_ok, *uri);
    int good = ok == NULL ? -1 : PyObject_IsTrue(ok);
    Py_XDECREF(ok);
    if (good <= 0) {
        Py_CLEAR(*uri);
        return good;
    }
    for (int i = 0; method_names[i] != NULL; i++)
        if ((size_t)(s1 - p) == strlen(method_names[i]) && !memcmp(p, method_names[i], s1 - p)) {
            *method = Py_NewRef(methods_known[i]);
            return 1;
        }
    *method = latin1(p, s1);
    if (*method == NULL) {
        Py_CLEAR(*uri);
        return -1;
    }
    return 1;
}

/* the next CRLF in [p, e), or NULL */
static ptr crlf(ptr p, ptr e) {
    while (p < e) {
        ptr r = memchr(p, '\r', e - p);
        if (r == NULL || r + 1 >= e)
            return NULL;
        if (r[1] == '\n')
            return r;
        p = r + 1;
    }
    return NULL;
}

/* the blank line ending the header section (CRLFCRLF), or NULL */
static ptr blank_line(ptr p, ptr e) {
    for (ptr r = crlf(p, e); r != NULL; r = crlf(r + 2, e))
        if (e - r >= 4 && r[2] == '\r' && r[3] == '\n')
            return r;
    return NULL;
}

static int put(PyObject *d, PyObject *name, PyObject *value) {  /* steals value */
    if (value == NULL)
        return -1;
    int r = PyDict_SetItem(d, name, value);
    Py_DECREF(value);
    return r;
}

static int append_int(PyObject *list, Py_ssize_t i) {
    PyObject *n = PyLong_FromSsize_t(i);
    if (n == NULL)
        return -1;
    int r = PyList_Append(list, n);
    Py_DECREF(n);
    return r;
}

static PyObject *scan(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs < 1 || nargs > 2 || !PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "scan(data: bytes, datagram: bool = True)");
        return NULL;
    }
    if (Sip == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "services.sip._cscan is not configured");
        return NULL;
    }
    int datagram = 1;
    if (nargs == 2 && (datagram = PyObject_IsTrue(args[1])) < 0)
        return NULL;
    ptr data = (ptr)PyBytes_AS_STRING(args[0]);
    Py_ssize_t size = PyBytes_GET_SIZE(args[0]);
    if (size > max_message)
        Py_RETURN_NONE;
    ptr end = blank_line(data, data + size);
    if (end == NULL)
        Py_RETURN_NONE;
    ptr eol = crlf(data, end);
    if (eol == NULL)
        Py_RETURN_NONE;  /* one line only */

    PyObject *method, *uri;
    int status;
    int st = start_line(data, eol, &method, &uri, &status);
    if (st <= 0)
        return st < 0 ? NULL : Py_NewRef(Py_None);

    PyObject *single[N_SINGLE] = {NULL};
    Py_ssize_t mf_idx = -1, cl_idx = -1, rr_idx = -1, path_idx = -1;
    PyObject *result = NULL, *s = NULL, *d = NULL, *pr = NULL, *value = NULL;
    PyObject *lines = PyList_New(0), *vias = PyList_New(0), *via_idx = PyList_New(0);
    PyObject *route_idx = PyList_New(0), *contact_idx = PyList_New(0);
    if (!lines || !vias || !via_idx || !route_idx || !contact_idx)
        goto done;

    Py_ssize_t i = 0;
    for (ptr p = eol + 2; p <= end; i++) {
        ptr le = crlf(p, end);
        if (le == NULL)
            le = end;
        PyObject *line = latin1(p, le);
        if (line == NULL || PyList_Append(lines, line) < 0) {
            Py_XDECREF(line);
            goto done;
        }
        int k = fast_line(p, le, &value);
        if (k == FALLBACK)
            k = slow_line(line, &value);
        Py_DECREF(line);
        p = le + 2;
        if (k == ERROR)
            goto done;
        if (k == FALLBACK)
            goto none;
        if (k < N_SINGLE) {
            if (single[k] != NULL)
                goto none;  /* a duplicate: the full parser names it */
            single[k] = value;
            value = NULL;
            if (k == CL)
                cl_idx = i;
            else if (k == MF)
                mf_idx = i;
        } else if (k == VIA) {
            Py_ssize_t n = PyTuple_GET_SIZE(value);
            for (Py_ssize_t j = 0; j < n; j++)
                if (PyList_Append(vias, PyTuple_GET_ITEM(value, j)) < 0 || append_int(via_idx, i) < 0)
                    goto done;
        } else if (k == ROUTE) {
            if (append_int(route_idx, i) < 0)
                goto done;
        } else if (k == CONTACT) {
            if (append_int(contact_idx, i) < 0)
                goto done;
        } else if (k == RR) {
            if (rr_idx < 0)
                rr_idx = i;
        } else if (k == PATH) {
            if (path_idx < 0)
                path_idx = i;
        } else if (k == PR) {
            if ((pr == NULL && (pr = PyList_New(0)) == NULL) || PyList_Append(pr, value) < 0)
                goto done;
        }
        Py_CLEAR(value);
    }
    if (PyList_GET_SIZE(vias) == 0 || !single[T] || !single[F] || !single[CALL_ID] || !single[CSEQ] || !single[CL])
        goto none;  /* a mandatory header is missing: the full parser says which */
    PyObject *cseq_method = PyTuple_GET_ITEM(single[CSEQ], 1);
    if (method != NULL && PyUnicode_Compare(cseq_method, method) != 0 &&
        !(PyUnicode_CompareWithASCIIString(method, "ACK") == 0 &&
          PyUnicode_CompareWithASCIIString(cseq_method, "INVITE") == 0))
        goto none;  /* CSeq method mismatch */
    long long n = PyLong_AsLongLong(single[CL]);
    Py_ssize_t body_start = end + 4 - data;
    if (n < 0 || body_start + n > size || (!datagram && body_start + n != size))
        goto none;
    s = PyObject_CallNoArgs(Sip);
    if (s == NULL || (d = PyObject_GenericGetDict(s, NULL)) == NULL)
        goto done;
    if (put(d, a_start, latin1(data, eol)) < 0 || (method && PyDict_SetItem(d, a_method, method) < 0) ||
        (uri && PyDict_SetItem(d, a_uri, uri) < 0) || (status && put(d, a_status, PyLong_FromLong(status)) < 0) ||
        PyDict_SetItem(d, a_lines, lines) < 0 || PyDict_SetItem(d, a_vias, vias) < 0 ||
        PyDict_SetItem(d, a_via_idx, via_idx) < 0 || PyDict_SetItem(d, a_route_idx, route_idx) < 0 ||
        PyDict_SetItem(d, a_contact_idx, contact_idx) < 0 || PyDict_SetItem(d, a_to, single[T]) < 0 ||
        PyDict_SetItem(d, a_from_, single[F]) < 0 || PyDict_SetItem(d, a_call_id, single[CALL_ID]) < 0 ||
        PyDict_SetItem(d, a_cseq, PyTuple_GET_ITEM(single[CSEQ], 0)) < 0 ||
        PyDict_SetItem(d, a_cseq_method, cseq_method) < 0 ||
        (rr_idx >= 0 && put(d, a_rr_idx, PyLong_FromSsize_t(rr_idx)) < 0) ||
        (path_idx >= 0 && put(d, a_path_idx, PyLong_FromSsize_t(path_idx)) < 0) ||
        (mf_idx >= 0 && put(d, a_mf_idx, PyLong_FromSsize_t(mf_idx)) < 0) ||
        (cl_idx >= 0 && put(d, a_cl_idx, PyLong_FromSsize_t(cl_idx)) < 0) ||
        (single[MF] && PyDict_SetItem(d, a_mf, single[MF]) < 0) ||
        (single[CTYPE] && PyDict_SetItem(d, a_ctype, single[CTYPE]) < 0) ||
        (single[UA] && PyDict_SetItem(d, a_ua, single[UA]) < 0) ||
        (pr && PyDict_SetItem(d, a_proxy_require, pr) < 0) ||
        (n && put(d, a__body, PyBytes_FromStringAndSize((const char *)data + body_start, n)) < 0))
        goto done;
    result = Py_NewRef(s);
    goto done;
none:
    result = Py_NewRef(Py_None);
done:
    Py_XDECREF(d);
    Py_XDECREF(s);
    Py_XDECREF(value);
    Py_XDECREF(pr);
    Py_XDECREF(method);
    Py_XDECREF(uri);
    for (int j = 0; j < N_SINGLE; j++)
        Py_XDECREF(single[j]);
    Py_XDECREF(lines);
    Py_XDECREF(vias);
    Py_XDECREF(via_idx);
    Py_XDECREF(route_idx);
    Py_XDECREF(contact_idx);
    return result;
}

static PyObject *not_latin1(PyObject *text) {
    PyObject *raised = PyUnicode_AsLatin1String(text);  /* a wider kind always holds a char > 255 */
    Py_XDECREF(raised);
    if (raised != NULL)
        PyErr_SetString(PyExc_ValueError, "a str of a wide kind encoded to latin-1");
    return NULL;
}

/* serialize(start, lines, body) -> bytes: start CRLF, every non-empty line CRLF, CRLF, body;
 * UnicodeEncodeError (as str.encode("latin-1") raises it) for a character beyond latin-1 */
static PyObject *serialize(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3 || !PyUnicode_Check(args[0]) || !PyList_Check(args[1]) || !PyBytes_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "serialize(start: str, lines: list[str], body: bytes)");
        return NULL;
    }
    PyObject *lines = args[1];
    Py_ssize_t n = PyList_GET_SIZE(lines), size = PyUnicode_GET_LENGTH(args[0]) + 4 + PyBytes_GET_SIZE(args[2]);
    if (PyUnicode_KIND(args[0]) != PyUnicode_1BYTE_KIND)
        return not_latin1(args[0]);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *line = PyList_GET_ITEM(lines, i);
        if (!PyUnicode_Check(line)) {
            PyErr_SetString(PyExc_TypeError, "header lines must be str");
            return NULL;
        }
        if (PyUnicode_KIND(line) != PyUnicode_1BYTE_KIND)
            return not_latin1(line);
        Py_ssize_t len = PyUnicode_GET_LENGTH(line);
        if (len)
            size += len + 2;
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, size);
    if (out == NULL)
        return NULL;
    char *w = PyBytes_AS_STRING(out);
    Py_ssize_t len = PyUnicode_GET_LENGTH(args[0]);
    memcpy(w, PyUnicode_1BYTE_DATA(args[0]), len);
    w += len;
    *w++ = '\r';
    *w++ = '\n';
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *line = PyList_GET_ITEM(lines, i);
        len = PyUnicode_GET_LENGTH(line);
        if (len) {  /* "": a removed line */
            memcpy(w, PyUnicode_1BYTE_DATA(line), len);
            w += len;
            *w++ = '\r';
            *w++ = '\n';
        }
    }
    *w++ = '\r';
    *w++ = '\n';
    memcpy(w, PyBytes_AS_STRING(args[2]), PyBytes_GET_SIZE(args[2]));
    return out;
}

static PyObject *configure(PyObject *self, PyObject *args) {
    PyObject *sip, *via, *reader, *uri;
    Py_ssize_t mx;
    if (!PyArg_ParseTuple(args, "OOOOn", &sip, &via, &reader, &uri, &mx))
        return NULL;
    static const char *const via_slots[VIA_SLOTS] = {"transport", "host", "port", "params", "raw", "sent_by", "_pd"};
    if (!PyType_Check(via)) {
        PyErr_SetString(PyExc_TypeError, "Via must be a class");
        return NULL;
    }
    Py_ssize_t off[VIA_SLOTS];  /* taken only once all is checked */
    for (int i = 0; i < VIA_SLOTS; i++) {  /* each must be a __slots__ member of Via */
        PyObject *descr = PyObject_GetAttrString(via, via_slots[i]);
        if (descr == NULL)
            return NULL;
        int member = Py_IS_TYPE(descr, &PyMemberDescr_Type) &&
                     ((PyMemberDescrObject *)descr)->d_member->type == T_OBJECT_EX;
        if (member)
            off[i] = ((PyMemberDescrObject *)descr)->d_member->offset;
        Py_DECREF(descr);
        if (!member) {
            PyErr_Format(PyExc_TypeError, "Via.%s must be a __slots__ member", via_slots[i]);
            return NULL;
        }
    }
    if (((PyTypeObject *)via)->tp_basicsize != (Py_ssize_t)(sizeof(PyObject) + VIA_SLOTS * sizeof(PyObject *))) {
        PyErr_SetString(PyExc_TypeError, "Via must have exactly these slots and no __dict__");
        return NULL;
    }
    memcpy(via_off, off, sizeof(off));
    Py_XSETREF(Sip, Py_NewRef(sip));
    Py_XSETREF(Via, Py_NewRef(via));
    Py_XSETREF(line_reader, Py_NewRef(reader));
    Py_XSETREF(uri_ok, Py_NewRef(uri));
    max_message = mx;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"scan", (PyCFunction)(void (*)(void))scan, METH_FASTCALL,
     "scan(data, datagram=True) -> Sip | None: as services.sip.scan.scan_py"},
    {"serialize", (PyCFunction)(void (*)(void))serialize, METH_FASTCALL,
     "serialize(start, lines, body) -> bytes: a scanned message's wire form"},
    {"configure", configure, METH_VARARGS, "configure(Sip, Via, line_reader, uri_ok, max_message)"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_cscan", NULL, -1, methods};

PyMODINIT_FUNC PyInit__cscan(void) {
    init_tables();
#define NAME(v, s) if ((v = PyUnicode_InternFromString(s)) == NULL) return NULL;
    NAME(a_start, "start") NAME(a_method, "method") NAME(a_uri, "uri") NAME(a_status, "status")
    NAME(a_lines, "lines") NAME(a_vias, "vias") NAME(a_via_idx, "via_idx") NAME(a_route_idx, "route_idx")
    NAME(a_contact_idx, "contact_idx") NAME(a_rr_idx, "rr_idx") NAME(a_path_idx, "path_idx") NAME(a_mf, "mf")
    NAME(a_mf_idx, "mf_idx") NAME(a_cl_idx, "cl_idx") NAME(a_call_id, "call_id") NAME(a_cseq, "cseq")
    NAME(a_cseq_method, "cseq_method") NAME(a_to, "to") NAME(a_from_, "from_") NAME(a_ctype, "ctype")
    NAME(a_ua, "ua") NAME(a_proxy_require, "proxy_require") NAME(a__body, "_body")
    for (int i = 0; method_names[i] != NULL; i++)
        NAME(methods_known[i], method_names[i])
#undef NAME
    return PyModule_Create(&module);
}
